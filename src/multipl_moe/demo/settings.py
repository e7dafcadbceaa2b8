"""The demo's settings: languages, variants and sizes, and how a training run is configured."""

from __future__ import annotations

from dataclasses import dataclass, field

VARIANTS = ["dense", "lora", "token-only", "hybrid-batch", "hybrid-causal"]
HIGH = ["py", "java", "cpp"]
LOW = ["rs", "go", "rb"]


@dataclass
class DemoSize:
    bytes_per_lang: int
    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    seq_len: int
    batch: int
    pretrain_steps: int
    steps: int
    segment_length: int
    eval_problems: int
    max_new_tokens: int
    seeds: list[int] = field(default_factory=lambda: [0, 1])


FULL = DemoSize(bytes_per_lang=1_500_000, vocab=2048, hidden=128, inter=352, layers=4, heads=4, seq_len=256, batch=8,
                pretrain_steps=300, steps=150, segment_length=32, eval_problems=4, max_new_tokens=96)
QUICK = DemoSize(bytes_per_lang=200_000, vocab=512, hidden=64, inter=160, layers=2, heads=4, seq_len=128, batch=8,
                 pretrain_steps=60, steps=30, segment_length=16, eval_problems=2, max_new_tokens=32)
