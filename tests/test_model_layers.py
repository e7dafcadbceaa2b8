"""The decoder layers are named subclasses of each base's own layer (not classes made at run time)."""

from __future__ import annotations

import pytest
import transformers

from multipl_moe.modeling import SUPPORTED_BASES, modeling_multipl_moe as M
from multipl_moe.modeling.tiny import tiny_config
from multipl_moe.modeling.upcycle import upcycle_model
from multipl_moe.moe.presets import resolve_preset


@pytest.mark.parametrize("arch", list(SUPPORTED_BASES))
def test_each_base_gets_its_declared_layer_subclass(arch):
    dense = transformers.AutoModelForCausalLM.from_config(tiny_config(arch, num_layers=2))
    base_layer = type(dense.model.layers[0])
    moe = upcycle_model(dense, resolve_preset("paper"))
    ours = M.MOE_DECODER_LAYERS[base_layer]
    assert ours.__module__ == M.__name__ and getattr(M, ours.__name__) is ours  # importable by name
    assert ours.__bases__ == (base_layer,) and ours.__name__ == f"MultiplMoE{base_layer.__name__}"
    assert {type(layer) for layer in moe.model.layers} == {ours}
    assert ours.__name__ in moe._no_split_modules
