"""The merge configuration: mergekit-moe's YAML schema, read unchanged, checked as mergekit checks it.

A user's existing mergekit-moe config works as it is (`base_model`, `gate_mode`, `dtype`,
`experts_per_token`, `experts`, `shared_experts`, `architecture`). What mergekit rejects is
rejected here too, each with one line (`MergeError`, a `UserError`): fewer experts than
`experts_per_token`, an expert without positive prompts where the gate mode reads them, the same
prompts for every expert, the same source model for every expert (unless `allow_all_same`, as
mergekit's `--i-understand-this-is-not-useful-without-training`). Unlike mergekit (pydantic,
extra keys ignored) an unknown key is an error: a misspelt `negative_promts` would otherwise
silently change the router.

Our additions are optional top-level keys that mergekit would ignore: `gate_input`, `non_expert`,
`hybrid_preset`, `seed`. `architecture` also accepts `multipl-moe` (our hybrid checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

GATE_MODES = ("hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random")
"""mergekit's gate modes: `hidden` and `hidden_last` take each prompt's last token (mergekit's
`hidden` does), `hidden_avg` the mean over its tokens; `cheap_embed` the summed token embeddings."""
PROMPTLESS_GATE_MODES = ("random", "uniform_random")
# mergekit's output architecture names; `architecture` selects one by case-insensitive prefix.
OUTPUT_ARCHITECTURES = ("Mixtral", "Qwen MoE", "MultiPL-MoE")
DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


class MergeError(UserError, ValueError):
    """A bad merge config or input model: one line, naming the key or the model."""


@dataclass
class Expert:
    source_model: str
    """A full checkpoint (directory or hub id), a PEFT LoRA adapter directory (applied to
    `base_model`), or mergekit's `model+adapter` form (the adapter applied to that model)."""
    positive_prompts: list[str] | None = None
    """Text that should be routed to this expert (the gate points at its hidden state)."""
    negative_prompts: list[str] | None = None
    """Text that should not: its hidden state is subtracted before normalising."""
    noise_scale: float | None = None
    """Std of Gaussian noise added to this expert's FFN weights."""
    residual_scale: float | None = None
    """Factor on this expert's down projection (its contribution to the residual stream)."""


@dataclass
class MergeConfig:
    base_model: str
    """The model the experts were fine-tuned from: attention, norms and embeddings come from it
    (unless `non_expert: average`), and the hidden-state gates are computed on it."""
    experts: list[Expert]
    """The routed experts, in order (expert i of every MoE layer is experts[i]'s FFN)."""
    gate_mode: str = "hidden"
    """How router rows are initialised: hidden | hidden_avg | hidden_last | cheap_embed | random |
    uniform_random (mergekit's). `hidden_avg` routed held-out code best in our measurement (gates.py)."""
    dtype: str | None = None
    """Dtype of the written weights (default: the base checkpoint's)."""
    experts_per_token: int = 2
    """Routed experts per token."""
    shared_experts: list[Expert] | None = None
    """At most one (Qwen MoE / MultiPL-MoE): its FFN is the shared expert. None: the base's FFN."""
    architecture: str | None = None
    """Output: `mixtral`, `qwen` (Qwen MoE) or `multipl-moe` (hybrid); None: Mixtral where it can
    express the merge (Llama/Mistral base, no shared expert), else Qwen MoE."""
    gate_input: str = "router"
    """Where hidden-state gates are read: `router`, the router's real input (post-attention,
    post-norm); `residual`, the residual stream entering the layer (what mergekit reads)."""
    non_expert: str = "base"
    """Non-FFN weights (attention, norms, embeddings, head): `base`, or `average` over the experts."""
    hybrid_preset: str = "paper"
    """MultiPL-MoE output: the block preset (segment level, fusion) around the merged token experts."""
    seed: int = 0
    """Seed of `random` / `uniform_random` gates, of `noise_scale`, and of the hybrid's segment routers."""
    allow_all_same: bool = False
    """Accept experts that are all the same model (mergekit's
    --i-understand-this-is-not-useful-without-training): useful only if training follows."""

    def architecture_name(self, base_model_type: str | None = None) -> str:
        if self.architecture:
            return next(n for n in OUTPUT_ARCHITECTURES if _arch_key(n).startswith(_arch_key(self.architecture)))
        if not self.shared_experts and base_model_type in (None, "llama", "mistral"):
            return "Mixtral"  # mergekit's default when it fits
        return "Qwen MoE"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _arch_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(" ", "-")


_EXPERT_KEYS = {f.name for f in dataclasses.fields(Expert)}
_TOP_KEYS = {f.name for f in dataclasses.fields(MergeConfig)}


def _expert(d: Any, where: str) -> Expert:
    if isinstance(d, str):
        d = {"source_model": d}
    if not isinstance(d, dict):
        raise MergeError(f"{where}: expected a mapping with source_model, got {d!r}")
    unknown = sorted(set(d) - _EXPERT_KEYS)
    if unknown:
        raise MergeError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_EXPERT_KEYS))}")
    if not isinstance(d.get("source_model"), str) or not d["source_model"].strip():
        raise MergeError(f"{where}.source_model: missing (a checkpoint directory, hub id or LoRA adapter)")
    for key in ("positive_prompts", "negative_prompts"):
        value = d.get(key)
        if isinstance(value, str):
            d = dict(d, **{key: [value]})
        elif value is not None and not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
            raise MergeError(f"{where}.{key}: expected a list of strings, got {value!r}")
    for key in ("noise_scale", "residual_scale"):
        value = d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MergeError(f"{where}.{key}: expected a number, got {value!r}")
    if d.get("noise_scale") is not None and d["noise_scale"] < 0:
        raise MergeError(f"{where}.noise_scale = {d['noise_scale']!r}: must be >= 0")
    return Expert(**d)


def config_from_dict(d: Any, **overrides) -> MergeConfig:
    """Parse and check a mergekit-moe config (a mapping); `overrides` replace top-level keys."""
    if not isinstance(d, dict):
        raise MergeError(f"expected a mapping at the top level, got {type(d).__name__}")
    d = {**d, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise MergeError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_TOP_KEYS))}")
    if not isinstance(d.get("base_model"), str) or not d["base_model"].strip():
        raise MergeError("base_model: missing (the checkpoint the experts were fine-tuned from)")
    experts = d.get("experts")
    if not isinstance(experts, list) or not experts:
        raise MergeError("experts: expected a non-empty list of experts (each with a source_model)")
    d["experts"] = [_expert(e, f"experts[{i}]") for i, e in enumerate(experts)]
    if d.get("shared_experts") is not None:
        if not isinstance(d["shared_experts"], list):
            raise MergeError(f"shared_experts: expected a list, got {d['shared_experts']!r}")
        d["shared_experts"] = [_expert(e, f"shared_experts[{i}]") for i, e in enumerate(d["shared_experts"])] or None
    if isinstance(d.get("dtype"), str):
        d["dtype"] = _DTYPE_ALIASES.get(d["dtype"], d["dtype"])
    cfg = MergeConfig(**d)
    check_config(cfg)
    return cfg


def load_config(path: str | Path, **overrides) -> MergeConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MergeError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MergeError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return config_from_dict(data, **overrides)


def check_config(cfg: MergeConfig) -> None:
    """mergekit's `is_bad_config` and output-architecture checks that need no model, one line each."""
    k = cfg.experts_per_token
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MergeError(f"experts_per_token = {k!r}: must be an integer >= 1")
    if len(cfg.experts) < k:
        raise MergeError(f"experts_per_token = {k} but there are only {len(cfg.experts)} expert(s): "
                         "include at least as many experts as experts_per_token")
    if cfg.gate_mode not in GATE_MODES:
        raise MergeError(f"gate_mode = {cfg.gate_mode!r}: must be one of {', '.join(GATE_MODES)}")
    if cfg.dtype is not None and cfg.dtype not in DTYPES:
        raise MergeError(f"dtype = {cfg.dtype!r}: must be one of {', '.join(DTYPES)}")
    if cfg.gate_input not in ("router", "residual"):
        raise MergeError(f"gate_input = {cfg.gate_input!r}: must be router or residual")
    if cfg.non_expert not in ("base", "average"):
        raise MergeError(f"non_expert = {cfg.non_expert!r}: must be base or average")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise MergeError(f"seed = {cfg.seed!r}: must be an integer")
    if cfg.architecture is not None:
        if not isinstance(cfg.architecture, str) or not any(
                _arch_key(n).startswith(_arch_key(cfg.architecture)) for n in OUTPUT_ARCHITECTURES) \
                or not cfg.architecture.strip():
            raise MergeError(f"architecture = {cfg.architecture!r}: no such output architecture here; supported: "
                             "mixtral, qwen (Qwen MoE), multipl-moe (hybrid)")
    shared = cfg.shared_experts or []
    if len(shared) > 1:
        raise MergeError(f"shared_experts: {len(shared)} given, at most one is supported (Qwen MoE has one)")
    if shared and cfg.architecture_name() == "Mixtral":
        raise MergeError("shared_experts: Mixtral has no shared expert (use architecture: qwen or multipl-moe)")

    if cfg.gate_mode in PROMPTLESS_GATE_MODES:
        pass  # mergekit needs no prompts for random gates
    else:
        for i, e in enumerate(cfg.experts):
            if not e.positive_prompts:
                raise MergeError(f"experts[{i}] ({e.source_model}) has no positive_prompts, which gate_mode "
                                 f"{cfg.gate_mode!r} needs (or use gate_mode random)")
        for i, e in enumerate(shared):
            if not e.positive_prompts:
                raise MergeError(f"shared_experts[{i}] ({e.source_model}) has no positive_prompts, which the "
                                 f"shared expert's gate needs under gate_mode {cfg.gate_mode!r}")

        def prompts(e: Expert):
            return tuple(e.positive_prompts), tuple(e.negative_prompts or ())

        if len(cfg.experts) > 1 and all(prompts(e) == prompts(cfg.experts[0]) for e in cfg.experts[1:]):
            raise MergeError("the positive and negative prompts are identical for every expert: the router could "
                             "not tell them apart (give each expert prompts of what it should receive)")
    if not cfg.allow_all_same and all(e.source_model == cfg.experts[0].source_model for e in cfg.experts[1:]):
        raise MergeError("every expert is the same source_model: the MoE would cost more and compute the same "
                         "(pass --allow-all-same if training follows)")
