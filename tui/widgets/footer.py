"""The key footer: Textual's, rebuilt only when the keys it shows change.

Textual's footer rebuilds all its keys (one widget each, styled and laid out) every time a screen's bindings are
refreshed: on every focus move, every ``refresh_bindings`` (a sync starting or ending) — three times before the first
inbox rows are on screen, 15–30 ms each. Most of those refreshes leave the shown keys exactly as they were. This one
compares what it would show (key, label, action, enabled, tooltip) with what it shows and rebuilds only on a
difference; what it draws is Textual's.
Its keys are built with their compact style already set (see ``compose``).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer as _TextualFooter
from textual.widgets._footer import FooterKey


class Footer(_TextualFooter):
    """``textual.widgets.Footer`` without the rebuilds that would draw the same keys again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown_keys: tuple[Any, ...] | None = None

    def _keys(self) -> tuple[Any, ...]:
        """Everything of the screen's bindings that ``Footer.compose`` draws."""
        app = self.app
        shown = tuple(
            (binding.key, app.get_key_display(binding), binding.description, binding.action, binding.group,
             enabled, tooltip, binding.tooltip)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show or binding.key == app.COMMAND_PALETTE_BINDING
        )
        return (self._bindings_ready, self.show_command_palette, self.combine_groups,
                app.ENABLE_COMMAND_PALETTE, app.COMMAND_PALETTE_BINDING, shown)

    def compose(self) -> ComposeResult:
        self._shown_keys = self._keys()
        for widget in super().compose():
            if self.compact and isinstance(widget, FooterKey):
                # Each key would add this class when it is mounted (its ``compact`` watcher), and adding a class
                # re-applies the stylesheet to the key: 12 times, about 1 ms each, before the first frame. Given
                # now, the key is styled once, as it is mounted; it looks the same.
                widget.add_class("-compact", update=False)
            yield widget

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus:
            return
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        if self.is_attached and self._keys() != self._shown_keys:
            await self.recompose()
