"""Every read the screens make from the cache, in one place, shaped the way the widgets want it.

The cache (``linkdesk.core.cache.Cache``) answers the questions; this module fixes their parameters (an inbox query
is a filter + stage + sort) and adds what the rules say about a link for the acting user. Widgets get plain objects
from here and never call the cache or the rules for data themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from linkdesk.core import rules
from linkdesk.core.model import Actor, ClientLink, ClientLinkStatus, LinkKey, LinkType, Party, Perspective, Stage

#: Sort keys the inbox offers (``Cache.SORTS``), in the order ``o`` cycles through them, with their titles.
SORTS: tuple[tuple[str, str], ...] = (
    ("last_change", "Last change"),
    ("client", "Account / customer"),
    ("status", "Status"),
    ("days_left", "Days left"),
    ("age", "Age"),
)


@dataclass(frozen=True)
class InboxQuery:
    """One inbox view: whose links, from which side, which stage (None: all), text filter and order."""

    customer_id: int
    perspective: Perspective = Perspective.SENT
    stage: Stage | None = None
    text: str = ""
    sort: str = "last_change"
    descending: bool = True


@dataclass(frozen=True, slots=True)
class InboxLine:
    """One inbox row (``cache.InboxRow``) with what the line shows beside it, computed once per page."""

    row: Any
    #: The other side of the link: the client customer (sent) or the managing agency (received).
    counterparty: str | None
    days_left: int | None

    @property
    def key(self) -> LinkKey:
        return self.row.key


class InboxSource:
    """A ``RowSource`` for the link list: the count and pages of one ``InboxQuery`` at one moment.

    ``caches`` returns a cache for the calling thread, so pages can be read by worker threads.
    """

    def __init__(self, caches: Callable[[], Any], query: InboxQuery, now: datetime) -> None:
        self._caches = caches
        self.query = query
        self._now = now

    def count(self) -> int:
        q = self.query
        return self._caches().inbox_count(customer_id=q.customer_id, perspective=q.perspective, stage=q.stage,
                                          text=q.text or None, now=self._now)

    def page(self, offset: int, limit: int) -> Sequence[InboxLine]:
        q = self.query
        cache = self._caches()
        rows = cache.inbox_page(customer_id=q.customer_id, perspective=q.perspective, stage=q.stage,
                                text=q.text or None, sort=q.sort, descending=q.descending,
                                offset=offset, limit=limit, now=self._now)
        return [InboxLine(r, _counterparty(r), r.days_left(self._now)) for r in rows]


def _counterparty(row: Any) -> str | None:
    """The client customer (sent) or the managing agency (received), from the row itself: the cache reads the
    client customer's name in the page's own query."""
    if row.perspective == Perspective.RECEIVED:
        return row.managing_customer_name
    if row.key.type == LinkType.CustomerLink:
        return row.client_entity_name
    if row.client_customer_id is None:
        # The account is not visible to the agency yet (pending): the link still names its customer's number.
        number = row.client_entity_customer_number
        return f"customer {number}" if number else None
    return row.client_customer_name


def stage_counts(cache: Any, query: InboxQuery, now: datetime) -> dict[Stage, int]:
    """How many links each stage holds for the query's side and text filter (the stage bar's numbers)."""
    counts = cache.stage_counts(query.customer_id, now, perspective=query.perspective, text=query.text or None)
    return {s: int(counts.get(s, 0)) for s in Stage}


@dataclass(frozen=True)
class LinkContext:
    """A link and what the rules say about it for the acting user, now."""

    link: ClientLink
    client_customer_id: int | None
    client_customer_name: str | None
    party: Party | None
    options: list[rules.ActionOption] = field(default_factory=list)
    waiting: str | None = None
    invited_at: datetime | None = None
    days_left: int | None = None
    stage: Stage | None = None

    def option(self, action: rules.Action) -> rules.ActionOption:
        return next(o for o in self.options if o.action == action)


def link_context(cache: Any, key: LinkKey, actor: Actor | None, now: datetime) -> LinkContext | None:
    """The link with this identity and the rules' view of it; None when the cache does not hold it."""
    stored = cache.stored_link(key)
    if stored is None:
        return None
    link = stored.link
    if link.link_type == LinkType.CustomerLink:
        client_id, client_name = link.client_entity_id, link.client_entity_name
    else:
        client_id = stored.client_customer_id
        customer = cache.customer(client_id) if client_id is not None else None
        client_name = customer.name if customer is not None else None
    # The cache keeps the invitation time even after the link moved on; rules need it only while pending.
    invited = stored.invited_at if link.status == ClientLinkStatus.LinkPending else None
    party = rules.party_of(actor, link, client_id) if actor is not None else None
    options = rules.available_actions(link, actor, party, now, invited) if actor is not None else []
    perspective = Perspective.RECEIVED if party == Party.CLIENT else Perspective.SENT
    return LinkContext(
        link=link,
        client_customer_id=client_id,
        client_customer_name=client_name,
        party=party,
        options=options,
        waiting=rules.waiting_reason(link, now),
        invited_at=stored.invited_at,
        days_left=rules.days_left(invited, now) if invited is not None else None,
        stage=rules.stage(link, perspective, now, invited),
    )
