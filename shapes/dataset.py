"""Seeded (caption, image) pairs from a pool of shapes-world metadata records, for training.

Image ``i`` depends only on ``(seed, i)``: which record it shows (a tag drawn uniformly, then
a record of that tag) and the scene's layout and free colours. So any slice of a dataset can be
rebuilt alone and in parallel, and the same command always yields the same data.
"""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from shapes.render import render, sample_scene


def _records_by_tag(records: list[dict]) -> list[list[int]]:
    by_tag = defaultdict(list)
    for index, record in enumerate(records):
        by_tag[record["tag"]].append(index)
    return [by_tag[tag] for tag in sorted(by_tag)]


def draw_pair(records: list[dict], seed: int, index: int) -> tuple[int, np.ndarray]:
    """(record index, ``uint8 [64, 64, 3]`` image) of example ``index`` of the dataset ``seed``."""
    rng = np.random.default_rng([seed, index])
    groups = _records_by_tag(records)
    group = groups[rng.integers(len(groups))]
    record_index = group[rng.integers(len(group))]
    return record_index, render(sample_scene(records[record_index], rng))


def _draw_range(args: tuple[list[dict], int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    records, seed, start, stop = args
    pairs = [draw_pair(records, seed, i) for i in range(start, stop)]
    return np.array([p[0] for p in pairs], dtype=np.int32), np.stack([p[1] for p in pairs])


def build_pairs(records: list[dict], num_images: int, seed: int, start: int = 0,
                num_workers: int = 1, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``start .. start+num_images``: ``(record indices [N], images uint8 [N, 64, 64, 3])``."""
    if not records:
        raise ValueError("the metadata pool is empty; write it with `python -m geneval.suites --vocab shapes`")
    bounds = [(records, seed, s, min(s + chunk, start + num_images)) for s in range(start, start + num_images, chunk)]
    if num_workers <= 1:
        parts = [_draw_range(b) for b in bounds]
    else:
        with ProcessPoolExecutor(num_workers) as pool:
            parts = list(pool.map(_draw_range, bounds))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
