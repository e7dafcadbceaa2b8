"""MultiPL-MoE causal LM: a dense base architecture whose FFNs are replaced by the hybrid MoE block.

Everything but the FFN is the base architecture's own transformers code (attention, RoPE, norms,
KV cache, masks): the decoder model is the base's (`Qwen2Model`, `LlamaModel`, `MistralModel`)
built on this config, and only the decoder layer's forward is overridden, to hand the MoE block
what an FFN never needs: the 2-D padding mask, the causal routing state kept in the KV cache, and
a place to put its auxiliary loss and router statistics (`MoEForwardContext`, passed down as a
keyword argument that the base model forwards to its layers).

Segment routing `causal` generates with the KV cache: the routing state of each layer lives in
`MultiplMoECache` beside the keys and values. Routing `batch` has no incremental form (its
routing looks at whole windows and the whole batch), so generation recomputes the full prefix at
every step: correct for that mode, and slow.

transformers renamed the cache keyword from `past_key_values` to `cache` in 5.24 (inputs,
outputs and generate's model kwargs). This file accepts both names, hands the decoder the name its
own signature declares, and refuses to decode a non-empty past without routing state (a cache under
a name it does not know, a cache filled elsewhere, or no cache at all): a causal MoE model given a
wrong routing state would compute plausible but wrong logits, so it must fail instead.

This file is also copied into every saved checkpoint (remote code), so it imports only torch,
transformers and the block's own modules.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields

import torch
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from ..moe.block import HybridMoEBlock
from ..moe.experts import SwiGLUExperts
from ..moe.segment_moe import SegmentMoE
from .configuration_multipl_moe import SUPPORTED_BASES, MultiplMoEConfig


class MultiplMoECache(DynamicCache):
    """A DynamicCache that also carries each layer's causal segment-routing state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.segment_states: dict = {}

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self.segment_states = {i: s.index_select(beam_idx) for i, s in self.segment_states.items()}

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self.segment_states = {i: s.index_select(indices) for i, s in self.segment_states.items()}

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self.segment_states = {
            i: s.index_select(torch.arange(s.num_seen_B.shape[0], device=s.num_seen_B.device).repeat_interleave(repeats))
            for i, s in self.segment_states.items()}

    def crop(self, max_length: int) -> None:
        if self.segment_states and max_length < self.get_seq_length():
            raise NotImplementedError("cropping a MultiPL-MoE cache would need the routing state of an earlier "
                                      "position (assisted decoding and prefix re-use are not supported)")
        super().crop(max_length)


# The names transformers has given the KV cache keyword (5.0-5.23, then 5.24+), newest first.
CACHE_KEYWORDS = ("cache", "past_key_values")
# Output dataclasses declare one of them as a field; read and write the cache under that one.
_OUTPUT_CACHE_FIELD = next(n for n in CACHE_KEYWORDS if n in {f.name for f in fields(CausalLMOutputWithPast)})


@functools.lru_cache(maxsize=None)
def cache_keyword(fn) -> str:
    """The cache keyword `fn` declares (inspect follows the deprecation decorators' __wrapped__)."""
    params = inspect.signature(fn).parameters
    for name in CACHE_KEYWORDS:
        if name in params:
            return name
    raise RuntimeError(f"{getattr(fn, '__qualname__', fn)} takes none of the cache keywords {CACHE_KEYWORDS}: "
                       "this transformers release renamed it again; MultiPL-MoE needs updating")


def output_cache(outputs):
    """The cache an output carries, under whichever name this transformers release uses."""
    return getattr(outputs, _OUTPUT_CACHE_FIELD)


class MoEForwardContext:
    """What the MoE blocks need from the whole model's forward, and what they give back.

    Deliberately not a dataclass, list or dict: FSDP2 and DDP rebuild such containers when they
    walk a module's inputs to move or cast tensors (torch.distributed.utils._apply_to_tensors), and
    a block would then append its auxiliary loss to a copy the model never reads (seen with
    fully_shard: the second layer's loss was lost). Plain objects are passed through as they are.
    """

    __slots__ = ("attention_mask_2d", "cache", "aux_losses", "stats")

    def __init__(self, attention_mask_2d: torch.Tensor | None, cache: object | None):
        self.attention_mask_2d = attention_mask_2d
        self.cache = cache
        self.aux_losses: list[torch.Tensor] = []
        self.stats: dict = {}

    def run(self, block: HybridMoEBlock, x_BSH: torch.Tensor) -> torch.Tensor:
        S = x_BSH.shape[1]
        mask = self.attention_mask_2d
        if mask is not None and mask.dim() == 2:
            mask = mask[:, -S:]  # generation passes the mask of past + current tokens
        else:
            mask = None
        states = getattr(self.cache, "segment_states", None) if self.cache is not None else None
        use_state = states is not None and block.segment_moe is not None and block.is_causal
        out = block(x_BSH, mask, states.get(block.layer_idx) if use_state else None)
        if use_state:
            states[block.layer_idx] = out.segment_state
        if out.aux_loss is not None:
            self.aux_losses.append(out.aux_loss)
        self.stats[block.layer_idx] = out.stats
        return out.hidden_states


def _moe_decoder_layer_forward(self, hidden_states, moe_context=None, **kwargs):
    """The base decoder layer's forward (Qwen2, Llama and Mistral share it), with the MoE FFN.

    Attention gets exactly the keywords the base model gave the layer, so the cache reaches it under
    whatever name this transformers release uses (`past_key_values` before 5.24, `cache` after).
    """
    residual = hidden_states
    hidden_states = self.input_layernorm(hidden_states)
    hidden_states, _ = self.self_attn(hidden_states=hidden_states, **kwargs)
    hidden_states = residual + hidden_states
    residual = hidden_states
    hidden_states = self.post_attention_layernorm(hidden_states)
    if isinstance(self.mlp, HybridMoEBlock):
        if moe_context is None:  # called on its own, outside MultiplMoEForCausalLM
            moe_context = MoEForwardContext(None, None)
        hidden_states = moe_context.run(self.mlp, hidden_states)
    else:
        hidden_states = self.mlp(hidden_states)
    return residual + hidden_states


class MultiplMoEQwen2DecoderLayer(Qwen2DecoderLayer):
    """Qwen2's decoder layer; only the forward differs (the MoE FFN's extra inputs)."""
    forward = _moe_decoder_layer_forward


class MultiplMoELlamaDecoderLayer(LlamaDecoderLayer):
    """Llama's decoder layer; only the forward differs (the MoE FFN's extra inputs)."""
    forward = _moe_decoder_layer_forward


class MultiplMoEMistralDecoderLayer(MistralDecoderLayer):
    """Mistral's decoder layer; only the forward differs (the MoE FFN's extra inputs)."""
    forward = _moe_decoder_layer_forward


# The base's layer class -> ours, one per entry of SUPPORTED_BASES.
MOE_DECODER_LAYERS: dict[type, type] = {Qwen2DecoderLayer: MultiplMoEQwen2DecoderLayer,
                                        LlamaDecoderLayer: MultiplMoELlamaDecoderLayer,
                                        MistralDecoderLayer: MultiplMoEMistralDecoderLayer}


def build_decoder(config: MultiplMoEConfig) -> nn.Module:
    """The base architecture's decoder, on this config, with MoE blocks in the configured layers."""
    import transformers

    decoder_cls = getattr(transformers, SUPPORTED_BASES[config.base_model_type][1])
    decoder = decoder_cls(config)
    moe_cfg = config.moe_config
    for idx, layer in enumerate(decoder.layers):
        # The base model's __init__ builds its own layer class by name, so the layer built there
        # becomes ours in place: constructing ours instead would allocate every layer twice, and
        # subclassing each base model to build them would copy its __init__ (three bases, and it
        # changes between transformers releases). Ours adds no state, only the forward.
        layer.__class__ = MOE_DECODER_LAYERS[type(layer)]
        if config.is_moe_layer(idx):
            block = HybridMoEBlock(moe_cfg, config.hidden_size, config.intermediate_size, config.hidden_act)
            block.layer_idx = idx
            layer.mlp = block
    return decoder


class MultiplMoEPreTrainedModel(PreTrainedModel):
    config_class = MultiplMoEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = [cls.__name__ for cls in MOE_DECODER_LAYERS.values()]
    _skip_keys_device_placement = list(CACHE_KEYWORDS)
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, SwiGLUExperts):
            module.gate_up_proj.normal_(0.0, std)
            module.down_proj.normal_(0.0, std)
        elif isinstance(module, SegmentMoE) and hasattr(module, "first_segment_query"):
            module.first_segment_query.zero_()
        elif isinstance(module, HybridMoEBlock) and hasattr(module, "segment_gate"):
            module.segment_gate.zero_()
        else:
            super()._init_weights(module)


@dataclass
class MultiplMoECausalLMOutput(CausalLMOutputWithPast):
    aux_loss: torch.Tensor | None = None
    router_stats: dict | None = None


class MultiplMoEForCausalLM(MultiplMoEPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MultiplMoEConfig):
        super().__init__(config)
        self.model = build_decoder(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        if not self.routing_is_causal:
            self.generation_config.use_cache = False

    @property
    def routing_is_causal(self) -> bool:
        return self.config.moe_config.is_causal

    @property
    def needs_routing_state(self) -> bool:
        """Causal segment routing: decoding from a cache needs each layer's routing state."""
        moe = self.config.moe_config
        return moe.segment.enabled and moe.segment.routing == "causal" and any(
            isinstance(layer.mlp, HybridMoEBlock) and layer.mlp.segment_moe is not None for layer in self.model.layers)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return True

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        if not self.routing_is_causal:
            generation_config.use_cache = False  # batch routing: recompute the full prefix each step
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        for name in CACHE_KEYWORDS:  # generate stores it under the name of its release
            if model_kwargs.get(name) is not None:
                self._routing_cache(model_kwargs[name])

    def _routing_cache(self, cache):
        """`cache`, made to carry the routing state; an error where it cannot."""
        if isinstance(cache, MultiplMoECache) or not self.needs_routing_state:
            return cache
        if type(cache) is DynamicCache and cache.get_seq_length() == 0:
            # In place, not a copy: generate() and the caller keep this object and call its
            # reorder/select methods (beam search, num_return_sequences), which must move the
            # routing state with the keys and values.
            cache.__class__ = MultiplMoECache
            cache.segment_states = {}
            return cache
        if cache.get_seq_length() > 0:
            raise ValueError(f"this {type(cache).__name__} was filled without MultiPL-MoE's routing state; start "
                             "from an empty cache (MultiplMoECache, or no cache)")
        raise ValueError(f"causal segment routing keeps its state in a MultiplMoECache; a {type(cache).__name__} "
                         "cannot hold it (use the default dynamic cache: no cache_implementation)")

    def _check_routing_past(self, cache, attention_mask, position_ids, cache_position, seq_len: int) -> None:
        """Refuse to continue a past that the routing state does not describe."""
        mask_past = attention_mask.shape[-1] - seq_len if attention_mask is not None and attention_mask.dim() == 2 else 0
        states = getattr(cache, "segment_states", None)
        if states:
            if mask_past > 0:
                seen = next(iter(states.values())).num_seen_B
                real = attention_mask[:, :mask_past].sum(-1).to(seen.device)
                if seen.shape != real.shape or not torch.equal(seen, real):
                    raise ValueError(f"the routing state has seen {seen.tolist()} tokens per sequence but the "
                                     f"attention mask has {real.tolist()} past tokens: this cache belongs to "
                                     "another sequence")
            return
        # Every sign of a past that generate() or a caller may give: a mask longer than the input
        # (generate() drops an all-ones mask since 5.24), the first cache position (before 5.24),
        # positions that start after 0 in every row (left padding puts 0 in some row of a prefill).
        past = max(mask_past, cache.get_seq_length() if cache is not None else 0)
        if cache_position is not None and cache_position.numel():
            past = max(past, int(cache_position.reshape(-1)[0]))
        if position_ids is not None and position_ids.numel():
            past = max(past, int(position_ids.min()))
        if past > 0:
            raise ValueError(f"asked to continue after {past} past tokens without their causal routing state (the "
                             "KV cache did not reach the model, or was filled without it); pass the "
                             "MultiplMoECache the earlier steps filled, or the whole sequence with use_cache=False")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, cache=None, **kwargs):
        if past_key_values is not None and cache is not None and past_key_values is not cache:
            raise ValueError("both `cache` and `past_key_values` were given; pass the KV cache once")
        cache = cache if cache is not None else past_key_values
        stray = [k for k, v in kwargs.items() if isinstance(v, Cache)]
        if stray:  # a future rename must not let the cache bypass the routing state
            raise ValueError(f"a cache was passed as {stray[0]!r}, which MultiPL-MoE does not know; pass it as "
                             f"`cache` or `past_key_values`")
        use_cache = use_cache if use_cache is not None else getattr(self.config, "use_cache", True)
        given = input_ids if input_ids is not None else inputs_embeds
        seq_len = given.shape[1] if given is not None else 0  # none given: the decoder says so
        if not self.routing_is_causal:
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError("segment routing `batch` cannot continue from a KV cache: pass the whole "
                                 "sequence (generate() does this automatically)")
            if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] > seq_len:
                raise ValueError("segment routing `batch` cannot continue from a past: pass the whole sequence")
            use_cache, cache = False, None
        if use_cache and cache is None:
            cache = MultiplMoECache(config=self.config)
        if cache is not None:
            cache = self._routing_cache(cache)
        if self.needs_routing_state:
            self._check_routing_past(cache, attention_mask, position_ids, kwargs.get("cache_position"), seq_len)
        ctx = MoEForwardContext(attention_mask, cache if use_cache else None)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, moe_context=ctx,
                             **{cache_keyword(type(self.model).forward): cache}, **kwargs)
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        aux_loss = torch.stack(ctx.aux_losses).sum() if ctx.aux_losses else None
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            if aux_loss is not None:
                loss = loss + aux_loss.to(loss.device)
        return MultiplMoECausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions, aux_loss=aux_loss, router_stats=ctx.stats,
                                        **{_OUTPUT_CACHE_FIELD: output_cache(outputs)})
