"""Named MoE presets for `multipl-moe upcycle --preset NAME` (or a YAML file with a `moe:` mapping).

`paper` is METHOD.md section 2 exactly as released: 6 token experts (the last shared and frozen),
K = 2, 6 segment experts over windows of 64 tokens, c = 1.0, at most 4 experts per segment,
fusion 0.7 / 0.3, batch routing.
"""

from __future__ import annotations

from pathlib import Path

from .moe.config import HybridMoEConfig, SegmentMoEConfig, TokenMoEConfig

PRESETS: dict[str, tuple[str, HybridMoEConfig]] = {
    "paper": ("the paper's block as released (batch routing, fixed fusion 0.7/0.3)", HybridMoEConfig()),
    "paper-causal": ("the paper's block with causal segment routing (generates with the KV cache)",
                     HybridMoEConfig(segment=SegmentMoEConfig(routing="causal"))),
    "preserving": ("causal routing, fusion that equals the dense model at step 0",
                   HybridMoEConfig(fusion="preserving", segment=SegmentMoEConfig(routing="causal"))),
    "preserving-batch": ("batch routing, fusion that equals the dense model at step 0",
                         HybridMoEConfig(fusion="preserving")),
    "token-only": ("token level only (the paper's gating), equals the dense model at step 0",
                   HybridMoEConfig(token_weight=1.0, segment=SegmentMoEConfig(num_experts=0))),
    "qwen2-moe": ("token level only with Qwen2-MoE's gating: exportable as Qwen2MoeForCausalLM",
                  HybridMoEConfig(token_weight=1.0, token=TokenMoEConfig(gating="qwen2_moe"),
                                  segment=SegmentMoEConfig(num_experts=0))),
}


def resolve_preset(name_or_path: str, overrides: dict | None = None) -> HybridMoEConfig:
    """A preset by name, or a YAML file holding a `moe:` mapping (or the mapping itself)."""
    if name_or_path in PRESETS:
        base = PRESETS[name_or_path][1].to_dict()
    elif name_or_path.endswith((".yaml", ".yml")):
        import yaml

        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        base = data.get("moe", data)
    else:
        raise KeyError(f"unknown preset {name_or_path!r}; choose one of {', '.join(PRESETS)} or a YAML file")
    for dotted, value in (overrides or {}).items():
        node = base
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return HybridMoEConfig.from_dict(base)
