"""Training data: inputs -> documents -> (decontamination) -> tokens -> packed blocks.

| module | job |
|---|---|
| `config` | `DataConfig`, the validated data section of the training config; `DataError` |
| `sources` | read JSONL / Parquet / folders / saved or hub datasets; refuse MultiPL-E; skip report |
| `local_corpus` | the built-in corpus from the standard-library sources that toolchains ship |
| `tokenizer` | train a byte-level BPE tokenizer on a corpus (tiny models without downloads) |
| `decontam` | drop documents sharing a long n-gram with MultiPL-E prompts or tests |
| `packing` | tokenise, pack per language, validation split, language sampling: `build_train_val` |

Language tags and groups come from the registry, `multipl_moe.languages`. Names are imported
lazily so that `import multipl_moe.data` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataConfig": "config", "DataError": "config",
    "Document": "sources", "SourceReport": "sources", "iter_documents": "sources",
    "build_local_corpus": "local_corpus",
    "train_bpe_tokenizer": "tokenizer", "train_tokenizer_from_corpus": "tokenizer",
    "Decontaminator": "decontam",
    "build_train_val": "packing", "PackedTrainStream": "packing", "sampling_weights": "packing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"multipl_moe.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'multipl_moe.data' has no attribute {name!r}")
