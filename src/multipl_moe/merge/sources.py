"""Loading the merge's input models: the base, and each expert as a full model or a LoRA adapter.

An expert given as a PEFT LoRA adapter is applied to a copy of the base in memory and merged
there (`merge_and_unload`); no full copy is ever written to disk. Every input must have the base's
architecture and shapes (mergekit's "same architecture" rule), checked from the configs before any
weights are read.

Only what the merge needs is kept per expert: its FFN weights per layer (`ExpertFFN`), and its
non-FFN weights when they are to be averaged.

Shape legend: L layers, I intermediate size, H hidden size.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..modeling.upcycle import CheckpointError, load_base_config, load_dense
from .config import Expert, MergeError

_FFN = ".mlp."
# Config fields that must agree between the base and every expert for their FFNs to be exchangeable.
_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vocab_size", "hidden_act")


@dataclass
class ExpertFFN:
    """One expert's SwiGLU FFN in every layer: gate [L, I, H], up [L, I, H], down [L, H, I]."""

    gate_LIH: torch.Tensor
    up_LIH: torch.Tensor
    down_LHI: torch.Tensor


def adapter_of(ref: str) -> tuple[str | None, str]:
    """(model the adapter applies to or None for the base, adapter dir) when `ref` names a LoRA
    adapter; (None, "") for a full checkpoint. mergekit's `model+adapter` form is accepted."""
    if "+" in ref and not Path(ref).exists():
        model, adapter = ref.split("+", 1)
        return model, adapter
    if (Path(ref) / "adapter_config.json").is_file():
        return None, ref
    return None, ""


def check_architectures(base: str, refs: dict[str, str]):
    """The base's config; a one-line error if any input (`where` -> ref) has another architecture."""
    try:
        base_cfg = load_base_config(base)
    except CheckpointError as e:
        raise MergeError(f"base_model: {e}") from None
    for where, ref in refs.items():
        model, adapter = adapter_of(ref)
        if adapter:
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise MergeError(f"{where}: {adapter} is not a PEFT adapter directory (no adapter_config.json)")
            _check_lora(adapter, where)
            if model is None:
                continue  # applied to the base itself
            ref = model
        try:
            cfg = load_base_config(ref)
        except CheckpointError as e:
            raise MergeError(f"{where}: {e}") from None
        if cfg.model_type != base_cfg.model_type:
            raise MergeError(f"{where}: {ref} is a {cfg.model_type} model but base_model {base} is "
                             f"{base_cfg.model_type}: every model must have the base's architecture")
        for name in _SHAPE_FIELDS:
            if getattr(cfg, name, None) != getattr(base_cfg, name, None):
                raise MergeError(f"{where}: {ref} has {name} = {getattr(cfg, name, None)} but base_model has "
                                 f"{getattr(base_cfg, name, None)}: every model must have the base's architecture")
    return base_cfg


def load_model(ref: str, base_model, base: str, where: str):
    """The expert's full model in fp32: loaded, or the base (or `model+`) with its adapter merged."""
    model_ref, adapter = adapter_of(ref)
    if not adapter:
        return _load(ref, where)
    from peft import PeftModel

    _check_lora(adapter, where)
    host = copy.deepcopy(base_model) if model_ref is None else _load(model_ref, where)
    try:
        return PeftModel.from_pretrained(host, adapter).merge_and_unload().eval()
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise MergeError(f"{where}: cannot apply the adapter {adapter} to {model_ref or base}: "
                         f"{' '.join(str(e).split())[:300]}") from None


def _check_lora(adapter: str, where: str) -> None:
    try:
        peft_type = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("peft_type", "LORA")
    except (OSError, ValueError) as e:
        raise MergeError(f"{where}: {adapter}/adapter_config.json is unreadable ({e})") from None
    if peft_type != "LORA":
        raise MergeError(f"{where}: {adapter} is a {peft_type} adapter; only LoRA adapters can be merged")


def _load(ref: str, where: str):
    try:
        return load_dense(ref, "float32").eval()
    except CheckpointError as e:
        raise MergeError(f"{where}: {e}") from None


def ffn_of(model) -> ExpertFFN:
    layers = model.model.layers
    return ExpertFFN(torch.stack([l.mlp.gate_proj.weight.detach() for l in layers]),
                     torch.stack([l.mlp.up_proj.weight.detach() for l in layers]),
                     torch.stack([l.mlp.down_proj.weight.detach() for l in layers]))


def non_ffn_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items() if _FFN not in k}


@torch.no_grad()
def noised(ffn: ExpertFFN, expert: Expert, generator: torch.Generator) -> ExpertFFN:
    """mergekit's `noise_and_scale`: Gaussian noise on every FFN weight, `residual_scale` on down."""
    tensors = [ffn.gate_LIH, ffn.up_LIH, ffn.down_LHI]
    if expert.noise_scale:
        tensors = [t + torch.randn(t.shape, generator=generator) * expert.noise_scale for t in tensors]
    if expert.residual_scale is not None:
        tensors[2] = tensors[2] * expert.residual_scale
    return ExpertFFN(*tensors)


def describe(ref: str) -> str:
    model, adapter = adapter_of(ref)
    return f"LoRA {adapter} on {model or 'the base'}" if adapter else ref


__all__ = ["ExpertFFN", "adapter_of", "check_architectures", "describe", "ffn_of", "load_model", "noised",
           "non_ffn_state"]
