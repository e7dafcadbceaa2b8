"""The package layout: each folder is one layer, and nothing imports back up (read with `ast`,
function-local imports included, so a lazy import cannot hide a dependency)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multipl_moe"
README = PACKAGE.parents[1] / "README.md"

# Layer of each top-level folder or module of the package: a module may import only its own unit
# and units of a lower layer. Two units on one layer do not import each other.
LAYERS = [
    {"__init__", "errors"},                   # the package's own facts; the one error users see
    {"util", "languages", "config"},         # helpers, the language registry, the config loader
    {"moe"},                                  # the hybrid MoE block and its config
    {"modeling", "data"},                     # the HF model (+ upcycle, export, info, tiny); data
    {"training", "evaluation"},               # training loop; generation, sandbox, pass@k
    {"synth", "merge", "bench"},              # MultiPL-T data, mergekit-style merges, benchmarks
    {"demo"},                                 # the end-to-end demo, on top of all of it
    {"commands"},                             # one module per subcommand: parse, call, print
    {"cli"},                                  # the `multipl-moe` entry point
    {"__main__"},                             # `python -m multipl_moe`
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# A module that sits in a lower folder but builds on upper ones (README generation needs every
# config class); it is imported by nothing below it.
ABOVE_ITS_FOLDER = {"multipl_moe.config.reference": RANK["commands"]}
# Known and being removed (issue 13): the demo drives `eval` through the CLI until it calls
# evaluation.pipeline.evaluate. Nothing else may be added here.
PENDING: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every multipl_moe module `path` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from . import x`: x may be a module (then it is the import) or a name in `mod`
            found.update(f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}"))
    return {m for m in found if m == "multipl_moe" or m.startswith("multipl_moe.")}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(module: str) -> int:
    for name, rank in ABOVE_ITS_FOLDER.items():
        if module == name or module.startswith(name + "."):
            return rank
    return RANK[_unit(module)]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def test_every_top_level_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert units - set(RANK) == set(), "new top-level module or folder: give it a layer in LAYERS"


def test_nothing_imports_back_up():
    upward = []
    for path in _sources():
        name = _module_name(path)
        for target in _imports(path):
            if not _is_module(target):
                upward.append(f"{name} imports {target}, which does not exist")
            elif _unit(target) != _unit(name) and _rank(target) >= _rank(name):
                upward.append(f"{name} ({_unit(name)}) imports {target} ({_unit(target)})")
    assert set(upward) - PENDING == set()


def test_the_library_never_imports_the_cli():
    offenders = [f"{_module_name(p)} -> {t}" for p in _sources()
                 for t in _imports(p)
                 if _unit(_module_name(p)) not in {"commands", "cli", "__main__"}
                 and _unit(t) in {"commands", "cli"}]
    assert set(offenders) - PENDING == set()


def test_the_readme_map_names_every_folder():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Layout"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    mapped = set(re.findall(r"^\s*(?:[│├└─ ]*)([a-z_]+)/", section, flags=re.M))
    folders = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()
               and p != PACKAGE}
    assert folders - mapped == set(), "folders missing from the README's layout map"
    repo = {p.name for p in README.parent.iterdir() if p.is_dir()} | {"multipl_moe"}
    assert mapped - folders - repo == set(), "the README's layout map names folders that do not exist"
