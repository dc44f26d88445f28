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
import errno
import operator
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
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
    "stage_predicate_parts",
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
    primary = "_".join(name.split("_")[:2])  # SQLITE_READONLY_DBMOVED -> SQLITE_READONLY
    if primary in _UNAVAILABLE_REASONS:
        return CacheUnavailable(path, _UNAVAILABLE_REASONS[primary])
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
    # A type this version does not know is kept as its string rather than making the whole cache unreadable.
    return _TYPE_BY_VALUE.get(value, value)  # type: ignore[return-value]


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


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


_CUSTOMER_COLUMNS = "id, name, number, life_cycle_status, financial_status, market_country, market_language"


def _customer_from_row(r: Sequence[Any]) -> Customer:
    """A customers row (``_CUSTOMER_COLUMNS``) as a Customer."""
    return Customer(r[0], r[1] or "", r[2], r[3] or "Active", r[4], r[5], r[6])


def _json_pairs(v: Any) -> str | None:
    return json.dumps([list(p) for p in v]) if v else None


def _column_converter(attr: str) -> Callable[[Any], Any]:
    """How a non-None value of ClientLink field ``attr`` becomes its column value (as in _link_values_general)."""
    kind = _LINK_KINDS[attr]
    if kind == "dt":
        return _to_us
    if kind == "bool":
        return lambda v: 1 if v else 0
    if kind == "int":
        return int
    if kind == "json":
        return _json_pairs
    return lambda v: v if type(v) is str else _enum_value(v)


_TYPE_INDEX = LINK_COLUMNS.index("type")
_LINK_GETTER = operator.attrgetter(*LINK_COLUMNS)
_LINK_CONVERTERS = tuple(_column_converter(a) for a in LINK_COLUMNS)
_SEARCH_GETTER = operator.attrgetter("client_entity_name", "client_entity_number", "client_entity_id",
                                     "managing_customer_name", "name", "note")


def _link_values(link: ClientLink) -> list[Any]:
    """One ClientLink as column values in LINK_COLUMNS order, then derived_invited_at and search_text.

    The same values as :func:`_link_values_general` (a test compares them), in a third of the time: a sync stores
    100,000 links, and this was 1.2 s of it. Links this fast path does not know (an unexpected value type) take the
    general one."""
    if link.client_entity_id is None or link.managing_customer_id is None:
        return _link_values_general(link)
    try:
        out = [None if v is None else conv(v) for v, conv in zip(_LINK_GETTER(link), _LINK_CONVERTERS)]
    except (TypeError, ValueError, AttributeError):
        return _link_values_general(link)
    out[_TYPE_INDEX] = _enum_value(link.link_type)
    out.append(_to_us(rules.invited_at(link)))
    out.append("\x1f".join("" if v is None else str(v).casefold() for v in _SEARCH_GETTER(link)))
    return out


def _link_values_general(link: ClientLink) -> list[Any]:
    """One ClientLink as column values in LINK_COLUMNS order, then derived_invited_at and search_text."""
    if link.client_entity_id is None or link.managing_customer_id is None:
        raise ValueError(
            "Cannot store a client link without ClientEntityId and ManagingCustomerId (got client entity "
            f"{link.client_entity_id or link.client_entity_number!r}, managing customer "
            f"{link.managing_customer_id or link.managing_customer_number!r})."
        )
    out: list[Any] = []
    for attr in LINK_COLUMNS:
        v = getattr(link, attr)
        kind = _LINK_KINDS[attr]
        if attr == "type":
            v = _enum_value(link.link_type)
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


def _status_conditions(g: _StageGroup, status: str) -> list[str]:
    """Mutually exclusive conditions on ``status`` whose union is the group's statuses. For the group that also
    takes statuses this version does not know: every value between (or beyond) the known ones, as ranges an index
    can seek, rather than a NOT IN that scans."""
    parts = [f"{status} IN ({', '.join(map(_lit, g.statuses))})"] if g.statuses else []
    if g.covers_unknown:
        known = sorted(s.value for s in ClientLinkStatus)
        parts.append(f"{status} < {_lit(known[0])}")
        parts += [f"({status} > {_lit(a)} AND {status} < {_lit(b)})" for a, b in zip(known, known[1:])]
        parts.append(f"{status} > {_lit(known[-1])}")
    if g.covers_null:
        parts.append(f"{status} IS NULL")
    return parts


def _status_condition(g: _StageGroup, plan: tuple[_StageGroup, ...], status: str) -> str:
    parts = _status_conditions(g, status)
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


def stage_predicate_parts(perspective: Perspective, stage: Stage, now: datetime, *, alias: str = "l") -> list[str]:
    """Mutually exclusive SQL conditions whose union is the rows at ``stage`` at ``now``: each a status set, maybe
    with one range of ``invited_at`` — an index range of (customer, status, invited_at), so counts add up per part."""
    plan = _stage_plan(perspective)
    now_us = _to_us(now)
    assert now_us is not None
    status, inv = f"{alias}.status", f"{alias}.invited_at"
    parts = []
    for g in plan:
        if stage not in g.outcomes:
            continue
        for cond in _status_conditions(g, status):
            if g.outcomes == {stage}:
                parts.append(cond)
                continue
            if g.when_no_invitation == stage:
                parts.append(f"({cond} AND {inv} IS NULL)")
            prev: tuple[str | None, int | None, Stage] | None = None
            for op, b, st in g.cascade:
                if st == stage:
                    bounds = [cond, f"{inv} IS NOT NULL"]
                    if prev is not None:
                        bounds.append(_cmp_lower(prev[0], inv, now_us - prev[1]))  # type: ignore[arg-type,operator]
                    if op is not None:
                        bounds.append(_cmp_upper(op, inv, now_us - b))  # type: ignore[operator]
                    parts.append("(" + " AND ".join(bounds) + ")")
                prev = (op, b, st)
    return parts


def stage_predicate_sql(perspective: Perspective, stage: Stage, now: datetime, *, alias: str = "l") -> str:
    """A SQL condition true for the rows whose stage at ``now`` is ``stage`` (the OR of stage_predicate_parts)."""
    parts = stage_predicate_parts(perspective, stage, now, alias=alias)
    return "(" + " OR ".join(parts) + ")" if parts else "0"


# --------------------------------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------------------------------


# Literal on purpose: a shipped migration never changes (a new ClientLink element needs a new migration).
_V1_SQL = """
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
    type TEXT NOT NULL,
    client_entity_id INTEGER NOT NULL,
    client_entity_number TEXT,
    client_entity_name TEXT,
    managing_customer_id INTEGER NOT NULL,
    managing_customer_number TEXT,
    managing_customer_name TEXT,
    note TEXT,
    name TEXT,
    inviter_email TEXT,
    inviter_name TEXT,
    inviter_phone TEXT,
    is_bill_to_client INTEGER,
    start_date INTEGER,
    status TEXT,
    suppress_notification INTEGER NOT NULL DEFAULT 0,
    last_modified_date_time INTEGER,
    last_modified_by_user_id INTEGER,
    timestamp TEXT,
    forward_compatibility_map TEXT,
    customer_link_permission TEXT,
    client_entity_customer_number TEXT,
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
    """v2, the inbox and the tree at 100,000 links.

    Links get their client's owning customer and a case-folded search text (both backfilled); a pending link
    without its invitation time gets one; events get a ``kind`` (intents and outcomes of actions beside observed
    changes; existing rows are observed changes, and the append-only trigger forbids rewriting them anyway);
    runs get the pid of the syncing process (to tell an interrupted run from a live one); the tree gets sortable
    names (``user_accounts.account_name``, table ``agency_clients``, both filled by ``_refresh_derived`` after the
    migrations); and every inbox sort gets an index that also carries status and invitation time, so stage filters
    are answered from the index without reading rows.
    """
    import sqlite_utils  # lazily: only a new or older cache pays for it

    # client_links is rebuilt with an explicit INTEGER PRIMARY KEY: the search index refers to links by id, and
    # VACUUM may renumber the implicit rowids of a table without one.
    _exec_script(
        conn,
        """
        CREATE TABLE client_links_v2 (
            id INTEGER PRIMARY KEY,
            type TEXT NOT NULL,
            client_entity_id INTEGER NOT NULL,
            client_entity_number TEXT,
            client_entity_name TEXT,
            managing_customer_id INTEGER NOT NULL,
            managing_customer_number TEXT,
            managing_customer_name TEXT,
            note TEXT,
            name TEXT,
            inviter_email TEXT,
            inviter_name TEXT,
            inviter_phone TEXT,
            is_bill_to_client INTEGER,
            start_date INTEGER,
            status TEXT,
            suppress_notification INTEGER NOT NULL DEFAULT 0,
            last_modified_date_time INTEGER,
            last_modified_by_user_id INTEGER,
            timestamp TEXT,
            forward_compatibility_map TEXT,
            customer_link_permission TEXT,
            client_entity_customer_number TEXT,
            first_seen_at INTEGER NOT NULL,
            invited_at INTEGER,
            client_customer_id INTEGER,
            search_text TEXT NOT NULL DEFAULT '',
            UNIQUE (client_entity_id, managing_customer_id, type)
        );
        INSERT INTO client_links_v2 (type, client_entity_id, client_entity_number, client_entity_name,
            managing_customer_id, managing_customer_number, managing_customer_name, note, name, inviter_email,
            inviter_name, inviter_phone, is_bill_to_client, start_date, status, suppress_notification,
            last_modified_date_time, last_modified_by_user_id, timestamp, forward_compatibility_map,
            customer_link_permission, client_entity_customer_number, first_seen_at, invited_at)
        SELECT type, client_entity_id, client_entity_number, client_entity_name,
            managing_customer_id, managing_customer_number, managing_customer_name, note, name, inviter_email,
            inviter_name, inviter_phone, is_bill_to_client, start_date, status, suppress_notification,
            last_modified_date_time, last_modified_by_user_id, timestamp, forward_compatibility_map,
            customer_link_permission, client_entity_customer_number, first_seen_at, invited_at
        FROM client_links ORDER BY rowid;
        DROP TABLE client_links;
        ALTER TABLE client_links_v2 RENAME TO client_links;
        """,
    )
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    db["link_events"].add_column("kind", str, not_null_default="change")
    db["sync_runs"].add_column("pid", int)
    db["user_accounts"].add_column("account_name", str)
    db["agency_clients"].create(
        {
            "agency_customer_id": int,
            "customer_id": int,  # NULL: links whose client's owner is unknown
            "grp": int,  # 0 known customer, 1 unknown owner (listed last)
            "name": str,
            "number": str,
            "link_count": int,
            "customer_link_status": str,
        },
        not_null={"agency_customer_id", "grp", "link_count"},
    )

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
        """UPDATE client_links SET client_customer_id = CASE
                WHEN type = 'CustomerLink' THEN client_entity_id
                ELSE COALESCE((SELECT a.parent_customer_id FROM accounts a WHERE a.id = client_entity_id),
                              (SELECT c.id FROM customers c WHERE c.number = client_entity_customer_number
                               ORDER BY c.id LIMIT 1))
            END"""
    )
    conn.execute(
        "UPDATE client_links SET invited_at = COALESCE(last_modified_date_time, first_seen_at)"
        " WHERE invited_at IS NULL AND status = 'LinkPending'"
    )
    _exec_script(
        conn,
        """
        CREATE INDEX links_sent_client ON client_links (managing_customer_id, client_entity_name COLLATE NOCASE,
                                                        client_entity_id, status, invited_at);
        CREATE INDEX links_sent_status ON client_links (managing_customer_id, status, invited_at);
        CREATE INDEX links_sent_invited ON client_links (managing_customer_id, invited_at, status);
        CREATE INDEX links_sent_changed ON client_links (managing_customer_id, last_modified_date_time, status,
                                                         invited_at);
        CREATE INDEX links_by_client ON client_links (client_customer_id, managing_customer_id, type, status,
                                                      invited_at);
        CREATE INDEX user_accounts_by_name ON user_accounts (user_id, account_name COLLATE NOCASE, account_id,
                                                             via_customer_id);
        CREATE INDEX agency_clients_key ON agency_clients (agency_customer_id, customer_id);
        CREATE INDEX agency_clients_by_name ON agency_clients (agency_customer_id, grp, name COLLATE NOCASE,
                                                               customer_id);
        CREATE INDEX sync_runs_outcome ON sync_runs (outcome, id);
        """,
    )


#: Ordered migrations: ``MIGRATIONS[i]`` brings a cache from version i to i + 1. Never edit a shipped one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_v1, _migrate_v2)
SCHEMA_VERSION = len(MIGRATIONS)

_REQUIRED_TABLES = frozenset(
    {"meta", "customers", "accounts", "account_agencies", "users", "user_roles", "user_accounts", "client_links",
     "link_events", "sync_runs", "agency_clients"}
)


# --------------------------------------------------------------------------------------------------------------------
# Derived data: rebuilt from the base tables at will (after migrations, on commit), never migrated
# --------------------------------------------------------------------------------------------------------------------

_fts_probe: bool | None = None
#: The trigram index answers substrings of at least 3 characters; shorter needles scan.
_FTS_MIN_CHARS = 3
#: A needle with at least this many matches is "common": a first page is found faster by walking the sort index.
_DENSE_NEEDLE = 2000


def _fts_phrase(needle: str) -> str:
    """An FTS5 string literal: the needle matched as one phrase, every character literal."""
    return '"' + needle.replace('"', '""') + '"'


def _fts_available() -> bool:
    """Whether this Python's SQLite has FTS5 with the trigram tokenizer (SQLite 3.34+); probed once."""
    global _fts_probe
    if _fts_probe is None:
        try:
            probe = sqlite3.connect(":memory:")
            try:
                probe.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram case_sensitive 1')")
            finally:
                probe.close()
            _fts_probe = True
        except sqlite3.Error:
            _fts_probe = False
    return _fts_probe


_SEARCH_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS link_search_insert AFTER INSERT ON client_links
BEGIN
    INSERT INTO link_search (rowid, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER IF NOT EXISTS link_search_delete AFTER DELETE ON client_links
BEGIN
    DELETE FROM link_search WHERE rowid = old.id;
END;
CREATE TRIGGER IF NOT EXISTS link_search_update AFTER UPDATE OF search_text ON client_links
WHEN old.search_text IS NOT new.search_text
BEGIN
    DELETE FROM link_search WHERE rowid = old.id;
    INSERT INTO link_search (rowid, search_text) VALUES (new.id, new.search_text);
END;
"""


def _rebuild_search_index(conn: sqlite3.Connection) -> None:
    """(Re)create and fill ``link_search``: a trigram index of every link's case-folded search text, by link id,
    kept in step by triggers on client_links."""
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS link_search USING fts5(search_text, tokenize='trigram case_sensitive 1')"
    )
    conn.execute("DELETE FROM link_search")
    conn.execute("INSERT INTO link_search (rowid, search_text) SELECT id, search_text FROM client_links")
    _exec_script(conn, _SEARCH_TRIGGERS)
    conn.execute("DELETE FROM meta WHERE key = 'search_index_stale'")


def _drop_search_triggers(conn: sqlite3.Connection) -> None:
    """Without FTS5 the triggers would make every link write fail; dropping them needs no FTS5."""
    for name in ("link_search_insert", "link_search_delete", "link_search_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def _refresh_account_names(conn: sqlite3.Connection) -> None:
    """Sort names of the accounts users reach (the account's name, else its link's, else its number or id)."""
    name = f"""COALESCE(
                (SELECT COALESCE(a.name, a.number) FROM accounts a WHERE a.id = user_accounts.account_id),
                (SELECT l.client_entity_name FROM client_links l WHERE l.client_entity_id = user_accounts.account_id
                   AND l.type = {_lit(LinkType.AccountLink.value)} ORDER BY l.id LIMIT 1),
                CAST(user_accounts.account_id AS TEXT))"""
    conn.execute(f"UPDATE user_accounts SET account_name = {name} WHERE account_name IS NOT {name}")


_AGENCY_CLIENTS_SELECT = f"""
    SELECT g.agency, g.cid, g.cid IS NULL, COALESCE(c.name, c.number, CAST(g.cid AS TEXT)), c.number, g.n, g.cs
    FROM (SELECT managing_customer_id AS agency, client_customer_id AS cid, count(*) AS n,
                 max(CASE WHEN type = {_lit(LinkType.CustomerLink.value)} THEN status END) AS cs
          FROM client_links WHERE {{where}} GROUP BY client_customer_id, managing_customer_id) g
    LEFT JOIN customers c ON c.id = g.cid"""
_AGENCY_CLIENTS_INSERT = (
    "INSERT INTO agency_clients (agency_customer_id, customer_id, grp, name, number, link_count, customer_link_status)"
)


_AGENCY_CLIENTS_COLS = (
    "agency_customer_id", "customer_id", "grp", "name", "number", "link_count", "customer_link_status"
)


def _rebuild_agency_clients(conn: sqlite3.Connection) -> None:
    """Every (agency, client customer) pair with its link count: the clients level of the tree, pre-sorted.

    Computed aside (streamed from the links_by_client index), then only differing rows are written."""
    conn.execute("DROP TABLE IF EXISTS temp.agency_clients_new")
    conn.execute(  # typed: untyped columns would keep SQLite from using the index below
        "CREATE TEMP TABLE agency_clients_new (agency_customer_id INTEGER, customer_id INTEGER, grp INTEGER,"
        " name TEXT, number TEXT, link_count INTEGER, customer_link_status TEXT)"
    )
    conn.execute(
        f"INSERT INTO temp.agency_clients_new ({', '.join(_AGENCY_CLIENTS_COLS)})"
        + _AGENCY_CLIENTS_SELECT.format(where="1")
    )
    conn.execute("CREATE INDEX temp.agency_clients_new_key ON agency_clients_new (agency_customer_id, customer_id)")
    same = " AND ".join(f"n.{c} IS a.{c}" for c in _AGENCY_CLIENTS_COLS)
    conn.execute(
        f"DELETE FROM main.agency_clients AS a WHERE NOT EXISTS (SELECT 1 FROM temp.agency_clients_new n WHERE {same})"
    )
    conn.execute(
        f"INSERT INTO main.agency_clients ({', '.join(_AGENCY_CLIENTS_COLS)})"
        f" SELECT {', '.join('n.' + c for c in _AGENCY_CLIENTS_COLS)} FROM temp.agency_clients_new n"
        f" WHERE NOT EXISTS (SELECT 1 FROM main.agency_clients a WHERE {same})"
    )
    conn.execute("DROP TABLE temp.agency_clients_new")


def _refresh_agency_clients(conn: sqlite3.Connection, pairs: Iterable[tuple[int, int | None]]) -> None:
    """Recompute the tree rows of some (agency, client customer) pairs after a targeted write."""
    for agency, cid in pairs:
        conn.execute(
            "DELETE FROM agency_clients WHERE agency_customer_id = ? AND customer_id IS ?", (agency, cid)
        )
        conn.execute(
            _AGENCY_CLIENTS_INSERT
            + _AGENCY_CLIENTS_SELECT.format(where="managing_customer_id = ? AND client_customer_id IS ?"),
            (agency, cid),
        )


def _refresh_derived(conn: sqlite3.Connection) -> None:
    _refresh_account_names(conn)
    _rebuild_agency_clients(conn)


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
    #: The customer owning the client entity, when the cache knows it (as ``StoredLink.client_customer_id``).
    client_customer_id: int | None = None
    #: That customer's name (read in the same query, so one query serves a whole inbox page).
    client_customer_name: str | None = None
    #: The link's ClientEntityCustomerNumber: names the owner while the account is not visible yet (pending).
    client_entity_customer_number: str | None = None

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
    """ORDER BY terms, in the column order of the sort's index (so a page is read straight off the index); every
    sort ends with the unique link id so pages never overlap."""
    d = "DESC" if descending else "ASC"
    if sort == "client":
        cols = ["l.client_entity_name COLLATE NOCASE", "l.client_entity_id", "l.status", "l.invited_at", "l.id"]
        return ", ".join(f"{c} {d}" for c in cols)
    if sort == "status":
        return ", ".join(f"{c} {d}" for c in ("l.status", "l.invited_at", "l.id"))
    if sort == "age":
        # Ascending age = most recent invitation first; links never seen pending have no age: always last.
        inv = "DESC" if not descending else "ASC"
        return f"l.invited_at {inv} NULLS LAST, l.status {inv}, l.id {inv}"
    if sort == "days_left":
        # Used for the pending part only (see Cache._days_left_ids): fewest days left first when ascending.
        return f"l.invited_at {d}, l.id {d}"
    if sort == "last_change":
        return f"l.last_modified_date_time {d} NULLS LAST, l.status {d}, l.invited_at {d}, l.id {d}"
    raise ValueError(f"Unknown inbox sort {sort!r}; use one of: {', '.join(SORTS)}.")


#: Inbox sort names: client name, status, age of the invitation, days left before expiry, last change.
SORTS: tuple[str, ...] = ("client", "status", "age", "days_left", "last_change")
#: The (managing customer, ...) index that serves each sort of the sent inbox.
_SORT_INDEX = {"client": "links_sent_client", "status": "links_sent_status", "age": "links_sent_invited",
               "days_left": "links_sent_status", "last_change": "links_sent_changed"}

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
        self._fts = False  # the trigram search index is present and usable
        self._fts_table = False  # the index exists in the file (it may be unusable with this Python's SQLite)

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
        """The schema version of an existing file (None for a new or empty file), read through SQLite read-only.

        Never with open()/close(): closing any descriptor of a file drops every POSIX lock the process holds on it,
        including the locks of this process's other SQLite connections (sqlite.org/howtocorrupt.html §2.2). Another
        process could then checkpoint and delete the WAL under the running app. SQLite shares locks between its own
        connections of one process (it defers closing a descriptor while others hold locks), so a read-only SQLite
        connection is safe.
        """
        try:
            if path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheUnavailable(path, exc.strerror or str(exc)) from exc
        if not os.access(path, os.R_OK):
            raise CacheUnavailable(path, os.strerror(errno.EACCES))
        try:
            # immutable: read the main file's header only (no -wal/-shm created, the file left untouched); a newer
            # version that sits only in the WAL is caught by _prepare through the real connection.
            probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise _translate(exc, path) or CacheUnavailable(path, str(exc)) from exc
        try:
            return int(probe.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            translated = _translate(exc, path)
            if isinstance(translated, CacheError) and not isinstance(translated, CacheCorrupt):
                raise translated from exc
            raise CacheCorrupt(path, "the file is not a SQLite database") from exc
        finally:
            probe.close()

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
        self._prepare_search_index()

    def _migrate(self) -> None:
        """Apply pending migrations, each in its own IMMEDIATE transaction (another process may race us), then
        rebuild the derived tables for the current code."""
        migrated = False
        while True:
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CacheTooNew(self.path, version)
                if version == SCHEMA_VERSION:
                    if migrated:
                        _refresh_derived(conn)
                    return
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                migrated = True

    def _prepare_search_index(self) -> None:
        """Create or repair the optional trigram index; without FTS5 the text filter scans (slower, same answers)."""
        exists = lambda: self._conn.execute(  # noqa: E731
            "SELECT 1 FROM sqlite_master WHERE name = 'link_search'"
        ).fetchone() is not None
        self._fts_table = exists()
        if not _fts_available():
            self._fts = False
            if self._fts_table and self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'link_search_insert'"
            ).fetchone():
                with self._write() as conn:
                    _drop_search_triggers(conn)
                    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('search_index_stale', '1')")
            return
        stale = self.meta_get("search_index_stale") is not None
        if not self._fts_table or stale:
            with self._write() as conn:
                # Re-check under the write lock: another process may just have built it.
                if not exists() or conn.execute("SELECT 1 FROM meta WHERE key = 'search_index_stale'").fetchone():
                    _rebuild_search_index(conn)
            self._fts_table = True
        self._fts = True

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
                try:
                    conn.execute("COMMIT")
                    return
                except BaseException:
                    if conn.in_transaction:  # e.g. the disk filled up at commit: never leave it half-open
                        conn.execute("ROLLBACK")
                    raise
            if conn.in_transaction:
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
            " PRIMARY KEY (client_entity_id, managing_customer_id, type)) WITHOUT ROWID"
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
        """Inside a write transaction: append change events versus the live rows, then write the staged links that
        differ (and, for a full snapshot, remove the links the service no longer returns). The search index
        follows through triggers. Returns the number of events appended."""
        conn = self._conn
        if self._fts_table and not self._fts:
            # The index exists but this SQLite cannot update it: have it rebuilt where it can.
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('search_index_stale', '1')")
        join = (
            "main.client_links l ON l.client_entity_id = s.client_entity_id"
            " AND l.managing_customer_id = s.managing_customer_id AND l.type = s.type"
        )
        events = conn.execute(
            f"""INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, kind, from_status,
                                         to_status, source, actor_user_id, detail)
                SELECT s.client_entity_id, s.managing_customer_id, s.type, ?, 'change', l.status, s.status, ?, ?,
                       CASE WHEN l.id IS NULL THEN 'first seen' END
                FROM temp.{stage} s LEFT JOIN {join}
                WHERE l.id IS NULL OR l.status IS NOT s.status
                ORDER BY s.client_entity_id, s.managing_customer_id, s.type""",
            (now_us, source, actor),
        ).rowcount
        bulk_search = False
        if full and self._fts:
            # A first sync (mostly new links): per-row index triggers cost ~2x a bulk build; build it after.
            staged = conn.execute(f"SELECT count(*) FROM temp.{stage}").fetchone()[0]
            live = conn.execute("SELECT count(*) FROM main.client_links").fetchone()[0]
            if staged > 5000 and live < staged // 2:
                _drop_search_triggers(conn)
                conn.execute("DROP TABLE IF EXISTS main.link_search")
                bulk_search = True
        if full:
            conn.execute("DROP TABLE IF EXISTS temp.gone_links")
            conn.execute(
                f"""CREATE TEMP TABLE gone_links AS SELECT l.id FROM main.client_links l
                    WHERE NOT EXISTS (SELECT 1 FROM temp.{stage} s WHERE s.client_entity_id = l.client_entity_id
                                      AND s.managing_customer_id = l.managing_customer_id AND s.type = l.type)"""
            )
            events += conn.execute(
                """INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, kind, from_status,
                                            to_status, source, actor_user_id, detail)
                   SELECT l.client_entity_id, l.managing_customer_id, l.type, ?, 'change', l.status, NULL, ?, ?,
                          'no longer returned by the service'
                   FROM temp.gone_links g JOIN main.client_links l ON l.id = g.id
                   ORDER BY l.client_entity_id, l.managing_customer_id, l.type""",
                (now_us, source, actor),
            ).rowcount
            conn.execute("DELETE FROM main.client_links WHERE id IN (SELECT id FROM temp.gone_links)")
            conn.execute("DROP TABLE temp.gone_links")

        pending = _lit(_PENDING)
        # When the pending invitation was made: the link's own account of it (rules.invited_at), else kept from
        # the previous observation while still pending, else first observed now; kept after it moves on.
        invited = (
            f"COALESCE(s.derived_invited_at, CASE WHEN s.status = {pending}"
            f" THEN CASE WHEN l.status = {pending} THEN COALESCE(l.invited_at, :now) ELSE :now END"
            f" ELSE l.invited_at END)"
        )
        owner = (
            f"CASE WHEN s.type = {_lit(LinkType.CustomerLink.value)} THEN s.client_entity_id"
            " ELSE COALESCE((SELECT a.parent_customer_id FROM main.accounts a WHERE a.id = s.client_entity_id),"
            " (SELECT c.id FROM main.customers c WHERE c.number = s.client_entity_customer_number"
            " ORDER BY c.id LIMIT 1), l.client_customer_id) END"
        )
        cols = ", ".join(_q(a) for a in LINK_COLUMNS)
        s_cols = ", ".join("s." + _q(a) for a in LINK_COLUMNS)
        updated = [*LINK_COLUMNS, "invited_at", "client_customer_id", "search_text"]
        set_sql = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in updated)
        # Only rows that differ reach the INSERT: a re-sync of an unchanged world writes (almost) nothing.
        differs = " OR ".join(
            [f"l.{_q(a)} IS NOT s.{_q(a)}" for a in LINK_COLUMNS]
            + ["l.search_text IS NOT s.search_text", f"l.invited_at IS NOT ({invited})",
               f"l.client_customer_id IS NOT ({owner})"]
        )
        conn.execute(
            f"""INSERT INTO main.client_links ({cols}, first_seen_at, invited_at, client_customer_id, search_text)
                SELECT {s_cols}, :now, {invited}, {owner}, s.search_text
                FROM temp.{stage} s LEFT JOIN {join}
                WHERE l.id IS NULL OR {differs}
                ON CONFLICT (client_entity_id, managing_customer_id, type) DO UPDATE SET {set_sql}""",
            {"now": now_us},
        )
        if bulk_search:
            _rebuild_search_index(conn)
        return events

    def _agency_client_pairs(self, stage: str) -> set[tuple[int, int | None]]:
        return set(
            self._conn.execute(
                f"""SELECT l.managing_customer_id, l.client_customer_id FROM temp.{stage} s
                    JOIN main.client_links l ON l.client_entity_id = s.client_entity_id
                     AND l.managing_customer_id = s.managing_customer_id AND l.type = s.type"""
            ).fetchall()
        )

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
                pairs = self._agency_client_pairs("upsert_links")
                self._apply_staged_links("upsert_links", _to_us(now), source, actor_user_id, full=False)  # type: ignore[arg-type]
                _refresh_agency_clients(conn, pairs | self._agency_client_pairs("upsert_links"))
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
                (int(key.client_entity_id), int(key.managing_customer_id), _enum_value(key.type), _to_us(at), kind,
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
            (int(key.client_entity_id), int(key.managing_customer_id), _enum_value(key.type)),
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
            (int(key.client_entity_id), int(key.managing_customer_id), _enum_value(key.type)),
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
        *,
        scan_text: bool = False,
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
        text_sql, text_params = self._text_condition(text, scan=scan_text)
        if text_sql:
            where.append(text_sql)
            params += text_params
        return " AND ".join(where), params

    def _text_condition(self, text: str | None, *, scan: bool = False) -> tuple[str | None, list[Any]]:
        """The inbox text filter: the trigram index for 3+ characters when available, else (or with ``scan``) a
        substring test on each row."""
        needle = "".join(ch for ch in _fold(text or "") if ch >= " " and ch != "\x7f").strip()
        if not needle:
            return None, []
        if self._fts and len(needle) >= _FTS_MIN_CHARS and not scan:
            return "l.id IN (SELECT rowid FROM link_search WHERE link_search MATCH ?)", [_fts_phrase(needle)]
        return "instr(l.search_text, ?) > 0", [needle]

    def _common_needle(self, text: str | None) -> bool:
        """Whether the index finds at least _DENSE_NEEDLE matches (it stops counting there, so this is cheap)."""
        sql, params = self._text_condition(text)
        if sql is None or not sql.startswith("l.id IN"):
            return False
        return self._conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM link_search WHERE link_search MATCH ? LIMIT ?)",
            [params[0], _DENSE_NEEDLE],
        ).fetchone()[0] >= _DENSE_NEEDLE

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
        # Deferred join: page through ids on the covering sort index (skipping `offset` rows costs index entries,
        # not row reads), then read the page's rows by id.
        order = _sort_terms(sort, descending)
        hint = ""
        if perspective == Perspective.SENT:
            # Walk the sort's index, which also carries status and invitation time: the stage filter is answered
            # from the index and the walk stops after the page (at worst one pass over the index). SQLite's planner
            # would rather filter by status and sort everything, up to 100x slower for a first page.
            if not self._text_condition(text)[0]:
                hint = f"INDEXED BY {_SORT_INDEX[sort]}"
            elif offset + limit <= 200 and self._common_needle(text):
                # A needle found everywhere ("acme"): reading its whole match list costs more than walking the
                # index until the first page is full.
                where, params = self._inbox_where(customer_id, perspective, stage, text, status, now, scan_text=True)
                hint = f"INDEXED BY {_SORT_INDEX[sort]}"
        if sort == "days_left":
            ids = self._days_left_ids(where, params, hint, descending, int(offset), int(limit))
        else:
            ids = [r[0] for r in self._conn.execute(
                f"SELECT l.id FROM client_links l {hint} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)],
            )]
        by_id: dict[int, tuple] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for r in self._conn.execute(
                f"SELECT {_INBOX_COLS}, {persp_sql}, {stage_expr}, l.id, l.client_customer_id,"
                f" (SELECT c.name FROM customers c WHERE c.id = l.client_customer_id),"
                f" l.client_entity_customer_number FROM client_links l"
                f" WHERE l.id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                by_id[r[14]] = r
        # A link removed by another process between the two reads simply drops out of this page.
        rows = [by_id[i] for i in ids if i in by_id]
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
                    client_customer_id=r[15],
                    client_customer_name=r[16],
                    client_entity_customer_number=r[17],
                )
            )
        return out

    def _days_left_ids(
        self, where: str, params: list[Any], hint: str, descending: bool, offset: int, limit: int
    ) -> list[int]:
        """Ids for the days-left sort: pending invitations by invitation time, then every other link (by status).
        Two index-ordered reads instead of sorting every row by an expression."""
        pending = f"l.status = {_lit(_PENDING)}"
        d = "DESC" if descending else "ASC"
        n_pending = self._conn.execute(
            f"SELECT count(*) FROM client_links l {hint} WHERE {where} AND {pending}", params
        ).fetchone()[0]
        ids: list[int] = []
        if offset < n_pending:
            ids = [r[0] for r in self._conn.execute(
                f"SELECT l.id FROM client_links l {hint} WHERE {where} AND {pending}"
                f" ORDER BY {_sort_terms('days_left', descending)} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )]
        if len(ids) < limit:
            ids += [r[0] for r in self._conn.execute(
                f"SELECT l.id FROM client_links l {hint} WHERE {where} AND l.status IS NOT {_lit(_PENDING)}"
                f" ORDER BY l.status {d}, l.invited_at {d}, l.id {d} LIMIT ? OFFSET ?",
                [*params, limit - len(ids), max(0, offset - n_pending)],
            )]
        return ids

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
        if stage is not None and status is None and self._text_condition(text)[0] is None:
            # A sum of index-range counts, one per side and stage part (they do not overlap).
            return sum(
                self._conn.execute(f"SELECT count(*) FROM client_links l WHERE {side} AND {part}", params)
                .fetchone()[0]
                for p, side, params in self._sides(customer_id, perspective)
                for part in stage_predicate_parts(p, stage, now)
            )
        where, params = self._inbox_where(customer_id, perspective, stage, text, status, now)
        return self._conn.execute(f"SELECT count(*) FROM client_links l WHERE {where}", params).fetchone()[0]

    @staticmethod
    def _sides(customer_id: int, perspective: Perspective | None) -> list[tuple[Perspective, str, list[Any]]]:
        """(perspective, condition, params) for each side asked for; with both, a link whose two sides are ours
        counts once, as sent."""
        cid = int(customer_id)
        sides = []
        if perspective in (None, Perspective.SENT):
            sides.append((Perspective.SENT, "l.managing_customer_id = ?", [cid]))
        if perspective == Perspective.RECEIVED:
            sides.append((Perspective.RECEIVED, "l.client_customer_id = ?", [cid]))
        elif perspective is None:
            sides.append((Perspective.RECEIVED, "l.client_customer_id = ? AND l.managing_customer_id != ?", [cid, cid]))
        return sides

    @_guard
    def stage_counts(
        self, customer_id: int, now: datetime, *, perspective: Perspective | None = None, text: str | None = None
    ) -> dict[Stage, int]:
        """Links per stage (every stage present, zeros included), for both perspectives unless one is given.

        Without text: sums of index-range counts over (customer, status, invited_at), no row read. With text: one
        pass over the matches."""
        counts = {s: 0 for s in Stage}
        text_sql, text_params = self._text_condition(text)
        if text_sql:
            # One search; each match's stage computed for its side.
            sides = self._sides(customer_id, perspective)
            stage_expr = " ".join(
                ["CASE"] + [f"WHEN {side} THEN ({stage_sql(p, now)})" for p, side, _ in sides] + ["END"]
            )
            side_params = [v for _, _, ps in sides for v in ps]
            sql = (f"SELECT {stage_expr} AS st, count(*) FROM client_links l"
                   f" WHERE ({' OR '.join(f'({side})' for _, side, _ in sides)}) AND {text_sql} GROUP BY st")
            for st, n in self._conn.execute(sql, side_params + side_params + text_params):
                counts[_STAGE_BY_VALUE[st]] += n
            return counts
        for p, side, params in self._sides(customer_id, perspective):
            for stage in Stage:  # disjoint index-range counts (stage_predicate_parts)
                for part in stage_predicate_parts(p, stage, now):
                    counts[stage] += self._conn.execute(
                        f"SELECT count(*) FROM client_links l WHERE {side} AND {part}", params
                    ).fetchone()[0]
        return counts

    # ---------------------------------------------------------------- hierarchy and tree

    @_guard
    def customer(self, customer_id: int) -> Customer | None:
        r = self._conn.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?",
                               (int(customer_id),)).fetchone()
        return None if r is None else _customer_from_row(r)

    @_guard
    def customers(self, customer_ids: Iterable[int]) -> dict[int, Customer]:
        """The cached customers among ``customer_ids`` (by id), as :meth:`customer` reads each, in batched queries
        (a 100k-link sync asks about ~37,000 customers: one query each was ~0.3 s)."""
        out: dict[int, Customer] = {}
        for chunk in _batches(sorted({int(c) for c in customer_ids}), 500):
            rows = self._conn.execute(
                f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            ).fetchall()
            for r in rows:
                out[r[0]] = _customer_from_row(r)
        return out

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
    def user(self, user_id: int, *, with_accounts: bool = True) -> User | None:
        """A user with roles and reachable accounts as the sync stored them.

        ``with_accounts=False`` reads the roles only (account lists left empty): for callers that need who the user
        is and its role, not what it reaches — the first frame, where an agency user may reach tens of thousands of
        accounts."""
        r = self._conn.execute(
            "SELECT id, user_name, customer_id, first_name, last_name, email, phone, life_cycle_status"
            " FROM users WHERE id = ?",
            (int(user_id),),
        ).fetchone()
        if r is None:
            return None
        access: dict[tuple[int, str], list[int]] = {}
        rows = self._conn.execute(
            "SELECT account_id, via_customer_id, source FROM user_accounts WHERE user_id = ? ORDER BY account_id",
            (r[0],),
        ) if with_accounts else ()
        for account_id, via, source in rows:
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
        page = self._conn.execute(
            """SELECT account_id, via_customer_id FROM user_accounts WHERE user_id = ?
               ORDER BY account_name COLLATE NOCASE, account_id, via_customer_id LIMIT ? OFFSET ?""",
            (int(user_id), int(limit), int(offset)),
        ).fetchall()
        out = []
        for account_id, via in page:  # deferred join: the page's details only
            r = self._conn.execute(
                f"""SELECT ?, COALESCE(a.name, l.client_entity_name), COALESCE(a.number, l.client_entity_number),
                           COALESCE(a.parent_customer_id, l.client_customer_id), ?,
                           l.status, l.is_bill_to_client, l.invited_at
                    FROM (SELECT 1) LEFT JOIN accounts a ON a.id = ?
                    LEFT JOIN client_links l ON l.client_entity_id = ? AND l.managing_customer_id = ?
                         AND l.type = {_lit(LinkType.AccountLink.value)}""",
                (account_id, via, account_id, account_id, via),
            ).fetchone()
            out.append(_tree_account(r))
        return out

    @_guard
    def client_customers_count(self, agency_customer_id: int) -> int:
        return self._conn.execute(
            "SELECT count(*) FROM agency_clients WHERE agency_customer_id = ?", (int(agency_customer_id),)
        ).fetchone()[0]

    @_guard
    def client_customers(self, agency_customer_id: int, offset: int = 0, limit: int = 100) -> list[TreeCustomer]:
        """A page of the client customers that have links with the agency, by name; links whose client owner is
        unknown come last under ``customer_id`` None."""
        rows = self._conn.execute(
            """SELECT customer_id, CASE WHEN customer_id IS NULL THEN NULL ELSE name END, number, link_count,
                      customer_link_status
               FROM agency_clients WHERE rowid IN (
                   SELECT rowid FROM agency_clients WHERE agency_customer_id = ?
                   ORDER BY grp, name COLLATE NOCASE, customer_id LIMIT ? OFFSET ?)
               ORDER BY grp, name COLLATE NOCASE, customer_id""",
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

    def _agency(self, agency_customer_id: int | None) -> int:
        if agency_customer_id is not None:
            return int(agency_customer_id)
        own = self.meta_get("customer_id")
        if own is None:
            raise ValueError("Say which agency: this cache does not know its customer yet (run a sync first).")
        return int(own)

    @_guard
    def customer_accounts_count(self, customer_id: int | None, *, agency_customer_id: int | None = None) -> int:
        sql, _ = self._customer_accounts_sql(customer_id)
        return self._conn.execute(
            f"SELECT count(*) FROM ({sql})", {"agency": self._agency(agency_customer_id), "cid": customer_id}
        ).fetchone()[0]

    @_guard
    def customer_accounts(
        self, customer_id: int | None, offset: int = 0, limit: int = 100, *, agency_customer_id: int | None = None
    ) -> list[TreeAccount]:
        """A page of a client customer's accounts (by name), each with its link to the agency (if any).

        ``agency_customer_id`` defaults to the profile's own customer (meta ``customer_id``, set by the sync);
        ``customer_id`` None lists the agency's account links whose owning customer is unknown."""
        sql, _ = self._customer_accounts_sql(customer_id)
        rows = self._conn.execute(
            f"SELECT * FROM ({sql}) ORDER BY name IS NULL, name COLLATE NOCASE, id LIMIT :limit OFFSET :offset",
            {"agency": self._agency(agency_customer_id), "cid": customer_id, "limit": int(limit),
             "offset": int(offset)},
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
        return (now if now.tzinfo else now.replace(tzinfo=timezone.utc)) - run.finished_at


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


_CUSTOMER_COLS = ("id", "name", "number", "life_cycle_status", "financial_status", "market_country", "market_language")
_ACCOUNT_COLS = ("id", "name", "number", "parent_customer_id", "bill_to_customer_id", "life_cycle_status",
                 "financial_status", "currency_code", "pause_reason", "prepaid")
_USER_COLS = ("id", "user_name", "customer_id", "first_name", "last_name", "email", "phone", "life_cycle_status")
_ROLE_COLS = ("user_id", "customer_id", "role_id", "customer_link_permission", "all_accounts")


def _merge(
    conn: sqlite3.Connection,
    table: str,
    stage: str,
    keys: tuple[str, ...],
    cols: tuple[str, ...],
    *,
    delete_where: str = "1",
    insert_where: str = "1",
) -> None:
    """Make ``main.table`` equal to ``temp.stage`` by key, writing only what differs (a stable world costs little
    and cascades nothing). ``delete_where`` may use alias ``t`` (live rows), ``insert_where`` alias ``s`` (staged)."""
    match = " AND ".join(f"s.{k} = t.{k}" for k in keys)
    conn.execute(
        f"DELETE FROM main.{table} AS t WHERE ({delete_where}) AND NOT EXISTS (SELECT 1 FROM temp.{stage} s WHERE {match})"
    )
    all_cols = ", ".join(cols)
    rest = [c for c in cols if c not in keys]
    if rest:
        set_sql = ", ".join(f"{c} = excluded.{c}" for c in rest)
        differs = " OR ".join(f"t.{c} IS NOT s.{c}" for c in rest)
        conn.execute(
            f"""INSERT INTO main.{table} ({all_cols})
                SELECT {', '.join('s.' + c for c in cols)} FROM temp.{stage} s
                LEFT JOIN main.{table} t ON {match}
                WHERE ({insert_where})
                  AND (t.{keys[0]} IS NULL OR {differs})
                ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {set_sql}"""
        )
    else:
        conn.execute(
            f"INSERT OR IGNORE INTO main.{table} ({all_cols})"
            f" SELECT {', '.join('s.' + c for c in cols)} FROM temp.{stage} s WHERE {insert_where}"
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
        # Typed like the live tables: an untyped column has no affinity, and SQLite could not use the staging
        # indexes when comparing it with an INTEGER column.
        conn.execute("CREATE TEMP TABLE snap_customers (id INTEGER PRIMARY KEY, name TEXT, number TEXT,"
                     " life_cycle_status TEXT, financial_status TEXT, market_country TEXT, market_language TEXT)")
        conn.execute("CREATE TEMP TABLE snap_accounts (id INTEGER PRIMARY KEY, name TEXT, number TEXT,"
                     " parent_customer_id INTEGER, bill_to_customer_id INTEGER, life_cycle_status TEXT,"
                     " financial_status TEXT, currency_code TEXT, pause_reason INTEGER, prepaid INTEGER)")
        conn.execute("CREATE TEMP TABLE snap_account_agencies (account_id INTEGER, agency_customer_id INTEGER,"
                     " PRIMARY KEY (account_id, agency_customer_id)) WITHOUT ROWID")
        conn.execute("CREATE TEMP TABLE snap_users (id INTEGER PRIMARY KEY, user_name TEXT, customer_id INTEGER,"
                     " first_name TEXT, last_name TEXT, email TEXT, phone TEXT, life_cycle_status TEXT)")
        conn.execute("CREATE TEMP TABLE snap_user_roles (user_id INTEGER, customer_id INTEGER, role_id INTEGER,"
                     " customer_link_permission TEXT, all_accounts INTEGER,"
                     " PRIMARY KEY (user_id, customer_id, role_id)) WITHOUT ROWID")
        conn.execute("CREATE TEMP TABLE snap_user_accounts (user_id INTEGER, account_id INTEGER,"
                     " via_customer_id INTEGER, source TEXT, PRIMARY KEY (user_id, account_id, via_customer_id))"
                     " WITHOUT ROWID")
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
                _merge(conn, "customers", "snap_customers", ("id",), _CUSTOMER_COLS)
            if "accounts" in p:
                _merge(conn, "accounts", "snap_accounts", ("id",), _ACCOUNT_COLS)  # removals cascade to agencies
                _merge(conn, "account_agencies", "snap_account_agencies", ("account_id", "agency_customer_id"),
                       ("account_id", "agency_customer_id"), insert_where="s.account_id IN (SELECT id FROM main.accounts)")
            if "users" in p:
                _merge(conn, "users", "snap_users", ("id",), _USER_COLS)  # removals cascade to roles and access
                _merge(conn, "user_roles", "snap_user_roles", ("user_id", "customer_id", "role_id"), _ROLE_COLS,
                       insert_where="s.user_id IN (SELECT id FROM main.users)")
                _merge(conn, "user_accounts", "snap_user_accounts", ("user_id", "account_id", "via_customer_id"),
                       ("user_id", "account_id", "via_customer_id", "source"), delete_where="t.source != 'customer'",
                       insert_where="s.user_id IN (SELECT id FROM main.users)")
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
            if "users" in p or "accounts" in p or "links" in p:
                _refresh_account_names(conn)
            if "links" in p or "customers" in p:
                _rebuild_agency_clients(conn)
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
        # Fresh statistics let the planner pick the right inbox index (bounded cost: sampled).
        try:
            # Exact statistics (sampled ones misjudge a table where every row has the same managing customer).
            conn.execute("PRAGMA analysis_limit=0")
            conn.execute("ANALYZE main")
        except sqlite3.OperationalError:
            pass  # another writer holds the lock: statistics are an optimisation, the sync itself is committed
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
