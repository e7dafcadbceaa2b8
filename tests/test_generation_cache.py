"""Causal routing state and the KV cache under generate() (issue 11, item 1).

transformers 5.24 renamed the cache keyword (`past_key_values` -> `cache`) and the model silently
rebuilt an empty cache at every step: every decoded token was routed as if it began a sequence.
These tests compare cached decoding with full recomputation for every decoding mode, check that
the forward really receives the model's own cache (so the next rename fails here, loudly), and
check that decoding a past without its routing state is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import NO_PACKAGE_PRELUDE
import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from multipl_moe.cli import main as cli
from multipl_moe.modeling import MultiplMoECache, MultiplMoEForCausalLM
from multipl_moe.modeling.modeling_multipl_moe import cache_keyword, output_cache

PAD = 2
ARCHS = ["qwen2", "llama", "mistral"]


@pytest.fixture(scope="module")
def causal_checkpoint(tiny_base_factory, tmp_path_factory):
    """causal_checkpoint(arch) -> a paper-causal checkpoint whose routers are far from uniform."""
    made = {}

    def make(arch):
        if arch not in made:
            out = tmp_path_factory.mktemp("gen") / f"{arch}-causal"
            assert cli(["upcycle", "--base", str(tiny_base_factory(arch)), "--out", str(out), "--preset",
                        "paper-causal", "--set", "segment.segment_length=4", "--noise-std", "0.05"]) == 0
            made[arch] = out
        return made[arch]

    return make


def _prompts(kind):
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 259, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    if kind == "left-padded":  # the second prompt is 5 tokens, left-padded to 9
        ids[1, :4] = PAD
        mask[1, :4] = 0
    return ids, mask


# Each mode: generate() keyword arguments; sampling and beam search exercise the cache's
# batch_repeat_interleave and reorder_cache, which must move the routing state with the keys.
MODES = {
    "greedy": dict(do_sample=False),
    "left-padded": dict(do_sample=False),
    "sample-3-per-prompt": dict(do_sample=True, top_k=0, temperature=1.5, num_return_sequences=3),
    "beam-3": dict(do_sample=False, num_beams=3, num_return_sequences=2, length_penalty=0.0),
}


def _generate(model, kind, use_cache, steps=10):
    ids, mask = _prompts(kind)
    torch.manual_seed(5)
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps, use_cache=use_cache,
                              pad_token_id=PAD, return_dict_in_generate=True, output_scores=True, **MODES[kind])


class CacheSpy:
    """Records, for every forward call, the Cache objects it was given under any keyword."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        caches = [v for v in kwargs.values() if isinstance(v, Cache)]
        states = {i: s.num_seen_B.clone() for i, s in getattr(caches[0], "segment_states", {}).items()} if caches else None
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is not None:  # real tokens before the last one
            real_past = mask[:, :-1].sum(-1)
        else:  # generate() drops an all-ones mask (5.24); then the new token's position says it
            real_past = positions[:, -1]
        self.calls.append(dict(caches=caches, states=states, real_past=real_past.clone(),
                               new_tokens=kwargs["input_ids"].shape[1]))


@pytest.mark.parametrize("kind", list(MODES))
@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generation_equals_full_recomputation(arch, kind, causal_checkpoint):
    model = MultiplMoEForCausalLM.from_pretrained(causal_checkpoint(arch)).eval()
    spy = CacheSpy(model)
    fast = _generate(model, kind, use_cache=True)
    spy.handle.remove()
    slow = _generate(model, kind, use_cache=False)
    assert torch.equal(fast.sequences, slow.sequences)
    for a, b in zip(fast.scores, slow.scores, strict=True):
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite)
        torch.testing.assert_close(a[finite], b[finite], atol=1e-4, rtol=1e-4)
    if kind.startswith("beam"):
        torch.testing.assert_close(fast.sequences_scores, slow.sequences_scores, atol=1e-5, rtol=1e-5)

    # The forward really received the model's own cache, the same object at every step, and it
    # held the routing state of exactly the real tokens before each decoding step. If transformers
    # renames the keyword again, this is where it shows.
    first, rest = spy.calls[0], spy.calls[1:]
    assert len(rest) == 9 and all(c["new_tokens"] == 1 for c in rest)
    cache = rest[0]["caches"][0] if rest[0]["caches"] else None
    # generate() makes the cache before the prefill since 5.x (a plain DynamicCache, adopted in
    # place) or lets the prefill's forward make it (5.0)
    assert first["caches"] in ([], [cache])
    for call in rest:
        assert len(call["caches"]) == 1 and call["caches"][0] is cache
        assert set(call["states"]) == {0, 1}, "the routing state did not reach the MoE blocks"
        for seen in call["states"].values():
            assert torch.equal(seen, call["real_past"])
    assert isinstance(cache, MultiplMoECache)


def test_greedy_generation_equals_a_hand_written_recomputation_loop(causal_checkpoint):
    model = MultiplMoEForCausalLM.from_pretrained(causal_checkpoint("qwen2")).eval()
    ids, mask = _prompts("left-padded")
    out = _generate(model, "left-padded", use_cache=True).sequences
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        for _ in range(10):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
            logits = model(ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
            logits[:, eos] = -torch.inf  # what min_new_tokens does
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    assert torch.equal(out, ids)


@pytest.mark.parametrize("rename", [None, "kv_cache"])
def test_a_cache_that_does_not_reach_the_model_stops_generation(rename, causal_checkpoint, monkeypatch):
    """The 5.24 failure reproduced on purpose: generate() hands the cache to the model under a name
    it ignores (None: not at all). Decoding must stop with an error, not produce plausible tokens."""
    model = MultiplMoEForCausalLM.from_pretrained(causal_checkpoint("qwen2")).eval()
    prepare = type(model).prepare_inputs_for_generation

    def misplace_the_cache(self, *args, **kwargs):
        inputs = prepare(self, *args, **kwargs)
        for name in ("cache", "past_key_values"):
            if name in inputs:
                cache = inputs.pop(name)
                if rename:
                    inputs[rename] = cache
        return inputs
    monkeypatch.setattr(type(model), "prepare_inputs_for_generation", misplace_the_cache)
    message = "past tokens without their causal routing state" if rename is None else "does not know"
    for kind in ("greedy", "left-padded"):
        with pytest.raises(ValueError, match=message):
            _generate(model, kind, use_cache=True)


def _kw(model):
    return cache_keyword(type(model.model).forward)


def test_decoding_a_past_without_routing_state_is_refused(causal_checkpoint):
    model = MultiplMoEForCausalLM.from_pretrained(causal_checkpoint("llama")).eval()
    ids, mask = _prompts("greedy")
    nxt = torch.full((2, 1), 7)
    longer = torch.ones(2, 10, dtype=torch.long)
    with torch.no_grad():
        # no cache at all, but the mask says 9 tokens came before
        for use_cache in (True, False):
            with pytest.raises(ValueError, match="9 past tokens without their causal routing state"):
                model(nxt, attention_mask=longer, use_cache=use_cache)
        # a cache the base decoder filled, without the routing state
        plain = DynamicCache(config=model.config)
        model.model(input_ids=ids, attention_mask=mask, use_cache=True, **{_kw(model): plain})
        for name in ("cache", "past_key_values"):
            with pytest.raises(ValueError, match="filled without MultiPL-MoE's routing state"):
                model(nxt, attention_mask=longer, **{name: plain})
        # a cache under a name the model does not know
        with pytest.raises(ValueError, match="'kv_cache', which MultiPL-MoE does not know"):
            model(ids, kv_cache=MultiplMoECache(config=model.config))
        # the cache of another sequence (6 tokens seen, the mask says 9)
        other = MultiplMoECache(config=model.config)
        model(ids[:, :6], cache=other)
        with pytest.raises(ValueError, match="belongs to another sequence"):
            model(nxt, attention_mask=longer, cache=other)
        with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
            model(ids, cache=MultiplMoECache(config=model.config), past_key_values=MultiplMoECache(config=model.config))
        # a cache class that cannot carry the routing state
        with pytest.raises(ValueError, match="cannot hold it"):
            model.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD, cache_implementation="static")


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_either_cache_keyword_continues_a_sequence_exactly(name, causal_checkpoint):
    model = MultiplMoEForCausalLM.from_pretrained(causal_checkpoint("mistral")).eval()
    ids, mask = _prompts("left-padded")
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
        cache = DynamicCache(config=model.config)  # an empty plain cache is adopted, in place
        head = model(ids[:, :5], attention_mask=mask[:, :5], **{name: cache})
        assert output_cache(head) is cache and isinstance(cache, MultiplMoECache)
        tail = [model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], **{name: cache}).logits for t in range(5, 9)]
    got = torch.cat([head.logits, *tail], 1)
    torch.testing.assert_close(got[mask.bool()], full[mask.bool()], atol=1e-5, rtol=1e-5)


_REMOTE_SCRIPT = """
import json, sys, torch
from transformers import AutoModelForCausalLM

PAD = 2
MODES = {modes}

def prompts(kind):
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 259, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    if kind == "left-padded":
        ids[1, :4] = PAD
        mask[1, :4] = 0
    return ids, mask

def run(model, out_path, cache_modes=(True,)):
    seen = set()
    model.register_forward_pre_hook(
        lambda m, a, kw: seen.update(type(v).__name__ for k, v in kw.items() if type(v).__name__.endswith("Cache")),
        with_kwargs=True)
    result = {{}}
    for kind, kwargs in MODES.items():
        for use_cache in cache_modes:
            ids, mask = prompts(kind)
            torch.manual_seed(5)
            with torch.no_grad():
                out = model.generate(ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                                     use_cache=use_cache, pad_token_id=PAD, **kwargs)
            result[f"{{kind}}/{{use_cache}}"] = out.tolist()
    result["caches"] = sorted(seen)
    result["module"] = type(model).__module__
    with open(out_path, "w") as f:
        json.dump(result, f)
"""


def test_remote_code_checkpoint_generates_the_same_without_the_package(causal_checkpoint, tmp_path):
    path = causal_checkpoint("qwen2")
    script = _REMOTE_SCRIPT.format(modes=repr(MODES))
    remote = NO_PACKAGE_PRELUDE + script + textwrap.dedent(f"""
        model = AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
        run(model, {str(tmp_path / 'remote.json')!r})
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", remote], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "remote.json").read_text())
    assert got.pop("module").startswith("transformers_modules")
    assert got.pop("caches") == ["MultiplMoECache"]

    namespace = {}
    exec(script, namespace)
    namespace["run"](MultiplMoEForCausalLM.from_pretrained(path).eval(), str(tmp_path / "local.json"), (True, False))
    want = json.loads((tmp_path / "local.json").read_text())
    assert want.pop("caches") == ["MultiplMoECache"]
    want.pop("module")
    for kind in MODES:  # the remote code's cached decoding equals the package's, and recomputation
        assert got[f"{kind}/True"] == want[f"{kind}/True"] == want[f"{kind}/False"], kind
