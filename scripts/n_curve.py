"""GenEval overall against the number of candidates N per verifier (the paper's Fig. 3), and a
contact sheet per prompt showing every candidate with its scores.

    python -m scripts.n_curve --config configs/shapes.yaml --eval-num 1 --out docs/results/n_curve_mask.json \\
        --plot docs/n_curve_mask.png --sheets docs/candidates/mask --num-sheets 12

One pass decodes N_max candidates per image exactly as the runner does (seeded per prompt,
sample and candidate) with PARM asking its questions along the way but stopping no path
(``search.prune=false``). Every final image is then scored by the zero-shot and fine-tuned
ORMs and by the GenEval evaluator. Because best-of-n over the first n candidates sees exactly
the paths a run with ``run.search_num=n`` would decode, every point of the curve for the ORMs,
PARM (survivors among the first n, else the lowest-P(no) fallback, as ``search.Parm``) and the
oracle comes from this one pass; at n = N_max they equal the runner's rows with the same seed
and eval_num. PRM search couples its paths (each step restarts all of them from the best), so
``--prm`` runs ``search.StepSearch`` separately for every n.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

import search
from config import load_config
from reward_models.oracle import GenEvalOracle
from geneval.suites import load_metadata, load_prompts
from geneval.summary import TABLE_COLUMNS
from generation import build_generator
from reward_models import build_judge, verifiers

METHODS = ("baseline", "orm_zs", "orm_ft", "prm", "parm", "oracle")
LABELS = {"baseline": "no verifier", "orm_zs": "ORM zero-shot", "orm_ft": "ORM fine-tuned", "prm": "PRM",
          "parm": "PARM", "oracle": "oracle (evaluator picks)"}


def judges(cfg, device) -> dict:
    return {name: build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, name), device)
            for name in ("orm_zs", "orm_ft", "parm")}


def decode_pool(cfg, generator, requests, parm_judge, oracle, orm_judges) -> list[dict]:
    """Every candidate of every request: final image, PARM record, ORM scores, GenEval verdict."""
    policy = search.Parm(parm_judge, replace(cfg.search, prune=False), cfg.run.search_num)
    pool, _, finals = policy.run(generator, requests, cfg.run.seed)
    prompts = pool.prompts()
    scores = {name: verifiers.orm_scores(judge, finals, prompts) for name, judge in orm_judges.items()}
    correct = oracle.verdicts(finals, prompts)
    out = []
    for request in range(len(requests)):
        rows = pool.rows_of(request)
        out.append({"records": [pool.record(r) for r in rows], "finals": finals[rows],
                    "correct": [correct[r] for r in rows],
                    **{f"score_{name}": [scores[name][r].item() for r in rows] for name in scores}})
    return out


def parm_pick(records: list[search.ParmRecord], n: int) -> int:
    """``search.Parm.select`` restricted to the first ``n`` candidates (prune=false records)."""
    first = records[:n]
    survivors = [c for c, r in enumerate(first) if search.survives(r)]
    if survivors:
        return min(survivors, key=lambda c: (-first[c].final_score, c))
    return min(range(n), key=lambda c: (search.fallback_score(first[c]), c))


def picks(item: dict, n: int) -> dict[str, int]:
    best = {name: int(np.argmax(item[f"score_{name}"][:n])) for name in ("orm_zs", "orm_ft")}  # first max
    hits = [c for c in range(n) if item["correct"][c]]
    return {"baseline": 0, **best, "parm": parm_pick(item["records"], n), "oracle": hits[0] if hits else 0}


def overall(tags: list[str], correct: list[bool]) -> tuple[float, dict[str, float]]:
    per_tag = {t: float(np.mean([c for tag, c in zip(tags, correct) if tag == t]))
               for t in TABLE_COLUMNS if t in tags}
    return float(np.mean(list(per_tag.values()))), per_tag


def prm_curve(cfg, generator, requests, prm_judge, oracle, ns: list[int], tags: list[str]) -> dict[int, float]:
    out = {}
    for n in ns:
        policy = search.StepSearch(prm_judge, cfg.search, n)
        images = []
        for batch in chunks(requests, max(1, cfg.run.batch_size // n)):
            images += [s.image for s in policy(generator, batch, cfg.run.seed)]
        out[n] = overall(tags, oracle.verdicts(torch.stack(images), [r.prompt for r in requests]))[0]
    return out


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def candidate_sheet(prompt: str, item: dict, path: Path, scale: int = 2) -> None:
    """Every candidate with its ORM/PARM scores, PARM's clear step, potential and prune step; the PARM
    pick framed blue, correct candidates green and wrong ones red (the evaluator's verdict)."""
    side, text_h, per_row = 64 * scale + 8, 58, 10
    n = len(item["records"])
    rows = (n + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * side, 24 + rows * (side + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 6), prompt, fill="black")
    chosen = parm_pick(item["records"], n)
    for c, record in enumerate(item["records"]):
        x, y = (c % per_row) * side, 24 + (c // per_row) * (side + text_h)
        frame = (40, 90, 230) if c == chosen else (40, 170, 60) if item["correct"][c] else (210, 40, 40)
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=frame)
        image = Image.fromarray(item["finals"][c].permute(1, 2, 0).numpy())
        sheet.paste(image.resize((64 * scale, 64 * scale), Image.NEAREST), (x + 4, y + 4))
        stop = "" if search.survives(record) or record.clear_step is None else f" stop@{record.clear_step}"
        lines = [f"#{c} {'ok' if item['correct'][c] else 'wrong'}{' PICK' if c == chosen else ''}",
                 f"zs {item['score_orm_zs'][c]:.2f} ft {item['score_orm_ft'][c]:.2f}",
                 f"clear@{record.clear_step} pot {record.potential or '-'}{stop}",
                 f"parm {record.final_score:.2f}" if record.final_score is not None else "parm -"]
        for k, line in enumerate(lines):
            draw.text((x + 2, y + side + 2 + 13 * k), line, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def plot(curves: dict[str, dict[int, float]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ns = sorted(curve)
        style = "--" if name in ("baseline", "oracle") else "-o"
        ax.plot(ns, [curve[n] for n in ns], style, label=LABELS[name], markersize=4)
    ax.set_xlabel("candidates N")
    ax.set_ylabel("GenEval overall")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(next(iter(curves.values()))))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shapes.yaml")
    parser.add_argument("--eval-num", type=int, default=1, help="images per prompt")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8, 16, 20])
    parser.add_argument("--prm", action="store_true", help="also run PRM search at every n (slow)")
    parser.add_argument("--out", required=True, help="JSON of the curves")
    parser.add_argument("--plot", default=None, help="PNG of the curves")
    parser.add_argument("--sheets", default=None, help="folder for per-prompt candidate contact sheets")
    parser.add_argument("--num-sheets", type=int, default=12, help="prompts with a sheet (spread over the suite)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    n_max = max(args.n)
    cfg = replace(cfg, run=replace(cfg.run, search_num=n_max))
    device = torch.device(cfg.run.device)
    generator = build_generator(cfg.generation, device)
    prompts, metadata = load_prompts(cfg.run.prompts_file), load_metadata(cfg.run.metadata_file)
    oracle = GenEvalOracle(cfg.geneval, metadata, cfg.geneval.device if cfg.geneval.device != "auto" else "cpu")
    loaded = judges(cfg, device)
    requests = [search.ImageRequest(prompt, p, s) for p, prompt in enumerate(prompts) for s in range(args.eval_num)]
    tags = [metadata[r.prompt_index]["tag"] for r in requests]
    items = []
    for batch in tqdm(chunks(requests, max(1, cfg.run.batch_size // n_max)), desc="candidates", mininterval=10):
        items += decode_pool(cfg, generator, batch, loaded["parm"], oracle,
                             {"orm_zs": loaded["orm_zs"], "orm_ft": loaded["orm_ft"]})
    curves: dict[str, dict[int, float]] = {m: {} for m in METHODS if m != "prm"}
    per_tag = {}
    for n in args.n:
        chosen = [picks(item, n) for item in items]
        for method in curves:
            curves[method][n], tag_scores = overall(tags, [item["correct"][c[method]] for item, c in zip(items, chosen)])
            per_tag[f"{method}@{n}"] = tag_scores
    if args.prm:
        prm_judge = build_judge(verifiers.judge_config(cfg.reward, cfg.reward_checkpoints, "prm"), device)
        curves["prm"] = prm_curve(cfg, generator, requests, prm_judge, oracle, args.n, tags)
    result = {"config": args.config, "overrides": args.overrides, "eval_num": args.eval_num, "n": args.n,
              "images": len(requests), "curves": curves, "per_tag": per_tag}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(curves, indent=1))
    if args.plot:
        plot(curves, f"{cfg.generation.order} order, {len(requests)} images", Path(args.plot))
    if args.sheets:
        step = max(1, len(items) // max(args.num_sheets, 1))
        for index in range(0, len(items), step)[:args.num_sheets]:
            request = requests[index]
            candidate_sheet(request.prompt, items[index],
                            Path(args.sheets) / f"{request.prompt_index:05d}_{request.sample_index:02d}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
