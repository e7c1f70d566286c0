"""GenEval: prompt suites, the official decision rules, detector backends and the evaluation CLI.

Run the evaluator with ``python -m geneval.evaluate OUTDIR`` (or under torchrun).
"""
