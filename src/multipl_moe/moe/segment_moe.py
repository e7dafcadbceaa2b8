"""Segment level of the hybrid block: experts choose windows of `a` tokens (METHOD.md 2.2 and 4).

Shape legend: B batch, L tokens in this call, H hidden, a segment length, R segment rows per
sequence in this call, G = B*R segment rows in the batch, E segment experts, r capacity (segments
per expert), C max experts per segment, k experts per segment in causal mode.

Segments are numbered per sequence over its *real* tokens (padding belongs to no segment), so a
left-padded sequence in a generation batch is cut exactly as the same sequence alone. Tokens are
placed on a [B, R, a, H] grid by (segment, offset) - the fix for the released code's defect 3.1,
which pooled segments in one order and gathered them in another whenever B > 1.

Two routing modes:
- `batch` (the paper): segment representations are pooled over the whole window, and each expert
  takes its r = floor(V*c/E) best segments among the V in the batch, visiting experts in index
  order with at most C experts per segment. Positions see later tokens of their window and the
  rest of the batch, so this mode is not causal and has no incremental form.
- `causal` (this project): segment p of a sequence is routed from the pooled representation of
  segment p-1 of the same sequence to its top-k experts, and segment 0 from its own first token
  (the only prefix every position of segment 0 has seen; see `_route_input_of_row0`). The
  routing of a token depends only on earlier tokens, so a running state (`SegmentState`) makes
  one-token-at-a-time decoding compute what the full forward computes.
  Without a capacity the balance is not guaranteed by construction, so this mode adds a Switch
  load-balance term for its router.

No Python loop over segments or tokens and no host synchronisation: the capacity r of a batch
with padding is a tensor and masks a top-r_max with r_max computed from shapes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SegmentMoEConfig
from .experts import SwiGLUExperts, compute_dtype, fp32_linear


@dataclass
class SegmentState:
    """What causal routing must remember between decoding steps, per sequence (batch first)."""

    num_seen_B: torch.Tensor      # long: real tokens processed so far
    open_acc_BH: torch.Tensor     # fp32 sum (mean pooling) or max of the open segment's tokens
    route_input_BH: torch.Tensor  # fp32 routing input of the open segment: the pooled last complete
    #                               segment, or in segment 0 its first token (once num_seen >= 1)

    def index_select(self, index_B: torch.Tensor) -> "SegmentState":
        """Reorder / select sequences (beam search, finished sequences dropped)."""
        return SegmentState(*(t.index_select(0, index_B.to(t.device)) for t in
                              (self.num_seen_B, self.open_acc_BH, self.route_input_BH)))


@dataclass
class SegmentOutput:
    y_BLH: torch.Tensor
    load_BE: torch.Tensor                    # segments each sequence sent to each expert
    balance_loss: torch.Tensor | None        # causal mode, training only
    z_logits_GE: torch.Tensor                # fp32 router logits of the segment rows (z-loss)
    z_valid_G: torch.Tensor                  # which of those rows are real segments
    state: SegmentState | None = None
    # Routing decisions, for tests and analysis: `batch` mode, [E, r_max] rows into the
    # [B*R] segment grid (R = rows of this call), their gates (0 = not taken).
    chosen_rows_Er: torch.Tensor | None = None
    chosen_gates_Er: torch.Tensor | None = None


class SegmentMoE(nn.Module):
    def __init__(self, config: SegmentMoEConfig, hidden_size: int, intermediate_size: int,
                 hidden_act: str = "silu", dispatch: str = "auto"):
        super().__init__()
        self.config = config
        self.router = nn.Linear(hidden_size, config.num_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.experts = SwiGLUExperts(config.num_experts, hidden_size, intermediate_size, hidden_act, dispatch)

    # ----------------------------------------------------------------------------------------
    # Segment grid: tokens by (sequence, segment row, offset)
    # ----------------------------------------------------------------------------------------
    def _grid(self, x_BLH, real_BL, num_seen_B):
        """Place the call's real tokens on a [B, R, a, H] grid; return it with each token's row/slot.

        Row 0 is the segment that was open when the call started (`num_seen // a`), so its first
        `num_seen % a` slots hold earlier tokens that are not in this call (left empty here).
        """
        a = self.config.segment_length
        B, L, H = x_BLH.shape
        has_history = num_seen_B is not None
        R = (L + a - 1) // a + (1 if has_history else 0)
        if real_BL is None and not has_history:  # the common training case: a pure view
            x_pad = x_BLH
            if R * a > L:
                x_pad = F.pad(x_BLH, (0, 0, 0, R * a - L))
                if self.config.pooling == "max":
                    x_pad[:, L:] = float("-inf")
            pos_BL = torch.arange(L, device=x_BLH.device).expand(B, L)
            return x_pad.view(B, R, a, H), pos_BL // a, pos_BL % a, R, True
        real = real_BL if real_BL is not None else torch.ones(B, L, dtype=torch.bool, device=x_BLH.device)
        seen = num_seen_B if has_history else torch.zeros(B, dtype=torch.long, device=x_BLH.device)
        pos_BL = seen[:, None] + torch.cumsum(real.long(), 1) - 1
        row_BL = (pos_BL // a - (seen // a)[:, None]).clamp(min=0)
        slot_BL = pos_BL.clamp(min=0) % a
        flat_BL = (torch.arange(B, device=x_BLH.device)[:, None] * R + row_BL) * a + slot_BL
        dump = B * R * a  # padding tokens all land here, and it is dropped
        flat_BL = torch.where(real, flat_BL, torch.full_like(flat_BL, dump))
        fill = float("-inf") if self.config.pooling == "max" else 0.0
        grid = x_BLH.new_full((dump + 1, H), fill)
        grid = grid.index_copy(0, flat_BL.reshape(-1), x_BLH.reshape(-1, H))
        return grid[:dump].view(B, R, a, H), row_BL, slot_BL, R, False

    def _row_acc(self, grid_BRaH):
        """fp32 sum (mean pooling) or max of each row's tokens."""
        if self.config.pooling == "mean":
            return grid_BRaH.sum(2, dtype=torch.float32)
        return grid_BRaH.float().amax(2)

    def _pool(self, acc_BRH, counts_BR, open_acc_BH):
        """Pool each row; the open row also folds in the accumulator carried over from earlier calls."""
        if open_acc_BH is not None:
            first = acc_BRH[:, 0] + open_acc_BH if self.config.pooling == "mean" else torch.maximum(acc_BRH[:, 0], open_acc_BH)
            acc_BRH = torch.cat([first.unsqueeze(1), acc_BRH[:, 1:]], 1)
        if self.config.pooling == "mean":
            pooled_BRH = acc_BRH / counts_BR.clamp(min=1).unsqueeze(-1).float()
        else:
            pooled_BRH = torch.where(counts_BR.unsqueeze(-1) > 0, acc_BRH, torch.zeros_like(acc_BRH))
        return acc_BRH, pooled_BRH

    def _gate_scale(self) -> float:
        return 1.0 / self.config.segment_length if self.config.gate_scale == "inv_length" else 1.0

    # ----------------------------------------------------------------------------------------
    def forward(self, x_BLH: torch.Tensor, real_BL: torch.Tensor | None = None,
                state: SegmentState | None = None, compute_balance_loss: bool = False,
                balance_reduce=None, output_scale: float | torch.Tensor = 1.0) -> SegmentOutput:
        """`output_scale` multiplies y (the block's fusion weight); it is folded into the gates."""
        if self.config.routing == "batch":
            if state is not None:
                raise ValueError("segment routing `batch` has no incremental form: it chooses over "
                                 "whole windows and the whole batch; recompute the full prefix instead")
            return self._forward_batch(x_BLH, real_BL, output_scale)
        if x_BLH.shape[1] == 1 and state is not None and not compute_balance_loss:
            return self._decode_step(x_BLH, real_BL, state, output_scale)
        return self._forward_causal(x_BLH, real_BL, state, compute_balance_loss, balance_reduce, output_scale)

    def _row_counts(self, real_BL, num_seen_B, B, L, R, device):
        """Real tokens in each row, counting those of the open row seen in earlier calls."""
        a = self.config.segment_length
        seen = num_seen_B if num_seen_B is not None else torch.zeros(B, dtype=torch.long, device=device)
        n_new = real_BL.sum(1) if real_BL is not None else torch.full((B,), L, dtype=torch.long, device=device)
        total_B = seen + n_new
        start_BR = ((seen // a)[:, None] + torch.arange(R, device=device)) * a
        return (total_B[:, None] - start_BR).clamp(0, a), total_B

    # ---------------------------------------------------------------------------------- batch
    def _forward_batch(self, x_BLH, real_BL, output_scale=1.0) -> SegmentOutput:
        cfg = self.config
        B, L, H = x_BLH.shape
        E, a, C = cfg.num_experts, cfg.segment_length, cfg.max_experts_per_segment
        grid_BRaH, row_BL, slot_BL, R, is_view = self._grid(x_BLH, real_BL, None)
        counts_BR, _ = self._row_counts(real_BL, None, B, L, R, x_BLH.device)
        _, pooled_BRH = self._pool(self._row_acc(grid_BRaH), counts_BR, None)
        G = B * R
        valid_G = (counts_BR > 0).reshape(G)
        logits_GE = fp32_linear(pooled_BRH.reshape(G, H), self.router.weight)
        scores_GE = torch.softmax(logits_GE, dim=-1)

        # Capacity in integers (`SegmentMoEConfig.capacity`), so that padding rows, which change
        # r_max, never change r. r_max: the capacity if every row were a real segment (at most G:
        # a capacity factor above N_seg lets every expert take every segment, as the reference).
        r_max = cfg.capacity(G)
        load_BE = torch.zeros(B, E, dtype=torch.long, device=x_BLH.device)
        if r_max == 0:  # fewer segments than experts can share: the paper's rule gives no expert any
            return SegmentOutput(torch.zeros_like(x_BLH), load_BE, None, logits_GE, valid_G)
        p, q = cfg.capacity_ratio
        r = torch.div(valid_G.sum() * p, q, rounding_mode="floor")  # a tensor: no host sync

        # Expert choice, experts visited in index order, each segment taken at most C times.
        used_G = torch.zeros(G, dtype=torch.long, device=x_BLH.device)
        rows, gates, ok = [], [], []
        neg_inf = torch.tensor(float("-inf"), device=x_BLH.device)
        rank_r = torch.arange(r_max, device=x_BLH.device)
        for e in range(E):
            avail = valid_G & (used_G < C)
            top_val, top_row = torch.topk(torch.where(avail, scores_GE[:, e], neg_inf), r_max)
            taken = (rank_r < r) & torch.isfinite(top_val)
            used_G = used_G.index_add(0, top_row, taken.long())  # top_row has no repeats
            rows.append(top_row)
            gates.append(torch.where(taken, top_val, torch.zeros_like(top_val)))
            ok.append(taken)
        rows_Er, gates_Er = torch.stack(rows), torch.stack(gates) * self._gate_scale()
        ok_Er = torch.stack(ok)

        # Each expert runs its r_max segments' tokens: the rows come out of the gather grouped by
        # expert, r_max * a each, so the experts need no sort and no host synchronisation.
        seg_x = grid_BRaH.reshape(G, a, H)
        if cfg.pooling == "max":  # -inf marks empty slots for max pooling; the experts must see 0
            seg_x = torch.nan_to_num(seg_x, neginf=0.0)
        seg_x = seg_x.to(compute_dtype(seg_x))  # autocast: gather half the bytes
        x_rows = _TakeSegments.apply(seg_x, rows_Er)
        y_rows = self.experts.forward_sorted(x_rows.view(E * r_max * a, H), r_max * a).view(E * r_max, a, H)
        weight_Er = gates_Er if _is_one(output_scale) else gates_Er * output_scale
        # Slots an expert did not take have gate 0, so they add exact zeros to their row.
        y_GaH = _PutSegments.apply(y_rows, weight_Er.to(y_rows.dtype), rows_Er, G)

        y_BLH = self._ungrid(y_GaH.view(B, R, a, H), row_BL, slot_BL, real_BL, is_view)
        seq_of_row = torch.div(rows_Er, R, rounding_mode="floor")
        load_BE.index_put_((seq_of_row.reshape(-1), torch.arange(E, device=x_BLH.device).repeat_interleave(r_max)),
                           ok_Er.reshape(-1).long(), accumulate=True)
        return SegmentOutput(y_BLH, load_BE, None, logits_GE, valid_G,
                             chosen_rows_Er=rows_Er, chosen_gates_Er=gates_Er)

    def _ungrid(self, y_BRaH, row_BL, slot_BL, real_BL, is_view):
        B, R, a, H = y_BRaH.shape
        L = row_BL.shape[1]
        if is_view:
            return y_BRaH.reshape(B, R * a, H)[:, :L]
        flat_BL = (torch.arange(B, device=y_BRaH.device)[:, None] * R + row_BL) * a + slot_BL
        y_BLH = y_BRaH.reshape(B * R * a, H)[flat_BL.reshape(-1)].view(B, L, H)
        if real_BL is not None:
            y_BLH = y_BLH * real_BL.unsqueeze(-1).to(y_BLH.dtype)
        return y_BLH

    # --------------------------------------------------------------------------------- causal
    def _forward_causal(self, x_BLH, real_BL, state, compute_balance_loss, balance_reduce=None,
                        output_scale=1.0) -> SegmentOutput:
        cfg = self.config
        B, L, H = x_BLH.shape
        E, a, k = cfg.num_experts, cfg.segment_length, cfg.causal_top_k
        seen_B = state.num_seen_B if state is not None else None
        grid_BRaH, row_BL, _, R, _ = self._grid(x_BLH, real_BL, seen_B)
        row_acc_BRH = self._row_acc(grid_BRaH)
        counts_BR, total_B = self._row_counts(real_BL, seen_B, B, L, R, x_BLH.device)
        acc_BRH, pooled_BRH = self._pool(row_acc_BRH, counts_BR, state.open_acc_BH if state is not None else None)

        # Row j is routed from row j-1; row 0 from the carried state, or from its first token.
        first_BH = self._route_input_of_row0(grid_BRaH[:, 0, 0], state)
        route_in_BRH = torch.cat([first_BH.unsqueeze(1), pooled_BRH[:, :-1]], 1)
        logits_BRE = fp32_linear(route_in_BRH, self.router.weight)
        probs_BRE = torch.softmax(logits_BRE, dim=-1)
        gate_BRk, expert_BRk = torch.topk(probs_BRE, k, dim=-1)
        gate_BRk = gate_BRk * self._gate_scale()

        # Every token inherits the routing of its segment; then it is token-level dispatch.
        expert_BLk = torch.gather(expert_BRk, 1, row_BL.unsqueeze(-1).expand(B, L, k))
        gate_BLk = torch.gather(gate_BRk, 1, row_BL.unsqueeze(-1).expand(B, L, k))
        if real_BL is not None:
            gate_BLk = gate_BLk * real_BL.unsqueeze(-1)
        if not _is_one(output_scale):
            gate_BLk = gate_BLk * output_scale
        y_BLH = self.experts.forward_weighted(x_BLH.reshape(B * L, H), expert_BLk.reshape(B * L, k),
                                             gate_BLk.reshape(B * L, k)).view(B, L, H)

        # Rows that hold tokens of this call (row 0 may hold only earlier tokens).
        new_BR = torch.zeros(B, R, dtype=torch.long, device=x_BLH.device)
        real_long = real_BL.long() if real_BL is not None else torch.ones(B, L, dtype=torch.long, device=x_BLH.device)
        new_BR.scatter_add_(1, row_BL, real_long)
        active_BR = new_BR > 0
        load_BE = (F.one_hot(expert_BRk, E).sum(2) * active_BR.unsqueeze(-1)).sum(1)

        balance = None
        if compute_balance_loss:
            w = active_BR.float().reshape(-1)
            n = w.sum().clamp(min=1.0)
            P_E = (probs_BRE.reshape(-1, E) * w[:, None]).sum(0) / n
            f_E = load_BE.sum(0).float() / (n * k)
            if balance_reduce is not None:  # the global batch's statistics (see token_moe)
                f_E, P_E = balance_reduce(f_E), balance_reduce(P_E)
            balance = E * (f_E * P_E).sum()

        new_state = self._next_state(acc_BRH, pooled_BRH, state, total_B, R, first_BH)
        return SegmentOutput(y_BLH, load_BE, balance, logits_BRE.reshape(-1, E), active_BR.reshape(-1),
                             state=new_state)

    def _decode_step(self, x_B1H, real_B1, state, output_scale=1.0) -> SegmentOutput:
        """`_forward_causal` for one token per sequence after a prefix: the same values, bit for bit
        (tests/test_moe_fastpaths.py), in far fewer ops. The token joins the open segment
        (row 0 of the general path; row 1 is always empty), which it may complete."""
        cfg = self.config
        B, _, H = x_B1H.shape
        E, a, k = cfg.num_experts, cfg.segment_length, cfg.causal_top_k
        mean = cfg.pooling == "mean"
        fill = 0.0 if mean else float("-inf")
        x_BH = x_B1H[:, 0]
        real_B = real_B1[:, 0].bool() if real_B1 is not None else None
        seen_B = state.num_seen_B
        xf_BH = x_BH.float()
        if real_B is not None:
            xf_BH = torch.where(real_B[:, None], xf_BH, torch.full_like(xf_BH, fill))
        acc_BH = xf_BH + state.open_acc_BH if mean else torch.maximum(xf_BH, state.open_acc_BH)
        total_B = seen_B + (real_B.long() if real_B is not None else 1)
        count_B = (total_B - (seen_B // a) * a).clamp(0, a)  # real tokens of the open segment
        if mean:
            pooled_BH = acc_BH / count_B.clamp(min=1).unsqueeze(-1).float()
        else:
            pooled_BH = torch.where(count_B.unsqueeze(-1) > 0, acc_BH, torch.zeros_like(acc_BH))

        # Routing of the open segment (and, as the general path computes it, of the next one).
        first_BH = self._route_input_of_row0(xf_BH, state)
        logits_BRE = fp32_linear(torch.stack([first_BH, pooled_BH], 1), self.router.weight)
        gate_BRk, expert_BRk = torch.topk(torch.softmax(logits_BRE, dim=-1), k, dim=-1)
        gate_Bk, expert_Bk = gate_BRk[:, 0] * self._gate_scale(), expert_BRk[:, 0]
        if real_B is not None:
            gate_Bk = gate_Bk * real_B.unsqueeze(-1)
        if not _is_one(output_scale):
            gate_Bk = gate_Bk * output_scale
        y_BH = self.experts.forward_weighted(x_BH, expert_Bk, gate_Bk)

        active_B = real_B if real_B is not None else torch.ones(B, dtype=torch.bool, device=x_B1H.device)
        load_BE = F.one_hot(expert_Bk, E).sum(1) * active_B.unsqueeze(-1)
        completed_B1 = (total_B // a > seen_B // a).unsqueeze(-1)
        new_state = SegmentState(total_B, torch.where(completed_B1, torch.full_like(acc_BH, fill), acc_BH),
                                 torch.where(completed_B1, pooled_BH, first_BH))
        z_valid = torch.stack([active_B, torch.zeros_like(active_B)], 1).reshape(-1)
        return SegmentOutput(y_BH.unsqueeze(1), load_BE, None, logits_BRE.reshape(-1, E), z_valid,
                             state=new_state)

    def _route_input_of_row0(self, token0_BH: torch.Tensor, state: SegmentState | None) -> torch.Tensor:
        """fp32 routing input of the call's first row: the carried state once a sequence has seen a
        token, else `token0_BH`, this call's first token (the first token of the sequence).

        Segment 0 of a sequence has no earlier segment. It is routed from its own first token:
        every position of segment 0 has seen that token, so this stays causal; it gets its
        experts like every other segment (no 0.7x dip under `fixed` fusion); the choice depends
        on the data (a file's first token says much about its language); and no parameter needs
        a non-degenerate initialisation. The learned query it replaces started at zero, so every
        first segment was an exact tie broken by the device's top-k (expert 3 on CPU).
        Measured (issue 11; tiny model, 60 steps, a = 16 of 64 tokens, one seed): held-out loss
        5.828 / 5.826 / 5.819 (paper-causal) and 5.818 / 5.817 (preserving) for first token /
        zero query / random-init query: within 0.01 nats, so the choice rests on the above.
        """
        tok_BH = token0_BH.float()
        if self.config.pooling == "max":  # an empty slot holds -inf (a sequence with no token yet)
            tok_BH = torch.nan_to_num(tok_BH, neginf=0.0)
        if state is None:
            return tok_BH
        return torch.where((state.num_seen_B >= 1).unsqueeze(-1), state.route_input_BH, tok_BH)

    def _next_state(self, acc_BRH, pooled_BRH, state, total_B, R, first_BH) -> SegmentState:
        a = self.config.segment_length
        B, _, H = acc_BRH.shape
        q0_B = state.num_seen_B // a if state is not None else torch.zeros_like(total_B)
        j1_B = total_B // a - q0_B  # row of the segment left open; R means "a fresh, empty one"
        empty = 0.0 if self.config.pooling == "mean" else float("-inf")
        acc_ext = torch.cat([acc_BRH, acc_BRH.new_full((B, 1, H), empty)], 1)
        open_acc = torch.gather(acc_ext, 1, j1_B.clamp(max=R).view(B, 1, 1).expand(B, 1, H)).squeeze(1)
        prev = torch.gather(pooled_BRH, 1, (j1_B - 1).clamp(min=0, max=R - 1).view(B, 1, 1).expand(B, 1, H)).squeeze(1)
        # No segment completed: the open one keeps the routing input it was routed from.
        route_input = torch.where((j1_B >= 1).unsqueeze(-1), prev, first_BH)
        return SegmentState(total_B, open_acc, route_input)



def _is_one(scale) -> bool:
    return isinstance(scale, (int, float)) and scale == 1


def _put_segments(y_XaH: torch.Tensor, rows_Er: torch.Tensor, num_rows: int,
                  weight_Er: torch.Tensor | None = None) -> torch.Tensor:
    """Sum each expert's rows (times their gates) onto a zero grid of `num_rows` segments.

    One `index_add_` per expert, experts in index order: rows are distinct within an expert, so
    no index collides within a call (deterministic on GPUs too, atomics or not), and the sum over
    experts has a fixed order.
    """
    E, r = rows_Er.shape
    y_EraH = y_XaH.reshape(E, r, *y_XaH.shape[1:])
    out_GaH = y_XaH.new_zeros(num_rows, *y_XaH.shape[1:])
    for e in range(E):
        src = y_EraH[e] if weight_Er is None else y_EraH[e] * weight_Er[e].view(-1, 1, 1)
        out_GaH.index_add_(0, rows_Er[e], src)
    return out_GaH


class _TakeSegments(torch.autograd.Function):
    """The segments each expert chose, grouped by expert: seg[rows_Er] as [E * r, a, H].

    A segment may be chosen by several experts, so its gradient accumulates: `_put_segments`,
    expert by expert (rows are distinct within an expert), rather than autograd's scatter-add.
    """

    @staticmethod
    def forward(ctx, seg_GaH, rows_Er):
        ctx.save_for_backward(rows_Er)
        ctx.num_rows = seg_GaH.shape[0]
        return seg_GaH.index_select(0, rows_Er.reshape(-1))

    @staticmethod
    def backward(ctx, g_XaH):
        (rows_Er,) = ctx.saved_tensors
        return _put_segments(g_XaH, rows_Er, ctx.num_rows), None


class _PutSegments(torch.autograd.Function):
    """The adjoint of `_TakeSegments`, with the gates: out[rows_Er[e, j]] += w[e, j] * y[e, j].

    The gate is applied expert by expert on the way in, and its gradient is a dot product per
    segment, so no gated copy of all [E * r, a, H] rows is kept for the backward.
    """

    @staticmethod
    def forward(ctx, y_XaH, weight_Er, rows_Er, num_rows):
        ctx.save_for_backward(y_XaH, weight_Er, rows_Er)
        return _put_segments(y_XaH, rows_Er, num_rows, weight_Er)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_GaH):
        y_XaH, weight_Er, rows_Er = ctx.saved_tensors
        g_XaH = g_GaH.index_select(0, rows_Er.reshape(-1))
        d_weight = None
        if ctx.needs_input_grad[1]:
            X = g_XaH.shape[0]
            d_weight = torch.linalg.vecdot(g_XaH.reshape(X, -1), y_XaH.reshape(X, -1)).view_as(weight_Er)
        if ctx.needs_input_grad[0]:
            g_XaH.mul_(weight_Er.reshape(-1, 1, 1))
        return g_XaH, d_weight, None, None
