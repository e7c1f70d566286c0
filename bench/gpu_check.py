"""GPU check: real-size Show-o (1.3B) and Janus-Pro-1B with random weights, N=20 with guidance.

    bash scripts/gpu_check.sh            # or: python -m bench.gpu_check [--backends showo janus]

Random weights in the real architectures are written in the official checkpoint layouts to a
temporary folder and loaded through the project's own loaders (generation/showo.py,
generation/janus.py), so this checks loading, bf16 generation and speed without the real
checkpoints. For each backend it prints images/s for the 20 candidates of one prompt run as one
batch, milliseconds per decoding step (Show-o: one mask-predict step of all rows; Janus: one
token of all rows), model FLOP utilisation against the card's dense bf16 peak, and peak memory.
Random weights give meaningless images; only speed and memory are measured.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from generation.base import seeded_generator
from generation.config import GenerationConfig

PROMPT = "a photo of a red cat and a blue dog"
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
"""Dense (no sparsity) bf16 tensor-core peak, FLOP/s, from the vendors' datasheets (SXM parts)."""


def card_peak() -> tuple[str, float | None]:
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in DENSE_BF16_PEAK.items() if key in name), None)


def word_tokenizer(vocab_size: int, specials: dict[str, int], folder: Path, prepend_bos: bool = False,
                   **tokens) -> None:
    """A word-level tokenizer with ``vocab_size`` entries (placeholders around the named specials)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    for word, index in specials.items():
        vocab.pop(f"w{index}")
        vocab[word] = index
    tok = Tokenizer(models.WordLevel(vocab, unk_token=tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))  # split out even when glued to other text
    if prepend_bos:  # Janus's tokenizer adds BOS itself
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens['bos_token']} $A", special_tokens=[(tokens["bos_token"], specials[tokens["bos_token"]])])
    PreTrainedTokenizerFast(tokenizer_object=tok, **tokens).save_pretrained(folder)


REAL = {"phi": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32),
        "magvit": {}, "llama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                                     num_attention_heads=16, num_key_value_heads=16), "janus": {}}
TINY = {"phi": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2),
        "magvit": {"ch": 32, "decoder_ch_mult": (1, 1, 1, 1, 2), "decoder_num_res_blocks": (1, 1, 1, 1, 1),
                   "encoder_ch_mult": (1, 1, 1, 1, 2), "encoder_num_res_blocks": (1, 1, 1, 1, 1)},
        "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2),
        "janus": dict(vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "projection_dim": 64},
                      vq_config={"base_channels": 32, "latent_channels": 32, "channel_multiplier": [1, 1, 1, 1, 2],
                                 "num_res_blocks": 1, "projection_dim": 64, "image_token_embed_dim": 64})}
"""Real architecture sizes, and a tiny variant with the same vocabularies and grids for a CPU smoke run."""


def write_showo(root: Path, sizes: dict, device: str) -> tuple[Path, Path]:
    """Random Show-o (phi-1.5 dims, vocab 58498) + MAGVIT-v2 in their hub layouts."""
    from safetensors.torch import save_file
    from transformers import PhiConfig, PhiForCausalLM

    from generation.magvitv2 import MagvitConfig, MagvitV2

    phi = dict(partial_rotary_factor=0.5, hidden_act="gelu_new", layer_norm_eps=1e-5, rope_theta=10000.0,
               max_position_embeddings=2048, vocab_size=51200, tie_word_embeddings=False, **sizes["phi"])
    (root / "showo" / "llm").mkdir(parents=True)
    PhiConfig(**phi).save_pretrained(root / "showo" / "llm")
    word_tokenizer(50295, {"<|endoftext|>": 50256}, root / "showo" / "llm", bos_token="<|endoftext|>",
                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    (root / "showo" / "config.json").write_text(json.dumps({
        "_class_name": "Showo", "codebook_size": 8192, "llm_model_path": "microsoft/phi-1_5", "llm_vocab_size": 50295,
        "load_from_showo": True, "mask_token_id": 58497, "num_vq_tokens": 256, "vocab_size": 58498, "w_clip_vit": False}))
    with torch.device(device):
        model = PhiForCausalLM(PhiConfig(**{**phi, "qk_layernorm": True, "vocab_size": 58498})).to(torch.bfloat16)
    save_file({f"showo.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(root / "showo" / "pytorch_model.safetensors"))
    del model
    (root / "magvitv2").mkdir()
    (root / "magvitv2" / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2", **sizes["magvit"]}))
    save_file(MagvitV2(MagvitConfig(**sizes["magvit"])).state_dict(), str(root / "magvitv2" / "pytorch_model.safetensors"))
    return root / "showo", root / "magvitv2"


def write_janus(root: Path, sizes: dict, device: str) -> Path:
    """Random Janus-Pro-1B (LLaMA 2048x24, SigLIP-L, 16384-code VQ) in transformers' layout."""
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig

    bos, pad, boi, image = 100000, 100015, 100016, 100581
    text = LlamaConfig(vocab_size=102400, max_position_embeddings=16384, bos_token_id=bos, eos_token_id=100001,
                       pad_token_id=pad, **sizes["llama"])
    with torch.device(device):
        config = JanusConfig(text_config=text, image_token_id=image, **sizes["janus"])
        model = JanusForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = HFGenerationConfig(bos_token_id=bos, pad_token_id=pad, eos_token_id=100001,
                                                 guidance_scale=5, generation_kwargs={"boi_token_id": boi})
    folder = root / "janus"
    model.save_pretrained(folder)
    del model
    word_tokenizer(102400, {"<s>": bos, "<pad>": pad, "<begin_of_image>": boi, "<unk>": 3}, folder,
                   prepend_bos=True, bos_token="<s>", pad_token="<pad>", unk_token="<unk>")
    return folder


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_generation(generator, num_candidates: int, repeats: int, device: str) -> float:
    """Best wall time (s) to generate ``num_candidates`` images of one prompt as one batch."""
    def once() -> None:
        gens = [seeded_generator(0, 0, 0, c) for c in range(num_candidates)]
        canvas = generator.start([PROMPT] * num_candidates, gens)
        for _ in range(generator.num_steps):
            canvas = generator.step(canvas)
        generator.finish(canvas)
        synchronize(device)

    once()  # warm-up (kernels, allocator)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_params(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def check_showo(root: Path, n: int, repeats: int, sizes: dict, device: str) -> dict:
    from generation.showo import ShowoGenerator

    weights, vq = write_showo(root, sizes, device)
    cfg = GenerationConfig(backend="showo", weights=str(weights), tokenizer=str(vq), num_steps=18,
                           guidance_scale=1.75, dtype="bfloat16")
    gen = ShowoGenerator(cfg, device)
    seconds = time_generation(gen, n, repeats, device)
    layers = gen.model.model.layers
    # Per step: 2N rows (guidance) x 387 tokens through every linear layer, plus bidirectional attention.
    tokens, length, d = 2 * n * 387, 387, gen.model.config.hidden_size
    flops_step = 2 * matmul_params(layers) * tokens + 4 * len(layers) * length * length * d * 2 * n
    flops_step += 2 * d * 8192 * 2 * n * 256  # the codebook rows of lm_head at the image positions
    return {"backend": "Show-o 1.3B (256x256, 18 steps, guidance 1.75)", "seconds": seconds,
            "steps": 18, "flops": 18 * flops_step}


def check_janus(root: Path, n: int, repeats: int, sizes: dict, device: str) -> dict:
    from generation.janus import JanusGenerator

    weights = write_janus(root, sizes, device)
    cfg = GenerationConfig(backend="janus", weights=str(weights), order="raster", guidance_scale=4.0,
                           rows_per_step=4, dtype="bfloat16")
    gen = JanusGenerator(cfg, device)
    seconds = time_generation(gen, n, repeats, device)
    lm = gen.model.model.language_model
    d, layers = lm.config.hidden_size, lm.config.num_hidden_layers
    prefix = 20
    # Per token: 2N rows through the LM's linears and the generation head; attention over the cache.
    per_token = 2 * (matmul_params(lm) + matmul_params(gen.model.model.generation_head)) * 2 * n
    attention = sum(4 * layers * (prefix + t) * d * 2 * n for t in range(576))
    return {"backend": "Janus-Pro-1B (384x384, 576 tokens, guidance 5)", "seconds": seconds,
            "steps": 576, "flops": 576 * per_token + attention}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["showo", "janus"], choices=["showo", "janus"])
    parser.add_argument("--num-candidates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny widths, same vocabularies and grids")
    args = parser.parse_args(argv)
    device, sizes = ("cpu", TINY) if args.tiny else ("cuda", REAL)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU (or pass --tiny for a CPU smoke run)")
    name, peak = card_peak() if device == "cuda" else ("CPU (tiny smoke run)", None)
    print(f"card: {name}; torch {torch.__version__}; dense bf16 peak "
          f"{'unknown' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}")
    print("| backend | images/s (N=%d, one batch) | ms per decoding step | MFU | peak memory |" % args.num_candidates)
    print("|---|---|---|---|---|")
    checks = {"showo": check_showo, "janus": check_janus}
    for backend in args.backends:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            r = checks[backend](Path(tmp), args.num_candidates, args.repeats, sizes, device)
        mfu = "n/a" if peak is None else f"{100 * r['flops'] / r['seconds'] / peak:.1f}%"
        memory = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if device == "cuda" else "n/a"
        print(f"| {r['backend']} | {args.num_candidates / r['seconds']:.2f} | {1000 * r['seconds'] / r['steps']:.2f} "
              f"| {mfu} | {memory} |", flush=True)


if __name__ == "__main__":
    main()
