"""GPU check: real-size Show-o (1.3B), Janus-Pro-1B and LlamaGen-XL (775M) with random weights, N=20
with guidance.

    bash scripts/gpu_check.sh            # or: python -m bench.gpu_check [--backends showo janus llamagen]
    python -m bench.gpu_check --tiny --backends llamagen    # CPU smoke run, tiny widths (seconds)

Random weights in the real architectures (the transformers built on the GPU in bf16, the image
decoders in float32) are written in the official checkpoint layouts to a temporary folder and
loaded through the project's own loaders (generation/showo.py, generation/janus.py,
generation/llamagen.py), so this checks loading, bf16 generation and speed without the real
checkpoints. For each backend it prints images/s for the 20 candidates of one prompt run as one
batch, milliseconds per decoding step (Show-o: one mask-predict step of all rows; Janus and
LlamaGen: one token of all rows), model FLOP utilisation against the card's dense bf16 peak, and
peak memory while generating (weights, caches, activations). Random weights give meaningless
images; only speed and memory are measured. About 4 minutes on an H100/H200 for all three, about
1 of them LlamaGen (writing and loading the 1.2B T5 encoder and 775M GPT, then 3 x 256 sequential
token steps). ``--tiny`` runs the same code on CPU with tiny widths but the real vocabularies and
grids; tests/test_gpu_check.py runs it for LlamaGen (Show-o and Janus take minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from generation.base import seeded_generator
from generation.config import GenerationConfig

if TYPE_CHECKING:
    from transformers import T5Config

    from generation.llamagen import GPTConfig

PROMPT = "a photo of a red cat and a blue dog"
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
"""Dense (no sparsity) bf16 tensor-core peak, FLOP/s, from the vendors' datasheets (SXM parts)."""


def card_peak() -> tuple[str, float | None]:
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in DENSE_BF16_PEAK.items() if key in name), None)


def word_tokenizer(vocab_size: int, specials: dict[str, int], folder: Path, prepend_bos: bool = False,
                   append_eos: bool = False, **tokens) -> None:
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
    # Janus's tokenizer adds BOS itself, T5's appends EOS (llamagen.py pads after it).
    before = [tokens["bos_token"]] if prepend_bos else []
    after = [tokens["eos_token"]] if append_eos else []
    if before or after:
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join([*before, "$A", *after]), special_tokens=[(w, specials[w]) for w in before + after])
    PreTrainedTokenizerFast(tokenizer_object=tok, **tokens).save_pretrained(folder)


REAL = {"phi": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32),
        "magvit": {}, "llama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                                     num_attention_heads=16, num_key_value_heads=16), "janus": {},
        # gpt.py GPT_XL; FeedForward width find_multiple(int(2 * 4 * 1280 / 3), 256) = 3584.
        "llamagen": dict(dim=1280, n_layer=36, n_head=20, ffn_dim=3584),
        # google/flan-t5-xl's config.json (encoder side).
        "t5": dict(d_model=2048, num_layers=24, d_ff=5120, num_heads=32, d_kv=64),
        "vq": {}}
TINY = {"phi": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2),
        "magvit": {"ch": 32, "decoder_ch_mult": (1, 1, 1, 1, 2), "decoder_num_res_blocks": (1, 1, 1, 1, 1),
                   "encoder_ch_mult": (1, 1, 1, 1, 2), "encoder_num_res_blocks": (1, 1, 1, 1, 1)},
        "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2),
        "janus": dict(vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "projection_dim": 64},
                      vq_config={"base_channels": 32, "latent_channels": 32, "channel_multiplier": [1, 1, 1, 1, 2],
                                 "num_res_blocks": 1, "projection_dim": 64, "image_token_embed_dim": 64}),
        "llamagen": dict(dim=64, n_layer=1, n_head=2, ffn_dim=128),
        "t5": dict(d_model=32, num_layers=1, d_ff=64, num_heads=2, d_kv=16),
        # Five levels keep the 16-pixel codes (16x16 grid at 256 px); 32 channels for GroupNorm(32).
        "vq": dict(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=0, z_channels=32)}
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


LLAMAGEN_VOCAB, LLAMAGEN_TEXT_TOKENS, LLAMAGEN_GRID = 16384, 120, 16
"""VQ-16 codebook, cls_token_num (sample_t2i.py ``--t5-feature-max-len``), codes per side at 256 px."""
T5_VOCAB, T5_TOKENIZER_VOCAB = 32128, 32100
"""flan-t5-xl's embedding rows, and its sentencepiece vocabulary + 100 sentinels (len(tokenizer))."""


def llamagen_gpt_config(sizes: dict) -> GPTConfig:
    """LlamaGen T2I GPT sizes (no grouped-query attention in the released models: kv heads = heads)."""
    from generation.llamagen import GPTConfig

    gpt = sizes["llamagen"]
    return GPTConfig(dim=gpt["dim"], n_layer=gpt["n_layer"], n_head=gpt["n_head"], n_kv_head=gpt["n_head"],
                     vocab_size=LLAMAGEN_VOCAB, caption_dim=sizes["t5"]["d_model"],
                     cls_token_num=LLAMAGEN_TEXT_TOKENS, ffn_dim=gpt["ffn_dim"], grid=LLAMAGEN_GRID)


def t5_config(sizes: dict) -> T5Config:
    """flan-t5-xl's T5 settings (gated GELU, 32 relative-position buckets) at ``sizes["t5"]``."""
    from transformers import T5Config

    return T5Config(vocab_size=T5_VOCAB, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **sizes["t5"])


def write_llamagen(root: Path, sizes: dict, device: str) -> tuple[Path, Path, Path]:
    """Random LlamaGen-XL t2i GPT, VQ-16 decoder and flan-t5-xl encoder + tokenizer.

    GPT and VQ go in LlamaGen's raw ``torch.save`` layout (``{"model": state_dict}``, as
    ``t2i_XL_stage1_256.pt`` / ``vq_ds16_t2i.pt``; the VQ encoder half is left out since the loader
    drops it); the T5 in transformers' layout, as the ``google/flan-t5-xl`` snapshot.
    """
    from transformers import T5EncoderModel

    from generation.llamagen import LlamaGenGPT
    from generation.llamagen_vq import VQConfig, VQDecoder

    folder = root / "llamagen"
    folder.mkdir()
    with torch.device(device):
        model = LlamaGenGPT(llamagen_gpt_config(sizes)).to(torch.bfloat16)
    torch.save({"model": model.state_dict()}, folder / "t2i_XL_stage1_256.pt")
    del model
    with torch.device(device):
        vq = VQDecoder(VQConfig(codebook_size=LLAMAGEN_VOCAB, **sizes["vq"]))
    torch.save({"model": vq.state_dict()}, folder / "vq_ds16_t2i.pt")  # float32, as released
    del vq
    with torch.device(device):
        t5 = T5EncoderModel(t5_config(sizes)).to(torch.bfloat16)
    t5.save_pretrained(folder / "flan-t5-xl")
    del t5
    word_tokenizer(T5_TOKENIZER_VOCAB, {"<pad>": 0, "</s>": 1, "<unk>": 2}, folder / "flan-t5-xl", append_eos=True,
                   eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    return folder / "t2i_XL_stage1_256.pt", folder / "vq_ds16_t2i.pt", folder / "flan-t5-xl"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_generation(generator, num_candidates: int, repeats: int, device: str) -> float:
    """Best wall time (s) to generate ``num_candidates`` images of one prompt as one batch.

    Peak memory counts from here: the loaded weights and what generation allocates, not the
    float32 copies made while building the random weights.
    """
    def once() -> None:
        gens = [seeded_generator(0, 0, 0, c) for c in range(num_candidates)]
        canvas = generator.start([PROMPT] * num_candidates, gens)
        for _ in range(generator.num_steps):
            canvas = generator.step(canvas)
        generator.finish(canvas)
        synchronize(device)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
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


def check_llamagen(root: Path, n: int, repeats: int, sizes: dict, device: str) -> dict:
    from generation.llamagen import LlamaGenGenerator, LlamaGenOptions

    weights, vq, text_encoder = write_llamagen(root, sizes, device)
    # configs/llamagen.yaml: 2 rows per step, cfg 7.5 (= 1 + guidance_scale), top-k 1000, temperature 1.
    cfg = GenerationConfig(backend="llamagen", weights=str(weights), tokenizer=str(vq), order="raster",
                           rows_per_step=2, guidance_scale=6.5, temperature=1.0, top_k=1000, dtype="bfloat16")
    options = LlamaGenOptions(text_encoder=str(text_encoder), image_size=LLAMAGEN_GRID * 16,
                              num_heads=sizes["llamagen"]["n_head"])
    gen = LlamaGenGenerator(cfg, device, options)
    seconds = time_generation(gen, n, repeats, device)
    gpt, text, tokens = gen.model, gen.text_length, gen.grid ** 2
    d, layers, rows = gpt.cfg.dim, gpt.cfg.n_layer, 2 * n
    t5 = gen.text_encoder.config
    # T5 over N captions padded to 120 tokens; the GPT's prefill of 2N rows x 120 caption positions;
    # then one forward per code but the last (generate() feeds none after it), attention over the cache.
    # The VQ decoder's convolutions are not counted (nor are Show-o's and Janus's).
    encoder = 2 * matmul_params(gen.text_encoder) * n * text
    encoder += 4 * t5.num_layers * text * text * t5.num_heads * t5.d_kv * n
    blocks = matmul_params(gpt.layers)
    prefill = 2 * (blocks + matmul_params(gpt.cls_embedding)) * rows * text + 4 * layers * text * text * d * rows
    prefill += 2 * gpt.output.weight.numel() * rows
    per_token = 2 * (blocks + gpt.output.weight.numel()) * rows
    attention = sum(4 * layers * (text + slot + 1) * d * rows for slot in range(tokens - 1))
    return {"backend": f"LlamaGen-XL 775M (256x256, {tokens} tokens, cfg 7.5)", "seconds": seconds,
            "steps": tokens, "flops": encoder + prefill + (tokens - 1) * per_token + attention}


CHECKS = {"showo": check_showo, "janus": check_janus, "llamagen": check_llamagen}
"""Backend -> check: writes random real-size weights under a folder, times N=20, returns the numbers."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=list(CHECKS), choices=list(CHECKS))
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
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            r = CHECKS[backend](Path(tmp), args.num_candidates, args.repeats, sizes, device)
        mfu = "n/a" if peak is None else f"{100 * r['flops'] / r['seconds'] / peak:.1f}%"
        memory = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if device == "cuda" else "n/a"
        print(f"| {r['backend']} | {args.num_candidates / r['seconds']:.2f} | {1000 * r['seconds'] / r['steps']:.2f} "
              f"| {mfu} | {memory} |", flush=True)


if __name__ == "__main__":
    main()
