"""The demo's report: loss tables with seed spread, plots, pass@1, and how to reproduce it.

Every number in the report is read from the run's own files (metrics.jsonl of each training run,
the evaluation summary); nothing is typed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from .common import seed_stats, utc_now
from .settings import VARIANTS


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def loss_table(base_val: dict, val: dict, langs: list[str]) -> list[str]:
    lines = ["| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    lines.append("| base (pre-trained on high-resource) | " + " | ".join(_fmt(base_val.get(l)) for l in langs) + " |")
    for v in VARIANTS:
        cells = []
        for l in langs:
            per_seed = {s: r[l] for s, r in val[v].items() if l in r}
            if not per_seed:
                cells.append("-")
                continue
            mean, spread = seed_stats(per_seed)
            cells.append(f"{mean:.3f} ± {spread / 2:.3f}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def delta_table(base_val: dict, val: dict, high: list[str], low: list[str]) -> tuple[list[str], list[str]]:
    """Gain on low-resource and forgetting on high-resource vs the base, averaged over languages."""
    lines = ["| variant | gain on low-resource (base - variant) | forgetting on high-resource (variant - base) |",
             "|---|---|---|"]
    summary: dict[str, dict[int, tuple[float, float]]] = {}
    for v in VARIANTS:
        per_seed = {}
        for s, r in val[v].items():
            lo = [base_val[l] - r[l] for l in low if l in r and l in base_val]
            hi = [r[l] - base_val[l] for l in high if l in r and l in base_val]
            if lo and hi:
                per_seed[s] = (sum(lo) / len(lo), sum(hi) / len(hi))
        summary[v] = per_seed
        if per_seed:
            g_mean, g_spread = seed_stats({s: x[0] for s, x in per_seed.items()})
            f_mean, f_spread = seed_stats({s: x[1] for s, x in per_seed.items()})
            lines.append(f"| {v} | {g_mean:+.3f} (seed range {g_spread:.3f}) | {f_mean:+.3f} (seed range {f_spread:.3f}) |")
    verdicts = []
    dense = summary.get("dense", {})
    for v in VARIANTS:
        if v == "dense" or not summary.get(v) or not dense:
            continue
        for i, what in ((0, "gain on low-resource"), (1, "forgetting on high-resource")):
            a_mean, a_spread = seed_stats({s: x[i] for s, x in summary[v].items()})
            b_mean, b_spread = seed_stats({s: x[i] for s, x in dense.items()})
            diff = a_mean - b_mean
            noise = max(a_spread, b_spread)
            exceeds = abs(diff) > noise
            verdicts.append(f"- {v} vs dense, {what}: {diff:+.3f} "
                            f"({'exceeds' if exceeds else 'within'} the seed-to-seed spread of {noise:.3f})")
    return lines, verdicts


def _plot_losses(runs: dict, langs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(langs))
    rows = (len(langs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for i, lang in enumerate(langs):
        ax = axes[i // cols][i % cols]
        for v in VARIANTS:
            run = runs[v][min(runs[v])]
            recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
            pts = [(r["step"], r["train_loss_by_lang"][lang]) for r in recs if lang in r.get("train_loss_by_lang", {})]
            if pts:
                ax.plot(*zip(*pts), label=v)
        ax.set_title(f"{lang}: training loss")
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=7)
    for j in range(len(langs), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_load(runs: dict, variant: str, key: str, title: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    run = runs[variant][min(runs[variant])]
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    # sum the per-language loads over the whole run, then normalise per language
    totals: dict[str, np.ndarray] = {}
    for r in recs:
        for lang, fr in r.get(key, {}).items():
            totals[lang] = totals.get(lang, 0) + np.array(fr)
    if not totals:
        return False
    langs = sorted(totals)
    m = np.stack([totals[l] / totals[l].sum() for l in langs])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * m.shape[1], 0.8 + 0.45 * len(langs)))
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(langs)), langs)
    names = [f"e{i}" for i in range(m.shape[1])]
    if key == "token_load_by_lang":
        names[-1] = "shared"
    ax.set_xticks(range(m.shape[1]), names)
    for (i, j), x in np.ndenumerate(m):
        ax.text(j, i, f"{x:.2f}", ha="center", va="center", color="w" if x < m.max() * 0.6 else "k", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_report(out: Path, *, size, quick, high, low, base_val, val, runs, pass_at_1, eval_note, corpus_lines,
                 commands, seconds, machine) -> Path:
    from ..atomic import atomic_file

    langs = high + low
    _plot_losses(runs, langs, out / "loss_curves.png")
    heatmaps = []
    for variant in ("hybrid-batch", "hybrid-causal"):
        for key, level in (("token_load_by_lang", "token level"), ("segment_load_by_lang", "segment level")):
            name = f"load_{variant}_{key.split('_')[0]}.png"
            if _plot_load(runs, variant, key, f"{variant}: {level} expert load per language", out / name):
                heatmaps.append(name)
    delta_lines, verdicts = delta_table(base_val, val, high, low)
    tokens = size.steps * size.batch * size.seq_len
    md = [
        f"# MultiPL-MoE demo{' (quick)' if quick else ''}",
        "",
        f"Run {utc_now()} on {machine}; {seconds / 60:.1f} minutes. Every figure below was computed by this run.",
        "",
        "## Set-up",
        f"- Corpus: standard-library sources of the installed toolchains, up to {size.bytes_per_lang:,} bytes per "
        f"language. High-resource: {', '.join(high)}; low-resource: {', '.join(low)}.",
        f"- Base: a tiny dense Qwen2 (hidden {size.hidden}, {size.layers} layers, vocabulary {size.vocab}) "
        f"pre-trained for {size.pretrain_steps} steps on the high-resource languages only.",
        f"- Each variant then trains {size.steps} steps x {size.batch} x {size.seq_len} tokens = {tokens:,} tokens "
        f"on all six languages (equal sampling weights), seeds {size.seeds}. MoE variants use the paper's "
        "freezing recipe (only routed token experts, segment experts and routers train); dense and LoRA train "
        "all their parameters.",
        "",
        "```",
        *corpus_lines,
        "```",
        "",
        "## Held-out loss per language (mean ± half the seed range)",
        "",
        *loss_table(base_val, val, langs),
        "",
        "## Gain and forgetting against the base",
        "",
        *delta_lines,
        "",
        "Differences against dense continued pretraining, and whether they exceed the seed-to-seed spread "
        "(the larger of the two variants' seed ranges):",
        "",
        *(verdicts or ["- (needs at least one seed per variant)"]),
        "",
        "## Loss curves",
        "",
        "![training loss per language](loss_curves.png)",
        "",
        "## Expert load per language",
        "",
        *[f"![{h}]({h})" for h in heatmaps],
        "",
        "## MultiPL-E slice (pass@1, greedy)",
        "",
        *pass_at_1,
        "",
        eval_note,
        "",
        "## Reproduce",
        "",
        "```",
        *commands,
        "```",
        "",
        "Each training run's config, metrics (metrics.jsonl) and final checkpoint are under "
        f"`{out}/runs/<variant>-seed<k>/`; the exact training config is its `config.json` "
        "(`multipl-moe train <that config as YAML>` repeats it).",
    ]
    path = out / "report.md"
    with atomic_file(path) as f:
        f.write("\n".join(md) + "\n")
    (out / "summary.json").write_text(json.dumps({"base_val": base_val, "val": val}, indent=2, sort_keys=True))
    return path
