"""Text-to-code on XLCoST (`codeparrot/xlcost-text-to-code`), scored with CodeBLEU.

Problems: rows `{text, code}` of a config `{Language}-{snippet|program}-level` (Python, Java,
Javascript, C++, C, Csharp, PHP) and a split (train, validation, test), from a folder laid out
as the hub repository is (`data/{config}/{train,valid,test}.json`, JSON lines; the folder may be
the repository or its `data/`), or from the hub by name.

The code side is one line of space-separated tokens in which `NEW_LINE`, `INDENT` and `DEDENT`
stand for line ends and indentation changes (Python's tokenizer's NEWLINE/INDENT/DEDENT; other
languages mark only the line ends their syntax needs, e.g. after `#include`). Prompts show code
in that encoding (few-shot examples from the train split, then the problem's text), so a
completion ends at the first real newline; completions and references are decoded into real
code before CodeBLEU scores them.

Generation goes through the MultiPL-E backends (`generate.HFBackend`, `generate.OpenAIBackend`)
into a journal `OUT/xlcost-{config}-{split}/generations.jsonl`: a settings line, then one line
per problem, appended and flushed as each chunk finishes, so an interrupted run resumes where it
stopped (a torn last line is dropped). Scores go to `codebleu.jsonl` beside it, which
`multipl-moe report` shows next to pass@k.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import tokenize
from pathlib import Path
from typing import Sequence

from .. import languages as registry
from .codebleu import DEFAULT_WEIGHTS, codebleu
from ..util.tables import markdown_table

LANGUAGES = ("Python", "Java", "Javascript", "C++", "C", "Csharp", "PHP")
LEVELS = ("snippet", "program")
SPLIT_FILES = {"train": "train.json", "validation": "valid.json", "test": "test.json"}
HUB_DATASET = "codeparrot/xlcost-text-to-code"
# registry tag -> XLCoST's name for the language
XLCOST_NAMES = {"py": "Python", "java": "Java", "js": "Javascript", "cpp": "C++", "c": "C",
                "cs": "Csharp", "php": "PHP"}
TEMPLATE = "Text: {text}\n{language}:"
JOURNAL = "generations.jsonl"
SCORES = "codebleu.jsonl"
MARKERS = ("NEW_LINE", "INDENT", "DEDENT")
_MARKER_RE = re.compile(r"(?<!\S)(NEW_LINE|INDENT|DEDENT)(?!\S)")


def parse_langs(spec: str) -> list[str]:
    """`Python,java,cpp` -> XLCoST names; 'all' for the seven. A LanguageError (KeyError,
    UserError) names an unknown one or one XLCoST lacks."""
    return [XLCOST_NAMES[t] for t in registry.parse_langs(spec, within=XLCOST_NAMES, what="--langs")]


def config_name(language: str, level: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unknown XLCoST language {language!r} (choose from {LANGUAGES})")
    if level not in LEVELS:
        raise ValueError(f"unknown XLCoST level {level!r} (choose from {LEVELS})")
    return f"{language}-{level}-level"


# --- the NEW_LINE / INDENT / DEDENT encoding -------------------------------------------------

def decode(code: str, indent: str = "    ") -> str:
    """XLCoST's one-line encoding -> code with real line ends and indentation."""
    lines: list[str] = []
    depth, current = 0, ""
    for i, part in enumerate(_MARKER_RE.split(code)):
        if i % 2 == 0:
            current += part
            continue
        if part == "NEW_LINE":
            if current.strip():
                lines.append(indent * depth + current.strip())
            current = ""
        elif part == "INDENT":
            depth += 1
        else:
            depth = max(0, depth - 1)
    if current.strip():
        lines.append(indent * depth + current.strip())
    return "\n".join(lines) + ("\n" if lines else "")


def encode_python(source: str) -> str:
    """Python source -> XLCoST's encoding (tokens, NEW_LINE, INDENT, DEDENT; comments dropped).
    ValueError where that cannot be one line (a string token spanning lines) or cannot be
    tokenized."""
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NEWLINE:
                out.append("NEW_LINE")
            elif tok.type == tokenize.INDENT:
                out.append("INDENT")
            elif tok.type == tokenize.DEDENT:
                out.append("DEDENT")
            elif tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
                continue
            else:
                if "\n" in tok.string:
                    raise ValueError("a token spans lines (multi-line string)")
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError) as e:
        raise ValueError(f"cannot tokenize: {e}") from None
    return " ".join(out)


def encode(source: str, language: str) -> str:
    """Code -> XLCoST's one-line encoding. Python by its tokenizer; the brace languages as the
    dataset writes them: one line, `NEW_LINE` only after preprocessor lines (`#include`)."""
    if language == "Python":
        return encode_python(source)
    parts = []
    for line in source.splitlines():
        line = line.strip()
        if line:
            parts.append(line + (" NEW_LINE" if line.startswith("#") else ""))
    return " ".join(parts)


# --- problems -----------------------------------------------------------------------------------

def _check_row(row, where: str) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
            or not isinstance(row.get("code"), str):
        raise ValueError(f"{where}: not an XLCoST row (wants string fields `text` and `code`)")
    return {"text": row["text"], "code": row["code"]}


def load_file(path: Path) -> list[dict]:
    """Rows of one split file: JSON lines (the hub repository's files) or one JSON array."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        return [_check_row(r, f"{path} row {i}") for i, r in enumerate(rows)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(_check_row(json.loads(line), f"{path}:{lineno}"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
    return rows


def split_path(data_dir: Path, config: str, split: str) -> Path:
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLIT_FILES)})")
    for folder in (Path(data_dir) / "data" / config, Path(data_dir) / config):
        if folder.is_dir():
            return folder / SPLIT_FILES[split]
    return Path(data_dir) / "data" / config / SPLIT_FILES[split]


def load_hub(config: str, split: str, dataset: str = HUB_DATASET,
             revision: str | None = None) -> list[dict]:
    from datasets import load_dataset  # heavy; only when the hub is used

    ds = load_dataset(dataset, config, revision=revision, split=split)
    return [_check_row(dict(r), f"{dataset} {config} {split} row {i}") for i, r in enumerate(ds)]


def load_rows(language: str, level: str, split: str, data_dir: Path | None = None,
              dataset: str = HUB_DATASET, revision: str | None = None) -> list[dict]:
    config = config_name(language, level)
    if data_dir is None:
        return load_hub(config, split, dataset, revision)
    path = split_path(data_dir, config, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (an XLCoST folder has "
                                f"data/{config}/{SPLIT_FILES.get(split, split)})")
    return load_file(path)


def build_prompt(text: str, language: str, shots: Sequence[dict] = (),
                 template: str = TEMPLATE) -> str:
    """Few-shot examples (text and encoded code), then the problem's text."""
    head = "".join(template.format(text=s["text"], language=language) + " " + s["code"] + "\n\n"
                   for s in shots)
    return head + template.format(text=text, language=language)


def make_problems(rows: Sequence[dict], language: str, shots: Sequence[dict] = (),
                  template: str = TEMPLATE) -> list[dict]:
    """Problems: id, language, text, prompt, reference (decoded), stop tokens."""
    return [{"id": i, "language": language, "text": r["text"],
             "prompt": build_prompt(r["text"], language, shots, template),
             "reference": decode(r["code"]), "stop_tokens": ["\n"]} for i, r in enumerate(rows)]


# --- the journal, generation and scoring --------------------------------------------------------

def read_journal(path: Path, settings: dict) -> dict[int, list[str]]:
    """Completions already generated (id -> texts); ValueError if made with other settings."""
    done: dict[int, list[str]] = {}
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines) - 1:
                break  # torn by an interruption: that problem is generated again
            raise ValueError(f"{path}:{n + 1}: damaged journal line") from None
        if n == 0:
            if rec.get("settings") != settings:
                raise ValueError(f"{path} was generated with other settings "
                                 f"({rec.get('settings')}); use another --out or remove it")
            continue
        done[int(rec["id"])] = list(rec["completions"])
    return done


def _append(path: Path, records: list[dict], header: dict | None) -> None:
    with open(path, "a", encoding="utf-8") as f:
        if header is not None:
            f.write(json.dumps(header) + "\n")
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that an interruption left without its newline."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def generate(problems: list[dict], backend, sampling, folder: Path, settings: dict,
             progress: bool = True, chunk_samples: int = 64) -> dict[int, list[str]]:
    """Completions of every problem (id -> n texts), generating only those not in the journal."""
    from .generate import complete_in_chunks

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOURNAL
    _drop_torn_tail(path)
    done = read_journal(path, settings)
    header = None if path.exists() and path.stat().st_size else {"settings": settings}
    todo = [p for p in problems if p["id"] not in done]
    for chunk, samples in complete_in_chunks(todo, backend, sampling, f"generate {folder.name}",
                                             progress, chunk_samples):
        records = [{"id": p["id"], "text": p["text"], "completions": completions}
                   for p, completions in zip(chunk, samples)]
        _append(path, records, header)
        header = None
        done.update((r["id"], r["completions"]) for r in records)
    return done


def candidate(completion: str) -> str:
    """A completion in the prompt's encoding -> code (the first line only, as the stop token)."""
    return decode(completion.split("\n", 1)[0].strip())


def score(problems: list[dict], completions: dict[int, list[str]], language: str,
          weights: Sequence[float] = DEFAULT_WEIGHTS, empty_dataflow: str = "zero") -> dict:
    """Corpus CodeBLEU over every (reference, sample) pair, with its components."""
    refs, hyps = [], []
    for p in problems:
        for text in completions[p["id"]]:
            refs.append(p["reference"])
            hyps.append(candidate(text))
    result = codebleu(refs, hyps, language, weights=weights, empty_dataflow=empty_dataflow)
    return {"task": "xlcost", "language": language, "problems": len(problems),
            "samples": len(hyps), **result.as_dict()}


def write_scores(folder: Path, record: dict) -> Path:
    from ..util.atomic import write_bytes_atomic
    from ..util.provenance import provenance

    path = Path(folder) / SCORES
    record = {**record, "provenance": provenance()}   # issue 14: what computed these scores
    write_bytes_atomic(path, (json.dumps(record) + "\n").encode())
    return path


def read_scores(root: Path) -> list[dict]:
    """Every CodeBLEU record under `root` (for `multipl-moe report`), sorted by config."""
    rows = []
    for path in sorted(Path(root).rglob(SCORES)):
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rows.append(json.loads(line))
        except (OSError, ValueError):
            continue
    return rows


def scores_table(rows: list[dict]) -> str:
    """Markdown: CodeBLEU and its components per task x language, in percent."""
    head = ["task", "config", "problems", "samples", "CodeBLEU", "n-gram", "weighted n-gram",
            "AST match", "data-flow match", "weights"]
    cells = []
    for r in rows:
        flow = f"{100 * r['dataflow']:.1f}" + ("" if r.get("dataflow_edges") else
                                               " (no edges)")
        cells.append([
            r.get("task", "?"), r.get("config", r.get("language", "?")), r.get("problems"),
            r.get("samples"), f"{100 * r['codebleu']:.1f}", f"{100 * r['ngram']:.1f}",
            f"{100 * r['weighted_ngram']:.1f}", f"{100 * r['syntax']:.1f}", flow,
            "/".join(f"{w:g}" for w in r.get("weights", []))])
    return markdown_table(head, cells)


# --- a docstring -> function set from a Python corpus (the demo's text-to-code stage) ------------

def docstring_problems(corpus_dir: Path, limit: int | None = None,
                       max_code_chars: int = 600) -> list[dict]:
    """Rows `{text, code}` in XLCoST's layout from the functions of `corpus_dir`'s *.py files:
    text = the docstring's first paragraph on one line, code = the function without its docstring,
    encoded. Functions without a docstring, too long, or not encodable on one line are left out."""
    rows = []
    for path in sorted(Path(corpus_dir).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(node.body) < 2:
                continue
            node.body = node.body[1:]
            try:
                code = encode_python(ast.unparse(node))
            except ValueError:
                continue
            text = " ".join(doc.strip().split("\n\n")[0].split())
            if text and len(code) <= max_code_chars:
                rows.append({"text": text, "code": code})
            if limit and len(rows) >= limit:
                return rows
    return rows


def text_to_code_codebleu(rows: list[dict], backend, sampling, out_dir: Path,
                          language: str = "Python", shots: int = 2,
                          weights: Sequence[float] = DEFAULT_WEIGHTS, progress: bool = False,
                          settings: dict | None = None) -> dict:
    """Generate and score a small text-to-code set (e.g. `docstring_problems`): the first
    `shots` rows are the prompt's examples, the rest are scored. Returns the CodeBLEU record
    (also written to OUT_DIR/codebleu.jsonl)."""
    if len(rows) <= shots:
        raise ValueError(f"{len(rows)} rows leave nothing to score after {shots} examples")
    problems = make_problems(rows[shots:], language, rows[:shots])
    settings = {"language": language, "shots": shots, "template": TEMPLATE,
                "n": sampling.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed,
                **(settings or {})}
    completions = generate(problems, backend, sampling, Path(out_dir), settings, progress)
    record = score(problems, completions, language, weights)
    record["config"] = f"{language}-docstring"
    write_scores(Path(out_dir), record)
    return record
