"""Bulk invitations: pick a CSV file, see a dry run with a verdict per row, send the ready rows, see each result."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import Button, Footer, Input, Label, ProgressBar, Static

from linkdesk.core import bulk
from linkdesk.core.model import LinkType

from ..text import bill_to_text, clean
from ..widgets.link_list import Cell, Column, ColumnHeader, LinkList
from ..widgets.status_line import StatusLine
from .confirm import ConfirmationModal

COLUMNS = (
    Column("line", "Line", 5, align="right"),
    Column("type", "Type", 8),
    Column("client", "Client", 12, flex=1),
    Column("bill_to", "Bill to", 7),
    Column("name", "Name", 10, flex=1),
    Column("verdict", "Verdict / result", 20, flex=4),
)


@dataclass(frozen=True)
class BulkLine:
    """One row of the file with its dry-run verdict and, once sent, its result."""

    row: bulk.BulkRow
    result: Any = None  # an ActionResult once sent

    @property
    def state(self) -> str:
        if self.result is not None:
            return "sent" if self.result.ok else "refused"
        return "ready" if self.row.ok else "problem"


def line_cells(line: BulkLine) -> Sequence[Cell]:
    row = line.row
    draft = row.draft
    kind = "customer" if draft is not None and draft.link_type == LinkType.CustomerLink else "account"
    if line.result is not None:
        message = clean(line.result.message, max_chars=400)
        if not line.result.ok and line.result.violations:
            message = " ".join(clean(v.message, max_chars=300) for v in line.result.violations)
        verdict = ("sent: " if line.result.ok else "refused: ") + message
    else:
        verdict = "ready" if row.ok else clean(row.verdict, max_chars=600)
    klass = {"sent": "active", "ready": "active", "refused": "urgent", "problem": "urgent"}[line.state]
    return (
        (str(row.line), "dim"),
        (kind, "dim"),
        (clean(row.label, max_chars=60), ""),
        (bill_to_text(draft.is_bill_to_client) if draft is not None and kind == "account" else "—", "dim"),
        (clean(draft.name if draft is not None else row.values.get("name"), max_chars=60) or "", ""),
        (verdict, klass),
    )


class ListSource:
    """A ``RowSource`` over a list already in memory."""

    def __init__(self, items: Sequence[Any]) -> None:
        self._items = items

    def count(self) -> int:
        return len(self._items)

    def page(self, offset: int, limit: int) -> Sequence[Any]:
        return self._items[offset:offset + limit]


class PathSuggester(Suggester):
    """Completes a file path from what is on disk (the directory of what was typed so far)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if name.startswith(prefix) and name != prefix and not name.startswith("."):
                full = os.path.join(folder, name)
                if os.path.isdir(full):
                    full += os.sep
                elif not name.lower().endswith((".csv", ".txt")):
                    continue
                return value + full[len(expanded):]
        return None


class BulkSent(Message):
    def __init__(self, results: list[Any]) -> None:
        super().__init__()
        self.results = results


class BulkProgress(Message):
    def __init__(self, done: int, total: int | None) -> None:
        super().__init__()
        self.done = done
        self.total = total


class BulkInviteScreen(Screen[None]):
    """The bulk mode of the invitation form."""

    BINDINGS = [
        Binding("ctrl+d", "dry_run", "Dry run", priority=True, id="bulk.dry_run"),
        Binding("ctrl+s", "send", "Send ready rows", priority=True, id="bulk.send"),
        Binding("escape", "close", "Close / stop", id="bulk.close"),
    ]

    help_text = ("Bulk invitations", "Type the path of a CSV file (tab completes it) and press enter for a dry run: "
                 "every row is read and checked by the same rules as the form, with a verdict in words. ctrl+s "
                 "sends the ready rows in batches of 10 and shows each row's result; esc stops between batches. "
                 "Columns: type, client_account_id or client_account_number, bill_to (client/agency), permission, "
                 "name, note, start_date, suppress_notification.")

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self._path = path or ""
        self._lines: list[BulkLine] = []
        self._cancel: threading.Event | None = None

    def compose(self) -> ComposeResult:
        app: Any = self.app
        with Horizontal(id="topbar"):
            yield Static(Text("linkdesk", style="bold"), id="topbar-title")
            yield Static(Text(" Bulk invitations ", style="bold reverse"), id="topbar-views")
        with Horizontal(id="bulk-path-row", classes="form-row"):
            yield Label("CSV file", classes="form-label")
            yield Input(self._path, placeholder="path/to/invitations.csv — enter runs the dry run",
                        suggester=PathSuggester(), compact=True, id="bulk-path")
            yield Button("Dry run (ctrl+d)", id="bulk-dry-run", compact=True)
            yield Button("Send (ctrl+s)", id="bulk-send", variant="primary", disabled=True, compact=True)
        yield Static(Text(f"Columns: {bulk.EXAMPLE_HEADER},… (see ? for all)", style="dim"), id="bulk-summary")
        yield ProgressBar(total=None, show_eta=False, id="bulk-progress")
        yield ColumnHeader(COLUMNS, id="bulk-header")
        yield LinkList(COLUMNS, line_cells, empty_text="No file checked yet.", id="bulk-list")
        yield Static(id="bulk-preview")
        yield StatusLine(app.now, id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#bulk-progress").display = False
        self.query_one("#bulk-path", Input).focus()

    # -- dry run --------------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#bulk-path")
    @on(Button.Pressed, "#bulk-dry-run")
    def action_dry_run(self) -> None:
        app: Any = self.app
        path = os.path.expanduser(self.query_one("#bulk-path", Input).value.strip())
        summary = self.query_one("#bulk-summary", Static)
        if not path:
            summary.update(Text("Type the path of a CSV file first.", style="bold"))
            return
        try:
            parsed = bulk.read_file(Path(path))
        except bulk.BulkFileError as exc:
            self._show([])
            summary.update(Text(clean(str(exc), max_chars=500), style="bold"))
            return
        agency = app.identity.customer_id if app.identity is not None else None
        checked = bulk.check(parsed, app.check_invitation, agency)
        self._show([BulkLine(r) for r in checked.rows])
        ready, failed = len(checked.ready), len(checked.failed)
        summary.update(Text(f"{len(checked.rows)} rows: {ready} ready, {failed} with problems. "
                            + ("ctrl+s sends the ready rows." if ready else "Nothing to send."), style="bold"))
        self.query_one("#bulk-list", LinkList).focus()

    def _show(self, lines: list[BulkLine]) -> None:
        self._lines = lines
        self.query_one("#bulk-list", LinkList).set_source(ListSource(lines), keep_cursor=True)
        self.query_one("#bulk-send", Button).disabled = not any(line.state == "ready" for line in lines)

    @on(LinkList.Highlighted, "#bulk-list")
    def _preview(self, event: LinkList.Highlighted) -> None:
        """The whole verdict of the selected row (the column cuts long ones)."""
        line = event.row
        preview = self.query_one("#bulk-preview", Static)
        if line is None:
            preview.update("")
            return
        cells = line_cells(line)
        preview.update(Text.assemble((f"Line {line.row.line}: ", "bold"), cells[-1][0]))

    # -- sending --------------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#bulk-send")
    def action_send(self) -> None:
        app: Any = self.app
        ready = [line for line in self._lines if line.state == "ready"]
        if self._cancel is not None:
            return
        if not ready:
            self.notify("No row is ready to send; run the dry run on a file first.", severity="warning")
            return
        if app.session is None:
            self.notify("linkdesk is offline: invitations need the service.", severity="warning")
            return
        client_pays = sum(1 for line in ready if line.row.draft.is_bill_to_client is True)
        agency_pays = sum(1 for line in ready if line.row.draft.is_bill_to_client is False)
        customers = sum(1 for line in ready if line.row.draft.link_type == LinkType.CustomerLink)
        parts = []
        if client_pays:
            parts.append(f"{client_pays} where the client keeps paying")
        if agency_pays:
            parts.append(f"{agency_pays} where your agency takes over billing (including charges pending when "
                         "each link becomes Active)")
        if customers:
            parts.append(f"{customers} customer-level link{'s' if customers != 1 else ''}")
        consequence = ("Billing: " + "; ".join(parts) + ". " if parts else "") + \
            "Each client has 30 days to accept. Rows with problems are not sent."
        subject = Text(f"{len(ready)} invitation{'s' if len(ready) != 1 else ''} from "
                       f"{clean(self.query_one('#bulk-path', Input).value, max_chars=120)}")
        app.push_screen(ConfirmationModal("Send these invitations?", subject, consequence, confirm_label="Send"),
                        callback=lambda ok: self._send(ready) if ok else None)

    def _send(self, ready: list[BulkLine]) -> None:
        self._cancel = threading.Event()
        bar = self.query_one("#bulk-progress", ProgressBar)
        bar.display = True
        bar.update(total=len(ready), progress=0)
        self.query_one("#bulk-send", Button).disabled = True
        self._send_worker([line.row.draft for line in ready], [line.row.line for line in ready], self._cancel)

    @work(thread=True, exclusive=True, group="invite", exit_on_error=False, name="send invitations")
    def _send_worker(self, drafts: list[Any], lines: list[int], cancel: threading.Event) -> None:
        app: Any = self.app

        def progress(*args: Any) -> None:
            # core.actions reports (done, total); accept a progress object too.
            if len(args) >= 2:
                self.post_message(BulkProgress(int(args[0]), args[1]))
            elif args:
                self.post_message(BulkProgress(getattr(args[0], "done", 0), getattr(args[0], "total", None)))

        results = app.session.invite(drafts, progress=progress, cancel=cancel)
        self.post_message(BulkSent(list(zip(lines, results))))

    @on(BulkProgress)
    def _progress(self, event: BulkProgress) -> None:
        self.query_one("#bulk-progress", ProgressBar).update(progress=event.done)

    @on(BulkSent)
    def _sent(self, event: BulkSent) -> None:
        app: Any = self.app
        self._cancel = None
        self.query_one("#bulk-progress").display = False
        by_line = dict(event.results)
        self._show([BulkLine(line.row, by_line.get(line.row.line, line.result)) for line in self._lines])
        sent = sum(1 for _, r in event.results if r.ok)
        refused = len(event.results) - sent
        self.query_one("#bulk-summary", Static).update(
            Text(f"Sent {sent}, refused {refused}" + (", the rest not sent (stopped)" if
                                                      sent + refused < len(event.results) else "") + ".",
                 style="bold"))
        app.reload_views()
        self.notify(f"{sent} invitation{'s' if sent != 1 else ''} sent, {refused} refused.",
                    title="Bulk invitations", severity="information" if not refused else "warning")

    def on_worker_state_changed(self, event) -> None:
        if event.worker.group == "invite" and event.state.name in ("ERROR", "CANCELLED"):
            self._cancel = None
            self.query_one("#bulk-progress").display = False

    def action_close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.notify("Stopping after the current batch…")
            return
        self.dismiss(None)
