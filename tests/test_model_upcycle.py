"""Upcycled Hugging Face model (issue 3): parity with the dense model, checkpoints, generation, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import NO_PACKAGE_PRELUDE
import torch

from multipl_moe.cli import main as cli
from multipl_moe.modeling import MultiplMoEForCausalLM
from multipl_moe.modeling.modeling_multipl_moe import output_cache
from multipl_moe.moe import HybridMoEBlock
from multipl_moe.moe.presets import resolve_preset
from multipl_moe.modeling.upcycle import load_dense, upcycle, upcycle_model


def ids_batch(vocab=259, B=3, S=21, seed=0):  # 256 bytes + 3 specials: always in the vocabulary
    return torch.randint(3, vocab, (B, S), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def upcycled(tiny_base_factory, tmp_path_factory):
    """upcycled(arch, preset, **kw) -> checkpoint dir, upcycled through the CLI (cached)."""
    cache = {}

    def make(arch="qwen2", preset="paper", *extra):
        key = (arch, preset, extra)
        if key not in cache:
            out = tmp_path_factory.mktemp("moe") / f"{arch}-{preset}"
            assert cli(["upcycle", "--base", str(tiny_base_factory(arch)), "--out", str(out),
                        "--preset", preset, "--set", "segment.segment_length=4", *extra]) == 0
            cache[key] = out
        return cache[key]

    return make


# ------------------------------------------------------------- 1. function preserving at step 0
@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
@pytest.mark.parametrize("preset", ["preserving", "preserving-batch", "token-only"])
def test_preserving_presets_equal_the_dense_model(arch, preset, tiny_base_factory, upcycled):
    dense = load_dense(str(tiny_base_factory(arch)), "float32").eval()
    moe = MultiplMoEForCausalLM.from_pretrained(upcycled(arch, preset)).eval()
    ids = ids_batch()
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        want, got = dense(ids, attention_mask=mask).logits, moe(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=2e-5, rtol=1e-5)


def test_paper_preset_is_not_function_preserving(tiny_base_factory, upcycled):
    """The released recipe scales every FFN by ~0.7 at step 0 (METHOD.md 3.3): documented, kept."""
    dense = load_dense(str(tiny_base_factory("qwen2")), "float32").eval()
    moe = MultiplMoEForCausalLM.from_pretrained(upcycled("qwen2", "paper")).eval()
    with torch.no_grad():
        assert not torch.allclose(moe(ids_batch()).logits, dense(ids_batch()).logits, atol=1e-3)


# ------------------------------------------------------------- 2. save -> load round trip
def test_checkpoint_layout_and_round_trip_with_the_package(upcycled, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = upcycled("qwen2", "paper-causal", "--noise-std", "0.01")
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "multipl_moe" and "auto_map" in config
    assert config["moe"]["segment"]["routing"] == "causal"
    a = AutoModelForCausalLM.from_pretrained(path).eval()  # no trust_remote_code: registered class
    assert type(a) is MultiplMoEForCausalLM
    a.save_pretrained(tmp_path / "again")
    b = MultiplMoEForCausalLM.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert torch.equal(a(ids_batch()).logits, b(ids_batch()).logits)
    assert len(AutoTokenizer.from_pretrained(path)) == a.config.vocab_size


def test_trust_remote_code_loads_where_the_package_cannot_be_imported(upcycled, tmp_path):
    path = upcycled("llama", "paper-causal", "--noise-std", "0.01")
    ids = ids_batch()
    torch.save(ids, tmp_path / "ids.pt")
    script = NO_PACKAGE_PRELUDE + textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / 'ids.pt')!r})).logits, {str(tmp_path / 'out.pt')!r})
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = MultiplMoEForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "out.pt"), local(ids).logits)


# ------------------------------------------------------------- 3. causal generation
def _greedy_by_recomputation(model, ids, steps):
    for _ in range(steps):
        with torch.no_grad():
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_causal_generate_with_cache_equals_full_recomputation(arch, upcycled):
    model = MultiplMoEForCausalLM.from_pretrained(upcycled(arch, "paper-causal", "--noise-std", "0.05")).eval()
    prompt = ids_batch(B=2, S=6, seed=1)
    with torch.no_grad():
        fast = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=2)
    assert torch.equal(fast, _greedy_by_recomputation(model, prompt, 12))
    # the segment level did take part: segments of 4 tokens, 18 tokens -> routing state advanced
    out = model(fast, use_cache=True)
    states = output_cache(out).segment_states
    assert set(states) == {0, 1} and states[0].num_seen_B.tolist() == [18, 18]


def test_causal_generate_with_left_padding_matches_each_prompt_alone(upcycled):
    model = MultiplMoEForCausalLM.from_pretrained(upcycled("qwen2", "paper-causal", "--noise-std", "0.05")).eval()
    long, short = ids_batch(B=1, S=9, seed=2), ids_batch(B=1, S=5, seed=3)
    batch = torch.cat([long, torch.cat([torch.full((1, 4), 2), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    with torch.no_grad():
        both = model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=2)
        alone = model.generate(short, max_new_tokens=8, do_sample=False, pad_token_id=2)
    assert torch.equal(both[1, 4:], alone[0])


def test_causal_suffix_change_leaves_prefix_logits_bit_identical(upcycled):
    model = MultiplMoEForCausalLM.from_pretrained(upcycled("qwen2", "paper-causal", "--noise-std", "0.05")).eval()
    ids = ids_batch(S=33)
    with torch.no_grad():
        base = model(ids).logits
        for t in (0, 3, 4, 11, 30):
            changed = ids.clone()
            changed[:, t + 1:] = ids_batch(S=33, seed=t + 7)[:, t + 1:]
            assert torch.equal(model(changed).logits[:, :t + 1], base[:, :t + 1]), t


def test_batch_mode_generates_by_recomputation_and_is_not_causal(upcycled):
    model = MultiplMoEForCausalLM.from_pretrained(upcycled("qwen2", "paper", "--noise-std", "0.05")).eval()
    prompt = ids_batch(B=2, S=6, seed=4)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=2)
        assert torch.equal(out, _greedy_by_recomputation(model, prompt, 6))
        ids = ids_batch(S=16)
        changed = ids.clone()
        changed[:, 3] = (changed[:, 3] + 1) % 259  # the last token of the first window
        assert not torch.equal(model(ids).logits[:, :3], model(changed).logits[:, :3])


# ------------------------------------------------------------- 4. Qwen2-MoE export
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_qwen2_moe_export_matches_token_only_model(arch, upcycled, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2MoeForCausalLM

    src = upcycled(arch, "qwen2-moe", "--noise-std", "0.05", "--set", "token_weight=0.8")
    out = tmp_path / "q2moe"
    assert cli(["export", str(src), "--out", str(out)]) == 0
    q = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(q) is Qwen2MoeForCausalLM
    ours = MultiplMoEForCausalLM.from_pretrained(src).eval()
    ids = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(q(ids).logits, ours(ids).logits, atol=2e-5, rtol=1e-5)
    assert cli(["export", str(upcycled("qwen2", "paper")), "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------- 5. info
def test_info_reports_the_papers_size_for_qwen15_18b(tmp_path, capsys):
    from multipl_moe.modeling.tiny import tiny_config

    # Qwen1.5-1.8B's shapes (config only: no weights are needed or read)
    tiny_config("qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=5504, num_layers=24,
                num_heads=16, num_kv_heads=16, max_positions=32768).save_pretrained(tmp_path)
    assert cli(["info", str(tmp_path), "--preset", "paper", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == pytest.approx(10.8e9, rel=0.02)
    assert info["active_params_per_token"] == pytest.approx(3.5e9, rel=0.02)
    assert info["token_experts_per_layer"] == 6 and info["segment_experts_per_layer"] == 6


def test_info_on_an_upcycled_checkpoint_counts_real_parameters(upcycled, capsys):
    path = upcycled("qwen2", "paper")
    assert cli(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = MultiplMoEForCausalLM.from_pretrained(path)
    assert info["total_params"] == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------- layers and errors
def test_only_the_named_layers_are_upcycled(tiny_base_factory, upcycled):
    model = MultiplMoEForCausalLM.from_pretrained(upcycled("qwen2", "paper", "--moe-layers", "1")).eval()
    assert not isinstance(model.model.layers[0].mlp, HybridMoEBlock)
    assert isinstance(model.model.layers[1].mlp, HybridMoEBlock)
    with torch.no_grad():
        model(ids_batch())


def test_unsupported_architecture_names_the_supported_ones(tmp_path, capsys):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    assert cli(["upcycle", "--base", str(tmp_path / "gpt2"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "gpt2" in err and "qwen2" in err and "llama" in err and "mistral" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_missing_and_corrupt_checkpoints_name_the_file(tiny_base_factory, tmp_path, capsys):
    import shutil

    assert cli(["upcycle", "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base_factory("qwen2"), broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert cli(["upcycle", "--base", str(broken), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force_and_a_failed_run_leaves_nothing(tiny_base_factory, tmp_path, capsys,
                                                                    monkeypatch):
    base = str(tiny_base_factory("qwen2"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli(["upcycle", "--base", base, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"

    import multipl_moe.modeling.upcycle as up

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(up, "write_remote_code", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        up.upcycle(base, out, resolve_preset("paper"), force=True)
    assert (out / "keep.txt").read_text() == "mine"  # the old output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    monkeypatch.undo()
    assert cli(["upcycle", "--base", base, "--out", str(out), "--force"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()


def test_bad_preset_override_is_a_user_error(tiny_base_factory, tmp_path, capsys):
    base = str(tiny_base_factory("qwen2"))
    assert cli(["upcycle", "--base", base, "--out", str(tmp_path / "o"), "--set", "token.top_k=9"]) == 2
    assert "token.top_k" in capsys.readouterr().err
    assert cli(["upcycle", "--base", base, "--out", str(tmp_path / "o"), "--preset", "nope"]) == 2
    assert "paper" in capsys.readouterr().err


def test_upcycled_experts_are_copies_and_shared_expert_is_frozen(tiny_base_factory):
    dense = load_dense(str(tiny_base_factory("qwen2")), "float32")
    model = upcycle_model(dense, resolve_preset("paper"))
    block = model.model.layers[0].mlp
    ffn = dense.model.layers[0].mlp
    for e in range(block.config.token.num_routed):
        assert torch.equal(block.token_moe.experts.down_proj[e], ffn.down_proj.weight)
    assert torch.equal(block.segment_moe.experts.gate_up_proj[2][: ffn.gate_proj.weight.shape[0]], ffn.gate_proj.weight)
    assert not any(p.requires_grad for p in block.token_moe.shared_expert.parameters())
    assert torch.equal(model.model.embed_tokens.weight, dense.model.embed_tokens.weight)


def test_tied_embedding_base_upcycles_and_round_trips(tiny_base_factory, tmp_path):
    base = tiny_base_factory("qwen2", tie_word_embeddings=True)
    out = tmp_path / "tied"
    assert cli(["upcycle", "--base", str(base), "--out", str(out), "--preset", "preserving"]) == 0
    dense = load_dense(str(base), "float32").eval()
    moe = MultiplMoEForCausalLM.from_pretrained(out).eval()
    assert moe.lm_head.weight.data_ptr() == moe.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(moe(ids_batch()).logits, dense(ids_batch()).logits, atol=2e-5, rtol=1e-5)


def test_device_map_auto_keeps_decoder_layers_whole(upcycled):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(upcycled("qwen2", "paper-causal"), device_map="auto")
    assert set(model._no_split_modules) >= {type(model.model.layers[0]).__name__}
