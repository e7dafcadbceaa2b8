"""Copy the modeling code into a checkpoint so that it loads where this package is not installed.

Hugging Face's remote-code loader resolves only sibling-relative imports (`from .x import y`), so
the package's modules are written flat, with their imports rewritten to the flat names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]
# package module -> file name inside the checkpoint
FILES = {
    "moe/config.py": "moe_config.py",
    "moe/experts.py": "moe_experts.py",
    "moe/token_moe.py": "moe_token_moe.py",
    "moe/segment_moe.py": "moe_segment_moe.py",
    "moe/block.py": "moe_block.py",
    "modeling/configuration_multipl_moe.py": "configuration_multipl_moe.py",
    "modeling/modeling_multipl_moe.py": "modeling_multipl_moe.py",
}
AUTO_MAP = {
    "AutoConfig": "configuration_multipl_moe.MultiplMoEConfig",
    "AutoModelForCausalLM": "modeling_multipl_moe.MultiplMoEForCausalLM",
}


def _flatten_imports(source: str, folder: str) -> str:
    if folder == "moe":
        return re.sub(r"^from \.(\w+) import", r"from .moe_\1 import", source, flags=re.M)
    return re.sub(r"^from \.\.moe\.(\w+) import", r"from .moe_\1 import", source, flags=re.M)


def _import_every_module(text: str) -> str:
    """Make the modeling file import every flat module directly.

    transformers 5.0 copies into its module cache only the files that the loaded file imports
    itself (later releases follow imports recursively), so `moe_token_moe.py`, imported only by
    `moe_block.py`, was missing there and loading failed.
    """
    direct = set(re.findall(r"^from \.(\w+) import", text, flags=re.M))
    lines = [f"from .{name} import __name__ as _{name}_loaded  # noqa: F401,E402"
             for name in (Path(dst).stem for dst in FILES.values())
             if name not in direct and name != "modeling_multipl_moe"]
    if not lines:
        return text
    return text + "\n\n# Direct imports of every module of this checkpoint (see remote_code.py).\n" + "\n".join(lines) + "\n"


def write_remote_code(checkpoint_dir: str | Path) -> None:
    """Write the flat modeling files and point config.json's `auto_map` at them."""
    checkpoint_dir = Path(checkpoint_dir)
    for src, dst in FILES.items():
        text = _flatten_imports((_PKG / src).read_text(), src.split("/")[0])
        if dst == "modeling_multipl_moe.py":
            text = _import_every_module(text)
        (checkpoint_dir / dst).write_text(text)
    config_path = checkpoint_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
