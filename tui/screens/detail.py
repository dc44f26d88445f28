"""Link detail: every field, what can be done now and by whom, why the link waits, and its timeline."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from linkdesk.core import rules
from linkdesk.core.model import CLIENT_LINK_WIRE, Actor, ClientLink, LinkKey, LinkType, Party, Role

from .. import palette
from ..messages import LinkActionRequested
from ..source import LinkContext, link_context
from ..text import clean, days_left_text, join, link_billing, when
from ..widgets.status_line import StatusLine
from .inbox import ACTION_BINDINGS, ACTION_KEYS

#: Who might act on a link, as the rules are asked about them ("by whom").
_AGENCY_ROLES = (Role.SuperAdmin, Role.Standard, Role.AdvertiserCampaignManager, Role.Viewer)


def field_value(value: Any) -> Text:
    """A ClientLink field for people; client text literal."""
    if value is None or value == "" or value == ():
        return Text("—", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, datetime):
        return Text(when(value))
    if isinstance(value, Enum):
        return Text(str(value.value))
    if isinstance(value, tuple):
        return Text(", ".join(f"{clean(k, max_chars=80)}={clean(v, max_chars=200)}" for k, v in value))
    return Text(clean(value, max_chars=1000))


def who_may(link: ClientLink, client_customer_id: int | None, now: datetime,
            invited_at: datetime | None) -> dict[rules.Action, list[str]]:
    """For each action, which kinds of user could take it now (asked of the rules with stand-in users)."""
    out: dict[rules.Action, list[str]] = {a: [] for a in rules.Action}
    candidates: list[tuple[str, Actor, Party]] = []
    if link.managing_customer_id is not None:
        for role in _AGENCY_ROLES:
            candidates.append((f"agency {role.label}", Actor(0, link.managing_customer_id, role,
                                                              link.managing_customer_name or ""), Party.AGENCY))
    if client_customer_id is not None:
        candidates.append(("client Super Admin", Actor(0, client_customer_id, Role.SuperAdmin), Party.CLIENT))
    for label, actor, party in candidates:
        for option in rules.available_actions(link, actor, party, now, invited_at):
            if option.allowed:
                out[option.action].append(label)
    return out


class LinkDetailScreen(Screen[None]):
    """One link, read from the cache; ``reload`` re-reads it after a sync or an action."""

    BINDINGS = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="detail.back"),
        *ACTION_BINDINGS,
    ]

    help_text = ("Link detail", "Every field of the link as the service returned it, why it is waiting (for links "
                 "being linked or unlinked), what you can do now (and why not), who else could act, and its "
                 "timeline: every status change linkdesk observed, by sync or by its own actions.")

    def __init__(self, key: LinkKey) -> None:
        super().__init__()
        self.link_key = key
        self._ctx: LinkContext | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="topbar"):
            yield Static(Text("linkdesk", style="bold"), id="topbar-title")
            yield Static(Text(" Link detail ", style="bold reverse"), id="topbar-views")
        with VerticalScroll(id="detail-body"):
            yield Static(id="detail-title")
            yield Static(id="detail-actions")
            yield Static(Text("Fields", style="bold"), classes="section-title")
            yield Static(id="detail-fields")
            yield Static(Text("Timeline", style="bold"), classes="section-title")
            yield Static(id="detail-timeline")
        yield StatusLine(self.app.now, id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()
        self.query_one("#detail-body").focus()

    def reload(self) -> None:
        app: Any = self.app
        ctx = link_context(app.cache, self.link_key, app.actor, app.now())
        self._ctx = ctx
        if ctx is None:
            self.query_one("#detail-title", Static).update(
                Text("This link is no longer in the cache. Press s to sync, or esc to go back."))
            return
        self._show_title(ctx, app.now())
        self._show_actions(ctx, app.now())
        self._show_fields(ctx.link)
        self._show_timeline(app.cache.timeline(self.link_key))

    def _show_title(self, ctx: LinkContext, now: datetime) -> None:
        link = ctx.link
        styles = palette.styles(self.app)
        stage = ctx.stage.value if ctx.stage else palette.status_stage(link.status)
        out = join((rules.entity_label(link), "bold"))
        if ctx.client_customer_name:
            out.append("  of ", style="dim")
            out.append(clean(ctx.client_customer_name))
        out.append("\nmanaged by ", style="dim")
        out.append(clean(link.managing_customer_name) or str(link.managing_customer_id))
        out.append(f"  ·  {link.link_type.value}", style="dim")
        out.append("\n\n")
        badge = styles.get(stage, styles["muted"]) + Style(reverse=True)
        out.append(f" {clean(link.status, max_chars=40)} ", style=badge)
        out.append("  " + rules.status_text(link.status))
        if ctx.days_left is not None:
            out.append(f"\nExpires {when(rules.expires_at(ctx.invited_at))} "
                       f"({days_left_text(ctx.days_left)} left).", style="italic")
            accept_from = rules.accept_possible_at(ctx.invited_at)
            if accept_from > now:
                out.append(f"\nThe client can accept from {when(accept_from)} (6 hours after the invitation).",
                           style="italic")
        if ctx.waiting:
            out.append("\nWhy it waits: ", style="bold")
            out.append(ctx.waiting)
        if link.link_type == LinkType.AccountLink:
            out.append("\nWho pays: ", style="bold")
            out.append(link_billing(link.is_bill_to_client, link.status in rules.ACTIVE_LIKE,
                                    agency=clean(link.managing_customer_name) or "the agency"))
        self.query_one("#detail-title", Static).update(out)

    def _show_actions(self, ctx: LinkContext, now: datetime) -> None:
        others = who_may(ctx.link, ctx.client_customer_id, now, ctx.invited_at if ctx.days_left is not None else None)
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)
        table.add_column(max_width=24)
        table.add_column(ratio=1)
        # Allowed actions one per line; refused ones grouped when the rules give the same reason.
        groups: list[tuple[list[rules.ActionOption], str | None]] = []
        for option in sorted(ctx.options, key=lambda o: not o.allowed):
            if not option.allowed and groups and not groups[-1][0][0].allowed and groups[-1][1] == option.reason:
                groups[-1][0].append(option)
            else:
                groups.append(([option], option.reason))
        for options, reason in groups:
            allowed = options[0].allowed
            keys = Text(" " + " ".join(ACTION_KEYS[o.action] for o in options) + " ",
                        style="bold reverse" if allowed else "dim")
            label = Text(", ".join(o.action.label for o in options), style="bold" if allowed else "dim")
            if allowed:
                what = Text(rules.ACTION_CONSEQUENCES[options[0].action])
            else:
                what = Text(clean(reason or "Not possible now.", max_chars=500), style="dim")
            who = sorted({w for o in options for w in others.get(o.action) or []})
            if who:
                what.append(f"  (can be done by: {', '.join(who)})", style="italic dim")
            table.add_row(keys, label, what)
        heading = Text("What you can do now", style="bold")
        actor: Any = getattr(self.app, "identity", None)
        if actor is not None:
            heading.append(f"  as {clean(actor.user_name)}, {Role(actor.role).label}", style="dim")
        self.query_one("#detail-actions", Static).update(_stack(heading, table))

    def _show_fields(self, link: ClientLink) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(ratio=1)
        for attr, wire in CLIENT_LINK_WIRE.items():
            table.add_row(Text(wire), field_value(getattr(link, attr)))
        self.query_one("#detail-fields", Static).update(table)

    def _show_timeline(self, events: list[Any]) -> None:
        if not events:
            self.query_one("#detail-timeline", Static).update(
                Text("No events recorded yet: the timeline starts with the first sync that sees the link.",
                     style="italic dim"))
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, style="dim")
        table.add_column(no_wrap=True)
        table.add_column(ratio=1)
        for e in events:
            if e.kind == "change":
                if e.from_status is None:
                    what = Text(f"first seen in {clean(e.to_status, max_chars=40)}")
                elif e.to_status is None:
                    what = Text(f"no longer returned by the service (was {clean(e.from_status, max_chars=40)})")
                else:
                    what = Text(f"{clean(e.from_status, max_chars=40)} → {clean(e.to_status, max_chars=40)}")
            elif e.kind == "intent":
                what = Text(f"asked for {clean(e.to_status, max_chars=40) or 'a change'}")
            elif e.kind == "outcome":
                what = Text(f"answer: {clean(e.to_status, max_chars=40) or 'refused'}")
            else:
                what = Text("note")
            source = clean(e.source, max_chars=60)
            if e.actor_user_id:
                source += f", user {e.actor_user_id}"
            what.append(f"  ({source})", style="dim")
            if e.detail and not (e.kind == "change" and e.detail.strip().lower() == "first seen"):
                what.append("  ")
                what.append(clean(e.detail, max_chars=400), style="italic")
            table.add_row(Text(when(e.at)), Text(e.kind), what)
        self.query_one("#detail-timeline", Static).update(table)

    def action_link_action(self, name: str) -> None:
        self.post_message(LinkActionRequested(rules.Action(name), self.link_key))


def _stack(*parts: Any) -> Any:
    from rich.console import Group

    return Group(*parts)
