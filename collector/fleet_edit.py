"""Edits of a fleet file that keep everything else of it: comments, blank lines, key order, quoting
and fields this module does not touch.

PyYAML cannot write a document back with its comments, so the edits are made in the text, at the
places the YAML parser marks (:func:`yaml.compose` gives every node its start and end):

- :func:`add_devices` writes new device entries after the last one of ``devices:`` (a missing or
  empty ``devices`` gets one), indented as the existing entries are;
- :func:`set_fields` replaces the value of a key of a device written on one line, or adds the key
  after the device's last one.

A device written in flow style (``- {id: pc-01, ...}``) or a value over several lines cannot be
edited in place: :class:`EditError` names it. The caller parses the result again
(``collector.fleet.parse_fleet``) before it writes anything, and writes it with :func:`write_atomic`.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import yaml

# The order fields are written in for a new device (the example file's order).
FIELD_ORDER = ("id", "commune", "kind", "model", "serial", "asset_tag", "location", "purchase_date",
               "rated_life_years", "rated_life_pages", "agent", "target", "address")


class EditError(Exception):
    """The file cannot be edited as asked; the message says where and why."""


def scalar(value: object) -> str:
    """A YAML scalar for ``value``: numbers as they are, text double-quoted (JSON escapes are YAML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _root(text: str, filename: str) -> Optional[yaml.MappingNode]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise EditError(f"{filename}: invalid YAML: {exc}") from None
    if node is not None and not isinstance(node, yaml.MappingNode):
        raise EditError(f"{filename}: expected a mapping with communes and devices")
    return node


def _get(mapping: yaml.MappingNode, key: str) -> Optional[Tuple[yaml.Node, yaml.Node]]:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _line_end(text: str, index: int) -> int:
    """Index just after the newline ending the line that holds ``index`` (or the end of the text)."""
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _real_end(node: yaml.Node) -> int:
    """Where ``node``'s own text ends: a block collection's end mark lies at the next token, after
    any comment lines that follow it, so take its last value's."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return _real_end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return _real_end(node.value[-1])
    return node.end_mark.index


def _last_line_end(text: str, node: yaml.Node) -> int:
    """Index after the line on which ``node`` ends (its inline comment included)."""
    return _line_end(text, max(_real_end(node) - 1, node.start_mark.index))


def _entry(device: Dict[str, object], indent: int) -> str:
    keys = [k for k in FIELD_ORDER if k in device] + sorted(k for k in device if k not in FIELD_ORDER)
    lines = []
    for i, key in enumerate(keys):
        lead = " " * indent + ("- " if i == 0 else "  ")
        lines.append(f"{lead}{key}: {scalar(device[key])}\n")
    return "".join(lines)


def _device_nodes(root: yaml.MappingNode) -> List[yaml.Node]:
    found = _get(root, "devices")
    if found is None or not isinstance(found[1], yaml.SequenceNode):
        return []
    return list(found[1].value)


def add_devices(text: str, devices: List[Dict[str, object]], filename: str = "fleet.yaml") -> str:
    """``text`` with ``devices`` (field -> value) appended to its ``devices`` list."""
    if not devices:
        return text
    root = _root(text, filename)
    if root is None:
        raise EditError(f"{filename}: the file is empty: it needs its communes first")
    found = _get(root, "devices")
    if found is not None and isinstance(found[1], yaml.SequenceNode) and found[1].value:
        seq = found[1]
        if seq.flow_style:
            raise EditError(f"{filename}:{seq.start_mark.line + 1}: devices is written in flow style ([...]); "
                            "write it as a block list to add devices to it")
        last = seq.value[-1]
        indent = max(0, last.start_mark.column - 2)
        at = _last_line_end(text, last)
        block = "".join(_entry(d, indent) for d in devices)
        prefix = "" if text[:at].endswith("\n") else "\n"
        return text[:at] + prefix + block + text[at:]
    block = "".join(_entry(d, 2) for d in devices)
    if found is not None:
        key, value = found
        if not (isinstance(value, yaml.SequenceNode) or (isinstance(value, yaml.ScalarNode) and value.value == "")):
            raise EditError(f"{filename}:{value.start_mark.line + 1}: devices: expected a list")
        if isinstance(value, yaml.SequenceNode):  # `devices: []`
            return text[:value.start_mark.index].rstrip(" ") + "\n" + block.rstrip("\n") + text[value.end_mark.index:]
        at = _line_end(text, key.end_mark.index)  # `devices:` with nothing after it
        return text[:at] + ("" if text[:at].endswith("\n") else "\n") + block + text[at:]
    sep = "" if not text or text.endswith("\n") else "\n"
    return text + sep + "devices:\n" + block


def set_fields(text: str, changes: Dict[Tuple[str, str], Dict[str, object]], filename: str = "fleet.yaml") -> str:
    """``text`` with the fields of existing devices, keyed by (commune, id), set to new values."""
    root = _root(text, filename)
    if root is None:
        raise EditError(f"{filename}: the file is empty")
    nodes: Dict[Tuple[str, str], yaml.Node] = {}
    for node in _device_nodes(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        ident = _get(node, "id")
        commune = _get(node, "commune")
        if ident and commune:
            nodes[(str(commune[1].value), str(ident[1].value))] = node
    edits: List[Tuple[int, int, str]] = []  # (start, end, replacement); end == start: insertion
    for key, fields in changes.items():
        if not fields:
            continue
        node = nodes.get(key)
        if node is None:
            raise EditError(f"{filename}: no device {key[1]!r} in commune {key[0]!r}")
        if node.flow_style:
            raise EditError(f"{filename}:{node.start_mark.line + 1}: device {key[1]!r} is written in flow style "
                            "({...}); write it as a block mapping to edit it")
        indent = node.value[0][0].start_mark.column
        inserted = []
        for field, value in fields.items():
            pair = _get(node, field)
            if pair is None:
                inserted.append(f"{' ' * indent}{field}: {scalar(value)}\n")
                continue
            k, v = pair
            if not isinstance(v, yaml.ScalarNode) or v.start_mark.line != v.end_mark.line or v.style in ("|", ">"):
                raise EditError(f"{filename}:{k.start_mark.line + 1}: {field} of device {key[1]!r} is not a value "
                                "on one line; edit it by hand")
            if v.value == "" and v.start_mark.index == v.end_mark.index:  # `key:` with no value
                edits.append((k.end_mark.index, text.index(":", k.end_mark.index) + 1, f": {scalar(value)}"))
            else:
                edits.append((v.start_mark.index, v.end_mark.index, scalar(value)))
        if inserted:
            at = _last_line_end(text, node)
            edits.append((at, at, "".join(inserted)))
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if start == end and start > 0 and text[start - 1] != "\n":
            new = "\n" + new
        text = text[:start] + new + text[end:]
    return text


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` at once (temporary file beside it, fsync, rename); its mode is kept."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".fleet.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
