"""GenEval scores from results.jsonl files (djghosh13/geneval evaluation/summary_scores.py).

    python -m geneval.summary results.jsonl [more.jsonl ...] [--markdown]

Prints upstream's summary for each file. The headline "Overall" is the unweighted mean of the
per-tag image accuracies (a macro average over tags), as upstream; unlike upstream, a loud
WARNING names any of the six GenEval tags that are missing, since Overall then averages fewer
tasks. ``--markdown`` adds one table row per file.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

# The six GenEval tasks, in the order of prompts/evaluation_metadata.jsonl.
GENEVAL_TAGS = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
TABLE_COLUMNS = {"single_object": "Single obj", "two_object": "Two obj", "counting": "Counting",
                 "colors": "Colors", "position": "Position", "color_attr": "Color attr"}
REQUIRED_FIELDS = ("tag", "correct", "metadata")


@dataclass
class Summary:
    total_images: int
    total_prompts: int
    """Distinct ``metadata`` strings (upstream ``groupby('metadata')``)."""
    image_accuracy: float
    prompt_accuracy: float
    """Fraction of prompts with at least one correct image."""
    tag_accuracy: dict[str, float]
    """Image accuracy per tag, tags in order of first appearance."""
    tag_counts: dict[str, tuple[int, int]]
    """``(correct, total)`` images per tag."""
    overall: float
    """Unweighted mean of ``tag_accuracy`` values: the GenEval score."""
    missing_tags: list[str] = field(default_factory=list)


def load_results(path) -> list[dict]:
    """Records of a results.jsonl file (one JSON object per line; blank lines are skipped)."""
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err}); each line of a results file "
                                 "must be one JSON object as written by geneval.evaluate") from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in REQUIRED_FIELDS if k not in record]
            if missing:
                raise ValueError(f"{path}:{line_no}: record lacks {missing}; is this a GenEval results file?")
            records.append(record)
    return records


def summarize(records: list[dict]) -> Summary:
    """Upstream's aggregates over per-image records (fields ``tag``, ``correct``, ``metadata``)."""
    if not records:
        raise ValueError("no records to summarize; the results file is empty")
    for record in records:
        if not isinstance(record["correct"], bool) or not isinstance(record["metadata"], str):
            raise ValueError(f"record {record.get('filename', '<no filename>')!r} has correct={record['correct']!r} "
                             f"and metadata of type {type(record['metadata']).__name__}; expected a bool and the "
                             "prompt metadata as a JSON string (geneval.rules.result_record)")
    prompt_correct: dict[str, bool] = {}
    tag_counts: dict[str, tuple[int, int]] = {}
    for record in records:
        key = record["metadata"]  # upstream groups on the metadata JSON string
        prompt_correct[key] = prompt_correct.get(key, False) or record["correct"]
        num_correct, num_total = tag_counts.get(record["tag"], (0, 0))
        tag_counts[record["tag"]] = (num_correct + record["correct"], num_total + 1)
    tag_accuracy = {tag: c / n for tag, (c, n) in tag_counts.items()}
    return Summary(
        total_images=len(records),
        total_prompts=len(prompt_correct),
        image_accuracy=sum(r["correct"] for r in records) / len(records),
        prompt_accuracy=sum(prompt_correct.values()) / len(prompt_correct),
        tag_accuracy=tag_accuracy,
        tag_counts=tag_counts,
        overall=sum(tag_accuracy.values()) / len(tag_accuracy),  # upstream: np.mean(task_scores)
        missing_tags=[t for t in GENEVAL_TAGS if t not in tag_counts],
    )


def overall_standard_error(summary: Summary) -> float:
    """Standard error of ``overall``: each tag's image accuracy an independent binomial, combined as
    the overall mean combines them, ``sqrt(sum_t p_t (1 - p_t) / n_t) / T``. Images of one prompt are
    not independent draws, so this is a lower bound; orderings are claimed only beyond two of them."""
    variance = sum(p * (1 - p) / summary.tag_counts[tag][1] for tag, p in summary.tag_accuracy.items())
    return math.sqrt(variance) / len(summary.tag_accuracy)


def format_summary(summary: Summary) -> str:
    """The text summary_scores.py prints, plus the overall's standard error and a WARNING line when
    GenEval tags are missing."""
    lines = [
        "Summary",
        "=======",
        f"Total images: {summary.total_images}",
        f"Total prompts: {summary.total_prompts}",
        f"% correct images: {summary.image_accuracy:.2%}",
        f"% correct prompts: {summary.prompt_accuracy:.2%}",
        "",
        "Task breakdown",
        "==============",
    ]
    for tag, accuracy in summary.tag_accuracy.items():
        num_correct, num_total = summary.tag_counts[tag]
        lines.append(f"{tag:<16} = {accuracy:.2%} ({num_correct} / {num_total})")
    lines += ["", f"Overall score (avg. over tasks): {summary.overall:.5f}",
              f"Standard error of the overall: {overall_standard_error(summary):.5f} (tags as independent binomials)"]
    if summary.missing_tags:
        lines.append(f"WARNING: missing GenEval tags {', '.join(summary.missing_tags)}: the overall score "
                     f"averages only {len(summary.tag_accuracy)} tasks and is not comparable to a full run")
    return "\n".join(lines)


def markdown_table(rows) -> str:
    """A markdown table, one row per ``(name, Summary)`` (a dict or a list of pairs), two decimals."""
    pairs = list(rows.items()) if isinstance(rows, dict) else list(rows)
    header = ["Method", *TABLE_COLUMNS.values(), "Overall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, summary in pairs:
        cells = [_cell(summary.tag_accuracy.get(tag)) for tag in TABLE_COLUMNS]
        lines.append("| " + " | ".join([name, *cells, _cell(summary.overall)]) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geneval.summary", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.jsonl files written by the GenEval evaluator")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table, one row per file")
    args = parser.parse_args(argv)
    summaries = {path: summarize(load_results(path)) for path in args.results}
    for path, summary in summaries.items():
        if len(summaries) > 1:
            print(f"# {path}")
        print(format_summary(summary))
        print()
    if args.markdown:
        print(markdown_table(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
