"""Configuration of the image generator (the ``generation:`` section of the run config)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LlamaGenOptions:
    """LlamaGen settings the other backends have no use for (defaults = LlamaGen's sample_t2i.py)."""

    text_encoder: str = "google/flan-t5-xl"
    """T5 checkpoint + tokenizer (folder or cached id); sample_t2i.py's ``--t5-model-type flan-t5-xl``."""
    image_size: int = 256
    """Pixels per side: 256 for ``t2i_XL_stage1_256.pt`` (16x16 codes), 512 for ``stage2_512``."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off, sample_t2i.py's default)."""
    cfg_interval: int = -1
    """Guide only tokens ``0 .. cfg_interval + 1`` (-1 = all, generate()'s default)."""
    num_heads: int = 0
    """Attention heads; 0 = from ``HEADS_BY_WIDTH`` (the official sizes)."""


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
    llamagen: LlamaGenOptions = field(default_factory=LlamaGenOptions)
    """``generation.llamagen.*``: read by the LlamaGen backend only."""
