"""The clients tree: the agency's users and the accounts each reaches; client customers and their accounts.

Children are read from the cache only when a node is first expanded, one page at a time, by a thread worker (a
"loading…" leaf shows meanwhile): a "… more" leaf at the end of a page loads the next one. Expanding a customer
with 20,000 accounts therefore reads and draws 100 of them, and no keystroke waits for the database.

Expanding or collapsing costs what is on screen, not what the tree holds: a page of children is added as one
change (Textual redraws the tree after each node added), label widths are measured once per node, and a change in
the tree's scrollable size updates its scrollbars without laying out the whole screen.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterator

from rich.style import Style
from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import Reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from linkdesk.core import rules
from linkdesk.core.model import ClientLinkStatus, LinkKey, LinkType

from .. import palette
from ..text import bill_to_text, clean, days_left_text

PAGE = 100


@dataclass(frozen=True)
class NodeRef:
    """What a tree node stands for.

    ``kind``: ``agency``, ``user``, ``clients`` (the folder of client customers), ``customer``, ``account`` or
    ``more`` (loads the next page of ``list_kind`` under its parent). ``item`` is the cache row (TreeUser,
    TreeCustomer, TreeAccount, Customer).
    """

    kind: str
    id: int | None = None
    item: Any = None
    list_kind: str = ""
    offset: int = 0

    @property
    def link_key(self) -> LinkKey | None:
        """The account link shown on an account node (None when the account has no link with the agency)."""
        if self.kind == "account" and self.item is not None and self.item.link_status is not None:
            via = self.item.via_customer_id
            if via is not None:
                return LinkKey(self.item.account_id, via, LinkType.AccountLink)
        return None


class ClientsTree(Tree[NodeRef]):
    """The hierarchy, read lazily from the cache. ``load`` (re)builds the top level."""

    class PageRead(Message):
        """A page of children arrived from the worker (internal)."""

        def __init__(self, generation: int, node_id: int, list_kind: str, offset: int, items: list[Any],
                     total: int) -> None:
            super().__init__()
            self.generation = generation
            self.node_id = node_id
            self.list_kind = list_kind
            self.offset = offset
            self.items = items
            self.total = total

    #: Textual lays out the whole screen when a tree's scrollable size changes, that is on every expand and
    #: collapse. This tree's own size never depends on it (the view's CSS sizes it), so only its scrollbars are
    #: updated (``watch_virtual_size``); a scrollbar that appears or goes still lays out the screen.
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    BINDINGS = [
        Binding("k", "cursor_up", "Up", show=False, id="tree.up"),
        Binding("j", "cursor_down", "Down", show=False, id="tree.down"),
        Binding("l,right", "expand", "Expand", show=False, id="tree.expand"),
        Binding("h,left", "collapse", "Collapse", show=False, id="tree.collapse"),
    ]

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        # Set before Tree's constructor, which already measures and invalidates.
        self._label_widths: dict[int, int] = {}  # node id -> label cells (labels never change once added)
        self._batch_depth = 0
        self._batch_dirty = False
        super().__init__(Text("linkdesk"), id=id)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = False
        self._clock = clock
        self._caches: Callable[[], Any] | None = None
        self._agency_id: int | None = None
        self._generation = 0
        self._loaded: set[int] = set()
        #: After a reload: nodes to open again, and the node the cursor was on, as they load.
        self._reopen_refs: set[tuple[str, int | None]] = set()
        self._cursor_ref: tuple[str, int | None] | None = None

    # -- cost: redraw once per change, measure each label once ------------------------------------------------------

    def _invalidate(self) -> None:
        """Textual's, without the screen layout (see ``virtual_size``) and deferred to the end of a batch."""
        if self._batch_depth:
            self._batch_dirty = True
            return
        self._clear_line_cache()
        self._updates += 1
        self.root._reset()
        self.refresh()

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Nodes added or removed inside are one change: the tree's lines are rebuilt and drawn once, after."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._batch_dirty:
                self._batch_dirty = False
                self._invalidate()

    def watch_virtual_size(self, size: Size) -> None:
        self._scroll_update(size)

    def get_label_width(self, node: TreeNode[NodeRef]) -> int:
        # Textual renders every label of the tree to measure it after each expand or collapse; a label is set once
        # (its expand icon has the same width open or closed), so its width is too.
        width = self._label_widths.get(node.id)
        if width is None:
            width = self._label_widths[node.id] = super().get_label_width(node)
        return width

    @property
    def reading(self) -> bool:
        """Whether a page of children is still being read. (Not ``loading``: to Textual a loading widget is disabled
        — it cannot take focus and its keys are ignored — while this tree stays usable as its pages arrive.)"""

        def walk(node: TreeNode[NodeRef]) -> bool:
            return any((c.data is not None and c.data.kind == "loading") or walk(c) for c in node.children)

        return walk(self.root)

    # Client text must never be parsed as markup, even if a str slips through.
    def process_label(self, label: str | Text) -> Text:
        text = label if isinstance(label, Text) else Text(clean(label))
        return text.split()[0] if "\n" in text.plain else text

    # -- building -----------------------------------------------------------------------------------------------

    def load(self, caches: Callable[[], Any] | None, agency_customer_id: int | None) -> None:
        """Show the hierarchy of ``agency_customer_id`` from ``cache``; after a reload, nodes that were open open
        again and the cursor goes back to the node it was on, as their pages load."""
        first = not self.root.children
        self._reopen_refs = self._open_refs()
        cursor = self.cursor_node
        self._cursor_ref = (cursor.data.kind, cursor.data.id) if cursor is not None and cursor.data else None
        self._caches = caches
        self._agency_id = agency_customer_id
        self._generation += 1
        self._loaded.clear()
        self.clear()
        self._label_widths.clear()  # node ids start again after clear()
        if caches is None or agency_customer_id is None:
            return
        cache = caches()
        agency = cache.customer(agency_customer_id)
        users = cache.agency_users(agency_customer_id)
        n_clients = cache.client_customers_count(agency_customer_id)
        with self._batch():
            self._add(self.root, self._agency_label(agency, agency_customer_id, len(users)),
                      NodeRef("agency", agency_customer_id, agency), expand_default=first)
            self._add(self.root, Text.assemble(("Client customers", "bold"), (f"  {n_clients:,}", "dim")),
                      NodeRef("clients", agency_customer_id), expand_default=first)

    def _add(self, parent: TreeNode[NodeRef], label: Text, ref: NodeRef, *, leaf: bool = False,
             allow_expand: bool = True, expand_default: bool = False) -> TreeNode[NodeRef]:
        if leaf:
            node = parent.add_leaf(label, ref)
        else:
            node = parent.add(label, ref, allow_expand=allow_expand)
            if expand_default or (ref.kind, ref.id) in self._reopen_refs:
                node.expand()
        if self._cursor_ref is not None and (ref.kind, ref.id) == self._cursor_ref:
            self._cursor_ref = None
            self.call_after_refresh(self._restore_cursor, node, self._generation)
        return node

    def _restore_cursor(self, node: TreeNode[NodeRef], generation: int) -> None:
        """Put the cursor back on ``node`` after a reload, by its line in the tree as it is now."""
        if generation != self._generation:
            return  # rebuilt again meanwhile
        # A node's line is known once the tree's lines are rebuilt, which Textual does lazily: pages added since the
        # last draw would otherwise leave the cursor on the line the node had before them, i.e. another node.
        self._tree_lines  # noqa: B018 - the property rebuilds the lines when they are stale
        if node._line >= 0:
            line = self.cursor_line
            self.move_cursor(node, animate=False)
            if self.cursor_line == line:
                # The same line, but a new node read from the cache as it is now: Textual announces no highlight
                # for an unchanged line, and the detail pane would go on describing the node as it was.
                self.post_message(Tree.NodeHighlighted(node))

    def _open_refs(self) -> set[tuple[str, int | None]]:
        found: set[tuple[str, int | None]] = set()

        def walk(node: TreeNode[NodeRef]) -> None:
            for child in node.children:
                if child.is_expanded and child.data is not None:
                    found.add((child.data.kind, child.data.id))
                    walk(child)

        walk(self.root)
        return found

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded[NodeRef]) -> None:
        node = event.node
        if node.id in self._loaded or node.data is None:
            return
        self._loaded.add(node.id)
        kind = {"agency": "users", "user": "user_accounts", "clients": "customers",
                "customer": "customer_accounts"}.get(node.data.kind)
        if kind:
            self._load_page(node, kind, 0)

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[NodeRef]) -> None:
        node = event.node
        if node.data is not None and node.data.kind == "more":
            event.stop()
            parent = node.parent
            ref = node.data
            node.remove()
            if parent is not None:
                self._load_page(parent, ref.list_kind, ref.offset)
        elif node.allow_expand:
            node.toggle()

    def _fetch(self, cache: Any, ref: NodeRef, list_kind: str, offset: int) -> tuple[list[Any], int]:
        if list_kind == "users":
            users = cache.agency_users(ref.id)
            return users[offset:offset + PAGE], len(users)
        if list_kind == "user_accounts":
            return cache.user_accounts(ref.id, offset, PAGE), cache.user_accounts_count(ref.id)
        if list_kind == "customers":
            return cache.client_customers(ref.id, offset, PAGE), cache.client_customers_count(ref.id)
        if list_kind == "customer_accounts":
            return (cache.customer_accounts(ref.id, agency_customer_id=self._agency_id, offset=offset, limit=PAGE),
                    cache.customer_accounts_count(ref.id, agency_customer_id=self._agency_id))
        return [], 0

    def _load_page(self, parent: TreeNode[NodeRef], list_kind: str, offset: int) -> None:
        """Read a page of ``parent``'s children in a worker; a "loading…" leaf stands in for them meanwhile."""
        if self._caches is None or parent.data is None:
            return
        parent.add_leaf(Text("loading…", style="italic dim"), NodeRef("loading", parent.data.id))
        caches, ref, generation, node_id = self._caches, parent.data, self._generation, parent.id

        def read() -> None:
            items, total = self._fetch(caches(), ref, list_kind, offset)
            self.post_message(self.PageRead(generation, node_id, list_kind, offset, items, total))

        self.run_worker(read, thread=True, group="tree-pages", exit_on_error=False, name="read tree children")

    @on(PageRead)
    def _page_read(self, event: PageRead) -> None:
        event.stop()
        if event.generation != self._generation:
            return  # the tree was rebuilt meanwhile
        try:
            parent = self.get_node_by_id(event.node_id)
        except Exception:  # the node is gone (collapsed and rebuilt)
            return
        with self._batch():
            for child in list(parent.children):
                if child.data is not None and child.data.kind == "loading":
                    child.remove()
            self._add_items(parent, event.list_kind, event.offset, event.items, event.total)

    def _add_items(self, parent: TreeNode[NodeRef], list_kind: str, offset: int, items: list[Any],
                   total: int) -> None:
        now = self._clock()
        for item in items:
            if list_kind == "users":
                self._add(parent, self._user_label(item), NodeRef("user", item.user_id, item),
                          allow_expand=item.account_count > 0)
            elif list_kind == "customers":
                self._add(parent, self._customer_label(item), NodeRef("customer", item.customer_id, item))
            else:
                self._add(parent, self._account_label(item, now), NodeRef("account", item.account_id, item),
                          leaf=True)
        shown = offset + len(items)
        if shown < total:
            parent.add_leaf(Text(f"… {total - shown:,} more — enter shows {min(PAGE, total - shown):,} more",
                                 style="italic dim"),
                            NodeRef("more", parent.data.id if parent.data else None, list_kind=list_kind,
                                    offset=shown))

    # -- labels ---------------------------------------------------------------------------------------------------

    def _styles(self):
        return palette.styles(self.app)

    def _agency_label(self, agency: Any, agency_id: int, users: int) -> Text:
        name = clean(agency.name) if agency is not None and agency.name else f"Customer {agency_id}"
        return Text.assemble((name, "bold"), ("  your agency · ", "dim"), (f"{users} users", "dim"))

    def _user_label(self, user: Any) -> Text:
        role = user.role.label if user.role is not None else "no role"
        return Text.assemble(
            clean(user.display_name or user.user_name, max_chars=80), " ",
            (f" {role} ", self._styles()["badge"] + Style(reverse=True)),
            (f"  {user.account_count:,} account{'s' if user.account_count != 1 else ''}", "dim"),
        )

    def _customer_label(self, customer: Any) -> Text:
        name = clean(customer.name, max_chars=80) if customer.name else (
            "Client not known yet" if customer.customer_id is None else f"Customer {customer.customer_id}")
        out = Text.assemble(name)
        if customer.number:
            out.append(f"  {clean(customer.number, max_chars=20)}", style="dim")
        out.append(f"  {customer.link_count:,} link{'s' if customer.link_count != 1 else ''}", style="dim")
        if customer.customer_link_status is not None:
            status = clean(customer.customer_link_status, max_chars=40)
            out.append("  customer link ", style="dim")
            out.append(status, style=self._styles()[palette.status_stage(customer.customer_link_status)])
        return out

    def _account_label(self, account: Any, now: datetime) -> Text:
        styles = self._styles()
        name = clean(account.name, max_chars=80) if account.name else f"Account {account.account_id}"
        out = Text.assemble(name)
        if account.number:
            out.append(f"  {clean(account.number, max_chars=20)}", style="dim")
        status = account.link_status
        if status is None:
            out.append("  not linked", style="dim")
            return out
        out.append("  ")
        days = rules.days_left(account.invited_at, now) if status == ClientLinkStatus.LinkPending else None
        klass = palette.status_stage(status)
        if days is not None and days <= 7:
            klass = "urgent" if days <= 3 else "needs_action"
        out.append(clean(status, max_chars=40), style=styles[klass])
        out.append(f"  bills {bill_to_text(account.is_bill_to_client)}", style="dim")
        if days is not None:
            out.append(f"  {days_left_text(days)} left" if days >= 0 else "  expired", style=styles[klass])
        return out

    # -- keys -----------------------------------------------------------------------------------------------------

    def action_expand(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()
        elif node is not None and node.children:
            self.move_cursor(node.children[0])

    def action_collapse(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)
