"""The shapes world: a GenEval-style world of flat coloured shapes on a grey canvas.

Design (why it looks like this):
- 64x64 images, so generators train on 2 CPU cores.
- Every object's bounding box is snapped to the 8-pixel cell grid and is 2-5 cells wide.
  The embedded tokenizer has one token per 8x8 cell, so each token sees one fixed piece of
  one shape: this is what lets a small VQ tokenizer reconstruct scenes exactly (a probe with
  free placement and radius-7 shapes reached only 68% exact reconstructions).
- Objects never share a cell and keep one empty cell between them, so the detector's
  connected components are exactly the objects.
- Shapes are defined by their bounding box, so the detector can re-render each class into a
  found component's box and compare masks.
"""
from __future__ import annotations

import numpy as np

from geneval.detection import COLORS

IMAGE_SIZE = 64
CELL = 8
GRID = IMAGE_SIZE // CELL  # 8 cells per side

SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
           "diamond": "diamonds", "cross": "crosses"}

BACKGROUND = (150, 150, 150)
# RGB of each GenEval colour word; chosen to be far from each other and from the background.
PALETTE = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 40),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "purple": (130, 40, 170),
    "pink": (255, 130, 200),
    "brown": (120, 70, 25),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
assert list(PALETTE) == COLORS


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    """Polygon vertices of ``shape`` filling ``box`` (x1, y1, x2, y2, exclusive ends); None for a circle."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    xc, yc = x1 + w / 2, y1 + h / 2

    def at(u: float, v: float) -> tuple[float, float]:
        return (x1 + u * w, y1 + v * h)

    if shape == "circle":
        return None
    if shape == "square":
        return [at(0, 0), at(1, 0), at(1, 1), at(0, 1)]
    if shape == "triangle":
        return [at(0.5, 0), at(1, 1), at(0, 1)]
    if shape == "diamond":
        return [(xc, y1), (x2, yc), (xc, y2), (x1, yc)]
    if shape == "cross":
        a, b = 0.3, 0.7  # arm thickness 40% of the box
        return [at(a, 0), at(b, 0), at(b, a), at(1, a), at(1, b), at(b, b), at(b, 1), at(a, 1),
                at(a, b), at(0, b), at(0, a), at(a, a)]
    if shape == "star":
        return [at(u, v) for u, v in _STAR_UNIT]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _unit_star() -> list[tuple[float, float]]:
    """A five-pointed star (inner radius 0.45) stretched to fill the unit box."""
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    xs, ys = radii * np.cos(angles), radii * np.sin(angles)
    xs = (xs - xs.min()) / (xs.max() - xs.min())
    ys = (ys - ys.min()) / (ys.max() - ys.min())
    return list(zip(xs.tolist(), ys.tolist()))


_STAR_UNIT = _unit_star()
