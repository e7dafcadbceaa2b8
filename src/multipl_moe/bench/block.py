"""Block benchmark: one FFN replacement, forward + backward, against the dense FFN and transformers' MoE.

Variants (all experts trainable, so that every one of them does what the dense FFN does per token:
a forward and a backward with weight gradients):
- the dense SwiGLU FFN (transformers' `Qwen2MLP`, the dense model's own FFN), the yardstick;
- transformers' `Qwen2MoeSparseMoeBlock` with the same token-level experts (5 routed, top-1, plus a
  shared expert), once per experts backend (`eager`, `grouped_mm`, `batched_mm`); its weights are
  copied from our token level with `qwen2_moe` gating, and the two outputs are checked equal, so
  the comparison is like for like;
- transformers' routed experts alone, K = 2 of 6 (the configuration quoted in issue 6);
- our token level (the paper's `renorm` gating, and `qwen2_moe` gating), our segment level
  (`batch` and `causal` routing), and the hybrid block (`batch` and `causal`);
- the mixed-precision training path (what Accelerate's bf16 mode runs): fp32 weights and inputs
  under `torch.autocast(bf16)`, for the dense FFN (that group's yardstick) and the hybrid block,
  whatever the run's dtype.

FLOP-ideal of a variant = (active expert applications per token, in dense-FFN units) x the dense
FFN's time measured in the same round: what the variant would cost if its experts ran at the
dense FFN's measured rate and routing, gathering and combining were free. Ratio < 1 means faster
than that. The bf16-autocast rows are measured against the dense FFN under the same autocast.

That yardstick moves with the dense FFN's own efficiency, so each variant is also held against the
machine's achievable GEMM rate (issue 18): two plain matmuls of the run's dtype (and two in bf16,
for the autocast rows) timed in the same interleaved rounds with the same threads, one square
(N x N x N) and one of the FFN's own shape (tokens x H x I); the faster is the machine's rate. A
variant's FLOPs = active FFNs x 18 T H I (three GEMMs of 2 T H I forward, twice that backward:
input and weight gradients); its fraction of the GEMM rate, per round, median over rounds, is
what it achieves of what this machine's matmul can do. Routing, gathering and combining count as
no FLOPs, so they lower the fraction.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from ..moe import HybridMoEBlock, HybridMoEConfig, SegmentMoE, SegmentMoEConfig, TokenMoEConfig
from .common import (available_memory_bytes, environment, markdown_table, mib, peak_memory_bytes, run_line,
                     time_interleaved)


@dataclass
class BlockShape:
    batch: int
    seq: int
    hidden: int
    inter: int
    token_experts: int = 6      # shared expert included
    top_k: int = 2              # shared expert included
    segment_experts: int = 6
    segment_length: int = 64
    capacity_factor: float = 1.0
    gemm_square: int = 2048     # N of the square GEMM-rate probe

    @property
    def ffn_flops(self) -> float:
        """FLOPs of one dense SwiGLU FFN forward + backward (input and weight gradients)."""
        return 18.0 * self.tokens * self.hidden * self.inter

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


SHAPES = {
    "cpu": BlockShape(8, 1024, 512, 1376),
    "paper": BlockShape(8, 1024, 2048, 5504),   # Qwen1.5-1.8B's FFN, the paper's micro-batch
    "quick": BlockShape(2, 128, 64, 176, segment_length=16, gemm_square=256),
}

TRANSFORMERS_BACKENDS = ("eager", "grouped_mm", "batched_mm")


@dataclass
class Variant:
    name: str
    group: str
    ffn_equivalents: float      # active expert applications per token, in dense-FFN units
    step: Callable[[], None] | None = None
    skipped: str | None = None
    note: str = ""
    base: str | None = None     # the yardstick of its FLOP-ideal (default: the first variant)
    gemm_dtype: str | None = None  # whose GEMM rate it is held against (default: the run's dtype)


GEMM_PREFIX = "GEMM rate probe"


def gemm_probes(shape: BlockShape, device: torch.device, dtype: torch.dtype) -> dict[str, tuple[Callable[[], None], float]]:
    """{name: (call, flops)}: a square and an FFN-shaped matmul in `dtype`."""
    g = torch.Generator(device="cpu").manual_seed(0)
    n = shape.gemm_square
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    x = torch.randn(shape.tokens, shape.hidden, generator=g).to(device, dtype)
    w = torch.randn(shape.hidden, shape.inter, generator=g).to(device, dtype)
    name = str(dtype).replace("torch.", "")
    return {f"{GEMM_PREFIX} {name} square {n}^3": (lambda: torch.mm(a, b), 2.0 * n ** 3),
            f"{GEMM_PREFIX} {name} FFN-shaped {shape.tokens}x{shape.hidden}x{shape.inter}":
                (lambda: torch.mm(x, w), 2.0 * shape.tokens * shape.hidden * shape.inter)}


def _loss(y: torch.Tensor) -> torch.Tensor:
    return y.float().square().mean()


def _fwd_bwd(module: nn.Module, x: torch.Tensor, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
             autocast: torch.dtype | None = None):
    def step():
        module.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = forward(module, xi)
        loss.backward()
    return step


def _block_forward(m: HybridMoEBlock, x: torch.Tensor) -> torch.Tensor:
    out = m(x)
    loss = _loss(out.hidden_states)
    return loss + out.aux_loss if out.aux_loss is not None else loss


def _segment_forward(m: SegmentMoE, x: torch.Tensor) -> torch.Tensor:
    out = m(x, compute_balance_loss=True)
    loss = _loss(out.y_BLH)
    return loss + 0.01 * out.balance_loss if out.balance_loss is not None else loss


def _segment_fraction(shape: BlockShape) -> float:
    """Tokens the batch-mode segment experts process, per token: E * r * a / T (full windows)."""
    V = shape.batch * math.ceil(shape.seq / shape.segment_length)
    r = SegmentMoEConfig(num_experts=shape.segment_experts, capacity_factor=shape.capacity_factor).capacity(V)
    return shape.segment_experts * r * shape.segment_length / shape.tokens


def _moe_config(shape: BlockShape, *, segment: bool, routing: str = "batch", gating: str = "renorm",
                dispatch: str = "auto") -> HybridMoEConfig:
    seg = SegmentMoEConfig(num_experts=shape.segment_experts if segment else 0,
                           segment_length=shape.segment_length, capacity_factor=shape.capacity_factor,
                           routing=routing)
    tok = TokenMoEConfig(num_experts=shape.token_experts, top_k=shape.top_k, gating=gating,
                         freeze_shared_expert=False)
    return HybridMoEConfig(token=tok, segment=seg, dispatch=dispatch,
                           **({} if segment else {"token_weight": 1.0}))


def _transformers_block(shape: BlockShape, backend: str, ours: HybridMoEBlock | None, routed_only: bool):
    """transformers' Qwen2-MoE block; with `ours`, carrying its token level's weights."""
    from transformers import Qwen2MoeConfig
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

    E = shape.token_experts if routed_only else shape.token_experts - 1
    K = shape.top_k if routed_only else shape.top_k - 1
    config = Qwen2MoeConfig(hidden_size=shape.hidden, moe_intermediate_size=shape.inter,
                            shared_expert_intermediate_size=shape.inter, num_experts=E,
                            num_experts_per_tok=K, norm_topk_prob=False, hidden_act="silu",
                            experts_implementation=backend)
    block = Qwen2MoeSparseMoeBlock(config)
    with torch.no_grad():
        for p in block.parameters():  # the experts' weights come uninitialised (torch.empty)
            nn.init.normal_(p, std=0.02)
        if ours is not None:
            tm = ours.token_moe
            block.gate.weight.copy_(tm.router.weight)
            block.experts.gate_up_proj.copy_(tm.experts.gate_up_proj)
            block.experts.down_proj.copy_(tm.experts.down_proj)
            block.shared_expert.gate_proj.weight.copy_(tm.shared_expert.gate_proj.weight)
            block.shared_expert.up_proj.weight.copy_(tm.shared_expert.up_proj.weight)
            block.shared_expert.down_proj.weight.copy_(tm.shared_expert.down_proj.weight)
            block.shared_expert_gate.weight.copy_(tm.shared_expert_gate.weight)
    if routed_only:
        def forward(m, x):
            flat = x.reshape(-1, x.shape[-1])
            _, weights, idx = m.gate(flat)
            return _loss(m.experts(flat, idx, weights))
    else:
        def forward(m, x):
            return _loss(m(x))
    return block, forward


def _batched_mm_bytes(shape: BlockShape, k: int, itemsize: int) -> int:
    """batched_mm gathers both weight matrices once per (token, expert) pair, and keeps them for backward."""
    return 2 * shape.tokens * k * 3 * shape.hidden * shape.inter * itemsize


def build_variants(shape: BlockShape, device: torch.device, dtype: torch.dtype, x: torch.Tensor,
                   with_reference: bool = False) -> tuple[list[Variant], dict]:
    seg_frac = _segment_fraction(shape)
    variants: list[Variant] = []
    checks: dict = {}

    def put(m: nn.Module) -> nn.Module:
        return m.to(device=device, dtype=dtype).train()

    # The yardstick is the dense model's own FFN: transformers' Qwen2MLP.
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

    torch.manual_seed(0)
    dense = put(Qwen2MLP(Qwen2Config(hidden_size=shape.hidden, intermediate_size=shape.inter, hidden_act="silu")))
    variants.append(Variant("dense SwiGLU FFN (transformers Qwen2MLP)", "dense", 1.0,
                            _fwd_bwd(dense, x, lambda m, xi: _loss(m(xi)))))

    torch.manual_seed(1)
    ours_qwen = put(HybridMoEBlock(_moe_config(shape, segment=False, gating="qwen2_moe"), shape.hidden, shape.inter))
    budget = available_memory_bytes(device) // 2
    for routed_only in (False, True):
        k = shape.top_k if routed_only else shape.top_k - 1
        label = (f"transformers routed experts only, K={shape.top_k} of {shape.token_experts}" if routed_only
                 else "transformers Qwen2MoeSparseMoeBlock")
        for backend in TRANSFORMERS_BACKENDS:
            name = f"{label} [{backend}]"
            if backend == "batched_mm" and _batched_mm_bytes(shape, k, x.element_size()) > budget:
                need = _batched_mm_bytes(shape, k, x.element_size()) / 2**30
                variants.append(Variant(name, "transformers", 2.0,
                                        skipped=f"needs ~{need:.0f} GiB (gathers expert weights per token)"))
                continue
            block, forward = _transformers_block(shape, backend, None if routed_only else ours_qwen, routed_only)
            block = put(block)
            if not routed_only and backend == "eager" and dtype == torch.float32:
                with torch.no_grad():
                    want = block(x)
                    got = ours_qwen(x).hidden_states
                checks["ours_qwen2_moe_gating_vs_transformers_max_abs_diff"] = float((got - want).abs().max())
            variants.append(Variant(name, "transformers", 2.0, _fwd_bwd(block, x, forward)))

    torch.manual_seed(1)
    ours_tok = put(HybridMoEBlock(_moe_config(shape, segment=False), shape.hidden, shape.inter))
    variants.append(Variant("ours: token level (renorm gating)", "ours", 2.0, _fwd_bwd(ours_tok, x, _block_forward)))
    variants.append(Variant("ours: token level (qwen2_moe gating)", "ours", 2.0,
                            _fwd_bwd(ours_qwen, x, _block_forward), note="same math as transformers' block"))

    for routing in ("batch", "causal"):
        torch.manual_seed(2)
        cfg = _moe_config(shape, segment=True, routing=routing).segment
        seg = put(SegmentMoE(cfg, shape.hidden, shape.inter))
        frac = seg_frac if routing == "batch" else float(cfg.causal_top_k)
        variants.append(Variant(f"ours: segment level ({routing})", "ours", frac, _fwd_bwd(seg, x, _segment_forward)))

    hybrids = [("batch", "auto"), ("causal", "auto")] + ([("batch", "reference")] if with_reference else [])
    for routing, dispatch in hybrids:
        torch.manual_seed(3)
        block = put(HybridMoEBlock(_moe_config(shape, segment=True, routing=routing, dispatch=dispatch),
                                   shape.hidden, shape.inter))
        frac = 2.0 + (seg_frac if routing == "batch" else 1.0)
        suffix = ", reference dispatch" if dispatch == "reference" else ""
        variants.append(Variant(f"ours: hybrid block ({routing}{suffix})", "ours", frac, _fwd_bwd(block, x, _block_forward)))

    # Mixed precision as trained: fp32 weights and activations, GEMMs in bf16 under autocast.
    x32 = x.float()
    amp = "bf16 autocast, fp32 weights"
    torch.manual_seed(0)
    dense32 = Qwen2MLP(Qwen2Config(hidden_size=shape.hidden, intermediate_size=shape.inter, hidden_act="silu"))
    dense32 = dense32.to(device=device, dtype=torch.float32).train()
    dense_amp = f"dense SwiGLU FFN ({amp})"
    variants.append(Variant(dense_amp, "bf16 autocast", 1.0,
                            _fwd_bwd(dense32, x32, lambda m, xi: _loss(m(xi)), torch.bfloat16), base=dense_amp,
                            gemm_dtype="bfloat16"))
    for routing in ("batch", "causal"):
        torch.manual_seed(3)
        block = HybridMoEBlock(_moe_config(shape, segment=True, routing=routing), shape.hidden, shape.inter)
        block = block.to(device=device, dtype=torch.float32).train()
        frac = 2.0 + (seg_frac if routing == "batch" else 1.0)
        variants.append(Variant(f"ours: hybrid block ({routing}, {amp})", "bf16 autocast", frac,
                                _fwd_bwd(block, x32, _block_forward, torch.bfloat16), base=dense_amp,
                                gemm_dtype="bfloat16"))
    return variants, checks


def run_block(shape_name: str = "cpu", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              repeats: int = 5, with_reference: bool = False, progress=print) -> dict:
    device = torch.device(device)
    shape = SHAPES[shape_name]
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.seq, shape.hidden, device=device, dtype=dtype)
    variants, checks = build_variants(shape, device, dtype, x, with_reference)
    live = [v for v in variants if v.step is not None]
    progress(f"block: {shape_name} shape {asdict(shape)}, {device}, {dtype}; {len(live)} variants, "
             f"{repeats} interleaved rounds")
    for v in variants:
        if v.skipped:
            progress(f"  skip {v.name}: {v.skipped}")
    load_at_start = round(os.getloadavg()[0], 2)
    run_dtype = str(dtype).replace("torch.", "")
    probes = {}
    for d in dict.fromkeys([dtype, torch.bfloat16]):
        probes.update({name: (fn, flops, str(d).replace("torch.", "")) for name, (fn, flops) in gemm_probes(shape, device, d).items()})
    fns = {v.name: v.step for v in live} | {name: fn for name, (fn, _, _) in probes.items()}
    timed = time_interleaved(fns, device, repeats, progress=progress)
    # The machine's achievable GEMM rate per dtype and round: the faster of its two probes.
    gemm_rate: dict[str, list[float]] = {}
    for name, (_, flops, d) in probes.items():
        rates = [flops / t for t in timed.rounds[name]]
        gemm_rate[d] = [max(a, b) for a, b in zip(gemm_rate[d], rates)] if d in gemm_rate else rates
    gemm = {"threads": torch.get_num_threads(),
            "probes": [{"probe": name, "dtype": d, "gflops": round(flops / timed.median(name) / 1e9, 1),
                        "time_ms": round(timed.median(name) * 1e3, 3)} for name, (_, flops, d) in probes.items()],
            "rate_gflops": {d: round(statistics.median(r) / 1e9, 1) for d, r in gemm_rate.items()}}
    dense = variants[0].name
    rows = []
    for v in variants:
        row = {"variant": v.name, "group": v.group, "ffn_equivalents": round(v.ffn_equivalents, 4)}
        if v.skipped:
            row["skipped"] = v.skipped
        else:
            base = v.base or dense
            row.update(time_ms=timed.median(v.name) * 1e3, min_ms=min(timed.rounds[v.name]) * 1e3,
                       ideal_ms=timed.median(base) * v.ffn_equivalents * 1e3,
                       ratio_to_ideal=timed.ratio(v.name, base, v.ffn_equivalents),
                       ratio_of_minima=min(timed.rounds[v.name]) / (v.ffn_equivalents * min(timed.rounds[base])),
                       rounds_ms=[round(t * 1e3, 1) for t in timed.rounds[v.name]])
            d = v.gemm_dtype or run_dtype
            flops = v.ffn_equivalents * shape.ffn_flops
            row.update(gflops=flops / timed.median(v.name) / 1e9, gemm_dtype=d,
                       gemm_fraction=statistics.median(flops / t / g for t, g in zip(timed.rounds[v.name], gemm_rate[d])))
        if v.note:
            row["note"] = v.note
        rows.append(row)
    progress("  peak memory (one more call each)")
    for v, row in zip(variants, rows):
        if v.step is not None:
            row["peak_mib"] = mib(peak_memory_bytes(v.step, device))
    result = {"part": "block", "shape_name": shape_name, "shape": asdict(shape), "dtype": str(dtype).replace("torch.", ""),
              "repeats": repeats, "env": environment(device), "checks": checks, "rows": rows, "gemm": gemm}
    result["env"].update(loadavg_1m_at_start=load_at_start, loadavg_1m_at_end=round(os.getloadavg()[0], 2))
    result["targets"] = block_targets(result)
    return result


def block_targets(result: dict) -> list[dict]:
    if result["shape_name"] == "quick":  # the targets are stated for the real shapes only
        return []
    rows = {r["variant"]: r for r in result["rows"] if "time_ms" in r}
    on_gpu = result["env"]["device"].startswith("cuda")
    limit = 1.3 if on_gpu else 1.0
    targets = []
    for name in ("ours: hybrid block (batch)", "ours: hybrid block (causal)"):
        if name in rows:
            # Both estimators must agree: on a shared machine one noisy dense round can pull the
            # median of per-round ratios down; the ratio of minima is the other, noise-robust view.
            ratio = max(rows[name]["ratio_to_ideal"], rows[name]["ratio_of_minima"])
            targets.append({"target": f"{name}: fwd+bwd <= {limit}x FLOP-ideal (worse of median per-round "
                            "ratio and ratio of minima)", "value": round(ratio, 3), "met": ratio <= limit})
    for name, row in rows.items():
        if name.startswith("ours: hybrid block (") and "reference" not in name:
            targets.append({"target": f"{name}: fwd+bwd >= 85% of the machine's {row['gemm_dtype']} GEMM rate",
                            "value": round(row["gemm_fraction"], 3), "met": row["gemm_fraction"] >= 0.85})
    hf = {n: r for n, r in rows.items() if n.startswith("transformers Qwen2MoeSparseMoeBlock")}
    if hf:
        fastest = min(hf, key=lambda n: rows[n]["time_ms"])
        for name in ("ours: token level (renorm gating)", "ours: token level (qwen2_moe gating)"):
            if name in rows:
                # per-round ratio against the same round's fastest backend
                per_round = [a / min(rows[n]["rounds_ms"][i] for n in hf)
                             for i, a in enumerate(rows[name]["rounds_ms"])]
                ratio = sorted(per_round)[len(per_round) // 2]
                targets.append({"target": f"{name} time <= transformers' fastest backend ({fastest})",
                                "value": round(ratio, 3), "met": ratio <= 1.0})
    return targets


def block_markdown(result: dict, command: str = "") -> str:
    s, env = result["shape"], result["env"]
    head = (f"### Block, forward + backward ({result['shape_name']} shape: B={s['batch']} x S={s['seq']}, "
            f"H={s['hidden']}, I={s['inter']}, {s['token_experts']}+{s['segment_experts']} experts, "
            f"K={s['top_k']}, a={s['segment_length']}; {result['dtype']}, {env['device']})\n\n"
            + run_line(env, command, result["repeats"]) + "\n\n"
            "Time: median over rounds; ratio to ideal: median over rounds of time / (active FFNs x the dense "
            "FFN's time in the same round; for the bf16-autocast rows, the dense FFN under the same autocast); "
            "ratio of minima: the same with each variant's fastest round. Peak: bytes held by torch's allocator above those live at the "
            "call's start (CPU: summed from torch.profiler's allocation events; CUDA: max_memory_allocated).\n")
    rows = []
    for r in result["rows"]:
        rows.append({**r, "variant": r["variant"] + (f" (skipped: {r['skipped']})" if "skipped" in r else "")})
    table = markdown_table([("variant", "variant"), ("time_ms", "time (ms)"), ("min_ms", "min (ms)"),
                            ("peak_mib", "peak (MiB)"),
                            ("ffn_equivalents", "active FFNs/token"), ("ideal_ms", "FLOP-ideal (ms)"),
                            ("ratio_to_ideal", "ratio to ideal"), ("ratio_of_minima", "ratio of minima"),
                            ("gflops", "GFLOP/s"), ("gemm_fraction", "of GEMM rate")], rows)
    gemm = result.get("gemm")
    if gemm:
        table += ("\nGEMM rate of this machine, same rounds, " + f"{gemm['threads']} threads: "
                  + "; ".join(f"{p['probe'][len(GEMM_PREFIX) + 1:]} {p['gflops']} GFLOP/s" for p in gemm["probes"])
                  + ". Rate used (the faster probe, per round): "
                  + ", ".join(f"{d} {g} GFLOP/s" for d, g in gemm["rate_gflops"].items()) + ".\n")
    checks = "".join(f"\nCheck: {k} = {v:.2e}" for k, v in result["checks"].items())
    return head + "\n" + table + "\n" + checks + "\n\n" + targets_markdown(result["targets"])


def targets_markdown(targets: list[dict]) -> str:
    if not targets:
        return ""
    return "Targets:\n" + "\n".join(f"- {t['target']}: {t['value']} -> {'met' if t['met'] else 'NOT met'}"
                                    for t in targets) + "\n"
