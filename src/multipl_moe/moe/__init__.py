"""The hybrid MoE block: token-level MoE with a shared expert + segment-level expert-choice MoE.

Names are imported lazily, so that reading the configuration (`multipl_moe.moe.config`, e.g. for
`--help`) does not import torch.
"""

import importlib

_EXPORTS = {
    "HybridMoEBlock": "block", "HybridMoEOutput": "block",
    "ConfigError": "config", "HybridMoEConfig": "config", "SegmentMoEConfig": "config", "TokenMoEConfig": "config",
    "SwiGLUExperts": "experts", "SwiGLUMLP": "experts",
    "SegmentMoE": "segment_moe", "SegmentState": "segment_moe",
    "TokenMoE": "token_moe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
