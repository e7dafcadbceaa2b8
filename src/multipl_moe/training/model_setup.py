"""The model a training run starts from, for each variant, with its freezing recipe applied.

All variants start from the same dense base and see the same data, so their comparison is fair:
`dense` continues pretraining every weight, `lora` trains low-rank adapters (peft), and the MoE
variants are upcycled in memory (or loaded, if `model.base` already is a MultiPL-MoE checkpoint).
"""

from __future__ import annotations

from torch import nn

from .config import TrainConfig, TrainConfigError

# Parameter-name fragments that train under each MoE freezing recipe.
_PAPER_TRAINABLE = ("token_moe.experts.", "token_moe.router.", "token_moe.shared_expert_gate.",
                    "segment_moe.", "segment_gate")
_EXPERTS_TRAINABLE = _PAPER_TRAINABLE + ("token_moe.shared_expert.",)


def apply_freezing(model: nn.Module, recipe: str) -> None:
    """`paper`: only routed token experts, segment experts and routers train (the released recipe:
    attention, embeddings, norms, LM head and the shared expert stay frozen)."""
    if recipe == "all":
        model.requires_grad_(True)
        return
    keep = _PAPER_TRAINABLE if recipe == "paper" else _EXPERTS_TRAINABLE
    for name, p in model.named_parameters():
        p.requires_grad_(any(k in name for k in keep))


def build_model(cfg: TrainConfig):
    """(model, tokenizer) for `cfg.model`, in fp32 (mixed precision is the accelerator's job)."""
    from transformers import AutoConfig, AutoTokenizer

    from ..modeling import MultiplMoEConfig, MultiplMoEForCausalLM
    from ..modeling.upcycle import CheckpointError, load_dense, upcycle_model

    m = cfg.model
    if not m.base:
        raise TrainConfigError("model.base is empty: give a dense checkpoint directory or hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(m.base)
        base_config = AutoConfig.from_pretrained(m.base)
    except (OSError, ValueError) as e:
        raise TrainConfigError(f"model.base {m.base!r}: cannot load config/tokenizer ({e})") from None
    if isinstance(base_config, MultiplMoEConfig):
        if m.variant in ("dense", "lora"):
            raise TrainConfigError(f"model.variant {m.variant!r} needs a dense base, but {m.base} is MultiPL-MoE")
        model = MultiplMoEForCausalLM.from_pretrained(m.base, dtype="float32")
    else:
        try:
            dense = load_dense(m.base, "float32")
        except CheckpointError as e:
            raise TrainConfigError(str(e)) from None
        if m.variant == "dense":
            model = dense
        elif m.variant == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(dense, LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                                                     target_modules=list(m.lora_targets), task_type="CAUSAL_LM"))
        else:
            model = upcycle_model(dense, m.moe, noise_std=m.upcycle_noise_std, seed=cfg.seed)
    if isinstance(model, MultiplMoEForCausalLM):
        apply_freezing(model, m.freeze)
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise TrainConfigError(f"tokenizer/model mismatch: the tokenizer of {m.base} has {len(tokenizer)} tokens "
                               f"but the model's embedding has {vocab} rows")
    return model.float().train(), tokenizer
