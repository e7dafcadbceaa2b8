"""Tiny random-init dense checkpoints, built on the spot: nothing is downloaded.

Tests, the demo and the benchmarks use these as stand-ins for a real base model; they go through
the same `save_pretrained` / `from_pretrained` code as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHITECTURES = ("qwen2", "llama", "mistral")


def tiny_config(arch: str = "qwen2", vocab_size: int = 512, hidden_size: int = 64, intermediate_size: int = 176,
                num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 2048,
                tie_word_embeddings: bool = False, **extra):
    import transformers

    cls = {"qwen2": "Qwen2Config", "llama": "LlamaConfig", "mistral": "MistralConfig"}[arch]
    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=tie_word_embeddings,
                  bos_token_id=1, eos_token_id=0, pad_token_id=2)
    if arch == "mistral":
        kwargs["sliding_window"] = None
    kwargs.update(extra)
    return getattr(transformers, cls)(**kwargs)


def make_tiny_dense(out_dir: str | Path, arch: str = "qwen2", tokenizer=None, seed: int = 0, **config_kwargs):
    """Save a random-init dense causal LM (and `tokenizer`, if given) to `out_dir`; return the model."""
    from transformers import AutoModelForCausalLM

    if tokenizer is not None:
        config_kwargs.setdefault("vocab_size", len(tokenizer))
        for name in ("bos", "eos", "pad"):
            token_id = getattr(tokenizer, f"{name}_token_id")
            if token_id is not None:
                config_kwargs.setdefault(f"{name}_token_id", token_id)
    config = tiny_config(arch, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # The default init (std 0.02) gives near-uniform logits; a larger one makes greedy decoding and
    # routing decisions less tie-prone, which makes equality tests meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2 if "embed" in name else 0.08)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return model.eval()
