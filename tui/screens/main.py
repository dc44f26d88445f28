"""The main screen: the clients tree (1) and the link inbox (2) in one place, with the status line and keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Static

from linkdesk.core.model import Actor, Perspective

from ..widgets.footer import Footer
from ..widgets.status_line import StatusLine
from .clients import ClientsView
from .inbox import InboxView

VIEWS = (("clients", "1", "Clients"), ("inbox", "2", "Inbox"))


class MainScreen(Screen[None]):
    """Holds both views; the app switches between them with ``show`` and hands them data with ``load``."""

    AUTO_FOCUS = "#inbox-list"

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self._clock = clock

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(Text("linkdesk", style="bold"), id="topbar-title")
            yield Static(id="topbar-views")
        with ContentSwitcher(initial="inbox", id="views"):
            yield ClientsView(self._clock, id="clients")
            yield InboxView(self._clock, id="inbox")
        yield StatusLine(self._clock, id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show_tabs("inbox")

    @property
    def current(self) -> str:
        return self.query_one("#views", ContentSwitcher).current or "inbox"

    @property
    def inbox(self) -> InboxView:
        return self.query_one("#inbox", InboxView)

    @property
    def clients(self) -> ClientsView:
        return self.query_one("#clients", ClientsView)

    def show(self, view: str) -> None:
        """Switch to ``clients`` or ``inbox`` and focus its main widget."""
        self.query_one("#views", ContentSwitcher).current = view
        self._show_tabs(view)
        target = self.inbox.link_list if view == "inbox" else self.clients.tree
        target.focus()
        # A widget that was hidden a moment ago may not take focus until the switch is laid out: ask again then.
        self.call_after_refresh(target.focus)

    def _show_tabs(self, current: str) -> None:
        out = Text()
        for view, key, title in VIEWS:
            style = "bold reverse" if view == current else "dim"
            out.append(f" {key} {title} ", style=style)
            out.append(" ")
        self.query_one("#topbar-views", Static).update(out)

    def load(self, caches: Any, actor: Actor | None, *, side: Perspective | None = None) -> None:
        """Give both views the caches (one per calling thread) and the acting user (first frame, identity
        switch)."""
        self.inbox.load(caches, actor, side=side)
        self.clients.load(caches, actor)

    def reload(self) -> None:
        """Re-read both views from the cache (after a sync or an action)."""
        self.inbox.reload()
        self.clients.reload()

    @property
    def help_text(self) -> tuple[str, str]:
        if self.current == "clients":
            return "Clients tree", ClientsView.HELP
        return "Link inbox", InboxView.HELP
