"""The contract between the runner and an input module.

An input module (``agent/inputs/<name>.py`` or package) defines:

- ``NAME``: its config section and default ``input`` label;
- ``Config``: a dataclass deriving from :class:`InputSection` (strict, see ``contract.schema``);
- ``build(section, config) -> list``: the :class:`Input` objects to schedule, given its own
  section and the whole agent config. Heavy libraries are imported here, not at module top.

An :class:`Input` has ``name``, ``interval``, ``timeout`` and ``collect()``, plain or async,
returning samples. It never times itself and never swallows its own errors: the runner owns
timing, deadlines and success. A failed check of a *target* is a sample (``probe_success 0``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Union, Awaitable

from contract.samples import Sample
from contract.schema import Duration


@dataclass
class InputSection:
    """Options every input has."""

    enabled: bool = True
    interval: Duration = Duration(30)
    timeout: Duration = Duration(20)

    def validate(self) -> Iterator[tuple]:
        if self.interval <= 0:
            yield "interval", "must be greater than 0s"
        if self.timeout <= 0:
            yield "timeout", "must be greater than 0s"
        elif self.timeout > self.interval:
            yield "timeout", (f"must not be longer than interval ({self.interval:g}s), "
                              f"got {self.timeout:g}s")


class Input(Protocol):
    name: str
    interval: float
    timeout: float

    def collect(self) -> Union[Iterable[Sample], Awaitable[Iterable[Sample]]]:
        ...
