"""The link inbox: sent and received links by lifecycle stage, filtered and sorted, over cache pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from linkdesk.core import rules
from linkdesk.core.model import Actor, LinkType, Party, Perspective, Stage

from ..messages import LinkActionRequested, OpenLink
from ..source import SORTS, InboxLine, InboxQuery, InboxSource, LinkContext, link_context, stage_counts
from ..text import bill_to_text, clean, days_left_text, join, short_count, short_date, short_span, utc
from ..widgets.link_list import PAGE_SIZE, Cell, Column, ColumnHeader, LinkList
from ..widgets.stage_bar import StageBar

COLUMNS: tuple[Column, ...] = (
    Column("counterparty", "Client", 10, flex=2),
    Column("client", "Account / customer", 14, flex=3),
    Column("type", "Type", 8),
    Column("status", "Status", 16),
    Column("bill_to", "Bill to", 7),
    Column("age", "Age", 4, align="right"),
    Column("days_left", "Left", 7, align="right"),
    Column("last_change", "Last change", 13),
)

FILTER_PLACEHOLDER = "Filter by client, account, number or status — enter keeps it, esc clears"

#: Seconds the filter waits after the last keystroke before it queries (typing "contoso" runs one query, not 7).
FILTER_DEBOUNCE = 0.15

#: Seconds for which the stage bar's counts of one side and filter are reused when only the stage or the sort
#: changes (a stage switch then reads one page, not the counts again). A sync or an action re-reads them at once.
COUNTS_REUSE = 60.0

STAGE_ORDER: tuple[Stage | None, ...] = (
    Stage.NEEDS_ACTION, Stage.PENDING, Stage.IN_PROGRESS, Stage.ACTIVE, Stage.ENDED, None,
)

#: Keys of the link actions, shared by the inbox, the tree and the detail screen.
ACTION_KEYS: dict[rules.Action, str] = {
    rules.Action.CANCEL: "c",
    rules.Action.UNLINK: "u",
    rules.Action.REINVITE: "r",
    rules.Action.ACCEPT: "a",
    rules.Action.DECLINE: "x",
}

ACTION_BINDINGS = [
    Binding("c", "link_action('cancel')", "Cancel invitation", show=False, id="link.cancel"),
    Binding("u", "link_action('unlink')", "Request unlink", show=False, id="link.unlink"),
    Binding("r", "link_action('reinvite')", "Re-invite", show=False, id="link.reinvite"),
    Binding("a", "link_action('accept')", "Accept invitation", show=False, id="link.accept"),
    Binding("x", "link_action('decline')", "Decline invitation", show=False, id="link.decline"),
]


def _stage_label(stage: Stage | None, count: int | None) -> Text:
    name = stage.label if stage else "All"
    return Text(name if count is None else f"{name} {short_count(count)}")


def row_cells(line: InboxLine, now: datetime) -> Sequence[Cell]:
    """The cells of one inbox line; client text cleaned, never markup."""
    row = line.row
    stage = row.stage.value if isinstance(row.stage, Stage) else str(row.stage or "")
    days = line.days_left
    urgent = days is not None and days <= 3 and stage == Stage.NEEDS_ACTION.value
    status_class = "urgent" if urgent else stage
    entity = clean(row.client_entity_name, max_chars=200)
    number = clean(row.client_entity_number or row.key.client_entity_id, max_chars=40)
    account = f"{entity} {number}".strip() if entity else number
    started = row.invited_at or row.last_modified
    return (
        (clean(line.counterparty, max_chars=200) or "—", ""),
        (account, ""),
        ("customer" if row.key.type == LinkType.CustomerLink else "account", "dim"),
        (clean(row.status, max_chars=40) or "—", status_class),
        (bill_to_text(row.is_bill_to_client) if row.key.type != LinkType.CustomerLink else "—", "dim"),
        (short_span(utc(now) - utc(started)) if started else "", "dim"),
        (days_left_text(days), status_class if days is not None else "dim"),
        (short_date(row.last_modified, now), "dim"),
    )


_AGENCY_FIRST = (rules.Action.CANCEL, rules.Action.UNLINK, rules.Action.REINVITE, rules.Action.ACCEPT,
                 rules.Action.DECLINE)
_CLIENT_FIRST = (rules.Action.ACCEPT, rules.Action.DECLINE, rules.Action.CANCEL, rules.Action.UNLINK,
                 rules.Action.REINVITE)


def action_summary(ctx: LinkContext) -> Text:
    """'a Accept · x Decline' for allowed actions, then the first refusal in words (the preview line)."""
    out = Text()
    allowed = [o for o in ctx.options if o.allowed]
    for i, option in enumerate(allowed):
        if i:
            out.append(" · ", style="dim")
        out.append(ACTION_KEYS[option.action], style="bold reverse")
        out.append(f" {option.action.label}")
    if not allowed:
        # Explain the refusal of what this side would normally do: the agency cancels, unlinks or re-invites; the
        # client accepts or declines.
        order = _CLIENT_FIRST if ctx.party == Party.CLIENT else _AGENCY_FIRST
        refused = sorted((o for o in ctx.options if not o.allowed and o.reason),
                         key=lambda o: order.index(o.action))
        out.append("Nothing to do now", style="bold")
        if refused:
            out.append(": ")
            out.append(refused[0].reason or "")
    return out


class InboxView(Vertical):
    """The stage bar with counts, an optional filter, the column header, the virtual list and a preview of the row."""

    BINDINGS = [
        Binding("slash", "filter", "Filter", id="inbox.filter"),
        Binding("escape", "close_filter", "Clear filter", show=False, id="inbox.close_filter"),
        Binding("right_square_bracket,l", "next_stage", "Next stage", id="inbox.next_stage"),
        Binding("left_square_bracket,h", "previous_stage", "Previous stage", show=False, id="inbox.previous_stage"),
        Binding("t", "toggle_side", "Sent/received", show=False, id="inbox.toggle_side"),
        Binding("o", "sort", "Sort", id="inbox.sort"),
        Binding("O", "reverse_sort", "Reverse sort", show=False, id="inbox.reverse_sort"),
        *ACTION_BINDINGS,
    ]

    HELP = ("The link inbox lists every client link your customer sent (as the agency) or received (as the client), "
            "grouped by lifecycle stage: Needs action (invitations you received, and your invitations that expire "
            "within 7 days), Pending, In progress (accepted, linking or unlinking), Active and Ended. Columns: the "
            "client customer, the account or customer linked, the link type, the status, who pays, the age of the "
            "link, days left before a pending invitation expires, and the last change. The line under the list "
            "says what the selected link is waiting for and what you can do with it now.")

    class Queried(Message):
        """A query of the inbox finished in the background (internal)."""

        def __init__(self, generation: int, counts: dict[Stage, int], source: InboxSource, count: int,
                     pages: dict[int, Sequence[Any]], keep_cursor: bool, now: datetime) -> None:
            super().__init__()
            self.now = now
            self.generation = generation
            self.counts = counts
            self.source = source
            self.count = count
            self.pages = pages
            self.keep_cursor = keep_cursor

    class PreviewRead(Message):
        """What the rules say about the row under the cursor, read in the background (internal)."""

        def __init__(self, generation: int, ctx: LinkContext | None) -> None:
            super().__init__()
            self.generation = generation
            self.ctx = ctx

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._preview_generation = 0  # one per cursor move; a preview read for an older one is not shown
        self._preview_key: Any = None
        self._preview_reading = False
        self._caches: Callable[[], Any] | None = None
        self._generation = 0
        self._shown = 0  # the generation whose rows are on screen
        self._debounce: Timer | None = None
        self._actor: Actor | None = None
        self._query: InboxQuery | None = None
        self._link_ctx: LinkContext | None = None
        #: The stage bar's counts: ((customer, side, filter), the time they were read for, counts).
        self._counts: tuple[tuple[Any, ...], datetime, dict[Stage, int]] | None = None
        #: What the bar and the header show, so that a stage switch does not redraw (and re-lay out) them.
        self._bar_shown: tuple[Any, ...] | None = None
        self._rows_now: datetime | None = None  # the time the rows on screen were read for
        #: The filter's field, built when the filter is first opened: hidden until then, the first frame does
        #: without it (an Input is one of the costlier widgets to style and mount).
        self._filter: Input | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="inbox-bar"):
            yield Static(id="inbox-side")
            yield StageBar(((s, _stage_label(s, None)) for s in STAGE_ORDER), id="inbox-stages")
            yield Static(id="inbox-sort")
        # The filter's field (#inbox-filter) joins them under the bar when the filter is first opened (/).
        yield ColumnHeader(COLUMNS, id="inbox-header")
        yield LinkList(COLUMNS, self._cells, empty_text="No links here.", background=True, id="inbox-list")
        yield Static(id="inbox-preview")

    # -- public -------------------------------------------------------------------------------------------------

    @property
    def link_list(self) -> LinkList:
        return self.query_one("#inbox-list", LinkList)

    @property
    def query_state(self) -> InboxQuery | None:
        return self._query

    @property
    def settled(self) -> bool:
        """Whether the rows on screen are those of the current query (no query waiting or running)."""
        return self._query is None or self._shown == self._generation

    def load(self, caches: Callable[[], Any], actor: Actor | None, *, side: Perspective | None = None,
             at_once: bool = False) -> None:
        """Show the inbox of ``actor``'s customer (first frame, identity switch). ``caches`` returns a cache for
        the calling thread: the main thread draws, worker threads run the queries.

        ``at_once`` reads the first page on the calling thread, now (start-up: the first frame then shows rows, and
        no second frame is needed for them; nothing waits for keys yet)."""
        self._caches = caches
        self._actor = actor
        if actor is None:
            self._query = None
            self.link_list.empty_text = "Waiting for the session to know who you are…"
            self.link_list.set_source(None)
            return
        old = self._query
        perspective = side or (old.perspective if old and old.customer_id == actor.customer_id else Perspective.SENT)
        stage = old.stage if old else Stage.NEEDS_ACTION
        self._query = InboxQuery(actor.customer_id, perspective, stage, old.text if old else "",
                                 old.sort if old else "last_change", old.descending if old else True)
        self._apply(keep_cursor=False, at_once=at_once)

    def reload(self) -> None:
        """Re-read the cache after a sync or an action, keeping stage, filter and cursor."""
        self._counts = None  # the links changed: count them again
        if self._query is not None:
            self._apply(keep_cursor=True)

    # -- querying (in a worker: a keystroke never waits for the database) --------------------------------------

    def _cells(self, row: Any) -> Sequence[Cell]:
        # The time the rows were read for (their days left were computed for it too), not the clock: the demo's
        # clock is a database read, and a page of fresh lines would pay it once per line.
        return row_cells(row, self._rows_now or self._clock())

    def _apply(self, *, keep_cursor: bool, delay: float = 0.0, at_once: bool = False) -> None:
        """Show the query's labels now and start reading its rows; ``delay`` debounces typing in the filter;
        ``at_once`` reads them on this thread (see ``load``)."""
        q = self._query
        if q is None or self._caches is None:
            return
        self._generation += 1
        self.query_one("#inbox-stages", StageBar).active = q.stage
        side = "Sent" if q.perspective == Perspective.SENT else "Received"
        bar = (q.perspective, q.sort, q.descending)
        if bar != self._bar_shown:
            # Only when they change: the side and the sort are sized to their text, so an update lays out the
            # screen, which a stage switch has no reason to pay for.
            self._bar_shown = bar
            self.query_one("#inbox-side", Static).update(join((f"{side} ", "bold"), ("t", "dim")))
            sort_title = dict(SORTS).get(q.sort, q.sort)
            self.query_one("#inbox-sort", Static).update(Text(f"sort: {sort_title} {'▼' if q.descending else '▲'}"))
            header = self.query_one("#inbox-header", ColumnHeader)
            header.set_title("counterparty", "Client" if q.perspective == Perspective.SENT else "Agency")
            header.set_sort(q.sort, q.descending)
        what = (q.stage.label.lower() if q.stage else "any stage")
        empty = f"No {side.lower()} links in {what}" + (f" matching {q.text!r}." if q.text else ".")
        self.link_list.empty_text = clean(empty, max_chars=200)
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None
        generation, now = self._generation, self._clock()
        counts: dict[Stage, int] | None = None
        if self._counts is not None:
            key, counted_at, known = self._counts
            if key == self._counts_key(q) and abs((utc(now) - utc(counted_at)).total_seconds()) <= COUNTS_REUSE:
                # Same side and filter, counted moments ago: read the rows as of that moment, so that the list and
                # the bar's numbers agree.
                now, counts = counted_at, known
        cursor_page = self.link_list.cursor // PAGE_SIZE if keep_cursor else 0
        if delay:
            self._debounce = self.set_timer(delay, lambda: self._query_rows(generation, q, now, cursor_page,
                                                                             keep_cursor, counts))
        elif at_once:
            try:
                result = self._read_rows(generation, q, now, cursor_page, keep_cursor, counts)
            except Exception:  # noqa: BLE001 - the worker reads it again and reports a failure the usual way
                self._query_rows(generation, q, now, cursor_page, keep_cursor, counts)
            else:
                self._queried(result)
        else:
            self._query_rows(generation, q, now, cursor_page, keep_cursor, counts)

    @staticmethod
    def _counts_key(q: InboxQuery) -> tuple[Any, ...]:
        return (q.customer_id, q.perspective, q.text)

    @work(thread=True, exclusive=True, group="inbox-query", exit_on_error=False, name="inbox query")
    def _query_rows(self, generation: int, q: InboxQuery, now: datetime, cursor_page: int,
                    keep_cursor: bool, counts: dict[Stage, int] | None = None) -> None:
        self.post_message(self._read_rows(generation, q, now, cursor_page, keep_cursor, counts))

    def _read_rows(self, generation: int, q: InboxQuery, now: datetime, cursor_page: int,
                   keep_cursor: bool, counts: dict[Stage, int] | None = None) -> Queried:
        """The stage counts and the cursor's page of a query, read on the calling thread."""
        assert self._caches is not None
        if counts is None:
            counts = stage_counts(self._caches(), q, now)
        source = InboxSource(self._caches, q, now)
        # The stage counts are the list's count (the cache counts a stage, or all of them, the same way): one
        # query fewer.
        count = counts.get(q.stage, 0) if q.stage is not None else sum(counts.values())
        page = cursor_page if cursor_page * PAGE_SIZE < count else 0
        pages = {page: source.page(page * PAGE_SIZE, PAGE_SIZE)} if count else {}
        return self.Queried(generation, counts, source, count, pages, keep_cursor, now)

    @on(Queried)
    def _queried(self, event: Queried) -> None:
        event.stop()
        if event.generation != self._generation:
            return  # the user has moved on to another query meanwhile
        self._shown = event.generation
        if self._query is not None:
            self._counts = (self._counts_key(self._query), event.now, event.counts)
        bar = self.query_one("#inbox-stages", StageBar)
        total = sum(event.counts.values())
        for s in STAGE_ORDER:
            # The bar redraws only for a label that changed.
            bar.set_label(s, _stage_label(s, total if s is None else event.counts.get(s, 0)))
        self._rows_now = event.now
        self.link_list.set_source(event.source, keep_cursor=event.keep_cursor, count=event.count,
                                  pages=event.pages)

    def _set_query(self, *, delay: float = 0.0, **changes: Any) -> None:
        if self._query is None:
            return
        from dataclasses import replace

        self._query = replace(self._query, **changes)
        self._apply(keep_cursor=False, delay=delay)

    @on(LinkList.Highlighted, "#inbox-list")
    def _show_preview(self, event: LinkList.Highlighted) -> None:
        """The preview follows the cursor. What the rules say about the row is read by a worker: it reads the cache
        and the clock (the demo's clock is a database read), which during a sync wait on the sync's writes, and a
        held key would otherwise pay that on every row it passes."""
        self._preview_generation += 1
        row = event.row
        if row is None or self._caches is None:
            self._link_ctx = self._preview_key = None
            self.query_one("#inbox-preview", Static).update("", layout=False)
            return
        self._preview_key = row.key
        if not self._preview_reading:
            self._read_preview()

    def _read_preview(self) -> None:
        """Read the preview of the row under the cursor; one read at a time, the latest row wins."""
        self._preview_reading = True
        caches, key, actor, clock = self._caches, self._preview_key, self._actor, self._clock
        generation = self._preview_generation

        def read() -> None:
            ctx: LinkContext | None = None
            try:
                ctx = link_context(caches(), key, actor, clock()) if caches is not None and key is not None else None
            finally:  # a failed read must not stop the preview from following the cursor
                self.post_message(self.PreviewRead(generation, ctx))

        self.run_worker(read, thread=True, group="inbox-preview", exit_on_error=False, name="read the preview")

    @on(PreviewRead)
    def _preview_read(self, event: PreviewRead) -> None:
        event.stop()
        self._preview_reading = False
        if event.generation != self._preview_generation:
            if self._preview_key is not None:
                self._read_preview()  # the cursor moved meanwhile: read the row it is on now
            return
        ctx = self._link_ctx = event.ctx
        preview = self.query_one("#inbox-preview", Static)
        # The preview's height is fixed (app.tcss) and its width follows the screen, so new text never changes its
        # size: skip the full-screen layout that update() would do on every cursor move.
        if ctx is None:
            preview.update("", layout=False)
            return
        line1 = join((rules.entity_label(ctx.link), "bold"), " — ", rules.status_text(ctx.link.status))
        if ctx.waiting:
            line1.append(" " + ctx.waiting, style="italic")
        elif ctx.days_left is not None and ctx.days_left >= 0:
            line1.append(f" Expires in {ctx.days_left} days.", style="italic")
        preview.update(join(line1, "\n", action_summary(ctx)), layout=False)

    @on(LinkList.Selected, "#inbox-list")
    def _open(self, event: LinkList.Selected) -> None:
        self.post_message(OpenLink(event.row.key))

    @on(StageBar.Selected, "#inbox-stages")
    def _stage_clicked(self, event: StageBar.Selected) -> None:
        stage = event.key
        if self._query is not None and stage != self._query.stage:
            self._set_query(stage=stage)
            if self.display:  # a click on a stage; never steal focus when the inbox is not the view shown
                self.link_list.focus()

    # -- filter ---------------------------------------------------------------------------------------------------

    async def action_filter(self) -> None:
        field = self._filter
        if field is None:
            field = self._filter = Input(placeholder=FILTER_PLACEHOLDER, id="inbox-filter")
            await self.mount(field, after=self.query_one("#inbox-bar"))
        field.display = True
        field.focus()

    @on(Input.Changed, "#inbox-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        text = clean(event.value, max_chars=200).strip()
        if self._query is not None and text != self._query.text:
            self._set_query(text=text, delay=FILTER_DEBOUNCE)

    @on(Input.Submitted, "#inbox-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.display = False
        self.link_list.focus()

    def action_close_filter(self) -> None:
        field = self._filter
        if field is None:
            return
        field.value = ""
        field.display = False
        self.link_list.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_filter":
            # Only while a filter is open; otherwise escape goes on to the app (stop a sync).
            return self._filter is not None and self._filter.display
        return True

    # -- stage, side, sort ------------------------------------------------------------------------------------------

    def _step_stage(self, step: int) -> None:
        if self._query is None:
            return
        i = STAGE_ORDER.index(self._query.stage)
        self._set_query(stage=STAGE_ORDER[(i + step) % len(STAGE_ORDER)])

    def action_next_stage(self) -> None:
        self._step_stage(1)

    def action_previous_stage(self) -> None:
        self._step_stage(-1)

    def set_stage(self, stage: Stage | None) -> None:
        """Show one stage (None: all)."""
        self._set_query(stage=stage)

    def set_sort(self, key: str) -> None:
        """Sort by one of ``source.SORTS`` (newest or largest first for times)."""
        self._set_query(sort=key, descending=key in ("last_change", "age"))

    def action_toggle_side(self) -> None:
        if self._query is not None:
            other = Perspective.RECEIVED if self._query.perspective == Perspective.SENT else Perspective.SENT
            self._set_query(perspective=other)

    def action_sort(self) -> None:
        if self._query is not None:
            keys = [k for k, _ in SORTS]
            i = keys.index(self._query.sort) if self._query.sort in keys else -1
            key = keys[(i + 1) % len(keys)]
            self._set_query(sort=key, descending=key in ("last_change", "age"))

    def action_reverse_sort(self) -> None:
        if self._query is not None:
            self._set_query(descending=not self._query.descending)

    # -- actions ----------------------------------------------------------------------------------------------------

    def action_link_action(self, name: str) -> None:
        row = self.link_list.highlighted
        if row is None:
            self.notify("Select a link first.", severity="warning")
            return
        self.post_message(LinkActionRequested(rules.Action(name), row.key))
