from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from linkdesk.core import api as api_mod, sync
from linkdesk.core.cache import Cache
from linkdesk.core.model import Account, ClientLinkStatus as S, LinkKey, LinkType, Perspective

from linkfakes import (
    A1, A2, ADMIN, AGENCY, AGENCY_OWN, B1, B2, CLIENT_A, CLIENT_A_ADMIN, STANDARD, VIEWER, FakeApi, FakeWorld,
)


@pytest.fixture
def world():
    w = FakeWorld.seeded()
    w.add_link(A1, S.Active)
    w.add_link(A2, S.LinkPending)
    w.add_link(B2, S.LinkDeclined)
    return w


@pytest.fixture
def cache(tmp_path):
    c = Cache.open(tmp_path / "cache.sqlite")
    yield c
    c.close()


def keys(cache: Cache) -> set[LinkKey]:
    rows = cache.inbox_page(customer_id=AGENCY, limit=1000, now=FakeWorld.seeded().clock())
    return {r.key for r in rows}


def test_full_sync_follows_the_recipe_and_fills_the_cache(world, cache):
    api = FakeApi(world, ADMIN)
    seen: list[sync.SyncProgress] = []
    result = sync.full_sync(cache, api, clock=world.clock, progress=seen.append)
    assert result.ok and not result.cancelled and result.error is None
    assert result.links == 3 and result.changed == 3
    assert "Synced 3 links (3 new or changed)." in result.message
    ops = [op for op, _ in api.calls]
    assert ops[0] == "GetUser" and "GetUsersInfo" in ops and "GetLinkedAccountsAndCustomersInfo" in ops
    assert ("SearchClientLinks", [("DirectManagingCustomerId", "Equals", AGENCY)]) in api.calls
    # received: the agency's own account, by ClientAccountId
    assert ("SearchClientLinks", [("ClientAccountId", "Equals", str(AGENCY_OWN))]) in api.calls
    assert keys(cache) == {LinkKey(A1, AGENCY), LinkKey(A2, AGENCY), LinkKey(B2, AGENCY)}
    assert {u.user_id for u in cache.agency_users(AGENCY)} == {ADMIN, STANDARD, VIEWER}
    assert cache.user(VIEWER).roles[0].account_ids == (A1,)
    assert cache.account(A1).parent_customer_id == CLIENT_A  # linked account detailed through SearchAccounts
    assert cache.meta_get("customer_id") == str(AGENCY) and cache.meta_get("user_id") == str(ADMIN)
    phases = [p.phase for p in seen]
    assert phases[0] == "hierarchy" and "users" in phases and "links" in phases and phases[-1] == "done"
    # every new link got a 'first seen' event from the sync
    assert [e.source for e in cache.timeline(LinkKey(A2, AGENCY))] == ["sync"]


def test_a_second_sync_records_only_changes(world, cache):
    api = FakeApi(world, ADMIN)
    sync.full_sync(cache, api, clock=world.clock)
    world.clock.advance(hours=1)
    world.links[(A2, AGENCY, LinkType.AccountLink)] = world.links[(A2, AGENCY, LinkType.AccountLink)].replace(
        status=S.LinkExpired, timestamp="later")
    result = sync.full_sync(cache, api, clock=world.clock)
    assert result.ok and result.changed == 1 and "1 new or changed" in result.message
    tl = cache.timeline(LinkKey(A2, AGENCY))
    assert [(e.from_status, e.to_status) for e in tl] == [(None, S.LinkPending), (S.LinkPending, S.LinkExpired)]


def test_received_links_are_searched_by_owned_accounts_in_batches_of_ten(world, cache):
    for n in range(23):
        aid = 4000 + n
        world.accounts[aid] = Account(aid, f"extra {n}", f"F4{n:03d}", CLIENT_A)
    api = FakeApi(world, CLIENT_A_ADMIN)
    result = sync.full_sync(cache, api, clock=world.clock)
    assert result.ok, result.message
    searches = [arg for op, arg in api.calls if op == "SearchClientLinks"]
    by_account = [s for s in searches if s[0][0] == "ClientAccountId"]
    assert len(by_account) == 3  # 25 owned accounts: 10 + 10 + 5
    assert all(len(s[0][2].split(",")) <= 10 for s in by_account)
    assert [s for s in searches if s[0][0] == "ClientCustomerId"] == [[("ClientCustomerId", "Equals", CLIENT_A)]]
    rows = cache.inbox_page(customer_id=CLIENT_A, perspective=Perspective.RECEIVED, limit=100, now=world.clock())
    assert {r.key for r in rows} == {LinkKey(A1, AGENCY), LinkKey(A2, AGENCY)}


@pytest.mark.parametrize("exc, phrase", [
    (api_mod.ServiceUnavailable("Could not connect to 127.0.0.1; check your connection.", retryable=True),
     "Could not connect"),
    (api_mod.AuthError(code=109), "sign in again"),
    (api_mod.MalformedReply(), "could not read"),
])
def test_a_failed_sync_keeps_the_previous_state(world, cache, exc, phrase):
    api = FakeApi(world, ADMIN)
    assert sync.full_sync(cache, api, clock=world.clock).ok
    before = keys(cache)
    world.add_link(B1, S.LinkPending)
    # fail on the second page request of this sync: some links were already staged
    api.fail["SearchClientLinks"] = lambda n: exc if n >= 4 else None
    result = sync.full_sync(cache, api, clock=world.clock)
    assert not result.ok and not result.cancelled
    assert phrase in result.message and "previous sync" in result.message
    assert result.error is exc
    assert keys(cache) == before
    assert cache.last_sync().outcome == "failed" and cache.last_ok_sync() is not None
    assert cache.integrity_problems() == []


def test_cancel_between_pages_keeps_the_previous_state(world, cache):
    api = FakeApi(world, ADMIN)
    assert sync.full_sync(cache, api, clock=world.clock).ok
    before = keys(cache)
    world.add_link(B1, S.LinkPending)
    cancel = threading.Event()

    def progress(p: sync.SyncProgress) -> None:
        if p.phase == "links":
            cancel.set()

    result = sync.full_sync(cache, api, clock=world.clock, progress=progress, cancel=cancel)
    assert result.cancelled and not result.ok and "cancelled" in result.message
    assert keys(cache) == before
    assert cache.last_sync().outcome == "cancelled"


def test_an_unexpected_error_is_a_sentence_not_a_traceback(world, cache):
    api = FakeApi(world, ADMIN)
    api.fail["GetUsersInfo"] = TypeError("boom")
    result = sync.full_sync(cache, api, clock=world.clock)
    assert not result.ok and "unexpected error (TypeError)" in result.message and "Traceback" not in result.message
    assert cache.last_sync().outcome == "failed"


def test_a_viewer_syncs_the_hierarchy_and_is_told_about_links(world, cache):
    result = sync.full_sync(cache, FakeApi(world, VIEWER), clock=world.clock)
    assert result.ok and result.links == 0
    assert "Your role cannot read the sent client links." in result.message


def test_zero_links_replaces_old_links(world, cache):
    api = FakeApi(world, ADMIN)
    sync.full_sync(cache, api, clock=world.clock)
    world.links.clear()
    result = sync.full_sync(cache, api, clock=world.clock)
    assert result.ok and cache.link_count() == 0
    assert cache.timeline(LinkKey(A1, AGENCY))[-1].to_status is None  # "no longer returned"


def test_several_views_merge_into_one_snapshot(world, cache):
    agency, client = FakeApi(world, ADMIN), FakeApi(world, CLIENT_A_ADMIN)
    result = sync.full_sync(cache, [sync.View(agency, True), sync.View(client, False)], clock=world.clock)
    assert result.ok and result.links == 3  # the client's received links are the agency's sent ones: no duplicates
    assert cache.account(A2).parent_customer_id == CLIENT_A
    assert cache.meta_get("user_id") == str(ADMIN)


def test_resync_links_upserts_with_the_action_source(world, cache):
    api = FakeApi(world, ADMIN)
    sync.full_sync(cache, api, clock=world.clock)
    world.clock.advance(minutes=5)
    world.links[(A2, AGENCY, LinkType.AccountLink)] = world.links[(A2, AGENCY, LinkType.AccountLink)].replace(
        status=S.LinkCanceled, timestamp="x")
    links = sync.resync_links(api, cache, [LinkKey(A2, AGENCY)], now=world.clock(), source="action:cancel",
                              actor_user_id=ADMIN)
    assert [l.status for l in links] == [S.LinkCanceled]
    last = cache.timeline(LinkKey(A2, AGENCY))[-1]
    assert (last.source, last.to_status, last.actor_user_id) == ("action:cancel", S.LinkCanceled, ADMIN)
    assert last.at == world.clock()


def test_read_links_batches_by_ten_and_by_type(world):
    api = FakeApi(world, ADMIN)
    ks = [LinkKey(5000 + i, AGENCY) for i in range(12)] + [LinkKey(CLIENT_A, AGENCY, LinkType.CustomerLink)]
    sync.read_links(api, ks)
    preds = [arg[0] for op, arg in api.calls if op == "SearchClientLinks"]
    assert [p[0] for p in preds] == ["ClientAccountId", "ClientAccountId", "ClientCustomerId"]
    assert len(preds[0][2].split(",")) == 10 and preds[1][1] == "In" and preds[2][1] == "Equals"


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 of a real sync subprocess (simulator + SDK + cache), at several points
# ---------------------------------------------------------------------------------------------------------------------

_KILLER = r"""
import os, signal, sys
from linkdesk.core.session import Session
point, nth = sys.argv[1], int(sys.argv[2])
seen = {"n": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def progress(p):
    if p.phase == point:
        seen["n"] += 1
        if seen["n"] >= nth:
            die()
if point == "commit":  # inside the swap transaction, after the staged links were applied, before COMMIT
    from linkdesk.core import cache as cache_mod
    original = cache_mod.Cache._apply_staged_links
    def apply_then_die(self, *a, **k):
        original(self, *a, **k)
        die()
    cache_mod.Cache._apply_staged_links = apply_then_die
s = Session.demo()
s.sync(progress=progress)
print("not killed")
"""


def _snapshot(cache: Cache) -> dict:
    agency = int(cache.meta_get("customer_id"))
    now = FakeWorld.seeded().clock()
    return {r.key: (r.status, cache.link(r.key).timestamp)
            for r in cache.inbox_page(customer_id=agency, limit=10_000, now=now)}


@pytest.fixture(scope="module")
def synced_demo_home(tmp_path_factory):
    """A demo home with one completed sync, whose simulator has since moved 31 days (the next sync has changes)."""
    import os

    from linkdesk.core.session import Session

    home = tmp_path_factory.mktemp("kill-template")
    s = Session.demo(home=home)
    assert s.sync().ok
    s.advance("31d")
    s.close()
    return home


@pytest.mark.slow
@pytest.mark.parametrize("point, nth", [("users", 1), ("links", 1), ("saving", 1), ("commit", 0)])
def test_kill_9_during_sync_leaves_the_previous_cache_intact(tmp_path, monkeypatch, synced_demo_home, point, nth):
    import os
    import shutil
    import subprocess
    import sys

    from linkdesk.core import paths
    from linkdesk.core.session import Session

    home = tmp_path / "home"
    shutil.copytree(synced_demo_home, home)
    monkeypatch.setenv("LINKDESK_HOME", str(home))
    with Cache.open(paths.cache_path("demo")) as c:
        before, runs_before = _snapshot(c), c.last_ok_sync().id

    env = dict(os.environ, LINKDESK_HOME=str(home))
    proc = subprocess.run([sys.executable, "-c", _KILLER, point, str(nth)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr[-2000:])

    with Cache.open(paths.cache_path("demo")) as c:
        assert c.integrity_problems() == []
        assert _snapshot(c) == before
        assert c.last_ok_sync().id == runs_before

    s = Session.demo()
    try:
        result = s.sync()
        assert result.ok and result.changed > 0, result.message
        assert s.cache().last_sync().outcome == "ok"
        interrupted = [r for r in s.cache().sync_runs() if r.outcome == "failed"]
        assert interrupted and "interrupted" in (interrupted[0].message or "")
    finally:
        s.close()


def test_customer_names_are_reused_and_lookups_are_capped(world, cache, monkeypatch):
    from linkdesk.core.model import Customer

    for n in range(5):  # five more client customers, each with an active account
        cid, aid = 700 + n, 7000 + n
        world.customers[cid] = Customer(cid, f"Client {n}")
        world.accounts[aid] = Account(aid, f"acc {n}", f"F7{n:03d}", cid)
        world.add_link(aid, S.Active)
    monkeypatch.setattr(sync, "MAX_CUSTOMER_LOOKUPS", 4)
    api = FakeApi(world, ADMIN)
    lookups = lambda: [arg for op, arg in api.calls if op == "GetCustomer" and arg != AGENCY]  # noqa: E731
    assert sync.full_sync(cache, api, clock=world.clock).ok
    first = lookups()
    assert len(first) == 4  # 6 client customers to name, 4 per sync
    api.calls.clear()
    assert sync.full_sync(cache, api, clock=world.clock).ok
    assert len(lookups()) == 2 and not set(lookups()) & set(first)  # only the two still unnamed
    api.calls.clear()
    assert sync.full_sync(cache, api, clock=world.clock).ok
    assert lookups() == []
    assert cache.customer(704).name == "Client 4" and cache.customer(CLIENT_A).name == "Client A"


class HierarchyApi(FakeApi):
    """FakeApi with manager customers under the agency: ``tree`` maps a customer to its directly linked child
    customers (GetLinkedAccountsAndCustomersInfo's CustomersInfo). Records the OnlyParentAccounts flag of each call
    and the threads the calls ran on."""

    def __init__(self, world, user_id, tree):
        super().__init__(world, user_id)
        self.tree = tree
        self.flags: list[bool] = []
        self.threads: set[str] = set()

    def get_linked_accounts_and_customers_info(self, customer_id, only_parent_accounts=False):
        self._call("GetLinkedAccountsAndCustomersInfo", customer_id)
        self.flags.append(only_parent_accounts)
        self.threads.add(threading.current_thread().name)
        return [], [api_mod.CustomerInfo(c, f"Manager {c}") for c in self.tree.get(customer_id, ())]


def test_child_manager_customers_are_found_level_by_level_up_to_five_levels(world, cache):
    # The agency manages six customers (more than one thread's share); one of them has a chain of managers below it,
    # seven levels deep, of which the service documents (and the sync reads) five: 800s, 810s, 820, 830, 840.
    tree = {AGENCY: [800 + n for n in range(6)], 803: [810, 811], 810: [820], 820: [830], 830: [840], 840: [850],
            850: [860]}
    api = HierarchyApi(world, ADMIN, tree)
    assert sync.full_sync(cache, api, clock=world.clock, concurrency=4).ok
    asked = [arg for op, arg in api.calls if op == "GetLinkedAccountsAndCustomersInfo"]
    assert asked[0] == AGENCY and set(asked) == {AGENCY, *range(800, 806), 810, 811, 820, 830}
    assert len(asked) == len(set(asked))  # each customer once
    assert api.flags and all(api.flags)  # only the customers' own accounts: the others come from SearchAccounts
    for cid in (*range(800, 806), 810, 811, 820, 830, 840):
        assert cache.customer(cid).name == f"Manager {cid}"
    assert cache.customer(850) is None and cache.customer(860) is None  # below the fifth level
    assert any(t.startswith("linkdesk-sync") for t in api.threads)  # the six children were asked concurrently


def test_child_customers_one_at_a_time_give_the_same_result(world, cache):
    tree = {AGENCY: [800 + n for n in range(6)], 801: [810]}
    api = HierarchyApi(world, ADMIN, tree)
    assert sync.full_sync(cache, api, clock=world.clock, concurrency=1).ok
    assert api.threads == {threading.current_thread().name}
    assert cache.customer(810).name == "Manager 810"


def test_a_refused_child_customer_does_not_stop_the_hierarchy(world, cache):
    tree = {AGENCY: [800, 801, 802, 803, 804], 801: [810], 802: [820]}
    api = HierarchyApi(world, ADMIN, tree)
    original = api.get_linked_accounts_and_customers_info

    def refuse_801(customer_id, only_parent_accounts=False):
        if customer_id == 801:
            raise api_mod.AuthError(code=106)
        return original(customer_id, only_parent_accounts)

    api.get_linked_accounts_and_customers_info = refuse_801
    assert sync.full_sync(cache, api, clock=world.clock).ok
    assert cache.customer(820).name == "Manager 820" and cache.customer(810) is None


def test_accounts_are_paged_in_order_with_pages_in_flight(world, cache, monkeypatch):
    for n in range(9):  # nine more accounts the agency manages: ten pages of one account, plus an empty one
        aid = 7100 + n
        world.accounts[aid] = Account(aid, f"acc {n}", f"F71{n:02d}", CLIENT_A)
        world.add_link(aid, S.Active)
    monkeypatch.setattr(sync, "ACCOUNT_PAGE", 1)
    api = FakeApi(world, ADMIN)
    seen: list[sync.SyncProgress] = []
    assert sync.full_sync(cache, api, clock=world.clock, progress=seen.append, concurrency=3).ok
    reachable = {a.id for a in api._reachable()}
    assert {aid for aid in reachable if cache.account(aid) is not None} == reachable
    counts = [p.done for p in seen if p.phase == "accounts" and p.total is None and p.done]
    assert counts == sorted(counts) and counts[-1] == len(reachable)  # one report per page, in page order
    pages = [arg for op, arg in api.calls if op == "SearchAccounts"]
    assert len(pages) >= len(reachable) + 1  # up to the first short (empty) page, perhaps a few beyond it


def test_cancel_while_accounts_are_paged_keeps_the_previous_state(world, cache, monkeypatch):
    assert sync.full_sync(cache, FakeApi(world, ADMIN), clock=world.clock).ok
    for n in range(9):
        aid = 7100 + n
        world.accounts[aid] = Account(aid, f"acc {n}", f"F71{n:02d}", CLIENT_A)
        world.add_link(aid, S.Active)
    monkeypatch.setattr(sync, "ACCOUNT_PAGE", 1)
    cancel = threading.Event()
    api = FakeApi(world, ADMIN)
    api.on_call = lambda op: cancel.set() if op == "SearchAccounts" and len(
        [c for c in api.calls if c[0] == "SearchAccounts"]) == 3 else None
    result = sync.full_sync(cache, api, clock=world.clock, cancel=cancel, concurrency=3)
    assert result.cancelled and not result.ok
    assert cache.account(7100) is None and cache.link_count() == 3


def test_a_sync_collects_garbage_less_often_and_restores_the_setting(world, cache):
    import gc

    before = gc.get_threshold()
    during: list[tuple[int, ...]] = []
    api = FakeApi(world, ADMIN)
    api.on_call = lambda op: during.append(gc.get_threshold())
    assert sync.full_sync(cache, api, clock=world.clock).ok
    assert during and all(t[0] == sync.SYNC_GC_THRESHOLD for t in during)
    assert gc.get_threshold() == before
    api.fail["SearchClientLinks"] = api_mod.ServiceUnavailable(retryable=True)
    assert not sync.full_sync(cache, api, clock=world.clock).ok  # restored after a failed sync too
    assert gc.get_threshold() == before
