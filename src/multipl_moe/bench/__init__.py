"""Benchmarks of issue 6, shared by `multipl-moe bench` and the scripts in `benchmarks/`.

- `block`: one FFN replacement, forward + backward: dense FFN, transformers' Qwen2-MoE block per
  experts backend, our token level, segment level and hybrid block; time, peak memory, ratio to
  the FLOP-ideal.
- `model`: a small Qwen2-shaped model, dense vs token-only MoE vs hybrid: training tokens/s and
  greedy decoding tokens/s with the KV cache.
"""
