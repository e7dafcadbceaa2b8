"""Merged-expert MoE: per-language fine-tunes of one base merged into one mixture of experts.

`merge(config, out)` reads a mergekit-moe config (`config.py`), loads the experts, full or LoRA
(`sources.py`), initialises the routers from prompts (`gates.py`) and writes Mixtral, Qwen2-MoE
or MultiPL-MoE hybrid checkpoints (`build.py`); `routing.py` measures how often held-out text of
each language reaches its own expert.
"""

from .build import build_merged, merge
from .config import Expert, MergeConfig, MergeError, config_from_dict, load_config

__all__ = ["Expert", "MergeConfig", "MergeError", "build_merged", "config_from_dict", "load_config", "merge"]
