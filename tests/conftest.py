"""Shared fixtures: tiny checkpoints and tokenizers built by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "multipl-e"

_SAMPLE_CODE = [
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "fn main() {\n    let x: i32 = 5;\n    println!(\"{}\", x);\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2}; return v.size(); }\n",
    "class Foo\n  def bar(x)\n    x * 2\n  end\nend\n",
    "public class A { public static void main(String[] a) { System.out.println(1); } }\n",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from multipl_moe.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(_SAMPLE_CODE, vocab_size=400, min_frequency=1)


@pytest.fixture(scope="session")
def tiny_base_factory(tmp_path_factory, tiny_tokenizer):
    """tiny_base_factory(arch, **config) -> directory of a saved tiny dense checkpoint (cached)."""
    from multipl_moe.modeling.tiny import make_tiny_dense

    cache: dict = {}

    def make(arch: str = "qwen2", **config_kwargs) -> Path:
        key = (arch, tuple(sorted(config_kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny-{arch}")
            make_tiny_dense(out, arch, tokenizer=tiny_tokenizer, **config_kwargs)
            cache[key] = out
        return cache[key]

    return make


# The first lines of a script run in a subprocess that must not see this package (remote-code and
# plain-transformers loading tests): any import of multipl_moe fails there, and the script checks it.
NO_PACKAGE_PRELUDE = """\
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "multipl_moe":
            raise ImportError("multipl_moe is blocked in this process")
sys.meta_path.insert(0, Block())
try:
    import multipl_moe
    raise SystemExit("the package was importable")
except ImportError:
    pass
"""
