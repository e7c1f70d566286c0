"""Accuracy of the shapes-world judges on held-out generated images.

    python -m training.judge_accuracy --data data/judges/mask_heldout.pt data/judges/raster_heldout.pt \\
        --judges weights/shapes/judges/{orm_zs,orm_ft,prm,parm,parm++} --out docs/results/judges.json

The held-out files come from ``training.judge_data --suite heldout``: the evaluation suite's
prompts, with seeds no evaluation run uses, labelled the way the training files are. Each judge
is scored on the questions its recipe trains (the zero-shot ORM on the ORM question, as it is
used): accuracy of the likelier answer against the label, with the share of "yes" labels as the
base rate; and on what best-of-N rests on: how often a correct final outranks a wrong final of the
same prompt (within-prompt ranking accuracy; 0.5 = chance). A PARM++ judge is also scored on its reflection: the critique class of failing final
images, and its flagged region against the evaluator-derived one (token accuracy and IoU).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from reward_models.shapes_judge import CRITIQUES, JudgeNet, load_judge
from training.ranking import auc, binomial, within_prompt_ranking
from training.train_judges import generated_examples

QUESTIONS = {"orm_zs": "orm_ft", "orm_ft": "orm_ft", "prm": "prm", "parm": "parm", "parm++": "parm++"}
"""Judge recipe -> the recipe whose examples score it."""


@torch.inference_mode()
def predict(model: JudgeNet, kinds, text, codes, batch: int = 1024):
    """``(answer logits, critique logits or None, region logits or None)`` over all examples."""
    answers, critiques, regions = [], [], []
    for start in range(0, len(kinds), batch):
        part = slice(start, start + batch)
        if model.cfg.reflection:
            answer, critique, region = model.reflect(kinds[part], text[part], codes[part])
            critiques.append(critique)
            regions.append(region)
        else:
            answer = model(kinds[part], text[part], codes[part])
        answers.append(answer)
    return (torch.cat(answers), torch.cat(critiques) if critiques else None,
            torch.cat(regions) if regions else None)


@torch.inference_mode()
def ranking_accuracy(model: JudgeNet, text, data: dict, kind: str) -> dict:
    """How often a correct final outranks a wrong final *of the same prompt* (ties count half).

    Best-of-N only compares candidates of one prompt, so this, not the plain accuracy (which a judge
    can earn from the prompt alone: some prompts are usually failed), is what selection rests on.
    """
    groups, labels = data["traj_group"], data["label"]
    kinds = torch.full((len(groups),), model.cfg.kinds.index(kind))
    prompts = text.encode([data["prompts"][g] for g in groups.tolist()])
    p_yes = predict(model, kinds, prompts, data["previews"][:, -1].long())[0].softmax(-1)[:, 0]
    return within_prompt_ranking(p_yes, groups, labels)


@torch.inference_mode()
def potential_at_first_clear(model: JudgeNet, text, data: dict, clear_from: float) -> dict:
    """PARM's two step-wise decisions as the policy takes them (``search.py``, ``parm``), on every path.

    Clarity is asked after every step until the first "yes" (P(yes) > 0.5); there the potential
    question is asked once. Reported: the AUC of that potential P(yes) for the path's final verdict
    (what stopping a path rests on), with its SE; the first clear step against the labelled boundary
    (``clear_from`` of the steps: the training labels call earlier previews unclear or unused); and
    how many paths never say clear.
    """
    groups, steps = data["traj_group"], data["num_steps"]
    prompts = text.encode([data["prompts"][g] for g in groups.tolist()])
    previews = data["previews"].long()
    ask = lambda kind, codes: predict(model, torch.full((len(codes),), model.cfg.kinds.index(kind)),  # noqa: E731
                                      prompts, codes)[0].softmax(-1)[:, 0]
    clear = torch.stack([ask("clarity", previews[:, step]) > 0.5 for step in range(steps)], 1)
    ever = clear.any(1)
    first = torch.where(ever, clear.float().argmax(1), steps - 1)  # 0-based step index
    potential = ask("potential", previews[torch.arange(len(first)), first])
    boundary = math.ceil(clear_from * steps)  # first step (1-based) the training labels call clear
    return {"potential_auc": auc(potential[ever], data["label"][ever]), "never_clear": int((~ever).sum()),
            "first_clear_step": float((first[ever] + 1).float().mean()) if ever.any() else float("nan"),
            "labelled_clear_step": boundary, "num_steps": steps,
            "clear_before_boundary": float(((first + 1) < boundary)[ever].float().mean()) if ever.any() else
            float("nan")}


def score_judge(folder: str, data: dict) -> dict:
    model, text, _ = load_judge(folder)
    log = json.loads((Path(folder) / "train_log.json").read_text())
    recipe, args = log["recipe"], log["args"]
    examples = generated_examples(data, QUESTIONS[recipe], args.get("clear_from", 0.5), args.get("unclear_until", 0.4))
    kinds = torch.tensor([model.cfg.kinds.index(k) for k in examples["kind"]])
    answer, critique, region = predict(model, kinds, text.encode(examples["prompt"]), examples["codes"])
    said_yes = answer.argmax(-1) == 0
    result = {"recipe": recipe}
    for kind in dict.fromkeys(examples["kind"]):
        rows = torch.tensor([k == kind for k in examples["kind"]])
        labels = examples["label"][rows]
        result[kind] = {**binomial(said_yes[rows] == labels), "yes_share": float(labels.float().mean())}
    result["ranking"] = ranking_accuracy(model, text, data, "prm" if recipe == "prm" else "orm")
    if {"clarity", "potential"} <= set(model.cfg.kinds) and recipe in ("parm", "parm++"):
        result["parm"] = potential_at_first_clear(model, text, data, args.get("clear_from", 0.5))
    if critique is not None:
        failing = (examples["critique"] > 0)  # finals the evaluator failed (class 0 is "ok")
        truth = examples["regenerate"][failing].bool()
        flagged = region[failing] > 0
        union = (truth | flagged).sum(1).clamp(min=1)
        result["reflection"] = {
            "critique_accuracy": float((critique[failing].argmax(-1) == examples["critique"][failing]).float().mean()),
            "region_token_accuracy": float((flagged == truth).float().mean()),
            "region_iou": float(((truth & flagged).sum(1) / union).mean()), "n": int(failing.sum()),
            "critiques": list(CRITIQUES)}
    return result


def markdown(results: dict[str, dict[str, dict]]) -> str:
    """One row per (judge, decoding order): accuracy ± binomial SE per question with the yes-share in
    brackets, within-prompt ranking ± prompt-clustered SE, PARM's potential AUC at the first clear step
    and that step against the labelled one, PARM++'s reflection."""
    kinds = ["orm", "prm", "clarity", "potential"]
    lines = ["| Judge | Order | " + " | ".join(f"{k} acc. (yes share)" for k in kinds)
             + " | within-prompt ranking | potential AUC at first clear | first clear step (labelled) "
               "| critique acc. | region IoU |", "|" + "---|" * (len(kinds) + 7)]
    for judge, by_order in results.items():
        for order, result in by_order.items():
            cells = [f"{result[k]['accuracy']:.3f} ± {result[k].get('se', float('nan')):.3f} "
                     f"({result[k]['yes_share']:.2f})" if k in result else "-" for k in kinds]
            rank = result["ranking"]
            cells.append(f"{rank['accuracy']:.3f} ± {rank.get('se', float('nan')):.3f} ({rank['pairs']} pairs)")
            parm = result.get("parm")
            cells += [f"{parm['potential_auc']['auc']:.3f} ± {parm['potential_auc']['se']:.3f}",
                      f"{parm['first_clear_step']:.1f} / {parm['num_steps']} ({parm['labelled_clear_step']})"] \
                if parm else ["-", "-"]
            reflection = result.get("reflection")
            cells += [f"{reflection['critique_accuracy']:.3f}", f"{reflection['region_iou']:.3f}"] if reflection \
                else ["-", "-"]
            lines.append(f"| {judge} | {order} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="held-out training.judge_data files")
    parser.add_argument("--judges", nargs="+", required=True, help="judge folders")
    parser.add_argument("--out", default=None, help="also write the numbers here (JSON)")
    args = parser.parse_args(argv)
    files = [torch.load(path, weights_only=False) for path in args.data]
    if any(data["args"]["suite"] != "heldout" for data in files):
        print("judge_accuracy: error: --data must be held-out files (judge_data --suite heldout)", file=sys.stderr)
        return 2
    results = {Path(folder).name: {data["order"]: score_judge(folder, data) for data in files}
               for folder in args.judges}
    print(markdown(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
