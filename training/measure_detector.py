"""Measure the shapes detector against the renderer's ground truth.

    python -m training.measure_detector --num-scenes 3000

Fresh seeded scenes of every composition the six templates allow; a scene is exact when the
detector returns exactly the rendered objects (class, colour and box). Also reports GenEval's
decision on each scene against its own record (it must be correct) and the time per image.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict

import numpy as np

from geneval.suites import enumerate_records, shapes_vocabulary
from geneval.rules import RuleConfig, evaluate_image, filter_detections
from shapes.detect import detect_image, scene_key
from shapes.render import render, sample_scene


def measure(num_scenes: int, seed: int) -> dict:
    records, rules = enumerate_records(shapes_vocabulary()), RuleConfig()
    exact, correct, seconds = defaultdict(list), [], 0.0
    for index in range(num_scenes):
        rng = np.random.default_rng([seed, index])
        record = records[rng.integers(len(records))]
        scene = sample_scene(record, rng)
        image = render(scene)
        start = time.perf_counter()
        found = detect_image(image)
        seconds += time.perf_counter() - start
        exact[record["tag"]].append(scene_key(found) == scene_key([o.as_detection() for o in scene]))
        correct.append(evaluate_image(record, filter_detections(record, found, rules), rules)[0])
    return {"exact_scene": float(np.mean([e for v in exact.values() for e in v])),
            "exact_by_tag": {t: float(np.mean(v)) for t, v in sorted(exact.items())},
            "geneval_correct": float(np.mean(correct)),
            "ms_per_image": 1000 * seconds / num_scenes, "num_scenes": num_scenes,
            "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-scenes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    print(json.dumps(measure(**vars(parser.parse_args(argv))), indent=1))


if __name__ == "__main__":
    main()
