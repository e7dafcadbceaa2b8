"""The one config loader: YAML files, dotted overrides and `upcycle --set` into one typed tree.

Every mistake fails when the config is loaded (before a tokenizer or a weight is read: the base
named here does not exist) in one line that names the key.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from multipl_moe.cli import main as cli
from multipl_moe.config.loader import leaves
from multipl_moe.data.config import DataError
from multipl_moe.moe import HybridMoEConfig, SegmentMoEConfig
from multipl_moe.moe.presets import PRESETS, PresetError, resolve_preset
from multipl_moe.training import TrainConfigError, load_config
from multipl_moe.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"
MISSING_BASE = "model.base=/nonexistent/never-read"


def fails(overrides, key, path=TINY, error=TrainConfigError):
    with pytest.raises(error) as err:
        load_config(path, [MISSING_BASE, *overrides])
    text = str(err.value)
    assert key in text and "\n" not in text, text
    return text


@pytest.mark.parametrize("override,key", [
    ("model.moe.segment.segmnt_length=3", "model.moe.segment.segmnt_length"),
    ("model.moe_overrides.segment.segmnt_length=3", "segment.segmnt_length"),
    ("model.moe.segment.routing=causl", "model.moe.segment.routing"),
    ("optim.lr=abc", "optim.lr"),
    ("optim.lr=-1", "optim.lr"),
    ("stepz=3", "stepz"),
    ("optm.lr=1e-3", "optm.lr"),
    ("steps=1.5", "steps"),
    ("model.variant=moe", "model.variant"),
    ("model.preset=nope", "model.preset"),
    ("model.moe.token.top_k=9", "model.moe.token.top_k"),
    ("model.moe.fusion=sum", "model.moe.fusion"),
    ("data.seq_len=0", "data.seq_len"),
    ("optim.betas=[0.9]", "optim.betas"),
])
def test_a_bad_override_fails_at_load_time_naming_the_key(override, key):
    error = DataError if key.startswith("data.") else TrainConfigError
    fails([override], key, error=error)


def test_a_near_miss_is_suggested():
    assert "did you mean model.moe.segment.segment_length" in fails(["model.moe.segment.segmnt_length=3"], "segmnt")


def test_a_misspelt_key_in_a_yaml_file_is_named_with_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model:\n  base: /nonexistent\n  moe:\n    segment:\n      segmnt_length: 32\n")
    text = fails([], "model.moe.segment.segmnt_length", path=cfg)
    assert str(cfg) in text
    cfg.write_text("optim:\n  lr: abc\n")
    assert str(cfg) in fails([], "optim.lr", path=cfg)
    cfg.write_text("modl:\n  base: x\n")
    fails([], "modl.base", path=cfg)


def test_cross_field_checks_of_the_block_are_named_from_the_training_root():
    fails(["model.moe.segment.num_experts=2", "model.moe.segment.causal_top_k=3"], "model.moe.segment.causal_top_k")
    fails(["model.variant=token-only", "model.moe.segment.num_experts=3"], "model.moe.segment.num_experts")


def test_the_cli_reports_a_bad_key_in_one_line_before_reading_the_base(capsys):
    assert cli(["train", str(TINY), MISSING_BASE, "model.moe.segment.routing=causl"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.moe.segment.routing" in err and "causl" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("value,key", [("segment.segmnt_length=3", "segment.segmnt_length"),
                                       ("segment.routing=causl", "segment.routing"),
                                       ("token.top_k=x", "token.top_k"), ("noequals", "noequals")])
def test_upcycle_set_fails_before_the_base_is_read(value, key, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli(["upcycle", "--base", "/nonexistent/never-read", "--out", str(out), "--set", value]) == 2
    err = capsys.readouterr().err.strip()
    assert key in err and len(err.splitlines()) == 1 and not out.exists(), err


def test_the_block_is_typed_and_starts_from_the_variants_preset():
    cfg = load_config(TINY, [MISSING_BASE, "model.moe.segment.segment_length=16", "model.moe.token_weight=3e-1"])
    assert isinstance(cfg.model.moe, HybridMoEConfig)
    assert cfg.model.moe.segment.segment_length == 16 and cfg.model.moe.token_weight == 0.3
    only = load_config(None, ["model.variant=token-only"]).model.moe
    assert only == PRESETS["token-only"].config and only.is_causal
    preserving = load_config(None, ["model.preset=preserving", "model.moe.segment.segment_length=8"]).model.moe
    assert preserving.fusion == "preserving" and preserving.segment.routing == "causal"
    assert preserving.segment.segment_length == 8


def test_routing_has_one_name_and_the_old_spellings_still_load(tmp_path):
    new = load_config(None, ["model.variant=hybrid", "model.moe.segment.routing=causal",
                             "model.moe.segment.segment_length=32"])
    assert new.model.moe == HybridMoEConfig(segment=SegmentMoEConfig(routing="causal", segment_length=32))
    assert new.model.moe.is_causal
    assert not load_config(None, []).model.moe.is_causal
    with pytest.warns(FutureWarning, match="deprecated"):
        old = load_config(None, ["model.variant=hybrid-causal", "model.moe_overrides.segment.segment_length=32"])
    assert old == new
    cfg = tmp_path / "old.yaml"
    cfg.write_text("model:\n  variant: hybrid-causal\n  moe_overrides:\n    segment.segment_length: 32\n")
    with pytest.warns(FutureWarning):
        assert load_config(cfg) == new
    with pytest.warns(FutureWarning):
        assert load_config(None, ["model.variant=hybrid-batch"]).model.moe == PRESETS["paper"].config


def test_shipped_configs_load_without_notes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in sorted((REPO / "configs").glob("*.yaml")):
            assert isinstance(load_config(path), TrainConfig)


def test_a_saved_config_loads_back_equal(tmp_path):
    cfg = load_config(TINY, [MISSING_BASE, "model.preset=preserving", "optim.betas=[0.8, 0.9]",
                             "data.languages=low", "data.sampling_weights={py: 1, rs: 2}"])
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg


def test_presets_are_named_blocks_and_overrides_go_over_them():
    assert all(isinstance(p.config, HybridMoEConfig) for p in PRESETS.values())
    cfg = resolve_preset("paper-causal", ["segment.segment_length=8", "token.freeze_shared_expert=false"])
    assert cfg.segment.routing == "causal" and cfg.segment.segment_length == 8
    assert cfg.token.freeze_shared_expert is False
    assert resolve_preset("paper", {"segment.segment_length": 4}).segment.segment_length == 4
    with pytest.raises(PresetError, match="segment.pooling"):
        resolve_preset("paper", ["segment.pooling=median"])
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        resolve_preset("nope")


def test_a_preset_file_with_a_misspelt_key_is_named(tmp_path):
    path = tmp_path / "block.yaml"
    path.write_text("moe:\n  segment:\n    routing: causal\n    segment_length: 16\n")
    assert resolve_preset(path).segment.segment_length == 16
    path.write_text("moe:\n  segment:\n    routng: causal\n")
    with pytest.raises(PresetError, match=f"{path}: unknown key segment.routng"):
        resolve_preset(path)


def test_every_documented_key_is_one_the_loader_accepts():
    keys = {a.dest for a in leaves(TrainConfig)}
    assert {"model.moe.segment.routing", "optim.lr", "data.seq_len", "steps"} <= keys
    assert not any("moe_overrides" in k for k in keys)


def test_the_hf_config_builds_the_block_once_and_writes_it_as_a_mapping(tmp_path):
    import json

    from transformers import Qwen2Config

    from multipl_moe.modeling import MultiplMoEConfig

    block = resolve_preset("paper-causal", ["segment.segment_length=8"])
    cfg = MultiplMoEConfig.from_base(Qwen2Config(num_hidden_layers=2), block)
    assert cfg.moe_config is cfg.moe_config and cfg.moe_config == block and cfg.moe_config is not block
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["moe"] == block.to_dict()
    assert MultiplMoEConfig.from_pretrained(tmp_path).moe_config == block
