"""Named blocks: `upcycle --preset NAME`, `info --preset NAME`, `model.preset: NAME` in training.

A preset is a `HybridMoEConfig` instance with a name; overrides (`--set segment.segment_length=32`,
`model.moe.segment.segment_length: 32`) are applied over it by the one config loader. `paper` is
METHOD.md section 2 exactly as released: 6 token experts (the last shared and frozen), K = 2,
6 segment experts over windows of 64 tokens, c = 1.0, at most 4 experts per segment, fusion 0.7 / 0.3,
batch routing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from ..errors import UserError
from .config import ConfigError, HybridMoEConfig, SegmentMoEConfig, TokenMoEConfig


class Preset(NamedTuple):
    about: str
    config: HybridMoEConfig


PRESETS: dict[str, Preset] = {
    "paper": Preset("the paper's block as released (batch routing, fixed fusion 0.7/0.3)", HybridMoEConfig()),
    "paper-causal": Preset("the paper's block with causal segment routing (generates with the KV cache)",
                           HybridMoEConfig(segment=SegmentMoEConfig(routing="causal"))),
    "preserving": Preset("causal routing, fusion that equals the dense model at step 0",
                         HybridMoEConfig(fusion="preserving", segment=SegmentMoEConfig(routing="causal"))),
    "preserving-batch": Preset("batch routing, fusion that equals the dense model at step 0",
                               HybridMoEConfig(fusion="preserving")),
    "token-only": Preset("token level only (the paper's gating), equals the dense model at step 0",
                         HybridMoEConfig(token_weight=1.0, segment=SegmentMoEConfig(num_experts=0))),
    "qwen2-moe": Preset("token level only with Qwen2-MoE's gating: exportable as Qwen2MoeForCausalLM",
                        HybridMoEConfig(token_weight=1.0, token=TokenMoEConfig(gating="qwen2_moe"),
                                        segment=SegmentMoEConfig(num_experts=0))),
}


class PresetError(UserError, ConfigError):
    """An unknown preset, or a bad override of one (a `ConfigError` of the block, as a user error)."""


def preset_dict(name_or_path: str | Path, error: type[Exception] = PresetError) -> dict:
    """The block settings a preset name or a YAML file (a `moe:` mapping, or the mapping itself) holds."""
    from ..config import read_yaml

    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)].config.to_dict()
    if str(name_or_path).endswith((".yaml", ".yml")):
        data = read_yaml(name_or_path, error)
        return data.get("moe", data)
    raise error(f"unknown preset {str(name_or_path)!r}; choose one of {', '.join(PRESETS)} or a YAML file")


def resolve_preset(name_or_path: str | Path, overrides: Mapping[str, Any] | list[str] | None = None) -> HybridMoEConfig:
    """A preset with overrides, given as KEY=VALUE strings or a {dotted key: value} mapping."""
    from ..config import load

    if isinstance(overrides, Mapping):
        overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    block = preset_dict(name_or_path)
    layer = block if str(name_or_path) in PRESETS else (str(name_or_path), block)  # a file is named in errors
    return load(HybridMoEConfig, [layer], overrides or [], error=PresetError)

