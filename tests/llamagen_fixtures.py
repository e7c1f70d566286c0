"""A tiny random LlamaGen (gpt.py GPT, VQ-16 decoder, T5 encoder) saved in the official layouts, and helpers to
drive it (shared by the LlamaGen and DPO tests)."""
import argparse
import string

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from generation.base import seeded_generator
from generation.config import GenerationConfig
from generation.llamagen import LlamaGenGenerator, LlamaGenOptions
from generation.llamagen_vq import VQConfig, VQDecoder


DIM, HEADS, KV_HEADS, LAYERS, VOCAB, CAPTION, TEXT, FFN, GRID = 32, 2, 1, 2, 64, 16, 12, 48, 4
HEAD_DIM = DIM // HEADS
PROMPTS = ["a red cat", "two dogs and a cup", "a cup"]  # the middle one is truncated to 11 chars + </s>
N = GRID * GRID


def gpt_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of gpt.py ``Transformer(model_type='t2i')``, named as there."""
    shapes = {"cls_embedding.uncond_embedding": (TEXT, CAPTION), "cls_embedding.cap_proj.fc1.weight": (DIM, CAPTION),
              "cls_embedding.cap_proj.fc2.weight": (DIM, DIM), "tok_embeddings.weight": (VOCAB, DIM),
              "norm.weight": (DIM,), "output.weight": (VOCAB, DIM)}
    for i in range(LAYERS):
        shapes |= {f"layers.{i}.attention.wqkv.weight": ((HEADS + 2 * KV_HEADS) * HEAD_DIM, DIM),
                   f"layers.{i}.attention.wo.weight": (DIM, DIM), f"layers.{i}.feed_forward.w1.weight": (FFN, DIM),
                   f"layers.{i}.feed_forward.w3.weight": (FFN, DIM), f"layers.{i}.feed_forward.w2.weight": (DIM, FFN),
                   f"layers.{i}.attention_norm.weight": (DIM,), f"layers.{i}.ffn_norm.weight": (DIM,)}
    return shapes


def make_gpt_state() -> dict[str, torch.Tensor]:
    """Random weights scaled so that the logits vary (gpt.py's init zeroes ``output``: a constant image)."""
    torch.manual_seed(0)
    state = {}
    for name, shape in gpt_shapes().items():
        if len(shape) == 1:
            state[name] = 1 + 0.1 * torch.randn(shape)
        elif name in ("tok_embeddings.weight", "cls_embedding.uncond_embedding"):
            state[name] = torch.randn(shape)
        else:
            state[name] = torch.randn(shape) * 1.5 / shape[1] ** 0.5
    return state


def make_text_encoder(folder):
    """A one-layer T5 encoder and a character tokenizer that appends ``</s>`` as T5's does."""
    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + list(string.printable[:95]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(1)
    config = T5Config(vocab_size=len(vocab), d_model=CAPTION, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(config).eval().save_pretrained(folder)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llamagen")
    torch.save({"model": make_gpt_state(), "steps": 7, "args": argparse.Namespace(gpt_model="GPT-tiny")},
               folder / "t2i_tiny.pt")
    torch.manual_seed(2)
    vq = VQDecoder(VQConfig(codebook_size=VOCAB, codebook_embed_dim=4, z_channels=32, ch=32, ch_mult=(1, 2),
                            num_res_blocks=1)).state_dict()
    # Encoder-side VQModel entries that decoding must ignore.
    vq |= {"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3), "quant_conv.weight": torch.zeros(4, 32, 1, 1),
           "quantize.codebook_used": torch.zeros(65536)}
    torch.save({"model": vq, "optimizer": {}}, folder / "vq_tiny.pt")
    make_text_encoder(folder / "t5")
    return folder


def make(folder, options=None, **overrides) -> LlamaGenGenerator:
    settings = dict(backend="llamagen", weights=str(folder / "t2i_tiny.pt"), tokenizer=str(folder / "vq_tiny.pt"),
                    order="raster", rows_per_step=2, guidance_scale=2.0, temperature=1.0, top_k=0)
    options = LlamaGenOptions(text_encoder=str(folder / "t5"), image_size=8, num_heads=HEADS, **(options or {}))
    return LlamaGenGenerator(GenerationConfig(**{**settings, **overrides}, llamagen=options), "cpu")


def generators(n, sample=0):
    return [seeded_generator(0, i, sample, 0) for i in range(n)]


def run(gen, prompts, gens):
    canvas = gen.start(prompts, gens)
    while canvas.step_index < gen.num_steps:
        canvas = gen.step(canvas)
    return canvas
