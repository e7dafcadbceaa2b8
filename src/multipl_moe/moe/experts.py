"""SwiGLU experts stored as fused 3-D weights, and the seam where a fast dispatch replaces the loop.

Shape legend: N rows (tokens, possibly repeated once per chosen expert), H hidden size,
I expert intermediate size, E experts, F = 2I (gate and up projections fused).

The weight layout is transformers 5's for MoE models (`gate_up_proj [E, 2I, H]`,
`down_proj [E, H, I]`), so weights move to and from Qwen2-MoE checkpoints without reshaping.

Three entry points, each with a readable `reference` path and a fast one behind `dispatch`:
- `forward(x_NH, expert_idx_N)`: row n through expert `expert_idx[n]`, rows returned in order;
- `forward_weighted(x_TH, expert_idx_TK, weight_TK)`: token choice, sum_k w[t,k] E_{idx[t,k]}(x[t]);
- `forward_sorted(x_NH, rows_per_expert)`: rows already grouped by expert (expert choice).
Every combine is a gather and a sum in a fixed order, never a scatter-add with colliding indices
(non-deterministic on GPUs), in the forward and in the hand-written backwards alike.

The fast path on CPU (and wherever `grouped_mm` is missing) is `_GroupedSwiGLU`: one GEMM per
expert (one batched GEMM when all groups are equal, as in expert choice), elementwise steps over
all rows at once, and a hand-written backward that reuses the saved activations as workspace; on
CUDA it is `grouped_mm` through autograd. Decoding-sized calls (fewer than 16 rows) compute each
row alone (`_decode_rows` without gradients). Row stability (`_swiglu_row_stable`) holds on
every path: for a given call size, a row's result never depends on how the other rows were routed.

Mixed precision: under `torch.autocast` the fast paths run their GEMMs in the autocast dtype, as
autocast would run an `nn.Linear`. Autocast cannot see inside them (`grouped_mm`, the `out=` GEMMs
and the hand-written backwards), so the activations and weights are cast explicitly
(`compute_dtype`) and the kernels run with autocast off; the weights' gradients flow back through
the casts in the parameters' own dtype. The `reference` path is plain `F.linear`: autocast casts it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype GEMMs on `x` run in: autocast's, when it is on for x's device, else x's own."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.is_floating_point() and x.dtype != torch.float64:
        return torch.get_autocast_dtype(device)
    return x.dtype


def autocast_off(x: torch.Tensor):
    """A context with autocast disabled on x's device (a no-op context when it is already off)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def fp32_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight^T in fp32 whatever autocast says: routers. Autocast would recast `F.linear` to
    bf16 and undo a `.float()` (1 of 128 routing decisions flipped in a probe), and the balance
    statistics built from the probabilities would come out in bf16."""
    with autocast_off(x):
        return F.linear(x.float(), weight.float())


def _activation(name: str):
    if name in ("silu", "swish"):
        return F.silu
    from transformers.activations import ACT2FN

    return ACT2FN[name]


class SwiGLUMLP(nn.Module):
    """One dense SwiGLU FFN (the shared expert), named like transformers' Qwen2/Llama MLP."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu"):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = _activation(hidden_act)

    def forward(self, x_NH: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x_NH)) * self.up_proj(x_NH))

    def forward_fused(self, x_NH: torch.Tensor) -> torch.Tensor:
        """`forward` through the experts' training fast path (`_GroupedSwiGLU`, one group of all
        rows), with the gate and up weights concatenated on the fly (a weight-sized copy, small
        next to a training batch's activations; without gradients it is plain `forward`). The
        layout stays Qwen2's, so checkpoints and export are unchanged."""
        weights = (self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)
        dtype = compute_dtype(x_NH)
        if (self.act_fn is not F.silu or x_NH.dtype != weights[0].dtype
                or not _needs_grad(x_NH, *weights)):  # inference gains nothing from it: no cat
            return self.forward(x_NH)
        shape = x_NH.shape
        x_nH = x_NH.reshape(-1, shape[-1]).to(dtype)
        with autocast_off(x_NH):
            gate_up_1FH = torch.cat([weights[0], weights[1]]).to(dtype).unsqueeze(0)
            y_nH = _GroupedSwiGLU.apply(x_nH, gate_up_1FH, weights[2].to(dtype).unsqueeze(0), (x_nH.shape[0],))
        return y_nH.view(shape)


class SwiGLUExperts(nn.Module):
    """E SwiGLU experts with fused weights; `forward(x_NH, expert_idx_N)` runs row n through its expert."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int,
                 hidden_act: str = "silu", dispatch: str = "auto"):
        super().__init__()
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.act_fn = _activation(hidden_act)
        self.dispatch = dispatch
        nn.init.normal_(self.gate_up_proj, std=0.02)
        nn.init.normal_(self.down_proj, std=0.02)

    @torch.no_grad()
    def load_dense(self, gate_proj_IH: torch.Tensor, up_proj_IH: torch.Tensor, down_proj_HI: torch.Tensor,
                   noise_std: float = 0.0, generator: torch.Generator | None = None) -> None:
        """Sparse upcycling: every expert becomes a copy of the dense FFN (plus optional noise)."""
        self.gate_up_proj.copy_(torch.cat([gate_proj_IH, up_proj_IH], dim=0).expand_as(self.gate_up_proj))
        self.down_proj.copy_(down_proj_HI.expand_as(self.down_proj))
        if noise_std > 0:
            for w in (self.gate_up_proj, self.down_proj):
                noise = torch.randn(w.shape, generator=generator, dtype=torch.float32) * noise_std
                w.add_(noise.to(w.device, w.dtype))

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x and the two weights in the dtype the GEMMs run in (`compute_dtype`)."""
        dtype = compute_dtype(x)
        gate_up, down = self.gate_up_proj, self.down_proj
        if gate_up.dtype != dtype:  # autocast: a differentiable cast, as autocast's own
            gate_up, down = gate_up.to(dtype), down.to(dtype)
        return x.to(dtype), gate_up, down

    def forward(self, x_NH: torch.Tensor, expert_idx_N: torch.Tensor) -> torch.Tensor:
        if self.dispatch == "reference":
            return self.forward_reference(x_NH, expert_idx_N)
        return self.forward_grouped(x_NH, expert_idx_N)

    def forward_weighted(self, x_TH: torch.Tensor, expert_idx_TK: torch.Tensor,
                         weight_TK: torch.Tensor) -> torch.Tensor:
        """y[t] = sum_k weight[t, k] * E_{expert_idx[t, k]}(x[t]): token-choice routing in one call.

        The k-th choices are summed in k order, a deterministic combine, on either path.
        """
        T, K = expert_idx_TK.shape
        if self.dispatch == "reference":
            w_TK = weight_TK.to(compute_dtype(x_TH))
            rows_NH = x_TH.unsqueeze(1).expand(T, K, x_TH.shape[1]).reshape(T * K, -1)
            y_TKH = self.forward_reference(rows_NH, expert_idx_TK.reshape(-1)).view(T, K, -1)
            return (y_TKH * w_TK.unsqueeze(-1)).sum(1)
        x_TH, gate_up, down = self._operands(x_TH)
        with autocast_off(x_TH):
            w_TK = weight_TK.to(x_TH.dtype)
            if (T * K < _ROW_STABLE_MIN_ROWS and x_TH.device.type == "cpu" and self.act_fn is F.silu
                    and not _needs_grad(x_TH, w_TK, gate_up, down)):
                return self._decode_rows(x_TH, expert_idx_TK, w_TK, gate_up, down)
            # The fast path never builds the [T, K, H] copies: it gathers x's rows straight into
            # expert order, applies the gates there, and sums the K choices while unsorting.
            idx_N = expert_idx_TK.reshape(-1)
            order_N, inverse_N = _sort_by_expert(idx_N)
            src_N = torch.div(order_N, K, rounding_mode="floor") if K > 1 else order_N
            x_sorted_NH = _gather_rows(x_TH, src_N, inverse_N, K)
            y_sorted_NH = self._grouped(x_sorted_NH, torch.bincount(idx_N, minlength=self.num_experts),
                                        gate_up, down)
            if _needs_grad(y_sorted_NH, w_TK):
                return _WeightedScatterRows.apply(y_sorted_NH, w_TK.reshape(-1), order_N, inverse_N, K)
            return _unsort_rows(y_sorted_NH, inverse_N, K, w_TK.reshape(-1))

    def _decode_rows(self, x_TH, expert_idx_TK, w_TK, gate_up_EFH, down_EHI):
        """Decoding-sized calls (fewer than 16 rows) on CPU, without gradients: each row alone,
        with the same one-row GEMMs as `_project` uses for calls this small (so the same values),
        but none of the sorting machinery, whose dozen small ops cost more than the GEMMs here."""
        T, K = expert_idx_TK.shape
        I = self.intermediate_size
        rows = []
        for t, experts in enumerate(expert_idx_TK.tolist()):
            x_1H = x_TH[t:t + 1]
            for e in experts:
                gate_up_1F = torch.mm(x_1H, gate_up_EFH[e].t())
                h_1I = F.silu(gate_up_1F[:, :I]).mul_(gate_up_1F[:, I:])
                rows.append(torch.mm(h_1I, down_EHI[e].t()))
        y_NH = torch.cat(rows).mul_(w_TK.reshape(-1, 1))
        return y_NH if K == 1 else y_NH.view(T, K, -1).sum(1)

    def forward_sorted(self, x_NH: torch.Tensor, rows_per_expert: int) -> torch.Tensor:
        """Rows already grouped by expert, `rows_per_expert` each, experts in index order.

        Expert-choice routing produces exactly this layout, so nothing is sorted, and the group
        sizes come from shapes: no host synchronisation.
        """
        if self.dispatch == "reference":
            idx_N = torch.arange(self.num_experts, device=x_NH.device).repeat_interleave(rows_per_expert)
            return self.forward_reference(x_NH, idx_N)
        x_NH, gate_up, down = self._operands(x_NH)
        with autocast_off(x_NH):
            if self._use_grouped_mm(x_NH):
                offs_E = (torch.arange(1, self.num_experts + 1, device=x_NH.device, dtype=torch.int32)
                          * rows_per_expert)
                return self._grouped_mm_path(x_NH, offs_E, gate_up, down)
            return self._grouped_loop(x_NH, [rows_per_expert] * self.num_experts, gate_up, down)

    def _swiglu(self, x_nH: torch.Tensor, gate_up_FH: torch.Tensor, down_HI: torch.Tensor) -> torch.Tensor:
        gate_nI, up_nI = F.linear(x_nH, gate_up_FH).chunk(2, dim=-1)
        return F.linear(self.act_fn(gate_nI) * up_nI, down_HI)

    def _swiglu_row_stable(self, x_nH, gate_up_FH, down_HI):
        """SwiGLU whose result for a row does not depend on how many rows the expert got.

        CPU BLAS switches to a small-M kernel with a different summation order below ~16 rows, so
        a token's output would change in its last bits when *other* tokens are routed elsewhere;
        that breaks the bit-for-bit causality check (METHOD.md 4). Padding small groups to 16
        rows keeps every group in one kernel class. It is not free for one-row decoding calls
        (0.42 vs 0.11 ms for a 512 x 2752 projection), so calls with fewer than 16 rows in all
        compute each row alone instead (`_project`, `_decode_rows`): also one class.

        Measured with MKL on a 2-core Xeon: 1 row, 2-15 rows and >= 16 rows give three classes
        of results; with 2 threads the 1376 -> 512 down projection splits further (16-56,
        57-100 and 300-4096 rows among the sizes tried), so at such sizes the bit-for-bit
        property holds only while the groups stay within one class (the tests' sizes always do).
        """
        n = x_nH.shape[0]
        if 0 < n < _ROW_STABLE_MIN_ROWS:
            padded = F.pad(x_nH, (0, 0, 0, _ROW_STABLE_MIN_ROWS - n))
            return self._swiglu(padded, gate_up_FH, down_HI)[:n]
        return self._swiglu(x_nH, gate_up_FH, down_HI)

    def _expert(self, e: int, x_nH: torch.Tensor) -> torch.Tensor:
        return self._swiglu(x_nH, self.gate_up_proj[e], self.down_proj[e])

    def forward_reference(self, x_NH: torch.Tensor, expert_idx_N: torch.Tensor) -> torch.Tensor:
        """The readable path: one masked gather / compute / scatter per expert."""
        y_NH = torch.zeros_like(x_NH, dtype=compute_dtype(x_NH))  # autocast: F.linear's dtype
        for e in range(self.num_experts):
            rows = (expert_idx_N == e).nonzero(as_tuple=True)[0]
            if rows.numel():
                y_NH[rows] = self._expert(e, x_NH[rows]).to(y_NH.dtype)
        return y_NH

    def forward_grouped(self, x_NH: torch.Tensor, expert_idx_N: torch.Tensor) -> torch.Tensor:
        """The fast path: sort rows by expert once, one grouped matmul per projection, unsort.

        The sort and the unsort are gathers whose gradients are gathers too (`_GatherRows`), not
        scatters: deterministic on every device, and cheap on CPU where a scatter-add runs serially.
        """
        x_NH, gate_up, down = self._operands(x_NH)
        with autocast_off(x_NH):
            order_N, inverse_N = _sort_by_expert(expert_idx_N)
            x_sorted_NH = _gather_rows(x_NH, order_N, inverse_N, 1)
            y_sorted_NH = self._grouped(x_sorted_NH, torch.bincount(expert_idx_N, minlength=self.num_experts),
                                        gate_up, down)
            return _scatter_rows(y_sorted_NH, order_N, inverse_N, 1)

    def _use_grouped_mm(self, x_NH: torch.Tensor) -> bool:
        return _grouped_mm_supported(x_NH.device, x_NH.dtype)

    def _grouped(self, x_sorted_NH: torch.Tensor, counts_E: torch.Tensor, gate_up_EFH: torch.Tensor,
                 down_EHI: torch.Tensor) -> torch.Tensor:
        """Rows sorted by expert, `counts_E` rows each: the grouped kernel, or a loop over experts.
        The weights come in the rows' dtype (`_operands`)."""
        if self._use_grouped_mm(x_sorted_NH):
            # grouped_mm takes the group boundaries as a device tensor: no host synchronisation.
            return self._grouped_mm_path(x_sorted_NH, torch.cumsum(counts_E, 0).to(torch.int32), gate_up_EFH, down_EHI)
        return self._grouped_loop(x_sorted_NH, counts_E.tolist(), gate_up_EFH, down_EHI)

    def _grouped_mm_path(self, x_sorted_NH, offs_E, gate_up_EFH, down_EHI) -> torch.Tensor:
        gate_up_NF = _grouped_mm(x_sorted_NH, gate_up_EFH.transpose(-2, -1), offs=offs_E)
        gate_NI, up_NI = gate_up_NF.chunk(2, dim=-1)
        return _grouped_mm(self.act_fn(gate_NI) * up_NI, down_EHI.transpose(-2, -1), offs=offs_E)

    def _grouped_loop(self, x_sorted_NH, counts: list[int], gate_up_EFH, down_EHI) -> torch.Tensor:
        # On CPU a loop over contiguous slices beat CPU grouped_mm (benchmarks/block.py).
        if self.act_fn is F.silu:
            if _needs_grad(x_sorted_NH, gate_up_EFH, down_EHI):
                return _GroupedSwiGLU.apply(x_sorted_NH, gate_up_EFH, down_EHI, tuple(counts))
            return _grouped_swiglu(x_sorted_NH, gate_up_EFH, down_EHI, counts, keep=False)[0]
        # Other activations: the same loop through autograd. `unbind` rather than `w[e]`: indexing
        # makes autograd materialise a full-size zero gradient per expert (select_backward).
        chunks = torch.split(x_sorted_NH, counts)
        gate_up, down = gate_up_EFH.unbind(0), down_EHI.unbind(0)
        return torch.cat([self._swiglu_row_stable(c, gate_up[e], down[e]) for e, c in enumerate(chunks)])


def _sort_by_expert(expert_idx_N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stable order of the rows by expert, and its inverse permutation (built by a gather)."""
    order_N = torch.argsort(expert_idx_N, stable=True)
    inverse_N = torch.empty_like(order_N)
    inverse_N[order_N] = torch.arange(order_N.numel(), device=order_N.device)
    return order_N, inverse_N


def _unsort_rows(y_sorted_NH: torch.Tensor, inverse_N: torch.Tensor, k: int,
                 weight_N: torch.Tensor | None = None) -> torch.Tensor:
    """Rows back in token order (times `weight_N`, given in that order), each token's k summed."""
    y_NH = y_sorted_NH.index_select(0, inverse_N)
    if weight_N is not None:
        y_NH.mul_(weight_N.unsqueeze(-1))
    return y_NH if k == 1 else y_NH.view(-1, k, y_NH.shape[-1]).sum(1)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _gather_rows(x_TH, src_N, inverse_N, k):
    if _needs_grad(x_TH):
        return _GatherRows.apply(x_TH, src_N, inverse_N, k)
    return x_TH.index_select(0, src_N)


def _scatter_rows(y_sorted_NH, src_N, inverse_N, k):
    if _needs_grad(y_sorted_NH):
        return _ScatterRows.apply(y_sorted_NH, src_N, inverse_N, k)
    return _unsort_rows(y_sorted_NH, inverse_N, k)


class _GatherRows(torch.autograd.Function):
    """x_TH's rows in expert order: sorted row n is x[src[n]] (src = order // k, k choices per token).

    The gradient is `_ScatterRows`'s forward: a gather by the inverse permutation and a sum over
    the k choices, where autograd's own gradient of a gather would be a scatter-add.
    """

    @staticmethod
    def forward(ctx, x_TH, src_N, inverse_N, k):
        ctx.save_for_backward(src_N, inverse_N)
        ctx.k = k
        return x_TH.index_select(0, src_N)

    @staticmethod
    def backward(ctx, g_NH):
        src_N, inverse_N = ctx.saved_tensors
        return _unsort_rows(g_NH, inverse_N, ctx.k), None, None, None


class _ScatterRows(torch.autograd.Function):
    """The adjoint of `_GatherRows`: unsort the rows and sum each token's k choices, in k order."""

    @staticmethod
    def forward(ctx, y_sorted_NH, src_N, inverse_N, k):
        ctx.save_for_backward(src_N, inverse_N)
        return _unsort_rows(y_sorted_NH, inverse_N, k)

    @staticmethod
    def backward(ctx, g_TH):
        src_N, _ = ctx.saved_tensors
        return g_TH.index_select(0, src_N), None, None, None


class _WeightedScatterRows(torch.autograd.Function):
    """`_ScatterRows` with the gates applied on the way: y[t] = sum_j w[t*k+j] * y_sorted[inverse[t*k+j]].

    Fusing the gate into the unsort saves a [N, H] product and its copy each way; the gate's
    gradient is a row-wise dot product in expert order.
    """

    @staticmethod
    def forward(ctx, y_sorted_NH, weight_N, order_N, inverse_N, k):
        ctx.save_for_backward(y_sorted_NH, weight_N, order_N, inverse_N)
        ctx.k = k
        return _unsort_rows(y_sorted_NH, inverse_N, k, weight_N)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_TH):
        y_sorted_NH, weight_N, order_N, inverse_N = ctx.saved_tensors
        k = ctx.k
        src_N = torch.div(order_N, k, rounding_mode="floor") if k > 1 else order_N
        g_sorted_NH = g_TH.index_select(0, src_N)
        d_weight_N = None
        if ctx.needs_input_grad[1]:
            d_weight_N = torch.linalg.vecdot(g_sorted_NH, y_sorted_NH).index_select(0, inverse_N).to(weight_N.dtype)
        if ctx.needs_input_grad[0]:
            g_sorted_NH.mul_(weight_N.index_select(0, order_N).to(g_sorted_NH.dtype).unsqueeze(-1))
        return g_sorted_NH, d_weight_N, None, None, None


def _groups(counts) -> list[tuple[int, slice]]:
    """(expert, rows) of each non-empty group of rows sorted by expert."""
    out, start = [], 0
    for e, n in enumerate(counts):
        if n:
            out.append((e, slice(start, start + n)))
            start += n
    return out


def _equal_groups(counts) -> int:
    """The common group size when every expert has the same number of rows (expert choice), and
    enough of them for a row-stable GEMM; then one batched GEMM replaces the loop. Else 0."""
    n = counts[0]
    return n if n >= _ROW_STABLE_MIN_ROWS and all(c == n for c in counts) else 0


def _project(a_NK: torch.Tensor, w_EOK: torch.Tensor, counts, out_NO: torch.Tensor) -> None:
    """out[rows_e] = a[rows_e] @ w[e]^T for every group, with `_swiglu_row_stable`'s padding of
    small groups, so that a row's result does not depend on how many rows its expert got."""
    if a_NK.shape[0] < _ROW_STABLE_MIN_ROWS:
        # A call this small (decoding) computes every row alone: the one-row kernel is a class of
        # its own, as independent of the other rows as the padded GEMM, at a quarter of its time
        # (measured: 0.11 vs 0.42 ms for a 512 x 2752 projection). Which of the two rules applies
        # depends on the call's row count only, never on the routing.
        for e, rows in _groups(counts):
            for r in range(rows.start, rows.stop):
                torch.mm(a_NK[r:r + 1], w_EOK[e].t(), out=out_NO[r:r + 1])
        return
    n = _equal_groups(counts)
    if n:
        E = len(counts)
        torch.bmm(a_NK.view(E, n, -1), w_EOK.transpose(1, 2), out=out_NO.view(E, n, -1))
        return
    for e, rows in _groups(counts):
        a_nK = a_NK[rows]
        if a_nK.shape[0] >= _ROW_STABLE_MIN_ROWS:
            torch.mm(a_nK, w_EOK[e].t(), out=out_NO[rows])
        else:
            padded = F.pad(a_nK, (0, 0, 0, _ROW_STABLE_MIN_ROWS - a_nK.shape[0]))
            out_NO[rows] = F.linear(padded, w_EOK[e])[:a_nK.shape[0]]


def _grouped_swiglu(x_NH, gate_up_EFH, down_EHI, counts, keep: bool):
    """y = SwiGLU_e(x) over rows grouped by expert; with `keep`, also what the backward needs:
    gate_up [N, 2I] and h = silu(gate) * up [N, I] (silu(gate) itself is recomputed there).

    GEMMs run per expert (or batched); the elementwise steps run once over all rows, since they
    act row by row: fewer, larger ops, which matters when the cores are shared.
    """
    N, H = x_NH.shape
    I = gate_up_EFH.shape[1] // 2
    gate_up_NF, h_NI, y_NH = x_NH.new_empty(N, 2 * I), x_NH.new_empty(N, I), x_NH.new_empty(N, H)
    _project(x_NH, gate_up_EFH, counts, gate_up_NF)
    torch.ops.aten.silu.out(gate_up_NF[:, :I], out=h_NI)
    h_NI.mul_(gate_up_NF[:, I:])
    _project(h_NI, down_EHI, counts, y_NH)
    return y_NH, ((gate_up_NF, h_NI) if keep else ())


class _GroupedSwiGLU(torch.autograd.Function):
    """SwiGLU experts over rows grouped by expert (`counts[e]` rows each), with a hand-written backward.

    Autograd through the per-expert loop would concatenate the gate and up gradients of every
    expert ([n, 2I] copies, `chunk`'s backward), stack the experts' weight gradients, and run one
    graph node per op per expert. Here every result is written in place into one buffer per
    quantity, and the backward writes d(gate_up) directly in its fused [n, 2I] layout, so the
    input gradient is one GEMM against the fused weight (the dense FFN needs two and an add).
    Same operations, same forward values as `SwiGLUExperts._swiglu_row_stable` per expert.
    """

    @staticmethod
    def forward(ctx, x_NH, gate_up_EFH, down_EHI, counts):
        x_NH = x_NH.contiguous()
        y_NH, (gate_up_NF, h_NI) = _grouped_swiglu(x_NH, gate_up_EFH, down_EHI, counts, keep=True)
        ctx.counts, ctx.consumed = counts, False
        ctx.save_for_backward(x_NH, gate_up_EFH, down_EHI, gate_up_NF, h_NI)
        return y_NH

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy_NH):
        # The saved activations serve as the backward's workspace (h -> dh, up -> d_gate,
        # gate -> silu(gate) -> d_up), so the backward allocates nothing activation-sized: on CPU
        # every fresh tens-of-MB buffer costs page faults, about as much as an elementwise pass.
        # (The elementwise steps must not touch padding: there is none, small groups are padded
        # only inside `_project`.)
        if ctx.consumed:
            raise RuntimeError("_GroupedSwiGLU reuses its saved activations as workspace in backward: "
                               "it cannot be differentiated twice (retain_graph)")
        ctx.consumed = True
        x_NH, gate_up_EFH, down_EHI, gate_up_NF, h_NI = ctx.saved_tensors
        need_x, need_gate_up, need_down = ctx.needs_input_grad[:3]
        counts = ctx.counts
        dy_NH = dy_NH.contiguous()
        I = h_NI.shape[1]
        new = torch.zeros_like if 0 in counts else torch.empty_like  # experts with no rows: zero gradient
        dx_NH = torch.empty_like(x_NH) if need_x else None
        d_gate_up_EFH = new(gate_up_EFH) if need_gate_up else None
        d_down_EHI = new(down_EHI) if need_down else None
        n = _equal_groups(counts)
        E = len(counts)
        groups = _groups(counts)

        # dW_down = dy^T h, then dh = dy W_down written over h, which is no longer needed.
        if n:
            dy_EnH, h_EnI = dy_NH.view(E, n, -1), h_NI.view(E, n, -1)
            if need_down:
                torch.bmm(dy_EnH.transpose(1, 2), h_EnI, out=d_down_EHI)
            if need_x or need_gate_up:
                torch.bmm(dy_EnH, down_EHI, out=h_EnI)
        else:
            for e, rows in groups:
                if need_down:
                    torch.mm(dy_NH[rows].t(), h_NI[rows], out=d_down_EHI[e])
                if need_x or need_gate_up:
                    torch.mm(dy_NH[rows], down_EHI[e], out=h_NI[rows])
        if not (need_x or need_gate_up):
            return dx_NH, d_gate_up_EFH, d_down_EHI, None
        dh_NI, gate_NI, up_NI = h_NI, gate_up_NF[:, :I], gate_up_NF[:, I:]
        d_gate_NI = up_NI.mul_(dh_NI)                                    # dh * up ...
        torch.ops.aten.silu_backward.grad_input(d_gate_NI, gate_NI, grad_input=d_gate_NI)  # ... -> d_gate
        d_up_NI = F.silu(gate_NI, inplace=True).mul_(dh_NI)              # dh * silu(gate)

        # dx = d_gate W_gate + d_up W_up (the GEMM accumulates the second); dW = d^T x per half.
        if n:
            dg_EnI, du_EnI, x_EnH = d_gate_NI.view(E, n, I), d_up_NI.view(E, n, I), x_NH.view(E, n, -1)
            if need_x:
                dx_EnH = dx_NH.view(E, n, -1)
                torch.bmm(dg_EnI, gate_up_EFH[:, :I], out=dx_EnH)
                dx_EnH.baddbmm_(du_EnI, gate_up_EFH[:, I:])
            if need_gate_up:
                torch.bmm(dg_EnI.transpose(1, 2), x_EnH, out=d_gate_up_EFH[:, :I])
                torch.bmm(du_EnI.transpose(1, 2), x_EnH, out=d_gate_up_EFH[:, I:])
        else:
            for e, rows in groups:
                if need_x:
                    torch.mm(d_gate_NI[rows], gate_up_EFH[e, :I], out=dx_NH[rows])
                    dx_NH[rows].addmm_(d_up_NI[rows], gate_up_EFH[e, I:])
                if need_gate_up:
                    torch.mm(d_gate_NI[rows].t(), x_NH[rows], out=d_gate_up_EFH[e, :I])
                    torch.mm(d_up_NI[rows].t(), x_NH[rows], out=d_gate_up_EFH[e, I:])
        return dx_NH, d_gate_up_EFH, d_down_EHI, None


_ROW_STABLE_MIN_ROWS = 16
_grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
_grouped_mm_support: dict[tuple[str, torch.dtype], bool] = {}


def _grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this build has a grouped_mm kernel for (device, dtype), probed once and remembered.

    Kernels exist per backend and dtype (CPU in recent builds, CUDA bf16 on sm80+), so probing is
    more reliable than version checks.
    """
    key = (device.type, dtype)
    if key not in _grouped_mm_support:
        # CPU has a kernel in recent builds, but the slice loop measured faster there.
        ok = _grouped_mm is not None and device.type != "cpu"
        if ok:
            try:
                a = torch.zeros(16, 16, device=device, dtype=dtype)
                b = torch.zeros(1, 16, 16, device=device, dtype=dtype)
                _grouped_mm(a, b, offs=torch.tensor([16], dtype=torch.int32, device=device))
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _grouped_mm_support[key] = ok
    return _grouped_mm_support[key]
