"""The demo's settings: languages, variants, the three sizes, and how each training run is configured.

Every training run of the demo (pre-training, the learning-rate sweep, the seeds) is configured by
`train_overrides`, and only there, so that a change of the training-config API is one edit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

VARIANTS = ["dense", "lora", "token-only", "hybrid-batch", "hybrid-causal"]
HIGH = ["py", "java", "cpp"]
LOW = ["rs", "go", "rb"]

# The keyed hash that takes a document into the test split (the held-out split the report's
# numbers come from). The trainer's own validation split (`data.val_fraction`, keyed by
# `data.seed` = 0) is drawn from what is left, and only it is used to pick learning rates.
TEST_SPLIT_KEY = 7919


@dataclass
class DemoSize:
    name: str
    estimate: str
    """Expected wall time of a full run, as the help texts and the README state it."""
    bytes_per_lang: int
    seq_len: int
    batch: int
    steps: int
    """Continued-training steps of every variant run (the same token budget for all)."""
    lr_grid: list[float]
    """Learning rates each variant is swept over (seed 0, chosen on the validation split)."""
    segment_length: int
    eval_problems: int
    max_new_tokens: int
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    base: str | None = None
    """A dense base (directory or hub name); None builds a tiny one here and pre-trains it."""
    sources: dict[str, str] | None = None
    """lang -> training-text source (file, folder or hub dataset); None: the built-in corpus."""
    eval_data: str | None = None
    """MultiPL-E JSONL folder; None: --data-dir, $MULTIPL_E_DIR or ../shared/data/multipl-e; `hub`: the hub."""
    vocab: int = 2048
    hidden: int = 64
    inter: int = 176
    layers: int = 2
    heads: int = 4
    pretrain_steps: int = 0
    pretrain_lr: float = 3e-3
    pretrain_low_share: float = 0.04
    """Share of pre-training blocks drawn from the low-resource languages (rare, but every token's
    embedding is trained, as in a real base model)."""
    replay_share: float = 0.1
    """Share of continued-training blocks drawn from the high-resource languages (replay); the
    rest are the low-resource languages."""
    doc_bytes: int = 4000
    """Files are cut at line ends into documents of about this many bytes (see `build_corpus`)."""
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    heldout_blocks: int = 16
    """Blocks per language scored in the validation and test splits."""
    evals: int = 5
    """Validation passes per run (the held-out loss curves)."""
    merge_steps: int | None = None
    """Steps of each per-language fine-tune of the merge stage (None: `steps`; 0: no merge stage)."""
    merge_problems: int = 20
    """Docstring -> function problems the merge stage scores with CodeBLEU."""
    merge_max_new_tokens: int | None = None
    """Tokens generated per problem there (None: `max_new_tokens`)."""
    precision: str = "fp32"
    device: str = "cpu"
    cpu_threads: int | None = 1
    """Torch threads. One: these models are too small to gain much from a second thread, and on a
    shared machine two spinning OpenMP threads per process made steps 20-60 times slower (measured);
    None leaves torch's default."""

    def public(self) -> dict:
        return dataclasses.asdict(self)


CPU = DemoSize(name="cpu", estimate="about 8 minutes on 2 quiet CPU cores", bytes_per_lang=600_000, seq_len=128,
               batch=16, steps=100, lr_grid=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2], segment_length=32, eval_problems=2,
               max_new_tokens=64, vocab=1024, hidden=64, inter=176, layers=2, pretrain_steps=400,
               merge_steps=40, merge_max_new_tokens=48)
QUICK = DemoSize(name="quick", estimate="about 1 minute on 2 quiet CPU cores", bytes_per_lang=150_000, seq_len=64,
                 batch=8, steps=12, lr_grid=[3e-3, 1e-2], segment_length=16, eval_problems=1, max_new_tokens=24,
                 seeds=[0, 1], vocab=512, hidden=32, inter=96, layers=2, pretrain_steps=40, heldout_blocks=4,
                 evals=2, test_fraction=0.15, val_fraction=0.15, merge_steps=6, merge_problems=4,
                 merge_max_new_tokens=16)
_STACK = "bigcode/the-stack-smol?data_dir=data/{}"
GPU = DemoSize(name="gpu", estimate="an estimate, not measured: 2-3 hours on one 80 GB GPU",
               bytes_per_lang=30_000_000, seq_len=1024, batch=8, steps=400, lr_grid=[1e-5, 3e-5, 1e-4],
               segment_length=64, eval_problems=164, max_new_tokens=512, base="Qwen/Qwen2.5-0.5B",
               sources={"py": _STACK.format("python"), "java": _STACK.format("java"), "cpp": _STACK.format("c++"),
                        "rs": _STACK.format("rust"), "go": _STACK.format("go"), "rb": _STACK.format("ruby")},
               eval_data="hub", heldout_blocks=64, precision="bf16", device="cuda", cpu_threads=None,
               merge_problems=100)
SIZES = {s.name: s for s in (CPU, QUICK, GPU)}


def load_recipe(path: Path) -> DemoSize:
    """A YAML recipe: `size: <cpu|quick|gpu>` and any of DemoSize's fields over it (names, sizes)."""
    import yaml

    from ..errors import UserError

    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--recipe {path}: cannot read it as YAML ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"--recipe {path}: expected a mapping of settings")
    base = SIZES.get(d.pop("size", "cpu"))
    if base is None:
        raise UserError(f"--recipe {path}: size must be one of {', '.join(SIZES)}")
    known = {f.name for f in dataclasses.fields(DemoSize)} - {"name"}
    bad = sorted(set(d) - known)
    if bad:
        raise UserError(f"--recipe {path}: unknown setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **d)


def pretrain_weights(high: list[str], low: list[str], size: DemoSize) -> dict[str, float]:
    return {**{lang: (1 - size.pretrain_low_share) / len(high) for lang in high},
            **{lang: size.pretrain_low_share / len(low) for lang in low}}


def continue_weights(high: list[str], low: list[str], size: DemoSize) -> dict[str, float]:
    return {**{lang: size.replay_share / len(high) for lang in high},
            **{lang: (1 - size.replay_share) / len(low) for lang in low}}


def train_overrides(size: DemoSize, *, base: str | Path, train_file: Path, out: Path, variant: str, seed: int,
                    weights: dict[str, float], steps: int, lr: float) -> list[str]:
    """The training config of one demo run, as `multipl-moe train` overrides."""
    eval_every = max(1, steps // size.evals)
    weight_map = ", ".join(f"{lang}: {w:.6g}" for lang, w in weights.items())
    # The demo's run names; in the training config routing is `model.moe.segment.routing` alone.
    model_variant, _, routing = variant.partition("-") if variant.startswith("hybrid-") else (variant, "", "")
    return [
        f"model.base={base}", f"model.variant={model_variant}", f"data.sources=[{train_file}]",
        f"data.languages=[{','.join(weights)}]", f"data.seq_len={size.seq_len}",
        f"data.val_fraction={size.val_fraction}", f"data.val_max_blocks_per_lang={size.heldout_blocks}",
        f"data.sampling_weights={{{weight_map}}}", "data.seed=0",
        f"steps={steps}", f"micro_batch_size={size.batch}", f"optim.lr={lr}",
        f"optim.warmup_steps={max(1, steps // 10)}", f"seed={seed}", f"output_dir={out}",
        f"log_every={eval_every}", f"eval_every={eval_every}", f"save_every={steps}", "eval_batches=0",
        f"precision={size.precision}", "tensorboard=false",
        f"model.moe.segment.segment_length={size.segment_length}",
        *([f"model.moe.segment.routing={routing}"] if routing else []),
    ]
