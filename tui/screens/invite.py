"""The invitation form: every field of a new client link, checked live by the rules, a summary step, then send."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from linkdesk.core import rules
from linkdesk.core.bulk import parse_date
from linkdesk.core.model import ClientLink, CustomerLinkPermission, LinkType

from ..text import billing_consequence, clean, date, join
from ..widgets.status_line import StatusLine
from .confirm import ConfirmationModal

#: Which form row a violation belongs to, by the wire field the rules name.
FIELD_ROWS: dict[str | None, str] = {
    "Type": "type",
    "ClientEntityId": "client",
    "ClientEntityNumber": "client",
    "ManagingCustomerId": "manager",
    "ManagingCustomerNumber": "manager",
    "IsBillToClient": "bill_to",
    "CustomerLinkPermission": "permission",
    "Name": "name",
    "Note": "note",
    "StartDate": "start",
}
ROWS = ("type", "client", "manager", "bill_to", "permission", "name", "note", "start", "general")


def _number_or_text(text: str) -> int | str | None:
    """An id field: a whole number when it is one; otherwise the text itself, for the rules to refuse in words."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


class InvitationSent(Message):
    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class InvitationScreen(Screen[None]):
    """One invitation. ``draft`` fills the form in (an account chosen in the tree, or a re-invitation)."""

    BINDINGS = [
        Binding("ctrl+s", "review", "Review and send", priority=True, id="invite.review"),
        Binding("ctrl+o", "bulk", "Bulk from CSV", priority=True, id="invite.bulk"),
        Binding("escape", "close", "Close", id="invite.close"),
    ]

    help_text = ("New invitation", "Invite a client account (account link) or a whole client customer (customer "
                 "link) to be managed by your agency. Give the client's id or its number, not both. Account links "
                 "need to say who pays; customer links take a permission instead. Every rule is checked as you type, "
                 "in the rule's words, including an invitation or link that already exists for the same client. "
                 "ctrl+s shows a summary with the billing consequence and sends after you confirm.")

    def __init__(self, draft: ClientLink | None = None) -> None:
        super().__init__()
        self._initial = draft or ClientLink()
        self._violations: list[rules.Violation] = []
        self._sending = False

    def compose(self) -> ComposeResult:
        d = self._initial
        app: Any = self.app
        agency = app.identity
        with Horizontal(id="topbar"):
            yield Static(Text("linkdesk", style="bold"), id="topbar-title")
            yield Static(Text(" New invitation ", style="bold reverse"), id="topbar-views")
        with VerticalScroll(id="invite-form"):
            yield Static(id="invite-general-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Link type", classes="form-label")
                yield Select([("Account link (one advertiser account)", LinkType.AccountLink.value),
                              ("Customer link (a whole client customer)", LinkType.CustomerLink.value)],
                             value=(d.link_type.value), allow_blank=False, compact=True, id="invite-type")
            yield Static(id="invite-type-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Client id", classes="form-label", id="invite-client-label")
                yield Input(str(d.client_entity_id or ""), placeholder="e.g. 150000123", compact=True,
                            id="invite-client-id")
                yield Label("or number", classes="form-label-inline")
                yield Input(d.client_entity_number or "", placeholder="e.g. F1000001", compact=True,
                            id="invite-client-number")
            yield Static(id="invite-client-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Managing customer", classes="form-label")
                yield Input(str(d.managing_customer_id or (agency.customer_id if agency else "")),
                            compact=True, id="invite-manager-id")
                yield Label("or number", classes="form-label-inline")
                yield Input(d.managing_customer_number or "", compact=True, id="invite-manager-number")
            yield Static(id="invite-manager-problems", classes="form-problems")
            with Horizontal(classes="form-row", id="invite-bill-row"):
                yield Label("Who pays", classes="form-label")
                yield Select([("The client pays (bill to client)", "client"),
                              ("Your agency pays (takes over billing)", "agency")],
                             value=("client" if d.is_bill_to_client else "agency")
                             if d.is_bill_to_client is not None else Select.NULL,
                             prompt="Choose who pays", compact=True, id="invite-bill-to")
            yield Static(id="invite-bill_to-problems", classes="form-problems")
            with Horizontal(classes="form-row", id="invite-permission-row"):
                yield Label("Permission", classes="form-label")
                yield Select([("Administrative", "Administrative"), ("Standard", "Standard")],
                             value=str(d.customer_link_permission) if d.customer_link_permission else Select.NULL,
                             prompt="Choose a permission", compact=True, id="invite-permission")
            yield Static(id="invite-permission-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Name", classes="form-label")
                yield Input(d.name or "", placeholder="optional; the service names it otherwise", compact=True,
                            id="invite-name")
                yield Static(id="invite-name-counter")
            yield Static(id="invite-name-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Note", classes="form-label")
                yield Input(d.note or "", placeholder="optional message to the client", compact=True, id="invite-note")
            yield Static(id="invite-note-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("Start date", classes="form-label")
                yield Input(d.start_date.strftime("%Y-%m-%d") if d.start_date else "",
                            placeholder="YYYY-MM-DD (empty: as soon as accepted)", compact=True, id="invite-start")
            yield Static(id="invite-start-problems", classes="form-problems")
            with Horizontal(classes="form-row"):
                yield Label("", classes="form-label")
                yield Checkbox("Do not email the client (suppress notification)", d.suppress_notification,
                               compact=True, id="invite-suppress")
            yield Static(id="invite-consequence")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Review and send (ctrl+s)", id="invite-review", variant="primary", compact=True)
                yield Button("Bulk from CSV (ctrl+o)", id="invite-bulk", compact=True)
                yield Button("Close (esc)", id="invite-close", compact=True)
            yield Static(id="invite-result")
        yield StatusLine(app.now, id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.validate()
        target = "#invite-client-id" if self._initial.client_entity_id is None else "#invite-bill-to"
        self.query_one(target).focus()

    # -- the draft ------------------------------------------------------------------------------------------------

    def _text(self, selector: str) -> str:
        return self.query_one(selector, Input).value

    def draft(self) -> tuple[ClientLink, list[rules.Violation]]:
        """The invitation as typed, and the problems of typing itself (a date that is not a date)."""
        problems: list[rules.Violation] = []
        link_type = LinkType(self.query_one("#invite-type", Select).value)
        bill = self.query_one("#invite-bill-to", Select).value
        permission = self.query_one("#invite-permission", Select).value
        start_text = self._text("#invite-start").strip()
        start: datetime | None = None
        if start_text:
            start = parse_date(start_text)
            if start is None:
                problems.append(rules.Violation("StartDate", rules.E_FIELD_INVALID,
                                                f"The start date must be a date like 2025-11-30, not "
                                                f"{clean(start_text, max_chars=40)!r}."))
        is_account = link_type == LinkType.AccountLink
        draft = ClientLink(
            type=link_type,
            client_entity_id=_number_or_text(self._text("#invite-client-id")),  # type: ignore[arg-type]
            client_entity_number=self._text("#invite-client-number").strip() or None,
            managing_customer_id=_number_or_text(self._text("#invite-manager-id")),  # type: ignore[arg-type]
            managing_customer_number=self._text("#invite-manager-number").strip() or None,
            is_bill_to_client=(bill == "client") if is_account and bill in ("client", "agency") else None,
            customer_link_permission=CustomerLinkPermission(permission)
            if not is_account and permission in ("Administrative", "Standard") else None,
            name=self._text("#invite-name") or None,
            note=self._text("#invite-note") or None,
            start_date=start,
            suppress_notification=self.query_one("#invite-suppress", Checkbox).value,
        )
        return draft, problems

    def validate(self) -> list[rules.Violation]:
        """Check the draft with the rules (and the cache's knowledge) and show every problem by its field."""
        app: Any = self.app
        draft, problems = self.draft()
        violations = problems + list(app.check_invitation(draft))
        self._violations = violations
        by_row: dict[str, list[str]] = {row: [] for row in ROWS}
        for v in violations:
            by_row[FIELD_ROWS.get(v.field, "general")].append(v.message)
        for row in ROWS:
            widget = self.query_one(f"#invite-{row}-problems", Static)
            messages = by_row[row]
            widget.update(Text("\n".join(f"✗ {clean(m, max_chars=500)}" for m in messages)))
            widget.display = bool(messages)
        is_account = draft.link_type == LinkType.AccountLink
        self.query_one("#invite-bill-row").display = is_account
        self.query_one("#invite-permission-row").display = not is_account
        self.query_one("#invite-client-label", Label).update("Client id" if is_account else "Client customer id")
        name = self._text("#invite-name")
        counter = self.query_one("#invite-name-counter", Static)
        counter.update(Text(f"{len(name)}/{rules.NAME_MAX}"))
        counter.set_class(len(name) > rules.NAME_MAX, "-over")
        consequence = self.query_one("#invite-consequence", Static)
        if violations:
            consequence.update(Text(f"{len(violations)} problem{'s' if len(violations) != 1 else ''} to fix "
                                    "before sending.", style="bold"))
        else:
            consequence.update(join(("Ready to send. ", "bold"), _consequence(draft, app)))
        return violations

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        self.validate()

    @on(Input.Submitted)
    def _next_field(self) -> None:
        self.focus_next()

    # -- review and send --------------------------------------------------------------------------------------------

    def action_review(self) -> None:
        if self._sending:
            return
        violations = self.validate()
        if violations:
            self.notify(clean(violations[0].message, max_chars=400), title="Not ready to send", severity="warning",
                        markup=False)
            return
        app: Any = self.app
        if app.session is None:
            self.notify("linkdesk is offline: invitations need the service. Try again when connected.",
                        severity="warning")
            return
        draft, _ = self.draft()
        self.app.push_screen(
            ConfirmationModal("Send this invitation?", _summary(draft, app), _consequence(draft, app),
                              confirm_label="Send"),
            callback=lambda ok: self._send(draft) if ok else None,
        )

    def _send(self, draft: ClientLink) -> None:
        self._sending = True
        self.query_one("#invite-result", Static).update(Text("Sending…", style="italic"))
        self._send_worker(draft)

    @work(thread=True, exclusive=True, group="invite", exit_on_error=False, name="send invitation")
    def _send_worker(self, draft: ClientLink) -> None:
        app: Any = self.app
        result = app.session.invite([draft])[0]
        self.post_message(InvitationSent(result))

    @on(InvitationSent)
    def _sent(self, event: InvitationSent) -> None:
        self._sending = False
        result = event.result
        app: Any = self.app
        app.reload_views()
        out = self.query_one("#invite-result", Static)
        if result.ok:
            message = clean(result.message, max_chars=400) or "The invitation was sent."
            out.update(Text(f"✓ {message}", style="bold"))
            self.notify(message, title="Invitation sent", markup=False)
            self.dismiss(None)
        else:
            lines = [clean(result.message, max_chars=400)]
            lines += [f"✗ {clean(v.message, max_chars=400)}" for v in (result.violations or [])
                      if clean(v.message, max_chars=400) != lines[0]]
            out.update(Text("\n".join(lines)))
            self.notify(lines[0], title="Not sent", severity="error", markup=False)

    def on_worker_state_changed(self, event) -> None:
        if event.worker.group == "invite" and event.state.name in ("ERROR", "CANCELLED"):
            self._sending = False
            self.query_one("#invite-result", Static).update("")

    # -- buttons ----------------------------------------------------------------------------------------------------

    @on(Button.Pressed, "#invite-review")
    def _review_pressed(self) -> None:
        self.action_review()

    @on(Button.Pressed, "#invite-bulk")
    def action_bulk(self) -> None:
        app: Any = self.app
        self.dismiss(None)
        app.action_bulk_invitation()

    @on(Button.Pressed, "#invite-close")
    def action_close(self) -> None:
        self.dismiss(None)


def _who(app: Any) -> str:
    ident = app.identity
    return clean(ident.customer_name) if ident is not None else "your agency"


def _consequence(draft: ClientLink, app: Any) -> str:
    """The billing consequence and the timing of an invitation, in sentences."""
    agency = _who(app)
    if draft.link_type == LinkType.CustomerLink:
        perm = draft.customer_link_permission or "the chosen"
        text = (f"{agency} will get {perm} access to every account of the client customer once the client "
                "accepts. " + billing_consequence(None))
    else:
        text = billing_consequence(draft.is_bill_to_client, agency=agency)
    start = f" The link starts on {date(draft.start_date)}." if draft.start_date else ""
    email = " The client is not emailed." if draft.suppress_notification else " The client is emailed."
    return (text + start + email + " The client has 30 days to accept; acceptance is possible 6 hours after the "
            "invitation is sent.")


def _summary(draft: ClientLink, app: Any) -> Text:
    """Who invites whom, as the summary step shows it (client text literal)."""
    cache = app.cache
    what = "customer" if draft.link_type == LinkType.CustomerLink else "account"
    ident = draft.client_entity_id if draft.client_entity_id is not None else draft.client_entity_number
    name = None
    if cache is not None and isinstance(draft.client_entity_id, int):
        found = cache.account(draft.client_entity_id) if what == "account" else cache.customer(draft.client_entity_id)
        name = found.name if found is not None else None
        if not name:  # not visible to the agency (yet): an earlier link still names it
            earlier = [lk for lk in cache.links_for_entity(draft.client_entity_id) if lk.client_entity_name]
            name = earlier[0].client_entity_name if earlier else None
    out = Text()
    out.append(f"{_who(app)} invites the client {what} ", style="")
    if name:
        out.append(clean(name, max_chars=120), style="bold")
        out.append(f" ({clean(ident, max_chars=40)})")
    else:
        out.append(clean(ident, max_chars=40), style="bold")
    if draft.name:
        out.append("\nName: ")
        out.append(clean(draft.name, max_chars=60))
    if draft.note:
        out.append("\nNote: ")
        out.append(clean(draft.note, max_chars=300))
    return out
