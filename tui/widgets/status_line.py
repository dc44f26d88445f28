"""The status line: profile, acting user and role, cache age or offline, and sync progress."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from ..text import ago, clean, short_date


@dataclass(frozen=True)
class StatusInfo:
    """Everything the status line shows; the app replaces it as a whole (``App.status``)."""

    profile: str = ""
    is_demo: bool = False
    user: str = ""  # acting user's name (client text)
    role: str = ""  # our label for the role
    customer: str = ""  # the acting user's customer (client text)
    last_sync: datetime | None = None
    #: None while we do not know yet, False when the service cannot be reached (showing the cache only).
    online: bool | None = None
    phase: str | None = None  # a sync (or bulk send) is running
    done: int = 0
    total: int | None = None
    message: str = ""

    def with_(self, **changes) -> "StatusInfo":
        return replace(self, **changes)


def age_text(info: StatusInfo, now: datetime) -> str:
    """'synced 3 min ago', 'offline — showing cache from 2 Nov 14:05', or 'never synced'."""
    if info.online is False:
        if info.last_sync is None:
            return "offline — nothing cached yet"
        return f"offline — showing cache from {short_date(info.last_sync, now)}"
    if info.last_sync is None:
        return "never synced"
    return f"synced {ago(info.last_sync, now)}"


class StatusLine(Horizontal):
    """Reads the app's ``status`` (a ``StatusInfo``) and its clock; refreshes the age every 30 seconds."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        background: $panel;
        & > #status-profile { width: auto; padding: 0 1; background: $accent; color: $text; text-style: bold; }
        & > #status-profile.-live { background: $success; }
        & > #status-who { width: auto; padding: 0 1; }
        & > #status-age { width: auto; padding: 0 1; color: $text-muted; }
        & > #status-age.-offline { color: $warning; text-style: bold; }
        & > #status-progress { width: 24; display: none; }
        & > #status-progress.-running { display: block; }
        & > #status-message { width: 1fr; padding: 0 1; color: $text-muted; }
    }
    """

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._info = StatusInfo()

    def compose(self) -> ComposeResult:
        yield Static(id="status-profile")
        yield Static(id="status-who")
        yield Static(id="status-age")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="status-progress")
        yield Static(id="status-message")

    def on_mount(self) -> None:
        self.watch(self.app, "status", self.show, init=True)
        self.set_interval(30, self._tick)

    def _tick(self) -> None:
        self.show(self._info)

    def show(self, info: StatusInfo) -> None:
        self._info = info
        profile = self.query_one("#status-profile", Static)
        profile.update(Text("DEMO" if info.is_demo else (info.profile.upper() or "…")))
        profile.set_class(not info.is_demo, "-live")
        who = Text()
        if info.user:
            who.append(clean(info.user, max_chars=60), style="bold")
            if info.role:
                who.append(f" · {info.role}")
            if info.customer:
                who.append(" · ")
                who.append(clean(info.customer, max_chars=60))
        self.query_one("#status-who", Static).update(who)
        age = self.query_one("#status-age", Static)
        age.update(Text(age_text(info, self._clock())))
        age.set_class(info.online is False, "-offline")
        bar = self.query_one("#status-progress", ProgressBar)
        running = info.phase is not None
        bar.set_class(running, "-running")
        if running:
            bar.update(total=info.total if info.total else None, progress=info.done)
        message = Text(clean(info.message, max_chars=200))
        if running:
            message.append("  (esc stops)", style="dim")
        self.query_one("#status-message", Static).update(message)
