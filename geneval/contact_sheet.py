"""A contact sheet of a scored GenEval output folder: one row per prompt, its images framed green
(correct) or red (wrong), the prompt written beside them.

    python -m geneval.contact_sheet OUTDIR [--out OUTDIR/contact_sheet.png] [--max-prompts 40] [--scale 2]

Reads ``OUTDIR/results.jsonl`` (written by ``python -m geneval.evaluate`` or ``main.py``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

FRAME = 3
COLORS = {True: (40, 170, 60), False: (210, 40, 40)}


def load_verdicts(results: Path) -> dict[str, list[tuple[Path, bool]]]:
    """prompt -> [(image path, correct)] in file order."""
    rows: dict[str, list[tuple[Path, bool]]] = {}
    for line in results.read_text().splitlines():
        record = json.loads(line)
        rows.setdefault(record["prompt"], []).append((Path(record["filename"]), bool(record["correct"])))
    return rows


def render_sheet(rows: dict[str, list[tuple[Path, bool]]], scale: int, text_width: int = 330) -> Image.Image:
    cells = [[(Image.open(path).convert("RGB"), ok) for path, ok in images] for images in rows.values()]
    side = max(image.width for row in cells for image, _ in row) * scale + 2 * FRAME
    width = text_width + side * max(len(row) for row in cells)
    sheet = Image.new("RGB", (width, side * len(cells)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (prompt, row) in enumerate(zip(rows, cells)):
        draw.text((6, r * side + side // 2 - 6), prompt, fill=(0, 0, 0))
        for c, (image, ok) in enumerate(row):
            x, y = text_width + c * side, r * side
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=COLORS[ok])
            sheet.paste(image.resize((image.width * scale, image.height * scale), Image.NEAREST), (x + FRAME, y + FRAME))
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-prompts", type=int, default=40)
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args(argv)
    results = args.outdir / "results.jsonl"
    if not results.is_file():
        raise SystemExit(f"{results} not found: score the folder first with `python -m geneval.evaluate {args.outdir}`")
    rows = dict(list(load_verdicts(results).items())[:args.max_prompts])
    out = args.out or args.outdir / "contact_sheet.png"
    render_sheet(rows, args.scale).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
