"""Tests of the mmdet -> transformers Mask2Former converter (geneval/detectors/mmdet_convert.py).

The tiny model of tests/mmdet_tiny.py is written in mmdet 2.x's parameter names with seeded
weights. Its detections by mmdetection 2.27 itself (mmcv-full 1.7.1, GenEval's pipeline) are in
tests/data/mmdet_tiny_reference.json (scripts/mmdet_tiny_reference.py); the converted model,
run by the ``hf`` backend without mmcv, must reproduce them.

Run: ``python -m pytest -q tests/test_mmdet_convert.py``
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.config import GenEvalConfig
from geneval.detectors import describe_detector
from geneval.detectors import mmdet_convert as mc
from geneval.detectors.hf import HFMask2FormerDetector, detector_folder, mmdet2_inputs
from geneval.suites import COCO_CLASSES
from tests.mmdet_tiny import ATTN_HEADS, as_mmdet3, mmdet2_parameter_shapes, tiny_image, tiny_state_dict

REFERENCE = Path(__file__).parent / "data" / "mmdet_tiny_reference.json"


@pytest.fixture(scope="module")
def converted():
    model, config = mc.convert_state_dict(tiny_state_dict(), list(COCO_CLASSES), num_attention_heads=ATTN_HEADS)
    return model, config


# ----------------------------------------------------------------------------
# Key mapping

def test_every_source_tensor_lands_once_and_every_target_is_filled(converted):
    model, config = converted
    source = tiny_state_dict()
    target = model.state_dict()
    # Each source parameter appears in the target, once (split qkv/in_proj appear as three thirds).
    flat_target = [t.flatten() for n, t in target.items() if n not in mc.TARGETS_WITHOUT_SOURCE]
    assert sum(t.numel() for t in flat_target) == sum(
        t.numel() for n, t in source.items() if not n.endswith("relative_position_index"))
    assert set(mc.TARGETS_WITHOUT_SOURCE) <= set(target)
    assert config.decoder_layers == 3 and config.num_queries == 8 and config.backbone_config.window_size == 3
    assert config.backbone_config.depths == [2, 2, 2, 2] and config.backbone_config.num_heads == [1, 1, 2, 2]
    assert config.id2label[0] == COCO_CLASSES[0] and len(config.id2label) == 80


def test_named_tensors_go_where_mmdet_uses_them(converted):
    model, _ = converted
    source, target = tiny_state_dict(), model.state_dict()
    qkv = source["backbone.stages.1.blocks.1.attn.w_msa.qkv.weight"]
    dim = qkv.shape[1]
    block = "model.pixel_level_module.encoder.swin.encoder.layers.1.blocks.1.attention"
    assert torch.equal(target[f"{block}.k_proj.weight"], qkv[dim:2 * dim])
    self_attn = source["panoptic_head.transformer_decoder.layers.1.attentions.1.attn.in_proj_weight"]
    assert torch.equal(target["model.transformer_module.decoder.layers.1.self_attn.v_proj.weight"], self_attn[64:])
    assert torch.equal(target["model.transformer_module.decoder.layers.1.cross_attn.in_proj_weight"],
                       source["panoptic_head.transformer_decoder.layers.1.attentions.0.attn.in_proj_weight"])
    assert torch.equal(target["model.transformer_module.decoder.layers.0.cross_attn_layer_norm.weight"],
                       source["panoptic_head.transformer_decoder.layers.0.norms.0.weight"])
    assert torch.equal(target["model.transformer_module.queries_features.weight"],
                       source["panoptic_head.query_feat.weight"])
    assert torch.equal(target["model.pixel_level_module.decoder.input_projections.0.0.weight"],
                       source["panoptic_head.pixel_decoder.input_convs.0.conv.weight"])  # coarsest level first
    assert torch.equal(target["class_predictor.bias"], source["panoptic_head.cls_embed.bias"])
    assert target["criterion.empty_weight"][-1] == pytest.approx(0.1)


def test_patch_merging_reorder_gives_the_same_linear_map():
    """mmdet's nn.Unfold 2x2 gather + reduction == transformers' 4-way concat + converted reduction."""
    torch.manual_seed(0)
    channels = 5
    x = torch.randn(1, channels, 2, 2)
    weight = torch.randn(7, 4 * channels)
    mmdet_out = weight @ torch.nn.functional.unfold(x, kernel_size=2, stride=2)[0, :, 0]
    hf_in = torch.cat([x[0, :, row, col] for col in range(2) for row in range(2)])  # modeling_swin.SwinPatchMerging
    assert torch.allclose(mc.unfold_to_concat(weight) @ hf_in, mmdet_out, atol=1e-6)
    norm = torch.arange(4 * channels, dtype=torch.float32)
    assert mc.unfold_to_concat(norm)[:channels].tolist() == [4.0 * c for c in range(channels)]  # (dy, dx) = (0, 0)
    assert mc.unfold_to_concat(norm)[channels:2 * channels].tolist() == [4.0 * c + 2 for c in range(channels)]


def test_leftover_missing_and_wrong_tensors_are_errors():
    state = tiny_state_dict()
    extra = dict(state, **{"panoptic_head.unexpected.weight": torch.zeros(2)})
    with pytest.raises(mc.ConversionError, match="panoptic_head.unexpected.weight"):
        mc.convert_state_dict(extra, list(COCO_CLASSES), ATTN_HEADS)
    missing = {k: v for k, v in state.items() if k != "panoptic_head.pixel_decoder.mask_feature.bias"}
    with pytest.raises(mc.ConversionError, match="mask_feature.bias"):
        mc.convert_state_dict(missing, list(COCO_CLASSES), ATTN_HEADS)
    bad_index = dict(state)
    bad_index["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(9, 9, dtype=torch.long)
    with pytest.raises(mc.ConversionError, match="relative position index"):
        mc.convert_state_dict(bad_index, list(COCO_CLASSES), ATTN_HEADS)
    with pytest.raises(mc.ConversionError, match="sampling_offsets"):
        mc.convert_state_dict(state, list(COCO_CLASSES), num_attention_heads=8)
    with pytest.raises(mc.ConversionError, match="79 class names"):
        mc.convert_state_dict(state, list(COCO_CLASSES)[:79], ATTN_HEADS)
    with pytest.raises(mc.ConversionError, match="not an mmdetection Mask2Former"):
        mc.source_layout({"backbone.conv1.weight": torch.zeros(1)})


def test_mmdet3_names_convert_to_the_same_model(converted):
    model, _ = converted
    renamed = as_mmdet3(tiny_state_dict())
    assert mc.source_layout(renamed) == "mmdet3"
    assert "panoptic_head.transformer_decoder.layers.0.cross_attn.attn.in_proj_weight" in renamed
    model3, _ = mc.convert_state_dict(renamed, list(COCO_CLASSES), ATTN_HEADS)
    for (name, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), name


def test_shapes_list_matches_the_state_dict():
    names = [n for n, _ in mmdet2_parameter_shapes()]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------
# Files, provenance and the hf backend's choice of weights

def _save_checkpoint(path: Path, state: dict) -> None:
    torch.save({"state_dict": state, "meta": {"CLASSES": tuple(COCO_CLASSES), "epoch": np.int64(50)}}, path)


def test_convert_checkpoint_writes_a_loadable_folder_with_provenance(tmp_path, monkeypatch):
    pth = tmp_path / "tiny.pth"
    _save_checkpoint(pth, tiny_state_dict())
    out = tmp_path / "converted"
    provenance = mc.convert_checkpoint(pth, out, num_attention_heads=ATTN_HEADS)
    assert provenance.layout == "mmdet2" and not provenance.official
    assert provenance.source_sha256 == hashlib.sha256(pth.read_bytes()).hexdigest()
    assert mc.read_provenance(out) == provenance
    with pytest.raises(FileExistsError):
        mc.convert_checkpoint(pth, out, num_attention_heads=ATTN_HEADS)
    assert not list(tmp_path.glob(".converted.tmp-*"))

    # ``auto`` picks the converted folder from GENEVAL_WEIGHTS; only the official file makes scores official.
    monkeypatch.setenv(mc.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    official = mc.official_folder()
    official.parent.mkdir()
    out.rename(official)
    cfg = GenEvalConfig(detector="hf")
    assert detector_folder(cfg) == str(official)
    assert "GenEval-style" in describe_detector(cfg) and "NOT GenEval's" in describe_detector(cfg)
    monkeypatch.setitem(mc.OFFICIAL_HASH_PREFIXES, provenance.source_sha256[:8], "mmdet2")
    (official / mc.PROVENANCE_FILE).unlink()
    official.rename(out)
    mc.convert_checkpoint(pth, official, num_attention_heads=ATTN_HEADS)
    assert "official GenEval scores" in describe_detector(cfg)
    assert "GenEval-style" in describe_detector(GenEvalConfig(detector="hf", preprocess="mmdet3"))


def test_auto_without_converted_weights_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(mc.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="convert_mmdet_mask2former.py"):
        detector_folder(GenEvalConfig(detector="hf"))


# ----------------------------------------------------------------------------
# The converted model against mmdetection's own forward

def _reference() -> dict:
    if not REFERENCE.is_file():
        pytest.fail(f"{REFERENCE} is missing; produce it with scripts/mmdet_tiny_reference.py in the mmdet env")
    return json.loads(REFERENCE.read_text())


def test_preprocessing_is_byte_identical_to_mmdet2_pipeline():
    reference = _reference()
    image = tiny_image()
    assert hashlib.sha1(image.tobytes()).hexdigest() == reference["image_sha1"]
    pixels, resized_hw = mmdet2_inputs([image])
    assert list(resized_hw) == reference["resized_hw"] and list(pixels.shape[-2:]) == reference["padded_hw"]
    # Undo the normalisation (exact to float rounding) and compare the uint8 BGR image mmdet padded.
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    uint8 = (pixels[0] * std + mean).round().to(torch.uint8).permute(1, 2, 0).numpy()[..., ::-1]
    assert hashlib.sha1(np.ascontiguousarray(uint8).tobytes()).hexdigest() == reference["padded_bgr_uint8_sha1"]


def test_converted_model_reproduces_mmdet_detections(converted):
    reference = _reference()
    model, _ = converted
    detector = HFMask2FormerDetector(model, list(COCO_CLASSES), list(COCO_CLASSES), torch.device("cpu"))
    (ours,) = detector.detect([tiny_image()])
    expected = reference["detections"]
    assert len(ours) == len(expected) == 100
    scores = np.array([d.score for d in ours])
    assert np.allclose(scores, [d["score"] for d in expected], atol=1e-5, rtol=1e-4)
    # Labels and boxes: equal wherever the score order is unambiguous (ties may swap places).
    gaps = np.abs(np.diff(scores))
    clear = [i for i in range(len(ours)) if (i == 0 or gaps[i - 1] > 1e-5) and (i == len(ours) - 1 or gaps[i] > 1e-5)]
    assert len(clear) > 50
    for i in clear:
        assert COCO_CLASSES[expected[i]["label"]] == ours[i].label, i
        assert list(ours[i].box) == expected[i]["box"], i
        assert int(ours[i].mask.sum()) == expected[i]["area"], i


def test_convert_script_writes_the_default_folder(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_script", Path(__file__).parents[1] / "scripts" /
                                                  "convert_mmdet_mask2former.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    pth = tmp_path / "tiny.pth"
    _save_checkpoint(pth, as_mmdet3(tiny_state_dict()))
    monkeypatch.setenv(mc.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    assert script.main([str(pth), "--num-attention-heads", str(ATTN_HEADS)]) == 0
    assert mc.read_provenance(mc.official_folder()).layout == "mmdet3"
    captured = capsys.readouterr()
    assert "mmdet3 layout" in captured.out and "GenEval-style" in captured.err
