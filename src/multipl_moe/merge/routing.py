"""Routing accuracy of a merged MoE: how often held-out text of each language reaches its own expert.

`routing_accuracy(model, tokenizer, texts)` runs each text through a merged Mixtral or Qwen2-MoE
(transformers' own classes, `output_router_logits=True`, so the router of layer l sees what the
merged layers before it produced) and counts, per layer, the tokens of texts[e] whose top-1
routed expert is e.

Run as a module it is the measurement behind `gate_input`'s default: per-language fine-tunes of
one base, merged with each gate variant, scored on held-out documents of each language:

    python -m multipl_moe.merge.routing --base BASE --corpus corpus.jsonl \\
        --expert py=runs/ft-py/final --expert cpp=runs/ft-cpp/final ... --out runs/routing

Prompts are the first `--prompt-chars` characters of `--prompts` training documents per language;
held-out text is the documents `multipl-moe train` held out (same hash rule and `--val-fraction`).

Shape legend: L layers, E experts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

VARIANTS = {  # name -> (gate_mode, gate_input)
    "hidden/router": ("hidden", "router"),
    "hidden/residual (mergekit)": ("hidden", "residual"),
    "hidden_avg/router": ("hidden_avg", "router"),
    "hidden_avg/residual": ("hidden_avg", "residual"),
    "cheap_embed": ("cheap_embed", "router"),
}


@torch.no_grad()
def routing_accuracy(model, tokenizer, texts: list[list[str]], max_tokens: int = 256) -> torch.Tensor:
    """[L, E]: the share of the tokens of texts[e] (BOS excluded) whose top-1 expert at layer l is e."""
    hits, totals = None, torch.zeros(len(texts))
    for e, docs in enumerate(texts):
        for doc in docs:
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"][: max_tokens - 1]
            if not ids:
                continue
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            out = model(torch.tensor([bos + ids]), output_router_logits=True, use_cache=False)
            if not out.router_logits:
                raise ValueError(f"{type(model).__name__} returns no router logits (Mixtral and Qwen2-MoE do)")
            top_L = torch.stack([r.reshape(-1, r.shape[-1])[len(bos):].argmax(-1) for r in out.router_logits])
            if hits is None:
                hits = torch.zeros(top_L.shape[0], len(texts))
            hits[:, e] += (top_L == e).sum(-1)
            totals[e] += top_L.shape[1]
    return hits / totals.clamp(min=1)


def _documents(corpus: Path, val_fraction: float, seed: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """lang -> (training documents, held-out documents), split as `multipl-moe train` splits them."""
    from ..data.packing import is_validation

    docs: dict[str, tuple[list[str], list[str]]] = {}
    with open(corpus) as f:
        for line in f:
            row = json.loads(line)
            train, held = docs.setdefault(row["lang"], ([], []))
            (held if is_validation(row["content"], val_fraction, seed) else train).append(row["content"])
    return docs


def _table(acc: dict[str, torch.Tensor], langs: list[str]) -> str:
    """acc: variant -> [R, L, E] (R prompt sets). Means over prompt sets and languages per layer."""
    L = next(iter(acc.values())).shape[1]
    head = ("| gates | " + " | ".join(f"layer {l}" for l in range(L))
            + " | mean | min..max over prompt sets | per language |")
    lines = [head, "|" + "---|" * (L + 4)]
    for name, a in acc.items():
        per_run = a.mean((1, 2))
        per_lang = ", ".join(f"{lang} {v:.2f}" for lang, v in zip(langs, a.mean((0, 1)).tolist()))
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in a.mean((0, 2)).tolist())
                     + f" | {a.mean():.3f} | {per_run.min():.3f}..{per_run.max():.3f} | {per_lang} |")
    for pool in ("hidden", "hidden_avg"):
        router = acc[f"{pool}/router"].mean(2)
        residual = next(v for k, v in acc.items() if k.startswith(f"{pool}/residual")).mean(2)
        lines.append(f"\n{pool}: router input above the residual stream in {int((router > residual).sum())} of "
                     f"{router.numel()} (prompt set, layer) pairs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    from .build import build_merged
    from .config import config_from_dict

    p = argparse.ArgumentParser(prog="python -m multipl_moe.merge.routing", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--expert", action="append", required=True, metavar="LANG=DIR")
    p.add_argument("--prompts", type=int, default=8, help="prompts per language")
    p.add_argument("--prompt-offsets", type=int, nargs="+", default=[0],
                   help="one prompt set per offset: training documents [offset, offset + prompts) of each language")
    p.add_argument("--prompt-chars", type=int, default=400)
    p.add_argument("--heldout", type=int, default=16, help="held-out documents per language")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--out", type=Path, default=None, help="folder for routing.json and routing.md")
    args = p.parse_args(argv)
    experts = dict(e.split("=", 1) for e in args.expert)
    langs = list(experts)
    docs = _documents(args.corpus, args.val_fraction)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    held = [docs[lang][1][: args.heldout] for lang in langs]
    tokens = [sum(min(len(tokenizer(d, add_special_tokens=False)["input_ids"]), args.max_tokens - 1) for d in h)
              for h in held]
    print("held-out tokens: " + ", ".join(f"{lang} {n}" for lang, n in zip(langs, tokens)), file=sys.stderr)
    acc: dict[str, list[torch.Tensor]] = {name: [] for name in VARIANTS}
    for offset in args.prompt_offsets:
        prompts = {lang: [d[: args.prompt_chars] for d in docs[lang][0][offset: offset + args.prompts]]
                   for lang in langs}
        for name, (gate_mode, gate_input) in VARIANTS.items():
            cfg = config_from_dict(dict(
                base_model=args.base, gate_mode=gate_mode, gate_input=gate_input, experts_per_token=1,
                architecture="mixtral",
                experts=[dict(source_model=experts[lang], positive_prompts=prompts[lang]) for lang in langs]))
            model = build_merged(cfg).float().eval()
            acc[name].append(routing_accuracy(model, tokenizer, held, args.max_tokens))
            print(f"prompts from {offset}, {name}: mean {acc[name][-1].mean():.3f}", file=sys.stderr)
    stacked = {name: torch.stack(v) for name, v in acc.items()}
    table = _table(stacked, langs)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "routing.json").write_text(json.dumps(
            {"languages": langs, "heldout_docs": [len(h) for h in held], "heldout_tokens": tokens,
             "prompt_offsets": args.prompt_offsets,
             "accuracy_set_layer_lang": {k: v.tolist() for k, v in stacked.items()}}, indent=1))
        (args.out / "routing.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
