"""The MultiPL-MoE causal LM as a Hugging Face model (config, modeling, registration with Auto*)."""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration_multipl_moe import SUPPORTED_BASES, MultiplMoEConfig
from .modeling_multipl_moe import MultiplMoECache, MultiplMoEForCausalLM

# With the package installed, Auto* classes load checkpoints without trust_remote_code.
AutoConfig.register(MultiplMoEConfig.model_type, MultiplMoEConfig, exist_ok=True)
AutoModelForCausalLM.register(MultiplMoEConfig, MultiplMoEForCausalLM, exist_ok=True)

__all__ = ["SUPPORTED_BASES", "MultiplMoECache", "MultiplMoEConfig", "MultiplMoEForCausalLM"]
