"""Model benchmark: a small Qwen2-shaped model, dense vs token-only MoE vs hybrid.

- Training: tokens/s of one optimizer step (forward, backward, AdamW), all parameters trainable in
  every variant (the shared expert too), so that the variants differ only in their FFNs.
- Decoding: greedy `generate` with the KV cache at batch 1 and 8. Reported: tokens/s of the whole
  call (prefill included) and the per-step time of decoding alone, (t(N new) - t(1 new)) / (N - 1).
  The hybrid block decodes with the KV cache only with `causal` segment routing; `batch` routing
  recomputes the whole prefix at every step (shown for comparison).

Every MoE model is upcycled from the same random dense model (`upcycle_model`), so the token and
segment experts start as copies of its FFN.

Bytes-ideal of a decode step (issue 18): the time the step would take if it cost only its weight
reads at the machine's achievable memory bandwidth. Bytes read per step = every parameter except
the experts and the input embedding (attention, norms, routers, shared expert, LM head), plus the
experts actually read: one untimed generate per model and batch records, at every decode step,
the distinct experts each expert bank is called with (`SwiGLUExperts.forward_weighted`; at batch
8 that is the union over the batch), plus one embedding row per sequence. The bandwidth is
measured in the same interleaved rounds with the same threads: a sum over a buffer far larger
than the caches, and a matrix-vector product over one; the faster is the machine's rate. The ratio
step time / bytes-ideal is taken per round (median); the KV cache's reads are not counted.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, replace

import torch

from ..moe.presets import PRESETS
from .common import environment, markdown_table, mib, peak_memory_bytes, run_line, time_interleaved


@dataclass
class ModelShape:
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    train_batch: int
    train_seq: int
    prompt: int
    new_tokens: int
    segment_length: int = 64
    bandwidth_mib: int = 512    # buffer of the memory-bandwidth probes: far past the caches


SHAPES = {
    "cpu": ModelShape(512, 1376, 4, 8, 2, 4096, train_batch=2, train_seq=1024, prompt=64, new_tokens=48),
    "paper": ModelShape(2048, 5504, 4, 16, 16, 32000, train_batch=8, train_seq=1024, prompt=128, new_tokens=128),
    "quick": ModelShape(64, 176, 2, 4, 2, 512, train_batch=2, train_seq=64, prompt=8, new_tokens=6, segment_length=16,
                        bandwidth_mib=16),
}

DECODE_BATCHES = (1, 8)

# (name, preset or None for the dense model)
VARIANTS = [
    ("dense", None),
    ("token-only MoE", "token-only"),
    ("hybrid (batch routing)", "paper"),
    ("hybrid (causal routing)", "paper-causal"),
]


def build_models(shape: ModelShape, device: torch.device, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    from transformers import AutoModelForCausalLM

    from ..modeling.tiny import tiny_config
    from ..modeling.upcycle import upcycle_model

    config = tiny_config("qwen2", vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.inter,
                         num_layers=shape.layers, num_heads=shape.heads, num_kv_heads=shape.kv_heads,
                         max_positions=max(shape.train_seq, shape.prompt + shape.new_tokens) + 8)
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(config).to(dtype)
    models = {}
    for name, preset in VARIANTS:
        if preset is None:
            model = dense
        else:
            moe = PRESETS[preset][1]
            moe = replace(moe, segment=replace(moe.segment, segment_length=shape.segment_length))
            model = upcycle_model(dense, moe)
        for p in model.parameters():
            p.requires_grad_(True)
        models[name] = model.to(device)
    return models


def _bandwidth_probes(nbytes: int, device: torch.device, dtype: torch.dtype) -> dict:
    """{name: (call, bytes read)}: read-bound calls over `nbytes` of fresh memory."""
    n = nbytes // torch.finfo(dtype).bits * 8
    buf = torch.ones(n, device=device, dtype=dtype)
    cols = 4096
    mat = buf[: (n // cols) * cols].view(-1, cols)
    vec = torch.ones(cols, device=device, dtype=dtype)
    return {"bandwidth probe | sum": (lambda: buf.sum(), buf.numel() * buf.element_size()),
            "bandwidth probe | mv": (lambda: torch.mv(mat, vec), mat.numel() * mat.element_size())}


def decode_bytes_per_step(model, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Weight bytes one decode step reads (see the module docstring), from an untimed generate."""
    from ..moe.experts import SwiGLUExperts

    banks = [m for m in model.modules() if isinstance(m, SwiGLUExperts)]
    bank_params = {id(p) for m in banks for p in m.parameters()}
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    seen, fixed = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in bank_params or (p is emb and p is not head):
            continue
        seen.add(id(p))
        fixed += p.numel() * p.element_size()
    batch = prompt.shape[0]
    fixed += batch * emb.shape[1] * emb.element_size()
    per_expert = {id(m): sum(p.numel() * p.element_size() for p in m.parameters()) // m.num_experts for m in banks}
    read: list[int] = []   # expert bytes per call made with one row per sequence (a decode step)
    originals = {}

    def recording(bank, original):
        def forward_weighted(x_TH, expert_idx_TK, weight_TK):
            if x_TH.shape[0] == batch:
                read.append(int(expert_idx_TK.unique().numel()) * per_expert[id(bank)])
            return original(x_TH, expert_idx_TK, weight_TK)
        return forward_weighted

    for bank in banks:
        originals[bank] = bank.forward_weighted
        bank.forward_weighted = recording(bank, bank.forward_weighted)
    try:
        _generate(model, prompt, new_tokens)()
    finally:
        for bank in banks:
            del bank.forward_weighted   # the instance attribute: the class method again
    steps = new_tokens - 1
    experts = sum(read) / steps if banks and steps else 0.0
    return {"bytes_per_step": fixed + experts, "fixed_bytes": fixed, "expert_bytes": experts,
            "expert_calls_per_step": len(read) / steps if steps else 0.0}


def _train_step(model, ids, optimizer):
    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def _generate(model, ids, new_tokens):
    mask = torch.ones_like(ids)

    def call():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=2)
        assert out.shape[1] == ids.shape[1] + new_tokens
    return call


def run_model(shape_name: str = "cpu", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              repeats: int = 3, progress=print) -> dict:
    device = torch.device(device)
    shape = SHAPES[shape_name]
    models = build_models(shape, device, dtype)
    g = torch.Generator().manual_seed(0)
    progress(f"model: {shape_name} shape {asdict(shape)}, {device}, {dtype}")

    load_at_start = round(os.getloadavg()[0], 2)
    # ---- training
    ids = torch.randint(3, shape.vocab, (shape.train_batch, shape.train_seq), generator=g).to(device)
    steps = {}
    for name, model in models.items():
        model.train()
        steps[name] = _train_step(model, ids, torch.optim.AdamW(model.parameters(), lr=1e-5))
    progress(f"  training: batch {shape.train_batch} x {shape.train_seq} tokens, {repeats} interleaved rounds")
    timed = time_interleaved(steps, device, repeats, progress=progress)
    n_tokens = shape.train_batch * shape.train_seq
    train_rows = []
    for name, model in models.items():
        row = {"model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "step_ms": timed.median(name) * 1e3, "tokens_per_s": n_tokens / timed.median(name),
               "vs_dense": timed.ratio(name, "dense"), "rounds_ms": [round(t * 1e3, 1) for t in timed.rounds[name]]}
        train_rows.append(row)
    progress("  training peak memory (one more step each)")
    for row in train_rows:
        row["peak_mib"] = mib(peak_memory_bytes(steps[row["model"]], device))
    for model in models.values():
        model.zero_grad(set_to_none=True)
    del steps

    # ---- decoding
    decode_rows = []
    bandwidth = {}
    for batch in DECODE_BATCHES:
        prompt = torch.randint(3, shape.vocab, (batch, shape.prompt), generator=g).to(device)
        calls = {}
        reads = {}
        for name, model in models.items():
            model.eval()
            calls[f"{name} | full"] = _generate(model, prompt, shape.new_tokens)
            calls[f"{name} | first"] = _generate(model, prompt, 1)
            reads[name] = decode_bytes_per_step(model, prompt, shape.new_tokens)
        probes = _bandwidth_probes(shape.bandwidth_mib << 20, device, dtype)
        calls.update({k: fn for k, (fn, _) in probes.items()})
        progress(f"  decoding: batch {batch}, prompt {shape.prompt}, {shape.new_tokens} new tokens, "
                 f"{repeats} interleaved rounds")
        timed = time_interleaved(calls, device, repeats, progress=progress)
        per_step = {}
        for name, model in models.items():
            full, first = f"{name} | full", f"{name} | first"
            per_step[name] = [(a - b) / (shape.new_tokens - 1) for a, b in zip(timed.rounds[full], timed.rounds[first])]
        # the machine's read bandwidth per round: the faster probe
        bw = [max(nb / timed.rounds[k][i] for k, (_, nb) in probes.items()) for i in range(repeats)]
        bandwidth[batch] = {"gb_per_s": round(statistics.median(bw) / 1e9, 2),
                            "probes_gb_per_s": {k.split("| ")[1]: round(nb / timed.median(k) / 1e9, 2)
                                                for k, (_, nb) in probes.items()}}
        for name, model in models.items():
            full = f"{name} | full"
            ms = statistics.median(per_step[name]) * 1e3
            nbytes = reads[name]["bytes_per_step"]
            ideal = [nbytes / b for b in bw]
            ratio_tok = statistics.median(a / b for a, b in zip(per_step[name], per_step["token-only MoE"]))
            decode_rows.append({
                "model": name, "batch": batch,
                "kv_cache": models[name].generation_config.use_cache is not False,
                "tokens_per_s": batch * shape.new_tokens / timed.median(full),
                "decode_step_ms": ms, "decode_tokens_per_s": batch / (ms / 1e3),
                "step_vs_token_only": ratio_tok,
                # Without the KV cache (batch routing) a step recomputes the prefix: not weight-bound.
                **({"bytes_per_step_mib": nbytes / 2**20,
                    "expert_mib_per_step": reads[name]["expert_bytes"] / 2**20,
                    "bytes_ideal_ms": statistics.median(ideal) * 1e3,
                    "vs_bytes_ideal": statistics.median(t / i for t, i in zip(per_step[name], ideal))}
                   if models[name].generation_config.use_cache is not False else {})})
    result = {"part": "model", "shape_name": shape_name, "shape": asdict(shape),
              "dtype": str(dtype).replace("torch.", ""), "repeats": repeats, "env": environment(device),
              "train": train_rows, "decode": decode_rows, "bandwidth": bandwidth}
    result["env"].update(loadavg_1m_at_start=load_at_start, loadavg_1m_at_end=round(os.getloadavg()[0], 2))
    result["targets"] = model_targets(result)
    return result


def model_targets(result: dict) -> list[dict]:
    targets = []
    if result["shape_name"] == "quick":  # the targets are stated for the real shapes only
        return targets
    for row in result["decode"]:
        if row["model"] == "hybrid (causal routing)":
            targets.append({"target": f"causal-mode decode step <= 1.1x its bytes-ideal (batch {row['batch']})",
                            "value": round(row["vs_bytes_ideal"], 3), "met": row["vs_bytes_ideal"] <= 1.1})
    return targets


def model_markdown(result: dict, command: str = "") -> str:
    from .block import targets_markdown

    s, env = result["shape"], result["env"]
    head = (f"### Model ({result['shape_name']} shape: Qwen2-shaped, {s['layers']} layers, H={s['hidden']}, "
            f"I={s['inter']}, {s['heads']}/{s['kv_heads']} heads, vocab {s['vocab']}, a={s['segment_length']}; "
            f"{result['dtype']}, {env['device']})\n\n" + run_line(env, command, result["repeats"]) + "\n")
    train = markdown_table([("model", "model"), ("params_m", "params (M)"), ("step_ms", "step (ms)"),
                            ("tokens_per_s", "train tokens/s"), ("vs_dense", "time vs dense"),
                            ("peak_mib", "peak (MiB)")], result["train"])
    decode = markdown_table([("model", "model"), ("batch", "batch"), ("kv_cache", "KV cache"),
                             ("tokens_per_s", "generate tokens/s"), ("decode_step_ms", "decode step (ms)"),
                             ("decode_tokens_per_s", "decode tokens/s"),
                             ("step_vs_token_only", "step vs token-only"),
                             ("bytes_per_step_mib", "weights read/step (MiB)"),
                             ("bytes_ideal_ms", "bytes-ideal (ms)"), ("vs_bytes_ideal", "step / bytes-ideal")],
                            result["decode"])
    bw = "; ".join(f"batch {b}: {v['gb_per_s']} GB/s (" + ", ".join(f"{k} {g}" for k, g in v["probes_gb_per_s"].items())
                   + ")" for b, v in result.get("bandwidth", {}).items())
    return (head + f"\nTraining, forward + backward + AdamW, batch {s['train_batch']} x {s['train_seq']}:\n\n"
            + train + f"\n\nGreedy generation, prompt {s['prompt']}, {s['new_tokens']} new tokens "
            "(decode step = (t(N new) - t(1 new)) / (N - 1); bytes-ideal = weights read per step / the machine's "
            "read bandwidth measured in the same rounds):\n\n" + decode + "\n\nRead bandwidth: " + bw + "\n\n"
            + targets_markdown(result["targets"]))
