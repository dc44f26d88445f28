"""The clients tree screen: the hierarchy on the left, the selected node's details on the right."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static, Tree

from linkdesk.core import rules
from linkdesk.core.model import Actor, ClientLink, ClientLinkStatus, LinkKey, LinkType

from .. import palette
from ..messages import InviteRequested, LinkActionRequested, OpenLink
from ..text import bill_to_text, clean, date, days_left_text, link_billing
from ..widgets.clients_tree import ClientsTree, NodeRef
from .inbox import ACTION_BINDINGS


class ClientsView(Horizontal):
    """The tree and a detail pane that follows the cursor."""

    BINDINGS = [
        Binding("n", "invite", "Invite", id="clients.invite", tooltip="Invite the selected account (or any)"),
        Binding("d", "open_link", "Link detail", id="clients.open_link",
                tooltip="Open the link of the selected account or customer"),
        *ACTION_BINDINGS,
    ]

    HELP = ("The clients tree shows your agency and its users, each with their role and the accounts they can "
            "reach, and every client customer your agency has links with, each account with the status of its "
            "link, who pays, and the days left for a pending invitation. Children are read from the cache when "
            "you open a node, a page at a time; '… more' at the end of a page shows the next one. The pane on the "
            "right describes the selected node. Enter opens an account's link; n invites the selected account.")

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._caches: Callable[[], Any] | None = None
        self._actor: Actor | None = None
        # Made here rather than in compose: the view is built when it is first shown (see MainScreen.clients) and
        # given its data at once, before it is mounted.
        self._tree = ClientsTree(clock, id="clients-tree")
        self._detail = Static(id="clients-detail")

    def compose(self) -> ComposeResult:
        yield self._tree
        with VerticalScroll(id="clients-detail-pane"):
            yield self._detail

    def on_mount(self) -> None:
        # A load before the mount left the cursor to now: placing it measures the tree's lines.
        self.call_after_refresh(self._cursor_to_first)

    @property
    def tree(self) -> ClientsTree:
        return self._tree

    def load(self, caches: Callable[[], Any] | None, actor: Actor | None) -> None:
        """Show the hierarchy of the acting user's customer (first frame, identity switch, after a sync).
        ``caches`` returns a cache for the calling thread (the tree reads its pages in workers)."""
        self._caches = caches
        self._actor = actor
        self.tree.load(caches, actor.customer_id if actor else None)
        if actor is None:
            self._detail.update(Text("Waiting for the session to know who you are…", style="italic"))
        elif self.is_mounted:
            self._cursor_to_first()

    def _cursor_to_first(self) -> None:
        if self._actor is not None and self.tree.cursor_line < 0 and self.tree.root.children:
            self.tree.cursor_line = 0

    def reload(self) -> None:
        self.load(self._caches, self._actor)

    # -- selection ------------------------------------------------------------------------------------------------

    def _link_key(self, ref: NodeRef | None) -> LinkKey | None:
        if ref is None or self._actor is None:
            return None
        if ref.kind == "account":
            return ref.link_key
        if ref.kind == "customer" and ref.item is not None and ref.item.customer_link_status is not None \
                and ref.item.customer_id is not None:
            return LinkKey(ref.item.customer_id, self._actor.customer_id, LinkType.CustomerLink)
        return None

    @property
    def selected(self) -> NodeRef | None:
        node = self.tree.cursor_node
        return node.data if node is not None else None

    @on(Tree.NodeHighlighted, "#clients-tree")
    def _highlighted(self, event: Tree.NodeHighlighted[NodeRef]) -> None:
        self._detail.update(self._describe(event.node.data))

    @on(Tree.NodeSelected, "#clients-tree")
    def _chosen(self, event: Tree.NodeSelected[NodeRef]) -> None:
        """Enter on an account opens its link (or the form to invite it); on other nodes it opens or closes them."""
        ref = event.node.data
        if ref is None or ref.kind != "account":
            return
        if self._link_key(ref) is not None:
            self.action_open_link()
        else:
            self.action_invite()

    def action_open_link(self) -> None:
        key = self._link_key(self.selected)
        if key is None:
            self.notify("The selected node has no link with your agency.", severity="warning")
            return
        self.post_message(OpenLink(key))

    def action_invite(self) -> None:
        ref = self.selected
        draft = None
        if ref is not None and ref.kind == "account" and ref.item is not None:
            draft = ClientLink(client_entity_id=ref.item.account_id)
        self.post_message(InviteRequested(draft))

    def action_link_action(self, name: str) -> None:
        key = self._link_key(self.selected)
        if key is None:
            self.notify("Select an account (or a customer) that has a link with your agency first.",
                        severity="warning")
            return
        self.post_message(LinkActionRequested(rules.Action(name), key))

    # -- the detail pane --------------------------------------------------------------------------------------------

    def _describe(self, ref: NodeRef | None) -> Any:
        """The detail pane for a node: a title, a grid of fields, then sentences (all client text literal)."""
        if ref is None or self._caches is None:
            return Text("")
        cache = self._caches()
        styles = palette.styles(self.app)
        now = self._clock()
        parts: list[Any] = []
        out = Text()
        grid: Table | None = None

        def field(label: str, value: Text | str) -> None:
            nonlocal grid, out
            if grid is None:
                parts.append(out)
                grid = Table.grid(padding=(0, 1))
                grid.add_column(style="dim", no_wrap=True, width=13)
                grid.add_column(ratio=1)
                parts.append(grid)
                out = Text()
            grid.add_row(Text(label), value if isinstance(value, Text) else Text(value))

        if ref.kind == "agency":
            customer = ref.item
            out.append(clean(customer.name if customer else f"Customer {ref.id}"), style="bold")
            out.append("\nYour agency\n")
            field("Customer id", str(ref.id))
            if customer is not None and customer.number:
                field("Number", clean(customer.number))
            field("Users", str(len(cache.agency_users(ref.id))))
            field("Clients", f"{cache.client_customers_count(ref.id):,}")
            out.append("\nOpen the agency to see its users and the accounts each can reach.", style="italic")
        elif ref.kind == "user":
            item = ref.item
            out.append(clean(item.display_name or item.user_name), style="bold")
            out.append("\n")
            field("User name", clean(item.user_name))
            field("User id", str(item.user_id))
            field("Role", item.role.label if item.role else "none")
            user = cache.user(item.user_id)
            if user is not None and user.email:
                field("Email", clean(user.email))
            field("Reaches", f"{item.account_count:,} account{'s' if item.account_count != 1 else ''}")
            out.append("\n")
            if item.role is not None and self._actor is not None:
                actor = Actor(item.user_id, self._actor.customer_id, item.role, self._actor.customer_name)
                refusal = rules.may_send_invitation(actor, LinkType.AccountLink)
                out.append(refusal or "Can send account invitations, cancel them and request unlinks.",
                           style="italic")
        elif ref.kind == "clients":
            out.append("Client customers", style="bold")
            out.append("\n\nEvery customer your agency has a link with: account links to its accounts, or a "
                       "customer-level link.\n")
        elif ref.kind == "customer":
            item = ref.item
            out.append(clean(item.name) if item.name else "Client not known yet", style="bold")
            out.append("\n")
            if item.customer_id is not None:
                field("Customer id", str(item.customer_id))
            if item.number:
                field("Number", clean(item.number))
            field("Links", f"{item.link_count:,}")
            if item.customer_link_status is not None:
                field("Customer link", Text(clean(item.customer_link_status),
                                            style=styles[palette.status_stage(item.customer_link_status)]))
                out.append("\nd opens the customer-level link.", style="italic")
        elif ref.kind == "account":
            item = ref.item
            out.append(clean(item.name) if item.name else f"Account {item.account_id}", style="bold")
            out.append("\n")
            field("Account id", str(item.account_id))
            if item.number:
                field("Number", clean(item.number))
            if item.parent_customer_id is not None:
                parent = cache.customer(item.parent_customer_id)
                field("Owner", clean(parent.name) if parent and parent.name else str(item.parent_customer_id))
            status = item.link_status
            if status is None:
                field("Link", "none with your agency")
                out.append("\nEnter or n invites this account.", style="italic")
            else:
                field("Link", Text.assemble((clean(status), styles[palette.status_stage(status)]), "\n",
                                            rules.status_text(status)))
                field("Bill to", bill_to_text(item.is_bill_to_client))
                if status == ClientLinkStatus.LinkPending and item.invited_at is not None:
                    field("Invited", date(item.invited_at))
                    field("Days left", days_left_text(rules.days_left(item.invited_at, now)) or "—")
                out.append("\n")
                agency = clean(self._actor.customer_name) if self._actor and self._actor.customer_name \
                    else "your agency"
                out.append(link_billing(item.is_bill_to_client, status in rules.ACTIVE_LIKE, agency=agency),
                           style="italic")
                out.append("\n\nEnter opens the link's details, timeline and actions.", style="italic")
        elif ref.kind == "more":
            out.append("Enter shows the next page.", style="italic")
        parts.append(out)
        return Group(*parts)
