from __future__ import annotations

import threading

import pytest

from linkdesk.core import actions, api as api_mod, rules, sync
from linkdesk.core.cache import Cache
from linkdesk.core.model import ClientLink, ClientLinkStatus as S, LinkKey, LinkType
from linkdesk.core.rules import Action

from linkfakes import (
    A1, A2, ADMIN, AGENCY, B1, B2, CLIENT_A_ADMIN, VIEWER, FakeApi, FakeWorld,
)


@pytest.fixture
def world():
    w = FakeWorld.seeded()
    w.add_link(A1, S.Active)
    w.add_link(A2, S.LinkPending)
    w.add_link(B2, S.LinkDeclined)
    return w


@pytest.fixture
def cache(tmp_path, world):
    c = Cache.open(tmp_path / "cache.sqlite")
    assert sync.full_sync(c, [sync.View(FakeApi(world, ADMIN)), sync.View(FakeApi(world, CLIENT_A_ADMIN), False)],
                          clock=world.clock).ok
    yield c
    c.close()


def ctx_for(world, cache, user_id):
    return actions.ActionContext(FakeApi(world, user_id), cache, world.actor(user_id), world.clock)


def draft(account_id, **kw):
    return ClientLink(client_entity_id=account_id, is_bill_to_client=True, **kw)


def kinds(cache, key):
    return [(e.kind, e.source, e.to_status) for e in cache.timeline(key)]


def test_invite_sends_valid_drafts_only_and_maps_results_in_order(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    world.clock.advance(minutes=1)
    results = actions.invite(ctx, [
        draft(B2, name="bikes"),            # ended link: a new invitation is fine
        draft(A2),                          # blocked: pending already (never sent)
        draft(B1),                          # prepaid: the API never says so beforehand; the service refuses
        ClientLink(client_entity_id=B2, is_bill_to_client=False),  # same client twice in one request
        ClientLink(client_entity_id=999999, is_bill_to_client=True),  # unknown to the cache: the service refuses
    ])
    assert [r.ok for r in results] == [True, False, False, False, False]
    assert results[0].link is not None and results[0].link.status == S.LinkPending
    assert "30 days" in results[0].message
    assert {v.code for v in results[1].violations} == {rules.E_DUPLICATE}
    assert {v.code for v in results[2].violations} == {rules.E_PREPAID}
    assert {v.code for v in results[3].violations} == {rules.E_DUPLICATE_IN_REQUEST}
    assert results[4].violations[0].code == 2108 and "Not sent to account 999999" in results[4].message
    (sent,) = [arg for op, arg in ctx.api.calls if op == "AddClientLinks"]
    assert [d.client_entity_id for d in sent] == [B2, B1, 999999]  # nothing the cache knew to be invalid
    assert all(d.managing_customer_id == AGENCY for d in sent)
    # intent, observed change, outcome — in that order
    assert kinds(cache, LinkKey(B2, AGENCY))[-3:] == [
        ("intent", "action:invite", S.LinkPending), ("change", "action:invite", S.LinkPending),
        ("outcome", "action:invite", S.LinkPending)]
    assert kinds(cache, LinkKey(999999, AGENCY))[-1][0] == "outcome"


def test_invite_batches_by_ten_with_progress(world, cache):
    from linkdesk.core.model import Account

    for n in range(23):
        world.accounts[5000 + n] = Account(5000 + n, f"x{n}", f"F5{n:03d}", 200)
    ctx = ctx_for(world, cache, ADMIN)
    seen = []
    results = actions.invite(ctx, [draft(5000 + n) for n in range(23)], progress=lambda d, t: seen.append((d, t)))
    assert all(r.ok for r in results)
    assert [len(arg) for op, arg in ctx.api.calls if op == "AddClientLinks"] == [10, 10, 3]
    assert seen == [(0, 23), (10, 23), (20, 23), (23, 23)]


def test_invite_cancel_stops_before_the_next_batch(world, cache):
    from linkdesk.core.model import Account

    for n in range(15):
        world.accounts[5000 + n] = Account(5000 + n, f"x{n}", f"F5{n:03d}", 200)
    cancel = threading.Event()
    ctx = ctx_for(world, cache, ADMIN)
    results = actions.invite(ctx, [draft(5000 + n) for n in range(15)],
                             progress=lambda d, t: cancel.set() if d >= 10 else None, cancel=cancel)
    assert [r.ok for r in results] == [True] * 10 + [False] * 5
    assert "cancelled" in results[-1].message


def test_invite_network_failure_says_so_and_stops(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    ctx.api.fail["AddClientLinks"] = api_mod.ApiTimeout("No answer in time.", maybe_applied=True, retryable=True)
    (r,) = actions.invite(ctx, [draft(B2)])
    assert not r.ok and "No answer in time." in r.message and "may have been sent" in r.message
    # the intent stays unanswered, so the next invite reconciles with the service first
    assert actions.unanswered_intents(cache) == [LinkKey(B2, AGENCY)]
    world.add_link(B2, S.LinkPending)  # it had in fact been applied
    ctx.api.fail.clear()
    (again,) = actions.invite(ctx, [draft(B2)])
    assert not again.ok and {v.code for v in again.violations} == {rules.E_DUPLICATE}
    assert [op for op, _ in ctx.api.calls].count("AddClientLinks") == 1  # the second one was never sent
    assert actions.unanswered_intents(cache) == []


def test_viewer_invitation_is_refused_by_the_rules(world, cache):
    ctx = ctx_for(world, cache, VIEWER)
    (r,) = actions.invite(ctx, [draft(B2)])
    assert not r.ok and "Viewer" in r.message
    assert not [c for c in ctx.api.calls if c[0] == "AddClientLinks"]


def test_cancel_reads_checks_sends_and_resyncs(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    world.clock.advance(minutes=3)
    r = actions.act(ctx, Action.CANCEL, LinkKey(A2, AGENCY))
    assert r.ok, r.message
    assert r.link.status == S.LinkCanceled and "Invitation canceled" in r.message
    (sent,) = [arg for op, arg in ctx.api.calls if op == "UpdateClientLinks"]
    stored_before = world.links[(A2, AGENCY, LinkType.AccountLink)]
    assert sent[0].status == S.LinkCanceled and sent[0].timestamp != stored_before.timestamp  # sent as read
    assert kinds(cache, LinkKey(A2, AGENCY))[-3:] == [
        ("intent", "action:cancel", S.LinkCanceled), ("change", "action:cancel", S.LinkCanceled),
        ("outcome", "action:cancel", S.LinkCanceled)]


def test_refused_update_is_never_sent(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    r = actions.act(ctx, Action.ACCEPT, LinkKey(A2, AGENCY))  # the agency cannot accept
    assert not r.ok and r.violations
    r2 = actions.act(ctx, Action.CANCEL, LinkKey(B2, AGENCY))  # ended
    assert not r2.ok and r2.violations[0].code == rules.E_LINK_ENDED
    assert not [c for c in ctx.api.calls if c[0] == "UpdateClientLinks"]


def test_client_accept_respects_the_cooldown(world, cache):
    ctx = ctx_for(world, cache, CLIENT_A_ADMIN)
    r = actions.act(ctx, Action.ACCEPT, LinkKey(A2, AGENCY))
    assert not r.ok and r.violations[0].code == rules.E_ACCEPT_TOO_SOON
    world.clock.advance(hours=6, minutes=1)
    r = actions.act(ctx, Action.ACCEPT, LinkKey(A2, AGENCY))
    assert r.ok, r.message
    assert r.link.status == S.LinkAccepted


def test_timestamp_conflict_is_explained(world, cache, monkeypatch):
    ctx = ctx_for(world, cache, ADMIN)
    key = (A2, AGENCY, LinkType.AccountLink)
    real_update = ctx.api.update_client_links

    def racing_update(links):
        # someone else changes the link between our read and our update
        world.links[key] = world.links[key].replace(note="changed elsewhere", timestamp="ts-other",
                                                    last_modified_by_user_id=CLIENT_A_ADMIN)
        return real_update(links)

    monkeypatch.setattr(ctx.api, "update_client_links", racing_update)
    r = actions.act(ctx, Action.CANCEL, LinkKey(A2, AGENCY))
    assert not r.ok and r.violations[0].code == rules.E_TIMESTAMP
    assert "Someone changed this link" in r.message and "its note changed" in r.message
    assert cache.link(LinkKey(A2, AGENCY)).timestamp == "ts-other"  # the cache has the latest read


def test_unlink_then_reinvite_after_it_ended(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    r = actions.act(ctx, Action.UNLINK, LinkKey(A1, AGENCY), note="end of contract")
    assert r.ok and r.link.status == S.UnlinkPending
    assert [arg for op, arg in ctx.api.calls if op == "UpdateClientLinks"][0][0].note == "end of contract"
    bad = actions.act(ctx, Action.REINVITE, LinkKey(A1, AGENCY))
    assert not bad.ok and "only after it has ended" in bad.message
    good = actions.act(ctx, Action.REINVITE, LinkKey(B2, AGENCY))
    assert good.ok and "Invitation sent again" in good.message and good.link.status == S.LinkPending
    assert kinds(cache, LinkKey(B2, AGENCY))[-1][1] == "action:reinvite"


def test_service_unreachable_on_read(world, cache):
    ctx = ctx_for(world, cache, ADMIN)
    ctx.api.fail["SearchClientLinks"] = api_mod.ServiceUnavailable("Could not connect to the simulator.")
    r = actions.act(ctx, Action.CANCEL, LinkKey(A2, AGENCY))
    assert not r.ok and "Could not connect" in r.message and r.link is not None


def test_check_invitation_by_number_finds_the_existing_link(world, cache):
    v = actions.check_invitation(cache, world.actor(ADMIN),
                                 ClientLink(client_entity_number="F2002", is_bill_to_client=True), world.clock())
    assert {x.code for x in v} == {rules.E_DUPLICATE}


# ---------------------------------------------------------------------------------------------------------------------
# kill -9 right after the service applied a batch, before linkdesk heard back: nothing is sent twice after a restart
# ---------------------------------------------------------------------------------------------------------------------

_KILL_AFTER_SEND = r"""
import json, os, signal, sys
from linkdesk.core import api as api_mod
from linkdesk.core.model import ClientLink
from linkdesk.core.session import Session
original = api_mod.CustomerManagementApi.add_client_links
def send_then_die(self, links):
    original(self, links)  # the service has applied the invitations ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and linkdesk dies before recording the outcome
api_mod.CustomerManagementApi.add_client_links = send_then_die
s = Session.demo()
s.invite([ClientLink(client_entity_id=int(a), is_bill_to_client=True) for a in sys.argv[1:]])
"""


@pytest.mark.slow
def test_kill_9_after_sending_does_not_send_twice(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from linkdesk.core.session import Session

    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path))
    s = Session.demo()
    assert s.sync().ok
    agency = s.identity().customer_id
    rows = s.cache().inbox_page(customer_id=agency, limit=500, now=s.clock())
    candidates = [r.key.client_entity_id for r in rows if r.key.type == LinkType.AccountLink and r.status in
                  (S.LinkCanceled, S.LinkExpired) and r.key.managing_customer_id == agency]
    assert candidates
    s.close()

    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_SEND, *map(str, candidates)],
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]

    s = Session.demo()
    try:
        assert set(actions.unanswered_intents(s.cache())) == {LinkKey(a, agency) for a in candidates}
        sent = []
        api = s.api()
        original = api.add_client_links
        monkeypatch.setattr(api, "add_client_links", lambda links: sent.append(links) or original(links))
        results = s.invite([ClientLink(client_entity_id=a, is_bill_to_client=True) for a in candidates])
        assert sent == []  # reconciled with the service first: every one is already pending
        assert all(not r.ok and r.violations[0].code == rules.E_DUPLICATE for r in results)
        assert actions.unanswered_intents(s.cache()) == []
        for a in candidates:
            assert s.cache().link(LinkKey(a, agency)).status == S.LinkPending
            kinds = [(e.kind, e.source) for e in s.cache().timeline(LinkKey(a, agency))]
            assert ("outcome", "reconcile") in kinds
    finally:
        s.close()
