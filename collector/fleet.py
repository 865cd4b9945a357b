"""The fleet inventory: communes and their devices, loaded strictly and exported as info metrics.

``config/fleet.example.yaml`` documents the file. Each device is tied to its series either by the
id of the agent running on it (``agent``, for PCs and laptops) or by the SNMP target name its
polling agent uses (``target``, for printers, routers and UPSes). The collector's ``/metrics``
serves :func:`fleet_samples`, so rules and dashboards can join on age, model and rated life::

    commune_office_info{commune,name,province} 1
    commune_device_info{commune,device,kind,model,location,address,agent,target} 1
    commune_device_purchase_timestamp_seconds{commune,device}
    commune_device_rated_life_seconds{commune,device}
    commune_device_rated_life_pages{commune,device}        (printers with a known rating)
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Literal, Optional

from contract.samples import Sample, sample
from contract.schema import ConfigError, ConfigErrors, load_model, load_yaml

KINDS = ("pc", "laptop", "printer", "router", "ups")
AGENT_KINDS = ("pc", "laptop")      # tied to series by the agent running on the device
SNMP_KINDS = ("printer", "router", "ups")  # tied by the SNMP target name of the polling agent
YEAR_SECONDS = 365.25 * 86400
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ID_RULE = "must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"

Kind = Literal["pc", "laptop", "printer", "router", "ups"]


def _bad_id(value: str) -> bool:
    return not _ID_RE.match(value)


def _parse_date(value: str) -> Optional[_dt.date]:
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        return None


@dataclass
class Commune:
    # Administrative code of the commune or ward (mã đơn vị hành chính), e.g. "09667".
    code: str
    name: str
    province: str

    def validate(self) -> Iterator[tuple]:
        if _bad_id(self.code):
            yield "code", _ID_RULE
        if not self.name.strip():
            yield "name", "must not be empty"
        if not self.province.strip():
            yield "province", "must not be empty"


@dataclass
class Device:
    id: str
    commune: str
    kind: Kind
    model: str
    location: str = ""
    # YYYY-MM-DD; leave out when unknown (then the device has no age factor).
    purchase_date: Optional[str] = None
    # Expected service life; default: defaults.rated_life_years of the kind.
    rated_life_years: Optional[float] = None
    # Printers: rated lifetime page count (duty cycle over the life of the machine).
    rated_life_pages: Optional[int] = None
    # PCs and laptops: id of the agent running on the device.
    # Printers, routers, UPSes: id of the agent that polls the device.
    agent: str = ""
    # Printers, routers, UPSes: SNMP target name in the polling agent's config.
    target: str = ""
    # Where the device is on the office LAN (IP address or host name), for the people reading
    # the dashboards; informational, the tie to the series is agent and target.
    address: str = ""
    # Serial number (as the machine's firmware or the label tells it) and the province asset
    # office's tag (mã tài sản); informational, carried by fleet export/import.
    serial: str = ""
    asset_tag: str = ""

    def validate(self) -> Iterator[tuple]:
        if _bad_id(self.id):
            yield "id", _ID_RULE
        if not self.model.strip():
            yield "model", "must not be empty"
        if self.purchase_date is not None:
            day = _parse_date(self.purchase_date)
            if day is None:
                yield "purchase_date", f"bad date {self.purchase_date!r}, expected YYYY-MM-DD"
            elif day.year < 1990:
                yield "purchase_date", f"bad date {self.purchase_date!r}, before 1990"
        if self.rated_life_years is not None and not 0 < self.rated_life_years <= 50:
            yield "rated_life_years", "must be greater than 0 and at most 50"
        if self.rated_life_pages is not None:
            if self.kind != "printer":
                yield "rated_life_pages", f"applies to printers only, not kind {self.kind}"
            elif self.rated_life_pages <= 0:
                yield "rated_life_pages", "must be greater than 0"
        if not self.agent:
            yield "agent", (f"required for kind {self.kind}: the id of the agent "
                            + ("running on the device" if self.kind in AGENT_KINDS else "that polls it"))
        if self.kind in SNMP_KINDS and not self.target:
            yield "target", f"required for kind {self.kind}: the SNMP target name in the polling agent's config"
        if self.kind in AGENT_KINDS and self.target:
            yield "target", f"applies to printer, router and ups only, not kind {self.kind}"


@dataclass
class Defaults:
    # Expected service life by kind, in years, where a device does not say.
    rated_life_years: Dict[str, float] = field(default_factory=lambda: {
        "pc": 5.0, "laptop": 4.0, "printer": 5.0, "router": 5.0, "ups": 5.0})

    def validate(self) -> Iterator[tuple]:
        for kind, years in self.rated_life_years.items():
            if kind not in KINDS:
                yield f"rated_life_years.{kind}", f"unknown kind {kind!r}, expected one of: {', '.join(KINDS)}"
            elif not 0 < years <= 50:
                yield f"rated_life_years.{kind}", "must be greater than 0 and at most 50"


@dataclass
class Fleet:
    communes: List[Commune]
    devices: List[Device] = field(default_factory=list)
    defaults: Defaults = field(default_factory=Defaults)

    def validate(self) -> Iterator[tuple]:
        codes: Dict[str, int] = {}
        for i, commune in enumerate(self.communes):
            if commune.code in codes:
                yield f"communes[{i}].code", (f"duplicate commune code {commune.code!r} "
                                              f"(first at communes[{codes[commune.code]}])")
            else:
                codes[commune.code] = i
        ids: Dict[tuple, int] = {}
        targets: Dict[tuple, int] = {}
        for i, device in enumerate(self.devices):
            if device.commune not in codes:
                known = ", ".join(sorted(codes)) or "none"
                yield f"devices[{i}].commune", f"unknown commune {device.commune!r} (known: {known})"
            key = (device.commune, device.id)
            if key in ids:
                yield f"devices[{i}].id", f"duplicate device id {device.id!r} in commune {device.commune!r} " \
                                          f"(first at devices[{ids[key]}])"
            else:
                ids[key] = i
            if device.kind in AGENT_KINDS:
                tie = (device.commune, device.agent, "")
                what = f"agent {device.agent!r}"
            else:
                tie = (device.commune, device.agent, device.target)
                what = f"target {device.target!r} of agent {device.agent!r}"
            if not device.agent or (device.kind in SNMP_KINDS and not device.target):
                continue  # reported by the device itself
            if tie in targets:
                yield f"devices[{i}]", (f"{what} is already tied to device "
                                        f"{self.devices[targets[tie]].id!r} (devices[{targets[tie]}])")
            else:
                targets[tie] = i

    def commune(self, code: str) -> Commune:
        return next(c for c in self.communes if c.code == code)

    def rated_life_years(self, device: Device) -> Optional[float]:
        if device.rated_life_years is not None:
            return device.rated_life_years
        return self.defaults.rated_life_years.get(device.kind)


def parse_fleet(text: str, filename: str = "fleet.yaml") -> Fleet:
    """Parse fleet YAML; raise :class:`ConfigErrors` listing every problem with path and line."""
    data, lines = load_yaml(text, filename)
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "expected a mapping with communes and devices", 1, filename)])
    return load_model(Fleet, data, file=filename, lines=lines)


def load_fleet(path: str) -> Fleet:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read fleet file: {exc.strerror}", None, path)]) from None
    return parse_fleet(text, path)


def _timestamp(day: _dt.date) -> float:
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp()


def fleet_samples(fleet: Fleet) -> List[Sample]:
    """The inventory as samples for the collector's ``/metrics`` (names in contract/catalog.yaml)."""
    out: List[Sample] = []
    for commune in fleet.communes:
        out.append(Sample("commune_office_info",  # a label called name: no keyword shorthand
                          {"commune": commune.code, "name": commune.name, "province": commune.province}, 1.0))
    for d in fleet.devices:
        ident = {"commune": d.commune, "device": d.id}
        out.append(sample("commune_device_info", 1, **ident, kind=d.kind, model=d.model,
                          location=d.location, address=d.address, agent=d.agent, target=d.target))
        if d.purchase_date is not None:
            out.append(sample("commune_device_purchase_timestamp_seconds",
                              _timestamp(_dt.date.fromisoformat(d.purchase_date)), **ident))
        years = fleet.rated_life_years(d)
        if years is not None:
            out.append(sample("commune_device_rated_life_seconds", years * YEAR_SECONDS, **ident))
        if d.rated_life_pages is not None:
            out.append(sample("commune_device_rated_life_pages", d.rated_life_pages, **ident))
    out += default_samples(fleet.defaults)
    return out


def default_samples(defaults: Defaults) -> List[Sample]:
    """The rated life by kind, for devices the fleet file does not list (agents that registered
    themselves, agent/inputs/inventory.py); served with or without a fleet file."""
    return [sample("commune_fleet_default_rated_life_seconds", years * YEAR_SECONDS, kind=kind)
            for kind, years in sorted(defaults.rated_life_years.items())]
