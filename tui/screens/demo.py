"""Demo mode dialogs: act as another simulator user, and move the simulator's clock."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from linkdesk.core.model import Role

from ..text import clean

_SIDES = {"agency": "agency", "client": "client", "other-agency": "other agency"}


class IdentityModal(ModalScreen[int | None]):
    """Pick the identity to act as; returns its user id (None: keep the current one)."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Keep current", id="identity.cancel"),
        Binding("j", "down", "Down", show=False, id="identity.down"),
        Binding("k", "up", "Up", show=False, id="identity.up"),
    ]

    def __init__(self, identities: Sequence[Any], current: int | None) -> None:
        super().__init__()
        self._identities = list(identities)
        self._current = current

    def compose(self) -> ComposeResult:
        options = []
        for ident in self._identities:
            label = Text()
            label.append("● " if ident.user_id == self._current else "  ", style="bold")
            label.append(clean(ident.user_name, max_chars=60), style="bold")
            label.append(f"  {Role(ident.role).label}", style="")
            label.append(f"  at {clean(ident.customer_name, max_chars=60)}", style="dim")
            label.append(f"  ({_SIDES.get(ident.side, ident.side)})", style="dim")
            options.append(Option(label, id=str(ident.user_id)))
        with Vertical(id="identity-dialog", classes="dialog"):
            yield Static(Text("Act as… (demo)"), classes="dialog-title")
            yield Static(Text("linkdesk then syncs as that user: the agency sees what it sent, a client what it "
                              "received. Viewers and Campaign Managers can look but not act.", style="dim"))
            yield OptionList(*options, id="identity-list")

    def on_mount(self) -> None:
        options = self.query_one("#identity-list", OptionList)
        options.focus()
        for index, ident in enumerate(self._identities):
            if ident.user_id == self._current:
                options.highlighted = index

    def action_down(self) -> None:
        self.query_one("#identity-list", OptionList).action_cursor_down()

    def action_up(self) -> None:
        self.query_one("#identity-list", OptionList).action_cursor_up()

    @on(OptionList.OptionSelected, "#identity-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id) if event.option.id else None)


class AdvanceModal(ModalScreen[str | None]):
    """Pick how far to move the simulator clock; returns the duration (e.g. '6h')."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="advance.cancel"),
        Binding("1", "pick(0)", "First", show=False, id="advance.first"),
        Binding("2", "pick(1)", "Second", show=False, id="advance.second"),
        Binding("3", "pick(2)", "Third", show=False, id="advance.third"),
    ]

    def __init__(self, steps: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self._steps = list(steps)

    def compose(self) -> ComposeResult:
        with Vertical(id="advance-dialog", classes="dialog"):
            yield Static(Text("Advance the simulator clock (demo)"), classes="dialog-title")
            yield Static(Text("Due transitions happen as they would in that time: acceptance becomes possible "
                              "after 6 hours, accepted links become Active, unlinks complete, pending "
                              "invitations expire after 30 days. linkdesk syncs afterwards.", style="dim"))
            yield OptionList(*(Option(Text(f"{i + 1}  {label}"), id=duration)
                               for i, (duration, label) in enumerate(self._steps)), id="advance-list")

    def on_mount(self) -> None:
        self.query_one("#advance-list", OptionList).focus()

    def action_pick(self, index: int) -> None:
        if 0 <= index < len(self._steps):
            self.dismiss(self._steps[index][0])

    @on(OptionList.OptionSelected, "#advance-list")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
