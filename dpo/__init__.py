"""Direct preference optimisation of the generators (paper sections 3.3-3.4; upstream training/train_dpo.py).

- ``dpo.loss``: the DPO objective (+ optional SFT term and per-pair weights).
- ``dpo.likelihood``: log pi(image | prompt) per backend: masked-token likelihood for mask-predict
  models, exact sequence likelihood for raster models, both with shared mask and text-dropout draws.
- ``dpo.pairs``: scored candidates -> ``{prompt, chosen, rejected[, weight]}`` JSONL pair files.
- ``dpo.guidance``: PARM reward guidance that actually changes the gradient (upstream's does not).
- ``dpo.backends``: what the trainer needs from each generator (load, encode pairs, score, save in
  the generator's own layout): the tiny shapes generator, Show-o, Janus-Pro and LlamaGen.
- ``dpo.train``: the ``accelerate launch`` trainer (DDP or FSDP, resumable) of any of them
  (``--backend``); its output loads back with ``generation.weights=OUT`` or ``--dpo_model OUT``.
- ``dpo.prompt_subset``: seeded subsets of the shapes training prompt pool for candidate generation.

The whole shapes-world loop is ``bash scripts/train_shapes_dpo.sh``.
"""
