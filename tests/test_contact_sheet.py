"""The contact sheet frames each image by its GenEval verdict."""
import json

import numpy as np
from PIL import Image

from geneval.contact_sheet import COLORS, FRAME, main


def test_sheet_has_one_framed_cell_per_image(tmp_path):
    records = []
    for i, ok in enumerate([True, False, True]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), 100, dtype=np.uint8)).save(path)
        records.append({"filename": str(path), "prompt": "p1" if i < 2 else "p2", "correct": ok})
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    main([str(tmp_path), "--scale", "2"])
    sheet = np.asarray(Image.open(tmp_path / "contact_sheet.png"))
    side = 8 * 2 + 2 * FRAME
    assert sheet.shape[0] == 2 * side  # two prompts
    left = 330
    assert tuple(sheet[0, left]) == COLORS[True] and tuple(sheet[0, left + side]) == COLORS[False]
    assert tuple(sheet[side, left]) == COLORS[True]
    assert tuple(sheet[FRAME + 1, left + FRAME + 1]) == (100, 100, 100)
