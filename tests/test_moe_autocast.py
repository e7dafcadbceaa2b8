"""Mixed precision (issue 11, item 3): the MoE block and model under `torch.autocast` in bf16,
which is what Accelerate's bf16 mode runs. Routers and balance statistics stay in fp32, expert
GEMMs run in bf16, and the results stay within bf16's error of the fp32 reference.

Tolerances (stated here, checked below): an error is the largest absolute difference divided by
the largest magnitude of the fp32 reference tensor (`rel_err`).
- block, forward output: <= 2e-2 (bf16 keeps 8 bits: ~4e-3 per rounding, a few roundings deep);
- block, gradients of the input and of every weight matrix: <= 3e-2 (largest seen: 2.2e-2, the
  segment router of batch routing); the gradient of the scalar segment gate of `preserving`
  fusion: <= 1e-1 (a sum over every token and channel, with cancellation: 5.2e-2 seen);
- model (2 layers, upcycled with noise 0.02): logits <= 3e-2 on the tokens before the first
  routing decision that differs from fp32 in any layer (at least half of them: the routers'
  inputs come out of bf16 attention, so a near-tie may flip); loss within 1e-2 absolute; each
  parameter's gradient at cosine >= 0.97 to fp32's (gradients sum over every token, flipped ones
  included; routed experts' summed over the experts, where a flip moves a token), the routers' at cosine >= 0.9 (0.944 seen: a router's gradient is
  <dy, y_e> over experts that are still near copies of one FFN, so it lives in the differences
  between expert outputs, each rounded to bf16, as in any MoE under autocast);
- one Accelerate bf16 training step (SGD): each trained tensor's update, the same cosines.
Routing decisions of the block are compared exactly: its routers see the same fp32 input.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from multipl_moe.moe import HybridMoEBlock, HybridMoEConfig, SegmentMoEConfig, SwiGLUExperts, TokenMoEConfig
from multipl_moe.moe.reference import reference_block

H, I = 16, 40   # I and 2I appear in expert GEMMs only: routers are [H] -> [E] with E <= 6
BF16 = torch.bfloat16
BLOCK_FWD_TOL, BLOCK_GRAD_TOL, SCALAR_GRAD_TOL = 2e-2, 3e-2, 1e-1
MODEL_LOGITS_TOL, MODEL_LOSS_ATOL, MODEL_GRAD_COS, ROUTER_GRAD_COS = 3e-2, 1e-2, 0.97, 0.9


def grad_cos_tol(name: str) -> float:
    return ROUTER_GRAD_COS if "router" in name else MODEL_GRAD_COS


def comparable(name: str, g: torch.Tensor) -> torch.Tensor:
    """Routed experts' gradients summed over the experts: a flipped token moves its gradient
    from one expert to another, and the sum does not depend on which."""
    return g.sum(0) if ".experts." in name else g


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp(min=1e-30))


VARIANTS = {
    "batch-fixed": dict(segment=dict(routing="batch", capacity_factor=2.0, max_experts_per_segment=2)),
    "causal-fixed": dict(segment=dict(routing="causal", causal_top_k=2)),
    "batch-preserving": dict(fusion="preserving", segment=dict(routing="batch")),
    "causal-preserving-max": dict(fusion="preserving", segment=dict(routing="causal", pooling="max")),
    "token-only": dict(token_weight=1.0, segment=dict(num_experts=0)),
    "qwen2_moe-gating": dict(token_weight=1.0, token=dict(gating="qwen2_moe"), segment=dict(num_experts=0)),
}


def make_block(variant: str, dispatch: str = "auto") -> HybridMoEBlock:
    torch.manual_seed(0)
    kw = copy.deepcopy(VARIANTS[variant])
    seg = SegmentMoEConfig(segment_length=4, **kw.pop("segment"))
    tok = TokenMoEConfig(freeze_shared_expert=False, **kw.pop("token", {}))
    block = HybridMoEBlock(HybridMoEConfig(token=tok, segment=seg, dispatch=dispatch, **kw), H, I)
    with torch.no_grad():
        if hasattr(block, "segment_gate"):
            block.segment_gate.fill_(0.5)  # not 0: the segment level must count in the comparison
    return block.train()


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 13, H, generator=g)
    real = torch.ones(2, 13, dtype=torch.bool)
    real[1, :3] = False
    return x, real


def run(block, x, real, autocast: bool, reference: bool = False):
    """Output on real tokens, and the gradients of the input and of every parameter."""
    b = copy.deepcopy(block)
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        out = reference_block(b, xi, real) if reference else b(xi, real).hidden_states
    (out[real].float() * torch.linspace(-1, 1, H)).sum().backward()
    return [out[real], xi.grad] + [p.grad for p in b.parameters() if p.requires_grad]


# ---------------------------------------------------------------- block: bf16 autocast vs fp32 reference
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # the loop reference's sort key
@pytest.mark.parametrize("dispatch", ["grouped", "reference"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_under_bf16_autocast_matches_the_fp32_reference(variant, dispatch):
    block = make_block(variant, dispatch)
    x, real = batch()
    got = run(block, x, real, autocast=True)
    want = run(block, x, real, autocast=False, reference=variant not in ("qwen2_moe-gating",))
    assert got[0].dtype == BF16  # like an nn.Linear FFN under autocast
    assert rel_err(got[0], want[0]) <= BLOCK_FWD_TOL
    for g, w in zip(got[1:], want[1:]):
        assert g is not None and g.dtype == torch.float32  # parameters keep fp32 gradients
        tol = SCALAR_GRAD_TOL if g.dim() == 0 else BLOCK_GRAD_TOL
        assert rel_err(g, w) <= tol, (g.shape, rel_err(g, w))


# ---------------------------------------------------------------- routers in fp32, experts in bf16
class MatmulDtypes(TorchDispatchMode):
    """Records (is an expert GEMM, dtype) for every matrix product that runs, forward and backward."""

    OPS = ("aten.mm", "aten.bmm", "aten.addmm", "aten.baddbmm", "aten._grouped_mm", "aten.mv")

    def __init__(self, expert_dims=(I, 2 * I)):
        super().__init__()
        self.expert_dims = expert_dims
        self.seen: list[tuple[bool, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(self.OPS):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            expert = any(d in self.expert_dims for t in tensors for d in t.shape)
            self.seen.append((expert, tensors[0].dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dispatch", ["grouped", "reference"])
@pytest.mark.parametrize("variant", ["batch-fixed", "causal-fixed", "qwen2_moe-gating"])
def test_routers_run_in_fp32_and_expert_gemms_in_bf16(variant, dispatch):
    block = make_block(variant, dispatch)
    x, real = batch()
    with torch.no_grad():
        plain = block.token_moe.route(x.view(-1, H))
    rec = MatmulDtypes()
    with rec:
        with torch.autocast("cpu", dtype=BF16):
            routing = block.token_moe.route(x.view(-1, H))
            out = block(x.requires_grad_(True), real)
        (out.hidden_states.float().sum() + out.aux_loss).backward()
    for t in (routing.logits_TX, routing.routed_weight_TK, routing.shared_weight_T, routing.routed_probs_TE,
              out.aux_loss, *(v for k, v in out.stats.items() if k.endswith("loss"))):
        assert t.dtype == torch.float32
    # the same decisions as without autocast (before the fix, 1 of 128 flipped in a probe)
    assert torch.equal(routing.routed_idx_TK, plain.routed_idx_TK)
    expert = {dt for is_expert, dt in rec.seen if is_expert}
    router = {dt for is_expert, dt in rec.seen if not is_expert}
    assert expert == {BF16}, expert
    assert router == {torch.float32}, router


def test_segment_router_logits_are_fp32_under_autocast():
    for variant in ("batch-fixed", "causal-fixed"):
        block = make_block(variant)
        x, real = batch()
        with torch.autocast("cpu", dtype=BF16):
            seg = block.segment_moe(x, real, compute_balance_loss=True)
        assert seg.z_logits_GE.dtype == torch.float32
        assert seg.y_BLH.dtype == BF16
        if seg.balance_loss is not None:
            assert seg.balance_loss.dtype == torch.float32


def test_causal_decoding_under_autocast_equals_its_full_forward():
    """The incremental path runs the same bf16 GEMMs as the full forward, row for row."""
    block = make_block("causal-fixed").eval()
    x = torch.randn(2, 9, H)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        full = block(x).hidden_states
        state, steps = None, []
        for lo, hi in ((0, 5), (5, 6), (6, 7), (7, 9)):
            out = block(x[:, lo:hi], None, state)
            state = out.segment_state
            steps.append(out.hidden_states)
    assert rel_err(torch.cat(steps, 1), full) <= BLOCK_FWD_TOL


def test_experts_keep_their_dtype_without_autocast():
    """No autocast: nothing is cast (a bf16 model runs bf16, an fp32 one fp32)."""
    torch.manual_seed(0)
    for dtype in (torch.float32, BF16):
        e = SwiGLUExperts(3, H, I).to(dtype)
        x = torch.randn(20, H, dtype=dtype)
        y = e.forward_weighted(x, torch.randint(0, 3, (20, 2)), torch.rand(20, 2))
        assert y.dtype == dtype


# ---------------------------------------------------------------- the whole model
@pytest.fixture(scope="module")
def tiny_moe(tiny_base_factory):
    from multipl_moe.moe.presets import resolve_preset
    from multipl_moe.modeling.upcycle import load_dense, upcycle_model

    def make(preset):
        dense = load_dense(str(tiny_base_factory("qwen2")), "float32")
        moe = resolve_preset(preset, {"segment.segment_length": 4, "token.freeze_shared_expert": False})
        return upcycle_model(dense, moe, noise_std=0.02, seed=0).float().train()

    return make


class RoutingRecorder:
    """Which tokens every MoE layer routed where: token-level choices, and the segment experts
    each token got (causal: its segment's top-k; batch: the experts that took its segment)."""

    def __init__(self, model):
        self.decisions: list[torch.Tensor] = []
        self.handles = []
        for block in (m for m in model.modules() if isinstance(m, HybridMoEBlock)):
            self.handles.append(block.token_moe.register_forward_hook(self._token))
            if block.segment_moe is not None:
                self.handles.append(block.segment_moe.register_forward_hook(self._segment))

    def _token(self, module, args, out):
        self.decisions.append(out[1].routed_idx_TK.sort(-1).values)

    def _segment(self, module, args, out):
        x = args[0]
        B, L, _ = x.shape
        a, E = module.config.segment_length, module.config.num_experts
        if out.chosen_rows_Er is None:  # causal: the top-k of each segment's routing logits
            k = module.config.causal_top_k
            top = out.z_logits_GE.view(B, -1, E).topk(k, -1).indices.sort(-1).values
            self.decisions.append(top.repeat_interleave(a, 1)[:, :L].reshape(B * L, k))
        else:  # batch: one bit per expert, set when the expert took the token's segment
            R = (L + a - 1) // a
            taken = torch.zeros(B * R, E, dtype=torch.long)
            for e in range(E):
                rows = out.chosen_rows_Er[e][out.chosen_gates_Er[e] > 0]
                taken[rows, e] = 1
            self.decisions.append(taken.view(B, R, E).repeat_interleave(a, 1)[:, :L].reshape(B * L, E))

    def close(self):
        for h in self.handles:
            h.remove()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))


@pytest.mark.parametrize("preset", ["paper", "paper-causal", "preserving"])
def test_model_forward_and_backward_under_bf16_autocast(preset, tiny_moe):
    """bf16 changes the routers' *inputs* (attention runs in bf16 too), so a near-tied routing
    decision may flip; a flipped token is no rounding error. The logits are compared on each
    sequence's tokens before the first routing difference in any layer (at least half of them),
    the loss and the parameter gradients (sums over every token) by MODEL_LOSS_ATOL and
    MODEL_GRAD_COS."""
    model = tiny_moe(preset)
    if hasattr(model.model.layers[0].mlp, "segment_gate"):
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mlp.segment_gate.fill_(0.5)
    ids = torch.randint(3, 259, (2, 17), generator=torch.Generator().manual_seed(0))
    results = []
    for autocast in (False, True):
        m = copy.deepcopy(model)
        rec = RoutingRecorder(m)
        with torch.autocast("cpu", dtype=BF16, enabled=autocast):
            out = m(input_ids=ids, labels=ids, use_cache=False)
        rec.close()
        (out.loss + out.aux_loss).backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        results.append((out, grads, rec.decisions))
    (ref, ref_grads, ref_dec), (got, got_grads, got_dec) = results
    assert got.aux_loss.dtype == torch.float32 and got.logits.dtype == BF16
    same = torch.ones(ids.numel(), dtype=torch.bool)
    for d_ref, d_got in zip(ref_dec, got_dec, strict=True):
        same &= (d_ref == d_got).all(-1)
    # A flipped token changes every later token of its sequence (attention), and in batch mode
    # the segments it competes with: compare each sequence up to its first difference.
    prefix = same.view(ids.shape).long().cumprod(1).bool()
    assert prefix.float().mean() >= 0.5, f"routing differs from position {prefix.sum(1).tolist()} on"
    assert rel_err(got.logits[prefix], ref.logits[prefix]) <= MODEL_LOGITS_TOL
    assert abs(float(got.loss) - float(ref.loss)) <= MODEL_LOSS_ATOL
    assert set(got_grads) == set(ref_grads)
    for n in ref_grads:
        c = cosine(comparable(n, got_grads[n]), comparable(n, ref_grads[n]))
        assert c >= grad_cos_tol(n), (n, c)


def test_a_training_step_in_accelerates_bf16_mode_on_cpu(tiny_moe):
    """Accelerate's bf16 mode on CPU (what `precision: bf16` gives the trainer): the prepared
    model's forward runs under autocast; the step must run, with experts in bf16, and move the
    trainable weights as an fp32 step does, within bf16's error."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    model = tiny_moe("paper-causal")
    ids = torch.randint(3, 259, (4, 17), generator=torch.Generator().manual_seed(1))
    deltas = []
    try:
        for precision in ("no", "bf16"):
            AcceleratorState._reset_state(True)
            GradientState._reset_state()
            accelerator = Accelerator(mixed_precision=precision, cpu=True)
            m = copy.deepcopy(model)
            before = {n: p.detach().clone() for n, p in m.named_parameters()}
            opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
            m, opt = accelerator.prepare(m, opt)
            # 2I: only the experts' fused gate/up projections have that size
            rec = MatmulDtypes(expert_dims=(2 * model.config.intermediate_size,))
            with rec:
                out = m(input_ids=ids, labels=ids, use_cache=False)
            loss = out.loss + out.aux_loss
            assert torch.isfinite(loss)
            accelerator.backward(loss)
            opt.step()
            if precision == "bf16":
                assert (True, BF16) in rec.seen  # the experts really ran in bf16
            unwrapped = accelerator.unwrap_model(m)
            deltas.append({n: p.detach() - before[n] for n, p in unwrapped.named_parameters() if p.requires_grad})
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    fp32, bf16 = deltas
    moved = [n for n in fp32 if fp32[n].abs().max() > 0]
    assert any("experts" in n for n in moved) and any("router" in n for n in moved)
    for n in moved:
        c = cosine(comparable(n, bf16[n]), comparable(n, fp32[n]))
        assert c >= grad_cos_tol(n), (n, c)
