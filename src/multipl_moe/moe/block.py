"""The hybrid MoE block that replaces a decoder layer's FFN (METHOD.md section 2).

    out = w_tok * TokenMoE(x) + w_seg * SegmentMoE(x)            (fusion `fixed`, the paper)
    out =         TokenMoE(x) + g     * SegmentMoE(x), g0 = 0    (fusion `preserving`)

Shape legend: B batch, S sequence (tokens in this call), H hidden, T = B*S.

The block returns its auxiliary loss (token-level Switch balance, plus the causal segment router's
balance term and the optional z-loss) already weighted, so the model only sums it over layers; it
is never computed outside training. Router statistics come back with every call for logging.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import HybridMoEConfig
from .segment_moe import SegmentMoE, SegmentState
from .token_moe import TokenMoE, load_balance_loss, router_z_loss, token_load


@dataclass
class HybridMoEOutput:
    hidden_states: torch.Tensor               # [B, S, H]
    aux_loss: torch.Tensor | None             # weighted; None when not training
    segment_state: SegmentState | None        # causal routing's state after this call
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    """`token_load` [B, N_tok] (shared expert last), `segment_load` [B, N_seg] (segments taken),
    and, in training, the unweighted `load_balance_loss`, `segment_balance_loss`, `z_loss`."""


class HybridMoEBlock(nn.Module):
    def __init__(self, config: HybridMoEConfig, hidden_size: int, intermediate_size: int,
                 hidden_act: str = "silu"):
        super().__init__()
        self.config = config
        dispatch = "grouped" if config.dispatch == "auto" else config.dispatch
        self.token_moe = TokenMoE(config.token, hidden_size, intermediate_size, hidden_act, dispatch)
        self.segment_moe = (SegmentMoE(config.segment, hidden_size, intermediate_size, hidden_act, dispatch)
                            if config.segment.enabled else None)
        if self.segment_moe is not None and config.fusion == "preserving":
            self.segment_gate = nn.Parameter(torch.zeros(()))
        # Set by a data-parallel trainer to average balance statistics over the global batch.
        self.balance_reduce = None

    @property
    def is_causal(self) -> bool:
        return self.config.is_causal

    @torch.no_grad()
    def load_dense_ffn(self, gate_proj_IH: torch.Tensor, up_proj_IH: torch.Tensor, down_proj_HI: torch.Tensor,
                       noise_std: float = 0.0, generator: torch.Generator | None = None) -> None:
        """Sparse upcycling: every expert (and the shared one) starts as a copy of the dense FFN."""
        shared = self.token_moe.shared_expert
        shared.gate_proj.weight.copy_(gate_proj_IH)
        shared.up_proj.weight.copy_(up_proj_IH)
        shared.down_proj.weight.copy_(down_proj_HI)
        self.token_moe.experts.load_dense(gate_proj_IH, up_proj_IH, down_proj_HI, noise_std, generator)
        if self.segment_moe is not None:
            self.segment_moe.experts.load_dense(gate_proj_IH, up_proj_IH, down_proj_HI, noise_std, generator)

    def forward(self, x_BSH: torch.Tensor, attention_mask_BS: torch.Tensor | None = None,
                segment_state: SegmentState | None = None) -> HybridMoEOutput:
        """`attention_mask_BS`: 1 for real tokens, 0 for padding (Hugging Face's 2-D mask) or None.

        `segment_state`: pass the state returned by the previous call to continue a sequence
        (causal routing only); None starts a new one.
        """
        cfg = self.config
        B, S, H = x_BSH.shape
        real_BS = attention_mask_BS.bool() if attention_mask_BS is not None else None
        real_T = real_BS.reshape(-1) if real_BS is not None else None

        # The fusion weights are folded into the levels' gates ([T, K] and [E, r] tensors) rather
        # than applied to [B, S, H] outputs: out = w_tok * y_tok + w_seg * y_seg costs one add.
        if cfg.fusion == "fixed":
            tok_scale, seg_scale = cfg.token_weight, cfg.segment_weight
        else:  # preserving: out = y_tok + g * y_seg, and y_tok alone without a segment level
            tok_scale, seg_scale = 1.0, getattr(self, "segment_gate", None)
        y_tok_TH, routing = self.token_moe(x_BSH.reshape(B * S, H), output_scale=tok_scale)
        y_BSH = y_tok_TH.view(B, S, H)
        stats = {"token_load": token_load(routing, real_BS if real_BS is not None
                                          else torch.ones(B, S, dtype=torch.bool, device=x_BSH.device))}
        training = self.training
        aux = None
        if training:
            lb = load_balance_loss(routing, real_T, self.balance_reduce)
            stats["load_balance_loss"] = lb.detach()
            aux = cfg.load_balance_coef * lb
            if cfg.router_z_loss_coef > 0:
                z = router_z_loss(routing.logits_TX, real_T)
                stats["z_loss"] = z.detach()
                aux = aux + cfg.router_z_loss_coef * z

        new_state = None
        if self.segment_moe is None:
            out_BSH = y_BSH
        else:
            seg = self.segment_moe(x_BSH, real_BS, segment_state, compute_balance_loss=training,
                                   balance_reduce=self.balance_reduce, output_scale=seg_scale)
            new_state = seg.state
            stats["segment_load"] = seg.load_BE
            if training:
                if seg.balance_loss is not None:
                    stats["segment_balance_loss"] = seg.balance_loss.detach()
                    aux = aux + cfg.load_balance_coef * seg.balance_loss
                if cfg.router_z_loss_coef > 0:
                    aux = aux + cfg.router_z_loss_coef * router_z_loss(seg.z_logits_GE, seg.z_valid_G)
            out_BSH = y_BSH + seg.y_BLH  # both already weighted
        return HybridMoEOutput(out_BSH, aux, new_state, stats)
