"""The demo's report: the set-up, tuning and cost, held-out test losses, every pair of variants
compared paired by seed, the two claims, figures, pass@1, and how to reproduce it.

Every number in the report is read from the run's own files (metrics.jsonl of each training run,
the test losses, the measured costs, the evaluation summary); nothing is typed in.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from .common import utc_now
from .merge_stage import report_lines
from .settings import VARIANTS
from .stats import FORGET, GAIN, fmt_spread, paired, per_seed, spread

HYBRIDS = ("hybrid-batch", "hybrid-causal")


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_table(base_test: dict, test: dict, langs: list[str]) -> list[str]:
    lines = ["| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs),
             "| base | " + " | ".join(f"{base_test[lang]:.3f}" for lang in langs) + " |"]
    for v in VARIANTS:
        cells = []
        for lang in langs:
            mean, lo, hi = spread([r[lang] for r in test[v].values()])
            cells.append(f"{mean:.3f} ± {(hi - lo) / 2:.3f}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def claims_tables(metrics: dict) -> tuple[list[str], list[str], dict]:
    """(per-variant table, all-pairs table, pair results keyed by (a, b, metric))."""
    lines = [f"| variant | {GAIN}: base − variant, + = learned | {FORGET}: variant − base, + = forgot |",
             "|---|---|---|"]
    for v in VARIANTS:
        cells = [fmt_spread(*spread([m[k] for m in metrics[v].values()])) for k in (GAIN, FORGET)]
        lines.append(f"| {v} | {cells[0]} | {cells[1]} |")
    pairs = ["| a − b (paired by seed) | gain difference (+ = a learned more) | verdict | forgetting difference "
             "(+ = a forgot more) | verdict |", "|---|---|---|---|---|"]
    results = {}
    for a, b in itertools.combinations(VARIANTS, 2):
        cells = []
        for k in (GAIN, FORGET):
            r = paired({s: m[k] for s, m in metrics[a].items()}, {s: m[k] for s, m in metrics[b].items()})
            results[(a, b, k)] = r
            verdict = ("**beyond the spread**" if r["called"] else "within the spread")
            cells += [fmt_spread(r["mean"], r["min"], r["max"]), verdict]
        pairs.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return lines, pairs, results


def claim_sentences(metrics: dict, results: dict, seeds: int) -> list[str]:
    def get(a, b, k):
        if (a, b, k) in results:
            return results[(a, b, k)], 1
        return results[(b, a, k)], -1

    out = []
    dense_forget = paired({s: m[FORGET] for s, m in metrics["dense"].items()},
                          {s: 0.0 for s in metrics["dense"]})
    if dense_forget["min"] > 0:
        out.append(f"- **Set-up check:** dense continued pretraining forgot in every seed (high-resource test loss "
                   f"up by {fmt_spread(dense_forget['mean'], dense_forget['min'], dense_forget['max'])}), so "
                   "forgetting can be measured here.")
    else:
        out.append(f"- **Set-up check FAILED:** dense continued pretraining did not forget in every seed "
                   f"({fmt_spread(dense_forget['mean'], dense_forget['min'], dense_forget['max'])}); the forgetting "
                   "claim is not tested by this run.")
    for k, claim, better in ((GAIN, "Claim 1 (MultiPL-MoE gains more on low-resource languages)", 1),
                             (FORGET, "Claim 2 (MultiPL-MoE forgets less on high-resource languages)", -1)):
        parts = []
        for h in HYBRIDS:
            for other in VARIANTS:
                if other in HYBRIDS:
                    continue
                r, sign = get(h, other, k)
                mean, lo, hi = (sign * r["mean"], *sorted((sign * r["min"], sign * r["max"])))
                if not r["called"]:
                    word = "no difference beyond the spread"
                elif mean * better > 0:
                    word = "**supports**"
                else:
                    word = "**contradicts**"
                parts.append(f"{h} vs {other}: {fmt_spread(mean, lo, hi)} ({word})")
        out.append(f"- **{claim}**, over {seeds} seeds, paired: " + "; ".join(parts) + ".")
    return out


def _band(ax, xs, runs_vals, label):
    import numpy as np

    arr = np.array(runs_vals)
    mean = arr.mean(axis=0)
    (line,) = ax.plot(xs, mean, label=label)
    if arr.shape[0] > 1:
        ax.fill_between(xs, arr.min(axis=0), arr.max(axis=0), color=line.get_color(), alpha=0.2)


def plot_curves(runs: dict, cost: dict, high: list[str], low: list[str], path: Path,
                base_val: dict[str, float] | None = None) -> None:
    """Validation loss over steps and over training FLOPs, low- and high-resource means, averaged
    over seeds with the min-max band; the base's validation loss as a dashed line when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    for row, (group, langs) in enumerate((("low-resource", low), ("high-resource", high))):
        for v in VARIANTS:
            curves, steps = [], None
            for run in runs[v].values():
                pts = [(r["step"], sum(r["val_loss_by_lang"][lang] for lang in langs) / len(langs))
                       for r in _records(run) if "val_loss_by_lang" in r]
                steps = [p[0] for p in pts]
                curves.append([p[1] for p in pts])
            if not curves or len({len(c) for c in curves}) != 1:
                continue
            _band(axes[row][0], steps, curves, v)
            _band(axes[row][1], [s * cost[v]["flops_per_step"] / 1e12 for s in steps], curves, v)
        for col, xlabel in ((0, "training step"), (1, "training compute (TFLOPs, measured per step)")):
            ax = axes[row][col]
            if base_val:
                ax.axhline(sum(base_val[lang] for lang in langs) / len(langs), color="k", ls="--", lw=1,
                           label="base (before continued training)")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"validation loss, mean of {', '.join(langs)}")
            ax.set_title(f"{group}: mean over seeds, band = min-max", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_heatmaps(runs: dict, path: Path) -> list[str]:
    """Routed-expert load per language: summed over all layers, logging windows and seeds, each
    row normalised over the routed experts only (the shared expert, always on, is left out and its
    share stated), each panel on its own colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = []
    for v in ("token-only", *HYBRIDS):
        for key, level in (("token_load_by_lang", "token level"), ("segment_load_by_lang", "segment level")):
            totals: dict[str, np.ndarray] = {}
            for run in runs[v].values():
                for r in _records(run):
                    for lang, fr in r.get(key, {}).items():
                        totals[lang] = totals.get(lang, 0) + np.array(fr)
            if totals:
                panels.append((v, key, level, totals))
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.2), squeeze=False)
    notes = []
    for ax, (v, key, level, totals) in zip(axes[0], panels):
        langs = list(totals)
        m = np.stack([totals[lang] / totals[lang].sum() for lang in langs])
        title = f"{v}\n{level}"
        if key == "token_load_by_lang":
            shared = m[:, -1].mean()
            m = m[:, :-1] / m[:, :-1].sum(axis=1, keepdims=True)
            title += f" (shared expert {shared:.2f} of load, not shown)"
            notes.append(f"{v}: the shared expert takes {shared:.2f} of the token-level load")
        im = ax.imshow(m, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xticks(range(m.shape[1]), [f"e{i}" for i in range(m.shape[1])])
        for (i, j), x in np.ndenumerate(m):
            ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=6,
                    color="w" if x < m.min() + 0.6 * (m.max() - m.min()) else "k")
        ax.set_title(title, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.05).set_label("share of routed assignments", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return notes


def write_report(out: Path, *, size, high, low, base_test, test, runs, sweep, best, cost, pass_at_1, eval_note,
                 failures, corpus_lines, command, seconds, machine, reused=0, merge=None) -> Path:
    from ..util.atomic import atomic_file

    langs = high + low
    seeds = size.seeds
    metrics = {v: per_seed(base_test, test[v], high, low) for v in VARIANTS}
    variant_lines, pair_lines, results = claims_tables(metrics)
    pre = out / "pretrain" / "metrics.jsonl"
    base_val = [r for r in _records(pre.parent) if "val_loss_by_lang" in r][-1]["val_loss_by_lang"] \
        if pre.is_file() else None
    plot_curves(runs, cost, high, low, out / "curves.png", base_val)
    heat_notes = plot_heatmaps(runs, out / "routing.png")
    tokens = size.steps * size.batch * size.seq_len
    dense_flops = cost["dense"]["flops_per_step"]
    cost_lines = ["| variant | learning rates (validation loss, mean of all languages) | chosen | trainable "
                  "parameters | training FLOPs (× dense) |", "|---|---|---|---|---|"]
    for v in VARIANTS:
        sweep_cells = ", ".join(f"{lr:g}: {loss:.3f}" for lr, loss in sweep[v].items())
        c = cost[v]
        edge = " (edge of the sweep)" if best[v] in (min(sweep[v]), max(sweep[v])) else ""
        cost_lines.append(f"| {v} | {sweep_cells} | {best[v]:g}{edge} | {c['trainable_params']:,} of "
                          f"{c['total_params']:,} | {c['flops_per_step'] * size.steps:.3g} "
                          f"({c['flops_per_step'] / dense_flops:.2f}×) |")
    status = (f"**FAILED stage(s): MultiPL-E evaluation of {', '.join(failures)}.**" if failures
              else "Every stage succeeded.")
    provenance = ("Every figure below was computed by this run." if not reused else
                  f"{reused} training run(s) were reused from an earlier, interrupted run of the same command "
                  "with the same settings and code (the demo continues where it stopped); every other figure "
                  "was computed by this run.")
    base_line = (f"a tiny dense Qwen2 (hidden {size.hidden}, {size.layers} layers, vocabulary {size.vocab}) "
                 f"pre-trained for {size.pretrain_steps} steps on all six languages, the low-resource ones "
                 f"{size.pretrain_low_share:.0%} of the blocks (`pretrain_low_share`)" if size.base is None
                 else f"`{size.base}`")
    md = [
        f"# MultiPL-MoE demo (size `{size.name}`)",
        "",
        f"Run {utc_now()} on {machine}; {seconds / 60:.1f} minutes. {status} {provenance}",
        "",
        "## Set-up",
        f"- Corpus: high-resource {', '.join(high)}; low-resource {', '.join(low)}; up to {size.bytes_per_lang:,} "
        f"bytes per language, split by a hash of each document into test ({size.test_fraction:.0%}: every number "
        f"in the tables), validation ({size.val_fraction:.0%} of the rest: learning-rate choice and loss curves) "
        "and training.",
        f"- Base: {base_line}.",
        f"- Continued training: {size.steps} steps × {size.batch} × {size.seq_len} = {tokens:,} tokens per run "
        f"(the same for every variant), {1 - size.replay_share:.0%} low-resource and {size.replay_share:.0%} "
        "high-resource replay (`replay_share`). MoE variants use the paper's freezing recipe (only routed token "
        "experts, segment experts and routers train); dense trains every weight; LoRA trains its adapters.",
        f"- Tuning: every variant gets the same sweep over learning rates {', '.join(f'{x:g}' for x in size.lr_grid)} "
        f"with seed {seeds[0]}; the one with the lowest validation loss (mean of all six languages) is run with "
        f"seeds {', '.join(map(str, seeds[1:])) or '(none)'} as well.",
        "",
        "```",
        *corpus_lines,
        "```",
        "",
        "## Tuning and cost",
        "",
        *cost_lines,
        "",
        "Training FLOPs: matmul FLOPs of one training step (forward and backward with the variant's freezing), "
        "counted by `torch.utils.flop_counter` on a batch of the run's shape, times the steps. Rows compare at "
        "equal tokens; the right column of the loss-curve figure compares at equal compute.",
        "",
        f"## Held-out test loss per language (mean ± half the range over seeds {seeds})",
        "",
        *loss_table(base_test, test, langs),
        "",
        "## Gain and forgetting against the base (test split; mean [min, max] over seeds)",
        "",
        *variant_lines,
        "",
        "## Every pair of variants, paired by seed",
        "",
        "A difference is called out only when it has the same sign in every seed (the range of the paired "
        "differences excludes zero).",
        "",
        *pair_lines,
        "",
        "## The paper's two claims in this miniature",
        "",
        *claim_sentences(metrics, results, len(seeds)),
        "",
        "## Figures",
        "",
        "![validation loss curves](curves.png)",
        "",
        "Validation loss (the split the learning rate was chosen on, not the test split) at each evaluation, "
        "averaged over the low-resource (top) and high-resource (bottom) languages; line = mean over seeds at each "
        "variant's chosen learning rate, band = min to max over seeds, dashed = the base before continued "
        "training; left against steps (equal tokens), right against measured training FLOPs (equal compute).",
        "",
        "![routing per language](routing.png)",
        "",
        "Share of routed-expert assignments per language, summed over all MoE layers, all logged training steps "
        "and all seeds; each row sums to 1 over the routed experts, each panel has its own colour scale. "
        + ("; ".join(heat_notes) + "." if heat_notes else ""),
        "",
        "## MultiPL-E slice (pass@1, greedy, seed-0 models)",
        "",
        *pass_at_1,
        "",
        eval_note,
        "",
        *(report_lines(merge) if merge else []),
        "## What this miniature can and cannot show",
        "",
        "It can show, for models and data small enough for a CPU, whether the hybrid MoE's frozen-dense recipe "
        "learns the rare languages faster and disturbs the common ones less than dense continued pretraining, LoRA "
        "and a token-only MoE, at equal tokens and tuned learning rates, and whether such a difference is larger "
        "than the seed-to-seed spread. It cannot show the paper's numbers: pass@1 of models this small is about 0, "
        f"the held-out losses are on {size.heldout_blocks} blocks per language of standard-library code, "
        f"{len(seeds)} seeds bound only large effects, and whether an effect survives at billions of parameters "
        "and tokens is a question for `--size gpu`.",
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "Each training run's config, metrics (metrics.jsonl) and final checkpoint are under "
        f"`{out}/runs/<variant>-lr<lr>-seed<k>/`; the exact training config is its `config.json`.",
    ]
    path = out / "report.md"
    with atomic_file(out / "summary.json") as f:
        f.write(json.dumps({"base_test": base_test, "test": test, "sweep": {v: {str(k): x for k, x in s.items()}
                                                                            for v, s in sweep.items()},
                            "best_lr": best, "cost": cost, "metrics": metrics, "failures": failures,
                            "merge": merge},
                           indent=2, sort_keys=True) + "\n")
    with atomic_file(path) as f:
        f.write("\n".join(md) + "\n")
    return path
