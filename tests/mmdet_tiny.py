"""A tiny Mask2Former in mmdetection 2.x's layout, with seeded random weights, for the converter tests.

``TINY_MMDET2_MODEL`` is an mmdet 2.x model config (the structure of mmdet 2.27
configs/mask2former/mask2former_swin-t-p4-w7-224_lsj_8x2_50e_coco.py, every size shrunk; the
test pipeline is GenEval's). ``tiny_state_dict`` lists the parameters that config builds, by
mmdet's module names (backbones/swin.py, plugins/msdeformattn_pixel_decoder.py,
dense_heads/mask2former_head.py), with values drawn from a seed, so CI rebuilds the exact
weights that ``scripts/mmdet_tiny_reference.py`` loaded (strictly) into mmdet's own model to
record the reference detections in tests/data/mmdet_tiny_reference.json.

The window size (3) divides none of the feature maps, so Swin's window padding and shifted
masks are exercised; the image is not square, so the resize, 32-padding and mask cropping are.
"""
from __future__ import annotations

import numpy as np
import torch

EMBED, DEPTHS, HEADS, WINDOW = 8, (2, 2, 2, 2), (1, 1, 2, 2), 3
FEAT, QUERIES, ATTN_HEADS, ENC_LAYERS, DEC_LAYERS, FFN = 32, 8, 2, 1, 2, 64
NUM_CLASSES = 80
IMAGE_HW = (50, 90)
"""Resized by the (1333, 800) rule to 741 x 1333, padded to 768 x 1344."""

TINY_MMDET2_MODEL = dict(
    type="Mask2Former",
    backbone=dict(
        type="SwinTransformer", embed_dims=EMBED, depths=list(DEPTHS), num_heads=list(HEADS), window_size=WINDOW,
        mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.3,
        patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=False, convert_weights=True, frozen_stages=-1,
        init_cfg=None),
    panoptic_head=dict(
        type="Mask2FormerHead", in_channels=[EMBED * 2**i for i in range(4)], strides=[4, 8, 16, 32],
        feat_channels=FEAT, out_channels=FEAT, num_things_classes=NUM_CLASSES, num_stuff_classes=0,
        num_queries=QUERIES, num_transformer_feat_level=3,
        pixel_decoder=dict(
            type="MSDeformAttnPixelDecoder", num_outs=3, norm_cfg=dict(type="GN", num_groups=32),
            act_cfg=dict(type="ReLU"),
            encoder=dict(
                type="DetrTransformerEncoder", num_layers=ENC_LAYERS,
                transformerlayers=dict(
                    type="BaseTransformerLayer",
                    attn_cfgs=dict(type="MultiScaleDeformableAttention", embed_dims=FEAT, num_heads=ATTN_HEADS,
                                   num_levels=3, num_points=4, im2col_step=64, dropout=0.0, batch_first=False,
                                   norm_cfg=None, init_cfg=None),
                    ffn_cfgs=dict(type="FFN", embed_dims=FEAT, feedforward_channels=FFN, num_fcs=2, ffn_drop=0.0,
                                  act_cfg=dict(type="ReLU", inplace=True)),
                    operation_order=("self_attn", "norm", "ffn", "norm")),
                init_cfg=None),
            positional_encoding=dict(type="SinePositionalEncoding", num_feats=FEAT // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(type="SinePositionalEncoding", num_feats=FEAT // 2, normalize=True),
        transformer_decoder=dict(
            type="DetrTransformerDecoder", return_intermediate=True, num_layers=DEC_LAYERS,
            transformerlayers=dict(
                type="DetrTransformerDecoderLayer",
                attn_cfgs=dict(type="MultiheadAttention", embed_dims=FEAT, num_heads=ATTN_HEADS, attn_drop=0.0,
                               proj_drop=0.0, dropout_layer=None, batch_first=False),
                ffn_cfgs=dict(embed_dims=FEAT, feedforward_channels=FFN, num_fcs=2,
                              act_cfg=dict(type="ReLU", inplace=True), ffn_drop=0.0, dropout_layer=None,
                              add_identity=True),
                feedforward_channels=FFN,
                operation_order=("cross_attn", "norm", "self_attn", "norm", "ffn", "norm")),
            init_cfg=None),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0, reduction="mean",
                      class_weight=[1.0] * NUM_CLASSES + [0.1]),
        loss_mask=dict(type="CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(type="DiceLoss", use_sigmoid=True, activate=True, reduction="mean", naive_dice=True,
                       eps=1.0, loss_weight=5.0)),
    panoptic_fusion_head=dict(type="MaskFormerFusionHead", num_things_classes=NUM_CLASSES, num_stuff_classes=0,
                              loss_panoptic=None, init_cfg=None),
    train_cfg=None,
    test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, max_per_image=100, iou_thr=0.8,
                  filter_low_score=True),
    init_cfg=None)

IMG_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
TEST_PIPELINE = [  # mmdet 2.x configs/mask2former/mask2former_r50_lsj_8x2_50e_coco.py, image from an array
    dict(type="LoadImageFromWebcam"),
    dict(type="MultiScaleFlipAug", img_scale=(1333, 800), flip=False, transforms=[
        dict(type="Resize", keep_ratio=True),
        dict(type="RandomFlip"),
        dict(type="Pad", size_divisor=32, pad_val=dict(img=(128, 128, 128), masks=0, seg=255)),
        dict(type="Normalize", **IMG_NORM),
        dict(type="ImageToTensor", keys=["img"]),
        dict(type="Collect", keys=["img"]),
    ]),
]


def _linear(prefix: str, out_dim: int, in_dim: int, bias: bool = True) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (out_dim, in_dim))] + ([(f"{prefix}.bias", (out_dim,))] if bias else [])


def _norm(prefix: str, dim: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (dim,)), (f"{prefix}.bias", (dim,))]


def _conv(prefix: str, out_dim: int, in_dim: int, kernel: int, bias: bool) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (out_dim, in_dim, kernel, kernel))] + ([(f"{prefix}.bias", (out_dim,))] if bias else [])


def mmdet2_parameter_shapes() -> list[tuple[str, tuple]]:
    """(name, shape) of every trained tensor of ``TINY_MMDET2_MODEL``, in mmdet 2.x's names."""
    shapes = _conv("backbone.patch_embed.projection", EMBED, 3, 4, True) + _norm("backbone.patch_embed.norm", EMBED)
    for i, (depth, heads) in enumerate(zip(DEPTHS, HEADS)):
        dim = EMBED * 2**i
        for j in range(depth):
            b = f"backbone.stages.{i}.blocks.{j}"
            shapes += _norm(f"{b}.norm1", dim)
            shapes += [(f"{b}.attn.w_msa.relative_position_bias_table", ((2 * WINDOW - 1) ** 2, heads))]
            shapes += _linear(f"{b}.attn.w_msa.qkv", 3 * dim, dim) + _linear(f"{b}.attn.w_msa.proj", dim, dim)
            shapes += _norm(f"{b}.norm2", dim)
            shapes += _linear(f"{b}.ffn.layers.0.0", 4 * dim, dim) + _linear(f"{b}.ffn.layers.1", dim, 4 * dim)
        if i < len(DEPTHS) - 1:
            shapes += _norm(f"backbone.stages.{i}.downsample.norm", 4 * dim)
            shapes += _linear(f"backbone.stages.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False)
    for i in range(4):
        shapes += _norm(f"backbone.norm{i}", EMBED * 2**i)
    p = "panoptic_head.pixel_decoder"
    for i, level in enumerate((3, 2, 1)):  # input_convs run coarsest level first
        shapes += _conv(f"{p}.input_convs.{i}.conv", FEAT, EMBED * 2**level, 1, True)
        shapes += _norm(f"{p}.input_convs.{i}.gn", FEAT)
    for i in range(ENC_LAYERS):
        a = f"{p}.encoder.layers.{i}.attentions.0"
        shapes += _linear(f"{a}.sampling_offsets", ATTN_HEADS * 3 * 4 * 2, FEAT)
        shapes += _linear(f"{a}.attention_weights", ATTN_HEADS * 3 * 4, FEAT)
        shapes += _linear(f"{a}.value_proj", FEAT, FEAT) + _linear(f"{a}.output_proj", FEAT, FEAT)
        f = f"{p}.encoder.layers.{i}.ffns.0.layers"
        shapes += _linear(f"{f}.0.0", FFN, FEAT) + _linear(f"{f}.1", FEAT, FFN)
        shapes += _norm(f"{p}.encoder.layers.{i}.norms.0", FEAT) + _norm(f"{p}.encoder.layers.{i}.norms.1", FEAT)
    shapes += [(f"{p}.level_encoding.weight", (3, FEAT))]
    shapes += _conv(f"{p}.lateral_convs.0.conv", FEAT, EMBED, 1, False) + _norm(f"{p}.lateral_convs.0.gn", FEAT)
    shapes += _conv(f"{p}.output_convs.0.conv", FEAT, FEAT, 3, False) + _norm(f"{p}.output_convs.0.gn", FEAT)
    shapes += _conv(f"{p}.mask_feature", FEAT, FEAT, 1, True)
    h = "panoptic_head"
    for i in range(DEC_LAYERS):
        d = f"{h}.transformer_decoder.layers.{i}"
        for k in (0, 1):
            shapes += [(f"{d}.attentions.{k}.attn.in_proj_weight", (3 * FEAT, FEAT)),
                       (f"{d}.attentions.{k}.attn.in_proj_bias", (3 * FEAT,))]
            shapes += _linear(f"{d}.attentions.{k}.attn.out_proj", FEAT, FEAT)
        shapes += _linear(f"{d}.ffns.0.layers.0.0", FFN, FEAT) + _linear(f"{d}.ffns.0.layers.1", FEAT, FFN)
        for k in range(3):
            shapes += _norm(f"{d}.norms.{k}", FEAT)
    shapes += _norm(f"{h}.transformer_decoder.post_norm", FEAT)
    shapes += [(f"{h}.query_embed.weight", (QUERIES, FEAT)), (f"{h}.query_feat.weight", (QUERIES, FEAT)),
               (f"{h}.level_embed.weight", (3, FEAT))]
    shapes += _linear(f"{h}.cls_embed", NUM_CLASSES + 1, FEAT)
    for k in (0, 2, 4):
        shapes += _linear(f"{h}.mask_embed.{k}", FEAT, FEAT)
    return shapes


def mmdet_relative_position_index(window: int = WINDOW) -> torch.Tensor:
    """The buffer mmdet 2.x's ``WindowMSA`` saves (backbones/swin.py: ``double_step_seq`` ... ``flip(1)``)."""
    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)

    coords = double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def tiny_state_dict(seed: int = 4) -> dict[str, torch.Tensor]:
    """Seeded weights for ``TINY_MMDET2_MODEL`` (plus Swin's saved index buffers), mmdet 2.x names.

    Norm weights are near 1 and the rest is scaled so activations neither vanish nor explode,
    which keeps the random detector's scores spread out (ties would make the comparison flaky). Seed 4
    gives 8 distinct mask boxes (one mask empty), so boxes are compared, not just full-image ones.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in mmdet2_parameter_shapes():
        values = torch.randn(shape, generator=generator)
        is_norm = any(k in name for k in (".norm", "norm1", "norm2", ".gn.", "post_norm", ".norms."))
        if is_norm and name.endswith(".weight"):
            values = 1 + 0.1 * values
        elif name.endswith("bias"):
            values = 0.1 * values
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            values = values / fan_in**0.5
        state[name] = values
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):
            state[f"backbone.stages.{i}.blocks.{j}.attn.w_msa.relative_position_index"] = mmdet_relative_position_index()
    return state


MMDET3_RENAMES = [  # mmdet 3.x names of the same modules (layers/transformer/mask2former_layers.py etc.)
    (".encoder.layers.{i}.attentions.0.", ".encoder.layers.{i}.self_attn."),
    (".encoder.layers.{i}.ffns.0.", ".encoder.layers.{i}.ffn."),
    (".transformer_decoder.layers.{i}.attentions.0.", ".transformer_decoder.layers.{i}.cross_attn."),
    (".transformer_decoder.layers.{i}.attentions.1.", ".transformer_decoder.layers.{i}.self_attn."),
    (".transformer_decoder.layers.{i}.ffns.0.", ".transformer_decoder.layers.{i}.ffn."),
]


def as_mmdet3(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under mmdet 3.x's names (the re-released checkpoint's layout)."""
    out = {}
    for name, tensor in state.items():
        for old, new in MMDET3_RENAMES:
            for i in range(max(ENC_LAYERS, DEC_LAYERS)):
                name = name.replace(old.format(i=i), new.format(i=i))
        out[name] = tensor
    return out


def tiny_image(seed: int = 0) -> np.ndarray:
    """A non-square uint8 RGB image: smooth blobs plus noise, so masks have structure."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3))
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
        image += rng.uniform(0, 200, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
