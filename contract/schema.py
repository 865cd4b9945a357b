"""Strict configuration models: dataclasses loaded from YAML with every error reported.

A config section is a dataclass. Loading walks the YAML tree against the dataclass
fields, fills defaults, converts durations, sizes and secrets, substitutes ``${ENV}``
references in strings, rejects unknown keys, and then runs each section's ``validate``
method. Every problem becomes a :class:`ConfigError` with its path (``snmp.targets[2].auth``)
and, where the YAML has it, its line; nothing stops at the first error.

Supported field types: ``str``, ``int``, ``float``, ``bool``, :class:`Duration`,
:class:`Size`, :class:`Secret`, ``Optional[X]``, ``List[X]``, ``Dict[str, X]``,
``Literal[...]`` and nested dataclasses. A section may define ``validate(self)`` yielding
``(relative_path, message)`` pairs for rules that span fields.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import yaml

from contract.units import Duration, Secret, Size, parse_duration, parse_size

__all__ = [
    "ConfigError", "ConfigErrors", "Duration", "Size", "Secret", "load_yaml", "load_model",
    "parse_duration", "parse_size", "join_path", "field_paths",
]


class ConfigError(Exception):
    """One problem in a config file, with where it is."""

    def __init__(self, path: str, message: str, line: Optional[int] = None, file: Optional[str] = None):
        super().__init__(message)
        self.path = path
        self.message = message
        self.line = line
        self.file = file

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class ConfigErrors(Exception):
    """All the problems found in one config file."""

    def __init__(self, errors: List[ConfigError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def join_path(base: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else str(key)


# ---------------------------------------------------------------- YAML with line numbers

class _Loader(yaml.SafeLoader):
    pass


def load_yaml(text: str, filename: str = "<config>") -> Tuple[Any, Dict[str, int]]:
    """Parse YAML and return (data, {path: line}) so errors can name the line."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigErrors([ConfigError("", f"invalid YAML: {problem}", line, filename)]) from None
    lines: Dict[str, int] = {}
    if node is None:
        return None, lines
    constructor = _Loader(text)
    bad: List[ConfigError] = []
    try:
        data = _convert(node, "", lines, constructor, bad)
        if bad:
            for err in bad:
                err.file = filename
            raise ConfigErrors(bad)
        return data, lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigErrors([ConfigError("", f"invalid YAML: {problem}", mark.line + 1 if mark else None,
                                        filename)]) from None


def _convert(node: yaml.Node, path: str, lines: Dict[str, int], constructor: yaml.SafeLoader,
             bad: List[ConfigError]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: Dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):  # a complex key ("? [a, b]"): no config has one
                bad.append(ConfigError(path, "expected a plain key, got a list or mapping as a key",
                                       key_node.start_mark.line + 1))
                continue
            child = join_path(path, key)
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, child, lines, constructor, bad)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, join_path(path, i), lines, constructor, bad) for i, item in enumerate(node.value)]
    try:
        return constructor.construct_object(node, deep=True)
    except ValueError as exc:  # e.g. a date that does not exist: 2015-02-30
        if node.tag == "tag:yaml.org,2002:timestamp":
            message = f"bad date {node.value!r}, expected YYYY-MM-DD"
        else:
            message = f"cannot read {node.value!r}: {exc}"
        bad.append(ConfigError(path, message, node.start_mark.line + 1))
        return node.value


# ---------------------------------------------------------------- environment substitution

_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, environ: typing.Mapping[str, str]) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}``; ``$$`` is a literal ``$``.

    Raises KeyError(name) for an unset variable without a default.
    """

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV_RE.sub(repl, text)


# ---------------------------------------------------------------- model loading

class _Ctx:
    def __init__(self, lines: Dict[str, int], environ: typing.Mapping[str, str], file: Optional[str]):
        self.lines = lines
        self.environ = environ
        self.file = file
        self.errors: List[ConfigError] = []

    def error(self, path: str, message: str) -> None:
        line = None
        probe = path
        while probe is not None:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = _parent(probe)
        self.errors.append(ConfigError(path, message, line, self.file))


def _parent(path: str) -> Optional[str]:
    if not path:
        return None
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


_MISSING = object()


def load_model(cls: type, data: Any, *, file: Optional[str] = None, lines: Optional[Dict[str, int]] = None,
               environ: Optional[typing.Mapping[str, str]] = None, path: str = "") -> Any:
    """Build ``cls`` from plain data; raise ConfigErrors listing every problem."""
    ctx = _Ctx(lines or {}, os.environ if environ is None else environ, file)
    value = _load(cls, {} if data is None else data, path, ctx)
    if ctx.errors:
        raise ConfigErrors(ctx.errors)
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Duration:
        return "a duration like 30s"
    if tp is Size:
        return "a size like 200MB"
    if tp in (str, Secret):
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _load(tp: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _load(inner[0], value, path, ctx)
    if isinstance(value, str) and tp is not Secret and "$" in value:
        value = _substitute(value, path, ctx)
        if value is _MISSING:
            return _MISSING
    if dataclasses.is_dataclass(tp):
        return _load_dataclass(tp, value, path, ctx)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) if not isinstance(a, str) else a for a in args)
            ctx.error(path, f"unknown value {value!r}, expected one of: {choices}")
            return _MISSING
        return value
    if origin in (list, List):
        if not isinstance(value, list):
            ctx.error(path, f"expected a list, got {_kind(value)}")
            return _MISSING
        return [_load(args[0], v, join_path(path, i), ctx) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            ctx.error(path, f"expected a mapping, got {_kind(value)}")
            return _MISSING
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                ctx.error(join_path(path, k), f"keys must be strings, got {k!r}")
                continue
            out[k] = _load(args[1], v, join_path(path, k), ctx)
        return out
    try:
        return _scalar(tp, value, path, ctx)
    except ValueError as exc:
        ctx.error(path, str(exc))
        return _MISSING


def _substitute(value: str, path: str, ctx: _Ctx) -> Any:
    try:
        return substitute_env(value, ctx.environ)
    except KeyError as exc:
        ctx.error(path, f"environment variable {exc.args[0]} is not set (referenced as ${{{exc.args[0]}}})")
        return _MISSING


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value!r}"}.get(
        type(value), f"{value!r}")


def _scalar(tp: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    if tp is Duration:
        return parse_duration(value)
    if tp is Size:
        return parse_size(value)
    if tp is Secret:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {_kind(value)}")
        text = _substitute(str(value), path, ctx) if "$" in str(value) else str(value)
        return Secret(text) if text is not _MISSING else _MISSING
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
            raise ValueError(f"expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(str(value))
            except ValueError:
                raise ValueError(f"expected a number, got {_kind(value)}") from None
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"expected a string, got {_kind(value)}")
        if isinstance(value, bool):
            raise ValueError(f"expected a string, got {value!r} (quote it)")
        return str(value)
    if tp is Any:
        return value
    raise TypeError(f"unsupported config field type {tp!r} at {path}")


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _load_dataclass(cls: type, value: Any, path: str, ctx: _Ctx) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {_kind(value)}")
        return _MISSING
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases = {f.metadata.get("key", f.name): f.name for f in fields.values()}
    kwargs: Dict[str, Any] = {}
    ok = True
    for key, raw in value.items():
        name = aliases.get(key) if isinstance(key, str) else None
        if name is None:
            close = difflib.get_close_matches(str(key), list(aliases), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(sorted(aliases))}"
            ctx.error(join_path(path, key), f"unknown field {key!r} ({hint})")
            ok = False
            continue
        loaded = _load(hints[name], raw, join_path(path, key), ctx)
        if loaded is _MISSING or _contains_missing(loaded):
            ok = False
            continue
        kwargs[name] = loaded
    for name, f in fields.items():
        if name in kwargs or not ok:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore
            ctx.error(join_path(path, f.metadata.get("key", name)), "required field is missing")
            ok = False
    if not ok:
        return _MISSING
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        ctx.error(path, str(exc))
        return _MISSING
    validate = getattr(obj, "validate", None)
    if validate is not None:
        for rel, message in validate() or ():
            ctx.error(_join_rel(path, rel), message)
    return obj


def _join_rel(path: str, rel: str) -> str:
    if not rel:
        return path
    if rel.startswith("["):
        return path + rel
    return f"{path}.{rel}" if path else rel


def _contains_missing(value: Any) -> bool:
    if isinstance(value, list):
        return any(v is _MISSING for v in value)
    if isinstance(value, dict):
        return any(v is _MISSING for v in value.values())
    return False


def field_paths(cls: type, prefix: str = "") -> Iterator[str]:
    """Every option path of a model, for documentation checks (lists and maps as ``[]``/``{}``)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key", f.name)
        path = join_path(prefix, key)
        yield path
        tp = hints[f.name]
        if typing.get_origin(tp) is typing.Union:
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            yield from field_paths(tp, path)
        elif origin in (list, List) and dataclasses.is_dataclass(args[0]):
            yield from field_paths(args[0], path + "[]")
        elif origin in (dict, Dict) and dataclasses.is_dataclass(args[1]):
            yield from field_paths(args[1], path + "{}")


def iter_errors_text(errors: Iterable[ConfigError]) -> str:
    return "\n".join(str(e) for e in errors)
