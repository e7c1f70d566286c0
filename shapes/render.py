"""Render shapes-world scenes that satisfy a GenEval metadata record, with ground truth.

``sample_scene(metadata, rng)`` lays out the objects a record asks for (class, count,
colour, relative position) on the cell grid; ``render(scene)`` draws them. The scene is the
ground truth, in the same ``Detection`` form the detectors return.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw

from geneval.detection import COLORS, Detection
from geneval.rules import relative_position
from shapes.world import BACKGROUND, CELL, GRID, IMAGE_SIZE, PALETTE, SHAPES, shape_polygon

# Object side in cells, per tag: big single objects, smaller ones when several share the canvas.
SIZES_IN_CELLS = {
    "single_object": (3, 4, 5),
    "colors": (3, 4, 5),
    "two_object": (2, 3, 4),
    "color_attr": (2, 3, 4),
    "position": (2, 3, 4),
    "counting": (2, 3),
}
MAX_LAYOUT_TRIES = 200


@dataclass
class SceneObject:
    shape: str
    color: str
    cell: tuple[int, int]  # (col, row) of the top-left cell
    size: int  # side in cells

    @property
    def box(self) -> tuple[int, int, int, int]:
        x1, y1 = self.cell[0] * CELL, self.cell[1] * CELL
        return (x1, y1, x1 + self.size * CELL, y1 + self.size * CELL)

    def as_detection(self) -> Detection:
        return Detection(label=self.shape, box=tuple(float(v) for v in self.box), score=1.0, color=self.color)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    """Draw ``shape`` so that its pixels span ``box`` (exclusive ends), without antialiasing."""
    x1, y1, x2, y2 = box
    inclusive = (x1, y1, x2 - 1, y2 - 1)  # PIL's coordinates are pixel centres, inclusive
    polygon = shape_polygon(shape, inclusive)
    if polygon is None:
        draw.ellipse(inclusive, fill=fill)
    else:
        draw.polygon(polygon, fill=fill)


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean ``[height, width]`` mask of ``shape`` filling a ``width`` x ``height`` box."""
    canvas = Image.new("L", (width, height), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, width, height), 255)
    return np.asarray(canvas) > 0


def render(objects: list[SceneObject], size: int = IMAGE_SIZE) -> np.ndarray:
    """``uint8 [size, size, 3]`` image of the scene on the grey background."""
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        draw_shape(draw, obj.shape, obj.box, PALETTE[obj.color])
    if size != IMAGE_SIZE:
        canvas = canvas.resize((size, size), Image.NEAREST)
    return np.asarray(canvas).copy()


def _requested_objects(metadata: dict, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(shape, colour, include-clause index) for every object the record asks for."""
    requested = []
    for clause_index, clause in enumerate(metadata["include"]):
        if clause["class"] not in SHAPES:
            raise ValueError(f"class {clause['class']!r} is not a shapes-world class ({SHAPES})")
        # Uncoloured counting objects share one colour half the time, so colour is no count cue.
        shared = COLORS[rng.integers(len(COLORS))] if rng.random() < 0.5 else None
        for _ in range(clause["count"]):
            color = clause.get("color") or shared or COLORS[rng.integers(len(COLORS))]
            requested.append((clause["class"], color, clause_index))
    return requested


def _place(sizes: list[int], rng: np.random.Generator) -> list[tuple[int, int]] | None:
    """Top-left cells for squares of the given sizes, at least one empty cell apart, or None."""
    blocked = np.zeros((GRID + 2, GRID + 2), dtype=np.int32)  # taken cells grown by one, padded
    cells = []
    for size in sizes:
        # A window of side size+2 around a candidate must hold no taken cell.
        window = sliding_window_view(blocked, (size + 2, size + 2)).sum(axis=(-1, -2))
        rows, cols = np.nonzero(window[:GRID - size + 1, :GRID - size + 1] == 0)
        if len(rows) == 0:
            return None
        pick = rng.integers(len(rows))
        r, c = int(rows[pick]), int(cols[pick])
        blocked[r + 1:r + size + 1, c + 1:c + size + 1] = 1
        cells.append((c, r))
    return cells


def _positions_hold(metadata: dict, objects: list[SceneObject], clause_of: list[int]) -> bool:
    """True when every position clause holds under GenEval's relative-position rule."""
    for index, clause in enumerate(metadata["include"]):
        if "position" not in clause:
            continue
        relation, target = clause["position"]
        for a in (o for o, c in zip(objects, clause_of) if c == index):
            for b in (o for o, c in zip(objects, clause_of) if c == target):
                if relation not in relative_position(a.box, b.box):
                    return False
    return True


def sample_scene(metadata: dict, rng: np.random.Generator) -> list[SceneObject]:
    """A random scene that satisfies ``metadata`` (a GenEval record over shapes-world classes)."""
    requested = _requested_objects(metadata, rng)
    size_choices = SIZES_IN_CELLS[metadata["tag"]]
    for attempt in range(MAX_LAYOUT_TRIES):
        # Shrink towards the smallest size after repeated failures (four objects are tight).
        choices = size_choices if attempt < MAX_LAYOUT_TRIES // 2 else size_choices[:1]
        sizes = [int(rng.choice(choices)) for _ in requested]
        cells = _place(sizes, rng)
        if cells is None:
            continue
        objects = [SceneObject(shape, color, cell, size)
                   for (shape, color, _), cell, size in zip(requested, cells, sizes)]
        if _positions_hold(metadata, objects, [c for _, _, c in requested]):
            return objects
    raise RuntimeError(f"could not lay out a scene for {metadata['prompt']!r} in {MAX_LAYOUT_TRIES} tries")
