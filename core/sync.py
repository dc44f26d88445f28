"""Sync: read the hierarchy and every client link from the API (live or the simulator) into the cache.

A full sync follows the tree recipe of client-links-api.md §2:

1. ``GetUser(nil)``: who is signed in, and the customer roles (which customers it reaches).
2. ``GetUsersInfo`` + ``GetUser`` per user of the signed-in customer: each user's role and reachable accounts.
3. ``GetAccountsInfo(OnlyParentAccounts)`` (owned accounts) and ``GetLinkedAccountsAndCustomersInfo`` (owned + linked
   accounts and child manager customers, recursed at most five levels); ``SearchAccounts(UserId)`` pages for the full
   account details (parent customer, bill-to, linked agencies); ``GetCustomersInfo`` / ``GetCustomer`` for names.
4. Client links, sent (``DirectManagingCustomerId`` = the signed-in customer) and received (``ClientAccountId In``
   batches of 10 owned account ids, and ``ClientCustomerId`` = the signed-in customer), paged by 100 with bounded
   concurrency.

Everything goes through the cache's snapshot writer, which is atomic: a sync that fails, is cancelled or is killed
leaves the previous complete state readable. Errors become a :class:`SyncResult` with the ApiError's one-sentence
message, never a traceback.

A sync may combine several *views* (one API client per signed-in identity): the first, primary view brings the
hierarchy and the sent links; further views (the demo's client identities) add their own customer, their accounts and
the links they received. :func:`resync_links` re-reads just the links an action touched.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .model import Account, ClientLink, Customer, LinkKey, LinkType, User

if TYPE_CHECKING:  # the adapter imports nothing heavy at module level, but keep sync importable on its own
    from .api import ApiError, CustomerManagementApi

log = logging.getLogger(__name__)

#: Links handed to the snapshot writer at a time (bounded memory at 100,000 links).
WRITE_CHUNK = 1_000
#: Client ids per ``In`` predicate (SearchClientLinks allows at most 10 values).
IN_BATCH = 10
#: SearchAccounts page size (the documented maximum).
ACCOUNT_PAGE = 1_000
#: Parent customers named one by one (GetCustomer) per sync when neither GetCustomersInfo nor the previous cache named
#: them; the rest keep an empty name until a later sync (names accumulate, so a 100k-link first sync stays fast).
MAX_CUSTOMER_LOOKUPS = 50
#: Manager-account depth the service supports ("only 5 levels of depth").
MAX_DEPTH = 5


#: Allocations between two young-generation garbage collections while a sync runs (CPython's default is 700).
SYNC_GC_THRESHOLD = 50_000


@dataclass(frozen=True)
class SyncProgress:
    """Where a sync is: ``phase`` (hierarchy, users, accounts, links, saving), ``done`` of ``total`` (None = unknown
    yet; for links it grows as pages arrive), and a short sentence."""

    phase: str
    done: int
    total: int | None
    message: str


@dataclass(frozen=True)
class SyncResult:
    """How a sync ended. ``links``: links in the cache afterwards; ``changed``: links new or changed by this sync."""

    ok: bool
    cancelled: bool
    links: int
    changed: int
    message: str
    error: "ApiError | None" = None


class SyncCancelled(Exception):
    """Internal: the cancel event was set."""


ProgressFn = Callable[[SyncProgress], None]


@dataclass
class _Run:
    """The state of one sync run: reporting, cancellation, and what was collected."""

    progress: ProgressFn | None
    cancel: threading.Event | None
    customers: dict[int, Customer] = field(default_factory=dict)
    accounts: dict[int, Account] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    link_keys: set[LinkKey] = field(default_factory=set)
    written_customers: set[int] = field(default_factory=set)
    users_meta_written: bool = False
    #: The cache before this sync (for facts worth reusing, e.g. customer names); None in unit tests without one.
    previous: Any = None
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise SyncCancelled()

    def report(self, phase: str, done: int, total: int | None, message: str) -> None:
        self.check()
        if self.progress is not None:
            self.progress(SyncProgress(phase, done, total, message))


@dataclass(frozen=True)
class View:
    """One identity's API client. ``primary``: bring the hierarchy and the sent links too."""

    api: "CustomerManagementApi"
    primary: bool = True


def full_sync(
    cache: Any,
    views: Sequence[View] | "CustomerManagementApi",
    *,
    clock: Callable[[], datetime],
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    concurrency: int = 4,
) -> SyncResult:
    """Read everything the views can see into ``cache`` as one atomic snapshot. Never raises for API failures.

    ``views``: a list of :class:`View` (or a single API client, taken as the primary view). ``clock`` gives the time
    the snapshot is stamped with.
    """
    if not isinstance(views, (list, tuple)):
        views = [View(views, True)]
    with _fewer_gc_passes():
        return _full_sync(cache, views, clock, progress, cancel, concurrency)


def _full_sync(cache: Any, views: Sequence[View], clock: Callable[[], datetime], progress: ProgressFn | None,
               cancel: threading.Event | None, concurrency: int) -> SyncResult:
    from .api import ApiError, Cancelled
    from .cache import CacheError

    run = _Run(progress, cancel, previous=cache if hasattr(cache, "customers") else None)
    writer = None
    try:
        run.report("hierarchy", 0, None, "Starting the sync.")
        writer = cache.begin_snapshot(clock())
        for i, view in enumerate(views):
            _sync_view(view, run, writer, concurrency)
        run.report("saving", 0, None, "Saving the snapshot.")
        summary = writer.commit(clock())
        writer = None
    except (SyncCancelled, Cancelled):
        if writer is not None:
            writer.abort("cancelled by the user", clock(), cancelled=True)
        return SyncResult(False, True, _cached_links(cache), 0,
                          "Sync cancelled; the cache still holds the previous sync.")
    except ApiError as err:
        if writer is not None:
            writer.abort(err.user_message, clock())
        return SyncResult(False, False, _cached_links(cache), 0,
                          f"{err.user_message} The cache still holds the previous sync.", err)
    except CacheError as exc:  # busy, disk full, damaged: the cache's own sentence says what to do
        if writer is not None:
            try:
                writer.abort(str(exc)[:200], clock())
            except Exception:
                pass
        return SyncResult(False, False, _cached_links(cache), 0, str(exc))
    except BaseException as exc:
        log.debug("sync failed unexpectedly", exc_info=True)
        if writer is not None:
            try:
                writer.abort(f"unexpected error: {type(exc).__name__}", clock())
            except Exception:
                pass
        if isinstance(exc, Exception):
            return SyncResult(False, False, _cached_links(cache), 0,
                              f"The sync stopped because of an unexpected error ({type(exc).__name__}); the cache "
                              "still holds the previous sync.")
        raise
    links, changed = summary.links or 0, summary.events or 0
    message = f"Synced {links:,} link{'s' if links != 1 else ''}"
    message += f" ({changed:,} new or changed)." if changed else "; nothing changed."
    if run.notes:
        message += " " + " ".join(run.notes)
    if progress is not None:
        progress(SyncProgress("done", links, links, message))
    return SyncResult(True, False, links, changed, message)


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] | None = None


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Collect garbage less often while a sync runs (gen-0 threshold SYNC_GC_THRESHOLD), then restore the setting.

    Why: a sync allocates millions of short-lived objects (reply trees, links), and with the default threshold of 700
    many of them live through two young collections while a page is parsed, so they reach the old generation and
    trigger full collections, each a pass over every object in the process (the SDK's WSDL model alone is ~250,000
    objects): 32 full passes, ~7 s of CPU, in a 100k-link sync. Nothing here is cyclic garbage that must go early;
    reference counting frees the rest as before. Concurrent syncs share one setting; it is restored when the last
    one ends, unless someone else changed it meanwhile.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            if _gc_saved[0] and _gc_saved[0] < SYNC_GC_THRESHOLD:  # 0 = collection disabled: leave it alone
                gc.set_threshold(SYNC_GC_THRESHOLD, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                if gc.get_threshold()[0] == SYNC_GC_THRESHOLD and _gc_saved[0] != SYNC_GC_THRESHOLD:
                    gc.set_threshold(*_gc_saved)
                _gc_saved = None


def _cached_links(cache: Any) -> int:
    try:
        return int(cache.link_count())
    except Exception:
        return 0


# --------------------------------------------------------------------------------------------------------------------
# One view
# --------------------------------------------------------------------------------------------------------------------


def _sync_view(view: View, run: _Run, writer: Any, concurrency: int) -> None:
    from .api import AuthError, Predicate, RequestRefused

    api = view.api
    run.report("hierarchy", 0, None, "Reading who you are.")
    me, _roles = api.get_user(None)
    own = me.customer_id
    run.users[me.id] = me
    if view.primary and not run.users_meta_written:
        run.users_meta_written = True
        writer.set_meta("user_id", str(me.id))
        writer.set_meta("customer_id", str(own))
        writer.set_meta("user_name", me.user_name)

    # The signed-in customer itself.
    if own not in run.customers:
        try:
            run.customers[own] = api.get_customer(own)
        except (AuthError, RequestRefused):
            run.customers[own] = Customer(id=own, name="")
        if view.primary:
            writer.set_meta("customer_name", run.customers[own].name)
    run.check()

    # Users of the signed-in customer and their roles (primary view only: the agency's people).
    new_users: list[User] = [me]
    if view.primary:
        try:
            infos = api.get_users_info(own)
        except (AuthError, RequestRefused):
            infos = []
            run.notes.append("Your role cannot list the other users of your customer.")
        others = [u for u in infos if u.id not in run.users]
        run.report("users", 0, len(others), f"Reading {len(others)} users.")
        for n, user in enumerate(_each_concurrently(lambda u: _get_user_or_none(api, u.id, u.user_name, own),
                                                    others, concurrency, run), 1):
            run.users[user.id] = user
            new_users.append(user)
            run.report("users", n, len(others), f"Read {n} of {len(others)} users.")
    writer.add_users(new_users)

    # Accounts: owned, linked, and those of child manager customers.
    run.report("accounts", 0, None, "Reading accounts.")
    owned_infos = api.get_accounts_info(own, only_parent_accounts=True)
    owned_ids = [a.id for a in owned_infos]
    infos_by_id = {a.id: a for a in owned_infos}
    child_customers: dict[int, str | None] = {}
    if view.primary:
        child_customers = _child_customers(api, own, run, concurrency)
    details = (_search_accounts(api, me.id, run, concurrency) if view.primary
               else _search_own_accounts(api, own, run, concurrency))
    new_accounts: dict[int, Account] = {}
    for acc in details:
        new_accounts[acc.id] = acc
    for aid in owned_ids:
        if aid not in new_accounts:
            info = infos_by_id.get(aid)
            new_accounts[aid] = Account(id=aid, name=(info.name if info else None) or "",
                                        number=info.number if info else None, parent_customer_id=own)
    # Linked accounts SearchAccounts did not detail have no known parent customer: they are left out of the accounts
    # table (the client tree groups their links under "owner unknown" instead of inventing a customer).
    fresh = {aid: a for aid, a in new_accounts.items() if aid not in run.accounts}
    run.accounts.update(fresh)
    run.report("accounts", len(run.accounts), len(run.accounts), f"Read {len(run.accounts):,} accounts.")

    # Customers: the parents of the accounts and the child manager customers, named where the API says.
    wanted = {a.parent_customer_id for a in fresh.values() if a.parent_customer_id} | set(child_customers)
    wanted -= set(run.customers)
    if wanted:
        names: dict[int, str | None] = dict(child_customers)
        try:
            for c in api.get_customers_info("", 5000):
                names.setdefault(c.id, c.name)
        except (AuthError, RequestRefused):
            pass
        # Names rarely change: reuse the previous sync's, and ask the service only for customers new to the cache.
        if run.previous is not None:
            for known in run.previous.customers(cid for cid in wanted if not names.get(cid)).values():
                if known.name:
                    run.customers[known.id] = known
        unnamed = sorted(cid for cid in wanted if not names.get(cid) and cid not in run.customers)
        unnamed = unnamed[:MAX_CUSTOMER_LOOKUPS]
        for cust in _each_concurrently(lambda cid: _get_customer_or_none(api, cid), unnamed, concurrency, run):
            run.customers[cust.id] = cust
        for cid in wanted:
            if cid not in run.customers:
                run.customers[cid] = Customer(id=cid, name=names.get(cid) or "")
    unwritten = [c for cid, c in run.customers.items() if cid not in run.written_customers]
    run.written_customers.update(c.id for c in unwritten)
    writer.add_customers(unwritten)
    writer.add_accounts(list(fresh.values()))

    # Client links.
    if view.primary:
        _stream_links(api, [Predicate("DirectManagingCustomerId", "Equals", own)], run, writer, "sent",
                      concurrency, tolerate_refusal=True)
    own_accounts = sorted({aid for aid, a in run.accounts.items() if a.parent_customer_id == own} | set(owned_ids))
    for start in range(0, len(own_accounts), IN_BATCH):
        batch = own_accounts[start:start + IN_BATCH]
        op = "Equals" if len(batch) == 1 else "In"
        # Ten accounts rarely have more than a page of links: one request at a time avoids idle SDK clients.
        _stream_links(api, [Predicate("ClientAccountId", op, ",".join(map(str, batch)))], run, writer, "received",
                      1, tolerate_refusal=True)
    _stream_links(api, [Predicate("ClientCustomerId", "Equals", own)], run, writer, "received", 1,
                  tolerate_refusal=True)


def _child_customers(api: Any, own: int, run: _Run, concurrency: int) -> dict[int, str | None]:
    """The manager customers under ``own`` (GetLinkedAccountsAndCustomersInfo, recursed level by level up to
    MAX_DEPTH, client-links-api.md §2) -> their names.

    Only the child customers are used from these replies: the accounts come from GetAccountsInfo (owned, with
    names) and SearchAccounts (every reachable account, in full), so every call asks for the customer's own
    accounts only (OnlyParentAccounts): at 100k links the agency's reply with linked accounts was 60,000
    AccountInfo elements (~2 s) that were thrown away. A level's customers are asked concurrently: an agency with
    a thousand client customers linked by customer links makes a thousand calls, almost all answering "no
    children"."""
    from .api import AuthError, RequestRefused

    def children_of(cid: int) -> list:
        try:
            return api.get_linked_accounts_and_customers_info(cid, True)[1]
        except (AuthError, RequestRefused):
            return []  # a customer this user cannot look into: its children stay unknown

    found: dict[int, str | None] = {}
    frontier = [own]
    for _depth in range(MAX_DEPTH):
        next_frontier: list[int] = []
        for infos in _each_concurrently(children_of, frontier, concurrency, run):
            for c in infos:
                if c.id != own and c.id not in found:
                    found[c.id] = c.name
                    next_frontier.append(c.id)
        frontier = next_frontier
        if not frontier:
            break
    return found


def _get_user_or_none(api: Any, user_id: int, user_name: str | None, customer_id: int) -> User | None:
    from .api import AuthError, RequestRefused

    try:
        user, _ = api.get_user(user_id)
        return user
    except (AuthError, RequestRefused):
        return User(id=user_id, user_name=user_name or "", customer_id=customer_id)


def _get_customer_or_none(api: Any, customer_id: int) -> Customer | None:
    from .api import AuthError, RequestRefused

    try:
        return api.get_customer(customer_id)
    except (AuthError, RequestRefused):
        return None


def _each_concurrently(fn: Callable[[Any], Any], items: Sequence[Any], concurrency: int, run: _Run) -> Iterator[Any]:
    """``fn`` over ``items`` with at most ``concurrency`` calls in flight, yielding non-None results in order."""
    if not items:
        return
    if concurrency <= 1 or len(items) <= 4:  # each extra thread may build its own SDK client (~0.2 s)
        for item in items:
            run.check()
            out = fn(item)
            if out is not None:
                yield out
        return
    with ThreadPoolExecutor(min(concurrency, len(items)), thread_name_prefix="linkdesk-sync") as pool:
        futures = []
        try:
            for item in items:
                futures.append(pool.submit(fn, item))
            for f in futures:
                run.check()
                out = f.result()
                if out is not None:
                    yield out
        finally:
            for f in futures:
                f.cancel()


def _search_accounts(api: Any, user_id: int, run: _Run, concurrency: int = 1) -> list[Account]:
    """Every account the user can reach, with full details (SearchAccounts by UserId, pages of 1,000)."""
    return _account_pages(api, ("UserId", "Equals", user_id), run, concurrency, report=True)


def _search_own_accounts(api: Any, customer_id: int, run: _Run, concurrency: int = 1) -> list[Account]:
    return _account_pages(api, ("CustomerId", "Equals", customer_id), run, concurrency, report=False)


def _account_pages(api: Any, predicate: tuple, run: _Run, concurrency: int, *, report: bool) -> list[Account]:
    """SearchAccounts pages ordered by Id (stable paging) until a short page; a refusal keeps what was read.

    The first page is read alone (most users reach fewer than 1,000 accounts); when it is full, up to
    ``concurrency`` further pages are in flight (an agency at 100k links reaches ~60 pages: the client parses one
    page while the service prepares the next)."""
    from .api import AuthError, OrderBy, Predicate, RequestRefused

    preds, order = [Predicate(*predicate)], [OrderBy("Id", "Ascending")]

    def fetch(index: int) -> list[Account]:
        return api.search_accounts(preds, ordering=order, index=index, size=ACCOUNT_PAGE)

    out: list[Account] = []
    try:
        for page in _pages(fetch, ACCOUNT_PAGE, concurrency, run):
            out.extend(page)
            if report:
                run.report("accounts", len(out), None, f"Read {len(out):,} accounts.")
    except (AuthError, RequestRefused):
        pass
    return out


def _pages(fetch: Callable[[int], list], page_size: int, concurrency: int, run: _Run) -> Iterator[list]:
    """Pages 0, 1, 2, ... in order until a short one: page 0 alone, then up to ``concurrency`` in flight."""
    run.check()
    page = fetch(0)
    yield page
    if len(page) < page_size:
        return
    if concurrency <= 1:
        index = 1
        while True:
            run.check()
            page = fetch(index)
            yield page
            if len(page) < page_size:
                return
            index += 1
    with ThreadPoolExecutor(concurrency, thread_name_prefix="linkdesk-sync") as pool:
        pending = deque(pool.submit(fetch, i) for i in range(1, 1 + concurrency))
        next_index = 1 + concurrency
        try:
            while pending:
                run.check()
                page = pending.popleft().result()
                yield page
                if len(page) < page_size:
                    return
                pending.append(pool.submit(fetch, next_index))
                next_index += 1
        finally:
            for f in pending:
                f.cancel()


def _stream_links(api: Any, predicates: list, run: _Run, writer: Any, label: str, concurrency: int,
                  tolerate_refusal: bool) -> None:
    """Page links into the writer in chunks, skipping keys already written by this run; progress every page."""
    from .api import PAGE_SIZE, AuthError, OrderBy, RequestRefused

    chunk: list[ClientLink] = []

    def report() -> None:
        n = len(run.link_keys)
        run.report("links", n, None, f"Read {n:,} links so far.")

    try:
        links: Iterable[ClientLink]
        if concurrency > 1:
            # Most searches fit one page: read it alone, and fan out only when it is full (each extra thread may
            # build its own SDK client, ~0.2 s). A full first page is read again by the paging; keys dedupe it.
            first = api.search_client_links(predicates, ordering=[OrderBy("Id", "Ascending")], index=0,
                                            size=PAGE_SIZE)
            links = first if len(first) < PAGE_SIZE else itertools.chain(
                first, api.iter_client_links(predicates, concurrency=concurrency, cancel=run.cancel))
        else:
            links = api.iter_client_links(predicates, concurrency=1, cancel=run.cancel)
        seen = 0
        for link in links:
            seen += 1
            if seen % PAGE_SIZE == 0:
                report()
            try:
                key = link.key
            except ValueError:
                continue  # a link without identity cannot be stored or acted on
            if key in run.link_keys:
                continue
            run.link_keys.add(key)
            chunk.append(link)
            if len(chunk) >= WRITE_CHUNK:
                writer.add_links(chunk)
                chunk = []
    except (AuthError, RequestRefused) as err:
        if not tolerate_refusal or err.code not in (106, 1001, None):
            raise
        note = f"Your role cannot read the {label} client links."
        if note not in run.notes:
            run.notes.append(note)
        return
    writer.add_links(chunk)  # even empty: it states that the read succeeded (no links means none)
    report()


# --------------------------------------------------------------------------------------------------------------------
# Targeted re-sync
# --------------------------------------------------------------------------------------------------------------------


def read_links(api: "CustomerManagementApi", keys: Iterable[LinkKey | tuple[int, LinkType]]) -> list[ClientLink]:
    """The service's current links of these client entities (every managing customer the caller may see).

    ``keys``: LinkKeys, or (client entity id, link type) pairs. Account links are searched by ``ClientAccountId``,
    customer links by ``ClientCustomerId``, ten ids per call.
    """
    from .api import Predicate

    by_type: dict[LinkType, set[int]] = {LinkType.AccountLink: set(), LinkType.CustomerLink: set()}
    for k in keys:
        if isinstance(k, LinkKey):
            by_type[k.type].add(int(k.client_entity_id))
        else:
            entity, link_type = k
            by_type[LinkType(link_type)].add(int(entity))
    out: list[ClientLink] = []
    for link_type, field_name in ((LinkType.AccountLink, "ClientAccountId"), (LinkType.CustomerLink,
                                                                               "ClientCustomerId")):
        ids = sorted(by_type[link_type])
        for start in range(0, len(ids), IN_BATCH):
            batch = ids[start:start + IN_BATCH]
            op = "Equals" if len(batch) == 1 else "In"
            for link in api.iter_client_links([Predicate(field_name, op, ",".join(map(str, batch)))],
                                              concurrency=1):
                if link.link_type == link_type:
                    out.append(link)
    return out


def resync_links(
    api: "CustomerManagementApi",
    cache: Any,
    keys: Iterable[LinkKey | tuple[int, LinkType]],
    *,
    now: datetime,
    source: str,
    actor_user_id: int | None = None,
) -> list[ClientLink]:
    """Re-read the links of the given client entities and upsert them into the cache, recording every status change
    in ``link_events`` with ``source`` (``'action:<name>'`` after an action). Returns the links read.

    Raises ApiError when the service cannot be read; the cache is then unchanged.
    """
    links = read_links(api, keys)
    if links:
        cache.upsert_links(links, now, source, actor_user_id)
    return links
