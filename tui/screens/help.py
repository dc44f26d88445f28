"""The help screen (? or F1): every key that works here, and what the screen shows."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


@dataclass(frozen=True)
class KeyHelp:
    keys: str
    description: str
    enabled: bool


def keys_from_bindings(app, bindings: dict[str, ActiveBinding]) -> list[KeyHelp]:
    """One line per action (keys bound to the same action are joined), in binding order."""
    by_action: dict[tuple[str, str], list[str]] = {}
    enabled: dict[tuple[str, str], bool] = {}
    for key, active in bindings.items():
        binding = active.binding
        description = binding.description or binding.tooltip
        # Only our own bindings (they all have ids); inherited scroll keys and system keys are noise here.
        if not description or binding.system or not binding.id:
            continue
        ident = (binding.id or binding.action, description)
        by_action.setdefault(ident, [])
        display = app.get_key_display(Binding(key, binding.action, description))
        if display not in by_action[ident]:
            by_action[ident].append(display)
        enabled[ident] = enabled.get(ident, False) or active.enabled
    return [KeyHelp(" ".join(keys), ident[1], enabled[ident]) for ident, keys in by_action.items()]


class HelpScreen(ModalScreen[None]):
    """Keys and a short explanation; opened from any screen with ``?`` or F1."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close help", id="help.close")]

    def __init__(self, title: str, about: str, keys: list[KeyHelp]) -> None:
        super().__init__()
        self._title = title
        self._about = about
        self._keys = keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for k in self._keys:
            table.add_row(Text(k.keys), Text(k.description, style="" if k.enabled else "dim"))
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static(Text(f"Help — {self._title}"), classes="dialog-title")
            with VerticalScroll(id="help-body"):
                yield Static(Text(self._about), id="help-about")
                yield Static(Text("Keys", style="bold"), classes="help-heading")
                yield Static(table, id="help-keys")
                yield Static(Text(
                    "Every action is also in the command palette (ctrl+p). Keys can be remapped in the config "
                    "file under \"keymap\", by binding id (for example {\"app.sync\": \"ctrl+r\"}).",
                    style="italic"), id="help-footer")
