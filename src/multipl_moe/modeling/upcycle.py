"""Sparse upcycling: a dense Hugging Face checkpoint becomes a MultiPL-MoE checkpoint.

Every dense weight is copied; each FFN is cloned into every expert (optionally with a little
noise so that experts can diverge); routers get a seeded normal init; the result is written with
`save_pretrained` (safetensors), the tokenizer and the modeling code (remote code), atomically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..util.atomic import atomic_dir
from . import SUPPORTED_BASES, MultiplMoEConfig, MultiplMoEForCausalLM
from .remote_code import write_remote_code
from ..moe import HybridMoEBlock, HybridMoEConfig


class CheckpointError(Exception):
    """The base checkpoint is missing, corrupt or of an unsupported architecture."""


def check_model_ref(ref: str) -> None:
    """A local path that does not exist is reported as such, not as a malformed hub id."""
    path = Path(ref).expanduser()
    looks_local = ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or path.suffix == ".json"
    if looks_local and not path.exists():
        raise CheckpointError(f"{ref}: no such checkpoint directory")


def load_base_config(base: str):
    from transformers import AutoConfig

    check_model_ref(base)
    path = Path(base)
    if path.exists() and not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face checkpoint directory?)")
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the config of {base!r}: {e}") from None
    if config.model_type not in SUPPORTED_BASES:
        raise CheckpointError(f"{base}: architecture {config.model_type!r} is not supported; supported: "
                              f"{', '.join(SUPPORTED_BASES)} (decoder-only models with SwiGLU FFNs)")
    return config


def _check_safetensors(base: str) -> None:
    """Open every safetensors header so that a truncated or corrupt file is named."""
    path = Path(base)
    if not path.is_dir():
        return
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        wanted = set(json.loads(index.read_text())["weight_map"].values())
        missing = sorted(wanted - {f.name for f in files})
        if missing:
            raise CheckpointError(f"{path}: shard(s) listed in {index.name} are missing: {', '.join(missing)}")
    if not files and not list(path.glob("*.bin")):
        raise CheckpointError(f"{path}: no weights (*.safetensors or *.bin) found")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    st.get_slice(key)
        except Exception as e:  # safetensors raises several types for a damaged file
            raise CheckpointError(f"{f}: corrupt or truncated safetensors file ({e})") from None
        size = f.stat().st_size
        with open(f, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end > size:
            raise CheckpointError(f"{f}: truncated ({size} bytes, header says {8 + header_len + end})")


def load_dense(base: str, dtype: str = "auto"):
    from transformers import AutoModelForCausalLM

    load_base_config(base)
    _check_safetensors(base)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load the weights of {base!r}: {e}") from None


@torch.no_grad()
def upcycle_model(dense, moe: HybridMoEConfig, moe_layers: list[int] | None = None, noise_std: float = 0.0,
                  seed: int = 0) -> MultiplMoEForCausalLM:
    """Build the MoE model around `dense`'s weights (in memory)."""
    config = MultiplMoEConfig.from_base(dense.config, moe, moe_layers)
    config.architectures = ["MultiplMoEForCausalLM"]
    dtype = next(dense.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    # Built on the meta device: for a 10B-parameter MoE a random init would cost minutes and
    # twice the memory. Every tensor is then written below, and the check proves it.
    with torch.device("meta"):
        model = MultiplMoEForCausalLM(config)
    model.to_empty(device="cpu")
    model.to(dtype)
    if config.tie_word_embeddings:  # one tensor for both, written once through the embedding
        model.tie_weights()
    written: set[str] = set()
    dense_tensors = dict(dense.named_parameters())
    dense_tensors.update(dense.named_buffers())
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name in dense_tensors:
            t.copy_(dense_tensors[name])
            written.add(name)
    for idx, layer in enumerate(model.model.layers):
        if not isinstance(layer.mlp, HybridMoEBlock):
            continue
        ffn = dense.model.layers[idx].mlp
        block = layer.mlp
        block.load_dense_ffn(ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight, noise_std, generator)
        std = getattr(config, "initializer_range", 0.02)
        for name, p in block.named_parameters():
            full = f"model.layers.{idx}.mlp.{name}"
            if "router" in name or "shared_expert_gate" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            elif name in ("segment_gate", "segment_moe.first_segment_query"):
                p.zero_()
            written.add(full)
    missing = [n for n, _ in list(model.named_parameters()) + list(model.named_buffers()) if n not in written]
    if missing:
        raise RuntimeError(f"upcycling left tensors uninitialised: {missing[:5]}")
    if moe.token.freeze_shared_expert:
        for layer in model.model.layers:
            if isinstance(layer.mlp, HybridMoEBlock):
                layer.mlp.token_moe.shared_expert.requires_grad_(False)
    return model.eval()


def save_checkpoint(model, out: str | Path, tokenizer_source: str | None = None, force: bool = False,
                    tokenizer=None) -> Path:
    """save_pretrained + tokenizer (an object, or copied from a checkpoint) + remote code, all or nothing."""
    with atomic_dir(out, force=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        elif tokenizer_source is not None and not copy_tokenizer(tokenizer_source, tmp):
            print(f"note: {tokenizer_source} has no tokenizer, so {out} is written without one", file=sys.stderr)
        if isinstance(model, MultiplMoEForCausalLM):
            write_remote_code(tmp)
        from ..util.provenance import write_beside

        write_beside(tmp)   # issue 14: versions and git commit of what wrote it
    return Path(out)


# Files that hold a vocabulary, for the tokenizers of the supported bases (fast, slow, Mistral's).
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tekken.json")


def has_tokenizer(source: str) -> bool:
    """Does `source` (a directory or hub id) hold a tokenizer? AutoTokenizer cannot say: given a
    checkpoint without one, it builds an empty tokenizer of the config's class (one entry)."""
    path = Path(source)
    if path.is_dir():
        return any((path / n).is_file() for n in _VOCAB_FILES) or any(path.glob("*.tiktoken"))
    from transformers.utils import cached_file

    for name in _VOCAB_FILES:
        try:
            if cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False):
                return True
        except (OSError, ValueError):
            return False
    return False


def copy_tokenizer(source: str, dest: Path) -> bool:
    """Copy `source`'s tokenizer into `dest`; False (nothing written) when it has none."""
    from transformers import AutoTokenizer

    if not has_tokenizer(source):
        return False
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        return False
    tok.save_pretrained(dest)
    return True


def upcycle(base: str, out: str | Path, moe: HybridMoEConfig, moe_layers: list[int] | None = None,
            noise_std: float = 0.0, seed: int = 0, dtype: str = "auto", force: bool = False) -> Path:
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (pass --force to replace it)")
    dense = load_dense(base, dtype)
    model = upcycle_model(dense, moe, moe_layers, noise_std, seed)
    del dense
    return save_checkpoint(model, out, tokenizer_source=base, force=force)
