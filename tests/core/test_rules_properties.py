"""Property-based tests of core/rules.py (hypothesis).

The heart is a tiny pure model of the service: random invitations, updates by random actors of every role on every
side, service-side moves taken from rules.LIFECYCLE and time steps. The model asks rules.py what is allowed and
compares the answer with an oracle written here from the documentation. Properties: no status change leaves the
documented lifecycle graph; no pair ever has two blocking links; an ended link refuses every update; every message is a
full sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from linkdesk.core import rules
from rules_messages import message_problems
from linkdesk.core.model import (
    Account,
    Actor,
    ClientLink,
    ClientLinkStatus as S,
    CustomerLinkPermission,
    LinkType,
    Party,
    Perspective,
    Role,
    Stage,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

STATUSES = [
    "LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
    "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive", "UnlinkFailed",
]
ENDED = {"LinkCanceled", "LinkDeclined", "LinkExpired", "LinkFailed", "Inactive"}
LOCKED = {"LinkInProgress", "UnlinkInProgress"}
IN_FORCE = {"Active", "UnlinkFailed", "UnlinkCanceled"}
BLOCKING = set(STATUSES) - ENDED
MANAGED_BY_OTHER = BLOCKING - {"LinkPending"}
CLIENT_MOVES = {("LinkPending", "LinkAccepted"), ("LinkPending", "LinkDeclined")}
AGENCY_MOVES = {("LinkPending", "LinkCanceled")} | {(s, "UnlinkRequested") for s in IN_FORCE}
GRAPH = {
    (None, "LinkPending", "agency"),
    ("LinkPending", "LinkCanceled", "agency"), ("LinkPending", "LinkAccepted", "client"),
    ("LinkPending", "LinkDeclined", "client"), ("LinkPending", "LinkExpired", "service"),
    ("LinkAccepted", "LinkInProgress", "service"), ("LinkInProgress", "Active", "service"),
    ("LinkInProgress", "LinkFailed", "service"), ("Active", "UnlinkRequested", "agency"),
    ("UnlinkFailed", "UnlinkRequested", "agency"), ("UnlinkCanceled", "UnlinkRequested", "agency"),
    ("UnlinkRequested", "UnlinkPending", "service"), ("UnlinkPending", "UnlinkInProgress", "service"),
    ("UnlinkInProgress", "Inactive", "service"), ("UnlinkInProgress", "UnlinkFailed", "service"),
}
ROLES = [41, 203, 16, 100, 33]


def agency_role_may(role: int, link_type: LinkType) -> bool:
    return role in (41, 203) if link_type == LinkType.AccountLink else role == 41


def update_allowed(stored: str, requested: str, party: Party | None, role: int, link_type: LinkType) -> bool:
    """The documented answer (same table as test_rules_lifecycle.py), ignoring time and the Timestamp."""
    if stored in ENDED or stored in LOCKED or party is None:
        return False
    if requested == stored:
        return party == Party.AGENCY and agency_role_may(role, link_type)
    if (stored, requested) in CLIENT_MOVES:
        return party == Party.CLIENT and role == 41
    if (stored, requested) in AGENCY_MOVES:
        return party == Party.AGENCY and agency_role_may(role, link_type)
    return False


# ---- the world --------------------------------------------------------------------------------------------------------

NAMES = {100: "Contoso Agency", 300: "Woodgrove Agency", 200: "Fabrikam", 400: "Tailspin"}
ACCOUNTS = {
    2001: Account(2001, "Fabrikam Shoes", "F2001", 200, prepaid=False),
    2002: Account(2002, "Fabrikam Prepaid", "F2002", 200, prepaid=True),
    4001: Account(4001, "Tailspin Toys", "F4001", 400, prepaid=None),
    1001: Account(1001, "Contoso House", "F1001", 100, prepaid=False),
}
ENTITIES = [(LinkType.AccountLink, a) for a in ACCOUNTS] + [(LinkType.CustomerLink, c) for c in (200, 400, 100)]
ACTORS = [Actor(user_id=cid * 1000 + role, customer_id=cid, role=Role(role), customer_name=NAMES[cid],
                user_name=f"u{cid}-{role}") for cid in NAMES for role in ROLES]
#: Time steps, mostly short so that links live long enough to be accepted, unlinked and so on.
STEPS = [timedelta(minutes=5), timedelta(minutes=5), timedelta(hours=1), timedelta(hours=5, minutes=59),
         timedelta(hours=6), timedelta(hours=6), timedelta(days=1), timedelta(days=2), timedelta(days=7),
         timedelta(days=23), timedelta(days=29, hours=23), timedelta(days=31)]


def client_customer(link: ClientLink) -> int:
    return ACCOUNTS[link.client_entity_id].parent_customer_id if link.link_type == LinkType.AccountLink \
        else link.client_entity_id


@dataclass
class Rec:
    link: ClientLink
    invited: datetime  # kept apart: LastModifiedDateTime also moves on note edits


class LinkWorld(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.recs: list[Rec] = []
        self.tokens = 0
        self.verified_ended: set[int] = set()
        self.messages: set[str] = set()

    # -- helpers --

    def _token(self) -> str:
        self.tokens += 1
        return f"TS{self.tokens:08d}"

    def _see(self, violations: list[rules.Violation]) -> None:
        for v in violations:
            if v.message not in self.messages:
                assert not message_problems(v.message), (v, message_problems(v.message))
                assert v.code in rules.ERROR_CODES
                self.messages.add(v.message)

    def _move(self, rec: Rec, to: str, party: str) -> None:
        frm = str(rec.link.status)
        assert (frm, to, party) in GRAPH, f"{frm} -> {to} by {party} is not a documented transition"
        assert rules.transition(frm, to, Party(party)) is not None
        rec.link = rec.link.replace(status=S(to), last_modified_date_time=self.now, timestamp=self._token())

    # -- rules --

    @initialize(seed=st.lists(st.tuples(st.sampled_from(ENTITIES), st.sampled_from([100, 300]),
                                        st.sampled_from(STATUSES), st.integers(min_value=0, max_value=29)),
                              max_size=6, unique_by=lambda t: (t[0], t[1])))
    def seed_world(self, seed) -> None:
        """Start, like a synced world, with links in any status: one per pair, none linking a customer to itself."""
        for (link_type, eid), manager, status, age_days in seed:
            is_account = link_type == LinkType.AccountLink
            owner = ACCOUNTS[eid].parent_customer_id if is_account else eid
            if owner == manager:
                continue
            invited = self.now - timedelta(days=age_days)
            link = ClientLink(type=link_type, client_entity_id=eid, managing_customer_id=manager,
                              managing_customer_name=NAMES[manager], client_entity_name=f"Entity {eid}",
                              is_bill_to_client=True if is_account else None,
                              customer_link_permission=None if is_account else CustomerLinkPermission.Standard,
                              status=S(status), start_date=invited, last_modified_date_time=invited,
                              timestamp=self._token())
            self.recs.append(Rec(link, invited))

    @rule(actor=st.sampled_from(ACTORS), entity=st.sampled_from(ENTITIES), bill=st.booleans())
    def invite(self, actor: Actor, entity, bill: bool) -> None:
        link_type, eid = entity
        is_account = link_type == LinkType.AccountLink
        draft = ClientLink(type=link_type, client_entity_id=eid, managing_customer_id=actor.customer_id,
                           is_bill_to_client=bill if is_account else None,
                           customer_link_permission=None if is_account else CustomerLinkPermission.Administrative,
                           name=f"Link {len(self.recs)}")
        existing = [r.link for r in self.recs if r.link.client_entity_id == eid]
        got = rules.check_new_invitation(draft, actor=actor, now=self.now, existing=existing,
                                         client_account=ACCOUNTS.get(eid) if is_account else None)
        self._see(got)

        # The oracle, from the documentation.
        ok = agency_role_may(actor.role, link_type)
        if is_account:
            ok = ok and ACCOUNTS[eid].parent_customer_id != actor.customer_id and not ACCOUNTS[eid].prepaid
        else:
            ok = ok and eid != actor.customer_id
        for r in self.recs:
            if r.link.client_entity_id != eid or r.link.link_type != link_type:
                continue
            status = str(r.link.status)
            if r.link.managing_customer_id == actor.customer_id and status in BLOCKING:
                ok = False
            if is_account and r.link.managing_customer_id != actor.customer_id and status in MANAGED_BY_OTHER:
                ok = False
        assert (got == []) == ok, (actor, entity, [v.message for v in got])

        if not got:
            assert (None, "LinkPending", "agency") in GRAPH
            assert rules.transition(None, S.LinkPending, Party.AGENCY) is not None
            link = draft.replace(status=S.LinkPending, client_entity_name=f"Entity {eid}",
                                 managing_customer_name=NAMES[actor.customer_id], start_date=self.now,
                                 last_modified_date_time=self.now, last_modified_by_user_id=actor.user_id,
                                 timestamp=self._token())
            self.recs.append(Rec(link, self.now))

    def _try_update(self, actor: Actor, rec: Rec, target: str, new_note: str | None, stale: bool) -> None:
        stored = rec.link
        party = rules.party_of(actor, stored, client_customer(stored))
        requested = stored.replace(status=target, note=new_note if new_note is not None else stored.note,
                                   timestamp="stale" if stale else stored.timestamp)
        got = rules.check_update(stored, requested, actor=actor, party=party, now=self.now, invited_at=rec.invited)
        self._see(got)

        ok = update_allowed(str(stored.status), target, party, actor.role, stored.link_type) and not stale
        if target == "LinkAccepted" != str(stored.status) and self.now < rec.invited + timedelta(hours=6):
            ok = False
        assert (got == []) == ok, (str(stored.status), target, party, actor.role, [v.message for v in got])
        if str(stored.status) in ENDED:
            assert any(v.code == rules.E_LINK_ENDED for v in got)

        if not got:
            if target != str(stored.status):
                self._move(rec, target, party.value)
            else:
                rec.link = stored.replace(note=requested.note, last_modified_date_time=self.now,
                                          timestamp=self._token())

    @precondition(lambda self: self.recs)
    @rule(actor=st.sampled_from(ACTORS), pick=st.integers(min_value=0), wanted=st.sampled_from(STATUSES),
          new_note=st.sampled_from([None, "Please accept", ""]), stale=st.booleans())
    def any_update(self, actor: Actor, pick: int, wanted: str, new_note, stale: bool) -> None:
        """Anyone asks for anything."""
        self._try_update(actor, self.recs[pick % len(self.recs)], wanted, new_note, stale)

    @precondition(lambda self: self.recs)
    @rule(pick=st.integers(min_value=0), side=st.sampled_from(["agency", "client"]),
          role=st.sampled_from([41, 41, 41, 41, 203, 16, 100, 33]), choice=st.integers(min_value=0, max_value=7),
          new_note=st.sampled_from([None, "Reminder"]), stale=st.sampled_from([False, False, False, True]))
    def plausible_update(self, pick: int, side: str, role: int, choice: int, new_note, stale: bool) -> None:
        """Someone of the link's own sides asks for a documented move (or a note change): reaches deep states."""
        rec = self.recs[pick % len(self.recs)]
        cid = rec.link.managing_customer_id if side == "agency" else client_customer(rec.link)
        actor = next(a for a in ACTORS if a.customer_id == cid and a.role == role)
        moves = CLIENT_MOVES if side == "client" else AGENCY_MOVES
        status = str(rec.link.status)
        targets = sorted(to for frm, to in moves if frm == status) * 3 + [status]  # mostly moves, sometimes a note
        self._try_update(actor, rec, targets[choice % len(targets)], new_note, stale)

    @precondition(lambda self: self.recs)
    @rule(pick=st.integers(min_value=0), choice=st.integers(min_value=0, max_value=3))
    def service_moves(self, pick: int, choice: int) -> None:
        rec = self.recs[pick % len(self.recs)]
        options = [t for t in rules.LIFECYCLE if t.frm == rec.link.status and t.kind == rules.Kind.SERVICE]
        if options:
            self._move(rec, options[choice % len(options)].to.value, "service")

    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: timedelta) -> None:
        self.now += step
        expiry = [t for t in rules.LIFECYCLE if t.kind == rules.Kind.TIME]
        assert [(t.frm, t.to) for t in expiry] == [(S.LinkPending, S.LinkExpired)]
        for rec in self.recs:
            if rec.link.status == S.LinkPending and rules.is_expired(rec.invited, self.now):
                self._move(rec, "LinkExpired", "service")

    # -- invariants --

    @invariant()
    def statuses_are_known(self) -> None:
        for rec in self.recs:
            assert str(rec.link.status) in STATUSES

    @invariant()
    def one_blocking_link_per_pair(self) -> None:
        seen: set[tuple] = set()
        for rec in self.recs:
            status = rules.effective_status(rec.link, self.now, rec.invited)
            assert status == rec.link.status  # the model applies expiry as time passes
            if str(status) in BLOCKING:
                key = rec.link.key
                assert key not in seen, f"two blocking links for {key}"
                seen.add(key)

    @invariant()
    def ended_links_refuse_every_update(self) -> None:
        for i, rec in enumerate(self.recs):
            if str(rec.link.status) not in ENDED or i in self.verified_ended:
                continue
            link = rec.link
            for actor in ACTORS:
                if actor.role != Role.SuperAdmin:  # the most privileged actor of each customer is enough here
                    continue
                party = rules.party_of(actor, link, client_customer(link))
                for target in STATUSES:
                    for note in (link.note, "Changed"):
                        got = rules.check_update(link, link.replace(status=target, note=note), actor=actor,
                                                 party=party, now=self.now, invited_at=rec.invited)
                        assert any(v.code == rules.E_LINK_ENDED for v in got), (str(link.status), target)
                        self._see(got)
                options = rules.available_actions(link, actor, party, self.now, rec.invited)
                assert {o.action for o in options if o.allowed} <= {rules.Action.REINVITE}
            self.verified_ended.add(i)

    @invariant()
    def stages_agree_with_statuses(self) -> None:
        for rec in self.recs:
            for perspective in Perspective:
                stage = rules.stage(rec.link, perspective, self.now, rec.invited)
                status = str(rec.link.status)
                assert (stage == Stage.ENDED) == (status in ENDED)
                assert (stage == Stage.ACTIVE) == (status in IN_FORCE)


LinkWorld.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
TestLinkWorld = LinkWorld.TestCase


def test_the_model_walks_every_edge_of_the_graph():
    """The same model, driven by hand through every documented transition (so the machine's checks run on each)."""
    world = LinkWorld()
    walked: set[tuple] = set()
    original = world._move

    def move(rec, to, party):
        walked.add((str(rec.link.status), to, party))
        original(rec, to, party)

    world._move = move  # type: ignore[method-assign]
    sa, client_sa = (next(a for a in ACTORS if a.customer_id == c and a.role == Role.SuperAdmin) for c in (100, 200))

    def invite_2001() -> Rec:
        world.invite(sa, (LinkType.AccountLink, 2001), True)
        return world.recs[-1]

    def check() -> None:
        world.statuses_are_known()
        world.one_blocking_link_per_pair()
        world.ended_links_refuse_every_update()
        world.stages_agree_with_statuses()

    rec = invite_2001()
    world.advance(timedelta(hours=5, minutes=59))
    world._try_update(client_sa, rec, "LinkAccepted", None, False)  # too early: refused, and the model agrees
    assert rec.link.status == S.LinkPending
    world.advance(timedelta(minutes=5))
    world._try_update(client_sa, rec, "LinkAccepted", None, False)
    for _ in range(2):
        world.service_moves(len(world.recs) - 1, 0)  # LinkInProgress, then Active
    world._try_update(sa, rec, "Active", "Reminder", False)  # a note-only update
    for choice in (0, 0, 0, 1):  # unlink requested, pending, in progress, failed
        if choice == 0 and rec.link.status == S.Active:
            world._try_update(sa, rec, "UnlinkRequested", None, False)
        else:
            world.service_moves(len(world.recs) - 1, choice)
    assert rec.link.status == S.UnlinkFailed
    world._try_update(sa, rec, "UnlinkRequested", None, False)
    for _ in range(3):
        world.service_moves(len(world.recs) - 1, 0)  # pending, in progress, Inactive
    check()
    for ending in ("LinkCanceled", "LinkDeclined", "LinkExpired", "LinkFailed"):
        rec = invite_2001()
        world.advance(timedelta(hours=6))
        if ending == "LinkCanceled":
            world._try_update(sa, rec, ending, None, False)
        elif ending == "LinkDeclined":
            world._try_update(client_sa, rec, ending, None, False)
        elif ending == "LinkExpired":
            world.advance(timedelta(days=30))
        else:
            world._try_update(client_sa, rec, "LinkAccepted", None, False)
            world.service_moves(len(world.recs) - 1, 0)
            world.service_moves(len(world.recs) - 1, 1)
        assert rec.link.status == ending
        check()
    rec.link = rec.link.replace(status=S.UnlinkCanceled)  # reserved status, never emitted: planted to walk its edge
    world._try_update(sa, rec, "UnlinkRequested", None, False)
    check()
    assert walked == {(frm, to, party) for frm, to, party in GRAPH if frm is not None}


# ---- the invitation check: any combination of faults yields every violation -------------------------------------------

SA = Actor(user_id=1, customer_id=100, role=Role.SuperAdmin, customer_name="Contoso Agency")
NOW = T0 + timedelta(days=1)


def existing_link(status: str, managing: int, link_type: LinkType, eid: int) -> ClientLink:
    return ClientLink(type=link_type, client_entity_id=eid, managing_customer_id=managing,
                      managing_customer_name=NAMES.get(managing), client_entity_name="Target",
                      status=S(status), last_modified_date_time=T0)


READ_ONLY = {"client_entity_name": "x", "managing_customer_name": "x", "status": S.Active,
             "last_modified_date_time": T0, "last_modified_by_user_id": 7, "timestamp": "x"}


@settings(max_examples=400, deadline=None)
@given(
    link_type=st.sampled_from([LinkType.AccountLink, LinkType.CustomerLink]),
    client_mode=st.sampled_from(["ok", "both", "none", "bad id", "text id"]),
    manager_mode=st.sampled_from(["ok", "both", "none", "foreign", "bad"]),
    no_bill=st.booleans(), bill_on_customer=st.booleans(), permission=st.sampled_from(["ok", "on account", "bad"]),
    long_name=st.booleans(), read_only=st.sets(st.sampled_from(sorted(READ_ONLY))),
    role=st.sampled_from(ROLES), prepaid=st.booleans(), own=st.booleans(),
    blocking=st.sampled_from([None] + sorted(BLOCKING)), other=st.sampled_from([None] + STATUSES),
)
def test_any_combination_of_faults_gets_every_violation(link_type, client_mode, manager_mode, no_bill,
                                                         bill_on_customer, permission, long_name, read_only, role,
                                                         prepaid, own, blocking, other):
    is_account = link_type == LinkType.AccountLink
    eid = 2001 if is_account else (100 if own else 200)
    want: list[int] = []
    draft = ClientLink(type=link_type, client_entity_id=eid, managing_customer_id=100)

    if client_mode == "both":
        draft, want = replace(draft, client_entity_number="F2001"), want + [90002]
    elif client_mode == "none":
        draft, want = replace(draft, client_entity_id=None), want + [90003]
    elif client_mode == "bad id":
        draft, want = replace(draft, client_entity_id=-eid), want + [90010]
    elif client_mode == "text id":
        draft, want = replace(draft, client_entity_id=str(eid)), want + [90010]
    client_known = client_mode in ("ok", "both")

    if manager_mode == "both":
        draft, want = replace(draft, managing_customer_number="C100"), want + [90002]
    elif manager_mode == "none":
        draft, want = replace(draft, managing_customer_id=None), want + [90003]
    elif manager_mode == "foreign":
        draft, want = replace(draft, managing_customer_id=999), want + [1001]
    elif manager_mode == "bad":
        draft, want = replace(draft, managing_customer_id="C100"), want + [90010]

    if is_account:
        if not no_bill:
            draft = replace(draft, is_bill_to_client=False)
        else:
            want.append(90005)
        if permission == "on account":
            draft, want = replace(draft, customer_link_permission="Standard"), want + [90007]
    else:
        if bill_on_customer:
            draft, want = replace(draft, is_bill_to_client=True), want + [90006]
        if permission == "bad":
            draft, want = replace(draft, customer_link_permission="Full"), want + [90008]
        elif permission == "ok":
            draft = replace(draft, customer_link_permission="Standard")
        if own and client_known and manager_mode != "foreign":
            want.append(90015)  # a customer cannot invite itself

    if long_name:
        draft, want = replace(draft, name="x" * 41), want + [90004]
    for attr in read_only:
        draft, want = replace(draft, **{attr: READ_ONLY[attr]}), want + [90009]
    if not agency_role_may(role, link_type):
        want.append(1001)
    actor = replace(SA, role=Role(role))

    kw: dict = {"existing": []}
    if is_account:
        kw["client_account"] = Account(2001, "Fabrikam Shoes", "F2001", 100 if own else 200, prepaid=prepaid)
        if own and manager_mode != "foreign":  # the account belongs to the managing customer itself
            want.append(90015)
        if prepaid:
            want.append(1471)
    # Links of the pair are recognised when the draft names the client entity and (at worst by fallback) this agency.
    pair_known = client_known and manager_mode != "foreign" and (manager_mode != "bad")
    if blocking is not None:
        kw["existing"].append(existing_link(blocking, 100, link_type, eid))
        if pair_known:
            want.append(1410)
    if other is not None and is_account:
        kw["existing"].append(existing_link(other, 300, link_type, eid))
        if client_known and other in MANAGED_BY_OTHER:
            want.append(1424)
    if manager_mode in ("foreign", "bad") and blocking is not None and client_known and is_account \
            and blocking in MANAGED_BY_OTHER:
        want.append(1424)  # seen from customer 999 (or an unreadable id), agency 100's link is another agency's

    got = rules.check_new_invitation(draft, actor=actor, now=NOW, **kw)
    assert sorted(v.code for v in got) == sorted(want), [v.message for v in got]
    for v in got:
        assert not message_problems(v.message), (v.message, message_problems(v.message))


# ---- robustness: arbitrary values never crash the checks ------------------------------------------------------------

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.text(max_size=60),
                      st.floats(allow_nan=True), st.sampled_from(list(S) + list(LinkType)))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={a: ANY_VALUE for a in (
    "type", "client_entity_id", "client_entity_number", "managing_customer_id", "managing_customer_number",
    "name", "is_bill_to_client", "customer_link_permission", "status", "timestamp")}),
       st.sampled_from(ROLES))
def test_arbitrary_drafts_never_crash_and_always_explain(fields, role):
    draft = ClientLink(**fields)
    got = rules.check_new_invitation(draft, actor=replace(SA, role=Role(role)), now=NOW)
    for v in got:
        assert v.code in rules.ERROR_CODES
        assert v.message[0].isupper() and v.message.endswith("."), v.message


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={a: ANY_VALUE for a in (
    "type", "client_entity_id", "name", "is_bill_to_client", "customer_link_permission", "status", "timestamp",
    "note")}), st.sampled_from(STATUSES), st.sampled_from([Party.AGENCY, Party.CLIENT, None]))
def test_arbitrary_updates_never_crash_and_always_explain(fields, status, party):
    stored = existing_link(status, 100, LinkType.AccountLink, 2001)
    got = rules.check_update(stored, replace(stored, **fields), actor=SA, party=party, now=NOW)
    for v in got:
        assert v.code in rules.ERROR_CODES
        assert v.message[0].isupper() and v.message.endswith("."), v.message


# ---- time ------------------------------------------------------------------------------------------------------------

MOMENT = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                 timezone(timedelta(hours=-8))]))


@settings(max_examples=500, deadline=None)
@given(invited=MOMENT, offset=st.timedeltas(min_value=timedelta(days=-5), max_value=timedelta(days=40)))
def test_days_left_agrees_with_is_expired_and_stage(invited, offset):
    now = invited + offset
    left = rules.days_left(invited, now)
    assert (left < 0) == rules.is_expired(invited, now) == (offset >= timedelta(days=30))
    if left >= 0:
        assert timedelta(days=left) <= timedelta(days=30) - offset < timedelta(days=left + 1)  # whole days, floored
    link = ClientLink(client_entity_id=1, managing_customer_id=100, status=S.LinkPending,
                      last_modified_date_time=invited)
    stage = rules.stage(link, Perspective.SENT, now)
    if offset >= timedelta(days=30):
        assert stage == Stage.ENDED
    elif offset >= timedelta(days=23):
        assert stage == Stage.NEEDS_ACTION
    else:
        assert stage == Stage.PENDING


@settings(max_examples=300, deadline=None)
@given(start=MOMENT, shown_as=st.sampled_from(["utc", "naive", "+02:00", "-07:00"]))
def test_the_same_instant_in_another_shape_is_no_change(start, shown_as):
    stored = replace(existing_link("Active", 100, LinkType.AccountLink, 2001), start_date=start,
                     is_bill_to_client=True, timestamp="T")
    other = {"utc": start.astimezone(UTC), "naive": start.astimezone(UTC).replace(tzinfo=None),
             "+02:00": start.astimezone(timezone(timedelta(hours=2))),
             "-07:00": start.astimezone(timezone(timedelta(hours=-7)))}[shown_as]
    assert rules.check_update(stored, replace(stored, start_date=other), actor=SA, party=Party.AGENCY, now=NOW) == []
    moved = replace(stored, start_date=other + timedelta(seconds=1))
    got = rules.check_update(stored, moved, actor=SA, party=Party.AGENCY, now=NOW)
    assert [(v.code, v.field) for v in got] == [(3083, "StartDate")]
