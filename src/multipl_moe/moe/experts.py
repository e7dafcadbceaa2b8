"""SwiGLU experts stored as fused 3-D weights, and the seam where a fast dispatch replaces the loop.

Shape legend: N rows (tokens, possibly repeated once per chosen expert), H hidden size,
I expert intermediate size, E experts, F = 2I (gate and up projections fused).

The weight layout is transformers 5's for MoE models (`gate_up_proj [E, 2I, H]`,
`down_proj [E, H, I]`), so weights move to and from Qwen2-MoE checkpoints without reshaping.

Both dispatch paths compute, for every row n, `E_{expert_idx[n]}(x[n])` and return the rows in the
order they came in; callers weight and combine them, so the combine is deterministic (no
scatter-add with colliding indices, which is non-deterministic on GPUs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward(self, x_NH: torch.Tensor, expert_idx_N: torch.Tensor) -> torch.Tensor:
        if self.dispatch == "reference":
            return self.forward_reference(x_NH, expert_idx_N)
        return self.forward_grouped(x_NH, expert_idx_N)

    def _swiglu(self, x_nH: torch.Tensor, gate_up_FH: torch.Tensor, down_HI: torch.Tensor) -> torch.Tensor:
        gate_nI, up_nI = F.linear(x_nH, gate_up_FH).chunk(2, dim=-1)
        return F.linear(self.act_fn(gate_nI) * up_nI, down_HI)

    def _swiglu_row_stable(self, x_nH, gate_up_FH, down_HI):
        """SwiGLU whose result for a row does not depend on how many rows the expert got.

        CPU BLAS switches to a small-M kernel with a different summation order below ~16 rows, so
        a token's output would change in its last bits when *other* tokens are routed elsewhere;
        that breaks the bit-for-bit causality check (METHOD.md 4). Padding small groups to 16
        rows costs little: such GEMMs are bound by reading the weights, not by the rows.
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
        y_NH = torch.zeros_like(x_NH)
        for e in range(self.num_experts):
            rows = (expert_idx_N == e).nonzero(as_tuple=True)[0]
            if rows.numel():
                y_NH[rows] = self._expert(e, x_NH[rows]).to(y_NH.dtype)
        return y_NH

    def forward_grouped(self, x_NH: torch.Tensor, expert_idx_N: torch.Tensor) -> torch.Tensor:
        """The fast path: sort rows by expert once, one grouped matmul per projection, unsort.

        `torch.nn.functional.grouped_mm` takes the group boundaries as a device tensor, so no
        host synchronisation is needed; without it, a loop over contiguous slices (one sync for
        the sizes) does the same work.
        """
        order_N = torch.argsort(expert_idx_N, stable=True)
        x_sorted_NH = x_NH[order_N]
        counts_E = torch.bincount(expert_idx_N, minlength=self.num_experts)
        if x_NH.dtype == self.gate_up_proj.dtype and _grouped_mm_supported(x_NH.device, x_NH.dtype):
            offs_E = torch.cumsum(counts_E, 0).to(torch.int32)
            gate_up_NF = _grouped_mm(x_sorted_NH, self.gate_up_proj.transpose(-2, -1), offs=offs_E)
            gate_NI, up_NI = gate_up_NF.chunk(2, dim=-1)
            y_sorted_NH = _grouped_mm(self.act_fn(gate_NI) * up_NI, self.down_proj.transpose(-2, -1), offs=offs_E)
        else:
            # On CPU a loop over contiguous slices beat CPU grouped_mm (benchmarks/block_dispatch.py).
            # `unbind` rather than `w[e]`: indexing makes autograd materialise a full-size zero
            # gradient per expert (select_backward), unbind builds one stacked gradient.
            chunks = torch.split(x_sorted_NH, counts_E.tolist())
            gate_up, down = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)
            y_sorted_NH = torch.cat([self._swiglu_row_stable(c, gate_up[e], down[e]) for e, c in enumerate(chunks)])
        # Inverse permutation as a gather: deterministic, unlike a scatter-add.
        inverse_N = torch.empty_like(order_N)
        inverse_N[order_N] = torch.arange(order_N.numel(), device=order_N.device)
        return y_sorted_NH[inverse_N]


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
