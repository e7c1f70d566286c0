"""A tiny random Janus-Pro saved in the official layout, and helpers to drive it (shared by the Janus, DPO and
refine tests)."""
import string

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import GenerationConfig as HFGenerationConfig
from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig, PreTrainedTokenizerFast
from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

from generation.base import seeded_generator
from generation.config import GenerationConfig
from generation.janus import JanusGenerator


SPECIALS = ["<pad>", "<s>", "</s>", "[UNK]", "<begin_of_image>", "<end_of_image>", "<image_placeholder>"]
PAD, BOS, BOI = 0, 1, 4
SAME_LENGTH = ["a red cat", "a big dog"]  # 9 characters each: no padding, so generate() sees them as we do
PROMPTS = ["a red cat", "two dogs!", "a cup"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, the chat roles as whole tokens, BOS prepended like Janus's tokenizer."""
    words = ["<|User|>", "<|Assistant|>"]
    vocab = {t: i for i, t in enumerate(SPECIALS + words + list(string.printable[:95]) + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens(words)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="[UNK]")


def make_tiny_janus(folder):
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=BOS, eos_token_id=2,
                       pad_token_id=PAD)
    vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                               patch_size=8, projection_dim=64, num_image_tokens=16)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                          channel_multiplier=[1, 2], num_res_blocks=1, projection_dim=64, image_token_embed_dim=64)
    model = JanusForConditionalGeneration(JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                                                      image_token_id=6)).eval()
    with torch.no_grad():  # the default 0.02 init gives near-uniform logits and a constant greedy image
        for name, param in model.named_parameters():
            if param.dim() > 1 and "vqmodel" not in name:
                param.normal_(0, 0.3)
    model.generation_config = HFGenerationConfig(bos_token_id=BOS, pad_token_id=PAD, eos_token_id=2,
                                                 guidance_scale=5, generation_kwargs={"boi_token_id": BOI})
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_janus(tmp_path_factory.mktemp("tiny_janus"))


def make(weights, **overrides) -> JanusGenerator:
    settings = dict(backend="janus", weights=str(weights), order="raster", rows_per_step=2, guidance_scale=1.5)
    return JanusGenerator(GenerationConfig(**{**settings, **overrides}))


def generators(n, sample=0):
    return [seeded_generator(0, i, sample, 0) for i in range(n)]
