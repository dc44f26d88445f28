"""Session against the built-in simulator, through the real bingads SDK over loopback."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from linkdesk.core import credentials, rules
from linkdesk.core.api import Predicate
from linkdesk.core.model import ClientLink, ClientLinkStatus as S, LinkKey, LinkType, Perspective, Role
from linkdesk.core.rules import Action
from linkdesk.core.session import NotSignedIn, Session, SessionError

FROZEN = datetime(2025, 11, 3, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-home")
    s = Session.demo(home=home, clock=lambda: FROZEN)
    assert s.sync().ok
    yield s
    s.close()


def service_links(session: Session) -> dict[LinkKey, tuple]:
    """What the simulator returns to the agency right now: key -> (status, timestamp, note)."""
    api = session.api(session._observer_id)
    agency = session.identities()[0].customer_id
    out = {}
    for link in api.iter_client_links([Predicate("DirectManagingCustomerId", "Equals", agency)], concurrency=1):
        out[link.key] = (link.status, link.timestamp, link.note)
    return out


def cached_links(session: Session) -> dict[LinkKey, tuple]:
    cache = session.cache()
    agency = int(cache.meta_get("customer_id"))
    rows = cache.inbox_page(customer_id=agency, perspective=Perspective.SENT, limit=10_000, now=session.clock())
    out = {}
    for r in rows:
        link = cache.link(r.key)
        out[r.key] = (link.status, link.timestamp, link.note)
    return out


def test_demo_defaults_to_the_agency_super_admin_and_lists_identities(demo):
    me = demo.identity()
    assert me.side == "agency" and me.role == Role.SuperAdmin
    sides = {i.side for i in demo.identities()}
    assert {"agency", "client", "other-agency"} <= sides
    assert demo.is_demo and demo.profile == "demo" and demo.online()
    assert demo.clock() == FROZEN  # a given clock freezes the simulator, and the session reads the simulator's
    assert demo.simulator_url().startswith("http://127.0.0.1:")


def test_cache_is_one_per_thread(demo):
    here = demo.cache()
    other = []
    t = threading.Thread(target=lambda: other.append(demo.cache()))
    t.start()
    t.join()
    assert demo.cache() is here and other[0] is not here


def test_sync_fills_the_cache_with_sent_and_received_links(demo):
    cache = demo.cache()
    agency = demo.identity().customer_id
    assert int(cache.meta_get("customer_id")) == agency
    counts = cache.stage_counts(agency, demo.clock())
    assert sum(counts.values()) >= 20
    received = cache.inbox_count(customer_id=agency, perspective=Perspective.RECEIVED, now=demo.clock())
    assert received >= 1  # the other agency's invitations to Contoso
    assert {u.role for u in cache.agency_users(agency)} >= {Role.SuperAdmin, Role.Viewer}
    assert cached_links(demo) == service_links(demo)


def test_switch_identity(demo):
    client = next(i for i in demo.identities() if i.side == "client" and i.role == Role.SuperAdmin)
    try:
        assert demo.switch_identity(client.user_id) == client
        assert demo.identity().actor().customer_id == client.customer_id
        with pytest.raises(SessionError, match="no demo user"):
            demo.switch_identity(1)
    finally:
        demo.switch_identity(demo._observer_id)


def test_demo_identities_are_read_from_the_simulator_when_asked(demo):
    """The demo reads its users from the simulator's state on demand (a 100k world has ~48,000): a prefix by user
    id with ``limit``, lookups by customer and role agree with the whole list, and none is held in the session."""
    every = demo.identities()
    assert [i.user_id for i in every] == sorted(i.user_id for i in every)
    assert demo.identities(limit=3) == every[:3]
    for ident in every:
        expected = next(i for i in every if i.customer_id == ident.customer_id and i.role == ident.role)
        assert demo.identity_for_customer(ident.customer_id, ident.role) == expected
    assert demo.identity_for_customer(1) is None
    assert demo._identities == []  # noqa: SLF001 - nothing per user kept in memory


def _free_account(session: Session) -> int:
    """An account of a client customer whose link with the agency has ended (re-invitable)."""
    cache = session.cache()
    agency = session.identity().customer_id
    for r in cache.inbox_page(customer_id=agency, perspective=Perspective.SENT, limit=500, now=session.clock()):
        if r.key.type == LinkType.AccountLink and r.status in rules.ENDED and "prepaid" not in (r.note or ""):
            if not session.check_invitation(ClientLink(client_entity_id=r.key.client_entity_id,
                                                       is_bill_to_client=True)):
                return r.key.client_entity_id
    raise AssertionError("the demo world has no re-invitable account")


def test_whole_lifecycle_invite_accept_after_cooldown_active_unlink(tmp_path):
    s = Session.demo(home=tmp_path, clock=lambda: FROZEN)
    try:
        assert s.sync().ok
        account = _free_account(s)
        key = LinkKey(account, s.identity().customer_id)
        (res,) = s.invite([ClientLink(client_entity_id=account, is_bill_to_client=False, name="lifecycle")])
        assert res.ok, res.message
        assert res.link.status == S.LinkPending and res.key == key

        client = s.client_identity(key)
        assert client is not None and client.side == "client"
        s.switch_identity(client.user_id)
        early = s.act(Action.ACCEPT, key)
        assert not early.ok and early.violations[0].code == rules.E_ACCEPT_TOO_SOON
        assert "6 hours" in early.message
        summary = s.advance("6h")
        assert "6h" in summary and "Sync" in summary
        accepted = s.act(Action.ACCEPT, key)
        assert accepted.ok, accepted.message
        assert accepted.link.status in (S.LinkAccepted, S.LinkInProgress)

        s.advance("1d")
        s.switch_identity(s._observer_id)
        assert s.sync().ok
        assert s.cache().link(key).status == S.Active
        unlinked = s.act(Action.UNLINK, key, note="bye")
        assert unlinked.ok, unlinked.message
        s.advance("2d")
        assert s.sync().ok
        assert s.cache().link(key).status == S.Inactive
        again = s.act(Action.REINVITE, key)
        assert again.ok and again.link.status == S.LinkPending
        statuses = [e.to_status for e in s.cache().timeline(key) if e.kind == "change"]
        assert statuses[-1] == S.LinkPending and S.Active in statuses and S.Inactive in statuses
        sources = {e.source for e in s.cache().timeline(key)}
        assert {"action:invite", "action:accept", "action:unlink", "action:reinvite", "sync"} <= sources
    finally:
        s.close()


def test_viewer_refusal_is_explained_without_sending(demo):
    viewer = next(i for i in demo.identities() if i.side == "agency" and i.role == Role.Viewer)
    cache = demo.cache()
    agency = demo.identity().customer_id
    active = next(r.key for r in cache.inbox_page(customer_id=agency, perspective=Perspective.SENT, limit=500,
                                                   now=demo.clock()) if r.status == S.Active)
    try:
        demo.switch_identity(viewer.user_id)
        r = demo.act(Action.UNLINK, active)
        assert not r.ok and "you are a Viewer" in r.message
        (inv,) = demo.invite([ClientLink(client_entity_id=active.client_entity_id, is_bill_to_client=True)])
        assert not inv.ok and "Viewer" in inv.message
    finally:
        demo.switch_identity(demo._observer_id)


def test_simulator_stopped_means_offline_and_a_sentence(tmp_path):
    s = Session.demo(home=tmp_path)
    try:
        assert s.sync().ok
        before = s.cache().link_count()
        s._sim.stop()
        result = s.sync()
        assert not result.ok and result.error is not None
        assert "previous sync" in result.message and "Traceback" not in result.message
        assert s.cache().link_count() == before
        assert not s.online()
    finally:
        s.close()


def test_advance_is_demo_only_and_checks_its_input(demo):
    with pytest.raises(Exception) as e:
        demo.advance("soon")
    assert "not a duration" in str(e.value)


def test_live_without_sign_in_says_how():
    with pytest.raises(NotSignedIn, match="auth login"):
        Session.live()


def test_live_session_against_the_simulator_refreshes_and_saves_rotated_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv(credentials.ENV_KEYRING, "0")
    from linkdesk.core.simulator.app import Simulator
    from linkdesk.core.simulator.auth import DEFAULT_CLIENT_ID, TOKEN_PATH

    with Simulator(tmp_path / "sim.sqlite") as sim:
        admin = next(u for u in sim.users() if u.side == "agency" and u.role_id == 41)
        issued = sim.tokens(admin.user_id)
        record = credentials.SignIn(
            profile=credentials.SignIn.profile_for(admin.customer_id), environment="production",
            client_id=DEFAULT_CLIENT_ID, customer_id=admin.customer_id, customer_name=admin.customer_name,
            user_id=admin.user_id, user_name=admin.username, signed_in_at="2025-11-03T12:00:00Z",
            service_url=sim.url, token_url=sim.base_url + TOKEN_PATH, role_id=41)
        credentials.save(record, credentials.Secrets(issued.refresh_token, "BBD37VB98"))
        s = Session.live(record.profile)
        try:
            assert not s.is_demo and s.identity().user_id == admin.user_id
            result = s.sync()
            assert result.ok, result.message
            assert s.cache().link_count() > 10
            # the refresh at session start rotated the refresh token; the new one was stored
            assert credentials.load(record.profile)[1].refresh_token != issued.refresh_token
            with pytest.raises(SessionError):
                s.switch_identity(admin.user_id + 1)
        finally:
            s.close()


# ---------------------------------------------------------------------------------------------------------------------
# Property: after any sequence of actions (and syncs after clock moves), the cache equals the simulator's state.
# ---------------------------------------------------------------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("invite"), st.integers(0, 50), st.booleans()),
    st.tuples(st.sampled_from(["cancel", "unlink", "accept", "decline", "reinvite"]), st.integers(0, 50),
              st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from(["30m", "6h", "1d", "31d"]), st.booleans()),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=6))
def test_random_actions_keep_the_cache_equal_to_the_simulator(demo, steps):
    agency = demo._observer_id
    demo.switch_identity(agency)
    assert demo.sync().ok
    for kind, arg, flag in steps:
        keys = sorted(cached_links(demo))
        if kind == "advance":
            demo.advance(arg)
            assert demo.sync().ok
        elif kind == "invite":
            key = keys[arg % len(keys)]
            if key.type == LinkType.AccountLink:
                demo.invite([ClientLink(client_entity_id=key.client_entity_id, is_bill_to_client=flag)])
        else:
            key = keys[arg % len(keys)]
            action = Action(kind)
            if action in (Action.ACCEPT, Action.DECLINE):
                client = demo.client_identity(key)
                if client is None:
                    continue
                demo.switch_identity(client.user_id)
            demo.act(action, key, note="from the property test" if flag else None)
            demo.switch_identity(agency)
        assert cached_links(demo) == service_links(demo), f"after {kind} {arg}"
