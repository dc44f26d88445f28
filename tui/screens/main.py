"""The main screen: the clients tree (1) and the link inbox (2) in one place, with the status line and keys."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.geometry import Size
from textual.screen import Screen
from textual.widget import AwaitMount, Widget
from textual.widgets import ContentSwitcher, Static

from linkdesk.core.model import Actor, Perspective

from ..widgets.footer import Footer
from ..widgets.status_line import StatusLine
from .inbox import InboxView

if TYPE_CHECKING:
    from .clients import ClientsView

VIEWS = (("clients", "1", "Clients"), ("inbox", "2", "Inbox"))


class MainScreen(Screen[None]):
    """Holds both views; the app switches between them with ``show`` and hands them data with ``load``."""

    AUTO_FOCUS = "#inbox-list"

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self._clock = clock
        self._clients: ClientsView | None = None
        self._data: tuple[Any, Actor | None] | None = None  # what ``load`` was last given
        self._mounting: AwaitMount | None = None  # the clients view's mount, once it is built
        self._resumed = False  # whether the screen has been shown once

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(Text("linkdesk", style="bold"), id="topbar-title")
            yield Static(id="topbar-views")
        with ContentSwitcher(initial="inbox", id="views"):
            yield InboxView(self._clock, id="inbox")  # the clients view joins it when first asked for
        yield StatusLine(self._clock, id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._show_tabs("inbox")

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # On every resume Textual applies the whole stylesheet again to every widget of the screen (for a theme or
        # CSS changed while it was hidden): 15-20 ms before the first frame, for widgets styled a moment ago, when
        # they were mounted. Not the first time, then; every later resume (back from a dialog) does it.
        if not self._resumed:
            self._resumed = True
            event.refresh_styles = False
        super()._on_screen_resume(event)

    def _screen_resized(self, size: Size) -> None:
        # Textual hands the screen the terminal's size again once the app is idle after start-up, even when it has
        # not changed, and a resize lays out and draws the whole screen. The screen is laid out at that size
        # already; anything that changed meanwhile asked for its own layout, which the next refresh does.
        if size == self._compositor.size:
            return
        super()._screen_resized(size)

    def _compositor_refresh(self) -> None:
        # Textual draws the screen during a batch of updates too (its start-up, a widget's recompose) and then
        # drops the frame unwritten, along with what it had to repaint: at start-up that is a whole frame (40 ms at
        # 100,000 links) drawn for nothing, and the frame after it. Keep the work for the first refresh after the
        # batch, which writes it.
        app = self.app
        if app._batch_count and self is app.screen and not app.is_inline:
            self._repaint_required = True
            return
        super()._compositor_refresh()

    @property
    def current(self) -> str:
        return self.query_one("#views", ContentSwitcher).current or "inbox"

    @property
    def inbox(self) -> InboxView:
        return self.query_one("#inbox", InboxView)

    @property
    def clients(self) -> ClientsView:
        """The clients tree's view, built the first time it is asked for (1 pressed, say): it stays hidden until
        then, and the first frame does without it. Built and handed its data at once; mounted just after."""
        if self._clients is None:
            from .clients import ClientsView

            self._clients = ClientsView(self._clock, id="clients")
            self._clients.display = False  # the switcher shows it when it becomes the current view
            self._mounting = self.query_one("#views", ContentSwitcher).mount(self._clients, before=0)
            if self._data is not None:
                self._clients.load(*self._data)
        return self._clients

    @property
    def clients_built(self) -> bool:
        """Whether the clients view exists yet (see ``clients``)."""
        return self._clients is not None

    def show(self, view: str) -> None:
        """Switch to ``clients`` or ``inbox`` and focus its main widget."""
        target = self.inbox.link_list if view == "inbox" else self.clients.tree  # (builds the clients view)
        self.query_one("#views", ContentSwitcher).current = view
        self._show_tabs(view)
        if not target.is_mounted:  # the clients view, built just now: focus it once it is mounted
            self.call_later(self._focus_when_mounted, view, target)
            return
        target.focus()
        # A widget that was hidden a moment ago may not take focus until the switch is laid out: ask again then.
        self.call_after_refresh(self._focus_if_shown, view, target)

    async def _focus_when_mounted(self, view: str, target: Widget) -> None:
        if self._mounting is not None:
            await self._mounting
        self.call_after_refresh(self._focus_if_shown, view, target)

    def _focus_if_shown(self, view: str, target: Widget) -> None:
        if self.current == view:  # not if another view was chosen meanwhile
            target.focus()

    def _show_tabs(self, current: str) -> None:
        out = Text()
        for view, key, title in VIEWS:
            style = "bold reverse" if view == current else "dim"
            out.append(f" {key} {title} ", style=style)
            out.append(" ")
        self.query_one("#topbar-views", Static).update(out)

    def load(self, caches: Any, actor: Actor | None, *, side: Perspective | None = None,
             at_once: bool = False) -> None:
        """Give both views the caches (one per calling thread) and the acting user (first frame, identity
        switch); the clients view gets them when it is built, if it is not yet. ``at_once``: see
        ``InboxView.load``."""
        self._data = (caches, actor)
        self.inbox.load(caches, actor, side=side, at_once=at_once)
        if self._clients is not None:
            self._clients.load(caches, actor)

    def reload(self) -> None:
        """Re-read both views from the cache (after a sync or an action)."""
        self.inbox.reload()
        if self._clients is not None:
            self._clients.reload()

    @property
    def help_text(self) -> tuple[str, str]:
        if self.current == "clients":
            return "Clients tree", self.clients.HELP
        return "Link inbox", InboxView.HELP
