"""Fixtures for the TUI tests: a seeded demo world synced once per run and copied for each test, a frozen clock,
and small helpers for driving the app with Pilot."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tui_fakes, next to this file

#: The frozen moment every TUI test starts at (the simulator is frozen there too; advance() moves it).
T0 = datetime(2025, 11, 3, 14, 5, tzinfo=timezone.utc)
SIZE = (120, 36)


def frozen() -> datetime:
    return T0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests in a fresh event loop (no asyncio plugin needed; Pilot brings its own app loop)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture(autouse=True)
def _no_gc_freeze(monkeypatch):
    """The app freezes the garbage collector once its session is ready (tui/app.py); a test process builds hundreds
    of apps, and each freeze would keep the garbage of the ones before it."""
    from linkdesk.tui.app import LinkdeskApp

    monkeypatch.setattr(LinkdeskApp, "FREEZE_GC", False)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory) -> Path:
    """A demo home (simulator state + a synced cache) made once per test run, from seed 1 at T0."""
    from linkdesk.core.session import Session

    home = tmp_path_factory.mktemp("demo-template") / "home"
    session = Session.demo(home=home, fresh=True, clock=frozen)
    try:
        result = session.sync()
        assert result.ok, result.message
    finally:
        session.close()
    return home


@pytest.fixture
def demo_home(tmp_path, demo_template) -> Path:
    """A private copy of the synced demo home for one test."""
    home = tmp_path / "home"
    shutil.copytree(demo_template, home)
    return home


@pytest.fixture
def demo_session(demo_home):
    """A real Session on the copied demo world (the simulator runs in this process on 127.0.0.1)."""
    from linkdesk.core.session import Session

    session = Session.demo(home=demo_home, clock=frozen)
    yield session
    session.close()


@pytest.fixture
def fake_session(tmp_path):
    from tui_fakes import FakeSession

    session = FakeSession(tmp_path / "fake-home")
    session.write_cache()
    yield session
    session.close()


class Notes:
    """Records every notification an app shows (title and message), for assertions."""

    def __init__(self, app: Any) -> None:
        self.items: list[tuple[str, str, str]] = []
        original = app.notify

        def notify(message, *, title="", severity="information", timeout=None, markup=True):
            self.items.append((str(title), str(message), str(severity)))
            return original(message, title=title, severity=severity, timeout=timeout, markup=markup)

        app.notify = notify

    def text(self) -> str:
        return "\n".join(f"{t}: {m}" for t, m, _ in self.items)


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds (workers run in threads), or fail saying what was awaited."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)
    await pilot.pause()  # let the screen catch up with the state


def screen_text(app: Any) -> str:
    """Everything on the screen as plain text, line by line (what a person would read)."""
    strips = app.screen._compositor.render_strips()  # noqa: SLF001 - the whole composed frame, modals included
    return "\n".join(strip.text.rstrip() for strip in strips)


_FRAME = re.compile("[\u2500-\u259f]")  # box-drawing and block characters: borders, scrollbars


def flat(text: str) -> str:
    """Text without frame characters and with every run of whitespace made one space, so that sentences wrapped
    inside a bordered dialog read whole again."""
    return " ".join(_FRAME.sub(" ", text).split())


async def see(pilot: Any, app: Any, text: str, timeout: float = 10.0) -> str:
    """Wait until ``text`` is on the screen (wrapping ignored); returns the screen's flattened text."""
    await wait_until(pilot, lambda: text in flat(screen_text(app)), timeout, what=f"{text!r} on the screen")
    return flat(screen_text(app))


async def settle(pilot: Any, app: Any) -> None:
    """Wait until no query, page read, sync or action is pending: what is on screen is what the cache says."""
    await wait_until(pilot, lambda: not app._syncing and app.main.inbox.settled  # noqa: SLF001
                     and not (app.main.clients_built and app.main.clients.tree.reading)
                     and not any(w.is_running or w.state.name == "PENDING" for w in app.workers),
                     what="the app to settle")
