"""The one resolver of ``class_path`` values and config files, used by ``fit``, ``tune`` and ``federate``.

A ``class_path`` is a dotted path (``"lightning_addons.modules.ImageClassifier"``) or a short name exported by
one of :data:`SHORT_NAME_MODULES` (``"ImageClassifier"``); an unknown name fails with "did you mean"
suggestions. This module imports only the standard library at import time (PyYAML when reading a file, the
named modules when resolving), so the CLI, the tuner and the federated package all import it without a cycle.

Examples:
    >>> resolve_class("LeNet5").__name__
    'LeNet5'
    >>> resolve_class("LeNet")
    Traceback (most recent call last):
    ...
    ValueError: Unknown `class_path` 'LeNet': did you mean 'LeNet5'? Give a dotted path (package.module.Class) or a class exported by one of [...].
    >>> instantiate({"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 1}})
    Linear(in_features=2, out_features=1, bias=True)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Modules searched, in order, for short ``class_path`` names (each imports no optional dependency).
#: Our packages export lazily, so searching them imports only the module that defines the name.
SHORT_NAME_MODULES: tuple[str, ...] = (
    "lightning_addons.callbacks",
    "lightning_addons.modules",
    "lightning_addons.modules.nn",
    "lightning_addons.datamodules",
    "lightning_addons.strategies",
    "lightning_addons.federated",
    "lightning.pytorch.callbacks",
    "torch.nn",
)

#: Our public packages among :data:`SHORT_NAME_MODULES` (the LightningCLI imports their classes so
#: jsonargparse resolves the same short names).
PUBLIC_MODULES: tuple[str, ...] = tuple(m for m in SHORT_NAME_MODULES if m.startswith("lightning_addons."))

_SPEC_KEYS = ("class_path", "init_args")
#: Set to 1 for full tracebacks and jsonargparse's full output instead of the CLI's one-line errors.
DEBUG_ENV = "LIGHTNING_ADDONS_DEBUG"


def _exported(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    return list(names)


def short_names() -> dict[str, str]:
    """Every short name -> the module (of :data:`SHORT_NAME_MODULES`) it resolves from (first wins)."""
    out: dict[str, str] = {}
    for module in SHORT_NAME_MODULES:
        for name in _exported(importlib.import_module(module)):
            out.setdefault(name, module)
    return out


def resolve_class(path: str) -> type:
    """A class (or callable) from a dotted path or a short name exported by :data:`SHORT_NAME_MODULES`.

    Raises:
        ValueError: the dotted path does not import, or the short name is exported nowhere (with suggestions).
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"`class_path` must be a non-empty string, got {path!r}.")
    if "." in path:
        module, _, name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"Cannot import `class_path` {path!r}: {err}") from None
    names = short_names()
    if path in names:
        return getattr(importlib.import_module(names[path]), path)
    close = difflib.get_close_matches(path, list(names), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"Unknown `class_path` {path!r}: {hint}Give a dotted path (package.module.Class) or a class exported by "
        f"one of {list(SHORT_NAME_MODULES)}."
    )


def instantiate(spec: Any) -> Any:
    """Build LightningCLI-style ``{"class_path": ..., "init_args": {...}}`` specs, recursively through dicts
    and lists; other values are returned as they are.

    Raises:
        ValueError: keys other than ``class_path``/``init_args`` beside a ``class_path``; unresolvable class.
    """
    if isinstance(spec, Mapping):
        if "class_path" not in spec:
            return {k: instantiate(v) for k, v in spec.items()}
        extra = sorted(set(spec) - set(_SPEC_KEYS))
        if extra:
            raise ValueError(f"Unexpected keys {extra} beside `class_path`/`init_args` in {dict(spec)!r}.")
        cls = resolve_class(str(spec["class_path"]))
        kwargs = {k: instantiate(v) for k, v in dict(spec.get("init_args") or {}).items()}
        return cls(**kwargs)
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    return spec


class ConfigError(ValueError):
    """A config file that cannot be read as YAML; the message is one line naming the file and line."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping; empty file -> ``{}``).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: malformed YAML (``FILE:LINE:COLUMN: ...``) or a top level that is not a mapping.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Config file {str(p)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the config must be a YAML mapping (key: value), got a {type(data).__name__}."
        )
    return data


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Dotted command-line overrides as LightningCLI takes them: ``--a.b VALUE`` or ``--a.b=VALUE``.

    Values are read as YAML (``2`` -> int, ``[zero_shot,cachefl]`` -> list, ``null`` -> None).

    Raises:
        ConfigError: an argument that is not ``--dotted.key`` or one without a value.

    Examples:
        >>> parse_overrides(["--cachefl.rounds", "2", "--trainer.logger=false", "--cachefl.baselines", "[a,b]"])
        {'cachefl.rounds': 2, 'trainer.logger': False, 'cachefl.baselines': ['a', 'b']}
    """
    import yaml

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg.partition("=")
        if not key.startswith("--") or "." not in key[2:] or key[2:].startswith("."):
            raise ConfigError(
                f"unrecognized argument {arg!r}: overrides are dotted config keys such as --trainer.max_epochs 3"
            )
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} needs a value (e.g. {arg} 3 or {arg}=3)")
            i += 1
            value = args[i]
        try:
            out[key[2:]] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"override {key}: value {value!r} is not valid YAML") from None
        i += 1
    return out


def apply_overrides(
    config: dict[str, Any], overrides: Mapping[str, Any], sections: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Set each dotted key of ``overrides`` in a copy of ``config``; every parent must exist as a mapping
    (``init_args`` and the top-level ``sections`` named are created when absent). Unknown leaf keys are
    left to the command's own validation, which knows the allowed ones.

    Raises:
        ConfigError: a parent key that is missing or not a mapping, with "did you mean" over its siblings.

    Examples:
        >>> cfg = {"model": {"class_path": "LeNet5", "init_args": {"width": 1.0}}, "trainer": {"max_epochs": 3}}
        >>> apply_overrides(cfg, {"trainer.max_epochs": 1, "model.init_args.width": 0.5})["model"]["init_args"]
        {'width': 0.5}
        >>> apply_overrides(cfg, {"modle.init_args.width": 2})
        Traceback (most recent call last):
        ...
        lightning_addons.resolve.ConfigError: override --modle.init_args.width: no key 'modle' in the config; did you mean 'model'? (keys there: ['model', 'trainer'])
    """
    import copy

    out = copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            if part not in node and ((depth == 0 and part in sections) or part == "init_args"):
                node[part] = {}
            if not isinstance(node.get(part), dict):
                keys = sorted(node)
                close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                what = "no key" if part not in node else "not a mapping at key"
                where = ".".join(parts[:depth]) or "the config"
                raise ConfigError(
                    f"override --{dotted}: {what} {part!r} in {where}{hint} (keys there: {keys})"
                )
            node = node[part]
        node[parts[-1]] = value
    return out
