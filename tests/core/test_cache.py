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


def test_a_full_disk_is_reported_and_the_cache_stays_readable(cache):
    sync(cache, T0, [link(1, S.LinkPending)])
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk were full
    snap = cache.begin_snapshot(T0)
    snap.add_links(link(i, S.Active, note="x" * 500) for i in range(2000))  # staging is not in the cache file
    with pytest.raises(CacheUnavailable, match="the disk is full"):
        snap.commit(T0)
    assert statuses(cache) == {LinkKey(1, AGENCY): S.LinkPending}
    cache._conn.execute("PRAGMA max_page_count = 1073741823")  # space again
    assert snap.abort("The disk was full.", T0).outcome == "failed"  # the writer can still record the failure
    sync(cache, T0, [link(1, S.Active)])
    assert statuses(cache) == {LinkKey(1, AGENCY): S.Active} and cache.integrity_problems() == []


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


# ------------------------------------------------------------------------------------------------ snapshots


def test_snapshot_commit_replaces_state_and_records_every_change(cache):
    run1 = sync(cache, T0, [link(1, S.LinkPending, last_modified_date_time=T0 - timedelta(days=1)),
                            link(2, S.Active), link(3, S.LinkPending)])
    assert (run1.outcome, run1.links, run1.events) == ("ok", 3, 3)
    t1 = T0 + timedelta(hours=3)
    run2 = sync(cache, t1, [link(1, S.Active, last_modified_date_time=t1), link(2, S.Active), link(4, S.LinkPending)])
    assert (run2.links, run2.events) == (3, 3)  # 1 changed, 3 disappeared, 4 appeared; 2 unchanged
    assert statuses(cache) == {LinkKey(1, AGENCY): S.Active, LinkKey(2, AGENCY): S.Active,
                               LinkKey(4, AGENCY): S.LinkPending}
    tl = cache.timeline(LinkKey(1, AGENCY))
    assert [(e.from_status, e.to_status, e.source, e.at) for e in tl] == [
        (None, S.LinkPending, "sync", T0), (S.LinkPending, S.Active, "sync", t1)]
    assert tl[0].detail == "first seen"
    assert [e.to_status for e in cache.timeline(LinkKey(2, AGENCY))] == [S.Active]
    gone = cache.timeline(LinkKey(3, AGENCY))
    assert (gone[-1].from_status, gone[-1].to_status) == (S.LinkPending, None)
    assert gone[-1].detail == "no longer returned by the service"
    assert [(e.from_status, e.to_status, e.at) for e in cache.timeline(LinkKey(4, AGENCY))] == [(None, S.LinkPending, t1)]
    stored = cache.stored_link(LinkKey(1, AGENCY))
    assert stored.first_seen_at == T0  # kept across syncs
    assert stored.invited_at == T0 - timedelta(days=1)  # the invitation's time is kept once it moved on
    assert cache.last_sync().id == run2.id and cache.last_ok_sync().finished_at == t1
    assert cache.age(t1 + timedelta(minutes=5)) == timedelta(minutes=5)
    assert cache.integrity_problems() == []


def test_snapshot_replaces_only_the_kinds_it_staged(cache):
    sync(cache, T0, [link(1)], customers=[Customer(AGENCY, "Agency")], accounts=[Account(1, "A", "N1", 11)],
         users=[User(7, "sam", AGENCY, roles=(CustomerRole(AGENCY, Role.SuperAdmin),))])
    sync(cache, T0, [link(1), link(2)])  # links only
    assert cache.customer(AGENCY).name == "Agency" and cache.account(1) is not None and cache.user(7) is not None
    sync(cache, T0, users=[])  # "there are no users" is stated by staging an empty list
    assert cache.user(7) is None and cache.link_count() == 2


def test_abort_keeps_the_previous_state_and_records_the_outcome(cache):
    sync(cache, T0, [link(1, S.LinkPending)])
    snap = cache.begin_snapshot(T0)
    snap.add_links([link(1, S.Active), link(2)])
    snap.add_customers([Customer(5, "X")])
    run = snap.abort("The service did not answer.", T0 + timedelta(minutes=1))
    assert (run.outcome, run.message) == ("failed", "The service did not answer.")
    assert statuses(cache) == {LinkKey(1, AGENCY): S.LinkPending} and cache.customer(5) is None
    assert len(cache.timeline(LinkKey(1, AGENCY))) == 1
    assert cache._conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0] == 0  # staging dropped
    with pytest.raises(RuntimeError, match="already committed or aborted"):
        snap.add_links([link(3)])
    snap2 = cache.begin_snapshot(T0)
    assert snap2.abort("stopped", T0, cancelled=True).outcome == "cancelled"
    assert cache.last_ok_sync().outcome == "ok" and cache.last_sync().outcome == "cancelled"
    sync(cache, T0, [link(1, S.Active)])  # and the next sync works
    assert statuses(cache) == {LinkKey(1, AGENCY): S.Active}


def test_one_snapshot_at_a_time_per_connection(cache):
    snap = cache.begin_snapshot(T0)
    with pytest.raises(RuntimeError, match="already open"):
        cache.begin_snapshot(T0)
    snap.commit(T0)
    cache.begin_snapshot(T0).abort("x", T0)


def test_staging_is_invisible_to_other_connections_and_takes_no_write_lock(cache, path):
    sync(cache, T0, [link(1, S.LinkPending)])
    snap = cache.begin_snapshot(T0)
    snap.add_links(link(i, S.Inactive) for i in range(5000))
    with Cache.open(path, busy_timeout=0.05, retries=0) as other:
        assert other.link_count() == 1
        other.meta_set("written", "while staging")  # would raise CacheBusy if staging held the lock
    snap.commit(T0)
    assert cache.link_count() == 5000 and cache.meta_get("written") == "while staging"


def test_interrupted_run_is_marked_failed_by_the_next_sync(cache):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cache._conn.execute("INSERT INTO sync_runs (started_at, outcome, pid) VALUES (0, 'running', ?)", (dead.pid,))
    cache._conn.execute("INSERT INTO sync_runs (started_at, outcome, pid) VALUES (0, 'running', ?)", (os.getpid(),))
    cache.begin_snapshot(T0).commit(T0)
    outcomes = [(r.outcome, r.message) for r in cache.sync_runs()][::-1]
    assert outcomes[0] == ("failed", "interrupted: the process stopped before the sync finished")
    assert outcomes[1] == ("running", None)  # a live process's run is left alone
    assert outcomes[2] == ("ok", None)


_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timezone
    from linkdesk.core.cache import Cache
    from linkdesk.core.model import ClientLink, ClientLinkStatus as S
    path, mode = sys.argv[1], sys.argv[2]
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    if mode == "commit":  # stop inside the commit's transaction, after the links were written
        original = Cache._apply_staged_links
        def slow(self, *a, **k):
            n = original(self, *a, **k)
            print("inside commit", flush=True)
            time.sleep(60)
            return n
        Cache._apply_staged_links = slow
    c = Cache.open(path)
    snap = c.begin_snapshot(now)
    def links():
        for i in range(12000):
            if mode == "staging" and i == 9000:
                print("staged", flush=True)
                time.sleep(60)
            yield ClientLink(client_entity_id=1 + i, managing_customer_id=1000, status=S.Inactive,
                             client_entity_name=f"killed {i}")
    snap.add_links(links())
    snap.commit(now)
    """
)


@pytest.mark.parametrize("mode", ["staging", "commit"])
def test_kill_9_in_the_middle_of_a_snapshot_leaves_the_previous_state(path, mode):
    before_links = [link(i, S.LinkPending if i % 2 else S.Active) for i in range(1, 51)]
    with Cache.open(path) as c:
        sync(c, T0, before_links, customers=[Customer(AGENCY, "Agency")])
        before = statuses(c)
        events_before = c._conn.execute("SELECT count(*) FROM link_events").fetchone()[0]
    child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(path), mode], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() in ("staged", "inside commit"), child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    with Cache.open(path) as c:
        assert c.integrity_problems() == []
        assert statuses(c) == before
        assert c._conn.execute("SELECT count(*) FROM link_events").fetchone()[0] == events_before
        assert c.inbox_count(customer_id=AGENCY, text="killed", now=T0) == 0
        assert c.last_sync().outcome == "running" and c.last_ok_sync().finished_at == T0
        run = sync(c, T0 + timedelta(hours=1), [link(1, S.Inactive)])  # the next sync works
        assert run.outcome == "ok" and statuses(c) == {LinkKey(1, AGENCY): S.Inactive}
        assert [r.outcome for r in c.sync_runs()][1] == "failed"  # the killed run, now marked
        assert c.integrity_problems() == []


def test_invitation_time_follows_the_invitation(cache):
    k = LinkKey(1, AGENCY)
    sync(cache, T0, [link(1, S.LinkPending)])  # no LastModifiedDateTime: first observed now
    assert cache.stored_link(k).invited_at == T0
    sync(cache, T0 + timedelta(days=1), [link(1, S.LinkPending)])
    assert cache.stored_link(k).invited_at == T0  # still the same invitation
    sync(cache, T0 + timedelta(days=2), [link(1, S.Active)])
    assert cache.stored_link(k).invited_at == T0  # kept after it moved on (age of the relationship)
    later = T0 + timedelta(days=9)
    sync(cache, later, [link(1, S.LinkPending, last_modified_date_time=later - timedelta(hours=1))])
    assert cache.stored_link(k).invited_at == later - timedelta(hours=1)  # a new invitation: its own time
    sync(cache, later, [link(2, S.Active)])
    assert cache.stored_link(LinkKey(2, AGENCY)).invited_at is None  # never seen pending


def test_the_owner_of_a_client_entity_is_resolved(cache):
    sync(cache, T0, [link(1), link(2, client_entity_customer_number="CB"), link(3),
                     link(12, type=LinkType.CustomerLink)],
         customers=[Customer(11, "A", "CA"), Customer(12, "B", "CB")], accounts=[Account(1, "A1", "N1", 11)])
    owner = lambda e, t=LinkType.AccountLink: cache.stored_link(LinkKey(e, AGENCY, t)).client_customer_id  # noqa: E731
    assert owner(1) == 11  # from the account
    assert owner(2) == 12  # from ClientEntityCustomerNumber
    assert owner(3) is None
    assert owner(12, LinkType.CustomerLink) == 12


def test_inbox_rows_carry_their_client_customer_from_one_query(cache):
    """The inbox's counterparty column comes with the page: the owner's id and name, or the number the link names
    while the owner is not known."""
    sync(cache, T0, [link(1), link(2, client_entity_customer_number="CB"), link(3, client_entity_customer_number="CZ"),
                     link(12, type=LinkType.CustomerLink)],
         customers=[Customer(11, "A", "CA"), Customer(12, "B", "CB")], accounts=[Account(1, "A1", "N1", 11)])
    rows = {r.key.client_entity_id: r for r in cache.inbox_page(customer_id=AGENCY, now=T0)}
    assert (rows[1].client_customer_id, rows[1].client_customer_name) == (11, "A")
    assert (rows[2].client_customer_id, rows[2].client_customer_name) == (12, "B")
    assert (rows[3].client_customer_id, rows[3].client_customer_name, rows[3].client_entity_customer_number) == (
        None, None, "CZ")
    assert (rows[12].client_customer_id, rows[12].client_customer_name) == (12, "B")


def test_links_without_identity_are_refused(cache):
    snap = cache.begin_snapshot(T0)
    with pytest.raises(ValueError, match="without ClientEntityId and ManagingCustomerId"):
        snap.add_links([ClientLink(client_entity_number="X123", managing_customer_id=AGENCY)])
    snap.abort("bad data", T0)


_dt = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                   timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))]))
_text = st.none() | st.text(max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lk=st.builds(
        ClientLink,
        type=st.sampled_from([LinkType.AccountLink, LinkType.CustomerLink]),
        client_entity_id=st.integers(1, 2**62),
        client_entity_number=_text, client_entity_name=_text,
        managing_customer_id=st.integers(1, 2**62),
        managing_customer_number=_text, managing_customer_name=_text, note=_text, name=_text,
        inviter_email=_text, inviter_name=_text, inviter_phone=_text,
        is_bill_to_client=st.none() | st.booleans(), start_date=st.none() | _dt,
        status=st.none() | st.sampled_from(list(S)) | st.text(min_size=1, max_size=12),
        suppress_notification=st.booleans(), last_modified_date_time=st.none() | _dt,
        last_modified_by_user_id=st.none() | st.integers(1, 2**40), timestamp=_text,
        forward_compatibility_map=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3).map(tuple),
        customer_link_permission=st.none() | st.sampled_from(list(CustomerLinkPermission)) | st.just("LinkedEntityOnly"),
        client_entity_customer_number=_text,
    )
)
def test_every_client_link_element_round_trips(cache, lk):
    cache.upsert_links([lk], T0)
    back = cache.link(lk.key)

    def norm(d):
        return None if d is None else (d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC))

    expected = lk.replace(start_date=norm(lk.start_date), last_modified_date_time=norm(lk.last_modified_date_time))
    assert back == expected
    for d in (back.start_date, back.last_modified_date_time):
        assert d is None or d.tzinfo == UTC


def test_every_client_link_element_is_a_column(cache):
    cols = {r[1] for r in cache._conn.execute("PRAGMA table_info(client_links)")}
    assert set(cache_mod.CLIENT_LINK_WIRE) <= cols
    assert {"first_seen_at", "invited_at", "client_customer_id", "search_text"} <= cols


# ------------------------------------------------------------------------------------------------ events


def test_upsert_links_appends_events_for_changes_with_their_source(cache):
    k = LinkKey(1, AGENCY)
    ev = cache.upsert_links([link(1, S.LinkPending)], T0, source="action:invite", actor_user_id=7)
    assert [(e.key, e.from_status, e.to_status, e.source, e.actor_user_id, e.kind) for e in ev] == [
        (k, None, S.LinkPending, "action:invite", 7, "change")]
    assert cache.upsert_links([link(1, S.LinkPending, note="changed note")], T0) == []  # no status change
    assert cache.link(k).note == "changed note"
    ev = cache.upsert_links([link(1, S.LinkCanceled)], T0 + timedelta(minutes=1), source="action:cancel",
                            actor_user_id=7)
    assert [(e.from_status, e.to_status, e.source) for e in ev] == [(S.LinkPending, S.LinkCanceled, "action:cancel")]
    assert cache.stored_link(k).invited_at == T0
    assert [t.link_count for t in cache.client_customers(AGENCY)] == [1]  # the tree follows targeted writes


def test_record_event_keeps_intents_and_outcomes(cache):
    k = LinkKey(5, AGENCY)
    intent = cache.record_event(k, at=T0, source="action:invite", to_status=S.LinkPending, actor_user_id=7,
                                detail="about to send")
    outcome = cache.record_event(k, at=T0, source="action:invite", kind="outcome", detail="sent")
    assert (intent.kind, intent.to_status, intent.detail) == ("intent", S.LinkPending, "about to send")
    assert [e.id for e in cache.timeline(k)] == [intent.id, outcome.id]
    assert [e.id for e in cache.events(kind="intent")] == [intent.id]
    assert [e.id for e in cache.events(source="action:invite")] == [outcome.id, intent.id]
    assert cache.events(since=T0 + US) == []
    assert len(cache.events(limit=1)) == 1
    with pytest.raises(ValueError, match="Unknown event kind"):
        cache.record_event(k, at=T0, source="x", kind="gossip")


@pytest.mark.parametrize("sql", ["UPDATE link_events SET detail = 'rewritten'", "DELETE FROM link_events"])
def test_link_events_are_append_only(cache, sql):
    sync(cache, T0, [link(1)])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cache._conn.execute(sql)
    assert len(cache.timeline(LinkKey(1, AGENCY))) == 1


def test_meta_values_and_snapshot_meta(cache):
    assert cache.meta_get("user_id") is None and cache.meta_get("user_id", "?") == "?"
    cache.meta_set("user_id", "7")
    snap = cache.begin_snapshot(T0)
    snap.set_meta("customer_id", str(AGENCY))
    snap.set_meta("user_id", None)
    assert cache.meta_get("customer_id") is None  # not before the commit
    snap.commit(T0)
    assert cache.meta_all() == {"customer_id": str(AGENCY)}


# ------------------------------------------------------------------------------------------------ inbox: stages

STATUS_VALUES: list[S | str | None] = [*S, "SomeStatusFromTheFuture", None]


def _elapsed_samples() -> list[int]:
    """Elapsed µs since the invitation: every rules breakpoint, one µs either side, and a few in between."""
    points = set()
    for b in cache_mod._breakpoints():
        points |= {b - 1, b, b + 1}
    points |= {-86_400_000_000, 3_600_000_000, 10 * 86_400_000_000, 27 * 86_400_000_000, 90 * 86_400_000_000}
    return sorted(points)


def _stage_world(c: Cache) -> None:
    """Links of every status, seen from both sides, invited at every sample time before T0 (and some never
    pending). Non-pending ones were first seen pending, so they carry an invitation time too."""
    received_accounts = []
    first, final = [], []
    n = 0
    for status in STATUS_VALUES:
        for side in ("sent", "received"):
            for e in [*_elapsed_samples(), None]:
                n += 1
                if side == "sent":
                    kw = dict(managing=AGENCY)
                else:
                    received_accounts.append(Account(n, f"Own {n}", f"O{n}", AGENCY))
                    kw = dict(managing=OTHER_AGENCY)
                inv = None if e is None else T0 - timedelta(microseconds=e)
                if inv is not None:
                    first.append(link(n, S.LinkPending, last_modified_date_time=inv, **kw))
                final.append(link(n, status, last_modified_date_time=inv if status == S.LinkPending else None, **kw))
    # Customer links received by our customer (entity = our customer id), from other agencies.
    for i, status in enumerate(STATUS_VALUES):
        final.append(link(AGENCY, status, managing=OTHER_AGENCY + 1 + i, type=LinkType.CustomerLink,
                          last_modified_date_time=T0 - timedelta(days=i) if status == S.LinkPending else None))
    sync(c, T0 - timedelta(days=200), first, accounts=received_accounts)
    sync(c, T0 - timedelta(days=100), final, accounts=received_accounts)


def test_sql_stage_equals_rules_stage_for_every_status_perspective_and_time(cache):
    _stage_world(cache)
    links = {}
    nows = [T0, T0 + timedelta(days=3), T0 + timedelta(days=23) + US, T0 + timedelta(days=30), T0 - timedelta(days=1)]
    checked = 0
    for now in nows:
        for p in (Perspective.SENT, Perspective.RECEIVED, None):
            rows = cache.inbox_page(customer_id=AGENCY, perspective=p, limit=10**6, now=now)
            expected: dict[Stage, int] = {s: 0 for s in Stage}
            for r in rows:
                lk = links.get(r.key) or links.setdefault(r.key, cache.link(r.key))
                side = Perspective.SENT if r.key.managing_customer_id == AGENCY else Perspective.RECEIVED
                assert r.perspective == (p or side)
                want = rules.stage(lk, r.perspective, now, invited_at=r.invited_at)
                assert r.stage == want, (r.key, lk.status, r.perspective, now - r.invited_at if r.invited_at else None)
                expected[want] += 1
                checked += 1
            for s in Stage:
                assert cache.inbox_count(customer_id=AGENCY, perspective=p, stage=s, now=now) == expected[s], (p, s)
                got = {r.key for r in cache.inbox_page(customer_id=AGENCY, perspective=p, stage=s, limit=10**6, now=now)}
                assert got == {r.key for r in rows if r.stage == s}
            assert cache.stage_counts(AGENCY, now, perspective=p) == expected
    assert checked > 5000
    assert {r.stage for r in rows} == set(Stage)  # every stage was exercised


_status_st = st.sampled_from(STATUS_VALUES)


@settings(max_examples=300, deadline=None)
@given(
    status=_status_st,
    perspective=st.sampled_from(list(Perspective)),
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    elapsed=st.none() | st.integers(-10 * 86_400_000_000, 60 * 86_400_000_000)
    | st.sampled_from(cache_mod._breakpoints()),
)
def test_generated_stage_sql_agrees_with_rules(status, perspective, now, elapsed):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE l (status TEXT, invited_at INTEGER)")
    inv = None if elapsed is None else now - timedelta(microseconds=elapsed)
    conn.execute("INSERT INTO l VALUES (?, ?)", (status.value if isinstance(status, S) else status,
                                                  cache_mod._to_us(inv)))
    got = conn.execute(f"SELECT {stage_sql(perspective, now)} FROM l").fetchone()[0]
    lk = ClientLink(client_entity_id=1, managing_customer_id=2, status=status)
    want = rules.stage(lk, perspective, now, invited_at=inv)
    assert got == want.value
    matching = [s for s in Stage if conn.execute(
        f"SELECT count(*) FROM l WHERE {stage_predicate_sql(perspective, s, now)}").fetchone()[0]]
    assert matching == [want]


# ------------------------------------------------------------------------------------------------ inbox: filters


def test_perspectives_select_the_right_side(cache):
    sync(
        cache, T0,
        [link(1, client_entity_customer_number="C11"),  # sent
         link(900),  # received: account owned by us, managed by another agency (below)
         link(AGENCY, managing=OTHER_AGENCY, type=LinkType.CustomerLink),  # received customer link
         link(2, managing=OTHER_AGENCY),  # someone else's business
         link(901)],  # our own account managed by us: sent, once
        customers=[Customer(11, "C", "C11")],
        accounts=[Account(900, "Own", "O900", AGENCY), Account(901, "Own 2", "O901", AGENCY), Account(2, "X", "X2", 11)],
    )
    cache.upsert_links([link(900, managing=OTHER_AGENCY)], T0)
    keys = lambda p: {r.key for r in cache.inbox_page(customer_id=AGENCY, perspective=p, now=T0)}  # noqa: E731
    sent = {LinkKey(1, AGENCY), LinkKey(900, AGENCY), LinkKey(901, AGENCY)}
    received = {LinkKey(900, OTHER_AGENCY), LinkKey(AGENCY, OTHER_AGENCY, LinkType.CustomerLink)}
    assert keys(Perspective.SENT) == sent
    assert keys(Perspective.RECEIVED) == received | {LinkKey(900, AGENCY), LinkKey(901, AGENCY)}
    both = cache.inbox_page(customer_id=AGENCY, perspective=None, now=T0)
    assert {r.key for r in both} == sent | received and len(both) == 5
    assert cache.inbox_count(customer_id=AGENCY, now=T0) == 5
    assert sum(cache.stage_counts(AGENCY, T0).values()) == 5
    for stage in Stage:  # with a stage, "both" still counts a link of ours on both sides once, as sent
        rows = cache.inbox_page(customer_id=AGENCY, stage=stage, now=T0)
        assert all(r.perspective == Perspective.SENT for r in rows if r.key.managing_customer_id == AGENCY)
    assert cache.stage_counts(AGENCY, T0)[Stage.ACTIVE] == 5


def test_status_filter(cache):
    sync(cache, T0, [link(1, S.Active), link(2, S.LinkPending), link(3, S.Inactive)])
    q = dict(customer_id=AGENCY, now=T0)
    assert [r.key.client_entity_id for r in cache.inbox_page(status=S.Active, **q)] == [1]
    assert {r.key.client_entity_id for r in cache.inbox_page(status=["Inactive", S.LinkPending], **q)} == {2, 3}
    assert cache.inbox_count(status=(), **q) == 0


TEXT_LINKS = [
    link(1, client_entity_name="Äcme Straße GmbH", client_entity_number="X1001"),
    link(2, client_entity_name="Contoso", note="renewal [bold red]boom[/] \"quoted\""),
    link(3, client_entity_name="Fabrikam", name="Q3 push", managing_customer_name="Agency"),
    link(4, client_entity_name="foo", client_entity_number="bar77"),
    link(55501, client_entity_name=None, client_entity_number=None),
    link(6, client_entity_name="NORTHWIND", note="AND OR NOT * ^ -"),
]


def _truth(needle: str) -> set[int]:
    n = "".join(ch for ch in needle.casefold() if ch >= " " and ch != "\x7f").strip()
    fields = lambda lk: [lk.client_entity_name, lk.client_entity_number, lk.client_entity_id,  # noqa: E731
                         lk.managing_customer_name, lk.name, lk.note]
    return {lk.client_entity_id for lk in TEXT_LINKS if any(n in str(f).casefold() for f in fields(lk) if f is not None)}


@pytest.mark.parametrize("use_index", [True, False])
@pytest.mark.parametrize(
    "needle, expected",
    [("äcme", {1}), ("ÄCME STRASSE", {1}), ("x100", {1}), ("BOLD RED", {2}), ('"quoted"', {2}), ("q3 p", {3}),
     ("agency", {3}), ("555", {55501}), ("foobar", set()), ("and or not *", {6}), ("^", {6}), ("oo", {2, 4}),
     ("  contoso  ", {2}), ("", {1, 2, 3, 4, 55501, 6}), ("zzz", set())],
)
def test_text_filter(cache, use_index, needle, expected):
    sync(cache, T0, TEXT_LINKS)
    cache._fts = cache._fts and use_index
    got = {r.key.client_entity_id for r in cache.inbox_page(customer_id=AGENCY, text=needle, now=T0)}
    assert got == expected == (_truth(needle) if needle.strip() else expected)
    assert cache.inbox_count(customer_id=AGENCY, text=needle, now=T0) == len(expected)
    assert sum(cache.stage_counts(AGENCY, T0, text=needle).values()) == len(expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(needle=st.text(max_size=6) | st.sampled_from(["äcm", "straß", "ss", "[/]", "7", "gmbh"]))
def test_text_filter_matches_a_plain_substring_search(cache, needle):
    if not cache.link_count():
        sync(cache, T0, TEXT_LINKS)
    want = _truth(needle)
    for fts in (True, False):
        cache._fts = fts and cache._fts_table
        got = {r.key.client_entity_id for r in cache.inbox_page(customer_id=AGENCY, text=needle, now=T0)}
        assert got == want, (needle, fts)


@pytest.mark.parametrize("sort", SORTS)
def test_common_needles_walk_the_sort_index_with_the_same_answer(cache, monkeypatch, sort):
    links = [link(i, S.LinkPending if i % 3 else S.Active, client_entity_name=f"{'acme' if i % 2 else 'other'} {i:02d}",
                  last_modified_date_time=T0 - timedelta(hours=i)) for i in range(1, 41)]
    sync(cache, T0, links)
    q = dict(customer_id=AGENCY, perspective=Perspective.SENT, text="ACME", sort=sort, now=T0)
    via_index = [cache.inbox_page(offset=o, limit=6, **q) for o in (0, 6)]
    assert not cache._common_needle("acme")
    monkeypatch.setattr(cache_mod, "_DENSE_NEEDLE", 5)  # now "acme" (20 matches) counts as common
    assert cache._common_needle("acme") and not cache._common_needle("acme 01")
    walked = [cache.inbox_page(offset=o, limit=6, **q) for o in (0, 6)]
    assert walked == via_index and len(walked[0]) == 6
    assert all("acme" in r.client_entity_name for page in walked for r in page)


def test_search_index_follows_targeted_writes(cache):
    sync(cache, T0, TEXT_LINKS)
    cache.upsert_links([link(4, client_entity_name="Renamed Widgets")], T0)
    q = dict(customer_id=AGENCY, now=T0)
    assert [r.key.client_entity_id for r in cache.inbox_page(text="widgets", **q)] == [4]
    assert cache.inbox_page(text="foo", **q) == []
    sync(cache, T0, TEXT_LINKS[:2])
    assert cache.inbox_page(text="northwind", **q) == []


def test_without_fts5_the_cache_still_works_and_the_index_is_rebuilt_later(path, monkeypatch):
    with Cache.open(path) as c:
        sync(c, T0, TEXT_LINKS)
    monkeypatch.setattr(cache_mod, "_fts_probe", False)  # as on a Python whose SQLite lacks FTS5
    with Cache.open(path) as c:
        assert not c._fts
        c.upsert_links([link(7, client_entity_name="Written without the index")], T0)
        assert [r.key.client_entity_id for r in c.inbox_page(customer_id=AGENCY, text="without the", now=T0)] == [7]
        assert c.meta_get("search_index_stale") == "1"
    monkeypatch.setattr(cache_mod, "_fts_probe", True)
    with Cache.open(path) as c:
        assert c._fts and c.meta_get("search_index_stale") is None
        assert [r.key.client_entity_id for r in c.inbox_page(customer_id=AGENCY, text="without the", now=T0)] == [7]
        c.upsert_links([link(8, client_entity_name="after the rebuild")], T0)
        assert [r.key.client_entity_id for r in c.inbox_page(customer_id=AGENCY, text="after the", now=T0)] == [8]


# ------------------------------------------------------------------------------------------------ inbox: sorts


def _sort_world(c: Cache) -> list[ClientLink]:
    import random

    rnd = random.Random(5)
    links = []
    for i in range(1, 61):
        st_ = rnd.choice([S.LinkPending, S.Active, S.Inactive, S.LinkAccepted])
        lm = None if i % 9 == 0 else T0 - timedelta(hours=rnd.randint(0, 2000))
        links.append(link(i, st_, client_entity_name=rnd.choice(["alpha", "Beta", "gamma", "Delta", "beta"]) + f" {i % 7}",
                          last_modified_date_time=lm))
    sync(c, T0 - timedelta(days=1), links)
    return links


def _sort_key(sort: str, descending: bool, r):
    """The order each sort promises, as (group, value) tuples ascending; None values always last."""
    if sort == "client":
        return (r.client_entity_name.lower(),)
    if sort == "status":
        return (str(r.status),)
    if sort == "age":  # ascending age = newest invitation first
        if r.invited_at is None:
            return (1, 0)
        v = r.invited_at.timestamp()
        return (0, -v if not descending else v)
    if sort == "days_left":
        if r.status != S.LinkPending:
            return (1, 0)
        v = r.invited_at.timestamp()
        return (0, v if not descending else -v)
    if sort == "last_change":
        if r.last_modified is None:
            return (1, 0)
        v = r.last_modified.timestamp()
        return (0, v if not descending else -v)
    raise AssertionError(sort)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", SORTS)
def test_sorts_are_ordered_and_pages_tile_the_list(cache, sort, descending):
    links = _sort_world(cache)
    q = dict(customer_id=AGENCY, perspective=Perspective.SENT, sort=sort, descending=descending, now=T0)
    full = cache.inbox_page(limit=1000, **q)
    assert {r.key for r in full} == {lk.key for lk in links}
    keys = [_sort_key(sort, descending, r) for r in full]
    if sort in ("client", "status") and descending:
        assert keys == sorted(keys, reverse=True)
    else:
        assert keys == sorted(keys)
    pages = [cache.inbox_page(offset=o, limit=7, **q) for o in range(0, 70, 7)]
    assert [r.key for p in pages for r in p] == [r.key for r in full]
    assert cache.inbox_page(offset=500, limit=7, **q) == []


def test_unknown_sort_is_refused_clearly(cache):
    with pytest.raises(ValueError, match="Unknown inbox sort 'size'; use one of: client, status"):
        cache.inbox_page(customer_id=AGENCY, sort="size", now=T0)


def test_inbox_rows_carry_what_the_inbox_shows(cache):
    sync(cache, T0, [link(1, S.LinkPending, is_bill_to_client=False, note="n", name="nm",
                          managing_customer_name="Agency", last_modified_date_time=T0 - timedelta(days=20))])
    (r,) = cache.inbox_page(customer_id=AGENCY, now=T0)
    assert (r.client_entity_name, r.client_entity_number, r.type, r.status, r.is_bill_to_client) == (
        "Account 1", "N1", LinkType.AccountLink, S.LinkPending, False)
    assert (r.invited_at, r.last_modified, r.managing_customer_name, r.name, r.note) == (
        T0 - timedelta(days=20), T0 - timedelta(days=20), "Agency", "nm", "n")
    assert (r.perspective, r.stage) == (Perspective.SENT, Stage.PENDING)
    assert r.days_left(T0) == rules.days_left(T0 - timedelta(days=20), T0) == 10
    with pytest.raises(Exception):
        r.note = "frozen"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ tree


def _seed_world(c: Cache) -> None:
    """design.md §7's figure: User A reaches A1; User B reaches A2, B1, B2; Client A owns A1, A2; Client B owns
    B1, B2 — plus a customer-level link, an account known only by its link, and a link whose owner is unknown."""
    customers = [Customer(AGENCY, "Contoso Agency", "AG"), Customer(11, "Client A", "CA"),
                 Customer(12, "client B", "CB"), Customer(13, "Client C", "CC"), Customer(14, "Client D", "CD")]
    accounts = [Account(101, "A1", "NA1", 11, linked_agency_ids=(AGENCY,)), Account(102, "A2", "NA2", 11),
                Account(201, "B1", "NB1", 12), Account(202, "B2", "NB2", 12), Account(203, "B3 unlinked", "NB3", 12),
                Account(900, "Agency House", "NH", AGENCY, prepaid=True)]
    users = [
        User(7, "sam@contoso", AGENCY, "Sam", "Super",
             roles=(CustomerRole(AGENCY, Role.SuperAdmin, None, (101, 102, 201, 202)),)),
        User(8, "usera@contoso", AGENCY, roles=(CustomerRole(AGENCY, Role.AdvertiserCampaignManager, (101,)),)),
        User(9, "userb@contoso", AGENCY, roles=(CustomerRole(AGENCY, Role.Viewer, (102, 201, 202)),
                                                CustomerRole(AGENCY, Role.Standard, (102, 201, 202)))),
        User(10, "client@a", 11, roles=(CustomerRole(11, Role.SuperAdmin),)),
    ]
    links = [
        link(101, S.Active, is_bill_to_client=True, client_entity_name="A1"),
        link(102, S.LinkPending, is_bill_to_client=False, client_entity_name="A2",
             last_modified_date_time=T0 - timedelta(days=2)),
        link(201, S.Active, client_entity_name="B1"), link(202, S.UnlinkRequested, client_entity_name="B2"),
        link(13, S.LinkPending, type=LinkType.CustomerLink, client_entity_name="Client C",
             last_modified_date_time=T0 - timedelta(days=1)),
        link(301, S.LinkPending, client_entity_name="D1", client_entity_customer_number="CD"),
        link(401, S.LinkExpired, client_entity_name="Mystery", client_entity_number=None),
        link(101, S.Inactive, managing=OTHER_AGENCY),  # another agency's old link: not in our tree
    ]
    sync(c, T0, links, customers=customers, accounts=accounts, users=users)


def test_tree_users_and_the_accounts_they_reach(cache):
    _seed_world(cache)
    users = cache.agency_users(AGENCY)
    assert [(u.user_id, u.display_name, u.role, u.account_count) for u in users] == [
        (7, "Sam Super", Role.SuperAdmin, 5), (8, "usera@contoso", Role.AdvertiserCampaignManager, 1),
        (9, "userb@contoso", Role.Standard, 3)]  # the higher of B's two roles; the client's user is not listed
    sam = cache.user_accounts(7)
    assert [(a.account_id, a.name, a.via_customer_id, a.link_status) for a in sam] == [
        (101, "A1", AGENCY, S.Active), (102, "A2", AGENCY, S.LinkPending), (900, "Agency House", AGENCY, None),
        (201, "B1", AGENCY, S.Active), (202, "B2", AGENCY, S.UnlinkRequested)]
    assert sam[1].invited_at == T0 - timedelta(days=2) and sam[0].is_bill_to_client is True
    assert cache.user_accounts_count(7) == 5
    assert [a.account_id for a in cache.user_accounts(7, offset=3, limit=10)] == [201, 202]
    assert [a.account_id for a in cache.user_accounts(8)] == [101]
    u = cache.user(7)
    assert u.roles[0].account_ids is None and u.roles[0].linked_account_ids == (101, 102, 201, 202)
    assert cache.user(8).roles[0].account_ids == (101,)
    brief = cache.user(8, with_accounts=False)  # the first frame's read: who and which role, not what it reaches
    assert (brief.user_name, brief.role_at(AGENCY), brief.roles[0].account_ids) == ("usera@contoso",
                                                                                    Role.AdvertiserCampaignManager, ())
    assert cache.account(900).prepaid is True and cache.account(101).linked_agency_ids == (AGENCY,)
    assert cache.customer(12).name == "client B" and cache.customer(99) is None and cache.user(99) is None


def test_tree_client_customers_and_their_accounts(cache):
    _seed_world(cache)
    clients = cache.client_customers(AGENCY)
    assert [(c.customer_id, c.name, c.link_count, c.customer_link_status) for c in clients] == [
        (11, "Client A", 2, None), (12, "client B", 2, None), (13, "Client C", 1, S.LinkPending),
        (14, "Client D", 1, None), (None, None, 1, None)]  # by name, case-insensitive; unknown owner last
    assert cache.client_customers_count(AGENCY) == 5
    assert [c.customer_id for c in cache.client_customers(AGENCY, offset=1, limit=2)] == [12, 13]
    a = cache.customer_accounts(11, agency_customer_id=AGENCY)
    assert [(x.account_id, x.name, x.link_status, x.is_bill_to_client, x.invited_at) for x in a] == [
        (101, "A1", S.Active, True, None), (102, "A2", S.LinkPending, False, T0 - timedelta(days=2))]
    b = cache.customer_accounts(12, agency_customer_id=AGENCY)
    assert [(x.account_id, x.link_status) for x in b] == [(201, S.Active), (202, S.UnlinkRequested), (203, None)]
    assert cache.customer_accounts_count(12, agency_customer_id=AGENCY) == 3
    d = cache.customer_accounts(14, agency_customer_id=AGENCY)  # known only through its link
    assert [(x.account_id, x.name, x.link_status, x.parent_customer_id) for x in d] == [(301, "D1", S.LinkPending, 14)]
    with pytest.raises(ValueError, match="run a sync first"):
        cache.customer_accounts(11)
    cache.meta_set("customer_id", str(AGENCY))  # the sync records the profile's customer
    assert cache.customer_accounts(11, 1, 10) == a[1:]
    unknown = cache.customer_accounts(None, agency_customer_id=AGENCY)
    assert [(x.account_id, x.name) for x in unknown] == [(401, "Mystery")]
    assert cache.customer_accounts_count(None, agency_customer_id=AGENCY) == 1
    # The other agency sees its own (single) client.
    assert [(c.customer_id, c.link_count) for c in cache.client_customers(OTHER_AGENCY)] == [(11, 1)]


def test_tree_children_page_in_name_order_at_any_depth(cache):
    import random

    rnd = random.Random(3)
    ids = list(range(5000, 5250))
    rnd.shuffle(ids)
    accounts = [Account(i, f"Acct {i - 5000:03d}", f"N{i}", 11) for i in ids]
    customers = [Customer(11, "Big Client")] + [Customer(20000 + i, f"Client {i:03d}") for i in ids]
    links = [link(i, S.Active) for i in ids] + [link(20000 + i, S.LinkPending, type=LinkType.CustomerLink) for i in ids]
    users = [User(7, "sam", AGENCY, roles=(CustomerRole(AGENCY, Role.SuperAdmin, None, tuple(ids)),))]
    sync(cache, T0, links, customers=customers, accounts=accounts, users=users)
    pages = [cache.user_accounts(7, offset=o, limit=100) for o in (0, 100, 200)]
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [a.name for p in pages for a in p] == [f"Acct {i:03d}" for i in range(250)]
    pages = [cache.customer_accounts(11, agency_customer_id=AGENCY, offset=o, limit=100) for o in (0, 100, 200)]
    assert [a.name for p in pages for a in p] == [f"Acct {i:03d}" for i in range(250)]
    clients = [c.name for o in range(0, 300, 100) for c in cache.client_customers(AGENCY, offset=o, limit=100)]
    assert clients == ["Big Client"] + [f"Client {i:03d}" for i in range(5000, 5250)]


def test_tree_follows_renames_and_targeted_writes(cache):
    _seed_world(cache)
    sync(cache, T0, customers=[Customer(AGENCY, "Contoso Agency"), Customer(11, "Zeta (was Client A)", "CA"),
                               Customer(12, "client B", "CB"), Customer(13, "Client C", "CC"),
                               Customer(14, "Client D", "CD")])
    assert cache.client_customers(AGENCY)[-2].name == "Zeta (was Client A)"
    sync(cache, T0, accounts=[Account(101, "Z1 renamed", "NA1", 11), Account(102, "A2", "NA2", 11)])
    assert [a.account_id for a in cache.user_accounts(7)][-1] == 101  # re-sorted by the new name
    cache.upsert_links([link(777, S.LinkPending, client_entity_customer_number="CC")], T0, actor_user_id=7)
    c13 = [c for c in cache.client_customers(AGENCY) if c.customer_id == 13][0]
    assert c13.link_count == 2


# ------------------------------------------------------------------------------------------------ property: timeline

_KEYS = [LinkKey(i, AGENCY) for i in range(1, 5)] + [LinkKey(1, AGENCY, LinkType.CustomerLink), LinkKey(1, OTHER_AGENCY)]
_PROP_STATUSES = [S.LinkPending, S.Active, S.LinkCanceled, S.Inactive, "SomethingNew"]
_assignment = st.dictionaries(st.sampled_from(range(len(_KEYS))), st.sampled_from(_PROP_STATUSES), max_size=len(_KEYS))
_step = st.tuples(st.sampled_from(["sync", "upsert", "abort", "intent"]), _assignment)


@settings(max_examples=35, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=7))
def test_random_sync_sequences_keep_the_timeline_consistent(steps):
    """After any sequence of full syncs, targeted upserts, aborted syncs and recorded intents, the last observed
    change of every link is its current status (None once gone), and there is one change per transition."""
    with tempfile.TemporaryDirectory() as tmp:
        c = Cache.open(Path(tmp) / "cache.sqlite")
        try:
            current: dict[LinkKey, S | str] = {}
            changes: dict[LinkKey, int] = {}
            seen: set[LinkKey] = set()
            for n, (kind, assignment) in enumerate(steps):
                now = T0 + timedelta(minutes=n)
                new = {_KEYS[i]: s for i, s in assignment.items()}
                links = [ClientLink(type=k.type, client_entity_id=k.client_entity_id,
                                    managing_customer_id=k.managing_customer_id, status=s) for k, s in new.items()]
                if kind == "sync":
                    sync(c, now, links)
                    for k in set(current) | set(new):
                        if current.get(k) != new.get(k):
                            changes[k] = changes.get(k, 0) + 1
                    current = dict(new)
                elif kind == "upsert":
                    c.upsert_links(links, now, source="action:test", actor_user_id=1)
                    for k, s in new.items():
                        if current.get(k) != s:
                            changes[k] = changes.get(k, 0) + 1
                    current.update(new)
                elif kind == "abort":
                    snap = c.begin_snapshot(now)
                    snap.add_links(links)
                    snap.abort("network lost", now)
                else:
                    for k in new:
                        c.record_event(k, at=now, source="action:test", to_status=S.LinkCanceled)
                seen |= set(current)
                for k in seen:
                    tl = [e for e in c.timeline(k) if e.kind == "change"]
                    assert len(tl) == changes.get(k, 0)
                    assert (tl[-1].to_status if tl else None) == current.get(k)
                    assert all(a.to_status == b.from_status for a, b in zip(tl, tl[1:]))
                    assert (c.link(k).status if c.link(k) else None) == current.get(k)
            assert c.integrity_problems() == []
        finally:
            c.close()
