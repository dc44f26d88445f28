"""The simulator's virtual clock and duration parsing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from linkdesk.core.simulator.clock import DurationError, VirtualClock, format_duration, parse_duration

UTC = timezone.utc


@pytest.mark.parametrize("text,expected", [
    ("30m", timedelta(minutes=30)),
    ("6h", timedelta(hours=6)),
    ("31d", timedelta(days=31)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("2w", timedelta(weeks=2)),
    ("90s", timedelta(seconds=90)),
    (" 1D 2H ", timedelta(days=1, hours=2)),
    ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
])
def test_durations_people_write(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text,fragment", [
    ("", "not a duration"),
    ("6", "not a duration"),
    ("h", "not a duration"),
    ("6x", "not a duration"),
    ("-6h", "not a duration"),
    ("1.5h", "not a duration"),
    ("0m", "zero"),
    ("1h1h", "twice"),
    ("3651d", "at most ten years"),
    ("99999999d", "too long"),
])
def test_bad_durations_are_explained(text, fragment):
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    message = str(err.value)
    assert fragment in message
    assert message.endswith(".")


def test_format_duration_round_trips():
    for text in ("30m", "6h", "31d", "1d12h", "1h30m15s"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(timedelta(0)) == "0s"


def test_frozen_clock_stands_still_and_advances():
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    clock = VirtualClock(frozen_at=base)
    assert clock.now() == base == clock.now()
    assert clock.advance("6h") == base + timedelta(hours=6)
    assert clock.now() == base + timedelta(hours=6)
    assert clock.frozen


def test_running_clock_is_real_time_plus_offset():
    real = [datetime(2026, 3, 1, tzinfo=UTC)]
    clock = VirtualClock(real=lambda: real[0])
    clock.advance(timedelta(days=2))
    real[0] += timedelta(minutes=5)
    assert clock.now() == datetime(2026, 3, 3, 0, 5, tzinfo=UTC)
    assert not clock.frozen


def test_clock_never_goes_back():
    with pytest.raises(DurationError):
        VirtualClock().advance(timedelta(hours=-1))
