"""`multipl-moe merge`: fine-tunes of one tiny base merged into Mixtral, Qwen2-MoE and MultiPL-MoE.

The references are built by hand in this file: gate vectors from each prompt run alone with the
FFN inputs captured by a wrapper module (not the hooks the library uses), and an MoE layer that
runs every expert's own dense FFN module and combines them with its own softmax/top-k.
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
from torch import nn

from multipl_moe.cli import main as cli
from multipl_moe.merge import merge
from multipl_moe.merge.gates import degenerate_layers, gate_vectors
from multipl_moe.merge.config import Expert

PROMPTS = {
    0: ["def add(a, b):\n    return a + b", "print(add(1, 2))"],
    1: ["fn main() {\n    let x: i32 = 5;", "println!(\"{}\", x);"],
    2: ["package main\n\nimport \"fmt\"", "func main() {\n\tfmt.Println(\"hi\")\n}"],
}
NEGATIVE = {1: ["class Foo\n  def bar(x)"]}


def ids_batch(vocab: int = 400) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 12), generator=torch.Generator().manual_seed(7))


def base_tokenizer(path):
    """The tokenizer the merge reads prompts with: the base checkpoint's, as AutoTokenizer loads it
    (for a Qwen2 checkpoint that is Qwen2Tokenizer, which splits some text unlike the tokenizer
    object it was saved from)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def make_expert(base, out, seed: int, attention: bool = False):
    """A 'fine-tune' of `base`: its FFNs (and, if asked, its attention) moved by seeded noise."""
    model = load(base)
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".mlp." in name or (attention and ".self_attn." in name):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tiny_base_factory, tmp_path_factory):
    """models(arch) -> (base dir, [expert dirs]); three experts, the last also with new attention."""
    cache = {}

    def make(arch: str):
        if arch not in cache:
            base = tiny_base_factory(arch)
            root = tmp_path_factory.mktemp(f"experts-{arch}")
            cache[arch] = (base, [make_expert(base, root / f"e{i}", 10 + i, attention=i == 2) for i in range(3)])
        return cache[arch]

    return make


def config(base, experts, **kw):
    return dict(base_model=str(base), gate_mode=kw.pop("gate_mode", "hidden"),
                experts_per_token=kw.pop("experts_per_token", 1),
                experts=[dict(source_model=str(e), positive_prompts=PROMPTS[i], negative_prompts=NEGATIVE.get(i))
                         for i, e in enumerate(experts)], **kw)


# ------------------------------------------------------------------ hand-built references
class Capture(nn.Module):
    """Wraps an FFN and records its input: the router's real input in a merged layer."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp, self.seen = mlp, None

    def forward(self, x):
        self.seen = x
        return self.mlp(x)


@torch.no_grad()
def hand_gates(base_dir, prompts_by_expert, negatives, where="router", pool="last"):
    """[L, E, H]: per expert, mean over prompts (each run alone) minus negatives, L2-normalised."""
    tokenizer = base_tokenizer(base_dir)
    model = load(base_dir)
    caps = [Capture(layer.mlp) for layer in model.model.layers]
    for layer, cap in zip(model.model.layers, caps):
        layer.mlp = cap

    def state(prompt):
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = model(ids, output_hidden_states=True)
        xs = [c.seen[0] for c in caps] if where == "router" else [out.hidden_states[l][0] for l in range(len(caps))]
        return torch.stack([x[-1] if pool == "last" else x.mean(0) for x in xs])

    rows = []
    for e, prompts in enumerate(prompts_by_expert):
        v = torch.stack([state(p) for p in prompts]).mean(0)
        if negatives.get(e):
            v = v - torch.stack([state(p) for p in negatives[e]]).mean(0)
        rows.append(v / v.norm(dim=-1, keepdim=True))
    return torch.stack(rows, 1)


class RefMoE(nn.Module):
    """softmax -> top-k -> renormalise (Mixtral, or Qwen2-MoE's norm_topk_prob) over the experts'
    own dense FFN modules, plus an optional sigmoid-gated shared FFN (Qwen2-MoE)."""

    def __init__(self, mlps, gate_EH, k, shared=None, shared_gate_H=None):
        super().__init__()
        self.mlps, self.gate, self.k = nn.ModuleList(mlps), gate_EH, k
        self.shared, self.shared_gate = shared, shared_gate_H

    def forward(self, x):
        probs = torch.softmax(x.float() @ self.gate.T, -1)
        top, idx = probs.topk(self.k, -1)
        self.top1 = idx[..., 0]
        top = top / top.sum(-1, keepdim=True)
        outs = torch.stack([m(x) for m in self.mlps], -2)  # [B, S, E, H]
        y = (outs.gather(-2, idx[..., None].expand(*idx.shape, x.shape[-1])) * top[..., None]).sum(-2)
        if self.shared is not None:
            g = torch.sigmoid(x @ self.shared_gate) if self.shared_gate is not None else 0.5
            y = y + (g[..., None] if torch.is_tensor(g) else g) * self.shared(x)
        return y


def reference(base_dir, expert_dirs, gates_LEH, k, shared=None, shared_gate_LH=None):
    """The base with each FFN replaced by RefMoE; `shared`: None (Mixtral), "base", or a model dir."""
    model = load(base_dir)
    experts = [load(d) for d in expert_dirs]
    shared_model = load(shared) if shared not in (None, "base") else None
    for l, layer in enumerate(model.model.layers):
        shared_mlp = None if shared is None else (shared_model or model).model.layers[l].mlp
        layer.mlp = RefMoE([e.model.layers[l].mlp for e in experts], gates_LEH[l], k, shared_mlp,
                           None if shared_gate_LH is None else shared_gate_LH[l])
    return model


# ------------------------------------------------------------------ gates
@pytest.mark.parametrize("mode,where,pool", [("hidden", "router", "last"), ("hidden", "residual", "last"),
                                             ("hidden_avg", "router", "mean"), ("hidden_avg", "residual", "mean")])
def test_hidden_gate_vectors_equal_a_hand_computation(models, mode, where, pool):
    base, _ = models("llama")
    experts = [Expert("x", PROMPTS[i], NEGATIVE.get(i)) for i in range(3)]
    got = gate_vectors(load(base), base_tokenizer(base), experts, mode, where)
    want = hand_gates(base, [PROMPTS[i] for i in range(3)], NEGATIVE, where, pool)
    assert got.shape == want.shape == (2, 3, 64)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2, 3))


def test_router_and_residual_gates_differ(models):
    base, _ = models("llama")
    experts = [Expert("x", PROMPTS[i]) for i in range(3)]
    a = gate_vectors(load(base), base_tokenizer(base), experts, "hidden", "router")
    b = gate_vectors(load(base), base_tokenizer(base), experts, "hidden", "residual")
    assert not torch.allclose(a, b, atol=1e-2)


def test_cheap_embed_gate_is_the_normalised_embedding_sum_in_every_layer(models, tiny_tokenizer):
    base, _ = models("llama")
    model = load(base)
    experts = [Expert("x", PROMPTS[0]), Expert("y", PROMPTS[1], NEGATIVE[1])]
    got = gate_vectors(model, tiny_tokenizer, experts, "cheap_embed")
    emb = model.get_input_embeddings().weight

    def cheap(prompts):
        v = sum(emb[[tiny_tokenizer.bos_token_id] + tiny_tokenizer(p, add_special_tokens=False)["input_ids"]].sum(0)
                for p in prompts)
        return v / v.norm()

    want1 = cheap(PROMPTS[1]) - cheap(NEGATIVE[1])
    torch.testing.assert_close(got[1, 0], cheap(PROMPTS[0]))
    torch.testing.assert_close(got[0, 1], want1 / want1.norm())
    torch.testing.assert_close(got[0], got[1])


def test_degenerate_gates_are_flagged_by_condition_number():
    v = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    near = torch.stack([v[0], torch.nn.functional.normalize(v[0] + 0.01 * v[1], dim=0)])
    assert degenerate_layers(torch.stack([v, near])) == [1]


def test_merge_warns_on_degenerate_gates(models, tmp_path, capsys):
    base, experts = models("llama")
    cfg = config(base, experts[:2], gate_mode="cheap_embed")
    # Twice the first expert's prompts: other prompts, the same normalised embedding sum.
    cfg["experts"][0]["positive_prompts"], cfg["experts"][1]["positive_prompts"] = PROMPTS[0], PROMPTS[0] * 2
    cfg["experts"][1]["negative_prompts"] = None
    merge(cfg, tmp_path / "m")
    assert "degenerate router gates" in capsys.readouterr().err


# ------------------------------------------------------------------ Mixtral
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_mixtral_logits_equal_a_hand_built_merge(arch, models, tmp_path):
    from transformers import MixtralForCausalLM

    base, experts = models(arch)
    out = merge(config(base, experts, experts_per_token=2), tmp_path / "mixtral")
    merged = load(out)
    assert type(merged) is MixtralForCausalLM and merged.config.num_local_experts == 3
    gates = hand_gates(base, [PROMPTS[i] for i in range(3)], NEGATIVE)
    for l, layer in enumerate(merged.model.layers):
        torch.testing.assert_close(layer.mlp.gate.weight, gates[l], atol=1e-5, rtol=1e-5)
    ref = reference(base, experts, gates, 2)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids_batch()).logits, ref(ids_batch()).logits, atol=1e-5, rtol=1e-4)


def test_a_single_selected_expert_gives_that_experts_own_model(models, tmp_path):
    """One expert (the one that differs from the base in attention too) with its non-expert weights
    (`non_expert: average` over that one expert): the merge is that model, whatever the gate says."""
    base, experts = models("llama")
    cfg = dict(base_model=str(base), gate_mode="random", experts_per_token=1,
               experts=[dict(source_model=str(experts[2]))], non_expert="average", allow_all_same=True)
    merged = load(merge(cfg, tmp_path / "one", architecture="mixtral"))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids_batch()).logits, load(experts[2])(ids_batch()).logits,
                                   atol=1e-5, rtol=1e-4)
        assert not torch.allclose(merged(ids_batch()).logits, load(base)(ids_batch()).logits, atol=1e-3)


def test_non_expert_average_is_the_mean_of_the_experts(models, tmp_path):
    base, experts = models("llama")
    merged = load(merge(config(base, experts), tmp_path / "avg", non_expert="average"))
    name = "model.layers.1.self_attn.q_proj.weight"
    mean = sum(load(e).state_dict()[name] for e in experts) / 3
    torch.testing.assert_close(merged.state_dict()[name], mean)
    assert not torch.allclose(mean, load(base).state_dict()[name])


def test_residual_scale_noise_scale_and_dtype_as_mergekit_applies_them(models, tmp_path):
    from safetensors.torch import load_file

    base, experts = models("llama")
    cfg = config(base, experts[:2], dtype="bfloat16")
    cfg["experts"][0]["residual_scale"] = 0.5
    cfg["experts"][1]["noise_scale"] = 0.01
    merged = load(merge(cfg, tmp_path / "m"))
    assert all(t.dtype == torch.bfloat16 for t in load_file(tmp_path / "m" / "model.safetensors").values())
    for l, layer in enumerate(merged.model.layers):
        e0, e1 = (load(e).model.layers[l].mlp for e in experts[:2])
        bf16 = lambda t: t.to(torch.bfloat16).float()  # noqa: E731
        torch.testing.assert_close(layer.mlp.experts.down_proj[0], bf16(0.5 * e0.down_proj.weight))
        torch.testing.assert_close(layer.mlp.experts.gate_up_proj[0, :176], bf16(e0.gate_proj.weight))
        noise = layer.mlp.experts.down_proj[1] - e1.down_proj.weight
        assert 0.005 < float(noise.std()) < 0.02
    again = load(merge(cfg, tmp_path / "again"))  # the noise is seeded
    assert torch.equal(again.model.layers[0].mlp.experts.down_proj, merged.model.layers[0].mlp.experts.down_proj)


# ------------------------------------------------------------------ Qwen2-MoE
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_qwen_moe_logits_equal_a_hand_built_merge_with_the_base_ffn_shared(arch, models, tmp_path):
    from transformers import Qwen2MoeForCausalLM

    base, experts = models(arch)
    merged = load(merge(config(base, experts, experts_per_token=2), tmp_path / "q", architecture="qwen"))
    assert type(merged) is Qwen2MoeForCausalLM
    gates = hand_gates(base, [PROMPTS[i] for i in range(3)], NEGATIVE)
    ref = reference(base, experts, gates, 2, shared="base")  # base FFN shared, gate weight 0: sigmoid = 1/2
    with torch.no_grad():
        torch.testing.assert_close(merged(ids_batch()).logits, ref(ids_batch()).logits, atol=1e-5, rtol=1e-4)


def test_qwen_moe_with_a_named_shared_expert_and_its_gate(models, tmp_path):
    base, experts = models("qwen2")
    cfg = config(base, experts[:2], experts_per_token=1)
    cfg["shared_experts"] = [dict(source_model=str(experts[2]), positive_prompts=PROMPTS[2])]
    merged = load(merge(cfg, tmp_path / "q"))  # a shared expert: Qwen MoE without being asked
    gates = hand_gates(base, [PROMPTS[0], PROMPTS[1], PROMPTS[2]], NEGATIVE)
    ref = reference(base, experts[:2], gates[:, :2], 1, shared=experts[2], shared_gate_LH=gates[:, 2])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids_batch()).logits, ref(ids_batch()).logits, atol=1e-5, rtol=1e-4)


def test_routing_accuracy_counts_the_tokens_each_layer_sends_to_their_own_expert(models, tmp_path):
    from multipl_moe.merge.routing import routing_accuracy

    base, experts = models("llama")
    merged = load(merge(config(base, experts), tmp_path / "m"))
    gates = torch.stack([layer.mlp.gate.weight for layer in merged.model.layers])
    ref = reference(base, experts, gates, 1)
    tok = base_tokenizer(base)
    texts = [PROMPTS[(e + 1) % 3] + PROMPTS[e] for e in range(3)]  # partly another expert's text
    got = routing_accuracy(merged, tok, texts)
    want = torch.zeros(2, 3)
    for e, docs in enumerate(texts):
        n = 0
        for doc in docs:
            with torch.no_grad():
                ref(torch.tensor([[tok.bos_token_id] + tok(doc, add_special_tokens=False)["input_ids"]]))
            for l, layer in enumerate(ref.model.layers):
                want[l, e] += (layer.mlp.top1[0, 1:] == e).sum()
            n += len(tok(doc, add_special_tokens=False)["input_ids"])
        want[:, e] /= n
    torch.testing.assert_close(got, want)
    assert 0 < float(got.mean()) < 1


def test_qlora_is_refused_in_one_line_without_a_cuda_gpu():
    from multipl_moe.errors import UserError
    from multipl_moe.merge.qlora import qlora_model

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal is for CPU-only machines")
    with pytest.raises(UserError) as e:
        qlora_model("any-base")
    assert "not supported on CPU" in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ LoRA experts
def test_a_lora_adapter_expert_gives_the_same_merge_as_its_merged_copy(models, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, experts = models("llama")
    torch.manual_seed(3)
    peft_model = get_peft_model(load(base), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                       target_modules=["q_proj", "gate_proj", "down_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.merge_and_unload().save_pretrained(tmp_path / "full")
    runs = {}
    # An adapter directory (applied to base_model), mergekit's model+adapter form, and the full copy.
    for kind, source in (("adapter", tmp_path / "adapter"), ("plus", f"{base}+{tmp_path / 'adapter'}"),
                         ("full", tmp_path / "full")):
        cfg = config(base, [experts[0], source], non_expert="average", experts_per_token=2)
        runs[kind] = load(merge(cfg, tmp_path / f"m-{kind}")).state_dict()
    for kind in ("adapter", "plus"):
        assert runs[kind].keys() == runs["full"].keys()
        for k in runs["full"]:
            torch.testing.assert_close(runs[kind][k], runs["full"][k], atol=1e-6, rtol=1e-6, msg=k)
    assert not (tmp_path / "m-adapter" / "merged").exists() and len(list((tmp_path / "adapter").iterdir())) <= 3


# ------------------------------------------------------------------ the hybrid checkpoint
def test_hybrid_checkpoint_holds_the_fine_tunes_trains_a_step_and_generates(models, tmp_path):
    from multipl_moe.modeling import MultiplMoEForCausalLM

    base, experts = models("qwen2")
    out = tmp_path / "hybrid"
    assert cli(["merge", str(_yaml(tmp_path, config(base, experts))), "--out", str(out),
                "--architecture", "multipl-moe", "--hybrid-preset", "paper-causal"]) == 0
    model = MultiplMoEForCausalLM.from_pretrained(out).eval()
    gates = hand_gates(base, [PROMPTS[i] for i in range(3)], NEGATIVE)
    for l, layer in enumerate(model.model.layers):
        tok = layer.mlp.token_moe
        assert tok.config.num_experts == 4 and tok.config.top_k == 2
        for i, e in enumerate(experts):
            mlp = load(e).model.layers[l].mlp
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            torch.testing.assert_close(tok.experts.gate_up_proj[i], gate_up)
            torch.testing.assert_close(tok.experts.down_proj[i], mlp.down_proj.weight)
        torch.testing.assert_close(tok.shared_expert.down_proj.weight, load(base).model.layers[l].mlp.down_proj.weight)
        torch.testing.assert_close(tok.router.weight[:3], gates[l], atol=1e-5, rtol=1e-5)
        assert torch.equal(tok.router.weight[3], torch.zeros(64))

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"lang": lang, "content": "".join(PROMPTS[i]) * 8}) + "\n"
                              for i, lang in enumerate(["py", "rs", "go"]) for _ in range(8)))
    run = tmp_path / "run"
    assert cli(["train", str(_repo() / "configs" / "tiny-cpu.yaml"), f"model.base={out}", f"data.sources=[{corpus}]",
                f"output_dir={run}", "steps=1", "micro_batch_size=2", "data.seq_len=32", "data.val_fraction=0.0",
                "tensorboard=false", "eval_every=1000", "save_every=1000"]) == 0
    trained = MultiplMoEForCausalLM.from_pretrained(run / "final").eval()
    assert not torch.equal(trained.model.layers[0].mlp.token_moe.experts.down_proj,
                           model.model.layers[0].mlp.token_moe.experts.down_proj)
    prompt = torch.tensor([[base_tokenizer(base).bos_token_id, 10, 11, 12]])
    generated = trained.generate(prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 9)


# ------------------------------------------------------------------ plain transformers, no package
def test_every_output_loads_with_plain_transformers_where_the_package_cannot_be_imported(models, tmp_path):
    base, experts = models("llama")
    outs = {a: merge(config(base, experts, experts_per_token=2), tmp_path / a, architecture=a)
            for a in ("mixtral", "qwen", "multipl-moe")}
    torch.save(ids_batch(), tmp_path / "ids.pt")
    script = NO_PACKAGE_PRELUDE + textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM
        ids = torch.load({str(tmp_path / 'ids.pt')!r})
        for name, path in {({a: str(p) for a, p in outs.items()})!r}.items():
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=name == "multipl-moe").eval()
            with torch.no_grad():
                torch.save(model(ids).logits, path + "/logits.pt")
            print(name, type(model).__name__)
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["mixtral", "MixtralForCausalLM", "qwen", "Qwen2MoeForCausalLM",
                                   "multipl-moe", "MultiplMoEForCausalLM"]
    for name, path in outs.items():
        with torch.no_grad():
            # another process may pick other GEMM kernels (thread count, load): equal up to fp32 rounding
            torch.testing.assert_close(torch.load(path / "logits.pt"), load(path)(ids_batch()).logits,
                                       rtol=1e-5, atol=1e-5, msg=name)


# ------------------------------------------------------------------ bad configs: one line each
def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def _yaml(tmp_path, cfg, name="merge.yaml"):
    import yaml

    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _bad(models, tmp_path, case):
    base, experts = models("llama")
    qbase, qexperts = models("qwen2")
    cfg = config(base, experts[:2])
    if case == "fewer experts than experts_per_token":
        cfg["experts_per_token"] = 3
    elif case == "missing prompts":
        del cfg["experts"][1]["positive_prompts"]
    elif case == "identical prompts":
        for e in cfg["experts"]:
            e["positive_prompts"], e["negative_prompts"] = ["def f():"], None
    elif case == "mixed architectures":
        cfg["experts"][1]["source_model"] = str(qexperts[1])
    elif case == "all the same model":
        cfg["experts"][1]["source_model"] = cfg["experts"][0]["source_model"]
    elif case == "unknown key":
        cfg["experts"][0]["negative_promts"] = ["x"]
    elif case == "unknown gate mode":
        cfg["gate_mode"] = "hiden"
    elif case == "shared expert on Mixtral":
        cfg["architecture"] = "mixtral"
        cfg["shared_experts"] = [dict(source_model=str(experts[2]), positive_prompts=["x"])]
    elif case == "Mixtral from a Qwen2 base":
        cfg = config(qbase, qexperts[:2], architecture="mixtral")
    elif case == "shared expert without prompts":
        cfg["shared_experts"] = [dict(source_model=str(experts[2]))]
    elif case == "two shared experts":
        cfg["shared_experts"] = [dict(source_model=str(e), positive_prompts=["x"]) for e in experts[:2]]
    elif case == "unknown architecture":
        cfg["architecture"] = "deepseek"
    elif case == "missing expert":
        cfg["experts"][1]["source_model"] = str(tmp_path / "nowhere")
    elif case == "not a LoRA adapter":
        (tmp_path / "ia3").mkdir()
        (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
        cfg["experts"][1]["source_model"] = str(tmp_path / "ia3")
    return cfg


BAD = {
    "fewer experts than experts_per_token": "include at least as many experts as experts_per_token",
    "missing prompts": "experts[1]",
    "identical prompts": "prompts are identical for every expert",
    "mixed architectures": "every model must have the base's architecture",
    "all the same model": "every expert is the same source_model",
    "unknown key": "unknown key(s) negative_promts",
    "unknown gate mode": "gate_mode = 'hiden'",
    "shared expert on Mixtral": "Mixtral has no shared expert",
    "Mixtral from a Qwen2 base": "a qwen2 base cannot be expressed",
    "shared expert without prompts": "shared_experts[0]",
    "two shared experts": "at most one is supported",
    "unknown architecture": "architecture = 'deepseek'",
    "missing expert": "no such checkpoint directory",
    "not a LoRA adapter": "only LoRA adapters can be merged",
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_config_gives_its_one_line_error_and_writes_nothing(case, models, tmp_path, capsys):
    cfg_path = _yaml(tmp_path, _bad(models, tmp_path, case))
    out = tmp_path / "out"
    capsys.readouterr()  # what building the input models printed
    assert cli(["merge", str(cfg_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("multipl-moe merge: error: "), err
    assert BAD[case] in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_a_merge_of_one_expert_is_refused_like_mergekit_unless_allowed(models, tmp_path):
    base, experts = models("llama")
    cfg = config(base, experts[:1])
    assert cli(["merge", str(_yaml(tmp_path, cfg)), "--out", str(tmp_path / "a")]) == 2
    assert cli(["merge", str(_yaml(tmp_path, cfg)), "--out", str(tmp_path / "a"), "--allow-all-same"]) == 0
    assert cli(["merge", str(_yaml(tmp_path, cfg)), "--out", str(tmp_path / "a"), "--allow-all-same"]) == 2  # exists
