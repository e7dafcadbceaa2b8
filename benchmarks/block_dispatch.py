"""Fast expert dispatch vs the reference per-expert loop, forward+backward, on the hybrid block.

    python benchmarks/block_dispatch.py [--tokens 8x1024] [--hidden 512] [--inter 1376] [--out DIR]

Writes DIR/block_dispatch.json and .md. Times are medians of --repeats runs after a warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from multipl_moe.moe import HybridMoEBlock, HybridMoEConfig, SegmentMoEConfig, SwiGLUExperts
from multipl_moe.moe import experts as experts_mod


def time_fwd_bwd(block, x, repeats):
    def once():
        block.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_(True)
        out = block(xi)
        (out.hidden_states.float().square().mean() + out.aux_loss).backward()
    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="8x1024", help="BATCHxSEQ")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--inter", type=int, default=1376)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--routing", default="batch", choices=["batch", "causal"])
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    B, S = map(int, args.tokens.split("x"))
    torch.manual_seed(0)
    cfg = HybridMoEConfig(segment=SegmentMoEConfig(routing=args.routing))
    base = HybridMoEBlock(cfg, args.hidden, args.inter).train()
    x = torch.randn(B, S, args.hidden)
    rows = []
    variants = [("reference", "reference", True), ("grouped (CPU grouped_mm)", "grouped", True),
                ("grouped (slice loop)", "grouped", False)]
    for name, dispatch, use_gmm in variants:
        block = copy.deepcopy(base)
        for m in block.modules():
            if isinstance(m, SwiGLUExperts):
                m.dispatch = dispatch
        saved = dict(experts_mod._grouped_mm_support)
        # force the choice the library would otherwise make by probing
        experts_mod._grouped_mm_support[(x.device.type, x.dtype)] = use_gmm
        t = time_fwd_bwd(block, x, args.repeats)
        experts_mod._grouped_mm_support.clear()
        experts_mod._grouped_mm_support.update(saved)
        rows.append({"dispatch": name, "fwd_bwd_s": round(t, 4)})
        print(f"{name:24s} {t * 1000:9.1f} ms", flush=True)
    ref = rows[0]["fwd_bwd_s"]
    for r in rows:
        r["speedup_vs_reference"] = round(ref / r["fwd_bwd_s"], 3)
    meta = {"shape": f"B={B} S={S} H={args.hidden} I={args.inter}", "routing": args.routing,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "block_dispatch.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = ["| dispatch | fwd+bwd (s) | speed-up vs reference |", "|---|---|---|"]
    md += [f"| {r['dispatch']} | {r['fwd_bwd_s']} | {r['speedup_vs_reference']}x |" for r in rows]
    (out / "block_dispatch.md").write_text(f"{meta}\n\n" + "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
