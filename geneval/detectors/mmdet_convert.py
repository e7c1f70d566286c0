"""mmdetection Mask2Former checkpoints -> transformers ``Mask2FormerForUniversalSegmentation``.

GenEval scores with mmdetection's own Mask2Former Swin-S training run, which its
``evaluation/download_models.sh`` fetches as ``OFFICIAL_CHECKPOINTS["mmdet2"]`` (mmdet 2.x
layout); mmdetection re-released the same weights for 3.x under other parameter names
(``OFFICIAL_CHECKPOINTS["mmdet3"]``). transformers' hub checkpoints
(``facebook/mask2former-*``) come from the detectron2 training run instead, so their scores
differ from GenEval's. This module converts either mmdet file into a ``save_pretrained``
folder the ``hf`` backend loads, without mmcv.

The conversion is strict: every source tensor is used exactly once (buffers that the target
recomputes, such as Swin's ``relative_position_index``, are compared with the target's own and
count as used), every target tensor is filled, shapes must agree, and anything left over on
either side is an error naming the keys. The only targets with no source are listed in
``TARGETS_WITHOUT_SOURCE`` with the reason.

Layout notes (mmdet 2.27 ``mmdet/models``; transformers 5.x ``models/mask2former``):

- Swin (``backbones/swin.py``): ``attn.w_msa.qkv`` is split into q/k/v; ``PatchMerging`` gathers
  each 2x2 patch with ``nn.Unfold`` (channel-major: ``c*4 + dy*2 + dx``) while transformers
  concatenates the four shifted maps (``k*C + c``, k over (0,0), (1,0), (0,1), (1,1)), so the
  downsample ``reduction`` columns and ``norm`` are permuted back, the inverse of mmdet's
  ``tools/model_converters/swin2mmdet.py`` ``correct_unfold_*_order``.
- pixel decoder (``plugins/msdeformattn_pixel_decoder.py``): ``input_convs[i]`` and
  ``level_encoding[i]`` both run coarsest level first, as transformers' ``input_projections``
  and ``level_embed`` do; the one FPN level is ``lateral_convs.0``/``output_convs.0``.
- head (``dense_heads/mask2former_head.py``): decoder layers run cross-attention, self-attention,
  FFN, so ``attentions.0``/``norms.0`` are the cross-attention ones; transformers counts the
  initial prediction as a layer (``decoder_layers = mmdet num_layers + 1``).
- mmdet 3.x (``layers/transformer/mask2former_layers.py``) renamed ``attentions.0``/``attentions.1``
  /``ffns.0`` to ``cross_attn``/``self_attn``/``ffn`` (decoder) and ``self_attn``/``ffn``
  (pixel-decoder encoder); those names are mapped back before converting.

Architecture sizes are read from the tensor shapes; attention heads and deformable sampling
points are not visible there: ``num_attention_heads`` (8 in every released config) is an
argument, and transformers fixes 3 levels and 4 points, which the shapes must confirm.

Command line: ``python scripts/convert_mmdet_mask2former.py CHECKPOINT.pth [OUT_DIR]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

OFFICIAL_NAME = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
"""GenEval's ``--options model=`` default (evaluate_images.py) and the file name it saves."""
OFFICIAL_CHECKPOINTS = {
    "mmdet2": ("https://download.openmmlab.com/mmdetection/v2.0/mask2former/"
               "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
               "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth"),
    "mmdet3": ("https://download.openmmlab.com/mmdetection/v3.0/mask2former/"
               "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco/"
               "mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco_20220504_001756-c9d0c4f2.pth"),
}
"""The two releases of GenEval's detector weights (download_models.sh fetches ``mmdet2``)."""
OFFICIAL_HASH_PREFIXES = {"743b7d99": "mmdet2", "c9d0c4f2": "mmdet3"}
"""OpenMMLab names each file after the first 8 hex digits of its SHA-256."""
PROVENANCE_FILE = "conversion.json"
"""Written next to the converted weights: what they were converted from (read by ``hf.py``)."""
TARGETS_WITHOUT_SOURCE = {
    "model.pixel_level_module.encoder.swin.layernorm.weight":
        "SwinModel's final norm; SwinBackbone never applies it (transformers ignores it on load)",
    "model.pixel_level_module.encoder.swin.layernorm.bias": "as above",
    "criterion.empty_weight": "loss weights [1, ..., 1, no_object_weight] from the config, not trained",
}
AUTO_WEIGHTS = "auto"
"""``geneval.detector_path`` default: the converted official weights when present (``resolve_detector_path``)."""
WEIGHTS_DIR_ENV = "GENEVAL_WEIGHTS"
"""Folder holding converted detector weights (default ``~/.cache/geneval``)."""
HF_LEVELS, HF_POINTS = 3, 4
"""transformers' pixel-decoder encoder fixes ``n_levels=3, n_points=4`` (modeling_mask2former.py)."""


class ConversionError(ValueError):
    pass


def official_folder() -> Path:
    """Where ``scripts/convert_mmdet_mask2former.py`` puts GenEval's converted detector by default."""
    root = Path(os.environ.get(WEIGHTS_DIR_ENV) or Path.home() / ".cache" / "geneval").expanduser()
    return root / f"{OFFICIAL_NAME}-hf"


def resolve_detector_path(detector_path: str, fallback: str) -> str:
    """``detector_path`` itself, or for ``auto`` the official folder if it exists, else ``fallback``."""
    if detector_path != AUTO_WEIGHTS:
        return detector_path
    folder = official_folder()
    return str(folder) if (folder / PROVENANCE_FILE).is_file() else fallback


# ----------------------------------------------------------------------------
# Reading checkpoints

def load_mmdet_checkpoint(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta) of an mmdet ``.pth``.

    mmdet checkpoints keep numpy objects in ``meta``, which torch >= 2.6 refuses under the
    default ``weights_only=True``; this loads with ``weights_only=False``, so convert only files
    you trust (the OpenMMLab URLs above).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file; download GenEval's detector first: "
                                f"wget {OFFICIAL_CHECKPOINTS['mmdet2']}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    state = {name.removeprefix("module."): tensor for name, tensor in state.items() if torch.is_tensor(tensor)}
    return state, checkpoint.get("meta") or {}


def checkpoint_classes(meta: dict) -> list[str] | None:
    """Class names stored by mmdet: ``meta["CLASSES"]`` (2.x) or ``meta["dataset_meta"]["classes"]`` (3.x)."""
    classes = meta.get("CLASSES") or (meta.get("dataset_meta") or {}).get("classes")
    return list(classes) if classes else None


def source_layout(state: dict[str, torch.Tensor]) -> str:
    """``mmdet2`` or ``mmdet3``, from the decoder's parameter names."""
    names = list(state)
    if any(".transformer_decoder.layers.0.attentions.0." in n for n in names):
        return "mmdet2"
    if any(".transformer_decoder.layers.0.cross_attn." in n for n in names):
        return "mmdet3"
    raise ConversionError("not an mmdetection Mask2Former checkpoint: no panoptic_head.transformer_decoder "
                          f"layers found (first keys: {names[:5]})")


_MMDET3_TO_MMDET2 = [
    (re.compile(r"(pixel_decoder\.encoder\.layers\.\d+)\.self_attn\."), r"\1.attentions.0."),
    (re.compile(r"(pixel_decoder\.encoder\.layers\.\d+)\.ffn\."), r"\1.ffns.0."),
    (re.compile(r"(transformer_decoder\.layers\.\d+)\.cross_attn\."), r"\1.attentions.0."),
    (re.compile(r"(transformer_decoder\.layers\.\d+)\.self_attn\."), r"\1.attentions.1."),
    (re.compile(r"(transformer_decoder\.layers\.\d+)\.ffn\."), r"\1.ffns.0."),
]


def to_mmdet2_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict under mmdet 2.x names (a 3.x checkpoint is renamed one to one)."""
    if source_layout(state) == "mmdet2":
        return dict(state)
    renamed = {}
    for name, tensor in state.items():
        for pattern, repl in _MMDET3_TO_MMDET2:
            name = pattern.sub(repl, name)
        renamed[name] = tensor
    if len(renamed) != len(state):
        raise ConversionError("renaming mmdet 3.x keys to 2.x collided; the checkpoint has unexpected names")
    return renamed


# ----------------------------------------------------------------------------
# Configuration from shapes

def _count(state, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for name in state if (m := regex.match(name))})


def hf_config(state: dict[str, torch.Tensor], class_names: list[str], num_attention_heads: int = 8):
    """A ``Mask2FormerConfig`` (Swin backbone) matching an mmdet 2.x-named Mask2Former state dict."""
    from transformers import Mask2FormerConfig, SwinConfig

    def shape(name):
        if name not in state:
            raise ConversionError(f"checkpoint lacks {name}; only Swin-backbone Mask2Former checkpoints convert")
        return tuple(state[name].shape)

    embed_dim, _, patch, _ = shape("backbone.patch_embed.projection.weight")
    num_stages = _count(state, r"backbone\.stages\.(\d+)\.")
    depths = [_count(state, rf"backbone\.stages\.{i}\.blocks\.(\d+)\.") for i in range(num_stages)]
    table = [shape(f"backbone.stages.{i}.blocks.0.attn.w_msa.relative_position_bias_table") for i in range(num_stages)]
    window = (int(round(table[0][0] ** 0.5)) + 1) // 2
    if (2 * window - 1) ** 2 != table[0][0]:
        raise ConversionError(f"relative position table of {table[0][0]} rows is not (2w-1)^2 for a square window")
    hidden = shape("backbone.stages.0.blocks.0.ffn.layers.0.0.weight")[0]
    feature_size = shape("panoptic_head.pixel_decoder.input_convs.0.conv.weight")[0]
    hidden_dim = shape("panoptic_head.query_feat.weight")[1]
    num_queries = shape("panoptic_head.query_feat.weight")[0]
    num_classes = shape("panoptic_head.cls_embed.weight")[0] - 1
    offsets = shape("panoptic_head.pixel_decoder.encoder.layers.0.attentions.0.sampling_offsets.weight")[0]
    if offsets != num_attention_heads * HF_LEVELS * HF_POINTS * 2:
        raise ConversionError(
            f"sampling_offsets has {offsets} outputs, not heads*levels*points*2 = {num_attention_heads}*"
            f"{HF_LEVELS}*{HF_POINTS}*2; transformers supports {HF_LEVELS} levels and {HF_POINTS} points only "
            "(or pass the right num_attention_heads)")
    if len(class_names) != num_classes:
        raise ConversionError(f"{len(class_names)} class names for a head with {num_classes} classes")
    if num_stages != 4:
        raise ConversionError(f"transformers' Mask2Former needs 4 backbone stages, the checkpoint has {num_stages}")
    swin = SwinConfig(
        embed_dim=embed_dim, depths=depths, num_heads=[t[1] for t in table], window_size=window, patch_size=patch,
        mlp_ratio=hidden / embed_dim, qkv_bias="backbone.stages.0.blocks.0.attn.w_msa.qkv.bias" in state,
        hidden_act="gelu", drop_path_rate=0.3, use_absolute_embeddings=False, image_size=224,
        out_features=[f"stage{i + 1}" for i in range(num_stages)])
    id2label = dict(enumerate(class_names))
    return Mask2FormerConfig(
        backbone_config=swin, feature_size=feature_size,
        mask_feature_size=shape("panoptic_head.pixel_decoder.mask_feature.weight")[0], hidden_dim=hidden_dim,
        encoder_feedforward_dim=shape("panoptic_head.pixel_decoder.encoder.layers.0.ffns.0.layers.0.0.weight")[0],
        encoder_layers=_count(state, r"panoptic_head\.pixel_decoder\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(state, r"panoptic_head\.transformer_decoder\.layers\.(\d+)\.") + 1,
        num_attention_heads=num_attention_heads,
        dim_feedforward=shape("panoptic_head.transformer_decoder.layers.0.ffns.0.layers.0.0.weight")[0],
        num_queries=num_queries, no_object_weight=0.1,
        enforce_input_projection="panoptic_head.decoder_input_projs.0.weight" in state,
        id2label=id2label, label2id={name: i for i, name in id2label.items()})


# ----------------------------------------------------------------------------
# Tensor mapping

def unfold_to_concat(weight: torch.Tensor) -> torch.Tensor:
    """PatchMerging channels from mmdet's ``nn.Unfold`` order to transformers' concat order.

    Works on the last dimension (``reduction.weight [out, 4C]``, ``norm`` vectors ``[4C]``):
    unfold index ``c*4 + u`` (u = dy*2 + dx) becomes ``k*C + c`` with k over
    (dy, dx) = (0,0), (1,0), (0,1), (1,1), i.e. ``u = [0, 2, 1, 3][k]``.
    """
    *lead, four_c = weight.shape
    grouped = weight.reshape(*lead, four_c // 4, 4).transpose(-1, -2)  # [..., u, C]
    return grouped[..., [0, 2, 1, 3], :].reshape(*lead, four_c)


class _Mapper:
    """Moves tensors from ``source`` to target names, each source name exactly once."""

    def __init__(self, source: dict[str, torch.Tensor], target_names: set[str]):
        self.source, self.targets, self.used, self.out = source, target_names, set(), {}

    def take(self, name: str) -> torch.Tensor:
        if name in self.used:
            raise ConversionError(f"source tensor {name} used twice")
        if name not in self.source:
            raise ConversionError(f"checkpoint lacks {name}")
        self.used.add(name)
        return self.source[name]

    def put(self, target: str, tensor: torch.Tensor) -> None:
        if target in self.out:
            raise ConversionError(f"target tensor {target} filled twice")
        self.out[target] = tensor.clone()

    def copy(self, src: str, dst: str, suffixes=("weight", "bias")) -> None:
        """``src.weight`` -> ``dst.weight`` etc.; a bias is moved when the target has one (else it is left over)."""
        for suffix in suffixes:
            if suffix == "bias" and f"{dst}.bias" not in self.targets:
                continue
            self.put(f"{dst}.{suffix}", self.take(f"{src}.{suffix}"))

    def split_qkv(self, src: str, dst: str, names=("q_proj", "k_proj", "v_proj"), suffixes=("weight", "bias"),
                  src_names=None) -> None:
        for suffix in suffixes:
            key = src_names[suffix] if src_names else f"{src}.{suffix}"
            if f"{dst}.{names[0]}.{suffix}" not in self.targets:
                continue
            for name, part in zip(names, self.take(key).chunk(3, dim=0)):
                self.put(f"{dst}.{name}.{suffix}", part)

    def left_over(self) -> list[str]:
        return sorted(set(self.source) - self.used)


def _backbone(m: _Mapper, config, buffers: dict[str, torch.Tensor]) -> None:
    swin = "model.pixel_level_module.encoder.swin"
    m.copy("backbone.patch_embed.projection", f"{swin}.embeddings.patch_embeddings.projection")
    m.copy("backbone.patch_embed.norm", f"{swin}.embeddings.norm")
    depths = config.backbone_config.depths
    for i, depth in enumerate(depths):
        for j in range(depth):
            src, dst = f"backbone.stages.{i}.blocks.{j}", f"{swin}.encoder.layers.{i}.blocks.{j}"
            m.copy(f"{src}.norm1", f"{dst}.layernorm_before")
            m.split_qkv(f"{src}.attn.w_msa.qkv", f"{dst}.attention")
            m.copy(f"{src}.attn.w_msa.proj", f"{dst}.attention.o_proj")
            m.put(f"{dst}.attention.relative_position_bias.relative_position_bias_table",
                  m.take(f"{src}.attn.w_msa.relative_position_bias_table"))
            _check_relative_index(m, f"{src}.attn.w_msa.relative_position_index", dst, buffers)
            m.copy(f"{src}.norm2", f"{dst}.layernorm_after")
            m.copy(f"{src}.ffn.layers.0.0", f"{dst}.mlp.fc1")
            m.copy(f"{src}.ffn.layers.1", f"{dst}.mlp.fc2")
        if i < len(depths) - 1:
            src, dst = f"backbone.stages.{i}.downsample", f"{swin}.encoder.layers.{i}.downsample"
            m.put(f"{dst}.reduction.weight", unfold_to_concat(m.take(f"{src}.reduction.weight")))
            for suffix in ("weight", "bias"):
                m.put(f"{dst}.norm.{suffix}", unfold_to_concat(m.take(f"{src}.norm.{suffix}")))
    for i in range(len(depths)):
        m.copy(f"backbone.norm{i}", f"model.pixel_level_module.encoder.hidden_states_norms.stage{i + 1}")


def _check_relative_index(m: _Mapper, src: str, dst: str, buffers: dict[str, torch.Tensor]) -> None:
    """mmdet saves Swin's relative position index; transformers recomputes it: they must agree."""
    if src not in m.source:
        return
    index = m.take(src)
    ours = buffers.get(f"{dst}.attention.relative_position_bias.relative_position_index")
    if ours is None:
        raise ConversionError(f"transformers' Swin has no relative_position_index buffer for {dst}")
    if not torch.equal(index.flatten().long(), ours.flatten().long()):
        raise ConversionError(f"{src} differs from transformers' relative position index: the bias table "
                              "would be read in another order")


def _pixel_decoder(m: _Mapper, config) -> None:
    src, dst = "panoptic_head.pixel_decoder", "model.pixel_level_module.decoder"
    for i in range(HF_LEVELS):
        m.copy(f"{src}.input_convs.{i}.conv", f"{dst}.input_projections.{i}.0")
        m.copy(f"{src}.input_convs.{i}.gn", f"{dst}.input_projections.{i}.1")
    m.put(f"{dst}.level_embed", m.take(f"{src}.level_encoding.weight"))
    for i in range(config.encoder_layers):
        s, d = f"{src}.encoder.layers.{i}", f"{dst}.encoder.layers.{i}"
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            m.copy(f"{s}.attentions.0.{name}", f"{d}.self_attn.{name}")
        m.copy(f"{s}.norms.0", f"{d}.self_attn_layer_norm")
        m.copy(f"{s}.ffns.0.layers.0.0", f"{d}.fc1")
        m.copy(f"{s}.ffns.0.layers.1", f"{d}.fc2")
        m.copy(f"{s}.norms.1", f"{d}.final_layer_norm")
    # One FPN level (stride 4) below the three encoder levels: lateral_convs.0 / output_convs.0.
    m.copy(f"{src}.lateral_convs.0.conv", f"{dst}.adapter_1.0")
    m.copy(f"{src}.lateral_convs.0.gn", f"{dst}.adapter_1.1")
    m.copy(f"{src}.output_convs.0.conv", f"{dst}.layer_1.0")
    m.copy(f"{src}.output_convs.0.gn", f"{dst}.layer_1.1")
    m.copy(f"{src}.mask_feature", f"{dst}.mask_projection")


def _transformer_decoder(m: _Mapper, config) -> None:
    src, dst = "panoptic_head", "model.transformer_module"
    m.copy(f"{src}.query_embed", f"{dst}.queries_embedder", ("weight",))
    m.copy(f"{src}.query_feat", f"{dst}.queries_features", ("weight",))
    m.copy(f"{src}.level_embed", f"{dst}.level_embed", ("weight",))
    if config.enforce_input_projection:
        for i in range(HF_LEVELS):
            m.copy(f"{src}.decoder_input_projs.{i}", f"{dst}.input_projections.{i}")
    for i in range(config.decoder_layers - 1):
        s, d = f"{src}.transformer_decoder.layers.{i}", f"{dst}.decoder.layers.{i}"
        m.copy(f"{s}.attentions.0.attn", f"{d}.cross_attn", ("in_proj_weight", "in_proj_bias"))
        m.copy(f"{s}.attentions.0.attn.out_proj", f"{d}.cross_attn.out_proj")
        m.split_qkv(None, f"{d}.self_attn", src_names={"weight": f"{s}.attentions.1.attn.in_proj_weight",
                                                       "bias": f"{s}.attentions.1.attn.in_proj_bias"})
        m.copy(f"{s}.attentions.1.attn.out_proj", f"{d}.self_attn.out_proj")
        m.copy(f"{s}.norms.0", f"{d}.cross_attn_layer_norm")
        m.copy(f"{s}.norms.1", f"{d}.self_attn_layer_norm")
        m.copy(f"{s}.ffns.0.layers.0.0", f"{d}.fc1")
        m.copy(f"{s}.ffns.0.layers.1", f"{d}.fc2")
        m.copy(f"{s}.norms.2", f"{d}.final_layer_norm")
    m.copy(f"{src}.transformer_decoder.post_norm", f"{dst}.decoder.layernorm")
    for k, j in enumerate((0, 2, 4)):  # Linear, ReLU, Linear, ReLU, Linear
        m.copy(f"{src}.mask_embed.{j}", f"{dst}.decoder.mask_predictor.mask_embedder.{k}.0")
    m.copy(f"{src}.cls_embed", "class_predictor")


def _fill_targets_without_source(out: dict[str, torch.Tensor], model, config) -> None:
    target = model.state_dict()
    for name in TARGETS_WITHOUT_SOURCE:
        if name not in target:
            continue
        if name.endswith("layernorm.weight"):
            out[name] = torch.ones_like(target[name])
        elif name.endswith("layernorm.bias"):
            out[name] = torch.zeros_like(target[name])
        else:  # criterion.empty_weight
            weight = torch.ones_like(target[name])
            weight[-1] = config.no_object_weight
            out[name] = weight


def convert_state_dict(state: dict[str, torch.Tensor], class_names: list[str], num_attention_heads: int = 8):
    """(transformers model with the converted weights, its config); raises on any unmatched tensor."""
    from transformers import Mask2FormerForUniversalSegmentation

    state = to_mmdet2_names(state)
    config = hf_config(state, class_names, num_attention_heads)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    buffers = dict(model.named_buffers())
    mapper = _Mapper(state, set(model.state_dict()))
    _backbone(mapper, config, buffers)
    _pixel_decoder(mapper, config)
    _transformer_decoder(mapper, config)
    left = mapper.left_over()
    if left:
        raise ConversionError(f"{len(left)} checkpoint tensors have no place in transformers' Mask2Former: "
                              f"{left[:8]}{' ...' if len(left) > 8 else ''}")
    out = mapper.out
    _fill_targets_without_source(out, model, config)
    target = model.state_dict()
    unknown = sorted(set(out) - set(target))
    missing = sorted(set(target) - set(out))
    if unknown or missing:
        raise ConversionError(f"converted names do not match transformers' model: not in the model {unknown[:8]}, "
                              f"not filled {missing[:8]}")
    wrong = [f"{n}: {tuple(out[n].shape)} vs {tuple(target[n].shape)}" for n in target
             if out[n].shape != target[n].shape]
    if wrong:
        raise ConversionError(f"shape mismatches: {wrong[:8]}")
    model.load_state_dict({n: t.to(target[n].dtype) for n, t in out.items()}, strict=True)
    return model, config


# ----------------------------------------------------------------------------
# Files

@dataclass
class Provenance:
    source_file: str
    source_sha256: str
    layout: str
    official: bool
    """True for the OpenMMLab Mask2Former Swin-S file GenEval downloads (either release)."""

    def describe(self) -> str:
        kind = "GenEval's official detector weights" if self.official else "NOT GenEval's detector weights"
        return f"{self.source_file} (sha256 {self.source_sha256[:8]}, {self.layout} layout; {kind})"


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(checkpoint, out_dir, class_names: list[str] | None = None,
                       num_attention_heads: int = 8) -> Provenance:
    """Convert an mmdet ``.pth`` into a ``save_pretrained`` folder with a ``conversion.json``.

    The folder is written next to ``out_dir`` and renamed into place, so an interrupted
    conversion never leaves a half-written folder that the ``hf`` backend would load.
    """
    state, meta = load_mmdet_checkpoint(checkpoint)
    layout = source_layout(state)
    names = class_names or checkpoint_classes(meta)
    if names is None:
        from geneval.suites import COCO_CLASSES  # mmdet's COCO order; GenEval's object_names.txt

        names = list(COCO_CLASSES)
    model, _ = convert_state_dict(state, names, num_attention_heads)
    sha = sha256_file(checkpoint)
    expected = OFFICIAL_HASH_PREFIXES.get(sha[:8])
    provenance = Provenance(source_file=os.path.basename(checkpoint), source_sha256=sha, layout=layout,
                            official=expected == layout)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another output folder")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(vars(provenance), indent=2) + "\n")
    os.replace(tmp, out_dir)
    return provenance


def read_provenance(folder) -> Provenance | None:
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    return Provenance(**json.loads(path.read_text()))
