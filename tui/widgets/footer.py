"""The main screen's key footer: one widget that draws what Textual's compact footer draws.

Textual's footer is a container with a widget per key (a dozen on the main screen), each styled, laid out and drawn
on its own, and all of them built again whenever the shown keys change: a good part of the work before the first
frame. This one draws the same line itself: each key (bold, in the footer's key colour) and its description, a
space after each, and the command palette's key on the right behind a thin bar. It redraws only when what it shows
changes. A key is shown dim when its action is disabled; the key under the mouse is highlighted, its tooltip shown;
a click on a key presses it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widget import Widget


class _Key(NamedTuple):
    key: str
    display: str
    description: str
    enabled: bool
    tooltip: str


class Footer(Widget, can_focus=False):
    """The screen's keys on one line (bindings with ``show``), as ``textual.widgets.Footer(compact=True)``."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"footer-key--key", "footer-key--description", "footer-key--hover", "footer--separator"}
    DEFAULT_CSS = """
    Footer {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        .footer-key--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .footer-key--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        .footer-key--hover {
            color: $footer-key-foreground;
            background: $block-hover-background;
        }
        .footer--separator {
            color: $foreground 20%;
        }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple[tuple[_Key, ...], _Key | None] | None = None  # what the last drawing showed
        self._spans: list[tuple[int, int, _Key]] = []  # columns of each key drawn: start, end, key
        self._hover: _Key | None = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def keys(self) -> tuple[tuple[_Key, ...], _Key | None]:
        """The keys to show, then the command palette's (None when it is off)."""
        app = self.app
        active = self.screen.active_bindings
        keys: dict[str, _Key] = {}  # one per action, the first binding of each, as Textual's footer shows them
        for _, binding, enabled, tooltip in active.values():
            if binding.show and binding.action not in keys:
                keys[binding.action] = _Key(binding.key, app.get_key_display(binding), binding.description,
                                            enabled, tooltip)
        palette = None
        if app.ENABLE_COMMAND_PALETTE and app.COMMAND_PALETTE_BINDING in active:
            _, binding, enabled, tooltip = active[app.COMMAND_PALETTE_BINDING]
            palette = _Key(binding.key, app.get_key_display(binding), binding.description, enabled,
                           binding.tooltip or binding.description)
        return tuple(keys.values()), palette

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._redraw_if_changed)

    def _redraw_if_changed(self) -> None:
        if self.is_attached and self.keys() != self._shown:
            self.refresh()

    def _key_text(self, key: _Key, key_style: Any, description_style: Any) -> Text:
        if key is self._hover:
            hover = self.get_component_rich_style("footer-key--hover")
            key_style, description_style = key_style + hover, description_style + hover
        text = Text.assemble((key.display, key_style), (f" {key.description}", description_style))
        if not key.enabled:
            text.stylize("dim")
        return text

    def render(self) -> Text:
        self._shown = keys, palette = self.keys()
        key_style = self.get_component_rich_style("footer-key--key")
        description_style = self.get_component_rich_style("footer-key--description")
        width = self.size.width
        right = Text()
        if palette is not None:
            right.append("▏", self.get_component_rich_style("footer--separator"))
            right.append_text(self._key_text(palette, key_style, description_style))
            right.append(" ")
        spans: list[tuple[int, int, _Key]] = []
        left = Text()
        for key in keys:
            start = left.cell_len
            left.append_text(self._key_text(key, key_style, description_style))
            spans.append((start, left.cell_len, key))
            left.append(" ")
        room = max(0, width - right.cell_len)
        left.truncate(room, pad=True)
        if palette is not None:
            spans.append((room + 1, room + right.cell_len - 1, palette))
        self._spans = [(start, min(end, room) if key is not palette else end, key) for start, end, key in spans
                       if key is palette or start < room]
        left.append_text(right)
        left.no_wrap = True
        return left

    def _key_at(self, x: int) -> _Key | None:
        return next((key for start, end, key in self._spans if start <= x < end), None)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        key = self._key_at(event.x)
        if key != self._hover:
            self._hover = key
            self.tooltip = key.tooltip if key is not None and key.tooltip else None
            self.refresh()

    def on_leave(self, event: events.Leave) -> None:
        if self._hover is not None:
            self._hover = None
            self.tooltip = None
            self.refresh()

    def on_mouse_down(self, event: events.MouseDown) -> None:
        key = self._key_at(event.x)
        if key is None:
            return
        if key.enabled:
            self.app.simulate_key(key.key)
        else:
            self.app.bell()
