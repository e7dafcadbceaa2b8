"""The training configuration: nested dataclasses, loaded from YAML, overridable from the CLI.

`multipl-moe train CONFIG.yaml optim.lr=1e-5 model.variant=dense` reads the YAML, applies the
dotted overrides, and validates every field; an unknown key or a bad value fails with the key's
name before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..data.config import DataConfig

VARIANTS = ("hybrid-batch", "hybrid-causal", "token-only", "dense", "lora")
# variant -> the upcycling preset it uses unless `model.preset` says otherwise
VARIANT_PRESETS = {"hybrid-batch": "paper", "hybrid-causal": "paper-causal", "token-only": "token-only"}


class TrainConfigError(UserError, ValueError):
    pass


def _check(cond: bool, name: str, value: Any, why: str) -> None:
    if not cond:
        raise TrainConfigError(f"{name} = {value!r}: {why}")


@dataclass
class ModelConfig:
    base: str = ""
    """Dense base checkpoint (directory or hub id), or an upcycled MultiPL-MoE checkpoint."""
    variant: str = "hybrid-batch"
    """hybrid-batch (the paper), hybrid-causal, token-only (upcycled, shared expert frozen),
    dense (continued pretraining of the base), lora (LoRA adapters on the base, via peft)."""
    preset: str | None = None
    """Upcycling preset for MoE variants (default: paper / paper-causal / token-only)."""
    moe_overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted block settings applied over the preset, e.g. {"segment.segment_length": 32}."""
    upcycle_noise_std: float = 0.0
    """Std of Gaussian noise added to each upcycled expert copy (0: exact copies)."""
    freeze: str = "paper"
    """MoE variants: `paper` (only routed token experts, segment experts and routers train),
    `experts` (all experts incl. the shared one, and routers), `all`."""
    lora_r: int = 16
    """LoRA rank (variant `lora`)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"])
    """Module names that get LoRA adapters."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about 30% more compute)."""

    def __post_init__(self):
        _check(self.variant in VARIANTS, "model.variant", self.variant, f"must be one of {', '.join(VARIANTS)}")
        _check(self.freeze in ("paper", "experts", "all"), "model.freeze", self.freeze,
               "must be one of paper, experts, all")
        _check(self.upcycle_noise_std >= 0, "model.upcycle_noise_std", self.upcycle_noise_std, "must be >= 0")
        _check(isinstance(self.lora_r, int) and self.lora_r > 0, "model.lora_r", self.lora_r, "must be an integer > 0")


@dataclass
class OptimConfig:
    lr: float = 7e-6
    """Peak learning rate (the released recipe: 7e-6, cosine to min_lr)."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine schedule."""
    warmup_steps: int = 100
    """Linear warm-up steps (the released recipe: 100)."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms, biases or scalars)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""

    def __post_init__(self):
        self.betas = tuple(self.betas)
        _check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        _check(0 <= self.min_lr <= self.lr, "optim.min_lr", self.min_lr, "must be in [0, optim.lr]")
        _check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "optim.warmup_steps",
               self.warmup_steps, "must be an integer >= 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas,
               "must be two numbers in [0, 1)")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "must be >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output_dir: str = "runs/train"
    """Where checkpoints, metrics.jsonl, TensorBoard logs and the final model go."""
    steps: int = 1000
    """Optimizer steps."""
    micro_batch_size: int = 8
    """Sequences per process per forward."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; global batch = micro_batch_size * grad_accum * processes."""
    seed: int = 0
    """Seed of the router init, upcycling noise and data order (not of the validation split)."""
    precision: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU), bf16, fp32."""
    balance_over_global_batch: bool = False
    """Average the load-balance statistics over all processes before forming the loss."""
    log_every: int = 10
    """Steps between training-metric records."""
    eval_every: int = 100
    """Steps between validation passes (per-language held-out loss)."""
    eval_batches: int = 8
    """Validation micro-batches per language at each evaluation (0: every held-out block)."""
    save_every: int = 100
    """Steps between checkpoints (written atomically; `--resume` continues from the latest)."""
    keep_last: int = 2
    """Checkpoints kept on disk."""
    tensorboard: bool = True
    """Also write TensorBoard event files (the JSONL log is always written)."""

    def __post_init__(self):
        for name in ("steps", "micro_batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep_last"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, v, "must be an integer >= 1")
        _check(isinstance(self.eval_batches, int) and self.eval_batches >= 0, "eval_batches", self.eval_batches,
               "must be an integer >= 0")
        _check(self.precision in ("auto", "bf16", "fp32"), "precision", self.precision, "must be auto, bf16 or fp32")

    @property
    def preset(self) -> str | None:
        return self.model.preset or VARIANT_PRESETS.get(self.model.variant)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_output_dir(path: str | Path) -> None:
    """`output_dir` must be a directory, or creatable as one (checked before anything is loaded)."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_symlink() and not p.exists():
            raise TrainConfigError(f"output_dir = {str(path)!r}: {p} is a broken symbolic link")
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f" ({p} is a file)"
                raise TrainConfigError(f"output_dir = {str(path)!r}: not a directory{where}")
            return


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig}


def _coerce_floats(cls, values: dict) -> dict:
    """YAML 1.1 reads `3e-3` (no dot) as a string: accept it where the field is a float."""
    out = dict(values)
    for f in dataclasses.fields(cls):
        v = out.get(f.name)
        if isinstance(v, str) and str(f.type).startswith("float"):
            try:
                out[f.name] = float(v)
            except ValueError:
                pass  # left to the field's own validation, which names it
    return out


def config_from_dict(d: dict) -> TrainConfig:
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - top)
    if unknown:
        raise TrainConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(top))}")
    kwargs = dict(d)
    for name, cls in _SECTIONS.items():
        section = kwargs.get(name) or {}
        if not isinstance(section, dict):
            raise TrainConfigError(f"{name}: expected a mapping, got {section!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(section) - known)
        if bad:
            raise TrainConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in bad)}; known: "
                                   f"{', '.join(sorted(known))}")
        try:
            kwargs[name] = cls(**_coerce_floats(cls, section))
        except TypeError as e:
            raise TrainConfigError(f"{name}: {e}") from None
    try:
        return TrainConfig(**_coerce_floats(TrainConfig, kwargs))
    except TypeError as e:
        raise TrainConfigError(str(e)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise TrainConfigError(f"override {text!r}: expected KEY=VALUE (e.g. optim.lr=1e-5)")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    import yaml

    d: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TrainConfigError(f"config file {path} not found")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise TrainConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise TrainConfigError(f"{path}: expected a mapping at the top level")
    for text in overrides:
        keys, value = parse_override(text)
        if keys[:2] == ["model", "moe_overrides"] and len(keys) > 2:  # block settings stay dotted
            d.setdefault("model", {}).setdefault("moe_overrides", {})[".".join(keys[2:])] = value
            continue
        node = d
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return config_from_dict(d)
