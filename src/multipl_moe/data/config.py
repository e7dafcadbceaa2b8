"""The data configuration the training config nests, validated at construction.

Every field is checked in `__post_init__`, so that a bad value fails early with a message that
names the field (`data.seq_len = 0: must be an integer >= 2`). Errors are `DataError`, which is a
`multipl_moe.errors.UserError`: any command that builds data reports them as one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from multipl_moe.config import check, load
from multipl_moe.errors import UserError
from multipl_moe.languages import LANGUAGES, normalize_lang, parse_langs


class DataError(UserError, ValueError):
    """Bad data input or configuration (including an attempt to train on MultiPL-E)."""


def _check(cond: bool, name: str, value: Any, why: str) -> None:
    check(cond, f"data.{name}", value, why, DataError)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _tag(name: str, value: Any) -> str:
    tag = normalize_lang(value)
    _check(tag is not None, name, value, f"unknown language; known tags: {' '.join(LANGUAGES)}")
    return tag


@dataclass
class DataConfig:
    """Where the training text comes from and how it becomes fixed-length blocks."""

    sources: list[str] | str = field(default_factory=list)
    """Inputs: JSONL (.jsonl, .jsonl.gz, .json) or Parquet files, folders of them (or of source
    files, labelled by extension), datasets saved with `save_to_disk`, or Hugging Face hub names,
    optionally with query options: `bigcode/the-stack-smol?data_dir=data/rust&split=train`."""
    text_field: str = "content"
    """Row field holding the document text (The Stack: `content`)."""
    lang_field: str = "lang"
    """Row field holding the language (a tag or a name such as `Python`, `C++`); when it is
    missing or unknown the language is inferred from the path field's extension."""
    path_field: str | None = None
    """Row field holding a file path; None tries `path`, `max_stars_repo_path`, `file_path`."""
    split: str = "train"
    """Split read from hub datasets and saved `DatasetDict`s."""
    languages: list[str] | str | None = None
    """Keep only these languages (tags, names, or the groups `high` = py java cpp and `low` =
    rs go rb lua jl ml r rkt); None keeps every known language found."""
    seq_len: int = 1024
    """Tokens per packed block (the released training code: 1024)."""
    sampling_weights: dict[str, float] | None = None
    """Explicit per-language sampling probabilities (normalised; languages left out get 0).
    None: temperature sampling from the training token counts."""
    sampling_temperature: float = 1.0
    """T in p_l ∝ n_l^(1/T): 1 samples in proportion to size, larger T flattens towards uniform."""
    val_fraction: float = 0.01
    """Share of documents held out for validation, chosen per document by a hash of its text."""
    val_max_blocks_per_lang: int | None = 256
    """Cap on validation blocks kept per language (bounds memory when streaming); None: no cap."""
    max_doc_bytes: int | None = None
    """Skip (and count) documents whose UTF-8 text is longer than this; None: no limit."""
    decontaminate: bool = False
    """Drop documents sharing a long n-gram with a MultiPL-E / HumanEval / MBPP prompt or test."""
    decontam_dir: str | None = None
    """Folder of MultiPL-E JSONL files; None finds `shared/data/multipl-e` or `$MULTIPL_E_DIR`."""
    decontam_ngram: int = 13
    """n, in whitespace-separated tokens, of the overlap that marks a document as contaminated."""
    streaming: bool = False
    """Read, tokenise and pack on the fly, one reader per language (for corpora larger than
    memory); False tokenises everything once and keeps the packed blocks in memory."""
    shuffle_buffer: int = 1024
    """Blocks held in the shuffle buffer of each language when streaming; 0 or 1: no shuffle."""
    seed: int = 0
    """Seed of the train/validation split (and of the training order unless `shuffle_seed` is set)."""
    shuffle_seed: int | None = None
    """Seed of the language sampler and of the block shuffles. The trainer sets it to the run's
    `seed` when left unset, so runs with different seeds see different orders but are all scored
    on the same held-out documents."""

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        _check(isinstance(self.sources, (list, tuple))
               and all(isinstance(s, str) and s for s in self.sources),
               "sources", self.sources, "must be a list of paths or hub dataset names")
        self.sources = list(self.sources)
        for name in ("text_field", "lang_field", "split"):
            value = getattr(self, name)
            _check(isinstance(value, str) and value != "", name, value, "must be a non-empty string")
        _check(self.path_field is None or (isinstance(self.path_field, str) and self.path_field),
               "path_field", self.path_field, "must be a field name or null")
        if self.languages is not None:
            _check(isinstance(self.languages, (str, list, tuple)) and len(self.languages) > 0,
                   "languages", self.languages, "must be a non-empty list of language tags or null")
            try:
                self.languages = parse_langs(self.languages)
            except ValueError as e:
                raise DataError(f"data.languages = {self.languages!r}: {e}") from None
        _check(_is_int(self.seq_len) and self.seq_len >= 2, "seq_len", self.seq_len,
               "must be an integer >= 2")
        if self.sampling_weights is not None:
            _check(isinstance(self.sampling_weights, dict) and len(self.sampling_weights) > 0,
                   "sampling_weights", self.sampling_weights,
                   "must be a mapping language -> weight, or null for temperature sampling")
            weights: dict[str, float] = {}
            for k, v in self.sampling_weights.items():
                tag = _tag("sampling_weights", k)
                _check(_is_num(v) and v >= 0 and v == v and v != float("inf"),
                       f"sampling_weights.{k}", v, "must be a finite number >= 0")
                weights[tag] = float(v)
            _check(sum(weights.values()) > 0, "sampling_weights", self.sampling_weights,
                   "at least one weight must be > 0")
            self.sampling_weights = weights
        _check(_is_num(self.sampling_temperature) and 0 < self.sampling_temperature < float("inf"),
               "sampling_temperature", self.sampling_temperature, "must be a number > 0")
        _check(_is_num(self.val_fraction) and 0 <= self.val_fraction < 1, "val_fraction",
               self.val_fraction, "must be a number in [0, 1)")
        _check(self.val_max_blocks_per_lang is None
               or (_is_int(self.val_max_blocks_per_lang) and self.val_max_blocks_per_lang >= 0),
               "val_max_blocks_per_lang", self.val_max_blocks_per_lang,
               "must be an integer >= 0 or null")
        _check(self.max_doc_bytes is None or (_is_int(self.max_doc_bytes) and self.max_doc_bytes > 0),
               "max_doc_bytes", self.max_doc_bytes, "must be an integer > 0 or null")
        for name in ("decontaminate", "streaming"):
            _check(isinstance(getattr(self, name), bool), name, getattr(self, name),
                   "must be true or false")
        _check(self.decontam_dir is None or isinstance(self.decontam_dir, str), "decontam_dir",
               self.decontam_dir, "must be a folder path or null")
        _check(_is_int(self.decontam_ngram) and self.decontam_ngram >= 1, "decontam_ngram",
               self.decontam_ngram, "must be an integer >= 1")
        _check(_is_int(self.shuffle_buffer) and self.shuffle_buffer >= 0, "shuffle_buffer",
               self.shuffle_buffer, "must be an integer >= 0")
        _check(_is_int(self.seed), "seed", self.seed, "must be an integer")
        _check(self.shuffle_seed is None or _is_int(self.shuffle_seed), "shuffle_seed", self.shuffle_seed,
               "must be an integer or null")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DataConfig":
        return load(cls, [dict(d or {})], error=DataError)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
