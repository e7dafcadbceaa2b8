"""Score reference/candidate pairs with the ORIGINAL CodeXGLUE CodeBLEU evaluator, for the
agreement test of `multipl_moe.evaluation.codebleu` (tests/test_codebleu.py reads the output).

    python tools/codebleu_original.py CODEXGLUE/Code-Code/code-to-code-trans/evaluator/CodeBLEU \
        tests/data/codebleu_original.json

Nothing of the original is copied here: its modules are imported from the folder given. They were
written for tree-sitter <= 0.21 (`Language('parser/my-languages.so', lang)`); the only changes
made at run time are that `Language` loads the grammar wheels we use (so both sides parse with
the same grammars), and that C and C++ use the C# data-flow rules, as XLCoST's copy of the
evaluator does. The glue of its `calc_code_bleu.py` (a command-line script reading one line per
sample) is redone here so that multi-line code can be scored. Needs tree-sitter 0.22 (the
`codebleu` package's pin), which still has `Node.sexp()` and `Parser.set_language`.

The pairs are built here: a few small programs per XLCoST language, each against itself, a
renamed, a shortened, a changed-operator and a reordered copy, and an unrelated program; plus
a reference with no data-flow edge.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PROGRAMS = {
    "python": [
        "def max_prefix(a, b):\n    x = max(a[0], 0)\n    for i in range(1, len(a)):\n"
        "        a[i] += a[i - 1]\n        x = max(x, a[i])\n    y = max(b[0], 0)\n"
        "    return x + y\n",
        "def count_even(arr, n):\n    count = 0\n    for i in range(n):\n"
        "        if arr[i] % 2 == 0:\n            count = count + 1\n    return count\n\n"
        "arr = [1, 2, 3, 4]\nprint(count_even(arr, len(arr)))\n",
        "def gcd(a, b):\n    while b != 0:\n        t = b\n        b = a % b\n        a = t\n"
        "    return a\n",
        "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n"
        "    while i * i <= n:\n        if n % i == 0:\n            return False\n"
        "        i += 1\n    return True\n",
    ],
    "java": [
        "class GFG {\n  static int sum(int[] a, int n) {\n    int s = 0;\n"
        "    for (int i = 0; i < n; i++) {\n      s = s + a[i];\n    }\n    return s;\n  }\n}\n",
        "class GFG {\n  static int gcd(int a, int b) {\n    while (b != 0) {\n      int t = b;\n"
        "      b = a % b;\n      a = t;\n    }\n    return a;\n  }\n}\n",
        "class GFG {\n  static boolean isPrime(int n) {\n    if (n < 2) return false;\n"
        "    for (int i = 2; i * i <= n; i++) {\n      if (n % i == 0) return false;\n    }\n"
        "    return true;\n  }\n}\n",
        "class GFG {\n  public static void main(String[] args) {\n    int x = 5;\n"
        "    int y = x * 2;\n    System.out.println(x + y);\n  }\n}\n",
    ],
    "javascript": [
        "function sum(a, n) {\n  let s = 0;\n  for (let i = 0; i < n; i++) {\n"
        "    s = s + a[i];\n  }\n  return s;\n}\n",
        "function gcd(a, b) {\n  while (b != 0) {\n    let t = b;\n    b = a % b;\n"
        "    a = t;\n  }\n  return a;\n}\n",
        "function isPrime(n) {\n  if (n < 2) return false;\n  for (let i = 2; i * i <= n; i++) {\n"
        "    if (n % i == 0) return false;\n  }\n  return true;\n}\n",
        "let x = 5;\nlet y = x * 2;\nconsole.log(x + y);\n",
    ],
    "cpp": [
        "#include <bits/stdc++.h>\nusing namespace std;\nint sum(int a[], int n) {\n  int s = 0;\n"
        "  for (int i = 0; i < n; i++) {\n    s = s + a[i];\n  }\n  return s;\n}\n",
        "int gcd(int a, int b) {\n  while (b != 0) {\n    int t = b;\n    b = a % b;\n"
        "    a = t;\n  }\n  return a;\n}\n",
        "bool isPrime(int n) {\n  if (n < 2) return false;\n  for (int i = 2; i * i <= n; i++) {\n"
        "    if (n % i == 0) return false;\n  }\n  return true;\n}\n",
        "int main() {\n  int x = 5;\n  int y = x * 2;\n  cout << x + y << endl;\n  return 0;\n}\n",
    ],
    "c": [
        "#include <stdio.h>\nint sum(int a[], int n) {\n  int s = 0;\n"
        "  for (int i = 0; i < n; i++) {\n    s = s + a[i];\n  }\n  return s;\n}\n",
        "int gcd(int a, int b) {\n  while (b != 0) {\n    int t = b;\n    b = a % b;\n"
        "    a = t;\n  }\n  return a;\n}\n",
        "int isPrime(int n) {\n  if (n < 2) return 0;\n  for (int i = 2; i * i <= n; i++) {\n"
        "    if (n % i == 0) return 0;\n  }\n  return 1;\n}\n",
        "int main() {\n  int x = 5;\n  int y = x * 2;\n  printf(\"%d\", x + y);\n  return 0;\n}\n",
    ],
    "c_sharp": [
        "class GFG {\n  static int sum(int[] a, int n) {\n    int s = 0;\n"
        "    for (int i = 0; i < n; i++) {\n      s = s + a[i];\n    }\n    return s;\n  }\n}\n",
        "class GFG {\n  static int gcd(int a, int b) {\n    while (b != 0) {\n      int t = b;\n"
        "      b = a % b;\n      a = t;\n    }\n    return a;\n  }\n}\n",
        "class GFG {\n  static bool isPrime(int n) {\n    if (n < 2) return false;\n"
        "    for (int i = 2; i * i <= n; i++) {\n      if (n % i == 0) return false;\n    }\n"
        "    return true;\n  }\n}\n",
        "class GFG {\n  public static void Main() {\n    int x = 5;\n    int y = x * 2;\n"
        "    Console.WriteLine(x + y);\n  }\n}\n",
    ],
    "php": [
        "<?php\nfunction sum($a, $n) {\n  $s = 0;\n  for ($i = 0; $i < $n; $i++) {\n"
        "    $s = $s + $a[$i];\n  }\n  return $s;\n}\n?>\n",
        "<?php\nfunction gcd($a, $b) {\n  while ($b != 0) {\n    $t = $b;\n    $b = $a % $b;\n"
        "    $a = $t;\n  }\n  return $a;\n}\n?>\n",
        "<?php\nfunction isPrime($n) {\n  if ($n < 2) return false;\n"
        "  for ($i = 2; $i * $i <= $n; $i++) {\n    if ($n % $i == 0) return false;\n  }\n"
        "  return true;\n}\n?>\n",
        "<?php\n$x = 5;\n$y = $x * 2;\necho $x + $y;\n?>\n",
    ],
}
# References without any data-flow edge (nothing is assigned from a variable).
NO_DATAFLOW = {"python": 'print("hello")\n', "java": "class A {\n}\n",
               "javascript": 'console.log("hi");\n', "cpp": "int main() {\n  return 0;\n}\n",
               "c": "int main() {\n  return 0;\n}\n", "c_sharp": "class A {\n}\n",
               "php": '<?php\necho "hi";\n?>\n'}


def variants(ref: str, other: str) -> list[str]:
    lines = ref.splitlines(keepends=True)
    names = [n for n in ("s", "count", "t", "i", "x", "$s", "$t", "$x") if re.search(
        rf"(?<![\w$]){re.escape(n)}(?!\w)", ref)]
    renamed = re.sub(rf"(?<![\w$]){re.escape(names[0])}(?!\w)",
                     ("$" if names[0].startswith("$") else "") + "acc", ref) if names else ref + " "
    mid = len(lines) // 2
    shortened = "".join(lines[:mid] + lines[mid + 1:])
    swapped = "".join(lines[:mid - 1] + [lines[mid], lines[mid - 1]] + lines[mid + 1:])
    changed = ref.replace(" + ", " - ", 1) if " + " in ref else ref.replace(" < ", " <= ", 1)
    return [ref, renamed, shortened, changed, swapped, other]


def pairs(lang: str) -> list[tuple[str, str]]:
    progs = PROGRAMS[lang]
    out = []
    for k, ref in enumerate(progs):
        out += [(ref, c) for c in variants(ref, progs[(k + 1) % len(progs)])]
    out += [(NO_DATAFLOW[lang], NO_DATAFLOW[lang]), (NO_DATAFLOW[lang], progs[0])]
    return out


def load_original(folder: Path):
    import codebleu.utils  # our grammar wheels, loaded the package's way

    sys.path.insert(0, str(folder))
    import bleu
    import dataflow_match
    import syntax_match
    import weighted_ngram_match
    from parser import DFG_csharp

    for mod in (syntax_match, dataflow_match):
        mod.Language = lambda _path, lang: codebleu.utils.get_tree_sitter_language(lang)
    dataflow_match.dfg_function.update(c=DFG_csharp, cpp=DFG_csharp)  # as XLCoST's copy
    return bleu, weighted_ngram_match, syntax_match, dataflow_match


def original_scores(mods, folder: Path, refs: list[str], hyps: list[str], lang: str) -> dict:
    """What calc_code_bleu.py computes, for in-memory samples."""
    import codebleu

    bleu, weighted_ngram_match, syntax_match, dataflow_match = mods
    references = [[r.strip()] for r in refs]
    hypothesis = [h.strip() for h in hyps]
    tok_hyps = [x.split() for x in hypothesis]
    tok_refs = [[x.split() for x in r] for r in references]
    kw_file = folder / "keywords" / f"{lang}.txt"
    if not kw_file.exists():  # CodeXGLUE has Java, Python and C# lists; the rest: the package's
        kw_file = Path(codebleu.__file__).parent / "keywords" / f"{lang}.txt"
    keywords = [x.strip() for x in kw_file.read_text("utf-8").splitlines()]
    weighted_refs = [[[r, {t: 1 if t in keywords else 0.2 for t in r}] for r in rs]
                     for rs in tok_refs]
    return {"ngram": bleu.corpus_bleu(tok_refs, tok_hyps),
            "weighted_ngram": weighted_ngram_match.corpus_bleu(weighted_refs, tok_hyps),
            "syntax": syntax_match.corpus_syntax_match(references, hypothesis, lang),
            "dataflow": dataflow_match.corpus_dataflow_match(references, hypothesis, lang)}


def one_run(folder: Path) -> dict:
    import os
    os.chdir(folder)  # the original opens keywords/ relative to the working directory
    mods = load_original(folder)
    result = {}
    for lang in PROGRAMS:
        ps = pairs(lang)
        per_pair = [dict(reference=r, candidate=c, **original_scores(mods, folder, [r], [c], lang))
                    for r, c in ps]
        corpus = original_scores(mods, folder, [r for r, _ in ps], [c for _, c in ps], lang)
        result[lang] = {"pairs": per_pair, "corpus": corpus}
    return result


def merge(runs: list[dict]) -> dict:
    """One record per pair: the components every run agrees on, and the set of data-flow values
    the runs gave (the original's data-flow match depends on PYTHONHASHSEED)."""
    def fold(items: list[dict]) -> dict:
        out = {k: v for k, v in items[0].items() if k != "dataflow"}
        for item in items[1:]:
            for k, v in out.items():
                assert item[k] == v, f"{k} differs between hash seeds"
        out["dataflow_values"] = sorted({item["dataflow"] for item in items})
        return out

    return {lang: {"pairs": [fold([r[lang]["pairs"][i] for r in runs])
                             for i in range(len(runs[0][lang]["pairs"]))],
                   "corpus": fold([r[lang]["corpus"] for r in runs])} for lang in runs[0]}


def main(folder: str, out: str, seeds: int = 16) -> None:
    import os
    import subprocess

    runs = []
    for seed in range(seeds):
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        done = subprocess.run([sys.executable, __file__, "--one", str(Path(folder).resolve())],
                              env=env, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    result = {"source": "microsoft/CodeXGLUE Code-Code/code-to-code-trans/evaluator/CodeBLEU",
              "hash_seeds": seeds, "languages": merge(runs)}
    Path(out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(one_run(Path(sys.argv[2]))))
    else:
        main(*sys.argv[1:3])
