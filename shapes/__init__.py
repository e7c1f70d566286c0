"""The shapes world: a 64x64 GenEval-compatible world of flat coloured shapes, its renderer,
detector and datasets, and the two tokenizers every shapes-world model shares (patch and word).

Everyone depends on it (generators, judges, the evaluator's shapes detector); it depends on
nothing of the project but the GenEval vocabulary (``geneval.detection``, ``geneval.rules``,
``geneval.suites``).
"""
