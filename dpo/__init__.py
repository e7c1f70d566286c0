"""Direct preference optimisation of the generators (paper sections 3.3-3.4; upstream training/train_dpo.py).

- ``dpo.loss``: the DPO objective (+ optional SFT term and per-pair weights).
- ``dpo.likelihood``: log pi(image | prompt) per backend: masked-token likelihood for mask-predict
  models (shared mask and text-dropout draws), exact sequence likelihood for raster models.
- ``dpo.pairs``: scored candidates -> ``{prompt, chosen, rejected[, weight]}`` JSONL pair files.
- ``dpo.guidance``: PARM reward guidance that actually changes the gradient (upstream's does not).
- ``dpo.train``: the ``accelerate launch`` trainer (DDP or FSDP, resumable) of the tiny shapes
  generator; Show-o and Janus have likelihoods here but no trainer adapter yet.
- ``dpo.prompts``: seeded subsets of the shapes training prompt pool for candidate generation.

The whole shapes-world loop is ``bash scripts/train_shapes_dpo.sh``.
"""
