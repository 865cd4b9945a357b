"""The budget of the recommended actions: the price table (collector/prices.yaml) and the totals.

Pure: :func:`load_prices` reads and checks a price file (every error names the file, the line and
the field), :func:`budget` counts the actions of the report's devices and prices them. An action
without a price is counted and listed with no price, never dropped: the operator sees what the
table is missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from contract.schema import ConfigError, ConfigErrors, load_yaml
from collector.fleet import KINDS

DEFAULT_PRICES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prices.yaml")
# What the rules recommend (collector/rules/replacement.yml), in the order the report lists them.
ACTIONS = ("replace_device", "replace_disk", "add_memory", "replace_battery", "maintenance_kit")


@dataclass(frozen=True)
class Price:
    price: int
    item: Dict[str, str]  # lang -> text


@dataclass
class Prices:
    currency: str
    reviewed: str
    table: Dict[Tuple[str, str], Price]  # (action, kind) -> price
    source: str


@dataclass
class BudgetLine:
    action: str
    kind: str
    count: int
    unit: Optional[Price]

    @property
    def total(self) -> Optional[int]:
        return self.count * self.unit.price if self.unit else None


def load_prices(path: str = DEFAULT_PRICES) -> Prices:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigErrors([ConfigError("", f"cannot read the price table: {exc.strerror or exc}", None, path)]) from None
    data, lines = load_yaml(text, path)
    errors: List[ConfigError] = []

    def bad(field: str, message: str) -> None:
        errors.append(ConfigError(field, message, lines.get(field), path))

    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("", "expected a mapping with currency, reviewed and prices", None, path)])
    for key in sorted(set(data) - {"currency", "reviewed", "prices"}):
        bad(key, "unknown field (expected currency, reviewed, prices)")
    currency = data.get("currency", "VND")
    if not isinstance(currency, str) or not currency:
        bad("currency", f"expected a currency code such as VND, got {currency!r}")
    reviewed = data.get("reviewed", "")
    table: Dict[Tuple[str, str], Price] = {}
    prices = data.get("prices")
    if not isinstance(prices, dict):
        bad("prices", "expected a mapping of action -> kind -> {price, item}")
        prices = {}
    for action, kinds in prices.items():
        where = f"prices.{action}"
        if action not in ACTIONS:
            bad(where, f"unknown action (expected one of {', '.join(ACTIONS)})")
            continue
        if not isinstance(kinds, dict):
            bad(where, "expected a mapping of device kind -> {price, item}")
            continue
        for kind, entry in kinds.items():
            at = f"{where}.{kind}"
            if kind not in KINDS:
                bad(at, f"unknown device kind (expected one of {', '.join(KINDS)})")
                continue
            if not isinstance(entry, dict):
                bad(at, "expected {price: ..., item: {vi: ..., en: ...}}")
                continue
            price = entry.get("price")
            if isinstance(price, bool) or not isinstance(price, int) or price < 0:
                bad(f"{at}.price", f"expected a whole amount of {currency} of 0 or more, got {price!r}")
                continue
            item = entry.get("item")
            if isinstance(item, str):
                item = {"vi": item, "en": item}
            if not isinstance(item, dict) or not all(isinstance(item.get(lang), str) and item.get(lang)
                                                     for lang in ("vi", "en")):
                bad(f"{at}.item", "expected the part's name in both languages: {vi: ..., en: ...}")
                continue
            for key in sorted(set(entry) - {"price", "item"}):
                bad(f"{at}.{key}", "unknown field (expected price, item)")
            table[(action, kind)] = Price(price, {"vi": item["vi"], "en": item["en"]})
    if errors:
        raise ConfigErrors(errors)
    return Prices(str(currency), str(reviewed), table, path)


def budget(actions: Iterable[Tuple[str, str]], prices: Prices) -> List[BudgetLine]:
    """(action, kind) of every recommended action -> one line per action and kind, in report order."""
    counts: Dict[Tuple[str, str], int] = {}
    for action, kind in actions:
        counts[(action, kind)] = counts.get((action, kind), 0) + 1

    def order(key: Tuple[str, str]) -> Tuple[int, int, str, str]:
        action, kind = key
        return (ACTIONS.index(action) if action in ACTIONS else 99, KINDS.index(kind) if kind in KINDS else 99,
                action, kind)

    return [BudgetLine(a, k, n, prices.table.get((a, k))) for (a, k), n in sorted(counts.items(), key=lambda i: order(i[0]))]


def total(lines: Iterable[BudgetLine]) -> int:
    return sum(line.total or 0 for line in lines)
