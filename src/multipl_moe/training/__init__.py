"""Continued pretraining: configuration, model set-up per variant, the Accelerate loop."""

from .config import TrainConfig, TrainConfigError, load_config

__all__ = ["TrainConfig", "TrainConfigError", "load_config"]
