"""Configuration of the image generator (the ``generation:`` section of the run config)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationConfig:
    backend: str = "showo"
    """Generator backend: ``tiny`` (embedded shapes world), ``showo``, ``janus`` or ``llamagen``."""
    weights: str = "showlab/show-o"
    """Generator weights: a local folder or a Hugging Face id in the local cache."""
    tokenizer: str = "showlab/magvitv2"
    """Image tokenizer weights (folder or cached id)."""
    order: str = "mask"
    """Decoding order for backends that offer both: ``mask`` (Show-o) or ``raster`` (LlamaGen)."""
    num_steps: int = 18
    """Mask-predict decoding steps (upstream ``generation_timesteps``: 18)."""
    guidance_scale: float = 1.75
    """Classifier-free guidance ``s``: logits ``(1+s)*cond - s*uncond`` (Show-o; upstream 1.75)."""
    temperature: float = 1.0
    """Mask-predict: initial re-masking (Gumbel) temperature. Raster: sampling temperature."""
    temperature_schedule: str = "showo"
    """Re-masking temperature annealing: ``showo`` | ``maskgit`` | ``upstream`` (see generation/maskgit.py)."""
    rows_per_step: int = 1
    """Raster order: token rows decoded per protocol step (a step is a block of rows)."""
    top_k: int = 0
    """Raster order: keep the k most likely codes before sampling (0 = all, as Janus)."""
    dtype: str = "float32"
    """Model dtype: ``float32`` | ``bfloat16`` | ``float16``."""
