"""Tokenise, pack into fixed-length blocks per language, hold out validation, sample languages.

The interface the trainer uses:

    from multipl_moe.data import DataConfig, build_train_val
    train, val = build_train_val(cfg.data, tokenizer)

    train   PackedTrainStream, a torch IterableDataset, endless: yields blocks
            {"input_ids": LongTensor [seq_len], "lang": str}, the language of each block drawn
            with probability train.weights[lang]; a DataLoader batches them into
            {"input_ids": LongTensor [B, seq_len], "lang": list[str]}.
    val     {lang: [block, ...]}: the held-out blocks of each language (a list is a map-style
            dataset; languages with no validation block are left out).
    train.report   DataReport: documents, tokens and blocks per language, what was skipped,
            decontamination drops; `print("\\n".join(train.report.lines()))`.

Blocks carry no padding and no attention mask: labels are `input_ids` (the model shifts them).
Each document's tokens are followed by EOS and the documents of one language are concatenated and
cut every `seq_len` tokens, so a document may continue into the next block and every block holds
one language only (which makes per-language loss logging possible). The tokens after the last
full block of a language (fewer than `seq_len`) are dropped; nothing else is.

Validation: a document goes to validation iff a keyed hash of its text falls below
`val_fraction` (deterministic, and exact duplicates always land on the same side).

Sampling: explicit weights, or temperature sampling p_l ∝ n_l^(1/T) where n_l is the language's
training tokens (in memory) or training bytes (streaming: tokens are not counted up front). A
language whose blocks run out starts again (a new epoch of that language, reshuffled), so small
languages are repeated as often as their weight asks.

Two modes (cfg.streaming): in memory, the corpus is tokenised once and the blocks kept as int32
tensors; streaming, one pass collects the validation blocks and the sizes, then every language
reads its inputs again on the fly (tokenise, pack, shuffle buffer) whenever it needs blocks.

Sharding: DataLoader workers each read a disjoint share (blocks in memory, documents when
streaming); `train.set_shard(rank, world_size)` does the same across processes for trainers that
do not shard the loader themselves (accelerate's `prepare` does: do not use both).
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from multipl_moe.data.config import DataConfig, DataError
from multipl_moe.data.decontam import DecontamReport
from multipl_moe.languages import sort_langs
from multipl_moe.data.sources import Document, SourceReport, documents_from_config

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------------------------------------
# pieces

def order_seed(cfg: DataConfig) -> int:
    """The seed of the training order (the split always uses `cfg.seed`)."""
    return cfg.shuffle_seed if cfg.shuffle_seed is not None else cfg.seed


def is_validation(text: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether a document is held out: its keyed hash, as a number in [0, 1), < val_fraction."""
    if val_fraction <= 0:
        return False
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                        key=str(seed).encode()).digest()
    return int.from_bytes(h, "big") / 2.0**64 < val_fraction


def _doc_shard(text: str, num_shards: int) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % num_shards


class Packer:
    """Concatenate documents (each followed by EOS) and cut the stream every seq_len tokens."""

    def __init__(self, seq_len: int, eos_id: int):
        self.seq_len, self.eos_id = seq_len, eos_id
        self.buf: list[int] = []

    def add(self, ids: list[int]) -> list[list[int]]:
        """Append one document; return the blocks it completed."""
        self.buf.extend(ids)
        self.buf.append(self.eos_id)
        n = len(self.buf) // self.seq_len
        if n == 0:
            return []
        S = self.seq_len
        blocks = [self.buf[i * S:(i + 1) * S] for i in range(n)]
        del self.buf[:n * S]
        return blocks

    @property
    def remainder(self) -> int:
        """Tokens waiting for a block; dropped if no document follows."""
        return len(self.buf)


def pack_documents(token_lists: Iterable[list[int]], seq_len: int, eos_id: int) -> Iterator[list[int]]:
    """Blocks of exactly seq_len tokens from documents' token ids (EOS after each document)."""
    packer = Packer(seq_len, eos_id)
    for ids in token_lists:
        yield from packer.add(ids)


def tokenize_batches(docs: Iterable[Document], tokenizer, batch_size: int = 64
                     ) -> Iterator[tuple[Document, list[int]]]:
    """(document, its token ids without special tokens), tokenising `batch_size` at a time."""
    batch: list[Document] = []

    def flush():
        ids = tokenizer([d.text for d in batch], add_special_tokens=False,
                        return_attention_mask=False)["input_ids"]
        yield from zip(batch, ids)
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


def sampling_weights(sizes: dict[str, float], explicit: dict[str, float] | None = None,
                     temperature: float = 1.0) -> dict[str, float]:
    """Sampling probabilities over the languages with data (sizes > 0).

    explicit: normalised over those languages (a language it leaves out gets 0);
    otherwise p_l ∝ n_l^(1/T) (T = 1: proportional to size; T -> inf: uniform).
    """
    present = {k: v for k, v in sizes.items() if v > 0}
    if explicit is not None:
        raw = {k: float(explicit.get(k, 0.0)) for k in present}
    else:
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        # in log space: sizes in the billions with T < 1 would overflow
        logs = {k: math.log(v) / temperature for k, v in present.items()}
        top = max(logs.values(), default=0.0)
        raw = {k: math.exp(v - top) for k, v in logs.items()}
    raw = {k: v for k, v in raw.items() if v > 0}
    total = sum(raw.values())
    if total <= 0:
        raise DataError("no language has both training data and a sampling weight > 0 "
                        f"(data for: {', '.join(sort_langs(present)) or 'none'})")
    return {k: raw[k] / total for k in sort_langs(raw)}


class LanguageSampler:
    """Seeded draws of languages with the given probabilities."""

    def __init__(self, weights: dict[str, float], seed: int = 0):
        self.langs = list(weights)
        total = sum(weights.values())
        acc, self.cum = 0.0, []
        for lang in self.langs:
            acc += weights[lang] / total
            self.cum.append(acc)
        self.rng = random.Random(seed)

    def draw(self) -> str:
        i = bisect.bisect_right(self.cum, self.rng.random() * self.cum[-1])
        return self.langs[min(i, len(self.langs) - 1)]


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


# ---------------------------------------------------------------------------------------------
# the training stream

BlockSource = Callable[[int, int, int], Iterator["torch.Tensor"]]  # (shard, num_shards, epoch)


@dataclass
class DataReport:
    sources: SourceReport = field(default_factory=SourceReport)
    decontam: DecontamReport | None = None
    train_docs: Counter = field(default_factory=Counter)
    train_tokens: Counter = field(default_factory=Counter)
    """Tokens (EOS included) of the training documents; streaming: not counted (0)."""
    train_bytes: Counter = field(default_factory=Counter)
    train_blocks: Counter = field(default_factory=Counter)
    """Blocks per pass over the language; streaming: not counted (0)."""
    dropped_tail: Counter = field(default_factory=Counter)
    """Tokens after the last full training block, per language (in memory)."""
    val_docs: Counter = field(default_factory=Counter)
    val_blocks: Counter = field(default_factory=Counter)
    weights: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{'lang':<5} {'weight':>7} {'train docs':>10} {'train bytes':>13} "
               f"{'train tokens':>13} {'blocks':>8} {'val docs':>8} {'val blocks':>10}"]
        for lang in sort_langs(set(self.train_docs) | set(self.val_docs)):
            out.append(f"{lang:<5} {self.weights.get(lang, 0.0):>7.3f} {self.train_docs[lang]:>10} "
                       f"{self.train_bytes[lang]:>13,} {self.train_tokens[lang]:>13,} "
                       f"{self.train_blocks[lang]:>8} {self.val_docs[lang]:>8} "
                       f"{self.val_blocks[lang]:>10}")
        out += self.sources.skipped_lines()
        if self.decontam is not None:
            out += self.decontam.lines()
        return out + self.notes


def _torch_iterable_base():
    import torch.utils.data

    return torch.utils.data.IterableDataset


class PackedTrainStream(_torch_iterable_base()):
    """Endless stream of single-language blocks, languages drawn with `weights`."""

    def __init__(self, sources: dict[str, BlockSource], weights: dict[str, float], seed: int = 0,
                 report: DataReport | None = None):
        super().__init__()
        self.sources = sources
        self.weights = dict(weights)
        self.seed = seed
        self.report = report if report is not None else DataReport()
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank: int, world_size: int) -> "PackedTrainStream":
        """Read only this process's share (for trainers that do not shard the loader)."""
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.rank, self.world_size = rank, world_size
        return self

    def _shard(self) -> tuple[int, int]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[dict]:
        shard, num_shards = self._shard()
        weights = dict(self.weights)
        epochs = {lang: 0 for lang in weights}
        iters = {lang: self.sources[lang](shard, num_shards, 0) for lang in weights}
        sampler = LanguageSampler(weights, _seed(self.seed, "sampler", shard))
        while True:
            lang = sampler.draw()
            block = next(iters[lang], None)
            if block is None:  # this language's pass is over: start another
                epochs[lang] += 1
                iters[lang] = self.sources[lang](shard, num_shards, epochs[lang])
                block = next(iters[lang], None)
            if block is None:  # nothing at all for this shard: sample the others only
                del weights[lang]
                if not weights:
                    raise DataError(f"no training block for data shard {shard} of {num_shards}")
                sampler = LanguageSampler(weights, _seed(self.seed, "sampler", shard, len(weights)))
                continue
            yield {"input_ids": block, "lang": lang}


class _MemorySource:
    """Blocks kept as an int32 tensor [n, seq_len]; each epoch a fresh permutation.
    (Block sources are classes rather than closures so that DataLoader workers can pickle them.)"""

    def __init__(self, lang: str, blocks, seed: int):
        self.lang, self.blocks, self.seed = lang, blocks, seed

    def __call__(self, shard: int, num_shards: int, epoch: int) -> Iterator["torch.Tensor"]:
        import torch

        g = torch.Generator().manual_seed(_seed(self.seed, self.lang, epoch))
        order = torch.randperm(self.blocks.shape[0], generator=g)[shard::num_shards]
        for i in order.tolist():
            yield self.blocks[i].long()


class _TrainFilter:
    """Whether a document is a training document (not held out, not contaminated)."""

    def __init__(self, cfg: DataConfig, decontaminator):
        self.val_fraction, self.seed, self.decontaminator = cfg.val_fraction, cfg.seed, decontaminator

    def __call__(self, doc: Document) -> bool:
        if is_validation(doc.text, self.val_fraction, self.seed):
            return False
        return self.decontaminator is None or self.decontaminator.match(doc.text) is None


class _StreamingSource:
    """Re-read the inputs for one language: documents -> tokens -> blocks -> shuffle buffer."""

    def __init__(self, cfg: DataConfig, lang: str, tokenizer, eos_id: int, keep: _TrainFilter):
        self.cfg, self.lang, self.tokenizer, self.eos_id, self.keep = cfg, lang, tokenizer, eos_id, keep

    def __call__(self, shard: int, num_shards: int, epoch: int) -> Iterator["torch.Tensor"]:
        import torch

        cfg = self.cfg
        docs = (d for d in documents_from_config(cfg, languages=[self.lang])
                if self.keep(d) and (num_shards == 1 or _doc_shard(d.text, num_shards) == shard))
        packer = Packer(cfg.seq_len, self.eos_id)
        rng = random.Random(_seed(order_seed(cfg), self.lang, epoch, shard))
        buf: list[list[int]] = []
        for _, ids in tokenize_batches(docs, self.tokenizer):
            for block in packer.add(ids):
                if cfg.shuffle_buffer <= 1:
                    yield torch.tensor(block, dtype=torch.long)
                    continue
                buf.append(block)
                if len(buf) >= cfg.shuffle_buffer:
                    i = rng.randrange(len(buf))
                    buf[i], buf[-1] = buf[-1], buf[i]
                    yield torch.tensor(buf.pop(), dtype=torch.long)
        rng.shuffle(buf)
        for block in buf:
            yield torch.tensor(block, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# the entry point

def build_train_val(cfg: DataConfig, tokenizer, *, progress: bool = False
                    ) -> tuple[PackedTrainStream, dict[str, list[dict]]]:
    """The training stream and the per-language validation blocks (see the module docstring)."""
    import torch
    from tqdm import tqdm

    if not cfg.sources:
        raise DataError("data.sources is empty: give at least one file, folder or dataset")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise DataError("the tokenizer has no eos_token: packing needs one between documents")

    report = DataReport()
    decontaminator = None
    if cfg.decontaminate:
        from multipl_moe.data.decontam import Decontaminator

        decontaminator = Decontaminator.from_dir(cfg.decontam_dir, n=cfg.decontam_ngram)
        report.decontam = DecontamReport()

    def clean(docs: Iterable[Document], rep: DecontamReport | None) -> Iterator[Document]:
        if decontaminator is None:
            return iter(docs)
        return decontaminator.filter(docs, rep if rep is not None else DecontamReport())

    # One pass: validation blocks, sizes, and (in memory) the training blocks.
    S = cfg.seq_len
    val_cap = cfg.val_max_blocks_per_lang
    val_packers: dict[str, Packer] = {}
    val: dict[str, list[dict]] = {}
    train_packers: dict[str, Packer] = {}
    train_store: dict[str, array] = {}
    docs = documents_from_config(cfg, report=report.sources)
    docs = tqdm(clean(docs, report.decontam), desc="data", unit="doc", disable=not progress)

    def split_docs():
        for doc in docs:
            is_val = is_validation(doc.text, cfg.val_fraction, cfg.seed)
            (report.val_docs if is_val else report.train_docs)[doc.lang] += 1
            if is_val:
                if val_cap is None or len(val.get(doc.lang, ())) < val_cap:
                    yield doc, True
            else:
                report.train_bytes[doc.lang] += len(doc.text.encode("utf-8", "surrogatepass"))
                if not cfg.streaming:
                    yield doc, False

    pending: list[tuple[Document, bool]] = []

    def flush():
        ids_list = tokenizer([d.text for d, _ in pending], add_special_tokens=False,
                             return_attention_mask=False)["input_ids"]
        for (doc, is_val), ids in zip(pending, ids_list):
            if is_val:
                packer = val_packers.setdefault(doc.lang, Packer(S, eos_id))
                for block in packer.add(ids):
                    blocks = val.setdefault(doc.lang, [])
                    if val_cap is None or len(blocks) < val_cap:
                        blocks.append({"input_ids": torch.tensor(block, dtype=torch.long),
                                       "lang": doc.lang})
            else:
                report.train_tokens[doc.lang] += len(ids) + 1
                packer = train_packers.setdefault(doc.lang, Packer(S, eos_id))
                store = train_store.setdefault(doc.lang, array("i"))
                for block in packer.add(ids):
                    store.extend(block)
        pending.clear()

    for item in split_docs():
        pending.append(item)
        if len(pending) >= 64:
            flush()
    if pending:
        flush()

    val = {lang: val[lang] for lang in sort_langs(val) if val[lang]}
    for lang, blocks in val.items():
        report.val_blocks[lang] = len(blocks)

    found = set(report.train_docs) | set(report.val_docs)
    if not found:
        hint = (f"; rows have fields {', '.join(report.sources.fields)} "
                f"(text_field={cfg.text_field!r}, lang_field={cfg.lang_field!r})"
                if report.sources.fields else "")
        skipped = "; ".join(report.sources.skipped_lines())
        raise DataError(f"no usable document in {', '.join(cfg.sources)}{hint}"
                        + (f"; {skipped}" if skipped else ""))

    sources: dict[str, BlockSource] = {}
    if cfg.streaming:
        sizes = dict(report.train_bytes)
        keep = _TrainFilter(cfg, decontaminator)
        for lang in sizes:
            sources[lang] = _StreamingSource(cfg, lang, tokenizer, eos_id, keep)
    else:
        sizes = {}
        for lang, store in train_store.items():
            n = len(store) // S
            report.train_blocks[lang] = n
            report.dropped_tail[lang] = train_packers[lang].remainder
            if n:
                blocks = torch.frombuffer(store, dtype=torch.int32).view(n, S).clone()
                sources[lang] = _MemorySource(lang, blocks, order_seed(cfg))
                sizes[lang] = report.train_tokens[lang]
        for lang in sort_langs(report.train_docs):
            if not report.train_blocks[lang]:
                report.notes.append(f"note: {lang} has {report.train_tokens[lang]} training tokens,"
                                    f" fewer than one block of {S}: not trained on")

    if cfg.sampling_weights is not None:
        for lang in sort_langs(cfg.sampling_weights):
            if cfg.sampling_weights[lang] > 0 and lang not in sources:
                report.notes.append(f"note: sampling weight for {lang} but no training data")
    report.weights = sampling_weights(sizes, cfg.sampling_weights, cfg.sampling_temperature)
    for lang in report.weights:
        if lang not in val:
            report.notes.append(f"note: {lang} has no validation block "
                                f"(val_fraction={cfg.val_fraction}, seq_len={S})")
    train = PackedTrainStream({k: sources[k] for k in report.weights}, report.weights, order_seed(cfg),
                              report)
    return train, val
