"""Quieter logs in our own commands: transformers' per-tensor loading and saving bars off.

`from_pretrained` draws a "Loading weights" bar and `save_pretrained` a "Writing model shards"
bar for every checkpoint, even a tiny one; in a command that loads several models (the demo, eval
of a base and its variants) they crowd out our own progress lines. transformers has a switch for
them, `transformers.utils.logging.disable_progress_bar()`, but calling it means importing
transformers (1-2 s) in every command, `--help` and `report` included. So the switch is flipped
the moment transformers' logging module is first imported, by a meta-path finder, and costs
nothing in commands that never import it. The hub's download bars stay as the user set them
(HF_HUB_DISABLE_PROGRESS_BARS): a multi-GB download deserves its bar.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

TARGET = "transformers.utils.logging"


def _quiet(logging_module) -> None:
    from huggingface_hub import utils as hub_utils

    downloads_on = not hub_utils.are_progress_bars_disabled()
    logging_module.disable_progress_bar()   # also switches the hub's off ...
    if downloads_on:
        hub_utils.enable_progress_bars()     # ... which were on: keep them


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _quiet(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


def install() -> None:
    """Turn transformers' own bars off now (if imported) or when it is imported, and silence the
    one FutureWarning our commands trigger without calling the deprecated API themselves: peft
    (0.21) reads transformers' `is_gradient_checkpointing` when wrapping a model for LoRA."""
    import warnings

    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    if TARGET in sys.modules:
        _quiet(sys.modules[TARGET])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
