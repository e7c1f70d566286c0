"""A tiny random Show-o (phi + MAGVIT-v2) saved in upstream's layouts, and helpers to drive it (shared by the
Show-o, DPO and refine tests)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from generation.config import GenerationConfig
from generation.magvitv2 import MagvitConfig, MagvitV2
from generation.showo import ShowoGenerator


WORDS = ["<|endoftext|>", "a", "photo", "of", "red", "blue", "cat", "dog", "two", "and", "the", "green"]
LLM_VOCAB = len(WORDS)  # 12; then [PAD]=12, soi=13, eoi=14, sov..lvg=15..21, code c = 22 + c, <mask> = 38
CODEBOOK_BITS = 4
CODEBOOK = 2 ** CODEBOOK_BITS
NUM_TOKENS = 16  # 4x4 grid
VOCAB = LLM_VOCAB + 10 + CODEBOOK + 1
PAD, SOI, EOI, T2I, EOS = 12, 13, 14, 17, 0
OFFSET, MASK_ID = 22, 38
TEXT_LEN = 129
PHI_CONFIG = {  # microsoft/phi-1_5 config.json, shrunk (old-style rope keys, as on the hub)
    "architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": None, "embd_pdrop": 0.0,
    "eos_token_id": None, "hidden_act": "gelu_new", "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 64, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "phi",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": None, "partial_rotary_factor": 0.5,
    "qk_layernorm": False, "resid_pdrop": 0.0, "rope_scaling": None, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True, "vocab_size": 51200}
VQ_CONFIG = {"ch": 32, "encoder_ch_mult": [1, 2], "encoder_num_res_blocks": [1, 1],
             "decoder_ch_mult": [1, 2], "decoder_num_res_blocks": [1, 1], "codebook_bits": CODEBOOK_BITS}


def write_llm_folder(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>").save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(PHI_CONFIG))


def reference_phi():
    """The in-memory model the checkpoint is written from (eager attention, as upstream phi.py)."""
    from transformers import PhiConfig, PhiForCausalLM

    config = PhiConfig(**{**PHI_CONFIG, "qk_layernorm": True, "vocab_size": VOCAB, "use_cache": False})
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = PhiForCausalLM(config)
    with torch.no_grad():  # larger weights than the 0.02 init, so the distributions are not flat
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def showo_config(**extra):
    return {"_class_name": "Showo", "_diffusers_version": "0.30.1", "codebook_size": CODEBOOK,
            "llm_model_path": "microsoft/phi-1_5", "llm_vocab_size": LLM_VOCAB, "load_from_showo": True,
            "mask_token_id": MASK_ID, "num_vq_tokens": NUM_TOKENS, "vocab_size": VOCAB, "w_clip_vit": False, **extra}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("showo_ckpt")
    phi = reference_phi()
    state = {f"showo.{k}": v.contiguous() for k, v in phi.state_dict().items()}
    for name in ("showo", "dpo"):
        folder = root / name
        write_llm_folder(folder / "llm")
        (folder / "config.json").write_text(json.dumps(showo_config()))
    save_file(state, str(root / "showo" / "pytorch_model.safetensors"))
    torch.save(state, root / "dpo" / "pytorch_model.bin")  # upstream save_pretrained(safe_serialization=False)
    torch.manual_seed(1)
    vq = MagvitV2(MagvitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in VQ_CONFIG.items()})).eval()
    (root / "vq").mkdir()
    (root / "vq" / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **VQ_CONFIG}))
    save_file(vq.state_dict(), str(root / "vq" / "pytorch_model.safetensors"))
    return {"root": root, "phi": phi, "vq": vq}


def make_generator(checkpoint, weights="showo", **cfg) -> ShowoGenerator:
    cfg = GenerationConfig(**{"backend": "showo", "weights": str(checkpoint["root"] / weights),
                              "tokenizer": str(checkpoint["root"] / "vq"), "num_steps": 4, **cfg})
    return ShowoGenerator(cfg, "cpu")


def seeds(*values: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(v) for v in values]


def run(gen: ShowoGenerator, prompts, generators):
    canvas = gen.start(prompts, generators)
    for _ in range(gen.num_steps):
        canvas = gen.step(canvas)
    return canvas
