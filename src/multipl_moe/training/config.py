"""The training configuration: one typed tree of dataclasses, loaded from YAML and overrides.

`multipl-moe train CONFIG.yaml optim.lr=1e-5 model.moe.segment.routing=causal` reads the YAML,
applies the dotted overrides and validates every key and value (`multipl_moe.config`), all before
any tokenizer or weight is read; a mistake fails in one line that names the key. The MoE block is
`model.moe`, a `HybridMoEConfig` that starts from a named preset.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import check, read_yaml
from ..config.loader import build, parse
from ..data.config import DataConfig
from ..errors import UserError
from ..moe.config import ConfigError, HybridMoEConfig
from ..moe.presets import preset_dict

VARIANTS = ("hybrid", "token-only", "dense", "lora")
# The block a variant starts from unless `model.preset` names another; keys under `model.moe` go over it.
VARIANT_PRESETS = {"hybrid": "paper", "token-only": "token-only"}
# Old spellings, still read with a note: routing now has one name, `model.moe.segment.routing`.
OLD_VARIANTS = {"hybrid-batch": "batch", "hybrid-causal": "causal"}


class TrainConfigError(UserError, ValueError):
    pass


def _check(cond: bool, name: str, value, why: str) -> None:
    check(cond, name, value, why, TrainConfigError)


@dataclass
class ModelConfig:
    base: str = ""
    """Dense base checkpoint (directory or hub id), or an upcycled MultiPL-MoE checkpoint."""
    variant: Literal["hybrid", "token-only", "dense", "lora"] = "hybrid"
    """hybrid (the block in `model.moe`; the paper's routing unless `model.moe.segment.routing: causal`),
    token-only (upcycled without a segment level), dense (continued pretraining of the base), lora
    (LoRA adapters on the base, via peft). MoE variants freeze the shared expert."""
    preset: str | None = None
    """Named block (or YAML file with a `moe:` mapping) that `model.moe` starts from (default: paper
    for hybrid, token-only for token-only)."""
    moe: HybridMoEConfig = field(default_factory=HybridMoEConfig)
    """The MoE block of the hybrid and token-only variants: the preset, with the keys set here over it."""
    upcycle_noise_std: float = 0.0
    """Std of Gaussian noise added to each upcycled expert copy (0: exact copies)."""
    freeze: Literal["paper", "experts", "all"] = "paper"
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
        _check(self.variant != "token-only" or not self.moe.segment.enabled, "model.moe.segment.num_experts",
               self.moe.segment.num_experts, "must be 0 for variant token-only")


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
    precision: Literal["auto", "bf16", "fp32"] = "auto"
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
    """Also write TensorBoard event files (the JSONL log is always written); false drops
    `tensorboard` from `report_to`."""
    report_to: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    """Loggers beside metrics.jsonl, as in Hugging Face's Trainer: tensorboard (event files in
    output_dir/tensorboard), wandb (Weights & Biases: `pip install multipl-moe[wandb]`; project
    from $WANDB_PROJECT, offline with WANDB_MODE=offline); [] for neither."""

    def __post_init__(self):
        for name in ("steps", "micro_batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep_last"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, v, "must be an integer >= 1")
        _check(isinstance(self.eval_batches, int) and self.eval_batches >= 0, "eval_batches", self.eval_batches,
               "must be an integer >= 0")
        _check(self.precision in ("auto", "bf16", "fp32"), "precision", self.precision, "must be auto, bf16 or fp32")

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


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """The config of `path` (YAML) with the KEY=VALUE `overrides` over it, every key and value checked.

    The block in `model.moe` starts from the variant's preset (or `model.preset`), so the file and
    the overrides are read twice: once to learn the variant and the preset, once over the preset."""
    layers = [(str(path), read_yaml(path, TrainConfigError))] if path is not None else []
    layers, overrides, routing = _upgrade(layers, list(overrides))
    ns = parse(TrainConfig, layers, overrides, error=TrainConfigError)
    preset = ns.model.preset or VARIANT_PRESETS.get(ns.model.variant)
    if preset is not None:
        try:
            block = preset_dict(preset, TrainConfigError)
        except TrainConfigError as e:
            raise TrainConfigError(f"model.preset: {e}") from None
        if routing:
            block = {**block, "segment": {**block.get("segment", {}), "routing": routing}}
        ns = parse(TrainConfig, [{"model": {"moe": block}}, *layers], overrides, error=TrainConfigError)
    return build(TrainConfig, ns, TrainConfigError, {ConfigError: "model.moe."})


def _upgrade(layers: list, overrides: list[str]) -> tuple[list, list[str], str | None]:
    """Old spellings, read with a note: `model.variant: hybrid-batch | hybrid-causal` (now `hybrid`
    with `model.moe.segment.routing`), `model.moe_overrides` (now the typed `model.moe`)."""
    routing = None
    for _, d in layers:
        model = d.get("model")
        if not isinstance(model, dict):
            continue
        if model.get("variant") in OLD_VARIANTS:
            routing = OLD_VARIANTS[model["variant"]]
            _note(f"model.variant: {model['variant']}", f"model.variant: hybrid (routing {routing})")
            model["variant"] = "hybrid"
        old = model.pop("moe_overrides", None)
        if isinstance(old, dict):
            _note("model.moe_overrides", "model.moe")
            overrides = [f"model.moe.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in old.items()] + overrides
        elif old is not None:
            model["moe_overrides"] = old  # left for the loader to reject by name
    upgraded = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip().startswith("model.moe_overrides."):
            _note("model.moe_overrides.KEY", "model.moe.KEY")
            text = "model.moe." + text.split("model.moe_overrides.", 1)[1]
        elif key.strip() == "model.variant" and value.strip() in OLD_VARIANTS:
            routing = OLD_VARIANTS[value.strip()]
            _note(f"model.variant={value.strip()}", f"model.variant=hybrid model.moe.segment.routing={routing}")
            text = "model.variant=hybrid"
        elif key.strip() == "model.variant":
            routing = None
        upgraded.append(text)
    return layers, upgraded, routing


def _note(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; write {new}", FutureWarning, stacklevel=3)

