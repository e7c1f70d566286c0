"""The embedded shapes-world generator: a per-cell VQ tokenizer and a small text-conditioned
transformer that decodes in Show-o's mask-predict order or LlamaGen's raster order."""
