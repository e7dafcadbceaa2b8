"""The demo's merge stage: per-language dense fine-tunes of the demo's base, merged three ways, and
compared with the base and with each other by held-out test loss per language and by CodeBLEU on a
docstring -> function set built from the demo's own Python test split.

The three merges (all with `hidden_avg` gates computed from training-split text of each language):
- the plain-transformers MoE the base allows (`Qwen2MoeForCausalLM` for a Qwen2 base, `Mixtral` for
  a Llama/Mistral one) with the base's attention, norms and embeddings, as mergekit writes it;
- the same with those non-expert weights averaged over the fine-tunes (dense fine-tunes move them
  too, so experts paired with the base's attention see inputs they were not trained on);
- the MultiPL-MoE hybrid (Branch-Train-MiX style), non-expert weights averaged, untrained after the
  merge, as `multipl-moe train` would start from it.

Every step is reused when its output exists: the fine-tunes (by their final checkpoint), the merges,
the held-out losses and the CodeBLEU journals; the demo's settings stamp makes sure the folder was
made with the same settings and code.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import textwrap
import time
from pathlib import Path

from .common import log as demo_log

SECTION = "merge.md"
RESULTS = "merge_results.json"
STOPS = ("\ndef", "\n#", "\nif", "\nclass", "\nprint", "\n@")
"""MultiPL-E's Python stop sequences (and a top-level print or decorator): the body ends there."""
QUOTES = '"' * 3


def merge_plan(model_type: str) -> dict[str, dict]:
    """Row name -> merge overrides. Mixtral's attention has no q/k/v biases and Qwen2's has, so a
    Qwen2 base (the demo's) cannot be a Mixtral and gets Qwen MoE."""
    plain = "mixtral" if model_type in ("llama", "mistral") else "qwen"
    name = "Mixtral" if plain == "mixtral" else "Qwen2-MoE"
    return {f"{name} (base attention)": {"architecture": plain, "non_expert": "base"},
            f"{name} (averaged attention)": {"architecture": plain, "non_expert": "average"},
            "MultiPL-MoE hybrid (untrained)": {"architecture": "multipl-moe", "non_expert": "average"}}


def gate_prompts(train_file: Path, lang: str, count: int = 4, chars: int = 400) -> list[str]:
    """The first `count` training documents of `lang`, cut to `chars` characters: the text whose
    hidden states point each expert's router row at its language (never the test split)."""
    out = []
    with open(train_file, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["lang"] == lang and row["content"].strip():
                out.append(row["content"][:chars])
                if len(out) >= count:
                    break
    return out


def python_functions(texts: list[str]) -> list[str]:
    """Every top-level or nested `def` in `texts` that parses on its own, as source. The demo's
    documents are files cut at line ends, so most do not parse whole; each function is taken from
    its `def` line through the lines indented deeper, dedented, and kept if it parses."""
    found = []
    for text in texts:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            stripped = line.lstrip()
            if not (stripped.startswith("def ") or stripped.startswith("async def ")):
                continue
            indent = len(line) - len(stripped)
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            source = textwrap.dedent("\n".join(lines[i:j])).rstrip() + "\n"
            try:
                ast.parse(source)
            except (SyntaxError, ValueError):
                continue
            found.append(source)
    return found


def docstring_set(test_file: Path, folder: Path, limit: int, fits=None) -> list[dict]:
    """Docstring -> function problems from the functions with docstrings in the Python test split
    (held out from every fine-tune), at most `limit`: {id, text, prompt, reference, stop_tokens}.

    The prompt is the function's signature and its docstring's first paragraph, the reference its
    body, as HumanEval asks. XLCoST's own prompt (`Text: ... Python:` and one-line code with
    NEW_LINE/INDENT markers) gave an empty completion from every demo model (CodeBLEU 0.0 for all,
    measured): they were trained on plain code and never saw that encoding. `fits(prompt)` drops
    prompts too long for the model's context."""
    from ..evaluation.xlcost import decode, docstring_problems

    texts = []
    with open(test_file, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["lang"] == "py":
                texts.append(row["content"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, source in enumerate(python_functions(texts)):
        (folder / f"f{i:05d}.py").write_text(source, encoding="utf-8")
    seen, rows = set(), []
    for row in docstring_problems(folder):
        lines = decode(row["code"]).splitlines()
        head = next(i for i, line in enumerate(lines) if line.startswith(("def ", "async def ")))
        body = textwrap.dedent("\n".join(lines[head + 1:])).strip()
        text = row["text"].replace(QUOTES, "'" * 3)
        prompt = "\n".join(lines[:head + 1]) + f"\n    {QUOTES}{text}{QUOTES}\n"
        if not body or prompt in seen or (fits is not None and not fits(prompt)):
            continue
        seen.add(prompt)
        rows.append({"id": len(rows), "language": "Python", "text": row["text"], "prompt": prompt,
                     "reference": body, "stop_tokens": list(STOPS)})
        if len(rows) >= limit:
            break
    return rows


def codebleu_of(problems: list[dict], backend, sampling, folder: Path, settings: dict) -> dict:
    """Generate (a resumable journal) and score the completed bodies against the references."""
    from ..evaluation.codebleu import codebleu
    from ..evaluation.xlcost import generate

    completions = generate(problems, backend, sampling, folder, settings, progress=False)
    refs = [p["reference"] for p in problems for _ in completions[p["id"]]]
    hyps = [textwrap.dedent(text).strip() for p in problems for text in completions[p["id"]]]
    return codebleu(refs, hyps, "Python").as_dict()


def run_merge_stage(out: Path, base: Path, train_file: Path, test_file: Path, langs: list[str], size,
                    steps: int, lr: float, seed: int = 0, problems: int = 20, max_new_tokens: int = 48,
                    log=demo_log) -> dict:
    """Fine-tune `base` on each of `langs` alone (dense, `steps` steps at `lr`), merge the fine-tunes
    three ways, and measure the base, every fine-tune and every merge. Returns the results (also in
    OUT/merge_results.json, with the Markdown section in OUT/merge.md)."""
    import torch
    from transformers import AutoConfig

    from ..evaluation.generate import HFBackend, Sampling
    from ..merge.build import merge
    from .run import _train, heldout_losses

    out, base = Path(out), Path(base)
    key = {"base": str(base), "langs": list(langs), "steps": steps, "lr": lr, "seed": seed, "problems": problems,
           "max_new_tokens": max_new_tokens}
    results_path = out / RESULTS
    if results_path.is_file():
        done = json.loads(results_path.read_text())
        if done.get("key") == key:
            return done
    t0 = time.time()
    key_path = out / "stage-key.json"
    if out.exists() and (not key_path.is_file() or json.loads(key_path.read_text()) != key):
        # Fine-tunes, merges and loss caches of other settings would be reused as they are: start over.
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key) + "\n")

    tunes: dict[str, Path] = {}
    for lang in langs:
        run = out / "finetune" / lang
        log(f"   fine-tune on {lang} alone: dense, {steps} steps, lr {lr:g}")
        _train(run, size, base=base, train_file=train_file, variant="dense", seed=seed, weights={lang: 1.0},
               steps=steps, lr=lr)
        tunes[f"fine-tune {lang}"] = run / "final"

    plan = merge_plan(AutoConfig.from_pretrained(base).model_type)
    experts = [{"source_model": str(tunes[f"fine-tune {lang}"]), "positive_prompts": gate_prompts(train_file, lang)}
               for lang in langs]
    merged: dict[str, Path] = {}
    for i, (name, overrides) in enumerate(plan.items()):
        dest = out / "merged" / f"m{i}"
        if not (dest / "config.json").is_file():
            log(f"   merge: {name}")
            cfg = {"base_model": str(base), "gate_mode": "hidden_avg", "experts_per_token": min(2, len(langs)),
                   "experts": experts, "seed": seed, **overrides}
            merge(cfg, dest, force=True, quiet=True)
        merged[name] = dest

    models = {"base": base, **tunes, **merged}
    loss = {}
    for name, path in models.items():
        cache = out / "loss" / f"{_slug(name)}.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        loss[name] = heldout_losses(path, cache, test_file, size, langs)

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    context = getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", None) or 1 << 30
    problem_set = docstring_set(test_file, out / "docstring-src", problems,
                                fits=lambda p: len(tok(p)["input_ids"]) + max_new_tokens <= context)
    codebleu: dict[str, float | None] = {}
    scored = {n: p for n, p in models.items() if n == "base" or n == "fine-tune py" or n in merged}
    note = ""
    if problem_set:
        log(f"   CodeBLEU: {len(problem_set)} docstring -> function problems from the Python test split, greedy, "
            f"{max_new_tokens} new tokens, {len(scored)} models")
        sampling = Sampling(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed)
        device = size.device if size.device != "cuda" or torch.cuda.is_available() else "cpu"
        for name, path in scored.items():
            backend = _Lazy(lambda p=path: HFBackend(p, device=device, batch_size=size.batch))
            record = codebleu_of(problem_set, backend, sampling, out / "codebleu" / _slug(name),
                                 {"model": str(path), "max_new_tokens": max_new_tokens, "stops": list(STOPS)})
            codebleu[name] = record["codebleu"]
    else:
        note = ("The Python test split held no function with a docstring that fits the model's context, "
                "so CodeBLEU was not measured.")
    result = {"key": key, "langs": list(langs), "models": list(models), "merges": list(merged), "loss": loss,
              "codebleu": codebleu, "problems": len(problem_set), "note": note,
              "seconds": time.time() - t0}
    section = markdown(result)
    tmp = out / (SECTION + ".tmp")
    tmp.write_text("\n".join(section) + "\n")
    tmp.replace(out / SECTION)
    tmp = out / (RESULTS + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(results_path)
    return result


def markdown(result: dict) -> list[str]:
    """The stage's table: held-out test loss per language (lower is better), their mean, and CodeBLEU."""
    from ..util.tables import markdown_table

    langs = result["langs"]
    rows = []
    for name in result["models"]:
        losses = result["loss"][name]
        cb = result["codebleu"].get(name)
        mean = sum(losses[lang] for lang in langs) / len(langs)
        rows.append([name, *(f"{losses[lang]:.3f}" for lang in langs), f"{mean:.3f}",
                     "—" if cb is None else f"{100 * cb:.1f}"])
    return markdown_table(["model", *(f"test loss {lang}" for lang in langs), "mean", "CodeBLEU"], rows).splitlines()


def own_gain_kept(result: dict) -> dict[str, float]:
    """Merge -> share of the fine-tunes' own-language gain it keeps: (base - merge) / (base - own),
    each the mean over languages of the held-out loss, `own` each language's own fine-tune."""
    langs, loss = result["langs"], result["loss"]

    def mean(name_of):
        return sum(loss[name_of(lang)][lang] for lang in langs) / len(langs)

    base, own = mean(lambda _: "base"), mean(lambda lang: f"fine-tune {lang}")
    if base == own:
        return {}
    return {m: (base - mean(lambda _, m=m: m)) / (base - own) for m in result["merges"]}


def report_lines(result: dict) -> list[str]:
    """The demo report's section: how the stage ran, its table, what it shows and cannot show."""
    k = result["key"]
    langs = result["langs"]
    kept = own_gain_kept(result)
    best = max(kept, key=kept.get) if kept else None
    shows = (f"Of the gain each language's own fine-tune makes over the base (mean held-out loss over "
             f"{', '.join(langs)}), the best merge, {best}, keeps {kept[best]:.0%} "
             f"({'; '.join(f'{m} {v:.0%}' for m, v in kept.items())}), without training after the merge"
             if best else "The fine-tunes did not move the mean held-out loss, so no merge can be compared with them")
    cb = ("" if not result["codebleu"] else
          f"; CodeBLEU on {result['problems']} docstring -> function problems of the Python test split "
          f"(signature and docstring given, the body scored; weights 0.25 each; greedy, {k['max_new_tokens']} "
          "new tokens)")
    return [
        "## Merging per-language fine-tunes",
        "",
        f"The base fine-tuned on each of {', '.join(langs)} alone (dense, {k['steps']} steps at the dense "
        f"variant's chosen learning rate {k['lr']:g}, seed {k['seed']}), the fine-tunes merged three ways "
        "(router rows from the hidden states of four training documents per language, `gate_mode: hidden_avg`, "
        "two experts per token" + ("" if any(m.startswith("Mixtral") for m in result["merges"]) else
                                   "; a Qwen2 base cannot be a Mixtral, whose attention has no biases, so the "
                                   "plain-transformers merge is Qwen2-MoE")
        + "). Held-out test loss per language (lower is better)" + cb
        + f". Stage time {result['seconds']:.0f} s.",
        "",
        *markdown(result),
        "",
        *([result["note"], ""] if result.get("note") else []),
        f"{shows}. It cannot show whether merging beats training one model on all languages at scale: these are "
        f"one-seed fine-tunes of {k['steps']} steps on a tiny model, and CodeBLEU of models this small scores the "
        "look of the generated lines, not working code.",
        "",
    ]


def check_finite(result: dict) -> list[str]:
    """Names of (model, language) cells whose loss is missing or not finite."""
    bad = []
    for name in result["models"]:
        for lang in result["langs"]:
            v = result["loss"].get(name, {}).get(lang)
            if v is None or not math.isfinite(v):
                bad.append(f"{name}/{lang}")
    return bad


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


class _Lazy:
    """Loads the model only if the CodeBLEU journal leaves something to generate."""

    def __init__(self, make):
        self.make, self.backend = make, None

    def complete(self, *args, **kwargs):
        if self.backend is None:
            self.backend = self.make()
        return self.backend.complete(*args, **kwargs)
