"""The config loader: YAML files with ``include:``, ``--set key=value`` overrides, typed
dataclass sections, and errors that name where each value came from, e.g.
``training/configs/ml100k_retrieval.yaml:14: model.num_heads=3 must divide model.embedding_dim=64``
or ``--set model.dropout=2: ...``.

It knows no recipe: the root class is the one registered under the file's ``recipe:`` name
(:mod:`tfrec_attn.config.registry`), ``retrieval`` when the file names none.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from typing import Any

import yaml

from tfrec_attn.config.errors import ConfigError
from tfrec_attn.config.registry import config_class

DEFAULT_RECIPE = "retrieval"


def _compose_lines(text: str) -> dict[str, int]:
    """Maps dotted key paths to 1-based line numbers in a YAML document; a list's entries are
    ``path[i]`` (``serve[1].stage``)."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
                walk(item, f"{prefix}[{i}]")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def _coerce(value: Any, annotation, where: str, path: str):
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {path}={value!r} must be a list")
        (item,) = set(typing.get_args(annotation)) - {Ellipsis}
        return [_coerce(v, item, where, f"{path}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: {path}={value!r} must be true or false")
    if annotation in (int, float, str) and (not isinstance(value, annotation) or isinstance(value, bool)):
        raise ConfigError(f"{where}: {path}={value!r} must be of type {annotation.__name__}")
    return value


def _build_list(cls, value, lines: dict, origin: str, path: str, where: str) -> list:
    """A list of ``cls`` sections from a list of mappings, each built at ``path[i]``; an entry
    without a line of its own (from ``--set``) is placed where the list is."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {path}={value!r} must be a list")
    built = []
    for i, entry in enumerate(value):
        at = f"{path}[{i}]"
        line = lines.setdefault(at, where)
        entry_where = line if isinstance(line, str) else f"{origin}:{line}"
        if not isinstance(entry, dict):
            names = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{entry_where}: {at}={entry!r} must be a mapping (keys: {names})")
        for key in entry:
            lines.setdefault(f"{at}.{key}", entry_where)
        built.append(_build(cls, entry, lines, origin, at))
    return built


def _build(cls, data: dict, lines: dict, origin: str, prefix: str = "", default=None):
    """``cls`` from ``data``; keys it does not name keep ``default``'s values (the parent's
    default for this section, e.g. the cold-start stage's text tower), else ``cls()``'s."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}:{lines.get(prefix, 1)}: {prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        line = lines.get(path)
        if line is None:  # a section named only by a --set below it (``--set a.b.c=1``, ``a.b`` unknown)
            line = next((value for name, value in lines.items() if name.startswith(path + ".")), None)
        where = line if isinstance(line, str) else f"{origin}:{line if line is not None else '?'}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(names))}"
            raise ConfigError(f"{where}: unknown key '{path}'{hint}")
        annotation = hints[key]
        item = (typing.get_args(annotation) or (None,))[0] if typing.get_origin(annotation) is list else None
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, lines, origin, path, getattr(default or cls(), key))
        elif dataclasses.is_dataclass(item):
            kwargs[key] = _build_list(item, value, lines, origin, path, where)
        else:
            if isinstance(annotation, types.UnionType):
                annotation = next(a for a in annotation.__args__ if a is not type(None))
            kwargs[key] = _coerce(value, annotation, where, path)
    return dataclasses.replace(default, **kwargs) if default is not None else cls(**kwargs)


def _set_path(tree: dict, path: str, value) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {path}: '{part}' is not a section")
    node[parts[-1]] = value


def _read_tree(path: str, prefix: str = "", seen=()) -> tuple[dict, dict]:
    """A YAML file's tree and ``{dotted path: "file:line"}``, with ``include:`` resolved.

    A mapping with an ``include: other.yaml`` key (path relative to the including file)
    starts from that file's tree; its own keys override it. One file thus holds each
    default, and a file that needs it refers to it instead of copying it.
    """
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: included from itself ({' -> '.join(seen)})")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from None
    try:
        tree = yaml.safe_load(text) or {}
        lines = {f"{prefix}.{k}" if prefix else k: f"{path}:{n}" for k, n in _compose_lines(text).items()}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    seen = (*seen, os.path.abspath(path))

    def resolve(node, at):
        if not isinstance(node, dict):
            return node
        if "include" in node:
            where = lines.get(f"{at}.include" if at else "include", path)
            target = node.pop("include")
            if not isinstance(target, str):
                raise ConfigError(f"{where}: include={target!r} must be a file path")
            base, base_lines = _read_tree(os.path.join(os.path.dirname(path), target), at, seen)
            lines.update({k: v for k, v in base_lines.items() if k not in lines})
            node = _merge(base, node)
        return {k: resolve(v, f"{at}.{k}" if at else str(k)) for k, v in node.items()}

    return resolve(tree, prefix), lines


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def load_config(path: str | None = None, overrides=(), cls=None):
    """Loads ``path`` (YAML; None = defaults), applies ``key=value`` overrides, validates.

    Args:
        path: str or None.
        overrides: iterable of ``"dotted.key=value"`` strings (values parsed as YAML).
        cls: the root dataclass (None: the one registered under the config's ``recipe``
            key, retrieval by default).
    """
    tree, lines = _read_tree(path) if path else ({}, {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key, value)
        lines[key] = f"--set {key}={raw}"
    origin = path or "<defaults>"
    if cls is None:
        line = lines.get("recipe")
        cls = config_class(tree.get("recipe", DEFAULT_RECIPE),
                           line if isinstance(line, str) else f"{origin}:{line or 1}")
    config = _build(cls, tree, lines, origin)

    def where(p: str) -> str:
        line = lines.get(p)
        if isinstance(line, str):
            return line
        return f"{origin}:{line}" if line else origin

    config.validate(where)
    return config


def save_config(config, path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config.to_yaml())
    return path


def config_from_dict(data: dict, cls=None):
    cls = cls or config_class(data.get("recipe", DEFAULT_RECIPE), "<dict>")
    config = _build(cls, json.loads(json.dumps(data)), {}, "<dict>")
    config.validate()
    return config
