"""Every selection policy on one cost axis: GenEval overall against generator forwards and wall time at
budgets matched to best-of-4, -8 and -20, in both orders of the shapes world; and the Spearman
correlation, per decoding step, between each policy's intermediate score and the final verdict.

    nice -n 10 python -m scripts.compare_policies --out docs/results/scaling \\
        --configs configs/shapes.yaml configs/shapes_raster.yaml --budgets 4 8 20 --eval-num 4

Per preset (one decoding order) and budget M:
1. The budget is best-of-M's generator forwards per image (``orm_ft`` with N = M; the backends count
   candidate-rows times model forwards, search.py). Every other policy runs at the largest N whose
   forwards per image, measured on the first ``--probe`` images, stay within it: N = M for the
   best-of-N policies and for PRM, progressive and lookahead in mask order (a mask-order lookahead is
   free), less where lookahead completions cost forwards (raster), more where paths stop early (PARM,
   confidence). PARM's forwards depend on its decisions, so its match holds on the probe images and
   the table reports what the full run spent. ``none`` is plain decoding (N = 1) at every budget.
2. Each (policy, N) is one ``main.py`` run (a subprocess, run.evaluate=true) into
   ``OUT/<order>/<policy>/n<N>``: resumable (a finished, scored run is not started again), scored by the preset's GenEval evaluator; forwards and
   judge calls per image come from its traces (``geneval.compare.trace_totals``).
3. Wall time per image is the policy call's time on the probe images, in this process, on this
   machine (model loading excluded), so it is comparable between policies of one invocation only.
4. The correlation pass decodes ``--corr-n`` paths of every image to the end (the streams of
   candidates 0..n-1) and after each step asks what each policy would: PRM's question on the preview,
   PARM's potential question on the preview, the ORM question on the lookahead image (lookahead and
   progressive), the confidence of ``scaling_policies.path_confidence``; the final verdict is the
   GenEval evaluator's on the path's final image (the ORM's score of the final image is the last
   step of the ``orm_ft`` row). Spearman over all paths of all images, per step.

GenEval overall is the macro average of the per-tag accuracies; its standard error treats the tags
as independent binomials, ``sqrt(sum_t p_t (1 - p_t) / n_t) / T`` (images of one prompt are not
independent, so it is a lower bound). Outputs, all rewritten from the runs on every invocation:
``OUT/results.json``, ``OUT/table.md`` (the three budgets, the correlations and the issue's two
targets), ``OUT/pareto_<order>.png`` (GenEval vs forwards and vs wall time, one line per policy).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

import scaling_policies
import search
from policies import POLICIES as REGISTRY
from config import Config, load_config
from generation import build_generator
from generation.base import seeded_generator
from geneval.compare import trace_totals
from geneval.layout import atomic_write_text, sample_done
from geneval.suites import load_metadata, load_prompts
from geneval.summary import load_results, overall_standard_error, summarize
from reward_models import build_judge, verifiers
from reward_models.oracle import GenEvalOracle

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("none", "orm_ft", "prm", "parm", "parm++", "lookahead", "confidence", "confidence_orm", "progressive",
            "oracle")
REFERENCE = "orm_ft"
"""Best-of-N whose forwards define the budgets."""
FIXED_N = {"orm_ft", "orm_zs", "oracle"}
"""Best-of-N policies: N = M by definition."""
CORRELATED = ("prm", "parm", "lookahead", "confidence", "orm_ft")
"""Intermediate scores of the correlation pass (progressive shares lookahead's)."""


# ----------------------------------------------------------------------------
# Statistics

def spearman(scores: list[float], verdicts: list[bool]) -> float | None:
    """Spearman's rho; None when either side is constant (undefined)."""
    from scipy.stats import spearmanr

    if len(set(scores)) < 2 or len(set(verdicts)) < 2:
        return None
    return float(spearmanr(scores, [float(v) for v in verdicts]).statistic)


# ----------------------------------------------------------------------------
# Models shared by the probes and the correlation pass

class Models:
    """The preset's generator, its judges (loaded once per checkpoint) and the GenEval oracle."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.device = torch.device(cfg.run.device if cfg.run.device != "auto" else "cpu")
        self.generator = build_generator(cfg.generation, self.device)
        self.oracle = GenEvalOracle(cfg.geneval, load_metadata(cfg.run.metadata_file),
                                    cfg.geneval.device if cfg.geneval.device != "auto" else "cpu")
        self._judges: dict[str, object] = {}

    def judge(self, name: str):
        checkpoint = self.cfg.reward_checkpoints.get(name)
        if checkpoint not in self._judges:
            self._judges[checkpoint] = build_judge(
                verifiers.judge_config(self.cfg.reward, self.cfg.reward_checkpoints, name), self.device)
        return self._judges[checkpoint]

    def policy(self, name: str, n: int):
        policy = REGISTRY[name]
        judge = {None: None, "oracle": self.oracle}.get(policy.judge_source) if policy.judge_source != "checkpoint" \
            else self.judge(name)
        return policy(judge, self.cfg.search, n)


# ----------------------------------------------------------------------------
# Budget matching (probes), cached in OUT/<order>/probes.json

class Probes:
    def __init__(self, models: Models, requests: list[search.ImageRequest], path: Path):
        self.models, self.requests, self.path = models, requests, path
        self.cache = json.loads(path.read_text()) if path.is_file() else {}
        self.warm = False

    def measure(self, name: str, n: int) -> dict:
        """Forwards per image and wall seconds per image of policy ``name`` with N = ``n`` on the probe images."""
        key = f"{name}@{n}"
        if key not in self.cache:
            policy = self.models.policy(name, n)
            if not self.warm:  # first calls pay one-off initialisation; keep it out of every timing
                self.models.policy("none", 1)(self.models.generator, self.requests[:1], self.models.cfg.run.seed)
                self.warm = True
            batch = max(1, self.models.cfg.run.batch_size // policy.num_candidates)
            generator = self.models.generator
            forwards, start = generator.num_forwards, time.perf_counter()
            for first in range(0, len(self.requests), batch):
                policy(generator, self.requests[first:first + batch], self.models.cfg.run.seed)
            seconds, forwards = time.perf_counter() - start, generator.num_forwards - forwards
            self.cache[key] = {"forwards": forwards / len(self.requests), "seconds": seconds / len(self.requests)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.cache, indent=1, sort_keys=True) + "\n")
        return self.cache[key]

    def matched_n(self, name: str, budget_n: int, cap: int) -> int:
        """The largest N in [1, cap] whose probe forwards stay within best-of-``budget_n``'s."""
        if name == "none":
            return 1
        if name in FIXED_N:
            return budget_n
        budget = self.measure(REFERENCE, budget_n)["forwards"] * (1 + 1e-9)
        ratio = self.measure(name, budget_n)["forwards"] / self.measure(REFERENCE, budget_n)["forwards"]
        n = min(cap, max(1, int(budget_n / ratio)))  # forwards grow about linearly in N: start there
        while n > 1 and self.measure(name, n)["forwards"] > budget:
            n -= 1
        while n < cap and self.measure(name, n + 1)["forwards"] <= budget:
            n += 1
        return n


# ----------------------------------------------------------------------------
# Runs (main.py subprocesses, resumable)

def run_done(outdir: Path, num_prompts: int, eval_num: int) -> bool:
    """Every image exists and was scored (a finished ``main.py`` run needs no restart)."""
    results = outdir / "results.jsonl"
    return results.is_file() and len(load_results(results)) == num_prompts * eval_num and all(
        sample_done(outdir, p, s) for p in range(num_prompts) for s in range(eval_num))


def run_main(config: str, outdir: Path, name: str, n: int, eval_num: int, overrides: list[str]) -> None:
    argv = [sys.executable, str(REPO / "main.py"), "--config", config, "--reward_model", name, "--search_num", str(n),
            "--eval_num", str(eval_num), "--outdir", str(outdir), "run.evaluate=true", *overrides]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def run_row(outdir: Path) -> dict:
    summary = summarize(load_results(outdir / "results.jsonl"))
    totals = trace_totals(outdir)
    return {"overall": summary.overall, "se": overall_standard_error(summary), "images": summary.total_images,
            "forwards": totals["generator_forwards"], "judge_calls": totals["judge_calls"],
            "tags": summary.tag_accuracy}


# ----------------------------------------------------------------------------
# Correlation pass

def correlation_pass(models: Models, requests: list[search.ImageRequest], n: int, folder: Path) -> dict:
    """``{score name: [rho after step 1, ..., after step T]}`` over ``n`` paths of every request. Each batch
    of requests is saved as ``folder/batch_<first>.json`` once done, so a killed pass resumes."""
    per_batch = max(1, models.cfg.run.batch_size // n)
    steps = models.generator.num_steps
    scores = {name: [[] for _ in range(steps)] for name in CORRELATED}
    verdicts: list[bool] = []
    for first in range(0, len(requests), per_batch):
        path = folder / f"batch_{first:06d}.json"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(correlation_batch(models, requests[first:first + per_batch], n)))
        batch = json.loads(path.read_text())
        for name in CORRELATED:
            for k in range(steps):
                scores[name][k] += batch["scores"][name][k]
        verdicts += batch["verdicts"]
    return {name: [None if any(s is None for s in per_step) else spearman(per_step, verdicts)
                   for per_step in rows] for name, rows in scores.items()} | {"paths": len(verdicts),
                                                                             "correct": sum(verdicts)}


def correlation_batch(models: Models, batch: list[search.ImageRequest], n: int) -> dict:
    """Every intermediate score of ``n`` paths of each request after every step, and the final verdicts."""
    generator, cfg = models.generator, models.cfg
    judges = {name: models.judge(name) for name in ("prm", "parm", "lookahead", "orm_ft")}
    steps = generator.num_steps
    scores = {name: [[] for _ in range(steps)] for name in CORRELATED}
    prompts = [r.prompt for r in batch for _ in range(n)]
    streams = [seeded_generator(cfg.run.seed, r.prompt_index, r.sample_index, c) for r in batch for c in range(n)]
    canvas = generator.start(prompts, streams)
    for k in range(steps):
        canvas = generator.step(canvas)
        preview = generator.preview(canvas)
        scores["prm"][k] = verifiers.prm_scores(judges["prm"], preview, prompts).tolist()
        scores["parm"][k] = verifiers.potential(judges["parm"], preview, prompts)[0].tolist()
        scores["lookahead"][k] = verifiers.orm_scores(judges["lookahead"], generator.lookahead(canvas),
                                                      prompts).tolist()
        scores["confidence"][k] = scaling_policies.path_confidence(canvas.token_stats,
                                                                   cfg.search.confidence_weights)[0].tolist()
        scores["orm_ft"][k] = [None] * len(prompts)  # best-of-N scores only the final image
    finals = generator.finish(canvas)
    scores["orm_ft"][steps - 1] = verifiers.orm_scores(judges["orm_ft"], finals, prompts).tolist()
    return {"scores": scores, "verdicts": models.oracle.verdicts(finals, prompts)}


# ----------------------------------------------------------------------------
# Report

def targets(rows: dict[str, dict[int, dict]], budgets: list[int]) -> list[str]:
    """The issue's two targets against best-of-max(budgets), with how close each policy came."""
    top = max(budgets)
    reference = rows[REFERENCE][top]
    lines = [f"best-of-{top} ({REFERENCE}): overall {reference['overall']:.3f} ± {reference['se']:.3f}, "
             f"{reference['forwards']:.0f} forwards/image"]
    for name, by_budget in rows.items():
        if name in (REFERENCE, "oracle"):
            continue
        cheap = [b for b, r in by_budget.items()
                 if r["forwards"] is not None and r["forwards"] <= 0.4 * reference["forwards"]
                 and r["overall"] >= reference["overall"]]
        at_top = by_budget[top]
        margin = (at_top["overall"] - reference["overall"]) / math.hypot(at_top["se"], reference["se"]) \
            if at_top["se"] or reference["se"] else 0.0
        lines.append(f"{name}: reaches best-of-{top} with <= 40% of its forwards: "
                     f"{'yes, at budget ' + str(cheap) if cheap else 'no'}; at budget {top}: "
                     f"{at_top['overall'] - reference['overall']:+.3f} ({margin:+.1f} SE){' > 2 SE' if margin > 2 else ''}")
    return lines


def markdown(report: dict, budgets: list[int]) -> str:
    out = []
    for order, block in report["orders"].items():
        out += [f"## {order} order ({block['config']}, {block['images']} images)", "",
                "| Policy | " + " | ".join(f"best-of-{b} budget: overall ± SE (N, fwd/img, judge/img, s/img)"
                                          for b in budgets) + " |",
                "|---|" + "---|" * len(budgets)]
        for name, by_budget in block["rows"].items():
            cells = []
            for b in budgets:
                r = by_budget[str(b)]
                fwd = "-" if r["forwards"] is None else f"{r['forwards']:.0f}"
                cells.append(f"{r['overall']:.3f} ± {r['se']:.3f} (N={r['n']}, {fwd}, {r['judge_calls']:.0f}, "
                             f"{r['seconds']:.2f})")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out += ["", "Targets:", *[f"- {line}" for line in block["targets"]], ""]
        corr = block.get("correlation")
        if corr:
            steps = len(corr["prm"])
            out += [f"Spearman(intermediate score, final GenEval verdict) per step ({corr['paths']} paths, "
                    f"{corr['correct']} correct):", "",
                    "| Score | " + " | ".join(str(k + 1) for k in range(steps)) + " |", "|---|" + "---|" * steps]
            for name in CORRELATED:
                out.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:+.2f}" for v in corr[name]) + " |")
            out.append("")
    return "\n".join(out) + "\n"


def plot(block: dict, order: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, by_budget in block["rows"].items():
        points = sorted(by_budget.values(), key=lambda r: (r["forwards"] or 0))
        for ax, key in zip(axes, ("forwards", "seconds")):
            xs = [r[key] or 0 for r in points]
            ax.errorbar(xs, [r["overall"] for r in points], yerr=[r["se"] for r in points], marker="o",
                        markersize=3, capsize=2, label=name, linestyle="--" if name in ("none", "oracle") else "-")
    axes[0].set_xlabel("generator forwards per image")
    axes[1].set_xlabel("wall seconds per image (probe images, this machine)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("GenEval overall (± SE)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{order} order: selection policies at matched budgets")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------

def compare_preset(config: str, args, out: Path) -> tuple[str, dict]:
    cfg = load_config(config, args.overrides)
    order = cfg.generation.order
    models = Models(cfg)
    prompts = load_prompts(cfg.run.prompts_file)
    requests = [search.ImageRequest(p, i, s) for i, p in enumerate(prompts) for s in range(args.eval_num)]
    probes = Probes(models, requests[:args.probe], out / order / "probes.json")
    rows: dict[str, dict[int, dict]] = {}
    for name in args.policies:
        rows[name] = {}
        for budget in args.budgets:
            n = probes.matched_n(name, budget, args.max_n_factor * budget)
            outdir = out / order / name / f"n{n}"
            if not run_done(outdir, len(prompts), args.eval_num):
                run_main(config, outdir, name, n, args.eval_num, args.overrides)
            probe = probes.measure(name, n)
            rows[name][budget] = {"n": n, **run_row(outdir), "seconds": probe["seconds"]}
            if rows[name][budget]["forwards"] is None and name == "none":
                # plain decoding traces no forwards (search.PlainDecoding); they do not depend on the image
                rows[name][budget]["forwards"] = probe["forwards"]
            print(f"{order} {name} budget {budget}: N={n} overall {rows[name][budget]['overall']:.3f}", flush=True)
    block = {"config": config, "images": len(requests), "rows": {k: {str(b): r for b, r in v.items()}
                                                                  for k, v in rows.items()},
             "targets": targets(rows, args.budgets) if REFERENCE in rows else []}
    if args.corr_n:
        block["correlation"] = correlation_pass(models, requests, args.corr_n, out / order / "correlation")
    return order, block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (runs, probes, report)")
    parser.add_argument("--configs", nargs="+", default=["configs/shapes.yaml", "configs/shapes_raster.yaml"])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 20], help="best-of-M budgets")
    parser.add_argument("--eval-num", type=int, default=4, help="images per prompt")
    parser.add_argument("--probe", type=int, default=8, help="images the budget matching and wall time use")
    parser.add_argument("--max-n-factor", type=int, default=4, help="N is at most this times M")
    parser.add_argument("--corr-n", type=int, default=8, help="paths per image of the correlation pass (0: skip)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.policies) - set(REGISTRY))
    if unknown or REFERENCE not in args.policies:
        parser.error(f"--policies must name policies of policies.POLICIES including {REFERENCE} (the budget); "
                     f"unknown: {unknown}")
    if min(args.budgets) < 1 or args.eval_num < 1 or args.probe < 1:
        parser.error("--budgets, --eval-num and --probe must be positive")
    out = Path(args.out)
    report = {"argv": sys.argv[1:] if argv is None else argv, "budgets": args.budgets, "orders": {}}
    for config in args.configs:
        order, block = compare_preset(config, args, out)
        report["orders"][order] = block
        plot(block, order, out / f"pareto_{order}.png")
    atomic_write_text(out / "results.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "table.md", markdown(report, args.budgets))
    print(markdown(report, args.budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
