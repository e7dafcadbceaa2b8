"""Read training documents from files, folders, saved datasets or the Hugging Face hub.

Every input becomes a stream of `Document(id, lang, text)`; nothing is loaded whole (JSONL is read
line by line, Parquet by record batches, saved datasets are memory-mapped, hub datasets stream).
Rows that cannot be used are counted in a `SourceReport` rather than stopping the run: rows with
an unknown language, with empty text, with text that is not valid UTF-8 (or a line that is not
JSON), and documents over the size limit.

MultiPL-E is never training data (its license forbids it: shared/data/multipl-e/SOURCE.md).
Reading it is refused with a `DataError` when the input lies under a `multipl-e` folder, names the
`nuprl/MultiPL-E` hub dataset, or has MultiPL-E's schema (`prompt`, `tests`, `stop_tokens`).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl

from multipl_moe.data.config import DataConfig, DataError
from multipl_moe.languages import EXTENSIONS, lang_from_path, normalize_lang, sort_langs

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
PATH_FIELDS = ("path", "max_stars_repo_path", "file_path", "filename", "ext", "extension")
MULTIPL_E_FIELDS = frozenset({"prompt", "tests", "stop_tokens"})
_MULTIPL_E_DIRS = {"multipl-e", "multipl_e", "multiple-e"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SKIP_DIRS = {"__pycache__", "node_modules"}


@dataclass(frozen=True)
class Document:
    id: str
    """Stable id: the input's name and the row's id, path or line number."""
    lang: str
    text: str


@dataclass
class SourceReport:
    """What was read: documents and UTF-8 bytes per language, and what was skipped and why."""

    docs: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    unknown_lang: Counter = field(default_factory=Counter)
    """Skipped: language label (or extension) -> rows; `?` when there was neither."""
    other_lang: Counter = field(default_factory=Counter)
    """Skipped: known languages left out by the `languages` option."""
    empty: int = 0
    undecodable: int = 0
    too_large: int = 0
    fields: tuple[str, ...] = ()
    """Fields of the first row read (to explain a wrong `text_field`)."""

    def add(self, other: "SourceReport") -> None:
        self.docs.update(other.docs)
        self.bytes.update(other.bytes)
        self.unknown_lang.update(other.unknown_lang)
        self.other_lang.update(other.other_lang)
        self.empty += other.empty
        self.undecodable += other.undecodable
        self.too_large += other.too_large
        self.fields = self.fields or other.fields

    def skipped_lines(self) -> list[str]:
        out = []
        if self.unknown_lang:
            top = ", ".join(f"{k} {v}" for k, v in self.unknown_lang.most_common(8))
            out.append(f"skipped, unknown language: {sum(self.unknown_lang.values())} ({top})")
        if self.other_lang:
            top = ", ".join(f"{k} {v}" for k, v in sorted(self.other_lang.items()))
            out.append(f"skipped, language not selected: {sum(self.other_lang.values())} ({top})")
        for name in ("empty", "undecodable", "too_large"):
            if getattr(self, name):
                out.append(f"skipped, {name.replace('_', ' ')}: {getattr(self, name)}")
        return out

    def table(self) -> str:
        from multipl_moe.languages import LANGUAGES, resource_group

        rows = [f"{'lang':<6} {'name':<11} {'group':<6} {'docs':>8} {'bytes':>13}"]
        for lang in sort_langs(self.docs):
            rows.append(f"{lang:<6} {LANGUAGES.get(lang, lang):<11} {resource_group(lang):<6} "
                        f"{self.docs[lang]:>8} {self.bytes[lang]:>13,}")
        rows.append(f"{'total':<6} {'':<11} {'':<6} {sum(self.docs.values()):>8} "
                    f"{sum(self.bytes.values()):>13,}")
        return "\n".join(rows + self.skipped_lines())


# ---------------------------------------------------------------------------------------------
# MultiPL-E refusal

def _refuse(where: str) -> None:
    raise DataError(f"refusing to use MultiPL-E data as training data ({where}): its license "
                    "forbids training on it; it is for evaluation only")


def check_not_multipl_e(spec: str) -> None:
    """Raise `DataError` if an input names MultiPL-E by path or by hub name."""
    base = spec.split("?", 1)[0]
    exists = os.path.exists(spec) or os.path.exists(base)
    if not exists and _HUB_NAME.match(base) and "multipl-e" in base.lower():
        _refuse(f"hub dataset {base}")
    parts = {p.lower() for p in Path(base).parts}
    if exists:
        parts |= {p.lower() for p in Path(base).resolve().parts}
    if parts & _MULTIPL_E_DIRS:
        _refuse(f"{spec} lies under a multipl-e folder")


def _check_fields(names: Iterable[str], where: str) -> None:
    if MULTIPL_E_FIELDS <= set(names):
        _refuse(f"{where} has MultiPL-E's fields {', '.join(sorted(MULTIPL_E_FIELDS))}")


# ---------------------------------------------------------------------------------------------
# raw rows: (row id, row dict) or (row id, None) for an undecodable row

_UNDECODABLE = None


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _iter_json_rows(path: Path) -> Iterator[tuple[str, dict | None]]:
    with _open_maybe_gz(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):  # a JSON array rather than JSON lines
        with _open_maybe_gz(path) as f:
            try:
                rows = json.load(io.TextIOWrapper(f, encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DataError(f"{path}: not valid JSON ({e})") from None
        for i, row in enumerate(rows):
            yield str(i), row if isinstance(row, dict) else _UNDECODABLE
        return
    with _open_maybe_gz(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield str(i), _UNDECODABLE
                continue
            yield str(i), row if isinstance(row, dict) else _UNDECODABLE


def _iter_parquet_rows(path: Path, wanted: set[str]) -> Iterator[tuple[str, dict | None]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    _check_fields(names, str(path))
    columns = [c for c in names if c in wanted] or None
    i = 0
    for batch in pf.iter_batches(batch_size=512, columns=columns):
        for row in batch.to_pylist():
            yield str(i), row
            i += 1


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists()
                              or ((path / "state.json").exists()
                                  and (path / "dataset_info.json").exists()))


def _iter_saved_dataset(path: Path, split: str, wanted: set[str]) -> Iterator[tuple[str, dict]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r} (has {', '.join(ds)}); set data.split")
        ds = ds[split]
    _check_fields(ds.column_names, str(path))
    keep = [c for c in ds.column_names if c in wanted]
    ds = ds.select_columns(keep) if keep else ds
    for i, row in enumerate(ds):
        yield str(i), row


def _iter_hub(name: str, options: dict[str, str], split: str,
              wanted: set[str]) -> Iterator[tuple[str, dict]]:
    import datasets

    options = dict(options)
    split = options.pop("split", split)
    config = options.pop("name", None)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True, **options)
    except Exception as e:  # network, missing dataset, gated access: one line for the user
        raise DataError(f"cannot open hub dataset {name!r}: {type(e).__name__}: {e}") from None
    names = list(ds.features) if getattr(ds, "features", None) else []
    _check_fields(names, f"hub dataset {name}")
    for i, row in enumerate(ds):
        yield str(i), row


def _walk(root: Path) -> Iterator[Path]:
    """Files under root, sorted, skipping hidden entries and caches (deterministic order)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _is_data_file(p: Path) -> bool:
    return p.name.lower().endswith(DATA_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# documents

def _lang_of(row: dict, lang_field: str, path_fields: tuple[str, ...]) -> tuple[str | None, str]:
    """(tag or None, the label to report when unknown)."""
    raw = row.get(lang_field)
    tag = normalize_lang(raw)
    if tag:
        return tag, ""
    for name in path_fields:
        value = row.get(name)
        if isinstance(value, str) and value:
            tag = lang_from_path(value) or EXTENSIONS.get(value.lstrip(".").lower())
            if tag:
                return tag, ""
            if raw is None:
                raw = Path(value).suffix or value[-12:]
    return None, str(raw) if raw not in (None, "") else "?"


def iter_documents(sources: Iterable[str], *, text_field: str = "content", lang_field: str = "lang",
                   path_field: str | None = None, split: str = "train",
                   languages: Iterable[str] | None = None, max_doc_bytes: int | None = None,
                   report: SourceReport | None = None) -> Iterator[Document]:
    """Documents of the known languages (only `languages` if given), in input order.

    Skipped rows are counted in `report`. Raises `DataError` for an input that does not exist or
    that is MultiPL-E.
    """
    report = report if report is not None else SourceReport()
    keep = set(languages) if languages is not None else None
    path_fields = (path_field,) if path_field else PATH_FIELDS
    wanted = {text_field, lang_field, *path_fields, "id"}

    def from_rows(tag: str, rows: Iterable[tuple[str, dict | None]]) -> Iterator[Document]:
        for rid, row in rows:
            if row is None:
                report.undecodable += 1
                continue
            if not report.fields:
                report.fields = tuple(row)
            if "stop_tokens" in row and "tests" in row and "prompt" in row:
                _check_fields(row, tag)
            text = row.get(text_field)
            if isinstance(text, (bytes, bytearray)):
                try:
                    text = bytes(text).decode("utf-8")
                except UnicodeDecodeError:
                    report.undecodable += 1
                    continue
            if not isinstance(text, str) or not text.strip():
                report.empty += 1
                continue
            lang, label = _lang_of(row, lang_field, path_fields)
            if lang is None:
                report.unknown_lang[label] += 1
                continue
            if keep is not None and lang not in keep:
                report.other_lang[lang] += 1
                continue
            size = len(text.encode("utf-8"))
            if max_doc_bytes is not None and size > max_doc_bytes:
                report.too_large += 1
                continue
            report.docs[lang] += 1
            report.bytes[lang] += size
            yield Document(f"{tag}:{row.get('id', rid)}", lang, text)

    def source_files(root: Path, files: Iterable[Path]) -> Iterator[Document]:
        for p in files:
            rel = p.relative_to(root).as_posix() if p != root else p.name
            lang = lang_from_path(p.name)
            if lang is None:
                report.unknown_lang[p.suffix or "?"] += 1
                continue
            if keep is not None and lang not in keep:
                report.other_lang[lang] += 1
                continue
            row: dict[str, Any] = {"id": rel, text_field: p.read_bytes(), lang_field: lang}
            if b"\x00" in row[text_field]:
                report.undecodable += 1
                continue
            yield from from_rows(root.name, [(rel, row)])

    for spec in sources:
        check_not_multipl_e(spec)
        base, _, query = spec.partition("?")
        path = Path(spec) if os.path.exists(spec) else Path(base)
        if path.exists():
            if _is_saved_dataset(path):
                yield from from_rows(path.name, _iter_saved_dataset(path, split, wanted))
            elif path.is_dir():
                files = list(_walk(path))
                data = [p for p in files if _is_data_file(p)]
                if data:
                    for p in data:
                        check_not_multipl_e(str(p))
                        yield from _file_docs(p, path, from_rows, wanted)
                else:
                    yield from source_files(path, files)
            elif _is_data_file(path):
                yield from _file_docs(path, path.parent, from_rows, wanted)
            else:
                yield from source_files(path, [path])
        elif _HUB_NAME.match(base) and "/" in base:
            options = dict(parse_qsl(query))
            yield from from_rows(base, _iter_hub(base, options, split, wanted))
        else:
            raise DataError(f"data source {spec!r}: no such file or folder, "
                            "and not a hub dataset name (owner/name)")


def _file_docs(p: Path, root: Path, from_rows, wanted: set[str]) -> Iterator[Document]:
    tag = p.relative_to(root).as_posix() if p != root else p.name
    if p.name.lower().endswith(".parquet"):
        yield from from_rows(tag, _iter_parquet_rows(p, wanted))
    else:
        yield from from_rows(tag, _iter_json_rows(p))


def documents_from_config(cfg: DataConfig, languages: Iterable[str] | None = None,
                          report: SourceReport | None = None) -> Iterator[Document]:
    """`iter_documents` with a `DataConfig`'s fields (`languages` narrows cfg.languages)."""
    langs = cfg.languages
    if languages is not None:
        langs = [x for x in languages if langs is None or x in langs]
    return iter_documents(cfg.sources, text_field=cfg.text_field, lang_field=cfg.lang_field,
                          path_field=cfg.path_field, split=cfg.split, languages=langs,
                          max_doc_bytes=cfg.max_doc_bytes, report=report)
