"""The simulator's own state: one SQLite file (stdlib sqlite3, WAL, busy timeout) that survives restarts.

Holds customers, accounts (with the seeded prepaid / link-failure / unlink-failure flags), users with their roles
and account access, every client link ever made (with its creation time; ``is_latest`` marks the most recent link of
each pair, which is what SearchClientLinks returns), access / refresh tokens (hashed; expiry in simulated time), the
virtual clock's offset, the seed and scale of the world, and per link the next service transition that is due.

Concurrency: the SOAP server is threaded. Every thread gets its own connection; writes run in ``BEGIN IMMEDIATE``
transactions behind a process-wide lock, so two requests never interleave their changes and another process (for
example ``linkdesk simulator advance``) waits for the busy timeout instead of failing. Readers never block (WAL).

Usage::

    state = State(path)                       # creates the file and schema when missing
    with state.read() as tx:                  # a consistent snapshot
        user = tx.user(301000001)
    with state.write() as tx:                 # one atomic change
        tx.set_meta("seed", "1")
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..model import ClientLink, ClientLinkStatus, CustomerLinkPermission, LinkType
from .clock import VirtualClock, utc_now

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    side TEXT NOT NULL,                       -- agency | client | other-agency
    industry TEXT,
    market_country TEXT,
    market_language TEXT,
    financial_status TEXT NOT NULL DEFAULT 'ClearFinancialStatus',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    parent_customer_id INTEGER NOT NULL REFERENCES customers(id),
    primary_user_id INTEGER,
    prepaid INTEGER NOT NULL DEFAULT 0,       -- 1471 on invitation
    fail_link INTEGER NOT NULL DEFAULT 0,     -- LinkInProgress ends in LinkFailed
    fail_unlink INTEGER NOT NULL DEFAULT 0,   -- UnlinkInProgress ends in UnlinkFailed
    currency_code TEXT NOT NULL DEFAULT 'USD',
    life_cycle_status TEXT NOT NULL DEFAULT 'Active',
    pause_reason INTEGER,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_parent ON accounts(parent_customer_id);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    phone TEXT,
    job_title TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_customer ON users(customer_id);
CREATE TABLE IF NOT EXISTS user_roles (
    user_id INTEGER NOT NULL REFERENCES users(id),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    role_id INTEGER NOT NULL,
    all_accounts INTEGER NOT NULL,            -- 1: customer-level access, 0: only user_accounts rows
    PRIMARY KEY (user_id, customer_id)
);
CREATE TABLE IF NOT EXISTS user_accounts (
    user_id INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    account_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, customer_id, account_id)
);
CREATE TABLE IF NOT EXISTS client_links (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    client_entity_id INTEGER NOT NULL,
    client_customer_id INTEGER NOT NULL,      -- owner of the client entity (the entity itself for customer links)
    managing_customer_id INTEGER NOT NULL,
    managing_customer_number TEXT NOT NULL,   -- denormalised: ordering by Number must not join
    note TEXT,
    name TEXT NOT NULL,                       -- never NULL: keyset paging compares it
    inviter_email TEXT,
    inviter_name TEXT,
    inviter_phone TEXT,
    is_bill_to_client INTEGER,
    start_date TEXT,
    status TEXT NOT NULL,
    suppress_notification INTEGER NOT NULL DEFAULT 0,
    last_modified_at TEXT NOT NULL,
    last_modified_by INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    permission TEXT,
    created_at TEXT NOT NULL,
    created_by INTEGER,
    is_latest INTEGER NOT NULL DEFAULT 1,
    due_at TEXT,                              -- when the service moves this link on by itself
    due_status TEXT
);
CREATE INDEX IF NOT EXISTS links_pair ON client_links(client_entity_id, type, managing_customer_id, is_latest);
-- Paging indexes. is_latest is repeated as a column although the partial index implies it: SQLite only treats an
-- index as covering when every referenced column is in it, and covering walks are what make deep pages cheap.
CREATE INDEX IF NOT EXISTS links_mgr ON client_links(managing_customer_id, client_entity_id, type, is_latest)
    WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS links_mgr_name ON client_links(managing_customer_id, name, client_entity_id, type, is_latest)
    WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS links_client ON client_links(client_customer_id, managing_customer_id, client_entity_id, type,
    is_latest) WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS links_reach ON client_links(managing_customer_id, type, status, client_entity_id)
    WHERE is_latest = 1;
CREATE INDEX IF NOT EXISTS links_due ON client_links(due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,                    -- sha256 of the token (the file never holds a usable token)
    kind TEXT NOT NULL,                       -- access | refresh | code
    user_id INTEGER NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    client_id TEXT,
    redirect_uri TEXT,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);
"""

#: Tables holding the world (cleared by reset), in dependency order.
WORLD_TABLES = ("tokens", "client_links", "user_accounts", "user_roles", "users", "accounts", "customers")


class StateError(Exception):
    """The state file cannot be used (wrong format, newer schema, unreadable); the message says what to do."""


# ------------------------------------------------------------------------------------------------------- time codec


def to_db(d: datetime | None) -> str | None:
    """Aware (or naive = UTC) datetime -> fixed-width UTC text that sorts like time."""
    if d is None:
        return None
    if d.tzinfo is not timezone.utc:  # aware UTC is the common case, and the bulk path of seeding
        d = d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)
    return d.isoformat(timespec="microseconds")  # always "...+00:00": same width, so text order is time order


def from_db(s: str | None) -> datetime | None:
    if s is None:
        return None
    return datetime.fromisoformat(s)  # carries its +00:00: aware UTC without a replace()


def encode_timestamp(counter: int) -> str:
    """The opaque ClientLink.Timestamp: base64 of an 8-byte row version, like WCF's rowversion."""
    return base64.b64encode(counter.to_bytes(8, "big")).decode("ascii")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------------------------------- row types


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: int
    number: str
    name: str
    side: str
    industry: str | None = None
    market_country: str | None = "US"
    market_language: str | None = "English"
    financial_status: str = "ClearFinancialStatus"
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    number: str
    name: str
    parent_customer_id: int
    primary_user_id: int | None = None
    prepaid: bool = False
    fail_link: bool = False
    fail_unlink: bool = False
    currency_code: str = "USD"
    life_cycle_status: str = "Active"
    pause_reason: int | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    customer_id: int
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    job_title: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RoleRow:
    user_id: int
    customer_id: int
    role_id: int
    all_accounts: bool
    #: The accounts this role reaches when ``all_accounts`` is False (own or linked accounts).
    account_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredLink:
    """One client link as stored, with the wire view (``link``) and what only the simulator knows."""

    row_id: int
    link: ClientLink
    client_customer_id: int
    created_at: datetime
    created_by: int | None
    is_latest: bool
    due_at: datetime | None
    due_status: str | None
    timestamp_counter: int


@dataclass
class NewLink:
    """The stored columns of a link to insert (names and numbers are derived from customers/accounts on read)."""

    type: str
    client_entity_id: int
    client_customer_id: int
    managing_customer_id: int
    managing_customer_number: str
    status: str
    created_at: datetime
    last_modified_at: datetime
    last_modified_by: int
    timestamp: int
    note: str | None = None
    name: str | None = None
    inviter_email: str | None = None
    inviter_name: str | None = None
    inviter_phone: str | None = None
    is_bill_to_client: bool | None = None
    start_date: datetime | None = None
    suppress_notification: bool = False
    permission: str | None = None
    created_by: int | None = None
    due_at: datetime | None = None
    due_status: str | None = None
    is_latest: bool = True

    _COLUMNS = ("type", "client_entity_id", "client_customer_id", "managing_customer_id", "managing_customer_number",
                "note", "name", "inviter_email", "inviter_name", "inviter_phone", "is_bill_to_client", "start_date",
                "status", "suppress_notification", "last_modified_at", "last_modified_by", "timestamp", "permission",
                "created_at", "created_by", "is_latest", "due_at", "due_status")

    def row(self) -> tuple[Any, ...]:
        return (self.type, self.client_entity_id, self.client_customer_id, self.managing_customer_id,
                self.managing_customer_number, self.note, self.name, self.inviter_email, self.inviter_name,
                self.inviter_phone, None if self.is_bill_to_client is None else int(self.is_bill_to_client),
                to_db(self.start_date), self.status, int(self.suppress_notification), to_db(self.last_modified_at),
                self.last_modified_by, self.timestamp, self.permission, to_db(self.created_at), self.created_by,
                int(self.is_latest), to_db(self.due_at), self.due_status)


@dataclass(frozen=True)
class LinkQuery:
    """A SearchClientLinks request, validated by the service and reduced to what the SQL needs."""

    caller_customer_id: int
    direct_manager_id: int | None = None
    #: The deprecated ManagingCustomerId predicate: account links of every account this manager has a link to.
    inclusive_manager_id: int | None = None
    client_account_ids: tuple[int, ...] | None = None
    client_customer_ids: tuple[int, ...] | None = None
    include_customer_links: bool = True
    order: str = "Id"  # Id (ClientEntityId) | Name | Number (ManagingCustomerNumber)
    descending: bool = False
    offset: int = 0
    limit: int = 100


class PageCursors:
    """Remembers where pages of big searches ended, so the next page starts from an index seek (keyset) instead of
    counting past every earlier row (OFFSET). Keyed by the query (without its paging) and the data version (the
    row-version counter, which every link change moves), so a cursor is only reused on identical data: the result
    is exactly what OFFSET would give. Thread-safe; bounded in memory."""

    MAX_QUERIES = 16
    MAX_CURSORS = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_query: dict[tuple[Any, ...], tuple[list[int], dict[int, tuple[Any, ...]]]] = {}

    def nearest(self, key: tuple[Any, ...], offset: int) -> tuple[int, tuple[Any, ...]] | None:
        """The cursor at the largest remembered offset not beyond ``offset``: (its offset, the row key there)."""
        with self._lock:
            entry = self._by_query.get(key)
            if entry is None:
                return None
            offsets, keys = entry
            i = bisect.bisect_right(offsets, offset)
            return (offsets[i - 1], keys[offsets[i - 1]]) if i else None

    def remember(self, key: tuple[Any, ...], offset: int, row_key: tuple[Any, ...]) -> None:
        with self._lock:
            entry = self._by_query.pop(key, None)
            if entry is None:
                entry = ([], {})
                while len(self._by_query) >= self.MAX_QUERIES:
                    self._by_query.pop(next(iter(self._by_query)))
            self._by_query[key] = entry  # most recently used last
            offsets, keys = entry
            if offset not in keys and len(offsets) < self.MAX_CURSORS:
                bisect.insort(offsets, offset)
                keys[offset] = row_key


_LINK_SELECT = """
SELECT l.id, l.type, l.client_entity_id, l.client_customer_id, l.managing_customer_id, l.managing_customer_number,
       l.note, l.name, l.inviter_email, l.inviter_name, l.inviter_phone, l.is_bill_to_client, l.start_date, l.status,
       l.suppress_notification, l.last_modified_at, l.last_modified_by, l.timestamp, l.permission, l.created_at,
       l.created_by, l.is_latest, l.due_at, l.due_status,
       CASE WHEN l.type = 'CustomerLink' THEN cc.number ELSE a.number END,
       CASE WHEN l.type = 'CustomerLink' THEN cc.name ELSE a.name END,
       m.name, cc.number
FROM client_links l
JOIN customers m ON m.id = l.managing_customer_id
JOIN customers cc ON cc.id = l.client_customer_id
LEFT JOIN accounts a ON l.type = 'AccountLink' AND a.id = l.client_entity_id
"""


_STATUSES = {m.value: m for m in ClientLinkStatus}
_TYPES = {m.value: m for m in LinkType}
_PERMISSIONS = {m.value: m for m in CustomerLinkPermission}


def wire_from_row(r: Sequence[Any]) -> dict[str, Any]:
    """A search reply item straight from a row of ``_LINK_SELECT`` (the fast path: no ClientLink object)."""
    typ = r[1]
    bill_to = r[11]
    return {
        "Type": typ, "ClientEntityId": r[2], "ClientEntityNumber": r[24], "ClientEntityName": r[25],
        "ManagingCustomerId": r[4], "ManagingCustomerNumber": r[5], "ManagingCustomerName": r[26], "Note": r[6],
        "Name": r[7], "InviterEmail": r[8], "InviterName": r[9], "InviterPhone": r[10],
        "IsBillToClient": None if bill_to is None else bool(bill_to),
        "StartDate": None if r[12] is None else datetime.fromisoformat(r[12]), "Status": r[13],
        "SuppressNotification": bool(r[14]), "LastModifiedDateTime": datetime.fromisoformat(r[15]),
        "LastModifiedByUserId": r[16], "Timestamp": encode_timestamp(r[17]), "ForwardCompatibilityMap": None,
        "CustomerLinkPermission": r[18],
        "ClientEntityCustomerNumber": r[27] if typ == "AccountLink" else None,
    }


def _link_from_row(r: Sequence[Any]) -> StoredLink:
    (row_id, typ, entity_id, client_customer_id, manager_id, manager_number, note, name, inv_email, inv_name,
     inv_phone, bill_to, start, status, suppress, modified_at, modified_by, ts, permission, created_at, created_by,
     is_latest, due_at, due_status, entity_number, entity_name, manager_name, client_customer_number) = r
    link_type = _TYPES[typ]
    perm: CustomerLinkPermission | str | None = _PERMISSIONS.get(permission, permission) if permission else None
    link = ClientLink(
        type=link_type,
        client_entity_id=entity_id,
        client_entity_number=entity_number,
        client_entity_name=entity_name,
        managing_customer_id=manager_id,
        managing_customer_number=manager_number,
        managing_customer_name=manager_name,
        note=note,
        name=name,
        inviter_email=inv_email,
        inviter_name=inv_name,
        inviter_phone=inv_phone,
        is_bill_to_client=None if bill_to is None else bool(bill_to),
        start_date=from_db(start),
        status=_STATUSES.get(status, status),
        suppress_notification=bool(suppress),
        last_modified_date_time=from_db(modified_at),
        last_modified_by_user_id=modified_by,
        timestamp=encode_timestamp(ts),
        customer_link_permission=perm,
        # Account links carry the number of the customer that owns the account (2026 docs); customer links do not.
        client_entity_customer_number=client_customer_number if link_type == LinkType.AccountLink else None,
    )
    return StoredLink(row_id, link, client_customer_id, from_db(created_at), created_by, bool(is_latest),
                      from_db(due_at), due_status, ts)


# ------------------------------------------------------------------------------------------------------ transaction


class Tx:
    """Queries and changes inside one transaction (from :meth:`State.read` or :meth:`State.write`)."""

    def __init__(self, conn: sqlite3.Connection, writable: bool, cursors: PageCursors | None = None):
        self.c = conn
        self.writable = writable
        self.cursors = cursors

    # -- meta -----------------------------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def all_meta(self) -> dict[str, str]:
        return dict(self.c.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, key: str, value: object) -> None:
        self.c.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, str(value)))

    def delete_meta(self, key: str) -> None:
        self.c.execute("DELETE FROM meta WHERE key = ?", (key,))

    def clock(self) -> VirtualClock:
        """The virtual clock as stored: offset and optional frozen base."""
        m = self.all_meta()
        offset = timedelta(microseconds=int(m.get("clock_offset_us", "0")))
        frozen = m.get("frozen_at") or None
        return VirtualClock(offset=offset, frozen_at=from_db(frozen) if frozen else None)

    def save_clock(self, clock: VirtualClock) -> None:
        self.set_meta("clock_offset_us", int(clock.offset / timedelta(microseconds=1)))
        if clock.frozen_at is not None:
            self.set_meta("frozen_at", to_db(clock.frozen_at))
        else:
            self.delete_meta("frozen_at")

    def next_timestamps(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive row-version values; returns the first."""
        first = int(self.meta("ts_counter", "2000")) + 1
        self.set_meta("ts_counter", first + n - 1)
        return first

    # -- customers, accounts, users -------------------------------------------------------------------------------

    _CUSTOMER_COLS = "id, number, name, side, industry, market_country, market_language, financial_status, created_at"
    _ACCOUNT_COLS = ("id, number, name, parent_customer_id, primary_user_id, prepaid, fail_link, fail_unlink, "
                     "currency_code, life_cycle_status, pause_reason, created_at")
    _USER_COLS = "id, username, customer_id, first_name, last_name, email, phone, job_title, created_at"

    @staticmethod
    def _customer(r: Sequence[Any] | None) -> CustomerRow | None:
        if r is None:
            return None
        return CustomerRow(*r[:8], created_at=from_db(r[8]))

    @staticmethod
    def _account(r: Sequence[Any] | None) -> AccountRow | None:
        if r is None:
            return None
        return AccountRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), bool(r[6]), bool(r[7]), r[8], r[9], r[10],
                          from_db(r[11]))

    @staticmethod
    def _user(r: Sequence[Any] | None) -> UserRow | None:
        if r is None:
            return None
        return UserRow(*r[:8], created_at=from_db(r[8]))

    def customer(self, customer_id: int) -> CustomerRow | None:
        return self._customer(self.c.execute(f"SELECT {self._CUSTOMER_COLS} FROM customers WHERE id = ?",
                                             (customer_id,)).fetchone())

    def customer_by_number(self, number: str) -> CustomerRow | None:
        return self._customer(self.c.execute(f"SELECT {self._CUSTOMER_COLS} FROM customers WHERE number = ?",
                                             (number,)).fetchone())

    def customers(self, ids: Iterable[int] | None = None) -> list[CustomerRow]:
        if ids is None:
            rows = self.c.execute(f"SELECT {self._CUSTOMER_COLS} FROM customers ORDER BY id").fetchall()
        else:
            rows = self._in_query(f"SELECT {self._CUSTOMER_COLS} FROM customers WHERE id IN ({{}}) ORDER BY id", ids)
        return [self._customer(r) for r in rows]  # type: ignore[misc]

    def account(self, account_id: int) -> AccountRow | None:
        return self._account(self.c.execute(f"SELECT {self._ACCOUNT_COLS} FROM accounts WHERE id = ?",
                                            (account_id,)).fetchone())

    def account_by_number(self, number: str) -> AccountRow | None:
        return self._account(self.c.execute(f"SELECT {self._ACCOUNT_COLS} FROM accounts WHERE number = ?",
                                            (number,)).fetchone())

    def accounts(self, ids: Iterable[int]) -> list[AccountRow]:
        rows = self._in_query(f"SELECT {self._ACCOUNT_COLS} FROM accounts WHERE id IN ({{}}) ORDER BY id", ids)
        return [self._account(r) for r in rows]  # type: ignore[misc]

    def accounts_of_customer(self, customer_id: int) -> list[AccountRow]:
        rows = self.c.execute(f"SELECT {self._ACCOUNT_COLS} FROM accounts WHERE parent_customer_id = ? ORDER BY id",
                              (customer_id,)).fetchall()
        return [self._account(r) for r in rows]  # type: ignore[misc]

    def user(self, user_id: int) -> UserRow | None:
        return self._user(self.c.execute(f"SELECT {self._USER_COLS} FROM users WHERE id = ?", (user_id,)).fetchone())

    def user_by_name(self, username: str) -> UserRow | None:
        return self._user(self.c.execute(f"SELECT {self._USER_COLS} FROM users WHERE username = ? COLLATE NOCASE",
                                         (username,)).fetchone())

    def users(self) -> list[UserRow]:
        return [self._user(r) for r in  # type: ignore[misc]
                self.c.execute(f"SELECT {self._USER_COLS} FROM users ORDER BY id").fetchall()]

    def users_of_customer(self, customer_id: int) -> list[UserRow]:
        """Users with a role at the customer (its own users first), by id."""
        rows = self.c.execute(
            f"SELECT {', '.join('u.' + c.strip() for c in self._USER_COLS.split(','))} FROM users u "
            "JOIN user_roles r ON r.user_id = u.id WHERE r.customer_id = ? ORDER BY u.id", (customer_id,)).fetchall()
        return [self._user(r) for r in rows]  # type: ignore[misc]

    def roles(self, user_id: int) -> list[RoleRow]:
        out = []
        for customer_id, role_id, all_accounts in self.c.execute(
                "SELECT customer_id, role_id, all_accounts FROM user_roles WHERE user_id = ? ORDER BY customer_id",
                (user_id,)).fetchall():
            ids: tuple[int, ...] = ()
            if not all_accounts:
                ids = tuple(r[0] for r in self.c.execute(
                    "SELECT account_id FROM user_accounts WHERE user_id = ? AND customer_id = ? ORDER BY account_id",
                    (user_id, customer_id)))
            out.append(RoleRow(user_id, customer_id, role_id, bool(all_accounts), ids))
        return out

    def identities(self) -> list[tuple[UserRow, CustomerRow, RoleRow]]:
        """Every user with its home customer and its role there, by user id."""
        out = []
        for r in self.c.execute(
                f"SELECT {', '.join('u.' + c.strip() for c in self._USER_COLS.split(','))}, "
                f"{', '.join('c.' + c.strip() for c in self._CUSTOMER_COLS.split(','))}, r.role_id, r.all_accounts "
                "FROM users u JOIN customers c ON c.id = u.customer_id "
                "JOIN user_roles r ON r.user_id = u.id AND r.customer_id = u.customer_id ORDER BY u.id").fetchall():
            user = self._user(r[:9])
            cust = self._customer(r[9:18])
            out.append((user, cust, RoleRow(user.id, cust.id, r[18], bool(r[19]))))  # type: ignore[union-attr]
        return out

    def counts(self) -> dict[str, int]:
        out = {t: self.c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
               for t in ("customers", "accounts", "users", "client_links")}
        out["latest_links"] = self.c.execute("SELECT COUNT(*) FROM client_links WHERE is_latest = 1").fetchone()[0]
        return out

    def find_accounts_or_customers(self, prefix: str, account_ids: set[int] | None, limit: int
                                   ) -> list[tuple[AccountRow, CustomerRow]]:
        """Accounts whose name or number, or whose customer's name, starts with ``prefix`` (case-insensitive)."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.c.execute(
            f"SELECT {', '.join('a.' + c.strip() for c in self._ACCOUNT_COLS.split(','))}, "
            f"{', '.join('c.' + c.strip() for c in self._CUSTOMER_COLS.split(','))} "
            "FROM accounts a JOIN customers c ON c.id = a.parent_customer_id "
            "WHERE a.name LIKE ? ESCAPE '\\' OR a.number LIKE ? ESCAPE '\\' OR c.name LIKE ? ESCAPE '\\' "
            "ORDER BY a.id", (like, like, like))
        out = []
        for r in rows:
            acct = self._account(r[:12])
            if account_ids is not None and acct.id not in account_ids:  # type: ignore[union-attr]
                continue
            out.append((acct, self._customer(r[12:])))
            if len(out) >= limit:
                break
        return out  # type: ignore[return-value]

    # -- links ----------------------------------------------------------------------------------------------------

    def latest_link(self, client_entity_id: int, link_type: str, managing_customer_id: int) -> StoredLink | None:
        r = self.c.execute(_LINK_SELECT + " WHERE l.client_entity_id = ? AND l.type = ? AND l.managing_customer_id = ?"
                           " AND l.is_latest = 1", (client_entity_id, link_type, managing_customer_id)).fetchone()
        return _link_from_row(r) if r else None

    def latest_links_of_entity(self, client_entity_id: int, link_type: str) -> list[StoredLink]:
        """The most recent link of every managing customer for one client entity."""
        rows = self.c.execute(_LINK_SELECT + " WHERE l.client_entity_id = ? AND l.type = ? AND l.is_latest = 1"
                              " ORDER BY l.managing_customer_id", (client_entity_id, link_type)).fetchall()
        return [_link_from_row(r) for r in rows]

    def link_history(self, client_entity_id: int, link_type: str, managing_customer_id: int) -> list[StoredLink]:
        """Every link ever made for one pair, oldest first."""
        rows = self.c.execute(_LINK_SELECT + " WHERE l.client_entity_id = ? AND l.type = ? AND l.managing_customer_id = ?"
                              " ORDER BY l.id", (client_entity_id, link_type, managing_customer_id)).fetchall()
        return [_link_from_row(r) for r in rows]

    def link_by_row(self, row_id: int) -> StoredLink | None:
        r = self.c.execute(_LINK_SELECT + " WHERE l.id = ?", (row_id,)).fetchone()
        return _link_from_row(r) if r else None

    def links_by_rows(self, row_ids: Sequence[int]) -> list[StoredLink]:
        """Links by row id, in the order given."""
        if not row_ids:
            return []
        rows = self._in_query(_LINK_SELECT + " WHERE l.id IN ({})", row_ids)
        by_id = {r[0]: _link_from_row(r) for r in rows}
        return [by_id[i] for i in row_ids if i in by_id]

    def wire_links_by_rows(self, row_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Search reply items by row id, in the order given."""
        if not row_ids:
            return []
        rows = self._in_query(_LINK_SELECT + " WHERE l.id IN ({})", row_ids)
        by_id = {r[0]: wire_from_row(r) for r in rows}
        return [by_id[i] for i in row_ids if i in by_id]

    def search_links(self, q: LinkQuery) -> list[StoredLink]:
        """One page of the most recent link per pair that ``q`` selects, ordered and paged in SQL."""
        return self.links_by_rows(self.search_link_rows(q))

    def search_links_wire(self, q: LinkQuery) -> list[dict[str, Any]]:
        """Like :meth:`search_links`, as reply items (wire-named dicts)."""
        return self.wire_links_by_rows(self.search_link_rows(q))

    def search_link_rows(self, q: LinkQuery) -> list[int]:
        """Row ids of one page of the most recent link per pair that ``q`` selects, ordered and paged in SQL."""
        where = ["is_latest = 1"]
        params: list[Any] = []
        if q.client_account_ids is not None:
            where.append(f"type = 'AccountLink' AND client_entity_id IN ({','.join('?' * len(q.client_account_ids))})")
            params.extend(q.client_account_ids)
        if q.client_customer_ids is not None:
            where.append(f"type = 'CustomerLink' AND client_entity_id IN ({','.join('?' * len(q.client_customer_ids))})")
            params.extend(q.client_customer_ids)
        if q.inclusive_manager_id is not None:
            where.append("type = 'AccountLink' AND client_entity_id IN (SELECT client_entity_id FROM client_links "
                         "WHERE managing_customer_id = ? AND type = 'AccountLink' AND is_latest = 1)")
            params.append(q.inclusive_manager_id)
        if q.direct_manager_id is not None:
            where.append("managing_customer_id = ?")
            params.append(q.direct_manager_id)
        if not q.include_customer_links:
            where.append("type = 'AccountLink'")
        caller = q.caller_customer_id
        if q.direct_manager_id == caller or q.inclusive_manager_id == caller:
            pass  # every selected link already involves the caller's customer (as manager, or its own account)
        elif q.direct_manager_id is not None:
            where.append("client_customer_id = ?")
            params.append(caller)
        else:
            where.append("(managing_customer_id = ? OR client_customer_id = ?)")
            params.extend((caller, caller))
        direction = " DESC" if q.descending else ""
        order = q.order
        if order == "Number" and q.direct_manager_id is not None:
            order = "Id"  # one manager: every row has the same number, so the tie-break alone orders the page
        sort_cols = {"Name": ["name"], "Number": ["managing_customer_number"]}.get(order, [])
        sort_cols += ["client_entity_id", "type", "managing_customer_id"]
        # Big searches are one manager's links: page them by keyset from a remembered cursor when there is one.
        cursor_key = None
        offset = q.offset
        if q.direct_manager_id is not None and self.cursors is not None:
            version = self.meta("ts_counter", "0")
            cursor_key = (version, caller, q.direct_manager_id, q.client_account_ids, q.client_customer_ids,
                          q.include_customer_links, order, q.descending)
            seek_cols = sort_cols[:-1]  # managing_customer_id is the same on every row
            near = self.cursors.nearest(cursor_key, q.offset) if q.offset > 0 else None
            if near is not None:
                start, row_key = near
                where.append(f"({', '.join(seek_cols)}) {'<' if q.descending else '>'} "
                             f"({', '.join('?' * len(seek_cols))})")
                params.extend(row_key)
                offset = q.offset - start
        keys = [c + direction for c in sort_cols]
        sql = (f"SELECT id, {', '.join(sort_cols)} FROM client_links WHERE {' AND '.join(where)} "
               f"ORDER BY {', '.join(keys)} LIMIT ? OFFSET ?")
        rows = self.c.execute(sql, (*params, q.limit, offset)).fetchall()
        if cursor_key is not None and rows and rows[-1][1] is not None:
            self.cursors.remember(cursor_key, q.offset + len(rows), tuple(rows[-1][1:-1]))  # type: ignore[union-attr]
        return [r[0] for r in rows]

    def insert_link(self, new: NewLink) -> int:
        """Insert a link; it becomes the most recent link of its pair. Returns its row id."""
        self.c.execute("UPDATE client_links SET is_latest = 0, due_at = NULL, due_status = NULL "
                       "WHERE client_entity_id = ? AND type = ? AND managing_customer_id = ? AND is_latest = 1",
                       (new.client_entity_id, new.type, new.managing_customer_id))
        cur = self.c.execute(f"INSERT INTO client_links ({', '.join(NewLink._COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(NewLink._COLUMNS))})", new.row())
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def update_link(self, row_id: int, *, status: str, note: str | None, modified_at: datetime, modified_by: int,
                    timestamp: int, due_at: datetime | None, due_status: str | None) -> None:
        self.c.execute("UPDATE client_links SET status = ?, note = ?, last_modified_at = ?, last_modified_by = ?, "
                       "timestamp = ?, due_at = ?, due_status = ? WHERE id = ?",
                       (status, note, to_db(modified_at), modified_by, timestamp, to_db(due_at), due_status, row_id))

    def update_links_bulk(self, rows: Sequence[tuple[str, str, int, str | None, str | None, int]]) -> None:
        """(status, modified_at, timestamp, due_at, due_status, row_id) per link; modified_at/due_at as db text."""
        self.c.executemany("UPDATE client_links SET status = ?, last_modified_at = ?, timestamp = ?, due_at = ?, "
                           "due_status = ? WHERE id = ?", rows)

    def next_due(self) -> datetime | None:
        r = self.c.execute("SELECT MIN(due_at) FROM client_links WHERE due_at IS NOT NULL").fetchone()
        return from_db(r[0]) if r and r[0] else None

    def due_links(self, now: datetime, limit: int = 2000) -> list[tuple[int, str, str, str, int, int, str | None]]:
        """Links whose next service transition is due at ``now``: (row id, due_at, due_status, status,
        fail_link, fail_unlink, start_date), earliest first."""
        return self.c.execute(
            "SELECT l.id, l.due_at, l.due_status, l.status, COALESCE(a.fail_link, 0), COALESCE(a.fail_unlink, 0), "
            "l.start_date FROM client_links l LEFT JOIN accounts a ON l.type = 'AccountLink' AND a.id = l.client_entity_id "
            "WHERE l.due_at IS NOT NULL AND l.due_at <= ? ORDER BY l.due_at, l.id LIMIT ?",
            (to_db(now), limit)).fetchall()

    def links_with_status(self, managing_customer_id: int | None, statuses: Iterable[str], link_type: str,
                          client_entity_id: int | None = None, client_customer_id: int | None = None
                          ) -> list[tuple[int, int, int, int | None, str | None]]:
        """Most recent links in ``statuses``: (client_entity_id, managing_customer_id, client_customer_id,
        is_bill_to_client, permission)."""
        st = tuple(statuses)
        sql = ("SELECT client_entity_id, managing_customer_id, client_customer_id, is_bill_to_client, permission "
               f"FROM client_links WHERE is_latest = 1 AND type = ? AND status IN ({','.join('?' * len(st))})")
        params: list[Any] = [link_type, *st]
        if managing_customer_id is not None:
            sql += " AND managing_customer_id = ?"
            params.append(managing_customer_id)
        if client_entity_id is not None:
            sql += " AND client_entity_id = ?"
            params.append(client_entity_id)
        if client_customer_id is not None:
            sql += " AND client_customer_id = ?"
            params.append(client_customer_id)
        # Sorted here: an ORDER BY would tempt the planner into a long index walk instead of the links_reach range.
        return sorted(self.c.execute(sql, params).fetchall())

    def links_with_status_of_entities(self, client_entity_ids: Iterable[int], statuses: Iterable[str],
                                      link_type: str) -> list[tuple[int, int, int, int | None, str | None]]:
        """``links_with_status`` for many client entities at once (one query per 900 ids), sorted the same way:
        the batched read behind a page of accounts."""
        st = tuple(statuses)
        ids = list(client_entity_ids)
        sql = ("SELECT client_entity_id, managing_customer_id, client_customer_id, is_bill_to_client, permission "
               f"FROM client_links WHERE is_latest = 1 AND type = ? AND status IN ({','.join('?' * len(st))}) "
               "AND client_entity_id IN ({})")
        out: list[Any] = []
        for i in range(0, len(ids), 900):
            chunk = ids[i:i + 900]
            out.extend(self.c.execute(sql.format(",".join("?" * len(chunk))), [link_type, *st, *chunk]).fetchall())
        return sorted(out)

    def managed_entity_ids(self, managing_customer_id: int, link_type: str, statuses: Iterable[str],
                           among: Iterable[int] | None = None) -> list[int]:
        """Client entities whose most recent link with this manager is in ``statuses`` (optionally only ``among``
        the given ids), by id. Served from the covering index ``links_reach``."""
        st = tuple(statuses)
        sql = (f"SELECT client_entity_id FROM client_links WHERE is_latest = 1 AND managing_customer_id = ? AND "
               f"type = ? AND status IN ({','.join('?' * len(st))})")
        params: list[Any] = [managing_customer_id, link_type, *st]
        if among is not None:
            ids = list(among)
            if not ids:
                return []
            sql += f" AND client_entity_id IN ({','.join('?' * len(ids))})"
            params.extend(ids)
        return sorted(r[0] for r in self.c.execute(sql, params))

    def managed_accounts(self, managing_customer_id: int, statuses: Iterable[str]) -> list[AccountRow]:
        """Accounts whose most recent account link with this manager is in ``statuses``, by id."""
        st = tuple(statuses)
        rows = self.c.execute(
            f"SELECT {', '.join('a.' + c.strip() for c in self._ACCOUNT_COLS.split(','))} FROM client_links l "
            "JOIN accounts a ON a.id = l.client_entity_id WHERE l.is_latest = 1 AND l.managing_customer_id = ? AND "
            f"l.type = 'AccountLink' AND l.status IN ({','.join('?' * len(st))}) ORDER BY a.id",
            (managing_customer_id, *st)).fetchall()
        return [self._account(r) for r in rows]  # type: ignore[misc]

    def account_infos(self, customer_id: int, managed_statuses: Iterable[str] | None) -> list[tuple[Any, ...]]:
        """(id, name, number, life cycle status, pause reason) of the customer's own accounts and, with
        ``managed_statuses``, of the accounts it manages through account links in those statuses; by id, no
        duplicates. The light path for GetAccountsInfo at agency scale."""
        rows = self.c.execute("SELECT id, name, number, life_cycle_status, pause_reason FROM accounts "
                              "WHERE parent_customer_id = ?", (customer_id,)).fetchall()
        if managed_statuses is not None:
            st = tuple(managed_statuses)
            rows += self.c.execute(
                "SELECT a.id, a.name, a.number, a.life_cycle_status, a.pause_reason FROM client_links l "
                "JOIN accounts a ON a.id = l.client_entity_id WHERE l.is_latest = 1 AND l.managing_customer_id = ? "
                f"AND l.type = 'AccountLink' AND l.status IN ({','.join('?' * len(st))})",
                (customer_id, *st)).fetchall()
        return sorted(dict((r[0], r) for r in rows).values())

    def owned_account_ids(self, customer_id: int, among: Iterable[int] | None = None) -> list[int]:
        sql, params = "SELECT id FROM accounts WHERE parent_customer_id = ?", [customer_id]
        if among is not None:
            ids = list(among)
            if not ids:
                return []
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            params.extend(ids)
        return [r[0] for r in self.c.execute(sql + " ORDER BY id", params)]

    def counterpart_customers(self, customer_id: int) -> set[int]:
        """Customers on the other side of any most-recent link of ``customer_id``."""
        out = {r[0] for r in self.c.execute(
            "SELECT DISTINCT client_customer_id FROM client_links WHERE managing_customer_id = ? AND is_latest = 1",
            (customer_id,))}
        out |= {r[0] for r in self.c.execute(
            "SELECT DISTINCT managing_customer_id FROM client_links WHERE client_customer_id = ? AND is_latest = 1",
            (customer_id,))}
        return out

    # -- tokens ---------------------------------------------------------------------------------------------------

    def store_token(self, token: str, kind: str, user_id: int, issued_at: datetime, expires_at: datetime,
                    client_id: str | None = None, redirect_uri: str | None = None) -> None:
        self.c.execute("INSERT INTO tokens(hash, kind, user_id, issued_at, expires_at, client_id, redirect_uri) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (hash_token(token), kind, user_id, to_db(issued_at), to_db(expires_at), client_id, redirect_uri))

    def token(self, token: str) -> tuple[str, int, datetime, str | None, str | None, bool] | None:
        """(kind, user_id, expires_at, client_id, redirect_uri, used) of a token, or None when unknown."""
        r = self.c.execute("SELECT kind, user_id, expires_at, client_id, redirect_uri, used FROM tokens WHERE hash = ?",
                           (hash_token(token),)).fetchone()
        if r is None:
            return None
        return r[0], r[1], from_db(r[2]), r[3], r[4], bool(r[5])  # type: ignore[return-value]

    def mark_token_used(self, token: str) -> None:
        self.c.execute("UPDATE tokens SET used = 1 WHERE hash = ?", (hash_token(token),))

    def purge_tokens(self, before: datetime) -> None:
        self.c.execute("DELETE FROM tokens WHERE expires_at < ?", (to_db(before),))

    # -- bulk -----------------------------------------------------------------------------------------------------

    def insert_customers(self, rows: Iterable[CustomerRow]) -> None:
        self.c.executemany(f"INSERT INTO customers ({self._CUSTOMER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           ((r.id, r.number, r.name, r.side, r.industry, r.market_country, r.market_language,
                             r.financial_status, to_db(r.created_at)) for r in rows))

    def insert_accounts(self, rows: Iterable[AccountRow]) -> None:
        self.c.executemany(f"INSERT INTO accounts ({self._ACCOUNT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           ((r.id, r.number, r.name, r.parent_customer_id, r.primary_user_id, int(r.prepaid),
                             int(r.fail_link), int(r.fail_unlink), r.currency_code, r.life_cycle_status,
                             r.pause_reason, to_db(r.created_at)) for r in rows))

    def insert_users(self, rows: Iterable[UserRow]) -> None:
        self.c.executemany(f"INSERT INTO users ({self._USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           ((r.id, r.username, r.customer_id, r.first_name, r.last_name, r.email, r.phone,
                             r.job_title, to_db(r.created_at)) for r in rows))

    def insert_roles(self, rows: Iterable[RoleRow]) -> None:
        rows = list(rows)
        self.c.executemany("INSERT INTO user_roles (user_id, customer_id, role_id, all_accounts) VALUES (?, ?, ?, ?)",
                           ((r.user_id, r.customer_id, r.role_id, int(r.all_accounts)) for r in rows))
        self.c.executemany("INSERT INTO user_accounts (user_id, customer_id, account_id) VALUES (?, ?, ?)",
                           ((r.user_id, r.customer_id, a) for r in rows for a in r.account_ids))

    def insert_links(self, links: Iterable[NewLink]) -> None:
        """Bulk insert, as given (the caller sets ``is_latest`` consistently)."""
        self.c.executemany(f"INSERT INTO client_links ({', '.join(NewLink._COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(NewLink._COLUMNS))})", (n.row() for n in links))

    def clear_world(self) -> None:
        for table in WORLD_TABLES:
            self.c.execute(f"DELETE FROM {table}")
        for key in ("seed", "scale", "world_version", "seeded_at", "ts_counter"):
            self.delete_meta(key)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _in_query(self, sql: str, ids: Iterable[Any]) -> list[Any]:
        """Run ``sql`` with ``{}`` replaced by placeholders, in chunks under SQLite's variable limit."""
        ids = list(ids)
        out: list[Any] = []
        for i in range(0, len(ids), 900):
            chunk = ids[i:i + 900]
            out.extend(self.c.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
        return out


# ------------------------------------------------------------------------------------------------------------ State


class State:
    """The simulator's state file. Thread-safe: a small pool of connections, each lent to one thread for one
    (possibly nested) transaction; writes serialised. The SOAP server starts a thread per connection, and the SDK
    opens a connection per call, so connections are pooled rather than kept per thread."""

    #: Idle connections kept for reuse; more are opened under load and closed when given back.
    POOL_SIZE = 8

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._idle: list[sqlite3.Connection] = []
        self._open_conns: set[sqlite3.Connection] = set()
        self._conns_lock = threading.Lock()
        self._closed = False
        self.cursors = PageCursors()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"The simulator state folder {self.path.parent} cannot be created ({exc.strerror}). "
                             "Choose another place with --state.") from None
        self._init_schema()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StateError(f"The simulator state {self.path} cannot be opened ({exc}). Move it aside or run "
                             "`linkdesk simulator reset --state FILE`.") from None
        with self._conns_lock:
            self._open_conns.add(conn)
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for the outermost transaction (nested ones reuse it), then back to the pool."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        if self._closed:
            raise StateError("The simulator state was closed; open it again.")
        with self._conns_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        self._local.conn = conn
        try:
            yield conn
        finally:
            self._local.conn = None
            with self._conns_lock:
                keep = not self._closed and len(self._idle) < self.POOL_SIZE and not conn.in_transaction
                if keep:
                    self._idle.append(conn)
                else:
                    self._open_conns.discard(conn)
            if not keep:
                conn.close()

    @property
    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._open_conns)

    def _init_schema(self) -> None:
        conn = self._open()
        try:
            with self._lock:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":  # pragma: no cover - only on file systems without shared memory
                    raise StateError(f"The simulator state {self.path} cannot use write-ahead logging.")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    has_meta = conn.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
                    version = None
                    if has_meta:
                        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                        version = int(row[0]) if row else None
                    if version is not None and version > SCHEMA_VERSION:
                        raise StateError(f"The simulator state {self.path} was written by a newer linkdesk (schema "
                                         f"{version}); update linkdesk or use another --state file.")
                    if has_meta and version is None:
                        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                        if tables - {"meta"}:
                            raise StateError(f"{self.path} is not a linkdesk simulator state file. Choose another "
                                             "--state file.")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as exc:
            self._discard(conn)
            raise StateError(f"{self.path} is not a usable simulator state file ({exc}). Move it aside or choose "
                             "another --state file.") from None
        except BaseException:
            self._discard(conn)
            raise
        with self._conns_lock:
            self._idle.append(conn)
        try:
            os.chmod(self.path, 0o600)
        except OSError:  # pragma: no cover - a file system without modes
            pass

    def _discard(self, conn: sqlite3.Connection) -> None:
        with self._conns_lock:
            self._open_conns.discard(conn)
        conn.close()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: every query inside sees one consistent snapshot.

        Nested inside another transaction of the same thread, it joins that one.
        """
        with self._borrow() as conn:
            if conn.in_transaction:
                yield Tx(conn, writable=getattr(self._local, "writing", False), cursors=self.cursors)
                return
            conn.execute("BEGIN")
            try:
                yield Tx(conn, writable=False, cursors=self.cursors)
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction (BEGIN IMMEDIATE), committed on success and rolled back on any exception.

        Nested inside another write of the same thread, it joins that one; inside a read it is a programming error.
        """
        with self._borrow() as conn:
            if conn.in_transaction:
                if not getattr(self._local, "writing", False):
                    raise StateError("A write cannot start inside a read transaction of the same thread.")
                yield Tx(conn, writable=True, cursors=self.cursors)
                return
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                self._local.writing = True
                try:
                    yield Tx(conn, writable=True, cursors=self.cursors)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                finally:
                    self._local.writing = False
                conn.execute("COMMIT")

    # -- conveniences ---------------------------------------------------------------------------------------------

    def clock(self) -> VirtualClock:
        with self.read() as tx:
            return tx.clock()

    def now(self) -> datetime:
        return self.clock().now()

    def is_seeded(self) -> bool:
        with self.read() as tx:
            return tx.meta("seeded_at") is not None

    def freeze(self, at: datetime | None) -> None:
        """Freeze the clock at ``at`` (offset reset to zero), or unfreeze it with None (keeping the current time)."""
        with self.write() as tx:
            clock = tx.clock()
            if at is None:
                current = clock.now()
                clock = VirtualClock(offset=current - utc_now(), frozen_at=None)
            else:
                clock = VirtualClock(offset=timedelta(0), frozen_at=at)
            tx.save_clock(clock)

    def close(self) -> None:
        """Close every connection this object opened (idle or lent)."""
        self._closed = True
        with self._conns_lock:
            conns, self._idle = list(self._open_conns), []
            self._open_conns.clear()
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._local = threading.local()

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
