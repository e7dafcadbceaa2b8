"""Configuration of the hybrid MoE block (METHOD.md section 2), as nested dataclasses.

These dataclasses are the single source of truth: the named presets (`presets.py`), the training
config's `model.moe`, `upcycle --set`, the model's Hugging Face config (`to_dict` / `from_dict`) and
the README's configuration table are all derived from them. The loader (`multipl_moe.config`) checks
keys and types from the annotations; every value is validated at construction so that a bad one fails
early with the field's name. This file is copied into every checkpoint (remote code), so it imports
only the standard library and keeps its own `_check`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(cond: bool, name: str, value: Any, why: str) -> None:
    if not cond:
        raise ConfigError(f"{name} = {value!r}: {why}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, name, value, f"must be one of {', '.join(choices)}")


@dataclass
class TokenMoEConfig:
    """Token level: token-choice routing over experts, the last of which is a shared expert."""

    num_experts: int = 6
    """N_tok, shared expert included (the paper: 6, i.e. 5 routed + 1 shared)."""
    top_k: int = 2
    """K experts per token, shared expert included (the paper: 2 = one routed + the shared one)."""
    gating: Literal["renorm", "qwen2_moe"] = "renorm"
    """`renorm`: softmax over all N_tok experts in fp32, then the K selected weights renormalised
    to sum to 1 (the paper). `qwen2_moe`: softmax over the routed experts only, top-(K-1), and a
    sigmoid-gated shared expert, exactly as transformers' Qwen2-MoE (for an exportable baseline)."""
    norm_topk_prob: bool = False
    """`qwen2_moe` gating only: renormalise the routed top-(K-1) weights (Qwen2-MoE's flag)."""
    freeze_shared_expert: bool = True
    """Freeze the shared expert's weights at construction (the paper's recipe)."""

    def __post_init__(self) -> None:
        _check(isinstance(self.num_experts, int) and self.num_experts >= 2, "token.num_experts",
               self.num_experts, "must be an integer >= 2 (at least one routed and the shared expert)")
        _check(isinstance(self.top_k, int) and 2 <= self.top_k <= self.num_experts, "token.top_k",
               self.top_k, f"must be an integer in [2, token.num_experts={self.num_experts}] "
               "(the shared expert plus at least one routed expert)")
        _check_choice("token.gating", self.gating, ("renorm", "qwen2_moe"))

    @property
    def num_routed(self) -> int:
        return self.num_experts - 1


@dataclass
class SegmentMoEConfig:
    """Segment level: expert-choice routing over windows of `segment_length` tokens."""

    num_experts: int = 6
    """N_seg; 0 disables the segment level (the token-level-only baseline)."""
    segment_length: int = 64
    """a: tokens per window (stride a, no overlap; the last window of a sequence may be shorter)."""
    capacity_factor: float = 1.0
    """c: each expert takes r = floor(V * c / N_seg) of the V segments in the batch (`batch` mode),
    at most all V. Computed in integers, with c read as the decimal it is written as (1.4 = 7/5), so
    that 45 segments at c = 1.4 over 3 experts give 21 whatever the padding and the device."""
    max_experts_per_segment: int = 4
    """Cap on the experts that may choose one segment (`batch` mode; experts visited in index order)."""
    pooling: Literal["mean", "max"] = "mean"
    """Segment representation: `mean` (the paper's text) or `max` (the released code)."""
    gate_scale: Literal["one", "inv_length"] = "one"
    """`one`: gate = router probability; `inv_length`: divided by a, as the released code does."""
    routing: Literal["batch", "causal"] = "batch"
    """`batch`: the paper's expert choice over the whole batch (not causal: see METHOD.md section 4).
    `causal`: segment p is routed from the pooled representation of segment p-1 of the same
    sequence to its top `causal_top_k` experts; identical in training and in one-token-at-a-time
    decoding. Segment 0, which has no predecessor, is routed from its own first token (causal:
    every position of segment 0 has seen it), never from a constant, whose equal logits would
    leave the choice to the device's tie-break."""
    causal_top_k: int = 1
    """Experts per segment in `causal` mode (1 matches the compute of `batch` mode with c = 1)."""

    def __post_init__(self) -> None:
        _check(isinstance(self.num_experts, int) and self.num_experts >= 0, "segment.num_experts",
               self.num_experts, "must be an integer >= 0 (0 disables the segment level)")
        _check(isinstance(self.segment_length, int) and self.segment_length >= 1,
               "segment.segment_length", self.segment_length, "must be an integer >= 1")
        _check(isinstance(self.capacity_factor, (int, float)) and self.capacity_factor > 0,
               "segment.capacity_factor", self.capacity_factor, "must be > 0")
        _check(isinstance(self.max_experts_per_segment, int) and self.max_experts_per_segment >= 1,
               "segment.max_experts_per_segment", self.max_experts_per_segment, "must be an integer >= 1")
        _check_choice("segment.pooling", self.pooling, ("mean", "max"))
        _check_choice("segment.gate_scale", self.gate_scale, ("one", "inv_length"))
        _check_choice("segment.routing", self.routing, ("batch", "causal"))
        if self.num_experts:
            _check(isinstance(self.causal_top_k, int) and 1 <= self.causal_top_k <= self.num_experts,
                   "segment.causal_top_k", self.causal_top_k,
                   f"must be an integer in [1, segment.num_experts={self.num_experts}]")

    @property
    def enabled(self) -> bool:
        return self.num_experts > 0

    @property
    def capacity_ratio(self) -> tuple[int, int]:
        """(p, q) with r = floor(V * p / q) = floor(V * c / N_seg) exactly (no float rounding).

        c is taken as the shortest decimal that prints as it (`repr`), bounded to a denominator of
        10^6 so that V * p stays far inside int64: 1.4 is 7/5, not the binary float just below it
        (with which 45 * 1.4 / 3 would be 20.999... and floor to 20)."""
        c = Fraction(repr(float(self.capacity_factor))).limit_denominator(10**6)
        return c.numerator, c.denominator * self.num_experts

    def capacity(self, num_segments: int) -> int:
        """r for `num_segments` segments: floor(V * c / N_seg), never more than V."""
        p, q = self.capacity_ratio
        return min(num_segments * p // q, num_segments)


@dataclass
class HybridMoEConfig:
    """The whole block: token level + segment level + how their outputs are fused."""

    token: TokenMoEConfig = field(default_factory=TokenMoEConfig)
    segment: SegmentMoEConfig = field(default_factory=SegmentMoEConfig)
    fusion: Literal["fixed", "preserving"] = "fixed"
    """`fixed`: out = token_weight * y_tok + segment_weight * y_seg (the paper: 0.7 / 0.3).
    `preserving`: out = y_tok + g * y_seg with a learned scalar g initialised to 0, so that a freshly
    upcycled block computes exactly the dense FFN (METHOD.md section 3.3); without a segment level
    (segment.num_experts = 0) it is y_tok alone (token_weight and segment_weight are not used)."""
    token_weight: float = 0.7
    """w_tok of `fixed` fusion (the released code: 0.7); the token-only variant uses 1.0."""
    segment_weight: float = 0.3
    """w_seg of `fixed` fusion (the released code: 0.3)."""
    load_balance_coef: float = 0.01
    """alpha: weight of the token-level Switch load-balance loss in the returned aux loss."""
    router_z_loss_coef: float = 0.0
    """Weight of the router z-loss (mean squared logsumexp of router logits); 0 disables it."""
    dispatch: Literal["auto", "reference", "grouped"] = "auto"
    """Expert dispatch: `reference` (readable per-expert loop), `grouped` (tokens sorted by expert,
    one grouped matmul per projection), or `auto` (grouped)."""

    def __post_init__(self) -> None:
        if isinstance(self.token, dict):
            self.token = TokenMoEConfig(**_known(self.token, TokenMoEConfig, "token"))
        if isinstance(self.segment, dict):
            self.segment = SegmentMoEConfig(**_known(self.segment, SegmentMoEConfig, "segment"))
        _check_choice("fusion", self.fusion, ("fixed", "preserving"))
        for name in ("token_weight", "segment_weight", "load_balance_coef", "router_z_loss_coef"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and value >= 0, name, value, "must be a number >= 0")
        _check_choice("dispatch", self.dispatch, ("auto", "reference", "grouped"))
        if self.fusion == "preserving":
            _check(self.token.gating == "renorm", "fusion", self.fusion,
                   "`preserving` needs token.gating = renorm (qwen2_moe gating adds the shared "
                   "expert on top of the routed ones, so it cannot equal the dense FFN)")

    @property
    def is_causal(self) -> bool:
        """Whether a position's output depends only on the tokens up to it (so that the model can
        generate with the KV cache): true for causal segment routing or without a segment level."""
        return not self.segment.enabled or self.segment.routing == "causal"

    def to_dict(self) -> dict[str, Any]:
        """The block as the plain mapping stored in the checkpoint's config.json (the only place
        the tree becomes a dict: the Hugging Face config boundary)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HybridMoEConfig":
        return cls(**_known(d, cls, "moe"))


def _known(d: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return dict(d)
