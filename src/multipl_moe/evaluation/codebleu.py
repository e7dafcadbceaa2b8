"""CodeBLEU (Ren et al. 2020): n-gram, keyword-weighted n-gram, AST and data-flow match.

The four components come from the `codebleu` package (a maintained port of the CodeXGLUE
evaluator onto tree-sitter grammar wheels); this module only combines them, and differs from
the package where the package differs from the original CodeXGLUE definition:

- A corpus whose references have no data-flow edges (`print("hi")`, `class A {}`) scores 0 on
  data-flow in the original (`calc_code_bleu.py` adds `theta * 0`); the package silently puts 1
  into the total instead. We follow the original by default (`empty_dataflow="zero"`) and
  report how many reference edges there were, so a degenerate component is visible;
  `empty_dataflow="one"` gives the package's number.
- C and C++ are not in CodeXGLUE; XLCoST's evaluator added them with the C# data-flow rules,
  which the package copies, and so do we.

Known deviation kept on purpose: the original strips comments with its Java rules whatever the
language, which for Python deletes everything after a floor division `//` on that line; we (as
the package) strip each language's own comments. XLCoST code carries no comments (they became
the `text` side), so this only matters for Python lines with `//`.

Tokens for the two n-gram components are whitespace-separated, as in the original.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

# XLCoST's language names (its config names) -> the `codebleu` package's language ids.
LANGS = {"Python": "python", "Java": "java", "Javascript": "javascript", "C++": "cpp",
         "C": "c", "Csharp": "c_sharp", "PHP": "php"}
DEFAULT_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
PAPER_WEIGHTS = (0.1, 0.1, 0.4, 0.4)  # the CodeBLEU paper's choice for text-to-code
EMPTY_DATAFLOW = ("zero", "one")
# Soft keywords the package added to its Python list; the original list predates them.
_NOT_KEYWORDS = {"python": {"case", "match", "type"}}


@dataclass(frozen=True)
class CodeBLEU:
    """Corpus-level CodeBLEU and its components (each in [0, 1])."""
    ngram: float
    weighted_ngram: float
    syntax: float
    dataflow: float
    dataflow_edges: int           # data-flow edges in the references (0: component degenerate)
    weights: tuple[float, float, float, float] = DEFAULT_WEIGHTS
    empty_dataflow: str = "zero"

    @property
    def score(self) -> float:
        a, b, g, t = self.weights
        return a * self.ngram + b * self.weighted_ngram + g * self.syntax + t * self.dataflow

    def as_dict(self) -> dict:
        return {"codebleu": self.score, **asdict(self), "weights": list(self.weights)}


def lang_id(language: str) -> str:
    """`Python`/`python`, `C++`/`cpp`, `Csharp`/`c_sharp`, ... -> the package's id."""
    if language in LANGS.values():
        return language
    for name, ident in LANGS.items():
        if language.lower() == name.lower():
            return ident
    raise ValueError(f"CodeBLEU has no language {language!r} (choose from {', '.join(LANGS)})")


def check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    w = tuple(float(x) for x in weights)
    if len(w) != 4 or any(x < 0 for x in w) or abs(sum(w) - 1) > 1e-6:
        raise ValueError(f"CodeBLEU weights are four numbers >= 0 that sum to 1 (got {weights})")
    return w  # type: ignore[return-value]


def _canonical(dfg: list) -> list:
    """The data-flow graph with each edge's parent names in the order they are first defined.

    The original builds parent lists with `list(set(...))`, so their order, and with it the
    normalised names `var_0, var_1, ...` that edges are compared by, follows Python's string
    hashing: the same pair scores differently from one run to the next (PYTHONHASHSEED). Order
    by position instead (a renaming does not move it), which gives one of the original's values.
    """
    first: dict[str, int] = {}
    for name, index, *_ in sorted(dfg, key=lambda d: d[1]):
        first.setdefault(name, index)
    return [(d[0], d[1], d[2], sorted(d[3], key=lambda n: (first.get(n, float("inf")), n)),
             *d[4:]) for d in dfg]


def _dataflow(refs: list[list[str]], hyps: list[str], lang: str, language) -> tuple[float, int]:
    """(match fraction, reference edges): the package's corpus loop, keeping the edge count."""
    from codebleu.dataflow_match import dfg_function, get_data_flow, normalize_dataflow
    from codebleu.parser import remove_comments_and_docstrings
    from tree_sitter import Parser

    parser = Parser()
    parser.language = language
    pair = [parser, dfg_function[lang]]

    def flows(code: str) -> list:
        try:
            code = remove_comments_and_docstrings(code, lang)
        except Exception:  # noqa: BLE001 (as the original: score the text as it is)
            pass
        return normalize_dataflow(_canonical(get_data_flow(code, pair)))

    matched = total = 0
    for ref_list, hyp in zip(refs, hyps):
        for ref in ref_list:
            want, have = flows(ref), flows(hyp)
            total += len(want)
            for edge in want:
                if edge in have:
                    matched += 1
                    have.remove(edge)
    return (matched / total if total else 0.0), total


def codebleu(references: Sequence[str | Sequence[str]], candidates: Sequence[str], language: str,
             weights: Sequence[float] = DEFAULT_WEIGHTS, empty_dataflow: str = "zero",
             tokenizer: Callable[[str], list[str]] | None = None) -> CodeBLEU:
    """Corpus CodeBLEU of `candidates` against `references` (one string or a list per candidate).

    `empty_dataflow`: what the data-flow component is when the references have no data-flow
    edge at all: "zero" as the original CodeXGLUE evaluator, "one" as the `codebleu` package."""
    from codebleu import bleu, syntax_match, weighted_ngram_match
    from codebleu.codebleu import PACKAGE_DIR
    from codebleu.utils import get_tree_sitter_language

    lang = lang_id(language)
    weights = check_weights(weights)
    if empty_dataflow not in EMPTY_DATAFLOW:
        raise ValueError(f"empty_dataflow is one of {EMPTY_DATAFLOW} (got {empty_dataflow!r})")
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references for {len(candidates)} candidates")
    if not candidates:
        raise ValueError("CodeBLEU of an empty corpus")
    refs = [[r.strip()] if isinstance(r, str) else [x.strip() for x in r] for r in references]
    hyps = [c.strip() for c in candidates]
    split = tokenizer or str.split
    tok_refs = [[split(r) for r in rs] for rs in refs]
    tok_hyps = [split(h) for h in hyps]

    ngram = bleu.corpus_bleu(tok_refs, tok_hyps)
    keywords = set((PACKAGE_DIR / "keywords" / f"{lang}.txt").read_text("utf-8").split())
    keywords -= _NOT_KEYWORDS.get(lang, set())
    # The original's weights: 1 for a keyword of the language, 0.2 for any other token.
    weighted = weighted_ngram_match.corpus_bleu(
        [[[r, {t: 1 if t in keywords else 0.2 for t in r}] for r in rs] for rs in tok_refs],
        tok_hyps)
    tree_language = get_tree_sitter_language(lang)
    syntax = syntax_match.corpus_syntax_match(refs, hyps, lang, tree_sitter_language=tree_language)
    dataflow, edges = _dataflow(refs, hyps, lang, tree_language)
    if edges == 0:
        logging.getLogger(__name__).warning(
            "CodeBLEU (%s): the references have no data-flow edge; data-flow match is %s", lang,
            "0 (as the original evaluator)" if empty_dataflow == "zero" else "1")
        dataflow = 0.0 if empty_dataflow == "zero" else 1.0
    return CodeBLEU(ngram=float(ngram), weighted_ngram=float(weighted), syntax=float(syntax),
                    dataflow=float(dataflow), dataflow_edges=edges, weights=weights,
                    empty_dataflow=empty_dataflow)
