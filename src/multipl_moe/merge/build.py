"""`merge(config, out)`: per-language fine-tunes of one base become one mixture of experts.

Three outputs, each a plain Hugging Face checkpoint written atomically (all or nothing):
- `Mixtral`: `MixtralForCausalLM` (Llama/Mistral bases): expert i of layer l is experts[i]'s FFN
  of layer l, the router rows are the gate vectors; top-`experts_per_token` with Mixtral's
  renormalised softmax.
- `Qwen MoE`: `Qwen2MoeForCausalLM` (Qwen2/Llama/Mistral bases), as mergekit writes it
  (`norm_topk_prob`), plus one shared expert: the named shared source model's FFN, or the base's
  FFN when none is named (mergekit requires one; the base is the natural choice for fine-tunes of
  it). Its sigmoid gate is the shared expert's gate vector, or zero (a constant 1/2) without prompts.
- `MultiPL-MoE`: our hybrid checkpoint (Branch-Train-MiX style) whose routed token experts are the
  fine-tunes, the shared token expert the base FFN, the token router initialised from the gates;
  the rest of the block (segment level, fusion) is `hybrid_preset`'s, upcycled from the base, so
  `multipl-moe train model.base=OUT` continues with the paper's recipe.

Both MoE outputs are built through the MultiPL-MoE model (upcycle the trunk, then put the experts
and routers in): Qwen MoE is its `qwen2_moe`-gated token-only form, exported by `export.py`.
Non-expert weights (attention, norms, embeddings, head) are the base's, or with
`non_expert: average` the mean over the experts (which, when fine-tuned fully or with LoRA on
attention, moved them too).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from ..modeling.export import ExportError, to_qwen2_moe
from ..moe import ConfigError, HybridMoEBlock
from ..moe.presets import resolve_preset
from ..modeling.upcycle import CheckpointError, load_dense, save_checkpoint, upcycle_model
from .config import MergeConfig, MergeError, config_from_dict, load_config
from .gates import gate_vectors, warn_degenerate
from .sources import ExpertFFN, check_architectures, describe, ffn_of, load_model, noised, non_ffn_state

# Output architecture -> the base model types it can express.
_BASES = {"Mixtral": ("llama", "mistral"), "Qwen MoE": ("qwen2", "llama", "mistral"),
          "MultiPL-MoE": ("qwen2", "llama", "mistral")}


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


def merge(config: MergeConfig | dict | str | Path, out: str | Path, force: bool = False, quiet: bool = False,
          **overrides) -> Path:
    """Merge `config` (a MergeConfig, a mergekit-moe mapping, or a YAML path) into `out`.

    `overrides` replace top-level config keys (e.g. gate_input="residual", architecture="mixtral").
    """
    if isinstance(config, (str, Path)):
        cfg = load_config(config, **overrides)
    elif isinstance(config, dict):
        cfg = config_from_dict(config, **overrides)
    else:
        cfg = config_from_dict(config.to_dict(), **overrides)
    out = Path(out)
    if out.exists() and not force:
        raise MergeError(f"{out} already exists (pass --force to replace it)")
    model = build_merged(cfg, quiet=quiet)
    path = save_checkpoint(model, out, tokenizer_source=cfg.base_model, force=force)
    _log(f"wrote {path} ({type(model).__name__})", quiet)
    return path


def build_merged(cfg: MergeConfig, quiet: bool = True, gates_LEH: torch.Tensor | None = None):
    """The merged model in memory (MixtralForCausalLM, Qwen2MoeForCausalLM or MultiplMoEForCausalLM).

    `gates_LEH` replaces the computed router rows (routed experts, then the shared one if any).
    """
    refs = {f"experts[{i}]": e.source_model for i, e in enumerate(cfg.experts)}
    refs.update({f"shared_experts[{i}]": e.source_model for i, e in enumerate(cfg.shared_experts or [])})
    base_cfg = check_architectures(cfg.base_model, refs)
    arch = cfg.architecture_name(base_cfg.model_type)
    if base_cfg.model_type not in _BASES[arch]:
        raise MergeError(f"architecture {arch}: a {base_cfg.model_type} base cannot be expressed; it needs "
                         f"{' or '.join(_BASES[arch])}")
    if arch == "Mixtral" and (getattr(base_cfg, "attention_bias", False) or getattr(base_cfg, "mlp_bias", False)):
        raise MergeError("architecture Mixtral: the base's attention/MLP biases have no Mixtral equivalent")

    try:
        base = load_dense(cfg.base_model, "float32").eval()
    except CheckpointError as e:
        raise MergeError(f"base_model: {e}") from None
    generator = torch.Generator().manual_seed(cfg.seed)
    ffns: list[ExpertFFN] = []
    trunk_sum: dict[str, torch.Tensor] | None = None
    for i, e in enumerate(cfg.experts):
        _log(f"expert {i}: {describe(e.source_model)}", quiet)
        model = load_model(e.source_model, base, cfg.base_model, f"experts[{i}]")
        ffns.append(noised(ffn_of(model), e, generator))
        if cfg.non_expert == "average":
            state = non_ffn_state(model)
            trunk_sum = state if trunk_sum is None else {k: trunk_sum[k] + state[k] for k in trunk_sum}
        del model
    shared = (cfg.shared_experts or [None])[0]
    shared_ffn = None
    if shared is not None:
        model = load_model(shared.source_model, base, cfg.base_model, "shared_experts[0]")
        shared_ffn = noised(ffn_of(model), shared, generator)
        del model

    trunk = base
    if trunk_sum is not None:
        trunk = copy.deepcopy(base)
        n = len(cfg.experts)
        # Buffers such as rotary frequencies are not averaged weights: keep the base's.
        trunk.load_state_dict({k: v / n if v.is_floating_point() else v for k, v in trunk_sum.items()}, strict=False)
    if gates_LEH is None:
        wanted = list(cfg.experts) + ([shared] if shared is not None and shared.positive_prompts else [])
        tokenizer = _tokenizer(cfg.base_model) if cfg.gate_mode not in ("random", "uniform_random") else None
        gates_LEH = gate_vectors(trunk, tokenizer, wanted, cfg.gate_mode, cfg.gate_input, cfg.seed)
        warn_degenerate(gates_LEH)
    E = len(cfg.experts)
    routed_LEH, shared_LH = gates_LEH[:, :E], (gates_LEH[:, E] if gates_LEH.shape[1] > E else None)

    if arch == "Mixtral":
        model = _mixtral(trunk, ffns, routed_LEH, cfg.experts_per_token)
    else:
        preset = "qwen2-moe" if arch == "Qwen MoE" else cfg.hybrid_preset
        model = _hybrid(trunk, ffns, routed_LEH, shared_ffn, shared_LH, cfg.experts_per_token, preset, cfg.seed)
        if arch == "Qwen MoE":
            try:
                model = to_qwen2_moe(model)
            except ExportError as e:
                raise MergeError(f"architecture Qwen MoE: {e}") from None
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else _base_dtype(base_cfg)
    return model.to(dtype).eval()


def _base_dtype(base_cfg) -> torch.dtype:
    dtype = getattr(base_cfg, "dtype", None) or getattr(base_cfg, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise MergeError(f"base_model {base}: no usable tokenizer for the prompts ({e}); use gate_mode random") \
            from None


@torch.no_grad()
def _mixtral(trunk, ffns: list[ExpertFFN], gates_LEH: torch.Tensor, top_k: int):
    from transformers import MixtralConfig, MixtralForCausalLM

    # The base's fields as they are (Llama's and Mistral's attention is Mixtral's), mergekit's settings on top.
    fields = {k: v for k, v in trunk.config.to_dict().items()
              if k not in ("model_type", "architectures", "transformers_version", "auto_map")}
    cfg = MixtralConfig(**fields)
    cfg.architectures = ["MixtralForCausalLM"]
    cfg.num_local_experts = len(ffns)
    cfg.num_experts_per_tok = top_k
    cfg.sliding_window = None
    base = trunk.config
    cfg.head_dim = getattr(base, "head_dim", None) or base.hidden_size // base.num_attention_heads
    state = {k: v for k, v in trunk.state_dict().items() if ".mlp." not in k}
    for l in range(trunk.config.num_hidden_layers):
        p = f"model.layers.{l}.mlp."
        state[p + "experts.gate_up_proj"] = torch.stack([torch.cat([f.gate_LIH[l], f.up_LIH[l]]) for f in ffns])
        state[p + "experts.down_proj"] = torch.stack([f.down_LHI[l] for f in ffns])
        state[p + "gate.weight"] = gates_LEH[l].to(state[p + "experts.down_proj"].dtype)
    with torch.device("meta"):
        model = MixtralForCausalLM(cfg)
    model.load_state_dict({k: v.clone() for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")},
                          strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb.__init__(cfg)  # buffers are not in the state dict: recompute them
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise RuntimeError(f"Mixtral merge left tensors unset: {meta[:5]}")
    return model.eval()


@torch.no_grad()
def _hybrid(trunk, ffns: list[ExpertFFN], gates_LEH: torch.Tensor, shared_ffn: ExpertFFN | None,
            shared_LH: torch.Tensor | None, top_k: int, preset: str, seed: int):
    E = len(ffns)
    overrides = {"token.num_experts": E + 1, "token.top_k": top_k + 1}
    if preset == "qwen2-moe":
        overrides["token.norm_topk_prob"] = True  # as mergekit writes Qwen MoE
    try:
        moe = resolve_preset(preset, overrides)
    except (ConfigError, KeyError, FileNotFoundError) as e:
        raise MergeError(f"hybrid_preset: {str(e).strip(chr(39))}") from None
    model = upcycle_model(trunk, moe, seed=seed)  # every FFN copy, segment level and norms from the trunk
    for l, layer in enumerate(model.model.layers):
        block = layer.mlp
        if not isinstance(block, HybridMoEBlock):
            continue
        tok = block.token_moe
        tok.experts.gate_up_proj.copy_(torch.stack([torch.cat([f.gate_LIH[l], f.up_LIH[l]]) for f in ffns]))
        tok.experts.down_proj.copy_(torch.stack([f.down_LHI[l] for f in ffns]))
        if shared_ffn is not None:
            tok.shared_expert.gate_proj.weight.copy_(shared_ffn.gate_LIH[l])
            tok.shared_expert.up_proj.weight.copy_(shared_ffn.up_LIH[l])
            tok.shared_expert.down_proj.weight.copy_(shared_ffn.down_LHI[l])
        shared_row = shared_LH[l] if shared_LH is not None else torch.zeros(gates_LEH.shape[-1])
        if moe.token.gating == "renorm":  # one softmax over the routed experts and the shared one (last)
            tok.router.weight.copy_(torch.cat([gates_LEH[l], shared_row[None]]))
        else:
            tok.router.weight.copy_(gates_LEH[l])
            tok.shared_expert_gate.weight.copy_(shared_row[None])
    return model.eval()


__all__ = ["build_merged", "merge"]
