"""One loader for every configuration tree: YAML files, dotted KEY=VALUE overrides, CLI flags.

A tree is a nested dataclass (`TrainConfig`, `HybridMoEConfig`, `DataConfig`). jsonargparse reads
its fields, their types and the docstrings under them; a misspelt key or a value of the wrong type
fails while the text is parsed, a bad value when the dataclass' `__post_init__` runs, and both
before any tokenizer or weight is read. jsonargparse's messages span several lines; `load` raises
them as one line that names the key (`optim.lr = 'abc': expected float`).

Layers, lowest precedence first: mappings (e.g. a preset) and YAML files in the order given, then
each KEY=VALUE override in order. Nothing here knows a concrete tree, so every layer can use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable, TypeVar

from ..errors import UserError

T = TypeVar("T")
_HIDDEN = {"help", "config", "print_config", "print_shtab"}


class ConfigLoadError(UserError, ValueError):
    """A configuration key or value is wrong; the message names the key."""


def check(cond: bool, name: str, value: Any, why: str, error: type[Exception] = ConfigLoadError) -> None:
    """The one field check of the training and data trees (`moe/config.py` keeps its own copy:
    it is shipped inside every checkpoint, where this package may not be installed)."""
    if not cond:
        raise error(f"{name} = {value!r}: {why}")


@functools.cache
def parser(cls: type):
    """The jsonargparse parser of a dataclass tree: one `--a.b.c` option per leaf field."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    p = ArgumentParser(exit_on_error=False, prog=cls.__name__, default_meta=False)
    p.add_class_arguments(cls, nested_key=None, fail_untyped=True)
    p.add_argument("--config", action="config")
    return p


def leaves(cls: type) -> list:
    """The option of every leaf field (`.dest` the dotted key, `.default`, `.help` the docstring),
    in declaration order: what the loader accepts, and the README's table rows."""
    return [a for a in parser(cls)._actions if a.dest not in _HIDDEN and a.default != argparse.SUPPRESS]


def split_override(text: str, error: type[Exception] = ConfigLoadError) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_][\w.]*", key.strip()):
        raise error(f"override {text!r}: expected KEY=VALUE (e.g. optim.lr=1e-5)")
    return key.strip(), value


def read_yaml(path: str | Path, error: type[Exception] = ConfigLoadError) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return data


Layer = "str | Path | dict | tuple[str, dict]"


def load(cls: type[T], layers: Iterable[Layer] = (), overrides: Iterable[str] = (), *,
         error: type[Exception] = ConfigLoadError, prefixes: dict[type, str] | None = None) -> T:
    """`cls` from `layers` (YAML paths, mappings, or (file name, mapping read from it)), each over
    the one before, then from the KEY=VALUE `overrides`."""
    return build(cls, parse(cls, layers, overrides, error=error), error, prefixes)


def parse(cls: type, layers: Iterable[Layer] = (), overrides: Iterable[str] = (), *,
          error: type[Exception] = ConfigLoadError):
    """The parsed (unbuilt) namespace: every key and every value's type checked."""
    from jsonargparse import ArgumentError

    named = []
    for f in layers:
        if isinstance(f, tuple):
            named.append((f"{f[0]}: ", f[1]))
        else:
            named.append(("", f) if isinstance(f, dict) else (f"{f}: ", read_yaml(f, error)))
    layers = named
    args = [a for _, d in layers for a in ("--config", json.dumps(d, default=str))]
    args += [f"--{k}={v}" for k, v in (split_override(o, error) for o in overrides)]
    try:
        return parser(cls).parse_args(args)
    except ArgumentError as e:
        where = ""
        for name, d in layers:  # name the file that holds the mistake, if one alone does
            try:
                parser(cls).parse_args(["--config", json.dumps(d, default=str)])
            except ArgumentError:
                where = name
                break
        raise error(where + one_line(cls, str(e))) from None


def build(cls: type[T], ns, error: type[Exception] = ConfigLoadError, prefixes: dict[type, str] | None = None) -> T:
    """Instantiate the parsed tree, running every `__post_init__` check. `prefixes` maps an error
    type to where its tree is mounted (the block's messages say `segment.routing`; in a training
    config that is `model.moe.segment.routing`)."""
    try:
        ns = parser(cls).instantiate(ns)
        return cls(**{f.name: ns[f.name] for f in dataclasses.fields(cls)})
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        prefix = next((p for t, p in (prefixes or {}).items() if isinstance(e, t)), "")
        raise error(prefix + " ".join(str(e).split())) from None


def one_line(cls: type, msg: str) -> str:
    """jsonargparse's message as one line that starts with the key."""
    m = (re.search(r"Group '([^']+)' does not accept option '([^']+)'", msg)
         or re.search(r"(?:Option|Key) '()([^']+)' is not accepted", msg)
         or re.search(r"unrecognized arguments: --()([^=\s]+)", msg))
    if m:
        key = ".".join(x for x in m.groups() if x)
        known = [a.dest for a in leaves(cls)]
        near = difflib.get_close_matches(key, known, n=1)
        return f"unknown key {key}" + (f" (did you mean {near[0]}?)" if near else "")
    m = re.match(r'Parser key "([^"]+)":\s*(.*)', msg, re.S)
    if m:
        key, rest = m.groups()
        value = re.findall(r"(?:Got|Given) value: (.*)", rest)
        action = next((a for a in parser(cls)._actions if a.dest == key), None)
        hint = getattr(action, "_typehint", None)
        if value and hint is not None:
            return f"{key} = {value[-1].strip()!r}: expected {type_name(hint)}"
        return f"{key}: {' '.join(rest.split())}"
    return " ".join(msg.split())


def type_name(hint) -> str:
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    text = re.sub(r"<class '([\w.]+)'>", r"\1", str(hint)).replace("typing.", "").replace("NoneType", "null")
    return text.replace("Optional[", "null or [")
