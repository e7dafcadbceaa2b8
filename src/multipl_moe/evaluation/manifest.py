"""What produced an eval output folder, so that completions are reused only for the very same run.

`multipl-moe eval` resumes: completion files already in `--out` are not generated again. That is
only right when they came from the same model, the same generation settings and the same problems.
So the folder holds `eval-run.json`:

- `key`: what must match for reuse: the model (the SHA-256 of every file of the checkpoint folder,
  weights, config, tokenizer and remote code alike; or the server URL and served name), the
  generation settings (n, temperature, top_p, max_new_tokens, seed, dtype) and the MultiPL-E
  version;
- `runs`: one entry per eval run on the folder: when it started, the code and library versions
  (`util.provenance`), and per benchmark-language how many problems it generated and how many it
  reused; so a summary can say which figures this run computed and which came from when.

Each problem is checked too: a completion file is reused only if its prompt, tests, stop tokens and
language are those of the problem now loaded (another `--data-dir`, or `latest` fixes, change them).

Why a full hash and not file sizes and times: a retrained checkpoint has the same sizes, and a
byte-identical one written again (the demo after an interrupt) has new times. Hashing runs at about
0.5 GB/s per core, so a 7B bf16 checkpoint costs ~30 s once; the manifest remembers each file's
(size, mtime_ns) beside its hash, and a file whose stat is unchanged is not read again (the rule
git's index uses).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..util.provenance import provenance
from . import formats

MANIFEST = "eval-run.json"
KIND = "multipl-moe eval"
_PROBLEM_KEYS = ("language", "prompt", "tests", "stop_tokens")
# Files of a checkpoint that change no completion: its provenance note (a time in it would make
# a byte-identical model written again look like another one).
NOT_MODEL = {"multipl_moe_provenance.json", "README.md"}


class ReuseMismatch(UserError):
    """The output folder holds another run's completions."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(model_dir: Path, known: dict | None = None) -> dict[str, dict]:
    """{file name: {size, mtime_ns, sha256}} for the regular files at the top of `model_dir`
    (a Hugging Face checkpoint keeps everything there); hashes in `known` are reused for files
    whose size and mtime_ns are unchanged."""
    known = known or {}
    files = {}
    for entry in sorted(os.scandir(model_dir), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in NOT_MODEL or not entry.is_file():
            continue
        st = entry.stat()
        old = known.get(entry.name)
        if isinstance(old, dict) and old.get("size") == st.st_size and \
                old.get("mtime_ns") == st.st_mtime_ns and isinstance(old.get("sha256"), str):
            digest = old["sha256"]
        else:
            digest = _sha256(Path(entry.path))
        files[entry.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return files


def files_digest(files: dict[str, dict]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]['sha256']}\n".encode())
    return h.hexdigest()


def default_out(model: str, server: str | None = None) -> Path:
    """`runs/eval/<parent>-<name>-<8 hex>`: unique per model. The hex is of the absolute path
    (or of the server URL and model name), so `runs/a/final` and `runs/b/final` never share a
    folder; a checkpoint retrained in place keeps its folder, and its new weights are caught by
    the manifest's key."""
    if server:
        ident = f"{server.rstrip('/')}\0{model}"
        stem = re.sub(r"[^A-Za-z0-9_.+-]+", "-", model).strip("-.") or "model"
    else:
        path = Path(model).resolve()
        ident = str(path)
        stem = "-".join(p for p in (path.parent.name, path.name) if p)
    return Path("runs/eval") / f"{stem[:80]}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"


def read(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        data = formats.read_json(path)
    except formats.READ_ERRORS as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}); pass --fresh to start the "
                        "folder over, or choose another --out") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("key"), dict):
        raise UserError(f"{path} is not an eval record of multipl-moe; pass --fresh to start the "
                        "folder over, or choose another --out")
    return data


def model_record(model: str, server: str | None, known: dict | None = None) -> tuple[dict, dict]:
    """(the model's part of the key, what is recorded beside it)."""
    if server:
        return ({"server": server.rstrip("/"), "name": model},
                {"server": server.rstrip("/"), "name": model})
    path = Path(model).resolve()
    files = checkpoint_files(path, (known or {}).get("files"))
    return {"sha256": files_digest(files)}, {"path": str(path), "files": files}


def generation_key(sampling, dtype: str | None) -> dict:
    return {"n": sampling.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed, "dtype": dtype}


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            if k == "sha256":
                a, b = (str(a)[:12] if a else a), (str(b)[:12] if b else b)
                what = "model files (sha256)"
            else:
                what = f"{prefix}{k}"
            diffs.append(f"{what} {a} -> {b}")
    return diffs


def _has_eval_files(out: Path) -> bool:
    """Completion or results files where eval puts them (`<benchmark>-<lang>/`)."""
    return any(formats.completion_files(p) or formats.results_files(p) for p in out.iterdir()
               if p.is_dir() and _STAGE_FOLDER.fullmatch(p.name))


@dataclass
class Prepared:
    """An output folder checked for this run; `finish` records what the run generated."""
    out: Path
    record: dict
    reused: dict[str, int] = field(default_factory=dict)     # "bench-lang" -> problems reused
    earlier: list[dict] = field(default_factory=list)        # the runs whose files are reused

    def finish(self, generated: dict[str, int]) -> None:
        self.record["runs"][-1]["generated"] = generated
        self.record["runs"][-1]["finished"] = _now()
        formats.write_json_atomic(self.out / MANIFEST, self.record, indent=2)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _check_problems(folder: Path, rows: list[dict]) -> list[str]:
    """Names of problems whose completion file was made from another version of the problem."""
    stale = []
    for row in rows:
        path = folder / f"{row['name']}.json.gz"
        try:
            done = formats.read_json(path)
        except formats.READ_ERRORS:
            continue   # missing or damaged: generated again anyway
        if isinstance(done, dict) and any(done.get(k) != row.get(k) for k in _PROBLEM_KEYS):
            stale.append(row["name"])
    return stale


def prepare(out: Path, *, model: str, server: str | None, sampling, dtype: str | None,
            data: dict, work: list[tuple[str, str, list[dict]]], fresh: bool = False) -> Prepared:
    """Check that `out` is empty, or holds this very run's files (else ReuseMismatch naming what
    differs); with `fresh`, first delete our files from it. Writes the manifest for this run."""
    out = Path(out)
    if fresh:
        remove_outputs(out)
    old = read(out) if out.exists() else None
    model_key, model_info = model_record(model, server, (old or {}).get("model"))
    key = {"model": model_key, "generation": generation_key(sampling, dtype),
           "data": {"version": data.get("version")}}
    how = f"pass --fresh to delete them and start over, or choose another --out than {out}"
    if old is None and out.exists() and _has_eval_files(out):
        raise ReuseMismatch(f"{out} holds completions or results that do not say what produced them "
                            f"(an older multipl-moe, or another tool); {how}")
    if old is not None:
        diffs = _differences(old["key"], key)
        was, now = (old.get("model") or {}).get("path"), model_info.get("path")
        if was and now:   # name the checkpoints, not only their hashes
            diffs = [d.replace("model files (sha256)", f"model files (sha256 of {was} then, of {now} now)")
                     for d in diffs]
        if diffs:
            raise ReuseMismatch(f"{out} holds completions of another run ({'; '.join(diffs)}); {how}")
    for bench, lang, rows in work:
        stale = _check_problems(out / f"{bench}-{lang}", rows)
        if stale:
            raise ReuseMismatch(f"{out / f'{bench}-{lang}'}: {len(stale)} completion files were made "
                                f"from other versions of their problems (e.g. {stale[0]}: another "
                                f"--data-dir or --data-version); {how}")
    earlier = list((old or {}).get("runs", []))
    record = {"kind": KIND, "key": key, "model": model_info, "data": data,
              "runs": earlier + [{"started": _now(), "provenance": provenance()}]}
    out.mkdir(parents=True, exist_ok=True)
    formats.write_json_atomic(out / MANIFEST, record, indent=2)
    return Prepared(out, record, earlier=earlier)


# Files an eval run writes at the top of its folder; --fresh removes these and the contents of
# the benchmark-language folders, nothing else (an --out pointed at the wrong folder by mistake
# must not lose the user's own JSON files).
_OURS_AT_ROOT = ("passk.md", "passk.png", "execution.json", MANIFEST)
_STAGE_FOLDER = re.compile(r"(humaneval|mbpp)-[a-z]+")


def _our_summary(path: Path) -> bool:
    try:
        data = formats.read_json(path)
    except formats.READ_ERRORS:
        return False
    return isinstance(data, dict) and isinstance(data.get("results"), list) and "root" in data


def remove_outputs(out: Path) -> int:
    """Delete what eval/execute wrote in `out`: its top-level records (manifest, execution record,
    our summary, table and chart) and the completion, results and partial files of the
    `<benchmark>-<lang>/` folders; folders left empty go too. Returns the number of files removed."""
    out = Path(out)
    if not out.exists():
        return 0
    if not out.is_dir():
        raise UserError(f"--out {out} is not a directory")
    victims = {out / n for n in _OURS_AT_ROOT if (out / n).is_file()}
    if (out / "summary.json").is_file() and _our_summary(out / "summary.json"):
        victims.add(out / "summary.json")
    stages = [p for p in out.iterdir() if p.is_dir() and _STAGE_FOLDER.fullmatch(p.name)]
    for folder in stages:
        victims |= set(formats.completion_files(folder)) | set(formats.results_files(folder))
        victims |= set(folder.glob(f"*{formats.PARTIAL_SUFFIX}"))
        victims |= {folder / "execution.json"} if (folder / "execution.json").is_file() else set()
    for path in sorted(victims):
        path.unlink(missing_ok=True)
    for folder in stages:
        try:
            folder.rmdir()
        except OSError:
            pass   # not empty: something that is not ours lives there
    return len(victims)


def reuse_note(prepared: Prepared, generated: dict[str, int]) -> dict:
    """For the summary: per benchmark-language, how many problems this run generated and how
    many it reused, and the start times of the earlier runs those came from."""
    reused = {k: v for k, v in prepared.reused.items() if v}
    return {"generated": generated, "reused": reused,
            "reused_from": [r.get("started") for r in prepared.earlier] if reused else []}


def data_record(args) -> dict:
    """Where the problems came from (recorded; the key holds the version, and each completion
    file is checked against its problem)."""
    source = (str(Path(args.data_dir).resolve()) if args.data_dir is not None
              else f"hub {args.dataset}" + (f"@{args.revision}" if args.revision else ""))
    return {"version": args.data_version, "source": source}


def describe(prepared: Prepared, generated: dict[str, int]) -> str:
    """One line: how many problems this run generated, and which it reused from which run."""
    made = sum(generated.values())
    reused = sum(v for v in prepared.reused.values() if v)
    if not reused:
        return f"completions: {made} problems generated now"
    when = [r.get("started") for r in prepared.earlier if r.get("generated")] or \
        [r.get("started") for r in prepared.earlier]
    span = when[0] if len(set(when)) == 1 else f"{when[0]} .. {when[-1]}"
    return (f"completions: {made} problems generated now, {reused} reused from the same model and "
            f"settings (eval run{'s' if len(set(when)) > 1 else ''} of {span}; recorded in "
            f"{prepared.out / MANIFEST})")
