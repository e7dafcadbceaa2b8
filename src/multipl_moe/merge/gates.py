"""Router initialisation from prompts: one gate vector per expert per layer (mergekit's gate modes).

`hidden` (mergekit): each prompt is run through the model; the hidden state of its last token at
every layer, averaged over the expert's prompts, minus the same average over its negative
prompts, L2-normalised, is that expert's router row. `hidden_avg` averages over each prompt's
tokens instead. `cheap_embed`: the normalised sum of the prompts' token embeddings, the same row
in every layer. `random`: standard normal rows; `uniform_random`: nn.Linear's default init.

Where the hidden state is read (`gate_input`): mergekit reads the residual stream entering the
layer (`output_hidden_states[l]`), but the router of a Mixtral / Qwen2-MoE / MultiPL-MoE layer
sees the post-attention, post-norm state (`post_attention_layernorm`'s output). `router` (our
default) reads exactly that; `residual` is mergekit's choice. Measured by `routing.py` (four
4-layer Llama fine-tunes of one tiny base on py/cpp/rs/go of the local corpus, merged as Mixtral
with top-1 routing, four prompt sets of 8 training documents, 17k held-out tokens; chance 0.25),
the share of held-out tokens routed to their language's expert, mean over layers:
`hidden` 0.291 at the router input vs 0.272 on the residual stream, `hidden_avg` 0.366 vs 0.314,
`cheap_embed` 0.258; the router input won in all 16 (prompt set, layer) pairs of both poolings.

Each prompt runs alone, as mergekit's tokenisation gives it (BOS + text, no other special
tokens), so no padding enters a mean, and `hidden_avg` averages real tokens only (mergekit's
padded batch also averages the padding).

Shape legend: L layers, E experts, H hidden size, S tokens.
"""

from __future__ import annotations

import math
import sys

import torch

from .config import Expert

CONDITION_THRESHOLD = 5.0  # mergekit's


def _token_ids(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(ids)


@torch.no_grad()
def prompt_states(model, tokenizer, prompts: list[str], gate_input: str = "router", pool: str = "last") -> torch.Tensor:
    """[L, H] fp32: the mean over `prompts` of each layer's hidden state (last token, or mean over tokens)."""
    layers = model.model.layers
    captured: list[torch.Tensor | None] = [None] * len(layers)
    hooks = []
    for idx, layer in enumerate(layers):
        if gate_input == "router":
            def hook(_m, _args, out, idx=idx):
                captured[idx] = out
            hooks.append(layer.post_attention_layernorm.register_forward_hook(hook))
        else:
            def pre_hook(_m, args, kwargs, idx=idx):
                captured[idx] = args[0] if args else kwargs["hidden_states"]
            hooks.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
    total_LH = None
    try:
        for prompt in prompts:
            ids = _token_ids(tokenizer, prompt)
            if not ids:
                raise ValueError(f"prompt {prompt!r} has no tokens")
            device = next(model.parameters()).device
            model(torch.tensor([ids], device=device), use_cache=False)
            x_LSH = torch.stack([c[0].float() for c in captured])
            s_LH = x_LSH[:, -1] if pool == "last" else x_LSH.mean(1)
            total_LH = s_LH if total_LH is None else total_LH + s_LH
    finally:
        for h in hooks:
            h.remove()
    return total_LH / len(prompts)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8)


@torch.no_grad()
def cheap_embedding(embed_VH: torch.Tensor, tokenizer, prompts: list[str], num_layers: int) -> torch.Tensor:
    """[L, H]: the normalised sum of every token embedding of the prompts, repeated per layer."""
    ids = torch.tensor([i for p in prompts for i in _token_ids(tokenizer, p)])
    return _normalise(embed_VH.float()[ids].sum(0)).expand(num_layers, -1).clone()


@torch.no_grad()
def gate_vectors(model, tokenizer, experts: list[Expert], gate_mode: str, gate_input: str = "router",
                 seed: int = 0) -> torch.Tensor:
    """[L, E, H] fp32 router rows, one per expert (experts in order)."""
    cfg = model.config
    L, H, E = cfg.num_hidden_layers, cfg.hidden_size, len(experts)
    generator = torch.Generator().manual_seed(seed)
    if gate_mode == "random":
        return torch.randn(L, E, H, generator=generator)
    if gate_mode == "uniform_random":
        bound = 1.0 / math.sqrt(H)  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound for fan_in = H
        return torch.rand(L, E, H, generator=generator) * 2 * bound - bound

    def states(prompts: list[str]) -> torch.Tensor:
        if gate_mode == "cheap_embed":
            return cheap_embedding(model.get_input_embeddings().weight, tokenizer, prompts, L)
        pool = "mean" if gate_mode == "hidden_avg" else "last"
        return prompt_states(model, tokenizer, prompts, gate_input, pool)

    rows = []
    for e in experts:
        v_LH = states(e.positive_prompts)
        if e.negative_prompts:
            v_LH = v_LH - states(e.negative_prompts)
        rows.append(_normalise(v_LH))
    return torch.stack(rows, dim=1)


def degenerate_layers(gates_LEH: torch.Tensor, threshold: float = CONDITION_THRESHOLD) -> list[int]:
    """Layers whose gate matrix has a condition number above `threshold` (mergekit's test)."""
    return [i for i in range(gates_LEH.shape[0]) if float(torch.linalg.cond(gates_LEH[i].float())) > threshold]


def warn_degenerate(gates_LEH: torch.Tensor, file=None) -> list[int]:
    bad = degenerate_layers(gates_LEH)
    if bad:
        which = "every layer" if len(bad) == gates_LEH.shape[0] else "layer(s) " + ", ".join(map(str, bad))
        print(f"warning: {which}: degenerate router gates (condition number > {CONDITION_THRESHOLD:g}); the "
              "prompts may be too similar, and some experts will be underused", file=file or sys.stderr)
    return bad
