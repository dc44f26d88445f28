"""The local SQLite cache: what the last sync saw, the timeline of every link, and the queries the screens need.

One file per profile (``paths.cache_path(profile)``), in WAL mode so that the TUI reads while ``linkdesk sync``
writes. The schema carries its version in ``PRAGMA user_version`` and is brought up to date by the ordered
``MIGRATIONS``; a file from a newer linkdesk is refused untouched (:class:`CacheTooNew`), a damaged one is reported
(:class:`CacheCorrupt`) and can be moved aside, never deleted (:meth:`Cache.move_aside`).

Writing a sync (atomic: a sync that fails or is killed leaves the previous complete state intact and readable)::

    snap = cache.begin_snapshot(now)
    snap.add_customers(...); snap.add_accounts(...); snap.add_users(...); snap.add_links(pages...)
    snap.commit(later)          # or snap.abort("network lost", later)

Staged rows go to TEMP tables of the writer's connection, in batches (bounded memory at 100,000 links). They are
invisible to other connections, never hold the cache's write lock, and vanish with the connection — so a killed
sync leaves nothing behind; ``commit`` swaps them in with one ``BEGIN IMMEDIATE`` transaction.

Reads use the standard ``sqlite3`` module only (the TUI's first frame reads the cache); ``sqlite_utils`` is
imported lazily by the migrations that use it. Times are stored as integer microseconds since the Unix epoch, UTC.
A :class:`Cache` belongs to one thread (``Cache.open`` is cheap: open one per worker).

Stages are not re-implemented here: :func:`stage_sql` and the inbox filters are *generated* from
``rules.stage`` by sampling it for every status, perspective and elapsed time around the rules' time constants.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import rules
from .model import (
    CLIENT_LINK_WIRE,
    Account,
    ClientLink,
    ClientLinkStatus,
    Customer,
    CustomerLinkPermission,
    CustomerRole,
    LinkKey,
    LinkType,
    Perspective,
    Role,
    Stage,
    User,
)

__all__ = [
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "Cache",
    "CacheError",
    "CacheTooNew",
    "CacheCorrupt",
    "CacheBusy",
    "CacheUnavailable",
    "SnapshotWriter",
    "LinkEvent",
    "SyncRun",
    "StoredLink",
    "InboxRow",
    "TreeUser",
    "TreeAccount",
    "TreeCustomer",
    "SORTS",
    "stage_sql",
    "stage_predicate_sql",
]

# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


class CacheError(Exception):
    """Any problem with the cache file; ``str()`` is a sentence for the user, ``path`` names the file."""

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class CacheTooNew(CacheError):
    """The file was written by a newer linkdesk; it is left untouched."""

    def __init__(self, path: Path | str, found: int):
        self.found = found
        super().__init__(
            f"The cache {path} was written by a newer version of linkdesk (cache schema {found}; this version "
            f"reads schema {SCHEMA_VERSION} and older). Upgrade linkdesk to use it, or point LINKDESK_HOME "
            f"elsewhere. The file was left untouched.",
            path,
        )


class CacheCorrupt(CacheError):
    """The file is damaged or is not a linkdesk cache. ``Cache.move_aside`` keeps it and frees the path."""

    def __init__(self, path: Path | str, reason: str):
        self.reason = reason
        super().__init__(
            f"The cache {path} is damaged or is not a linkdesk cache ({reason}). linkdesk can move it aside "
            f"(nothing is deleted) and rebuild the cache with a fresh sync.",
            path,
        )


class CacheBusy(CacheError):
    """Another process kept the write lock longer than the retries allow."""

    def __init__(self, path: Path | str | None):
        super().__init__(
            f"Another linkdesk process kept the cache {path} busy for too long. Wait for it to finish "
            f"(for example a running `linkdesk sync`) and try again.",
            path,
        )


class CacheUnavailable(CacheError):
    """The file cannot be opened or written (permissions, disk full, I/O error)."""

    def __init__(self, path: Path | str | None, reason: str):
        self.reason = reason
        super().__init__(
            f"linkdesk cannot use the cache {path}: {reason}. Check the file's permissions and the free disk "
            f"space, then try again.",
            path,
        )


_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE",
                  "SQLITE_CORRUPT_VTAB"}
_BUSY_CODES = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY", "SQLITE_BUSY_TIMEOUT"}
_UNAVAILABLE_REASONS = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the file or its folder is read-only",
    "SQLITE_CANTOPEN": "the file cannot be opened",
    "SQLITE_PERM": "permission denied",
    "SQLITE_AUTH": "permission denied",
}


def _translate(exc: sqlite3.Error, path: Path | None) -> CacheError | None:
    """The CacheError for a sqlite3 error, or None when it is a programming error that should surface as is."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name in _CORRUPT_CODES or "malformed" in text or "not a database" in text:
        return CacheCorrupt(path or "?", text)
    if name in _BUSY_CODES or "database is locked" in text:
        return CacheBusy(path)
    base = name.split("_")[0] + "_" + name.split("_")[1] if name.count("_") >= 1 else name
    if name in _UNAVAILABLE_REASONS or base in _UNAVAILABLE_REASONS:
        return CacheUnavailable(path, _UNAVAILABLE_REASONS.get(name) or _UNAVAILABLE_REASONS[base])
    if name.startswith("SQLITE_IOERR"):
        return CacheUnavailable(path, f"a disk input/output error occurred ({text})")
    return None


def _guard(fn: Callable) -> Callable:
    """Turn low-level sqlite3 errors of a public method into the CacheError a user can act on."""

    def wrapper(self: "Cache", *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as exc:
            translated = _translate(exc, self.path)
            if translated is None:
                raise
            raise translated from exc

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


# --------------------------------------------------------------------------------------------------------------------
# Value conversions (times as integer microseconds since the epoch, UTC)
# --------------------------------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _to_us(d: datetime | None) -> int | None:
    """Aware or naive (taken as UTC, as the service's are) datetime to integer microseconds."""
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return (d - _EPOCH) // _US


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _fold(text: object) -> str:
    return "" if text is None else str(text).casefold()


_STATUS_BY_VALUE: dict[str, ClientLinkStatus] = {s.value: s for s in ClientLinkStatus}
_TYPE_BY_VALUE: dict[str, LinkType] = {t.value: t for t in LinkType}
_STAGE_BY_VALUE: dict[str, Stage] = {s.value: s for s in Stage}
_PERMISSION_BY_VALUE: dict[str, CustomerLinkPermission] = {p.value: p for p in CustomerLinkPermission}


def _status(value: str | None) -> ClientLinkStatus | str | None:
    if value is None:
        return None
    return _STATUS_BY_VALUE.get(value, value)


def _ltype(value: str) -> LinkType:
    return _TYPE_BY_VALUE.get(value) or LinkType(value)


def _enum_value(v: Any) -> Any:
    return v.value if hasattr(v, "value") and not isinstance(v, (int, str)) else v


def _kind_of(annotation: str) -> str:
    """How a ClientLink field is stored, from its annotation (so a new field cannot be stored wrongly unnoticed)."""
    if "datetime" in annotation:
        return "dt"
    if annotation.startswith("bool"):
        return "bool"
    if annotation.startswith("int"):
        return "int"
    if annotation.startswith("tuple"):
        return "json"
    if annotation.startswith(("LinkType", "ClientLinkStatus", "CustomerLinkPermission", "str")):
        return "str"
    raise TypeError(f"cache does not know how to store a ClientLink field annotated {annotation!r}")


#: Every ClientLink element, in WSDL order: these are the client_links columns (plus the cache's own columns).
LINK_COLUMNS: tuple[str, ...] = tuple(CLIENT_LINK_WIRE)
_LINK_KINDS: dict[str, str] = {a: _kind_of(ClientLink.__dataclass_fields__[a].type) for a in LINK_COLUMNS}  # type: ignore[union-attr]
_SQL_TYPE = {"dt": "INTEGER", "bool": "INTEGER", "int": "INTEGER", "json": "TEXT", "str": "TEXT"}
_KEY_COLUMNS = ("client_entity_id", "managing_customer_id", "type")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    """A SQL string literal (values come from enums, never from users; quoted properly anyway)."""
    return "'" + value.replace("'", "''") + "'"


def _search_text(link: ClientLink) -> str:
    """The case-folded haystack of the inbox text filter (fields separated so a needle cannot span two)."""
    return "\x1f".join(
        _fold(v)
        for v in (
            link.client_entity_name,
            link.client_entity_number,
            link.client_entity_id,
            link.managing_customer_name,
            link.name,
            link.note,
        )
    )


def _link_values(link: ClientLink) -> list[Any]:
    """One ClientLink as column values in LINK_COLUMNS order, then derived_invited_at and search_text."""
    if link.client_entity_id is None or link.managing_customer_id is None:
        raise ValueError(
            f"Cannot store a client link without ClientEntityId and ManagingCustomerId (got {link!r})."
        )
    out: list[Any] = []
    for attr in LINK_COLUMNS:
        v = getattr(link, attr)
        kind = _LINK_KINDS[attr]
        if attr == "type":
            v = link.link_type.value
        elif v is None:
            pass
        elif kind == "dt":
            v = _to_us(v)
        elif kind == "bool":
            v = 1 if v else 0
        elif kind == "int":
            v = int(v)
        elif kind == "json":
            v = json.dumps([list(p) for p in v]) if v else None
        else:
            v = _enum_value(v)
        out.append(v)
    out.append(_to_us(rules.invited_at(link)))
    out.append(_search_text(link))
    return out


def _link_from_row(row: Sequence[Any]) -> ClientLink:
    """A ClientLink from the LINK_COLUMNS part of a row (in order)."""
    kw: dict[str, Any] = {}
    for attr, v in zip(LINK_COLUMNS, row):
        kind = _LINK_KINDS[attr]
        if attr == "type":
            v = _ltype(v)
        elif attr == "status":
            v = _status(v)
        elif attr == "customer_link_permission":
            v = _PERMISSION_BY_VALUE.get(v, v) if v is not None else None
        elif v is None:
            if attr == "suppress_notification":
                v = False
            elif kind == "json":
                v = ()
        elif kind == "dt":
            v = _from_us(v)
        elif kind == "bool":
            v = bool(v)
        elif kind == "json":
            v = tuple((str(k), str(val)) for k, val in json.loads(v))
        kw[attr] = v
    return ClientLink(**kw)


# --------------------------------------------------------------------------------------------------------------------
# Stage SQL, generated from rules.stage
# --------------------------------------------------------------------------------------------------------------------

_UNKNOWN_STATUS = "\x00a-status-this-version-does-not-know"


@dataclass(frozen=True)
class _StageGroup:
    """Statuses whose stage, for one perspective, is the same function of the time since the invitation.

    ``cascade`` lists (op, elapsed µs, stage) in ascending elapsed order: the first entry whose ``elapsed op b``
    holds gives the stage (op ``<`` or ``<=``); the last entry (op None) is the rest.
    """

    statuses: tuple[str, ...]
    covers_unknown: bool
    covers_null: bool
    when_no_invitation: Stage
    cascade: tuple[tuple[str | None, int | None, Stage], ...]

    @property
    def outcomes(self) -> set[Stage]:
        return {self.when_no_invitation} | {s for _, _, s in self.cascade}


def _breakpoints() -> list[int]:
    """Elapsed times (µs) where a time-dependent stage may change: the rules' durations and their differences."""
    consts = sorted({v for v in vars(rules).values() if isinstance(v, timedelta)})
    points = {timedelta(0)} | set(consts) | {abs(a - b) for a in consts for b in consts}
    return sorted(p // _US for p in points)


@lru_cache(maxsize=None)
def _stage_plan(perspective: Perspective) -> tuple[_StageGroup, ...]:
    """Sample rules.stage for every status at and between every breakpoint; group statuses that behave alike."""
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    bps = _breakpoints()
    # Elapsed samples: below the first breakpoint, each breakpoint, each gap's midpoint, beyond the last.
    samples: list[tuple[str | None, int | None, int]] = [("<", bps[0], bps[0] - 86_400_000_000)]
    for i, b in enumerate(bps):
        samples.append(("<=", b, b))
        if i + 1 < len(bps):
            samples.append(("<", bps[i + 1], (b + bps[i + 1]) // 2))
    samples.append((None, None, bps[-1] + 86_400_000_000))

    candidates: list[str | None] = [s.value for s in ClientLinkStatus] + [_UNKNOWN_STATUS, None]
    by_signature: dict[tuple, list[str | None]] = {}
    for status in candidates:
        link = ClientLink(client_entity_id=1, managing_customer_id=2, status=_status(status))
        no_inv = rules.stage(link, perspective, now, invited_at=None)
        raw = [(op, b, rules.stage(link, perspective, now, invited_at=now - timedelta(microseconds=e)))
               for op, b, e in samples]
        cascade = [entry for i, entry in enumerate(raw) if i + 1 == len(raw) or entry[2] != raw[i + 1][2]]
        by_signature.setdefault((no_inv, tuple(cascade)), []).append(status)

    groups = []
    for (no_inv, cascade), members in by_signature.items():
        groups.append(
            _StageGroup(
                statuses=tuple(m for m in members if m not in (None, _UNKNOWN_STATUS)),
                covers_unknown=_UNKNOWN_STATUS in members,
                covers_null=None in members,
                when_no_invitation=no_inv,
                cascade=cascade,
            )
        )
    return tuple(groups)


def _listed_statuses(plan: tuple[_StageGroup, ...]) -> list[str]:
    return [s for g in plan if not g.covers_unknown for s in g.statuses]


def _status_condition(g: _StageGroup, plan: tuple[_StageGroup, ...], status: str) -> str:
    if g.covers_unknown:
        listed = _listed_statuses(plan)
        cond = f"{status} NOT IN ({', '.join(map(_lit, listed))})" if listed else "1"
        return f"({status} IS NULL OR {cond})" if g.covers_null else cond
    parts = []
    if g.statuses:
        parts.append(f"{status} IN ({', '.join(map(_lit, g.statuses))})")
    if g.covers_null:
        parts.append(f"{status} IS NULL")
    return "(" + " OR ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _cmp_upper(op: str, inv: str, threshold: int) -> str:
    # elapsed < b  <=>  invited_at > now - b ;  elapsed <= b  <=>  invited_at >= now - b
    return f"{inv} > {threshold}" if op == "<" else f"{inv} >= {threshold}"


def _cmp_lower(op: str, inv: str, threshold: int) -> str:
    # not (elapsed < b)  <=>  invited_at <= now - b ;  not (elapsed <= b)  <=>  invited_at < now - b
    return f"{inv} <= {threshold}" if op == "<" else f"{inv} < {threshold}"


def _group_stage_sql(g: _StageGroup, now_us: int, inv: str) -> str:
    if len(g.outcomes) == 1:
        return _lit(g.when_no_invitation.value)
    parts = [f"CASE WHEN {inv} IS NULL THEN {_lit(g.when_no_invitation.value)}"]
    for op, b, st in g.cascade[:-1]:
        parts.append(f"WHEN {_cmp_upper(op, inv, now_us - b)} THEN {_lit(st.value)}")  # type: ignore[operator,arg-type]
    parts.append(f"ELSE {_lit(g.cascade[-1][2].value)} END")
    return " ".join(parts)


def stage_sql(perspective: Perspective, now: datetime, *, alias: str = "l") -> str:
    """A SQL expression giving the stage value (``Stage.value``) of a client_links row at ``now``, as rules.stage does."""
    plan = _stage_plan(perspective)
    now_us = _to_us(now)
    assert now_us is not None
    status, inv = f"{alias}.status", f"{alias}.invited_at"
    whens = [g for g in plan if not g.covers_unknown]
    other = next(g for g in plan if g.covers_unknown)
    sql = ["CASE"]
    for g in whens:
        sql.append(f"WHEN {_status_condition(g, plan, status)} THEN {_group_stage_sql(g, now_us, inv)}")
    sql.append(f"ELSE {_group_stage_sql(other, now_us, inv)} END")
    return " ".join(sql)


def stage_predicate_sql(perspective: Perspective, stage: Stage, now: datetime, *, alias: str = "l") -> str:
    """A SQL condition true for the rows whose stage at ``now`` is ``stage``, written as status sets and ranges of
    ``invited_at`` so that the (customer, status, invited_at) indexes serve it."""
    plan = _stage_plan(perspective)
    now_us = _to_us(now)
    assert now_us is not None
    status, inv = f"{alias}.status", f"{alias}.invited_at"
    alternatives = []
    for g in plan:
        if stage not in g.outcomes:
            continue
        cond = _status_condition(g, plan, status)
        if g.outcomes == {stage}:
            alternatives.append(cond)
            continue
        ranges = []
        if g.when_no_invitation == stage:
            ranges.append(f"{inv} IS NULL")
        prev: tuple[str | None, int | None, Stage] | None = None
        for op, b, st in g.cascade:
            if st == stage:
                bounds = [f"{inv} IS NOT NULL"]
                if prev is not None:
                    bounds.append(_cmp_lower(prev[0], inv, now_us - prev[1]))  # type: ignore[arg-type,operator]
                if op is not None:
                    bounds.append(_cmp_upper(op, inv, now_us - b))  # type: ignore[operator]
                ranges.append("(" + " AND ".join(bounds) + ")")
            prev = (op, b, st)
        alternatives.append(f"({cond} AND ({' OR '.join(ranges)}))")
    return "(" + " OR ".join(alternatives) + ")" if alternatives else "0"


# --------------------------------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------------------------------


def _link_column_defs() -> str:
    defs = []
    for attr in LINK_COLUMNS:
        sql_type = _SQL_TYPE[_LINK_KINDS[attr]]
        if attr in _KEY_COLUMNS:
            defs.append(f"{_q(attr)} {sql_type} NOT NULL")
        elif attr == "suppress_notification":
            defs.append(f"{_q(attr)} {sql_type} NOT NULL DEFAULT 0")
        else:
            defs.append(f"{_q(attr)} {sql_type}")
    return ",\n    ".join(defs)


_V1_SQL = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT,
    number TEXT,
    life_cycle_status TEXT,
    financial_status TEXT,
    market_country TEXT,
    market_language TEXT
);
CREATE INDEX customers_number ON customers (number);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT,
    number TEXT,
    parent_customer_id INTEGER NOT NULL,
    bill_to_customer_id INTEGER,
    life_cycle_status TEXT,
    financial_status TEXT,
    currency_code TEXT,
    pause_reason INTEGER,
    prepaid INTEGER
);
CREATE INDEX accounts_parent ON accounts (parent_customer_id, name COLLATE NOCASE, id);
CREATE TABLE account_agencies (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    agency_customer_id INTEGER NOT NULL,
    PRIMARY KEY (account_id, agency_customer_id)
) WITHOUT ROWID;
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    user_name TEXT NOT NULL,
    customer_id INTEGER,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    phone TEXT,
    life_cycle_status TEXT
);
CREATE TABLE user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    customer_id INTEGER NOT NULL,
    role_id INTEGER NOT NULL,
    customer_link_permission TEXT,
    all_accounts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, customer_id, role_id)
) WITHOUT ROWID;
CREATE INDEX user_roles_customer ON user_roles (customer_id);
CREATE TABLE user_accounts (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL,
    via_customer_id INTEGER NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('account', 'linked', 'customer')),
    PRIMARY KEY (user_id, account_id, via_customer_id)
) WITHOUT ROWID;
CREATE TABLE client_links (
    {_link_column_defs()},
    first_seen_at INTEGER NOT NULL,
    invited_at INTEGER,
    PRIMARY KEY (client_entity_id, managing_customer_id, type)
);
CREATE INDEX client_links_managing ON client_links (managing_customer_id, status);
CREATE TABLE link_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_entity_id INTEGER NOT NULL,
    managing_customer_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    at INTEGER NOT NULL,
    from_status TEXT,
    to_status TEXT,
    source TEXT NOT NULL,
    actor_user_id INTEGER,
    detail TEXT
);
CREATE INDEX link_events_key ON link_events (client_entity_id, managing_customer_id, type, id);
CREATE TRIGGER link_events_no_update BEFORE UPDATE ON link_events
BEGIN
    SELECT RAISE(ABORT, 'link_events is append-only: events cannot be changed');
END;
CREATE TRIGGER link_events_no_delete BEFORE DELETE ON link_events
BEGIN
    SELECT RAISE(ABORT, 'link_events is append-only: events cannot be deleted');
END;
CREATE TABLE sync_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'cancelled')),
    customers INTEGER,
    accounts INTEGER,
    users INTEGER,
    links INTEGER,
    events INTEGER,
    message TEXT
);
"""


def _exec_script(conn: sqlite3.Connection, script: str) -> None:
    """Run several statements inside the current transaction (``executescript`` would commit first)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                conn.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in script: {buf!r}")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """v1: the tables of design.md §4."""
    _exec_script(conn, _V1_SQL)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """v2, the inbox at 100,000 links: the client's owning customer and a case-folded search text on each link
    (backfilled), a ``kind`` on events (intents and outcomes of actions beside observed changes), the pid of a
    running sync (to tell an interrupted run from a live one), and indexes for every inbox sort and stage filter.
    """
    import sqlite_utils  # lazily: only a new or older cache pays for it

    db = sqlite_utils.Database(conn, execute_plugins=False)
    db["client_links"].add_column("client_customer_id", int)
    db["client_links"].add_column("search_text", str, not_null_default="")
    db["link_events"].add_column("kind", str, not_null_default="change")  # existing rows are observed changes
    db["sync_runs"].add_column("pid", int)

    def search_text(*fields: Any) -> str:
        return "\x1f".join(_fold(f) for f in fields)

    conn.create_function("linkdesk_search_text", 6, search_text, deterministic=True)
    try:
        conn.execute(
            "UPDATE client_links SET search_text = linkdesk_search_text(client_entity_name, client_entity_number,"
            " client_entity_id, managing_customer_name, name, note)"
        )
    finally:
        conn.create_function("linkdesk_search_text", 6, None)
    conn.execute(
        f"""UPDATE client_links SET client_customer_id = CASE
                WHEN type = {_lit(LinkType.CustomerLink.value)} THEN client_entity_id
                ELSE COALESCE((SELECT a.parent_customer_id FROM accounts a WHERE a.id = client_entity_id),
                              (SELECT c.id FROM customers c WHERE c.number = client_entity_customer_number
                               ORDER BY c.id LIMIT 1))
            END"""
    )
    # v1 could leave a pending invitation without its time; the stage of a pending link needs one.
    conn.execute(
        "UPDATE client_links SET invited_at = COALESCE(last_modified_date_time, first_seen_at)"
        f" WHERE invited_at IS NULL AND status = {_lit(ClientLinkStatus.LinkPending.value)}"
    )
    _exec_script(
        conn,
        """
        DROP INDEX client_links_managing;
        CREATE INDEX links_sent_status ON client_links (managing_customer_id, status, invited_at);
        CREATE INDEX links_sent_client ON client_links (managing_customer_id, client_entity_name COLLATE NOCASE,
                                                        client_entity_id);
        CREATE INDEX links_sent_invited ON client_links (managing_customer_id, invited_at);
        CREATE INDEX links_sent_changed ON client_links (managing_customer_id, last_modified_date_time);
        CREATE INDEX links_received_status ON client_links (client_customer_id, status, invited_at);
        CREATE INDEX links_by_agency_client ON client_links (managing_customer_id, client_customer_id);
        CREATE INDEX sync_runs_outcome ON sync_runs (outcome, id);
        """,
    )


#: Ordered migrations: ``MIGRATIONS[i]`` brings a cache from version i to i + 1. Never edit a shipped one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_v1, _migrate_v2)
SCHEMA_VERSION = len(MIGRATIONS)

_REQUIRED_TABLES = frozenset(
    {"meta", "customers", "accounts", "account_agencies", "users", "user_roles", "user_accounts", "client_links",
     "link_events", "sync_runs"}
)
_SQLITE_MAGIC = b"SQLite format 3\x00"


# --------------------------------------------------------------------------------------------------------------------
# Rows returned to callers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """One entry of a link's timeline.

    ``kind``: ``change`` (a status change observed, by sync or after an action; ``from_status`` None = first seen,
    ``to_status`` None = no longer returned by the service), ``intent`` (an action about to be sent), ``outcome``
    (what the service answered to an action), ``note``. ``source``: ``sync`` or ``action:<name>``.
    """

    id: int
    key: LinkKey
    at: datetime
    kind: str
    from_status: ClientLinkStatus | str | None
    to_status: ClientLinkStatus | str | None
    source: str
    actor_user_id: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class SyncRun:
    id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str  # 'running' | 'ok' | 'failed' | 'cancelled'
    customers: int | None
    accounts: int | None
    users: int | None
    links: int | None
    events: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class StoredLink:
    """A cached link with what the cache knows beside the API's fields."""

    link: ClientLink
    first_seen_at: datetime
    #: When the pending invitation was made (or first observed); kept after it moves on, None if never seen pending.
    invited_at: datetime | None
    #: The customer owning the client entity, when known.
    client_customer_id: int | None


@dataclass(frozen=True, slots=True)
class InboxRow:
    """What one inbox line shows."""

    key: LinkKey
    client_entity_name: str | None
    client_entity_number: str | None
    status: ClientLinkStatus | str | None
    is_bill_to_client: bool | None
    invited_at: datetime | None
    last_modified: datetime | None
    managing_customer_name: str | None
    name: str | None
    note: str | None
    perspective: Perspective
    stage: Stage

    @property
    def type(self) -> LinkType:
        return self.key.type

    def days_left(self, now: datetime) -> int | None:
        """Whole days before a pending invitation expires (rules.days_left); None for other statuses."""
        if self.status != ClientLinkStatus.LinkPending:
            return None
        return rules.days_left(self.invited_at, now)


@dataclass(frozen=True, slots=True)
class TreeUser:
    user_id: int
    user_name: str
    display_name: str
    role: Role | None
    account_count: int


@dataclass(frozen=True, slots=True)
class TreeAccount:
    """An account under a user or a client customer, with its link to the agency in question (if any)."""

    account_id: int
    name: str | None
    number: str | None
    parent_customer_id: int | None
    #: The customer through which the account is reached (user tree) or the agency asked about (client tree).
    via_customer_id: int | None
    link_status: ClientLinkStatus | str | None
    is_bill_to_client: bool | None
    invited_at: datetime | None


@dataclass(frozen=True, slots=True)
class TreeCustomer:
    """A client customer that has links with the agency (``customer_id`` None: links whose owner is unknown)."""

    customer_id: int | None
    name: str | None
    number: str | None
    link_count: int
    #: Status of the customer-level link (CustomerLink) with the agency, if there is one.
    customer_link_status: ClientLinkStatus | str | None


# --------------------------------------------------------------------------------------------------------------------
# Inbox sorts
# --------------------------------------------------------------------------------------------------------------------

_PENDING = ClientLinkStatus.LinkPending.value


def _sort_terms(sort: str, descending: bool) -> str:
    """ORDER BY terms; every sort ends with a unique tie-breaker so pages never overlap."""
    d = "DESC" if descending else "ASC"
    if sort == "client":
        terms = [f"l.client_entity_name COLLATE NOCASE {d}", f"l.client_entity_id {d}", f"l.rowid {d}"]
    elif sort == "status":
        terms = [f"l.status {d}", f"l.invited_at {d}", f"l.rowid {d}"]
    elif sort == "age":
        # Ascending age = most recent invitation first; links never seen pending have no age: always last.
        inv = "DESC" if not descending else "ASC"
        terms = [f"l.invited_at {inv} NULLS LAST", f"l.rowid {d}"]
    elif sort == "days_left":
        # Only pending invitations have days left; fewest first when ascending; the rest last.
        terms = [f"CASE WHEN l.status = {_lit(_PENDING)} THEN l.invited_at END {d} NULLS LAST", f"l.rowid {d}"]
    elif sort == "last_change":
        terms = [f"l.last_modified_date_time {d} NULLS LAST", f"l.rowid {d}"]
    else:
        raise ValueError(f"Unknown inbox sort {sort!r}; use one of: {', '.join(SORTS)}.")
    return ", ".join(terms)


#: Inbox sort names: client name, status, age of the invitation, days left before expiry, last change.
SORTS: tuple[str, ...] = ("client", "status", "age", "days_left", "last_change")

_INBOX_COLS = (
    "l.client_entity_id, l.managing_customer_id, l.type, l.client_entity_name, l.client_entity_number, l.status,"
    " l.is_bill_to_client, l.invited_at, l.last_modified_date_time, l.managing_customer_name, l.name, l.note"
)


# --------------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------------

_BATCH = 2000


def _batches(items: Iterable[Any], size: int = _BATCH) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cache:
    """One connection to one cache file, for one thread. Open with :meth:`Cache.open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, retries: int = 4, backoff: float = 0.05):
        self._conn = conn
        self.path = path
        self._retries = retries
        self._backoff = backoff
        self._snapshot: SnapshotWriter | None = None

    # ---------------------------------------------------------------- opening, closing, damaged files

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout: float = 5.0, retries: int = 4) -> "Cache":
        """Open (creating or migrating as needed) the cache at ``path``.

        Raises CacheTooNew (newer schema; the file is not touched), CacheCorrupt (damaged or foreign file),
        CacheUnavailable (permissions, disk) — each with a sentence saying what to do.
        """
        path = Path(path)
        found = cls._header_version(path)
        if found is not None and found > SCHEMA_VERSION:
            raise CacheTooNew(path, found)
        if not path.exists():
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # Create it ourselves so that it (and the -wal/-shm SQLite derives from it) is private.
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise CacheUnavailable(path, exc.strerror or str(exc)) from exc
        try:
            conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise _translate(exc, path) or CacheUnavailable(path, str(exc)) from exc
        cache = cls(conn, path, retries=retries)
        try:
            cache._prepare(busy_timeout)
        except BaseException:
            conn.close()
            raise
        return cache

    @classmethod
    def open_profile(cls, profile: str, **kwargs: Any) -> "Cache":
        """Open the cache of a profile (``demo`` or ``live-<customer id>``)."""
        from . import paths

        return cls.open(paths.cache_path(profile), **kwargs)

    @staticmethod
    def _header_version(path: Path) -> int | None:
        """The schema version in the file header without opening it with SQLite (None for a new or empty file)."""
        try:
            with open(path, "rb") as fh:
                header = fh.read(100)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheUnavailable(path, exc.strerror or str(exc)) from exc
        if not header:
            return None
        if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
            raise CacheCorrupt(path, "the file is not a SQLite database")
        return int.from_bytes(header[60:64], "big")

    @_guard
    def _prepare(self, busy_timeout: float) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CacheTooNew(self.path, version)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and tables - {"sqlite_sequence"}:
            raise CacheCorrupt(self.path, "it is a SQLite database of another program")
        if version == SCHEMA_VERSION and not _REQUIRED_TABLES <= tables:
            missing = ", ".join(sorted(_REQUIRED_TABLES - tables))
            raise CacheCorrupt(self.path, f"tables missing: {missing}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL: a crash never corrupts; only the very last commit may be lost on power failure.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-16000")
        conn.execute("PRAGMA temp_store=FILE")  # staging of a 100k-link sync must not live in memory
        if version < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Apply pending migrations, each in its own IMMEDIATE transaction (another process may race us)."""
        while True:
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    if version > SCHEMA_VERSION:
                        raise CacheTooNew(self.path, version)
                    return
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        """Close the connection (staging of an unfinished snapshot goes with it)."""
        self._conn.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def move_aside(path: Path | str, now: datetime | None = None) -> Path:
        """Rename a damaged cache (and its -wal/-shm/-journal) to ``<name>.broken-<UTC timestamp>``; return the new
        path. Nothing is deleted: the user (or support) can still inspect the file. Close connections first.

        ``now`` names the file; it defaults to the system clock since it is only a label.
        """
        path = Path(path)
        stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.broken-{stamp}")
        n = 1
        while any(Path(str(target) + s).exists() for s in ("", "-wal", "-shm", "-journal")):
            n += 1
            target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
        # Sidecars keep their suffix after the new name, so the moved-aside set can still be opened as a database.
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(str(path) + suffix)
            if side.exists():
                os.rename(side, str(target) + suffix)
        os.rename(path, target)
        return target

    @_guard
    def integrity_problems(self) -> list[str]:
        """``PRAGMA integrity_check`` and ``foreign_key_check`` findings; empty when the file is sound."""
        problems = [r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self._conn.execute("PRAGMA foreign_key_check")]
        return problems

    # ---------------------------------------------------------------- transactions

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE (take the write lock now, waiting busy_timeout), retried with backoff a few times."""
        for attempt in range(self._retries + 1):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                translated = _translate(exc, self.path)
                if not isinstance(translated, CacheBusy):
                    raise
                if attempt == self._retries:
                    raise translated from exc
                time.sleep(self._backoff * (2**attempt))

    class _WriteTx:
        def __init__(self, cache: "Cache"):
            self.cache = cache

        def __enter__(self) -> sqlite3.Connection:
            self.cache._begin_immediate()
            return self.cache._conn

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            conn = self.cache._conn
            if exc_type is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")

    def _write(self) -> "Cache._WriteTx":
        return Cache._WriteTx(self)

    # ---------------------------------------------------------------- meta

    @_guard
    def meta_get(self, key: str, default: str | None = None) -> str | None:
        """A profile fact (acting user id, customer id, environment, ...), or ``default``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None or row[0] is None else row[0]

    @_guard
    def meta_set(self, key: str, value: str | None) -> None:
        """Set a profile fact; None removes it."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    @_guard
    def meta_all(self) -> dict[str, str]:
        return {k: v for k, v in self._conn.execute("SELECT key, value FROM meta")}

    # ---------------------------------------------------------------- writing a sync

    @_guard
    def begin_snapshot(self, now: datetime) -> "SnapshotWriter":
        """Start a full sync: returns a writer that stages rows and swaps them in atomically on ``commit``."""
        if self._snapshot is not None and self._snapshot.open:
            raise RuntimeError("a snapshot is already open on this connection; commit or abort it first")
        with self._write() as conn:
            # Runs left 'running' by a process that no longer exists were interrupted (crash, kill -9).
            for run_id, pid in conn.execute("SELECT id, pid FROM sync_runs WHERE outcome = 'running'").fetchall():
                if not _pid_alive(pid):
                    conn.execute(
                        "UPDATE sync_runs SET outcome = 'failed', message = ? WHERE id = ?",
                        ("interrupted: the process stopped before the sync finished", run_id),
                    )
            cur = conn.execute(
                "INSERT INTO sync_runs (started_at, outcome, pid) VALUES (?, 'running', ?)", (_to_us(now), os.getpid())
            )
            run_id = int(cur.lastrowid)  # type: ignore[arg-type]
        self._snapshot = SnapshotWriter(self, run_id, now)
        return self._snapshot

    def _create_link_stage(self, name: str) -> None:
        cols = [f"{_q(a)} {_SQL_TYPE[_LINK_KINDS[a]]}" for a in LINK_COLUMNS]
        self._conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
        self._conn.execute(
            f"CREATE TEMP TABLE {name} ({', '.join(cols)}, derived_invited_at INTEGER, search_text TEXT NOT NULL,"
            " PRIMARY KEY (client_entity_id, managing_customer_id, type))"
        )

    def _stage_links(self, table: str, links: Iterable[ClientLink]) -> int:
        """Write links into a TEMP staging table in batches, each its own (temp-only, lock-free) transaction."""
        placeholders = ", ".join("?" * (len(LINK_COLUMNS) + 2))
        sql = f"INSERT OR REPLACE INTO temp.{table} VALUES ({placeholders})"
        n = 0
        for chunk in _batches(links):
            rows = [_link_values(link) for link in chunk]
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(sql, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            n += len(rows)
        return n

    def _apply_staged_links(self, stage: str, now_us: int, source: str, actor: int | None, *, full: bool) -> int:
        """Inside a write transaction: append change events versus the live rows, then upsert the staged links
        (and, for a full snapshot, remove the links the service no longer returns). Returns the events appended."""
        conn = self._conn
        join = (
            f"main.client_links l ON l.client_entity_id = s.client_entity_id"
            f" AND l.managing_customer_id = s.managing_customer_id AND l.type = s.type"
        )
        events = conn.execute(
            f"""INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, kind, from_status,
                                         to_status, source, actor_user_id, detail)
                SELECT s.client_entity_id, s.managing_customer_id, s.type, ?, 'change', l.status, s.status, ?, ?,
                       CASE WHEN l.client_entity_id IS NULL THEN 'first seen' END
                FROM temp.{stage} s LEFT JOIN {join}
                WHERE l.client_entity_id IS NULL OR l.status IS NOT s.status
                ORDER BY s.client_entity_id, s.managing_customer_id, s.type""",
            (now_us, source, actor),
        ).rowcount
        if full:
            gone = (
                f"NOT EXISTS (SELECT 1 FROM temp.{stage} s WHERE s.client_entity_id = l.client_entity_id"
                f" AND s.managing_customer_id = l.managing_customer_id AND s.type = l.type)"
            )
            events += conn.execute(
                f"""INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, kind, from_status,
                                             to_status, source, actor_user_id, detail)
                    SELECT l.client_entity_id, l.managing_customer_id, l.type, ?, 'change', l.status, NULL, ?, ?,
                           'no longer returned by the service'
                    FROM main.client_links l WHERE {gone}
                    ORDER BY l.client_entity_id, l.managing_customer_id, l.type""",
                (now_us, source, actor),
            ).rowcount
            conn.execute(f"DELETE FROM main.client_links AS l WHERE {gone}")

        cols = ", ".join(_q(a) for a in LINK_COLUMNS)
        s_cols = ", ".join("s." + _q(a) for a in LINK_COLUMNS)
        own = ("invited_at", "client_customer_id", "search_text")
        updated = [*LINK_COLUMNS, *own]
        set_sql = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in updated)
        changed_sql = " OR ".join(f"client_links.{_q(c)} IS NOT excluded.{_q(c)}" for c in updated)
        pending = _lit(_PENDING)
        conn.execute(
            f"""INSERT INTO main.client_links ({cols}, first_seen_at, invited_at, client_customer_id, search_text)
                SELECT {s_cols}, :now,
                    COALESCE(s.derived_invited_at,
                             CASE WHEN s.status = {pending}
                                  THEN CASE WHEN l.status = {pending} THEN COALESCE(l.invited_at, :now) ELSE :now END
                                  ELSE l.invited_at END),
                    CASE WHEN s.type = {_lit(LinkType.CustomerLink.value)} THEN s.client_entity_id
                         ELSE COALESCE((SELECT a.parent_customer_id FROM main.accounts a WHERE a.id = s.client_entity_id),
                                       (SELECT c.id FROM main.customers c
                                        WHERE c.number = s.client_entity_customer_number ORDER BY c.id LIMIT 1),
                                       l.client_customer_id) END,
                    s.search_text
                FROM temp.{stage} s LEFT JOIN {join}
                WHERE 1
                ON CONFLICT (client_entity_id, managing_customer_id, type) DO UPDATE SET {set_sql}
                WHERE {changed_sql}""",
            {"now": now_us},
        )
        return events

    @_guard
    def upsert_links(
        self,
        links: Iterable[ClientLink],
        now: datetime,
        source: str = "action:invite",
        actor_user_id: int | None = None,
    ) -> list[LinkEvent]:
        """Store links re-read after an action (targeted re-sync); appends a ``change`` event for each link whose
        status changed or which is new, in the same transaction. Returns those events."""
        self._create_link_stage("upsert_links")
        try:
            self._stage_links("upsert_links", links)
            with self._write() as conn:
                before = conn.execute("SELECT COALESCE(max(id), 0) FROM link_events").fetchone()[0]
                self._apply_staged_links("upsert_links", _to_us(now), source, actor_user_id, full=False)  # type: ignore[arg-type]
                rows = conn.execute(f"{_EVENT_SELECT} WHERE id > ? ORDER BY id", (before,)).fetchall()
        finally:
            self._conn.execute("DROP TABLE IF EXISTS temp.upsert_links")
        return [_event(r) for r in rows]

    @_guard
    def record_event(
        self,
        key: LinkKey,
        *,
        at: datetime,
        source: str,
        kind: str = "intent",
        from_status: ClientLinkStatus | str | None = None,
        to_status: ClientLinkStatus | str | None = None,
        actor_user_id: int | None = None,
        detail: str | None = None,
    ) -> LinkEvent:
        """Append one event (an action's intent before sending, its outcome after) and return it."""
        if kind not in ("change", "intent", "outcome", "note"):
            raise ValueError(f"Unknown event kind {kind!r}; use change, intent, outcome or note.")
        with self._write() as conn:
            cur = conn.execute(
                """INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, kind, from_status,
                                            to_status, source, actor_user_id, detail)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (int(key.client_entity_id), int(key.managing_customer_id), LinkType(key.type).value, _to_us(at), kind,
                 _enum_value(from_status), _enum_value(to_status), source, actor_user_id, detail),
            )
            row = conn.execute(f"{_EVENT_SELECT} WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _event(row)

    # ---------------------------------------------------------------- reading links

    @_guard
    def link(self, key: LinkKey) -> ClientLink | None:
        """The cached link with this identity, or None."""
        stored = self.stored_link(key)
        return stored.link if stored else None

    @_guard
    def stored_link(self, key: LinkKey) -> StoredLink | None:
        """The cached link with the cache's own facts (first seen, invitation time, client's customer)."""
        cols = ", ".join(_q(a) for a in LINK_COLUMNS)
        row = self._conn.execute(
            f"SELECT {cols}, first_seen_at, invited_at, client_customer_id FROM client_links"
            " WHERE client_entity_id = ? AND managing_customer_id = ? AND type = ?",
            (int(key.client_entity_id), int(key.managing_customer_id), LinkType(key.type).value),
        ).fetchone()
        if row is None:
            return None
        n = len(LINK_COLUMNS)
        return StoredLink(_link_from_row(row[:n]), _from_us(row[n]), _from_us(row[n + 1]), row[n + 2])  # type: ignore[arg-type]

    @_guard
    def links_for_entity(self, client_entity_id: int, link_type: LinkType | None = None) -> list[ClientLink]:
        """Every cached link of one client entity (any managing customer): the ``existing`` of
        rules.check_new_invitation."""
        cols = ", ".join(_q(a) for a in LINK_COLUMNS)
        sql = f"SELECT {cols} FROM client_links WHERE client_entity_id = ?"
        params: list[Any] = [int(client_entity_id)]
        if link_type is not None:
            sql += " AND type = ?"
            params.append(LinkType(link_type).value)
        return [_link_from_row(r) for r in self._conn.execute(sql + " ORDER BY managing_customer_id, type", params)]

    @_guard
    def link_count(self) -> int:
        return self._conn.execute("SELECT count(*) FROM client_links").fetchone()[0]

    @_guard
    def timeline(self, key: LinkKey) -> list[LinkEvent]:
        """Every event of one link, oldest first."""
        rows = self._conn.execute(
            f"{_EVENT_SELECT} WHERE client_entity_id = ? AND managing_customer_id = ? AND type = ? ORDER BY id",
            (int(key.client_entity_id), int(key.managing_customer_id), LinkType(key.type).value),
        ).fetchall()
        return [_event(r) for r in rows]

    @_guard
    def events(
        self, *, kind: str | None = None, source: str | None = None, since: datetime | None = None,
        limit: int | None = None,
    ) -> list[LinkEvent]:
        """Events of every link, newest first, optionally by kind, source and time (e.g. unanswered intents)."""
        where, params = ["1"], []  # type: ignore[var-annotated]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if since is not None:
            where.append("at >= ?")
            params.append(_to_us(since))
        sql = f"{_EVENT_SELECT} WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_event(r) for r in self._conn.execute(sql, params)]

    # ---------------------------------------------------------------- inbox

    def _inbox_where(
        self,
        customer_id: int,
        perspective: Perspective | None,
        stage: Stage | None,
        text: str | None,
        status: ClientLinkStatus | str | Iterable[ClientLinkStatus | str] | None,
        now: datetime,
    ) -> tuple[str, list[Any]]:
        cid = int(customer_id)
        params: list[Any] = []
        sent = "l.managing_customer_id = ?"
        received = "l.client_customer_id = ?"
        if perspective == Perspective.SENT:
            where = [sent]
            params.append(cid)
            if stage is not None:
                where.append(stage_predicate_sql(Perspective.SENT, stage, now))
        elif perspective == Perspective.RECEIVED:
            where = [received]
            params.append(cid)
            if stage is not None:
                where.append(stage_predicate_sql(Perspective.RECEIVED, stage, now))
        elif stage is None:
            where = [f"({sent} OR {received})"]
            params += [cid, cid]
        else:
            # A link with both sides ours counts as sent (hence "!=" on the received side).
            where = [
                f"(({sent} AND {stage_predicate_sql(Perspective.SENT, stage, now)}) OR "
                f"({received} AND l.managing_customer_id != ? AND "
                f"{stage_predicate_sql(Perspective.RECEIVED, stage, now)}))"
            ]
            params += [cid, cid, cid]
        if status is not None:
            values = [status] if isinstance(status, str) else list(status)
            where.append(f"l.status IN ({', '.join('?' * len(values))})")
            params += [_enum_value(v) for v in values]
        needle = _fold(text).strip() if text else ""
        if needle:
            where.append("instr(l.search_text, ?) > 0")
            params.append(needle)
        return " AND ".join(where), params

    @_guard
    def inbox_page(
        self,
        *,
        customer_id: int,
        perspective: Perspective | None = None,
        stage: Stage | None = None,
        text: str | None = None,
        status: ClientLinkStatus | str | Iterable[ClientLinkStatus | str] | None = None,
        sort: str = "client",
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
        now: datetime,
    ) -> list[InboxRow]:
        """One page of the inbox of ``customer_id`` (the viewer's customer).

        ``perspective``: SENT (the viewer's customer manages), RECEIVED (it owns the client entity) or None (both).
        ``stage`` as rules.stage at ``now``; ``text`` a case-insensitive substring of client name/number/id, managing
        customer name, link name or note; ``status`` one status or several; ``sort`` one of SORTS.
        """
        where, params = self._inbox_where(customer_id, perspective, stage, text, status, now)
        if perspective is None:
            persp_sql = f"CASE WHEN l.managing_customer_id = {int(customer_id)} THEN 'sent' ELSE 'received' END"
            stage_expr = (
                f"CASE WHEN l.managing_customer_id = {int(customer_id)} THEN ({stage_sql(Perspective.SENT, now)})"
                f" ELSE ({stage_sql(Perspective.RECEIVED, now)}) END"
            )
        else:
            persp_sql = _lit(perspective.value)
            stage_expr = stage_sql(perspective, now)
        sql = (
            f"SELECT {_INBOX_COLS}, {persp_sql}, {stage_expr} FROM client_links l WHERE {where}"
            f" ORDER BY {_sort_terms(sort, descending)} LIMIT ? OFFSET ?"
        )
        rows = self._conn.execute(sql, [*params, int(limit), int(offset)]).fetchall()
        persp_by_value = {p.value: p for p in Perspective}
        out = []
        for r in rows:
            out.append(
                InboxRow(
                    key=LinkKey(r[0], r[1], _ltype(r[2])),
                    client_entity_name=r[3],
                    client_entity_number=r[4],
                    status=_status(r[5]),
                    is_bill_to_client=None if r[6] is None else bool(r[6]),
                    invited_at=_from_us(r[7]),
                    last_modified=_from_us(r[8]),
                    managing_customer_name=r[9],
                    name=r[10],
                    note=r[11],
                    perspective=persp_by_value[r[12]],
                    stage=_STAGE_BY_VALUE[r[13]],
                )
            )
        return out

    @_guard
    def inbox_count(
        self,
        *,
        customer_id: int,
        perspective: Perspective | None = None,
        stage: Stage | None = None,
        text: str | None = None,
        status: ClientLinkStatus | str | Iterable[ClientLinkStatus | str] | None = None,
        now: datetime,
    ) -> int:
        """How many links ``inbox_page`` pages through with the same filters."""
        where, params = self._inbox_where(customer_id, perspective, stage, text, status, now)
        return self._conn.execute(f"SELECT count(*) FROM client_links l WHERE {where}", params).fetchone()[0]

    @_guard
    def stage_counts(
        self, customer_id: int, now: datetime, *, perspective: Perspective | None = None, text: str | None = None
    ) -> dict[Stage, int]:
        """Links per stage (every stage present, zeros included), for both perspectives unless one is given."""
        counts = {s: 0 for s in Stage}
        persps = [perspective] if perspective is not None else [Perspective.SENT, Perspective.RECEIVED]
        needle = _fold(text).strip() if text else ""
        for p in persps:
            col = "managing_customer_id" if p == Perspective.SENT else "client_customer_id"
            where = [f"l.{col} = ?"]
            params: list[Any] = [int(customer_id)]
            if p == Perspective.RECEIVED and perspective is None:
                where.append("l.managing_customer_id != ?")
                params.append(int(customer_id))
            if needle:
                where.append("instr(l.search_text, ?) > 0")
                params.append(needle)
            sql = f"SELECT {stage_sql(p, now)} AS st, count(*) FROM client_links l WHERE {' AND '.join(where)} GROUP BY st"
            for st, n in self._conn.execute(sql, params):
                counts[_STAGE_BY_VALUE[st]] += n
        return counts

    # ---------------------------------------------------------------- hierarchy and tree

    @_guard
    def customer(self, customer_id: int) -> Customer | None:
        r = self._conn.execute(
            "SELECT id, name, number, life_cycle_status, financial_status, market_country, market_language"
            " FROM customers WHERE id = ?",
            (int(customer_id),),
        ).fetchone()
        if r is None:
            return None
        return Customer(r[0], r[1] or "", r[2], r[3] or "Active", r[4], r[5], r[6])

    @_guard
    def account(self, account_id: int) -> Account | None:
        r = self._conn.execute(
            "SELECT id, name, number, parent_customer_id, bill_to_customer_id, life_cycle_status, financial_status,"
            " currency_code, pause_reason, prepaid FROM accounts WHERE id = ?",
            (int(account_id),),
        ).fetchone()
        if r is None:
            return None
        agencies = tuple(
            a for (a,) in self._conn.execute(
                "SELECT agency_customer_id FROM account_agencies WHERE account_id = ? ORDER BY agency_customer_id",
                (r[0],),
            )
        )
        return Account(r[0], r[1] or "", r[2], r[3], r[4], r[5] or "Active", r[6], r[7], r[8],
                       None if r[9] is None else bool(r[9]), agencies)

    @_guard
    def user(self, user_id: int) -> User | None:
        """A user with roles and reachable accounts as the sync stored them."""
        r = self._conn.execute(
            "SELECT id, user_name, customer_id, first_name, last_name, email, phone, life_cycle_status"
            " FROM users WHERE id = ?",
            (int(user_id),),
        ).fetchone()
        if r is None:
            return None
        access: dict[tuple[int, str], list[int]] = {}
        for account_id, via, source in self._conn.execute(
            "SELECT account_id, via_customer_id, source FROM user_accounts WHERE user_id = ? ORDER BY account_id",
            (r[0],),
        ):
            access.setdefault((via, source), []).append(account_id)
        roles = []
        for customer_id, role_id, permission, all_accounts in self._conn.execute(
            "SELECT customer_id, role_id, customer_link_permission, all_accounts FROM user_roles WHERE user_id = ?"
            " ORDER BY customer_id, role_id",
            (r[0],),
        ):
            role = Role.parse(role_id)
            if role is None:
                continue
            roles.append(
                CustomerRole(
                    customer_id=customer_id,
                    role=role,
                    account_ids=None if all_accounts else tuple(access.get((customer_id, "account"), ())),
                    linked_account_ids=tuple(access.get((customer_id, "linked"), ())),
                    customer_link_permission=permission,
                )
            )
        return User(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or "Active", tuple(roles))

    @_guard
    def agency_users(self, customer_id: int) -> list[TreeUser]:
        """Users with a role at ``customer_id``, by name, with their role there and how many accounts they reach."""
        rows = self._conn.execute(
            """SELECT u.id, u.user_name, u.customer_id, u.first_name, u.last_name, group_concat(r.role_id),
                      (SELECT count(*) FROM user_accounts ua WHERE ua.user_id = u.id)
               FROM users u JOIN user_roles r ON r.user_id = u.id AND r.customer_id = ?
               GROUP BY u.id ORDER BY u.user_name COLLATE NOCASE, u.id""",
            (int(customer_id),),
        ).fetchall()
        out = []
        for uid, uname, ucid, first, last, role_ids, n in rows:
            roles = tuple(
                CustomerRole(int(customer_id), role)
                for role in (Role.parse(x) for x in str(role_ids).split(","))
                if role is not None
            )
            u = User(uid, uname, ucid, first, last, roles=roles)
            out.append(TreeUser(uid, uname, u.display_name, u.role_at(int(customer_id)), n))
        return out

    @_guard
    def user_accounts_count(self, user_id: int) -> int:
        return self._conn.execute(
            "SELECT count(*) FROM user_accounts WHERE user_id = ?", (int(user_id),)
        ).fetchone()[0]

    @_guard
    def user_accounts(self, user_id: int, offset: int = 0, limit: int = 100) -> list[TreeAccount]:
        """A page of the accounts a user reaches (by name), each with its link to the customer it is reached
        through. An account reachable through two customers appears once per customer."""
        rows = self._conn.execute(
            f"""SELECT ua.account_id, a.name, a.number, a.parent_customer_id, ua.via_customer_id,
                       l.status, l.is_bill_to_client, l.invited_at
                FROM user_accounts ua
                LEFT JOIN accounts a ON a.id = ua.account_id
                LEFT JOIN client_links l ON l.client_entity_id = ua.account_id
                     AND l.managing_customer_id = ua.via_customer_id AND l.type = {_lit(LinkType.AccountLink.value)}
                WHERE ua.user_id = ?
                ORDER BY a.name IS NULL, a.name COLLATE NOCASE, ua.account_id, ua.via_customer_id
                LIMIT ? OFFSET ?""",
            (int(user_id), int(limit), int(offset)),
        ).fetchall()
        return [_tree_account(r) for r in rows]

    @_guard
    def client_customers_count(self, agency_customer_id: int) -> int:
        return self._conn.execute(
            "SELECT count(DISTINCT coalesce(client_customer_id, -1)) FROM client_links WHERE managing_customer_id = ?",
            (int(agency_customer_id),),
        ).fetchone()[0]

    @_guard
    def client_customers(self, agency_customer_id: int, offset: int = 0, limit: int = 100) -> list[TreeCustomer]:
        """A page of the client customers that have links with the agency, by name; links whose client owner is
        unknown come last under ``customer_id`` None."""
        rows = self._conn.execute(
            f"""SELECT g.cid, c.name, c.number, g.n, g.cust_status
                FROM (SELECT l.client_customer_id AS cid, count(*) AS n,
                             max(CASE WHEN l.type = {_lit(LinkType.CustomerLink.value)} THEN l.status END) AS cust_status
                      FROM client_links l WHERE l.managing_customer_id = ?
                      GROUP BY l.client_customer_id) g
                LEFT JOIN customers c ON c.id = g.cid
                ORDER BY g.cid IS NULL, c.name IS NULL, c.name COLLATE NOCASE, g.cid
                LIMIT ? OFFSET ?""",
            (int(agency_customer_id), int(limit), int(offset)),
        ).fetchall()
        return [TreeCustomer(r[0], r[1], r[2], r[3], _status(r[4])) for r in rows]

    def _customer_accounts_sql(self, customer_id: int | None) -> tuple[str, list[Any]]:
        acct = _lit(LinkType.AccountLink.value)
        if customer_id is None:
            # Links of the agency whose client's owner is unknown.
            return (
                f"""SELECT l.client_entity_id AS id, l.client_entity_name AS name, l.client_entity_number AS number,
                           NULL AS parent, l.managing_customer_id AS via, l.status, l.is_bill_to_client, l.invited_at
                    FROM client_links l
                    WHERE l.managing_customer_id = :agency AND l.type = {acct} AND l.client_customer_id IS NULL""",
                [],
            )
        return (
            f"""SELECT a.id AS id, a.name AS name, a.number AS number, a.parent_customer_id AS parent,
                       :agency AS via, l.status, l.is_bill_to_client, l.invited_at
                FROM accounts a
                LEFT JOIN client_links l ON l.client_entity_id = a.id AND l.managing_customer_id = :agency
                     AND l.type = {acct}
                WHERE a.parent_customer_id = :cid
                UNION ALL
                SELECT l.client_entity_id, l.client_entity_name, l.client_entity_number, l.client_customer_id,
                       l.managing_customer_id, l.status, l.is_bill_to_client, l.invited_at
                FROM client_links l
                WHERE l.client_customer_id = :cid AND l.managing_customer_id = :agency AND l.type = {acct}
                  AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = l.client_entity_id)""",
            [],
        )

    @_guard
    def customer_accounts_count(self, customer_id: int | None, *, agency_customer_id: int) -> int:
        sql, _ = self._customer_accounts_sql(customer_id)
        return self._conn.execute(
            f"SELECT count(*) FROM ({sql})", {"agency": int(agency_customer_id), "cid": customer_id}
        ).fetchone()[0]

    @_guard
    def customer_accounts(
        self, customer_id: int | None, *, agency_customer_id: int, offset: int = 0, limit: int = 100
    ) -> list[TreeAccount]:
        """A page of a client customer's accounts (by name), each with its link to the agency (if any).

        ``customer_id`` None lists the agency's account links whose owning customer is unknown."""
        sql, _ = self._customer_accounts_sql(customer_id)
        rows = self._conn.execute(
            f"SELECT * FROM ({sql}) ORDER BY name IS NULL, name COLLATE NOCASE, id LIMIT :limit OFFSET :offset",
            {"agency": int(agency_customer_id), "cid": customer_id, "limit": int(limit), "offset": int(offset)},
        ).fetchall()
        return [_tree_account(r) for r in rows]

    # ---------------------------------------------------------------- sync runs

    @_guard
    def last_sync(self) -> SyncRun | None:
        """The most recent sync run, whatever its outcome (it may still be running)."""
        row = self._conn.execute(f"{_RUN_SELECT} ORDER BY id DESC LIMIT 1").fetchone()
        return _run(row) if row else None

    @_guard
    def last_ok_sync(self) -> SyncRun | None:
        """The most recent sync that completed: the state the cache shows."""
        row = self._conn.execute(f"{_RUN_SELECT} WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1").fetchone()
        return _run(row) if row else None

    @_guard
    def sync_runs(self, limit: int = 20) -> list[SyncRun]:
        return [_run(r) for r in self._conn.execute(f"{_RUN_SELECT} ORDER BY id DESC LIMIT ?", (int(limit),))]

    def age(self, now: datetime) -> timedelta | None:
        """How old the cached state is: ``now`` minus the end of the last completed sync (None: never synced)."""
        run = self.last_ok_sync()
        if run is None or run.finished_at is None:
            return None
        return now.astimezone(timezone.utc) - run.finished_at if now.tzinfo else now.replace(
            tzinfo=timezone.utc) - run.finished_at


_EVENT_SELECT = (
    "SELECT id, client_entity_id, managing_customer_id, type, at, kind, from_status, to_status, source,"
    " actor_user_id, detail FROM link_events"
)
_RUN_SELECT = (
    "SELECT id, started_at, finished_at, outcome, customers, accounts, users, links, events, message FROM sync_runs"
)


def _event(r: Sequence[Any]) -> LinkEvent:
    return LinkEvent(
        id=r[0],
        key=LinkKey(r[1], r[2], _ltype(r[3])),
        at=_from_us(r[4]),  # type: ignore[arg-type]
        kind=r[5],
        from_status=_status(r[6]),
        to_status=_status(r[7]),
        source=r[8],
        actor_user_id=r[9],
        detail=r[10],
    )


def _run(r: Sequence[Any]) -> SyncRun:
    return SyncRun(r[0], _from_us(r[1]), _from_us(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9])  # type: ignore[arg-type]


def _tree_account(r: Sequence[Any]) -> TreeAccount:
    return TreeAccount(
        account_id=r[0],
        name=r[1],
        number=r[2],
        parent_customer_id=r[3],
        via_customer_id=r[4],
        link_status=_status(r[5]),
        is_bill_to_client=None if r[6] is None else bool(r[6]),
        invited_at=_from_us(r[7]),
    )


# --------------------------------------------------------------------------------------------------------------------
# Snapshot writer
# --------------------------------------------------------------------------------------------------------------------


class SnapshotWriter:
    """Stages one full sync and swaps it in atomically. Use from the thread that owns the Cache.

    Only what was staged is replaced: a kind of row (customers, accounts, users, links) whose ``add_*`` was never
    called keeps its previous rows; calling ``add_links([])`` states that there are no links.
    """

    _TABLES = ("snap_customers", "snap_accounts", "snap_account_agencies", "snap_users", "snap_user_roles",
               "snap_user_accounts", "snap_links")

    def __init__(self, cache: Cache, run_id: int, started_at: datetime):
        self.cache = cache
        self.run_id = run_id
        self.started_at = started_at
        self.open = True
        self._provided: set[str] = set()
        self._meta: dict[str, str | None] = {}
        self._counts = {"customers": 0, "accounts": 0, "users": 0, "links": 0}
        conn = cache._conn
        for t in self._TABLES:
            conn.execute(f"DROP TABLE IF EXISTS temp.{t}")
        conn.execute("CREATE TEMP TABLE snap_customers (id INTEGER PRIMARY KEY, name, number, life_cycle_status,"
                     " financial_status, market_country, market_language)")
        conn.execute("CREATE TEMP TABLE snap_accounts (id INTEGER PRIMARY KEY, name, number, parent_customer_id,"
                     " bill_to_customer_id, life_cycle_status, financial_status, currency_code, pause_reason, prepaid)")
        conn.execute("CREATE TEMP TABLE snap_account_agencies (account_id, agency_customer_id,"
                     " PRIMARY KEY (account_id, agency_customer_id))")
        conn.execute("CREATE TEMP TABLE snap_users (id INTEGER PRIMARY KEY, user_name, customer_id, first_name,"
                     " last_name, email, phone, life_cycle_status)")
        conn.execute("CREATE TEMP TABLE snap_user_roles (user_id, customer_id, role_id, customer_link_permission,"
                     " all_accounts, PRIMARY KEY (user_id, customer_id, role_id))")
        conn.execute("CREATE TEMP TABLE snap_user_accounts (user_id, account_id, via_customer_id, source,"
                     " PRIMARY KEY (user_id, account_id, via_customer_id))")
        cache._create_link_stage("snap_links")

    def _check_open(self) -> None:
        if not self.open:
            raise RuntimeError("this snapshot was already committed or aborted")

    def _stage(self, table_sql: dict[str, str], rows: dict[str, list[tuple]]) -> None:
        conn = self.cache._conn
        conn.execute("BEGIN")
        try:
            for table, sql in table_sql.items():
                if rows[table]:
                    conn.executemany(sql, rows[table])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def add_customers(self, customers: Iterable[Customer]) -> int:
        """Stage customers (batched); returns how many were staged by this call."""
        self._check_open()
        self._provided.add("customers")
        n = 0
        sql = {"c": "INSERT OR REPLACE INTO temp.snap_customers VALUES (?, ?, ?, ?, ?, ?, ?)"}
        for chunk in _batches(customers):
            rows = [(int(c.id), c.name, c.number, c.life_cycle_status, c.financial_status, c.market_country,
                     c.market_language) for c in chunk]
            self._run(lambda: self._stage(sql, {"c": rows}))
            n += len(rows)
        self._counts["customers"] += n
        return n

    def add_accounts(self, accounts: Iterable[Account]) -> int:
        """Stage accounts with their linked agencies (batched)."""
        self._check_open()
        self._provided.add("accounts")
        n = 0
        sql = {
            "a": "INSERT OR REPLACE INTO temp.snap_accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            "g": "INSERT OR IGNORE INTO temp.snap_account_agencies VALUES (?, ?)",
        }
        for chunk in _batches(accounts):
            rows = {
                "a": [(int(a.id), a.name, a.number, int(a.parent_customer_id), a.bill_to_customer_id,
                       a.life_cycle_status, a.financial_status, a.currency_code, a.pause_reason,
                       None if a.prepaid is None else int(bool(a.prepaid))) for a in chunk],
                "g": [(int(a.id), int(g)) for a in chunk for g in a.linked_agency_ids],
            }
            self._run(lambda: self._stage(sql, rows))
            n += len(chunk)
        self._counts["accounts"] += n
        return n

    def add_users(self, users: Iterable[User]) -> int:
        """Stage users with their roles and the accounts each role lists (batched)."""
        self._check_open()
        self._provided.add("users")
        n = 0
        sql = {
            "u": "INSERT OR REPLACE INTO temp.snap_users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            "r": "INSERT OR REPLACE INTO temp.snap_user_roles VALUES (?, ?, ?, ?, ?)",
            "x": "INSERT OR IGNORE INTO temp.snap_user_accounts VALUES (?, ?, ?, ?)",
        }
        for chunk in _batches(users, 200):
            rows: dict[str, list[tuple]] = {"u": [], "r": [], "x": []}
            for u in chunk:
                rows["u"].append((int(u.id), u.user_name, u.customer_id, u.first_name, u.last_name, u.email, u.phone,
                                  u.life_cycle_status))
                for r in u.roles:
                    rows["r"].append((int(u.id), int(r.customer_id), int(r.role), r.customer_link_permission,
                                      1 if r.account_ids is None else 0))
                    for a in r.account_ids or ():
                        rows["x"].append((int(u.id), int(a), int(r.customer_id), "account"))
                    for a in r.linked_account_ids:
                        rows["x"].append((int(u.id), int(a), int(r.customer_id), "linked"))
            self._run(lambda: self._stage(sql, rows))
            n += len(chunk)
        self._counts["users"] += n
        return n

    def add_links(self, links: Iterable[ClientLink]) -> int:
        """Stage client links (batched; a repeated identity keeps the last one staged)."""
        self._check_open()
        self._provided.add("links")
        n = self._run(lambda: self.cache._stage_links("snap_links", links))
        self._counts["links"] += n
        return n

    def set_meta(self, key: str, value: str | None) -> None:
        """A profile fact written with the snapshot's commit (None removes it)."""
        self._check_open()
        self._meta[key] = value

    def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except sqlite3.Error as exc:
            translated = _translate(exc, self.cache.path)
            if translated is None:
                raise
            raise translated from exc

    def commit(self, now: datetime) -> SyncRun:
        """Replace the cached state by the staged one in ONE transaction, append a ``change`` event (source
        ``sync``) for every link that changed status, appeared or disappeared, and record the run as ok."""
        self._check_open()
        return self._run(lambda: self._commit(now))

    def _commit(self, now: datetime) -> SyncRun:
        cache, conn = self.cache, self.cache._conn
        now_us = _to_us(now)
        assert now_us is not None
        events = 0
        with cache._write():
            p = self._provided
            if "customers" in p:
                conn.execute("DELETE FROM main.customers")
                conn.execute("INSERT INTO main.customers SELECT * FROM temp.snap_customers")
            if "accounts" in p:
                conn.execute("DELETE FROM main.accounts")  # cascades to account_agencies
                conn.execute("INSERT INTO main.accounts SELECT * FROM temp.snap_accounts")
                conn.execute(
                    "INSERT INTO main.account_agencies SELECT g.* FROM temp.snap_account_agencies g"
                    " WHERE g.account_id IN (SELECT id FROM main.accounts)"
                )
            if "users" in p:
                conn.execute("DELETE FROM main.users")  # cascades to user_roles, user_accounts
                conn.execute("INSERT INTO main.users SELECT * FROM temp.snap_users")
                conn.execute("INSERT INTO main.user_roles SELECT * FROM temp.snap_user_roles"
                             " WHERE user_id IN (SELECT id FROM main.users)")
                conn.execute("INSERT INTO main.user_accounts SELECT * FROM temp.snap_user_accounts"
                             " WHERE user_id IN (SELECT id FROM main.users)")
            if "users" in p or "accounts" in p:
                # Customer-level access (no AccountIds in the role) reaches every account the customer owns.
                conn.execute("DELETE FROM main.user_accounts WHERE source = 'customer'")
                conn.execute(
                    "INSERT OR IGNORE INTO main.user_accounts (user_id, account_id, via_customer_id, source)"
                    " SELECT r.user_id, a.id, r.customer_id, 'customer' FROM main.user_roles r"
                    " JOIN main.accounts a ON a.parent_customer_id = r.customer_id WHERE r.all_accounts = 1"
                )
            if "links" in p:
                events = cache._apply_staged_links("snap_links", now_us, "sync", None, full=True)
            elif "accounts" in p or "customers" in p:
                pass  # links keep their client_customer_id; the next link sync refreshes it
            for k, v in self._meta.items():
                if v is None:
                    conn.execute("DELETE FROM main.meta WHERE key = ?", (k,))
                else:
                    conn.execute("INSERT OR REPLACE INTO main.meta (key, value) VALUES (?, ?)", (k, str(v)))
            c = self._counts
            conn.execute(
                "UPDATE sync_runs SET finished_at = ?, outcome = 'ok', customers = ?, accounts = ?, users = ?,"
                " links = ?, events = ?, message = NULL WHERE id = ?",
                (now_us, c["customers"], c["accounts"], c["users"], c["links"], events, self.run_id),
            )
        self._close()
        # Fresh statistics let the planner pick the right inbox index; bounded cost.
        conn.execute("PRAGMA analysis_limit=1000")
        conn.execute("PRAGMA optimize")
        row = conn.execute(f"{_RUN_SELECT} WHERE id = ?", (self.run_id,)).fetchone()
        return _run(row)

    def abort(self, message: str, now: datetime, *, cancelled: bool = False) -> SyncRun:
        """Drop the staged rows and record the run as failed (or cancelled); the cached state is unchanged."""
        self._check_open()
        self._close()

        def record() -> SyncRun:
            with self.cache._write() as conn:
                conn.execute(
                    "UPDATE sync_runs SET finished_at = ?, outcome = ?, message = ? WHERE id = ?",
                    (_to_us(now), "cancelled" if cancelled else "failed", message, self.run_id),
                )
                return _run(conn.execute(f"{_RUN_SELECT} WHERE id = ?", (self.run_id,)).fetchone())

        return self._run(record)

    def _close(self) -> None:
        self.open = False
        conn = self.cache._conn
        for t in self._TABLES:
            conn.execute(f"DROP TABLE IF EXISTS temp.{t}")
        if self.cache._snapshot is self:
            self.cache._snapshot = None
