"""A byte-level BPE tokenizer trained on a corpus, for tiny models built without downloads.

Byte-level BPE (GPT-2's scheme, also Qwen's) covers any text, so `decode(encode(x)) == x` for
code in every language (up to Unicode NFC normalisation). The result is a
`transformers.PreTrainedTokenizerFast` with bos, eos and pad tokens, saved with `save_pretrained`,
so `AutoTokenizer.from_pretrained(dir)` loads it. No special token is added by `encode`: the
packer puts EOS between documents itself.

The pipeline (NFC, Qwen2's split regex, then byte-level without its own regex) is exactly the one
transformers 5's `Qwen2Tokenizer` builds for itself: `AutoTokenizer` loads a tokenizer beside a
Qwen2 config as that class whatever `tokenizer_config.json` says, and with GPT-2's plain
byte-level pre-tokenizer the reloaded tokenizer split text differently from the one that was
trained and saved (13 vs 15 ids for a two-line function). Llama and Mistral checkpoints load the
saved pipeline as it is, so all three bases now encode exactly as the trained object does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
# transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX (a test checks they stay equal)
QWEN2_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                           r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096, *, min_frequency: int = 2,
                        length: int | None = None):
    """Train byte-level BPE on `texts`; returns a `PreTrainedTokenizerFast` (not saved)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, BOS, PAD]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size must be >= {len(alphabet) + len(specials)} "
                         f"(256 bytes + {len(specials)} special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, clean_up_tokenization_spaces=False,
                                   model_max_length=1 << 30)


def train_tokenizer_from_corpus(corpus: Iterable[str | Path], out_dir: str | Path,
                                vocab_size: int = 4096, *, text_field: str = "content",
                                lang_field: str = "lang", min_frequency: int = 2):
    """Train on the documents of corpus inputs (anything `sources.iter_documents` reads), save the
    tokenizer to `out_dir` with `save_pretrained` (atomically: temp folder, then rename)."""
    from multipl_moe.util.atomic import atomic_dir
    from multipl_moe.data.sources import iter_documents

    docs = iter_documents([str(c) for c in corpus], text_field=text_field, lang_field=lang_field)
    tokenizer = train_bpe_tokenizer((d.text for d in docs), vocab_size, min_frequency=min_frequency)
    with atomic_dir(out_dir, force=True) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return tokenizer
