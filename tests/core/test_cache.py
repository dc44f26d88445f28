"""Tests of the local SQLite cache (core/cache.py): files and damage, migrations, atomic snapshots (including
kill -9), the append-only timeline, inbox queries checked against rules.stage, tree queries, and a property test of
the timeline over random sync sequences."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from linkdesk.core import cache as cache_mod, rules
from linkdesk.core.cache import (
    SCHEMA_VERSION,
    SORTS,
    Cache,
    CacheBusy,
    CacheCorrupt,
    CacheTooNew,
    CacheUnavailable,
    stage_predicate_sql,
    stage_sql,
)
from linkdesk.core.model import (
    Account,
    ClientLink,
    ClientLinkStatus as S,
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

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGENCY = 1000
OTHER_AGENCY = 2000
US = timedelta(microseconds=1)

#: The v1 schema exactly as shipped, frozen here: the migration path must keep working from it.
V1_SCHEMA = """
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


def link(entity: int, status: S | str | None = S.Active, managing: int = AGENCY, **kw) -> ClientLink:
    kw.setdefault("client_entity_name", f"Account {entity}")
    kw.setdefault("client_entity_number", f"N{entity}")
    kw.setdefault("type", LinkType.AccountLink)
    return ClientLink(client_entity_id=entity, managing_customer_id=managing, status=status, **kw)


def sync(c: Cache, now: datetime, links=None, *, customers=None, accounts=None, users=None):
    snap = c.begin_snapshot(now)
    if customers is not None:
        snap.add_customers(customers)
    if accounts is not None:
        snap.add_accounts(accounts)
    if users is not None:
        snap.add_users(users)
    if links is not None:
        snap.add_links(links)
    return snap.commit(now)


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "profile" / "cache.sqlite"


@pytest.fixture
def cache(path):
    c = Cache.open(path)
    yield c
    c.close()


def statuses(c: Cache) -> dict:
    return {r.key: r.status for r in c.inbox_page(customer_id=AGENCY, perspective=Perspective.SENT, limit=10**6, now=T0)}


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ opening, files


def test_new_cache_is_private_in_wal_mode_with_current_schema(path):
    c = Cache.open(path)
    try:
        assert c.schema_version == SCHEMA_VERSION
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert c._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        c.meta_set("x", "1")
        assert stat.S_IMODE(Path(str(path) + "-wal").stat().st_mode) == 0o600
        assert c.integrity_problems() == []
    finally:
        c.close()


def test_open_profile_uses_the_profile_directory():
    with Cache.open_profile("demo") as c:
        assert c.path.name == "cache.sqlite" and c.path.parent.name == "demo"
        assert c.path.parent.parent == Path(os.environ["LINKDESK_HOME"])


def test_reading_path_imports_no_sqlite_utils(path):
    Cache.open(path).close()  # create and migrate (this one may import sqlite_utils)
    code = textwrap.dedent(
        f"""
        import sys
        from linkdesk.core.cache import Cache
        assert "sqlite_utils" not in sys.modules, "import"
        c = Cache.open({str(path)!r})
        c.inbox_page(customer_id=1, now=__import__("datetime").datetime(2026, 1, 1))
        c.close()
        print("sqlite_utils" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_cache_object_belongs_to_its_thread(cache):
    errors = []

    def other():
        try:
            cache.link_count()
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors, "a Cache used from another thread must refuse (one connection per thread)"


# ------------------------------------------------------------------------------------------------ migrations


def _build_v1(path: Path) -> None:
    """A v1 cache made by hand, as a v1 linkdesk would have left it, with data in every table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA)
    conn.execute("PRAGMA journal_mode=WAL")
    us = lambda d: (d - datetime(1970, 1, 1, tzinfo=UTC)) // US  # noqa: E731
    conn.executescript(
        f"""
        INSERT INTO meta VALUES ('customer_id', '{AGENCY}'), ('user_id', '7');
        INSERT INTO customers VALUES ({AGENCY}, 'Contoso Agency', 'AG1', 'Active', NULL, 'US', 'English'),
                                     (11, 'Client A', 'CA', 'Active', NULL, NULL, NULL),
                                     (12, 'Client B', 'CB', 'Active', NULL, NULL, NULL);
        INSERT INTO accounts VALUES (101, 'A1', 'NA1', 11, 11, 'Active', NULL, 'USD', NULL, 0),
                                    (102, 'A2', 'NA2', 11, NULL, 'Active', NULL, 'USD', NULL, NULL);
        INSERT INTO account_agencies VALUES (101, {AGENCY});
        INSERT INTO users VALUES (7, 'sam', {AGENCY}, 'Sam', 'Super', 'sam@x', NULL, 'Active'),
                                 (8, 'cam', {AGENCY}, NULL, NULL, NULL, NULL, 'Active');
        INSERT INTO user_roles VALUES (7, {AGENCY}, 41, NULL, 1), (8, {AGENCY}, 16, NULL, 0);
        INSERT INTO user_accounts VALUES (7, 101, {AGENCY}, 'linked'), (8, 102, {AGENCY}, 'account'),
                                         (8, 101, {AGENCY}, 'account');
        INSERT INTO client_links (type, client_entity_id, client_entity_number, client_entity_name,
            managing_customer_id, managing_customer_name, note, name, is_bill_to_client, status,
            suppress_notification, last_modified_date_time, timestamp, forward_compatibility_map,
            client_entity_customer_number, first_seen_at, invited_at)
        VALUES ('AccountLink', 101, 'NA1', 'A1', {AGENCY}, 'Contoso Agency', 'Ünïcode Note', 'first', 1, 'Active',
                0, {us(T0 - timedelta(days=40))}, 'ts1', '[["k", "v"]]', 'CA',
                {us(T0 - timedelta(days=50))}, {us(T0 - timedelta(days=45))}),
               ('AccountLink', 102, 'NA2', 'A2', {AGENCY}, 'Contoso Agency', NULL, NULL, 0, 'LinkPending',
                0, {us(T0 - timedelta(days=25))}, 'ts2', NULL, 'CA', {us(T0 - timedelta(days=26))}, NULL),
               ('AccountLink', 201, 'NB1', 'B1', {AGENCY}, 'Contoso Agency', NULL, NULL, 1, 'LinkPending',
                0, NULL, 'ts3', NULL, 'CB', {us(T0 - timedelta(days=2))}, NULL),
               ('CustomerLink', 12, 'CB', 'Client B', {AGENCY}, 'Contoso Agency', NULL, NULL, NULL, 'Inactive',
                0, {us(T0 - timedelta(days=3))}, 'ts4', NULL, 'CB', {us(T0 - timedelta(days=9))}, NULL);
        INSERT INTO link_events (client_entity_id, managing_customer_id, type, at, from_status, to_status, source,
                                 actor_user_id, detail)
        VALUES (101, {AGENCY}, 'AccountLink', {us(T0 - timedelta(days=50))}, NULL, 'LinkPending', 'sync', NULL, 'first seen'),
               (101, {AGENCY}, 'AccountLink', {us(T0 - timedelta(days=40))}, 'LinkPending', 'Active', 'sync', NULL, NULL);
        INSERT INTO sync_runs (started_at, finished_at, outcome, customers, accounts, users, links, events, message)
        VALUES ({us(T0 - timedelta(hours=2))}, {us(T0 - timedelta(hours=1))}, 'ok', 3, 2, 2, 4, 2, NULL);
        PRAGMA user_version = 1;
        """
    )
    conn.close()


def test_v1_cache_with_data_is_migrated_and_keeps_everything(path):
    _build_v1(path)
    with Cache.open(path) as c:
        assert c.schema_version == SCHEMA_VERSION
        assert c.integrity_problems() == []
        assert c.meta_get("customer_id") == str(AGENCY) and c.meta_get("user_id") == "7"
        a1 = c.link(LinkKey(101, AGENCY))
        assert a1.status == S.Active and a1.note == "Ünïcode Note" and a1.is_bill_to_client is True
        assert a1.forward_compatibility_map == (("k", "v"),) and a1.timestamp == "ts1"
        assert a1.last_modified_date_time == T0 - timedelta(days=40)
        stored = c.stored_link(LinkKey(101, AGENCY))
        assert stored.first_seen_at == T0 - timedelta(days=50) and stored.invited_at == T0 - timedelta(days=45)
        assert stored.client_customer_id == 11  # backfilled from the account's owner
        assert c.stored_link(LinkKey(12, AGENCY, LinkType.CustomerLink)).client_customer_id == 12
        # A pending link v1 left without an invitation time gets one (its last change, else first seen).
        assert c.stored_link(LinkKey(102, AGENCY)).invited_at == T0 - timedelta(days=25)
        assert c.stored_link(LinkKey(201, AGENCY)).invited_at == T0 - timedelta(days=2)
        # The timeline is intact, its rows are observed changes.
        tl = c.timeline(LinkKey(101, AGENCY))
        assert [(e.from_status, e.to_status, e.kind) for e in tl] == [
            (None, S.LinkPending, "change"), (S.LinkPending, S.Active, "change")]
        # Search text was backfilled (case-insensitive, Unicode) and the search index built.
        rows = c.inbox_page(customer_id=AGENCY, text="ÜNÏCODE", now=T0)
        assert [r.key for r in rows] == [LinkKey(101, AGENCY)]
        # Stages work on migrated rows: A2 invited 25 days ago expires within 7 days.
        assert c.stage_counts(AGENCY, T0, perspective=Perspective.SENT) == {
            Stage.NEEDS_ACTION: 1, Stage.PENDING: 1, Stage.IN_PROGRESS: 0, Stage.ACTIVE: 1, Stage.ENDED: 1}
        # The tree's derived tables were built.
        assert [(t.customer_id, t.link_count) for t in c.client_customers(AGENCY)] == [(11, 2), (12, 2)]
        assert [a.account_id for a in c.user_accounts(8)] == [101, 102]
        assert c.user(7).roles[0].account_ids is None and c.user(7).roles[0].linked_account_ids == (101,)
        assert c.account(101).linked_agency_ids == (AGENCY,) and c.account(101).prepaid is False
        run = c.last_ok_sync()
        assert run.finished_at == T0 - timedelta(hours=1) and run.links == 4
        # Append-only still enforced after the migration.
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c._conn.execute("DELETE FROM link_events")
        # And the migrated cache takes a new sync, with events versus the migrated state.
        sync(c, T0, [link(101, S.UnlinkRequested, client_entity_customer_number="CA")])
        assert c.timeline(LinkKey(101, AGENCY))[-1].from_status == S.Active
        assert c.link(LinkKey(102, AGENCY)) is None and c.timeline(LinkKey(102, AGENCY))[-1].to_status is None


def test_the_v1_migration_still_creates_the_frozen_v1_schema(tmp_path):
    def schema(conn):
        return sorted(
            (t, n, " ".join((sql or "").split()))
            for t, n, sql in conn.execute("SELECT type, name, sql FROM sqlite_master")
        )

    a = sqlite3.connect(tmp_path / "a.sqlite", isolation_level=None)
    a.execute("BEGIN")
    cache_mod.MIGRATIONS[0](a)
    a.execute("COMMIT")
    b = sqlite3.connect(tmp_path / "b.sqlite")
    b.executescript(V1_SCHEMA)
    assert schema(a) == schema(b)


def test_cache_from_a_newer_linkdesk_is_refused_and_left_untouched(path):
    Cache.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.commit()
    raw.close()
    before = digest(path)
    files = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(CacheTooNew) as exc:
        Cache.open(path)
    assert "newer version of linkdesk" in str(exc.value) and "Upgrade linkdesk" in str(exc.value)
    assert "left untouched" in str(exc.value) and exc.value.found == SCHEMA_VERSION + 5
    assert digest(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == files


def test_newer_version_only_in_the_wal_is_refused_too(path):
    Cache.open(path).close()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA wal_autocheckpoint=0")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # committed to the WAL, header still old
    try:
        assert Cache._header_version(path) == SCHEMA_VERSION
        with pytest.raises(CacheTooNew):
            Cache.open(path)
    finally:
        raw.close()


# ------------------------------------------------------------------------------------------------ damaged files


def test_garbage_file_is_reported_corrupt_and_moved_aside_with_its_bytes(path):
    path.parent.mkdir(parents=True)
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    Path(str(path) + "-wal").write_bytes(b"wal bytes")
    Path(str(path) + "-shm").write_bytes(b"shm bytes")
    with pytest.raises(CacheCorrupt) as exc:
        Cache.open(path)
    assert "damaged or is not a linkdesk cache" in str(exc.value) and "nothing is deleted" in str(exc.value)
    assert exc.value.path == path
    moved = Cache.move_aside(path, now=T0)
    assert moved.name == "cache.sqlite.broken-20260301T120000Z"
    assert moved.read_bytes() == garbage
    assert Path(str(moved) + "-wal").read_bytes() == b"wal bytes"
    assert Path(str(moved) + "-shm").read_bytes() == b"shm bytes"
    assert not path.exists() and not Path(str(path) + "-wal").exists()
    with Cache.open(path) as c:  # a fresh cache takes its place
        assert c.link_count() == 0
    path.write_bytes(b"x" * 200)
    assert Cache.move_aside(path, now=T0).name == "cache.sqlite.broken-20260301T120000Z-2"  # never overwrites
    assert moved.read_bytes() == garbage


@pytest.mark.parametrize("content", [b"short", b"SQLite format 3\x00" + b"\x00" * 10])
def test_short_files_are_corrupt(path, content):
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(CacheCorrupt):
        Cache.open(path)
    assert path.read_bytes() == content


def test_another_programs_database_is_not_taken_over(path):
    path.parent.mkdir(parents=True)
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE notes (x)")
    raw.commit()
    raw.close()
    before = digest(path)
    with pytest.raises(CacheCorrupt, match="another program"):
        Cache.open(path)
    assert digest(path) == before


def test_damaged_pages_surface_as_cache_corrupt(path):
    with Cache.open(path) as c:
        sync(c, T0, [link(i, S.Active, note="n" * 200) for i in range(3000)])
        c._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    for off in range(page * 3, len(data), page * 2):  # every other page after the first few
        data[off : off + page] = b"\x55" * page
    path.write_bytes(bytes(data))
    with pytest.raises(CacheCorrupt) as exc:
        c = Cache.open(path)
        try:
            c.link_count()
            c.inbox_page(customer_id=AGENCY, text="nnn", sort="client", limit=5000, now=T0)
            c.stage_counts(AGENCY, T0)
            assert c.integrity_problems() == []
        finally:
            c.close()
    assert "damaged" in str(exc.value)


def test_unusable_location_is_reported_as_unavailable(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("file")
    with pytest.raises(CacheUnavailable) as exc:
        Cache.open(blocker / "cache.sqlite")
    assert "cannot use the cache" in str(exc.value)


# ------------------------------------------------------------------------------------------------ two writers


def test_a_busy_writer_is_waited_for(path):
    Cache.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.4, lambda: holder.execute("COMMIT")).start()
    with Cache.open(path, busy_timeout=0.1, retries=5) as c:
        c.meta_set("k", "v")  # waits through busy timeout + backoff retries, then succeeds
        assert c.meta_get("k") == "v"
    holder.close()


def test_a_writer_that_never_finishes_gives_a_clear_cache_busy(path):
    Cache.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Cache.open(path, busy_timeout=0.05, retries=2) as c:
            with pytest.raises(CacheBusy) as exc:
                c.meta_set("k", "v")
            assert "Another linkdesk process" in str(exc.value) and "try again" in str(exc.value)
            assert c.meta_get("k") is None  # reads are not blocked by the writer (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_readers_see_the_previous_state_while_a_write_is_in_flight(cache, path):
    sync(cache, T0, [link(1, S.LinkPending)])
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE client_links SET status = 'Active'")
    assert cache.link(LinkKey(1, AGENCY)).status == S.LinkPending
    writer.execute("COMMIT")
    writer.close()
    assert cache.link(LinkKey(1, AGENCY)).status == S.Active


def test_two_processes_writing_at_once_never_see_database_is_locked(path):
    with Cache.open(path) as c:
        sync(c, T0, [link(i, S.LinkPending) for i in range(2000)])
    code = textwrap.dedent(
        """
        import sys
        from datetime import datetime, timezone, timedelta
        from linkdesk.core.cache import Cache
        from linkdesk.core.model import ClientLink, ClientLinkStatus as S
        path, who = sys.argv[1], int(sys.argv[2])
        t = datetime(2026, 3, 1, tzinfo=timezone.utc)
        c = Cache.open(path)
        for i in range(8):
            if who == 0:  # the "linkdesk sync" process: full snapshots
                snap = c.begin_snapshot(t)
                snap.add_links(ClientLink(client_entity_id=e, managing_customer_id=1000,
                                          status=S.Active if i % 2 else S.LinkPending) for e in range(2000))
                snap.commit(t + timedelta(seconds=i))
            else:  # the TUI: actions
                c.upsert_links([ClientLink(client_entity_id=5000 + i, managing_customer_id=1000,
                                           status=S.LinkPending)], t, actor_user_id=7)
                c.meta_set("k", str(i))
        c.close()
        print("ok")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    with Cache.open(path) as c:
        assert c.integrity_problems() == []
        assert [r.outcome for r in c.sync_runs()][:8] == ["ok"] * 8
