"""SNMP profiles: reviewed YAML data (``profiles/*.yaml``) naming the OIDs each device kind needs.

A profile lists scalar instances to GET and table columns to walk, each under its MIB object
name, plus the objects whose presence selects it in ``auto`` mode. :class:`Values` gives the
decoders access by MIB name to what a poll (or a recording) returned. Pure: no pysnmp.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple

import yaml

Oid = Tuple[int, ...]
PROFILE_DIR = Path(__file__).with_name("profiles")
ORDER = ("system", "printer", "interfaces", "host_resources", "ups")


def parse_oid(text: str) -> Oid:
    return tuple(int(p) for p in str(text).strip().strip(".").split("."))


def dotted(oid: Oid) -> str:
    return ".".join(str(x) for x in oid)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    get: Dict[str, Oid]
    walk: Dict[str, Oid]
    detect: Tuple[str, ...]

    def oid(self, name: str) -> Oid:
        return self.get.get(name) or self.walk[name]

    def detect_roots(self) -> Dict[str, Oid]:
        """Detect object -> subtree to GETNEXT into (a scalar's object, without its .0)."""
        out = {}
        for name in self.detect:
            if name in self.get:
                oid = self.get[name]
                out[name] = oid[:-1] if oid[-1] == 0 else oid
            else:
                out[name] = self.walk[name]
        return out


def parse_profile(text: str, where: str = "<profile>") -> Profile:
    data = yaml.safe_load(text) or {}
    unknown = set(data) - {"profile", "source", "get", "walk", "detect"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    get = {k: parse_oid(v) for k, v in (data.get("get") or {}).items()}
    walk = {k: parse_oid(v) for k, v in (data.get("walk") or {}).items()}
    detect = tuple(data.get("detect") or ())
    for name in detect:
        if name not in get and name not in walk:
            raise ValueError(f"{where}: detect object {name} is not listed under get or walk")
    for name, oid in get.items():
        if oid[-1] != 0:
            raise ValueError(f"{where}: get object {name} must be a scalar instance ending in .0")
    return Profile(data["profile"], data.get("source", ""), get, walk, detect)


@functools.lru_cache(maxsize=1)
def load_profiles() -> Dict[str, Profile]:
    out = {}
    for name in ORDER:
        path = PROFILE_DIR / f"{name}.yaml"
        out[name] = parse_profile(path.read_text(encoding="utf-8"), str(path))
    return out


def detect_roots() -> Dict[str, Oid]:
    """Every detect object of every profile (``auto`` probing), plus the first device's description."""
    roots: Dict[str, Oid] = {}
    for p in load_profiles().values():
        roots.update(p.detect_roots())
    roots["hrDeviceDescr"] = parse_oid("1.3.6.1.2.1.25.3.2.1.3")
    return roots


class Values:
    """What the device returned for one profile, by MIB object name."""

    def __init__(self, profile: Profile, data: Mapping[Oid, object]):
        self.profile = profile
        self.data = data

    def scalar(self, name: str):
        return self.data.get(self.profile.get[name])

    def column(self, name: str) -> Dict[Oid, object]:
        """{index: value} of one walked column."""
        root = self.profile.walk[name]
        n = len(root)
        return {oid[n:]: v for oid, v in self.data.items() if oid[:n] == root and len(oid) > n}

    def table(self, *names: str) -> Dict[Oid, Dict[str, object]]:
        """{index: {column: value}} over the named columns, rows sorted by index."""
        rows: Dict[Oid, Dict[str, object]] = {}
        for name in names:
            for idx, v in self.column(name).items():
                rows.setdefault(idx, {})[name] = v
        return dict(sorted(rows.items()))


def snmprec_values(text: str) -> Dict[Oid, object]:
    """Parse snmpsim's ``.snmprec`` (``OID|type|value``) into {oid: value} as the client returns it.

    Types: 2 Integer, 4 OctetString (``4x`` hex), 6 OID, 64 IpAddress, 65 Counter32, 66 Gauge32,
    67 TimeTicks, 70 Counter64. Variation modules (``:numeric``...) are read as their static value.
    """
    out: Dict[Oid, object] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            oid_text, typ, value = line.split("|", 2)
        except ValueError:
            continue
        typ = typ.split(":")[0]
        oid = parse_oid(oid_text)
        if typ == "4x":
            out[oid] = bytes.fromhex(value)
        elif typ == "4":
            out[oid] = value.encode("latin-1", "replace")
        elif typ == "6":
            out[oid] = value
        elif typ == "64x":
            out[oid] = ".".join(str(b) for b in bytes.fromhex(value))
        elif typ == "64":
            out[oid] = value
        elif typ in ("2", "65", "66", "67", "70"):
            try:
                out[oid] = int(value)
            except ValueError:
                continue
        elif typ == "5":
            continue
    return dict(sorted(out.items()))


def subset(data: Mapping[Oid, object], profile: Profile) -> Dict[Oid, object]:
    """The part of a full walk a poll with this profile would have returned."""
    out = {}
    gets = set(profile.get.values())
    roots = list(profile.walk.values())
    for oid, v in data.items():
        if oid in gets or any(oid[:len(r)] == r and len(oid) > len(r) for r in roots):
            out[oid] = v
    return out


def probe_from(data: Mapping[Oid, object], roots: Mapping[str, Oid]) -> Dict[str, object]:
    """What GETNEXT into each root would answer with (first value under it), from a full walk."""
    out: Dict[str, object] = {}
    keys = sorted(data)
    for name, root in roots.items():
        for oid in keys:
            if oid[:len(root)] == root and len(oid) > len(root):
                out[name] = data[oid]
                break
    return out


def system_from(data: Mapping[Oid, object]) -> Dict[str, object]:
    prof = load_profiles()["system"]
    return {name: data[oid] for name, oid in prof.get.items() if oid in data}


def iter_names(profile_names: Iterable[str]) -> List[str]:
    return [p for p in ORDER if p in set(profile_names)]
