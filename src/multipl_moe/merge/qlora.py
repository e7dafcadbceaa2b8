"""4-bit QLoRA for the per-language fine-tunes a merge starts from, where bitsandbytes supports it.

A per-language fine-tune is `multipl-moe train` with `data.languages` restricted and variant
`lora` or `dense` (see the merge command's help). QLoRA is the same LoRA on a base whose linear
layers are stored in 4-bit NF4 (bitsandbytes), with bf16 compute: the reference recipe's way of
fine-tuning a 7B model per language on one GPU.

bitsandbytes' 4-bit kernels need a CUDA GPU; on a machine without one `qlora_model` refuses in one
line rather than falling back to something slower or different. The LoRA weights trained on the
quantised base are merged by `merge` like any adapter (on the full-precision base: the usual
QLoRA practice, which differs from the quantised forward by the quantisation error).
"""

from __future__ import annotations

from ..errors import UserError


class QLoRAUnsupported(UserError, RuntimeError):
    """4-bit QLoRA cannot run here (no CUDA GPU, or no bitsandbytes)."""


def check_4bit_supported() -> None:
    """One line saying why 4-bit QLoRA cannot run on this machine; nothing where it can."""
    import torch

    if not torch.cuda.is_available():
        raise QLoRAUnsupported("4-bit QLoRA is not supported on CPU: bitsandbytes' 4-bit layers need a CUDA GPU "
                               "(fine-tune with model.variant=lora, full-precision LoRA, instead)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise QLoRAUnsupported("4-bit QLoRA needs the bitsandbytes package: pip install 'bitsandbytes>=0.43'") \
            from None


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def qlora_model(base: str, r: int = 16, alpha: int = 32, dropout: float = 0.0, targets: tuple[str, ...] = LORA_TARGETS):
    """`base` loaded in 4-bit NF4 (double quantisation, bf16 compute) with trainable LoRA adapters."""
    check_4bit_supported()
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant, device_map={"": 0})
    model = prepare_model_for_kbit_training(model)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                                            task_type="CAUSAL_LM"))
