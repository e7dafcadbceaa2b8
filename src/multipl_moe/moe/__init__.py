"""The hybrid MoE block: token-level MoE with a shared expert + segment-level expert-choice MoE."""

from .block import HybridMoEBlock, HybridMoEOutput
from .config import ConfigError, HybridMoEConfig, SegmentMoEConfig, TokenMoEConfig
from .experts import SwiGLUExperts, SwiGLUMLP
from .segment_moe import SegmentMoE, SegmentState
from .token_moe import TokenMoE

__all__ = [
    "ConfigError", "HybridMoEBlock", "HybridMoEConfig", "HybridMoEOutput", "SegmentMoE",
    "SegmentMoEConfig", "SegmentState", "SwiGLUExperts", "SwiGLUMLP", "TokenMoE", "TokenMoEConfig",
]
