"""`multipl-moe data ...`: build the local corpus, inspect inputs, train a tokenizer, decontaminate,
and dry-run the packing that training will use."""

from __future__ import annotations

import argparse
import re
import sys

from multipl_moe.errors import UserError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """`500k`, `2M`, `1.5G`, `1048576` -> bytes (binary units); `0` or `none` -> None (no limit)."""
    if text.strip().lower() in ("0", "none", "inf"):
        return None
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500k, 2M, 1G, or 0 for none)")
    return int(float(m.group(1)) * 1024 ** "_kmg".index(m.group(2).lower() or "_"))


def _langs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    from multipl_moe.languages import parse_langs

    try:
        return parse_langs(values)
    except ValueError as e:
        raise UserError(str(e)) from None


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        lang, sep, w = item.partition("=")
        try:
            out[lang.strip()] = float(w)
        except ValueError:
            raise UserError(f"--weights: expected lang=weight[,lang=weight...], got {item!r}") from None
        if not sep:
            raise UserError(f"--weights: expected lang=weight, got {item!r}")
    return out


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="JSONL/Parquet file or folder, saved dataset, or hub name (owner/name)")
    p.add_argument("--text-field", default="content", help="row field with the text (default: content)")
    p.add_argument("--lang-field", default="lang", help="row field with the language (default: lang)")
    p.add_argument("--path-field", default=None,
                   help="row field with a file path, for the language by extension "
                   "(default: path, max_stars_repo_path, file_path, ...)")
    p.add_argument("--langs", nargs="+", default=None,
                   help="keep only these languages (tags, names, or the groups high / low)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="build, inspect and prepare training data",
                              description=__doc__)
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    q = sub.add_parser("local-corpus", help="corpus from the stdlib sources of installed toolchains")
    q.add_argument("--out", required=True, help="output JSONL file")
    q.add_argument("--max-bytes-per-lang", type=parse_size, default=None,
                   help="cap per language, e.g. 2M (default: no cap)")
    q.add_argument("--max-file-bytes", type=parse_size, default=256 * 1024,
                   help="skip files larger than this (default: 256k)")
    q.add_argument("--langs", nargs="+", default=None,
                   help="only these languages, or the groups high / low (default: all)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_local_corpus)

    q = sub.add_parser("stats", help="per-language documents and bytes, and what was skipped")
    _input_args(q)
    q.set_defaults(func=cmd_stats)

    q = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on a corpus")
    q.add_argument("--corpus", nargs="+", required=True, help="corpus input(s), as for `stats`")
    q.add_argument("--out", required=True, help="output folder (save_pretrained)")
    q.add_argument("--vocab-size", type=int, default=4096,
                   help="tokens in the vocabulary, special tokens included (default: %(default)s)")
    q.add_argument("--min-frequency", type=int, default=2,
                   help="a pair of tokens is merged only if it occurs at least this often "
                   "(default: %(default)s)")
    q.add_argument("--text-field", default="content", help="row field with the text (default: content)")
    q.add_argument("--lang-field", default="lang", help="row field with the language (default: lang)")
    q.set_defaults(func=cmd_tokenizer)

    q = sub.add_parser("decontam", help="drop documents sharing long n-grams with MultiPL-E")
    _input_args(q)
    q.add_argument("--out", required=True, help="output JSONL of the kept documents")
    q.add_argument("--data-dir", default=None, help="MultiPL-E folder (default: shared/data/multipl-e)")
    q.add_argument("--ngram", type=int, default=13, help="n, in whitespace tokens (default: 13)")
    q.set_defaults(func=cmd_decontam)

    q = sub.add_parser("pack", help="dry run of the training data: blocks, split and weights")
    _input_args(q)
    q.add_argument("--tokenizer", required=True, help="tokenizer folder or hub name")
    q.add_argument("--seq-len", type=int, default=1024, help="tokens per packed block (default: %(default)s)")
    q.add_argument("--val-fraction", type=float, default=0.01,
                   help="share of documents held out for validation, chosen by a hash of each text "
                   "(default: %(default)s)")
    q.add_argument("--temperature", type=float, default=1.0,
                   help="T in p_lang ∝ tokens_lang^(1/T): 1 samples in proportion to size, larger T "
                   "flattens towards uniform (default: %(default)s; ignored with --weights)")
    q.add_argument("--weights", default=None,
                   help="explicit sampling weights instead of --temperature, e.g. py=0.3,rs=0.7 "
                   "(normalised; languages left out get 0)")
    q.add_argument("--decontaminate", action="store_true",
                   help="drop documents sharing a 13-gram with a MultiPL-E prompt or test "
                   "(as `data decontam`)")
    q.add_argument("--streaming", action="store_true",
                   help="read, tokenise and pack on the fly (corpora larger than memory) instead of "
                   "all at once")
    q.add_argument("--seed", type=int, default=0,
                   help="seed of the train/validation split and of the order (default: %(default)s)")
    q.set_defaults(func=cmd_pack)


def cmd_local_corpus(args) -> int:
    from pathlib import Path

    from multipl_moe.data.local_corpus import build_local_corpus

    langs = _langs(args.langs)
    report = build_local_corpus(Path(args.out), langs=langs, max_bytes_per_lang=args.max_bytes_per_lang,
                                max_file_bytes=args.max_file_bytes or (1 << 62),
                                progress=not args.no_progress and sys.stderr.isatty())
    print(report.table())
    if not report.sources:
        raise UserError("no toolchain sources found; install e.g. golang-src rust-src ruby "
                        "openjdk-17-source")
    print(f"wrote {args.out}")
    return 0


def _docs(args, report):
    from multipl_moe.data.sources import iter_documents

    return iter_documents(args.inputs, text_field=args.text_field, lang_field=args.lang_field,
                          path_field=args.path_field, languages=_langs(args.langs), report=report)


def cmd_stats(args) -> int:
    from multipl_moe.data.sources import SourceReport

    from tqdm import tqdm

    report = SourceReport()
    for _ in tqdm(_docs(args, report), desc="stats", unit="doc", disable=not sys.stderr.isatty()):
        pass
    print(report.table())
    return 0


def cmd_tokenizer(args) -> int:
    from multipl_moe.data.tokenizer import train_tokenizer_from_corpus

    if args.vocab_size < 259:
        raise UserError(f"--vocab-size {args.vocab_size}: must be >= 259 (256 bytes + 3 specials)")
    tok = train_tokenizer_from_corpus(args.corpus, args.out, args.vocab_size,
                                      text_field=args.text_field, lang_field=args.lang_field,
                                      min_frequency=args.min_frequency)
    print(f"wrote {args.out}: byte-level BPE, {len(tok)} tokens "
          f"(bos {tok.bos_token}, eos {tok.eos_token}, pad {tok.pad_token})")
    return 0


def cmd_decontam(args) -> int:
    from pathlib import Path

    from multipl_moe.data.decontam import DecontamReport, Decontaminator
    from multipl_moe.util.atomic import write_jsonl_atomic
    from multipl_moe.data.sources import SourceReport

    if args.ngram < 1:
        raise UserError(f"--ngram {args.ngram}: must be >= 1")
    deco = Decontaminator.from_dir(args.data_dir, n=args.ngram)
    rep = DecontamReport()
    kept = deco.filter(_docs(args, SourceReport()), rep)
    write_jsonl_atomic(({"id": d.id, "lang": d.lang, args.text_field: d.text} for d in kept),
                       Path(args.out))
    print("\n".join(rep.lines()))
    print(f"wrote {args.out}")
    return 0


def cmd_pack(args) -> int:
    from transformers import AutoTokenizer

    from multipl_moe.data.config import DataConfig
    from multipl_moe.data.packing import build_train_val

    cfg = DataConfig(sources=args.inputs, text_field=args.text_field, lang_field=args.lang_field,
                     path_field=args.path_field, languages=_langs(args.langs), seq_len=args.seq_len,
                     val_fraction=args.val_fraction, sampling_temperature=args.temperature,
                     sampling_weights=_weights(args.weights), decontaminate=args.decontaminate,
                     streaming=args.streaming, seed=args.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer {args.tokenizer!r}: {e}") from None
    train, val = build_train_val(cfg, tokenizer, progress=sys.stderr.isatty())
    print("\n".join(train.report.lines()))
    return 0
