"""The error dialog: what went wrong and what to do, in sentences. Never a traceback."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ErrorModal(ModalScreen[None]):
    """Shows an error; ``message`` may quote client text, so it is always rendered literally."""

    BINDINGS = [Binding("escape,enter,o", "dismiss", "Close", id="error.close")]

    def __init__(self, title: str, message: str | Text, detail: str | None = None) -> None:
        super().__init__()
        self._title = title
        self._message = message if isinstance(message, Text) else Text(message)
        self._detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="error-dialog", classes="dialog"):
            yield Static(Text(self._title), classes="dialog-title")
            yield Static(self._message, id="error-message")
            if self._detail:
                yield Static(Text(self._detail), id="error-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="error-ok", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#error-ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
