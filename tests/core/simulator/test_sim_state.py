"""The simulator's SQLite state and its deterministic demo world."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from linkdesk.core import rules
from linkdesk.core.model import ClientLinkStatus as S, LinkType, Role
from linkdesk.core.simulator import world
from linkdesk.core.simulator.auth import issue_tokens
from linkdesk.core.simulator.service import next_service_step
from linkdesk.core.simulator.state import NewLink, State, StateError, encode_timestamp

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def state(tmp_path):
    st = State(tmp_path / "sim.sqlite")
    st.freeze(NOW)
    yield st
    st.close()


def dump(path) -> dict[str, list[tuple]]:
    """Every row of every world table, in a stable order (tokens excluded: they are random by design)."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in ("customers", "accounts", "users", "user_roles", "user_accounts", "client_links"):
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
        out["meta"] = conn.execute("SELECT * FROM meta WHERE key NOT IN ('seeded_at') ORDER BY key").fetchall()
        return out
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------------- the file


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "sim.sqlite"
    with State(path) as st:
        st.freeze(NOW)
        world.seed_world(st, seed=3, scale=5)
        with st.write() as tx:
            clock = tx.clock()
            clock.advance("1d")
            tx.save_clock(clock)
        before = dump(path)
    with State(path) as st:
        assert st.is_seeded()
        assert st.now() == NOW + timedelta(days=1)
        assert dump(path) == before


def test_journal_is_wal_and_file_is_private(state):
    conn = sqlite3.connect(state.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert state.path.stat().st_mode & 0o777 == 0o600


def test_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "sim.sqlite"
    State(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer linkdesk"):
        State(path)


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, None])
def test_foreign_files_are_refused_with_advice(tmp_path, content):
    path = tmp_path / "other.sqlite"
    if content is None:  # a real SQLite database of someone else
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE meta (k)")
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()
        conn.close()
    else:
        path.write_bytes(content)
    with pytest.raises(StateError) as err:
        State(path)
    assert "--state" in str(err.value)


def test_tokens_are_stored_hashed(state):
    world.seed_world(state)
    issued = issue_tokens(state, world.AGENCY_SUPER_ADMIN)
    state.close()
    wal = state.path.with_name(state.path.name + "-wal")
    raw = state.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert issued.access_token.encode() not in raw
    assert issued.refresh_token.encode() not in raw
    assert "hidden" in repr(issued) and issued.access_token not in repr(issued)


def test_concurrent_writers_in_threads_never_lose_a_change(state):
    world.seed_world(state)

    def bump(n: int) -> None:
        for _ in range(n):
            with state.write() as tx:
                tx.next_timestamps()

    with state.read() as tx:
        start = int(tx.meta("ts_counter"))
    threads = [threading.Thread(target=bump, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with state.read() as tx:
        assert int(tx.meta("ts_counter")) == start + 200


def test_a_failed_write_is_rolled_back(state):
    world.seed_world(state)
    with pytest.raises(RuntimeError):
        with state.write() as tx:
            tx.set_meta("seed", 999)
            raise RuntimeError("boom")
    with state.read() as tx:
        assert tx.meta("seed") == "1"


def test_a_new_link_becomes_the_latest_and_history_is_kept(state):
    world.seed_world(state)
    with state.write() as tx:
        old = tx.latest_link(world.B1, "AccountLink", world.AGENCY_ID)
        tx.insert_link(NewLink("AccountLink", world.B1, world.CLIENT_B_ID, world.AGENCY_ID,
                               world.customer_number(world.AGENCY_ID), "LinkPending", NOW, NOW,
                               world.AGENCY_SUPER_ADMIN, tx.next_timestamps(), name="B1", is_bill_to_client=True))
        history = tx.link_history(world.B1, "AccountLink", world.AGENCY_ID)
        latest = tx.latest_link(world.B1, "AccountLink", world.AGENCY_ID)
    assert [h.link.status for h in history] == [S.LinkExpired, S.Active, S.LinkPending]
    assert [h.is_latest for h in history] == [False, False, True]
    assert latest.row_id == history[-1].row_id != old.row_id
    assert latest.link.timestamp != old.link.timestamp


def test_timestamps_are_opaque_base64_row_versions():
    assert encode_timestamp(2001) == "AAAAAAAAB9E="
    assert encode_timestamp(2001) != encode_timestamp(2002)


# ------------------------------------------------------------------------------------------------------ the world


def test_same_seed_same_world_and_other_seed_other_world(tmp_path):
    paths = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        with State(tmp_path / f"{name}.sqlite") as st:
            st.freeze(NOW)
            world.seed_world(st, seed=seed, scale=40)
        paths.append(tmp_path / f"{name}.sqlite")
    a, b, c = (dump(p) for p in paths)
    assert a == b
    assert a["client_links"] != c["client_links"]
    # The fixed part does not depend on the seed.
    fixed = lambda d: [r for r in d["customers"] if r[0] < world.GENERATED_CUSTOMER_BASE]  # noqa: E731
    assert fixed(a) == fixed(c)


def test_seed_figure(state):
    world.seed_world(state)
    with state.read() as tx:
        assert tx.customer(world.AGENCY_ID).name == "Contoso Agency"
        roles = {u.id: tx.roles(u.id)[0] for u in tx.users_of_customer(world.AGENCY_ID)}
        assert {r.role_id for r in roles.values()} == {Role.SuperAdmin, Role.Standard,
                                                       Role.AdvertiserCampaignManager, Role.Viewer}
        assert roles[world.USER_A].account_ids == (world.A1,)
        assert roles[world.USER_B].account_ids == (world.A2, world.B1, world.B2)
        assert roles[world.AGENCY_SUPER_ADMIN].all_accounts
        assert [a.id for a in tx.accounts_of_customer(world.CLIENT_A_ID)] == [world.A1, world.A2]
        assert [a.id for a in tx.accounts_of_customer(world.CLIENT_B_ID)] == [world.B1, world.B2]
        for account in (world.A1, world.A2, world.B1, world.B2):
            assert tx.latest_link(account, "AccountLink", world.AGENCY_ID).link.status == S.Active


def test_fixed_world_shows_everything_a_demo_needs(state):
    world.seed_world(state)
    with state.read() as tx:
        links = [tx.link_by_row(r[0]) for r in tx.c.execute("SELECT id FROM client_links WHERE is_latest = 1")]
        statuses = Counter(s.link.status for s in links)
        # Every status the service emits; UnlinkRequested is replaced at once and UnlinkCanceled is never emitted.
        assert set(statuses) == set(S) - {S.UnlinkRequested, S.UnlinkCanceled}
        assert {s.link.link_type for s in links} == {LinkType.AccountLink, LinkType.CustomerLink}
        assert {s.link.is_bill_to_client for s in links if s.link.link_type == LinkType.AccountLink} == {True, False}
        assert tx.account(world.PREPAID_ACCOUNT).prepaid
        other = tx.latest_link(world.MANAGED_BY_OTHER_AGENCY, "AccountLink", world.OTHER_AGENCY_ID)
        assert other.link.status == S.Active
        pending = [s for s in links if s.link.status == S.LinkPending and s.link.managing_customer_id == world.AGENCY_ID]
        days = {rules.days_left(s.created_at, NOW) for s in pending}
        assert {1, 3, 6} <= days and all(d is not None and 0 <= d < 30 for d in days)
        received = [s for s in links if s.client_customer_id == world.AGENCY_ID]
        assert {s.link.link_type for s in received} == {LinkType.AccountLink, LinkType.CustomerLink}
        text = " ".join(f"{s.link.client_entity_name} {s.link.name} {s.link.note}" for s in links)
        assert "[bold red]" in text and "[link=https://example.com]" in text
        assert any(ord(ch) > 127 for ch in text)
        assert any(a.fail_link for a in tx.accounts(range(149000001, 149000030)))
        assert any(a.fail_unlink for a in tx.accounts(range(149000001, 149000030)))
        # Every customer has a Super Admin.
        for customer in tx.customers():
            assert any(r.role_id == Role.SuperAdmin for u in tx.users_of_customer(customer.id)
                       for r in tx.roles(u.id) if r.customer_id == customer.id), customer.name


def test_moving_links_are_scheduled_like_the_service_would(state):
    world.seed_world(state, scale=60)
    with state.read() as tx:
        rows = tx.c.execute("SELECT id FROM client_links WHERE is_latest = 1").fetchall()
        for (row_id,) in rows:
            s = tx.link_by_row(row_id)
            status = S(s.link.status)
            account = tx.account(s.link.client_entity_id) if s.link.link_type == LinkType.AccountLink else None
            expected = next_service_step(status, s.link.last_modified_date_time, created_at=s.created_at,
                                         start_date=s.link.start_date,
                                         fail_link=bool(account and account.fail_link),
                                         fail_unlink=bool(account and account.fail_unlink))
            assert (s.due_at, s.due_status) == ((expected[0], expected[1].value) if expected else (None, None))
            if status == S.LinkPending:  # nothing seeded is already past its expiry
                assert s.due_at > NOW


def test_scale_adds_clients_with_one_to_four_accounts(state):
    summary = world.seed_world(state, seed=5, scale=200)
    with state.read() as tx:
        generated = [c for c in tx.customers() if c.id > world.GENERATED_CUSTOMER_BASE]
        assert len(generated) == 200
        sizes = Counter(len(tx.accounts_of_customer(c.id)) for c in generated)
        assert set(sizes) <= {1, 2, 3, 4} and len(sizes) >= 3
        statuses = Counter(r[0] for r in tx.c.execute(
            "SELECT status FROM client_links WHERE is_latest = 1 AND client_customer_id > ?",
            (world.GENERATED_CUSTOMER_BASE,)))
        assert statuses[S.Active.value] > statuses[S.LinkPending.value] > 0
        assert len(statuses) >= 8
    assert summary.scale == 200 and summary.links > summary.latest_links


def test_reseeding_replaces_the_world_and_drops_tokens(state):
    world.seed_world(state, scale=10)
    issued = issue_tokens(state, world.USER_A)
    world.seed_world(state, scale=0)
    with state.read() as tx:
        assert tx.counts()["customers"] == 12
        assert tx.token(issued.access_token) is None


def test_keyset_cursors_give_exactly_the_offset_pages(state):
    from linkdesk.core.simulator.state import LinkQuery, PageCursors

    world.seed_world(state, seed=2, scale=120)

    def pages(order: str, descending: bool, size: int = 7) -> list[int]:
        out, offset = [], 0
        while True:
            with state.read() as tx:
                ids = tx.search_link_rows(LinkQuery(world.AGENCY_ID, direct_manager_id=world.AGENCY_ID, order=order,
                                                    descending=descending, offset=offset, limit=size))
            out += ids
            if len(ids) < size:
                return out
            offset += size

    for order, descending in (("Id", False), ("Id", True), ("Name", False), ("Name", True)):
        state.cursors = PageCursors()
        with_cursors = pages(order, descending)
        assert state.cursors._by_query  # cursors were remembered and used
        state.cursors = None  # plain OFFSET paging
        assert pages(order, descending) == with_cursors
        assert len(with_cursors) == len(set(with_cursors)) > 250
    # A change moves the data version: cursors of the old data are never applied to the new.
    state.cursors = PageCursors()
    pages("Id", False)
    with state.write() as tx:
        tx.insert_link(NewLink("AccountLink", world.UNINVITED_ACCOUNT, 251000103, world.AGENCY_ID,
                               world.customer_number(world.AGENCY_ID), "LinkPending", NOW, NOW,
                               world.AGENCY_SUPER_ADMIN, tx.next_timestamps(), name="Northwind Wholesale",
                               is_bill_to_client=True))
    after = pages("Id", False)
    state.cursors = None
    assert pages("Id", False) == after


def test_connections_are_pooled_not_kept_per_thread(state):
    # The server runs every request on a new thread (the SDK closes its connection after each call).
    world.seed_world(state)

    def read_once() -> None:
        with state.read() as tx, state.read() as nested:
            assert nested.c is tx.c  # a nested transaction joins the outer one
            tx.customer(world.AGENCY_ID)

    for _ in range(60):
        t = threading.Thread(target=read_once)
        t.start()
        t.join()
    assert state.open_connections <= State.POOL_SIZE
    barrier = threading.Barrier(12)

    def read_together() -> None:
        with state.read() as tx:
            barrier.wait(timeout=10)
            tx.customer(world.AGENCY_ID)

    threads = [threading.Thread(target=read_together) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.open_connections <= State.POOL_SIZE
    state.close()
    assert state.open_connections == 0
    with pytest.raises(StateError):
        with state.read():
            pass
