"""The status line: profile, acting user and role, cache age or offline, and sync progress."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Callable

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.geometry import Size
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget
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


#: Seconds between two drawings of a sync's progress: a sync posts a step per page, far more often than eyes need.
PROGRESS_INTERVAL = 0.1


class StatusParts(Widget, can_focus=False):
    """The profile, the acting user and the cache's age: one widget drawing what three Statics drew (each with a
    column of padding either side, the profile on its accent colour or, live, on the success colour, the age muted
    or, offline, in bold warning colour), sized to its text. Redrawn only when a part changes; laid out again only
    when the width changes."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"status-parts--profile", "status-parts--live", "status-parts--age",
                         "status-parts--offline"}
    DEFAULT_CSS = """
    StatusParts {
        width: auto;
        height: 1;
        & > .status-parts--profile { background: $accent; color: $text; text-style: bold; }
        & > .status-parts--live { background: $success; color: $text; text-style: bold; }
        & > .status-parts--age { color: $text-muted; }
        & > .status-parts--offline { color: $warning; text-style: bold; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: What is shown: profile, whether live, who (its text), age, whether offline.
        self.parts: tuple[str, bool, Text, str, bool] = ("", False, Text(), "", False)

    def show(self, profile: str, live: bool, who: Text, age: str, offline: bool) -> bool:
        """Show these parts; True when they changed (and were redrawn)."""
        parts = (profile, live, who, age, offline)
        if parts == self.parts:
            return False
        width = self._width()
        self.parts = parts
        self.refresh(layout=self._width() != width)
        return True

    def _width(self) -> int:
        profile, _, who, age, _ = self.parts
        return cell_len(profile) + who.cell_len + cell_len(age) + 6

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return self._width()

    def line(self) -> Text:
        """The line as drawn: each part's padding in its background only, as the Statics' padding was."""
        profile, live, who, age, offline = self.parts
        base = self.rich_style
        profile_style = self.get_component_rich_style("status-parts--live" if live else "status-parts--profile")
        age_style = self.get_component_rich_style("status-parts--offline" if offline else "status-parts--age")
        pad, profile_pad = Style(bgcolor=base.bgcolor), Style(bgcolor=profile_style.bgcolor)
        text = Text(end="")
        text.append(" ", profile_pad)
        text.append(profile, profile_style)
        text.append(" ", profile_pad)
        text.append(" ", pad)
        if who:
            who = who.copy()
            who.stylize_before(base)
            text.append_text(who)
        text.append(" ", pad)
        text.append(" ", pad)
        text.append(age, age_style)
        text.append(" ", pad)
        return text

    def render_line(self, y: int) -> Strip:
        """Drawn with every cell's style set here (Textual's line API), in the same runs of cells as before."""
        return Strip(self.line().render(self.app.console, end=""), self.size.width)


class StatusLine(Horizontal):
    """Reads the app's ``status`` (a ``StatusInfo``) and its clock; refreshes the age every 30 seconds."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        background: $panel;
        & > #status-progress { width: 24; display: none; }
        & > #status-progress.-running { display: block; }
        & > #status-message { width: 1fr; padding: 0 1; color: $text-muted; }
    }
    """

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._info = StatusInfo()
        self._shown: StatusInfo | None = None  # what is on screen, while a newer progress step may wait
        self._cooldown: Timer | None = None  # set while progress steps are held back
        self._drawn: dict[str, tuple[str, tuple, str]] = {}  # what each part shows (see _put)
        #: The progress bar, built when a sync (or a bulk send) first runs: hidden until then, the first frame does
        #: without it (two widgets, and their styles, to build before the first rows are drawn).
        self._bar: ProgressBar | None = None

    def compose(self) -> ComposeResult:
        yield StatusParts(id="status-parts")
        # The progress bar (#status-progress) joins them here when it is first needed (see _draw_bar).
        yield Static(id="status-message")

    def on_mount(self) -> None:
        self.watch(self.app, "status", self.show, init=True)
        self.set_interval(30, self._tick)

    def _tick(self) -> None:
        self._draw(self._info)

    def show(self, info: StatusInfo) -> None:
        """Show ``info``; progress steps within one sync phase are drawn at most 10 times a second."""
        self._info = info
        shown = self._shown
        step = (shown is not None and info.phase is not None and info.phase == shown.phase
                and info.with_(done=0, total=None, message="") == shown.with_(done=0, total=None, message=""))
        if step and self._cooldown is not None:
            return  # the cooldown's end draws the latest info
        self._draw(info)
        if self._cooldown is not None:
            self._cooldown.stop()
            self._cooldown = None
        if info.phase is not None:
            self._cooldown = self.set_timer(PROGRESS_INTERVAL, self._cooldown_over)

    def _cooldown_over(self) -> None:
        self._cooldown = None
        if self._info != self._shown:
            self.show(self._info)  # draws it and starts the next cooldown

    def _put(self, part: str, text: Text, *, sized: bool) -> None:
        """Show ``text`` in one part of the line, only if it changed. Each update of a part otherwise laid out the
        whole screen (ten times a second during a sync); a part sized to its text (``sized``) still lays out the
        screen, but only when its width changes."""
        key = (text.plain, tuple(text.spans), str(text.style))
        before = self._drawn.get(part)
        if before == key:
            return
        self._drawn[part] = key
        layout = sized and (before is None or cell_len(before[0]) != text.cell_len)
        self.query_one(f"#{part}", Static).update(text, layout=layout)

    def _draw(self, info: StatusInfo) -> None:
        self._shown = info
        who = Text()
        if info.user:
            who.append(clean(info.user, max_chars=60), style="bold")
            if info.role:
                who.append(f" · {info.role}")
            if info.customer:
                who.append(" · ")
                who.append(clean(info.customer, max_chars=60))
        self.query_one(StatusParts).show("DEMO" if info.is_demo else (info.profile.upper() or "…"),
                                         not info.is_demo, who, age_text(info, self._clock()), info.online is False)
        running = info.phase is not None
        if running and self._bar is None:
            # Determinate while idle: an indeterminate bar animates at 15 frames a second even when hidden.
            self._bar = ProgressBar(total=1, show_eta=False, show_percentage=False, id="status-progress")
            self.call_next(self._mount_bar, self._bar)
        elif self._bar is not None and self._bar.is_mounted:
            self._draw_bar(info)
        message = Text(clean(info.message, max_chars=200))
        if running:
            message.append("  (esc stops)", style="dim")
        self._put("status-message", message, sized=False)  # it takes the rest of the line, whatever its text

    async def _mount_bar(self, bar: ProgressBar) -> None:
        await self.mount(bar, before=self.query_one("#status-message"))
        self._draw_bar(self._shown or self._info)

    def _draw_bar(self, info: StatusInfo) -> None:
        bar = self._bar
        if bar is None:
            return
        running = info.phase is not None
        bar.set_class(running, "-running")
        if running:
            bar.update(total=info.total if info.total else None, progress=info.done)
        elif bar.total is None:
            bar.update(total=1, progress=0)  # stops the indeterminate animation
