"""The simulator's virtual clock: real time plus an offset that ``advance`` moves, or a frozen base plus the offset.

The offset (and the optional frozen base) live in the simulator's state file, so ``linkdesk simulator advance`` in
one process moves the clock of a ``linkdesk simulator serve`` running in another: the service reads them again on
every request (see :mod:`linkdesk.core.simulator.state`).

Durations are written the way people say them: ``30m``, ``6h``, ``31d``, ``1d12h``, ``90s``, ``2w``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1),
          "s": timedelta(seconds=1)}
_PART = re.compile(r"(\d+)\s*([wdhms])")
_WHOLE = re.compile(r"(?:\d+\s*[wdhms]\s*)+")
#: Far enough for every demo (years of expiries), small enough that datetime arithmetic never overflows.
MAX_DURATION = timedelta(days=3650)


class DurationError(ValueError):
    """A duration that cannot be read; the message says what is accepted."""


def parse_duration(text: str) -> timedelta:
    """Read ``30m``, ``6h``, ``31d``, ``1d12h``, ``2w``, ``90s`` (units w, d, h, m, s; at least one part).

    Raises DurationError with a full sentence when the text is not a positive duration of at most ten years.
    """
    raw = (text or "").strip().lower()
    if not raw or not _WHOLE.fullmatch(raw):
        raise DurationError(
            f"{text!r} is not a duration. Write a number and a unit, for example 30m, 6h, 31d or 1d12h "
            "(units: w weeks, d days, h hours, m minutes, s seconds)."
        )
    total = timedelta(0)
    seen: set[str] = set()
    for number, unit in _PART.findall(raw):
        if unit in seen:
            raise DurationError(f"{text!r} gives the unit {unit!r} twice; write each unit once, for example 1d12h.")
        seen.add(unit)
        if len(number) > 7:
            raise DurationError(f"{text!r} is too long; the clock moves at most ten years at a time.")
        total += int(number) * _UNITS[unit]
    if total <= timedelta(0):
        raise DurationError(f"{text!r} is zero; give a duration greater than zero, for example 6h.")
    if total > MAX_DURATION:
        raise DurationError(f"{text!r} is too long; the clock moves at most ten years (3650d) at a time.")
    return total


def format_duration(d: timedelta) -> str:
    """The inverse of :func:`parse_duration` for display: ``1d12h``, ``30m``, ``0s``."""
    seconds = int(d.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return sign + ("".join(parts) or "0s")


def utc_now() -> datetime:
    """The real time, aware UTC (the one place the simulator reads the wall clock)."""
    return datetime.now(timezone.utc)


@dataclass
class VirtualClock:
    """``now() = (frozen_at or real()) + offset``.

    A frozen clock (``frozen_at`` set) stands still between advances: tests and screenshots get identical times.
    """

    offset: timedelta = timedelta(0)
    frozen_at: datetime | None = None
    real: Callable[[], datetime] = field(default=utc_now, repr=False)

    def now(self) -> datetime:
        base = self.frozen_at if self.frozen_at is not None else self.real()
        if base.tzinfo is None:
            base = base.replace(tzinfo=timezone.utc)
        return (base + self.offset).astimezone(timezone.utc)

    def advance(self, duration: timedelta | str) -> datetime:
        """Move the clock forward; returns the new ``now``."""
        d = parse_duration(duration) if isinstance(duration, str) else duration
        if d < timedelta(0):
            raise DurationError("The simulator's clock only moves forward.")
        self.offset += d
        return self.now()

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None
