"""Plot the shapes generator's training curves (both objectives) from its train_log.json.

    python scripts/plot_training.py weights/shapes/generator/train_log.json docs/shapes_generator_training.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(log_path: str, out_path: str) -> None:
    log = json.loads(Path(log_path).read_text())["log"]
    steps = [r["step"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, [r["mask_loss"] for r in log], label="mask-predict (masked CE)")
    ax.plot(steps, [r["raster_loss"] for r in log], label="raster (next-code CE)")
    ax.set_xlabel("step (batch 128: 64 per objective)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"shapes generator, {log[-1]['seconds'] / 60:.0f} min on CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
