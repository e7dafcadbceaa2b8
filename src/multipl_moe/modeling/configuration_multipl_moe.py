"""Hugging Face config of a MultiPL-MoE causal LM: the dense base model's config plus the block's.

The base model's fields (hidden_size, rope_parameters, layer_types, ...) are kept at the top level,
unchanged, so that everything in transformers that reads a decoder config (attention, RoPE, the
KV cache, generation) works on this config as it does on the base one. The MoE settings live
under `moe` (a `HybridMoEConfig`, built once; a mapping only in config.json) and `moe_layers`
(None = every layer).

This file is also copied into every saved checkpoint (remote code), so it imports only torch,
transformers and the block's own modules.
"""

from __future__ import annotations

import copy

from transformers import PretrainedConfig

from ..moe.config import HybridMoEConfig

# model_type of the base -> (config class name, decoder model class name) in transformers.
SUPPORTED_BASES = {
    "qwen2": ("Qwen2Config", "Qwen2Model"),
    "llama": ("LlamaConfig", "LlamaModel"),
    "mistral": ("MistralConfig", "MistralModel"),
}
_OWN_KEYS = ("base_model_type", "moe", "moe_layers")
_NOT_BASE_KEYS = _OWN_KEYS + ("model_type", "auto_map", "architectures", "transformers_version")


class MultiplMoEConfig(PretrainedConfig):
    model_type = "multipl_moe"

    def __init__(self, base_model_type: str = "qwen2", moe: dict | HybridMoEConfig | None = None,
                 moe_layers: list[int] | None = None, **kwargs):
        if base_model_type not in SUPPORTED_BASES:
            raise ValueError(f"base_model_type {base_model_type!r} is not supported; supported: "
                             f"{', '.join(SUPPORTED_BASES)} (decoder-only models with SwiGLU FFNs)")
        self.base_model_type = base_model_type
        # Typed and validated once, here: every forward reads it. It becomes a mapping only where
        # config.json is written (`to_dict`), the one dict <-> dataclass boundary of the block.
        self.moe = copy.deepcopy(moe) if isinstance(moe, HybridMoEConfig) else HybridMoEConfig.from_dict(moe or {})
        self.moe_layers = list(moe_layers) if moe_layers is not None else None
        super().__init__(**kwargs)

    @property
    def moe_config(self) -> HybridMoEConfig:
        return self.moe

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["moe"] = self.moe.to_dict()
        return out

    def is_moe_layer(self, layer_idx: int) -> bool:
        return self.moe_layers is None or layer_idx in self.moe_layers

    def base_config_dict(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_BASE_KEYS}

    def base_config(self) -> PretrainedConfig:
        """The dense base model's own config (what the model was upcycled from)."""
        import transformers

        cls = getattr(transformers, SUPPORTED_BASES[self.base_model_type][0])
        return cls(**self.base_config_dict())

    @classmethod
    def from_base(cls, base: PretrainedConfig, moe: HybridMoEConfig, moe_layers: list[int] | None = None,
                  **overrides) -> "MultiplMoEConfig":
        model_type = getattr(base, "model_type", None)
        if model_type not in SUPPORTED_BASES:
            raise ValueError(f"unsupported base architecture {model_type!r}; supported: "
                             f"{', '.join(SUPPORTED_BASES)}")
        fields = {k: v for k, v in base.to_dict().items() if k not in _NOT_BASE_KEYS}
        fields.update(overrides)
        if moe_layers is not None:
            bad = [i for i in moe_layers if not 0 <= i < base.num_hidden_layers]
            if bad:
                raise ValueError(f"moe_layers {bad} out of range: the base model has "
                                 f"{base.num_hidden_layers} layers")
        return cls(base_model_type=model_type, moe=moe, moe_layers=moe_layers, **fields)
