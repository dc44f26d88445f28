"""Table-driven: every stored status x requested status x party x role x link type through rules.check_update.

The expected outcome is written here independently of core/rules.py, from client-links-api.md §3.2 and the decisions of
design.md §2: ended statuses refuse every update; LinkInProgress / UnlinkInProgress refuse with 1472; the client may
only set LinkAccepted / LinkDeclined from LinkPending (client Super Admin); the agency may set LinkCanceled from
LinkPending and UnlinkRequested from Active / UnlinkFailed / UnlinkCanceled (account links: Super Admin or Standard;
customer links: Super Admin only); Campaign Managers, Viewers and Aggregators are read-only.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from linkdesk.core import rules
from rules_messages import message_problems
from linkdesk.core.model import (
    Actor,
    ClientLink,
    ClientLinkStatus,
    CustomerLinkPermission,
    LinkType,
    Party,
    Role,
)

# ---- the documented lifecycle, written out independently ------------------------------------------------------------

STATUSES = [
    "LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
    "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive", "UnlinkFailed",
]
ENDED = {"LinkCanceled", "LinkDeclined", "LinkExpired", "LinkFailed", "Inactive"}
LOCKED = {"LinkInProgress", "UnlinkInProgress"}
IN_FORCE = {"Active", "UnlinkFailed", "UnlinkCanceled"}  # decision 2
BLOCKING = {"Active", "LinkAccepted", "LinkInProgress", "LinkPending", "UnlinkRequested", "UnlinkPending",
            "UnlinkInProgress", "UnlinkFailed", "UnlinkCanceled"}
CLIENT_MOVES = {("LinkPending", "LinkAccepted"), ("LinkPending", "LinkDeclined")}
AGENCY_MOVES = {("LinkPending", "LinkCanceled")} | {(s, "UnlinkRequested") for s in IN_FORCE}
#: Every documented transition: (from, to, who). None = no link yet or the previous one ended.
GRAPH = {
    (None, "LinkPending", "agency"),
    ("LinkPending", "LinkCanceled", "agency"),
    ("LinkPending", "LinkAccepted", "client"),
    ("LinkPending", "LinkDeclined", "client"),
    ("LinkPending", "LinkExpired", "service"),
    ("LinkAccepted", "LinkInProgress", "service"),
    ("LinkInProgress", "Active", "service"),
    ("LinkInProgress", "LinkFailed", "service"),
    ("Active", "UnlinkRequested", "agency"),
    ("UnlinkFailed", "UnlinkRequested", "agency"),
    ("UnlinkCanceled", "UnlinkRequested", "agency"),
    ("UnlinkRequested", "UnlinkPending", "service"),
    ("UnlinkPending", "UnlinkInProgress", "service"),
    ("UnlinkInProgress", "Inactive", "service"),
    ("UnlinkInProgress", "UnlinkFailed", "service"),
}
ROLES = [41, 203, 16, 100, 33]  # Super Admin, Standard, Advertiser Campaign Manager, Viewer, Aggregator
ROLE_WORDS = {41: "a Super Admin", 203: "a Standard User", 16: "an Advertiser Campaign Manager", 100: "a Viewer",
              33: "an Aggregator"}
PARTIES = [Party.AGENCY, Party.CLIENT, None]
LINK_TYPES = [LinkType.AccountLink, LinkType.CustomerLink]

E_ENDED, E_LOCKED, E_WRONG_MOVE, E_NOT_ALLOWED = 90012, 1472, 90001, 1001


def agency_role_may(role: int, link_type: LinkType) -> bool:
    return role in (41, 203) if link_type == LinkType.AccountLink else role == 41


def expected_code(stored: str, requested: str, party: Party | None, role: int, link_type: LinkType) -> int | None:
    """The refusal code the documentation implies, or None when the update is allowed."""
    if stored in ENDED:
        return E_ENDED
    if stored in LOCKED:
        return E_LOCKED
    if requested == stored:  # note-only update: the agency's business
        if party is None:
            return E_NOT_ALLOWED
        if party == Party.CLIENT:
            return E_WRONG_MOVE
        return None if agency_role_may(role, link_type) else E_NOT_ALLOWED
    move = (stored, requested)
    if move in CLIENT_MOVES:
        if party == Party.CLIENT:
            return None if role == 41 else E_NOT_ALLOWED
        return E_NOT_ALLOWED if party is None else E_WRONG_MOVE
    if move in AGENCY_MOVES:
        if party == Party.AGENCY:
            return None if agency_role_may(role, link_type) else E_NOT_ALLOWED
        return E_NOT_ALLOWED if party is None else E_WRONG_MOVE
    return E_WRONG_MOVE


# ---- fixtures ---------------------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=1)  # past the 6-hour cooldown, well before the 30-day expiry
AGENCY_ID, CLIENT_ID, STRANGER_ID = 100, 200, 300
CUSTOMER_NAMES = {AGENCY_ID: "Contoso Agency", CLIENT_ID: "Fabrikam", STRANGER_ID: "Woodgrove"}
PARTY_CUSTOMER = {Party.AGENCY: AGENCY_ID, Party.CLIENT: CLIENT_ID, None: STRANGER_ID}


def actor(party: Party | None, role: int) -> Actor:
    cid = PARTY_CUSTOMER[party]
    return Actor(user_id=cid * 10 + role, customer_id=cid, role=Role(role), customer_name=CUSTOMER_NAMES[cid],
                 user_name=f"user{role}")


def stored_link(status: str, link_type: LinkType) -> ClientLink:
    common = dict(
        managing_customer_id=AGENCY_ID, managing_customer_number="C100", managing_customer_name="Contoso Agency",
        note="Welcome", name="Shoes link", inviter_email="ann@contoso.example", inviter_name="Ann",
        inviter_phone="555-0100", start_date=T0, status=ClientLinkStatus(status), suppress_notification=False,
        last_modified_date_time=T0, last_modified_by_user_id=11, timestamp="AAAAAAAAB9E=",
    )
    if link_type == LinkType.AccountLink:
        return ClientLink(type=LinkType.AccountLink, client_entity_id=2001, client_entity_number="F2001",
                          client_entity_name="Fabrikam Shoes", is_bill_to_client=True, **common)
    return ClientLink(type=LinkType.CustomerLink, client_entity_id=CLIENT_ID, client_entity_number="C200",
                      client_entity_name="Fabrikam", customer_link_permission=CustomerLinkPermission.Standard,
                      **common)


def run(stored: str, requested: str, party: Party | None, role: int, link_type: LinkType) -> list[rules.Violation]:
    link = stored_link(stored, link_type)
    return rules.check_update(link, link.replace(status=requested), actor=actor(party, role), party=party, now=NOW)


def all_cases():
    for s in STATUSES:
        for r in STATUSES:
            for p in PARTIES:
                for role in ROLES:
                    for t in LINK_TYPES:
                        yield s, r, p, role, t


# ---- the table --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("requested", STATUSES)
@pytest.mark.parametrize("stored", STATUSES)
def test_check_update_matches_the_documented_lifecycle(stored, requested):
    mismatches = []
    for party in PARTIES:
        for role in ROLES:
            for link_type in LINK_TYPES:
                want = expected_code(stored, requested, party, role, link_type)
                got = run(stored, requested, party, role, link_type)
                codes = [v.code for v in got]
                ok = codes == [] if want is None else codes == [want]
                if not ok:
                    mismatches.append(f"{party} {role} {link_type.value}: want {want}, got {codes}")
    assert not mismatches, "\n".join(mismatches)


def test_the_table_covers_every_combination():
    cases = list(all_cases())
    assert len(cases) == 14 * 14 * 3 * 5 * 2
    assert {c[0] for c in cases} == {s.value for s in ClientLinkStatus}


def test_allowed_moves_per_side_are_exactly_the_documented_ones():
    allowed = {(s, r, p) for s, r, p, role, t in all_cases() if not run(s, r, p, role, t) and s != r}
    assert allowed == {(s, r, Party.CLIENT) for s, r in CLIENT_MOVES} | {(s, r, Party.AGENCY) for s, r in AGENCY_MOVES}


def test_plain_string_statuses_behave_like_enum_members():
    """Parsed replies may carry plain strings; the rules must not depend on enum identity."""
    for s, r, p, role, t in all_cases():
        if role not in (41, 100):
            continue
        link = stored_link(s, t).replace(status=str(s))
        got = rules.check_update(link, link.replace(status=str(r)), actor=actor(p, role), party=p, now=NOW)
        want = expected_code(s, r, p, role, t)
        assert [v.code for v in got] == ([] if want is None else [want]), (s, r, p, role, t)


def test_role_refusals_name_the_role_and_the_customer():
    for s, r, p, role, t in all_cases():
        if p is None:
            continue
        for v in run(s, r, p, role, t):
            if v.code == E_NOT_ALLOWED:
                assert v.message.endswith(f"you are {ROLE_WORDS[role]}."), v.message
                assert CUSTOMER_NAMES[PARTY_CUSTOMER[p]] in v.message


def test_strangers_are_told_they_are_on_neither_side():
    for s, r, p, role, t in all_cases():
        if p is None and expected_code(s, r, p, role, t) == E_NOT_ALLOWED:
            (v,) = run(s, r, p, role, t)
            assert "Woodgrove, which is on neither side of this link" in v.message


def test_wrong_side_refusals_say_who_can():
    (v,) = run("LinkPending", "LinkAccepted", Party.AGENCY, 41, LinkType.AccountLink)
    assert v.message == "Only the client can accept this invitation; you are on the agency side."
    (v,) = run("LinkPending", "LinkCanceled", Party.CLIENT, 41, LinkType.AccountLink)
    assert v.message == "Only the agency can cancel this invitation; you are on the client side."
    (v,) = run("Active", "UnlinkRequested", Party.CLIENT, 41, LinkType.AccountLink)
    assert v.message == "Only the agency can request an unlink; you are on the client side."
    (v,) = run("Active", "Active", Party.CLIENT, 41, LinkType.AccountLink)
    assert "only accept or decline" in v.message


def test_invalid_moves_are_explained_by_what_was_asked():
    (v,) = run("LinkPending", "UnlinkRequested", Party.AGENCY, 41, LinkType.AccountLink)
    assert v.message == "Only an active link can be unlinked; this one is LinkPending (waiting for the client)."
    (v,) = run("Active", "LinkCanceled", Party.AGENCY, 41, LinkType.AccountLink)
    assert v.message == "Only a pending invitation can be canceled; this link is Active (linked)."
    (v,) = run("UnlinkPending", "LinkDeclined", Party.CLIENT, 41, LinkType.AccountLink)
    assert v.message.startswith("Only a pending invitation can be declined; this link is UnlinkPending (")
    (v,) = run("Active", "LinkPending", Party.AGENCY, 41, LinkType.AccountLink)
    assert "cannot be set back to LinkPending (waiting for the client)" in v.message
    (v,) = run("LinkPending", "Active", Party.AGENCY, 41, LinkType.AccountLink)
    assert v.message.startswith("The status Active (linked) is set only by Microsoft Advertising")


def test_ended_and_locked_refusals_say_why():
    (v,) = run("Inactive", "UnlinkRequested", Party.AGENCY, 41, LinkType.AccountLink)
    assert v.field == "Status"
    assert v.message == ("The link to account Fabrikam Shoes (F2001) has ended: it is Inactive (unlinked) since "
                         "2 Mar 2026. An ended link cannot change; send a new invitation instead.")
    (v,) = run("UnlinkInProgress", "Active", Party.AGENCY, 41, LinkType.CustomerLink)
    assert "customer Fabrikam (C200) is UnlinkInProgress (being unlinked)" in v.message
    assert "5 to 30 minutes" in v.message


def test_ended_links_without_a_known_date_still_read_well():
    link = stored_link("LinkDeclined", LinkType.AccountLink).replace(last_modified_date_time=None)
    (v,) = rules.check_update(link, link, actor=actor(Party.AGENCY, 41), party=Party.AGENCY, now=NOW)
    assert "since" not in v.message and not message_problems(v.message)


def test_every_message_of_the_table_is_a_full_sentence():
    seen: dict[str, tuple] = {}
    for case in all_cases():
        for v in run(*case):
            seen.setdefault(v.message, case)
    assert len(seen) > 30  # the table really produces a variety of messages
    bad = {m: (seen[m], message_problems(m)) for m in seen if message_problems(m)}
    assert not bad, bad


def test_the_lifecycle_data_is_the_documented_graph():
    got = {(t.frm.value if t.frm else None, t.to.value, t.party.value) for t in rules.LIFECYCLE}
    assert got == GRAPH
    assert len(rules.LIFECYCLE) == len(GRAPH)  # no duplicates
    for t in rules.LIFECYCLE:
        assert t.note.endswith(".") and t.note[0].isupper()
        want_kind = {"agency": "update", "client": "update", "service": "service"}[t.party.value]
        if t.frm is None:
            want_kind = "add"
        elif t.to == ClientLinkStatus.LinkExpired:
            want_kind = "time"
        assert t.kind.value == want_kind, t


def test_transition_lookup():
    for frm, to, party in GRAPH:
        t = rules.transition(frm, to, Party(party))
        assert t is not None and t.to == to
    for frm in [None] + STATUSES:
        for to in STATUSES:
            for party in Party:
                if (frm, to, party.value) not in GRAPH:
                    assert rules.transition(frm, to, party) is None


def test_next_statuses():
    assert rules.next_statuses(ClientLinkStatus.LinkPending) == [
        ClientLinkStatus.LinkCanceled, ClientLinkStatus.LinkAccepted, ClientLinkStatus.LinkDeclined,
        ClientLinkStatus.LinkExpired]
    assert rules.next_statuses(ClientLinkStatus.LinkPending, Party.CLIENT) == [
        ClientLinkStatus.LinkAccepted, ClientLinkStatus.LinkDeclined]
    assert rules.next_statuses(None) == [ClientLinkStatus.LinkPending]
    for s in ENDED:
        assert rules.next_statuses(ClientLinkStatus(s)) == []
    assert rules.next_statuses(ClientLinkStatus.UnlinkInProgress, Party.SERVICE) == [
        ClientLinkStatus.Inactive, ClientLinkStatus.UnlinkFailed]


def test_status_sets_match_the_documentation():
    assert {s.value for s in rules.ENDED} == ENDED
    assert {s.value for s in rules.BLOCKING} == BLOCKING
    assert {s.value for s in rules.ACTIVE_LIKE} == IN_FORCE
    assert {s.value for s in rules.UPDATE_LOCKED} == LOCKED
    assert {s.value for s in rules.IN_PROGRESS} == {
        "LinkAccepted", "LinkInProgress", "UnlinkRequested", "UnlinkPending", "UnlinkInProgress"}
    assert rules.ENDED | rules.BLOCKING == set(ClientLinkStatus) and not rules.ENDED & rules.BLOCKING
    assert {s.value for s in rules.REQUEST_STATUSES} == {"LinkAccepted", "UnlinkRequested"}
    for s in STATUSES:
        assert rules.is_ended(s) == (s in ENDED)
    assert not rules.is_ended(None) and not rules.is_ended("SomethingNew")
    # No graph edge leaves an ended status; every non-ended status has a way on.
    for frm, _to, _p in GRAPH:
        assert frm not in ENDED
    for s in set(STATUSES) - ENDED:
        assert any(frm == s for frm, _t, _p in GRAPH), s
