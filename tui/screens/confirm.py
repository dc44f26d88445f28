"""A small typed confirmation dialog: says what will happen, returns True only on an explicit yes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmationModal(ModalScreen[bool]):
    """Ask before an action that changes a link. ``consequence`` states what the action does, in words.

    ``subject`` is usually client text (an account name), so it is a ``Text`` and never parsed as markup.
    """

    BINDINGS = [
        Binding("y", "confirm", "Yes", id="confirm.yes"),
        Binding("n,escape", "dismiss(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, subject: Text, consequence: str, *, confirm_label: str = "Yes",
                 danger: bool = False) -> None:
        super().__init__()
        self._title = title
        self._subject = subject
        self._consequence = consequence
        self._confirm_label = confirm_label
        self._danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Static(Text(self._title), classes="dialog-title")
            yield Static(self._subject, id="confirm-subject")
            yield Static(Text(self._consequence), id="confirm-consequence")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._confirm_label} (y)", id="confirm-yes",
                             variant="error" if self._danger else "primary", compact=True)
                yield Button("No (n)", id="confirm-no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def action_confirm(self) -> None:
        self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")
