"""core/rules.py: the new-invitation check, the update check, time, views for people, the error table, and the six
decisions of design.md §2 where the documentation contradicts itself. Expected values are written out here from the
documentation, not derived from the module."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from linkdesk.core import rules
from rules_messages import WIRE_FIELDS, message_problems
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
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the invitation
NOW = T0 + timedelta(days=1)
AGENCY_ID, CLIENT_ID, OTHER_AGENCY_ID = 100, 200, 300

STATUSES = [
    "LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
    "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive", "UnlinkFailed",
]
ENDED = {"LinkCanceled", "LinkDeclined", "LinkExpired", "LinkFailed", "Inactive"}
IN_FORCE = {"Active", "UnlinkFailed", "UnlinkCanceled"}
MOVING = {"LinkAccepted", "LinkInProgress", "UnlinkRequested", "UnlinkPending", "UnlinkInProgress"}
BLOCKING = {"LinkPending"} | MOVING | IN_FORCE
ROLES = [41, 203, 16, 100, 33]


def agency(role: int = 41, **kw) -> Actor:
    return Actor(user_id=1000 + role, customer_id=AGENCY_ID, role=Role(role), customer_name="Contoso Agency",
                 user_name=f"agency{role}", **kw)


def client(role: int = 41) -> Actor:
    return Actor(user_id=2000 + role, customer_id=CLIENT_ID, role=Role(role), customer_name="Fabrikam",
                 user_name=f"client{role}")


SA = agency(41)

ACCOUNT_DRAFT = ClientLink(type=LinkType.AccountLink, client_entity_id=2001, managing_customer_id=AGENCY_ID,
                           is_bill_to_client=True, name="Fabrikam shoes", note="Hello")
CUSTOMER_DRAFT = ClientLink(type=LinkType.CustomerLink, client_entity_id=CLIENT_ID, managing_customer_id=AGENCY_ID,
                            customer_link_permission=CustomerLinkPermission.Standard)
ACCOUNT = Account(id=2001, name="Fabrikam Shoes", number="F2001", parent_customer_id=CLIENT_ID, prepaid=False)


def stored(status: str = "Active", link_type: LinkType = LinkType.AccountLink, *, at: datetime = T0,
           managing: int = AGENCY_ID, **kw) -> ClientLink:
    """A link as SearchClientLinks returns it, every element filled in."""
    base = dict(
        managing_customer_id=managing, managing_customer_number=f"C{managing}",
        managing_customer_name={AGENCY_ID: "Contoso Agency", OTHER_AGENCY_ID: "Woodgrove Agency"}.get(managing),
        note="Welcome", name="Shoes link", inviter_email="ann@contoso.example", inviter_name="Ann",
        inviter_phone="555-0100", start_date=T0, status=S(status), suppress_notification=False,
        last_modified_date_time=at, last_modified_by_user_id=11, timestamp="AAAAAAAAB9E=",
    )
    if link_type == LinkType.AccountLink:
        base.update(type=LinkType.AccountLink, client_entity_id=2001, client_entity_number="F2001",
                    client_entity_name="Fabrikam Shoes", is_bill_to_client=True)
    else:
        base.update(type=LinkType.CustomerLink, client_entity_id=CLIENT_ID, client_entity_number="C200",
                    client_entity_name="Fabrikam", customer_link_permission=CustomerLinkPermission.Standard)
    base.update(kw)
    return ClientLink(**base)


def codes(violations) -> list[int]:
    return sorted(v.code for v in violations)


def invite(draft=ACCOUNT_DRAFT, actor=SA, now=NOW, **kw):
    return rules.check_new_invitation(draft, actor=actor, now=now, **kw)


def update(link, requested, actor=SA, party=Party.AGENCY, now=NOW, **kw):
    return rules.check_update(link, requested, actor=actor, party=party, now=now, **kw)


# ---- message quality (the checker lives in rules_messages.py, shared by the rules tests) ------------------------------


def test_the_message_checker_catches_what_it_should():
    assert message_problems("Give the client account id or its number.") == []
    assert message_problems("give it.")
    assert message_problems("Give it")
    assert message_problems("A link in LinkPending cannot be set to UnlinkRequested.")
    assert message_problems("Value None is wrong.")
    assert message_problems("Status.Active is <bad>.")
    assert message_problems("IsBillToClient is required.")
    assert not message_problems("Who pays (IsBillToClient) is required.")
    assert not message_problems("It is LinkPending (waiting for the client).")


# ---- the new invitation check: each rule alone --------------------------------------------------------------------

PREPAID = replace(ACCOUNT, prepaid=True)
OWN_ACCOUNT = replace(ACCOUNT, parent_customer_id=AGENCY_ID)

INVITATION_CASES: list[tuple[str, ClientLink, Actor, dict, list[int]]] = [
    ("account ok", ACCOUNT_DRAFT, SA, {}, []),
    ("customer ok", CUSTOMER_DRAFT, SA, {}, []),
    ("standard user may invite accounts", ACCOUNT_DRAFT, agency(203), {}, []),
    ("type left empty means account link", replace(ACCOUNT_DRAFT, type=None), SA, {}, []),
    ("type as empty string", replace(ACCOUNT_DRAFT, type=""), SA, {}, []),
    ("type as wire string", replace(CUSTOMER_DRAFT, type="CustomerLink"), SA, {}, []),
    ("type unknown", replace(ACCOUNT_DRAFT, type="PartnerLink"), SA, {}, [90013]),
    # exactly one of ClientEntityId / ClientEntityNumber
    ("client by number", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F2001"), SA, {}, []),
    ("client id and number", replace(ACCOUNT_DRAFT, client_entity_number="F2001"), SA, {}, [90002]),
    ("client neither", replace(ACCOUNT_DRAFT, client_entity_id=None), SA, {}, [90003]),
    ("client id empty string", replace(ACCOUNT_DRAFT, client_entity_id=""), SA, {}, [90003]),
    # exactly one of ManagingCustomerId / ManagingCustomerNumber
    ("manager by number", replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C100"),
     SA, {}, []),
    ("manager id and number", replace(ACCOUNT_DRAFT, managing_customer_number="C100"), SA, {}, [90002]),
    ("manager neither", replace(ACCOUNT_DRAFT, managing_customer_id=None), SA, {}, [90003]),
    # IsBillToClient
    ("account bill to agency", replace(ACCOUNT_DRAFT, is_bill_to_client=False), SA, {}, []),
    ("account without bill to", replace(ACCOUNT_DRAFT, is_bill_to_client=None), SA, {}, [90005]),
    ("account bill to not a bool", replace(ACCOUNT_DRAFT, is_bill_to_client="yes"), SA, {}, [90015]),
    ("customer with bill to client", replace(CUSTOMER_DRAFT, is_bill_to_client=True), SA, {}, [90006]),
    ("customer with bill to agency", replace(CUSTOMER_DRAFT, is_bill_to_client=False), SA, {}, [90006]),
    # CustomerLinkPermission
    ("account with permission", replace(ACCOUNT_DRAFT, customer_link_permission="Standard"), SA, {}, [90007]),
    ("account with empty permission", replace(ACCOUNT_DRAFT, customer_link_permission=""), SA, {}, []),
    ("customer administrative", replace(CUSTOMER_DRAFT, customer_link_permission="Administrative"), SA, {}, []),
    ("customer permission enum", replace(CUSTOMER_DRAFT,
                                         customer_link_permission=CustomerLinkPermission.Administrative), SA, {}, []),
    ("customer without permission", replace(CUSTOMER_DRAFT, customer_link_permission=None), SA, {}, []),
    ("customer empty permission", replace(CUSTOMER_DRAFT, customer_link_permission=""), SA, {}, []),
    ("customer permission unknown", replace(CUSTOMER_DRAFT, customer_link_permission="Owner"), SA, {}, [90008]),
    ("customer permission lower case", replace(CUSTOMER_DRAFT, customer_link_permission="standard"), SA, {}, [90008]),
    ("customer permission LinkedEntityOnly", replace(CUSTOMER_DRAFT, customer_link_permission="LinkedEntityOnly"),
     SA, {}, [90008]),
    # Name at most 40 characters
    ("name 40", replace(ACCOUNT_DRAFT, name="n" * 40), SA, {}, []),
    ("name 40 non-ascii", replace(ACCOUNT_DRAFT, name="é" * 40), SA, {}, []),
    ("name 41", replace(ACCOUNT_DRAFT, name="n" * 41), SA, {}, [90004]),
    ("name empty", replace(ACCOUNT_DRAFT, name=""), SA, {}, []),
    # Status and read-only elements
    ("status given", replace(ACCOUNT_DRAFT, status=S.LinkPending), SA, {}, [90009]),
    ("status empty string", replace(ACCOUNT_DRAFT, status=""), SA, {}, []),
    ("client name given", replace(ACCOUNT_DRAFT, client_entity_name="X"), SA, {}, [90009]),
    ("manager name given", replace(ACCOUNT_DRAFT, managing_customer_name="X"), SA, {}, [90009]),
    ("last modified given", replace(ACCOUNT_DRAFT, last_modified_date_time=T0), SA, {}, [90009]),
    ("last modified by given", replace(ACCOUNT_DRAFT, last_modified_by_user_id=5), SA, {}, [90009]),
    ("timestamp given", replace(ACCOUNT_DRAFT, timestamp="AAAA"), SA, {}, [90009]),
    ("settable elements", replace(ACCOUNT_DRAFT, inviter_email="a@b.example", inviter_name="A", inviter_phone="1",
                                  start_date=T0, suppress_notification=True, note="n"), SA, {}, []),
    # id formats
    ("client id as digit text", replace(ACCOUNT_DRAFT, client_entity_id="2001"), SA, {}, [90010]),
    ("client id as text", replace(ACCOUNT_DRAFT, client_entity_id="abc"), SA, {}, [90010]),
    ("client id true", replace(ACCOUNT_DRAFT, client_entity_id=True), SA, {}, [90010]),
    ("client id false", replace(ACCOUNT_DRAFT, client_entity_id=False), SA, {}, [90010]),
    ("client id zero", replace(ACCOUNT_DRAFT, client_entity_id=0), SA, {}, [90010]),
    ("client id negative", replace(ACCOUNT_DRAFT, client_entity_id=-5), SA, {}, [90010]),
    ("client id float", replace(ACCOUNT_DRAFT, client_entity_id=2001.0), SA, {}, [90010]),
    ("client id too large", replace(ACCOUNT_DRAFT, client_entity_id=2**63), SA, {}, [90010]),
    ("client id largest", replace(ACCOUNT_DRAFT, client_entity_id=2**63 - 1), SA, {}, []),
    ("client id one", replace(ACCOUNT_DRAFT, client_entity_id=1), SA, {}, []),
    ("client number with dash", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F20-01"),
     SA, {}, [90010]),
    ("client number with space", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F2 001"),
     SA, {}, [90010]),
    ("client number non-ascii", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="Ф20010"),
     SA, {}, [90010]),
    ("client number too short", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F20"),
     SA, {}, [90010]),
    ("client number too long", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F" * 21),
     SA, {}, [90010]),
    ("client number as int", replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number=20010),
     SA, {}, [90010]),
    ("manager id as text", replace(ACCOUNT_DRAFT, managing_customer_id="abc"), SA, {}, [90010]),
    ("manager id negative", replace(ACCOUNT_DRAFT, managing_customer_id=-100), SA, {}, [90010]),
    ("manager number bad", replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C-100"),
     SA, {}, [90010]),
    # the inviter's role per link type (decision 5)
    ("account by campaign manager", ACCOUNT_DRAFT, agency(16), {}, [1001]),
    ("account by viewer", ACCOUNT_DRAFT, agency(100), {}, [1001]),
    ("account by aggregator", ACCOUNT_DRAFT, agency(33), {}, [1001]),
    ("customer by standard", CUSTOMER_DRAFT, agency(203), {}, [1001]),
    ("customer by campaign manager", CUSTOMER_DRAFT, agency(16), {}, [1001]),
    ("customer by viewer", CUSTOMER_DRAFT, agency(100), {}, [1001]),
    ("customer by aggregator", CUSTOMER_DRAFT, agency(33), {}, [1001]),
    # the managing customer must be the actor's
    ("manager id not mine", replace(ACCOUNT_DRAFT, managing_customer_id=999), SA, {}, [1001]),
    ("manager number not mine", replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C999"),
     agency(41, customer_number="C100"), {}, [1001]),
    ("manager number mine", replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C100"),
     agency(41, customer_number="C100"), {}, []),
    # nobody manages itself
    ("customer link to itself", replace(CUSTOMER_DRAFT, client_entity_id=AGENCY_ID), SA, {}, [90015]),
    ("account of the agency itself", ACCOUNT_DRAFT, SA, {"client_account": OWN_ACCOUNT}, [90015]),
    # prepaid (1471)
    ("prepaid account", ACCOUNT_DRAFT, SA, {"client_account": PREPAID}, [1471]),
    ("post-pay account", ACCOUNT_DRAFT, SA, {"client_account": ACCOUNT}, []),
    ("payment unknown", ACCOUNT_DRAFT, SA, {"client_account": replace(ACCOUNT, prepaid=None)}, []),
    ("prepaid is about accounts only", CUSTOMER_DRAFT, SA, {"client_account": PREPAID}, []),
]


@pytest.mark.parametrize("draft,actor,kw,want", [c[1:] for c in INVITATION_CASES],
                         ids=[c[0] for c in INVITATION_CASES])
def test_each_invitation_rule_alone(draft, actor, kw, want):
    got = invite(draft, actor, **kw)
    assert codes(got) == want, [v.message for v in got]
    for v in got:
        assert v.field is None or v.field in WIRE_FIELDS


def test_invitation_violations_name_their_fields():
    fields = {v.field for v in invite(replace(ACCOUNT_DRAFT, client_entity_number="F2001", is_bill_to_client=None,
                                              customer_link_permission="Standard", name="n" * 41))}
    assert fields == {"ClientEntityId", "IsBillToClient", "CustomerLinkPermission", "Name"}
    (v,) = invite(replace(ACCOUNT_DRAFT, managing_customer_id=None))
    assert v.field == "ManagingCustomerId"
    for attr, wire in [("status", "Status"), ("client_entity_name", "ClientEntityName"),
                       ("managing_customer_name", "ManagingCustomerName"), ("timestamp", "Timestamp"),
                       ("last_modified_date_time", "LastModifiedDateTime"),
                       ("last_modified_by_user_id", "LastModifiedByUserId")]:
        value = T0 if attr == "last_modified_date_time" else (5 if attr.endswith("user_id") else "x")
        (v,) = invite(replace(ACCOUNT_DRAFT, **{attr: value}))
        assert v.field == wire and f"({wire})" in v.message


def test_invitation_messages_say_what_to_do():
    (v,) = invite(replace(ACCOUNT_DRAFT, name="n" * 41))
    assert v.message == "The link name can have at most 40 characters; this one has 41."
    (v,) = invite(replace(ACCOUNT_DRAFT, client_entity_number="F2001"))
    assert v.message == "Give either the client account id or its number, not both."
    (v,) = invite(replace(CUSTOMER_DRAFT, client_entity_id=None))
    assert v.message == "Give the client customer id or its number."
    (v,) = invite(replace(ACCOUNT_DRAFT, client_entity_id="2001"))
    assert v.message == "The client account id was given as text ('2001'); give it as a number."
    (v,) = invite(replace(ACCOUNT_DRAFT, client_entity_id=2**63))
    assert "too large" in v.message
    (v,) = invite(replace(ACCOUNT_DRAFT, client_entity_id=-5))
    assert v.message == "The client account id must be a positive number; -5 is not valid."
    (v,) = invite(replace(ACCOUNT_DRAFT, managing_customer_id=999))
    assert "on behalf of Contoso Agency" in v.message and "999" in v.message
    (v,) = invite(ACCOUNT_DRAFT, client_account=PREPAID)
    assert "Fabrikam Shoes is prepaid" in v.message and "post-pay" in v.message
    (v,) = invite(ACCOUNT_DRAFT, agency(100))
    assert v.message == ("Only a Super Admin or Standard User of Contoso Agency can send account invitations; "
                         "you are a Viewer.")


def test_a_bad_manager_id_is_not_also_reported_as_someone_elses():
    (v,) = invite(replace(ACCOUNT_DRAFT, managing_customer_id="abc"))
    assert v.code == 90010


def test_manager_number_cannot_be_checked_without_the_actors_number():
    assert invite(replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C999")) == []


# ---- blocking links (1410) and other agencies (1424), for every status ------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_an_existing_link_of_the_same_pair_blocks_exactly_when_documented(status):
    existing = stored(status, at=T0)
    got = invite(existing=[existing])
    if status in BLOCKING:
        (v,) = got
        assert v.code == 1410 and v.field == "ClientEntityId"
        assert f"in {status} (" in v.message and "since 2 Mar 2026" in v.message
        assert v.message.startswith("Account Fabrikam Shoes (F2001) already has a link with your agency")
        assert not message_problems(v.message)
    else:
        assert got == []


@pytest.mark.parametrize("status", STATUSES)
def test_a_customer_link_of_the_same_pair_blocks_a_customer_invitation(status):
    got = invite(CUSTOMER_DRAFT, existing=[stored(status, LinkType.CustomerLink)])
    assert codes(got) == ([1410] if status in BLOCKING else [])


def test_blocking_advice_fits_the_status():
    (v,) = invite(existing=[stored("LinkPending")])
    assert v.message.endswith("cancel it or wait for the client to answer.")
    (v,) = invite(existing=[stored("UnlinkFailed")])
    assert v.message.endswith("it is already linked; unlink it first if you want a new link.")
    (v,) = invite(existing=[stored("LinkInProgress")])
    assert v.message.endswith("wait until it has finished moving.")
    (v,) = invite(existing=[stored("Active", last_modified_date_time=None)])
    assert "since" not in v.message and not message_problems(v.message)


def test_a_pending_link_past_30_days_no_longer_blocks():
    at = NOW - timedelta(days=30)
    assert invite(existing=[stored("LinkPending", at=at)]) == []
    assert invite(existing=[stored("LinkPending", at=at - timedelta(days=5))]) == []
    assert codes(invite(existing=[stored("LinkPending", at=at + timedelta(seconds=1))])) == [1410]


def test_links_of_other_pairs_do_not_block():
    assert invite(existing=[stored("Active", client_entity_id=2002)]) == []
    assert invite(existing=[stored("Active", LinkType.CustomerLink)]) == []  # other type
    assert invite(CUSTOMER_DRAFT, existing=[stored("Active")]) == []


def test_a_blocking_link_names_its_managing_customer_when_it_is_not_the_actors():
    draft = replace(ACCOUNT_DRAFT, managing_customer_id=OTHER_AGENCY_ID)
    got = invite(draft, existing=[stored("LinkPending", managing=OTHER_AGENCY_ID)])
    assert codes(got) == [1001, 1410]
    assert "already has a link with Woodgrove Agency in LinkPending" in got[1].message


def test_the_pair_is_found_by_number_too():
    draft = replace(ACCOUNT_DRAFT, client_entity_id=None, client_entity_number="F2001")
    assert codes(invite(draft, existing=[stored("LinkPending")])) == [1410]
    draft = replace(ACCOUNT_DRAFT, managing_customer_id=None, managing_customer_number="C100")
    assert codes(invite(draft, existing=[stored("LinkPending")])) == [1410]
    assert invite(draft, existing=[stored("LinkPending", managing_customer_number="C555")]) == []
    draft = replace(ACCOUNT_DRAFT, managing_customer_id=None)  # falls back to the actor's customer
    assert codes(invite(draft, existing=[stored("LinkPending")])) == [1410, 90003]


@pytest.mark.parametrize("status", STATUSES)
def test_another_agency_managing_the_account_means_1424(status):
    got = invite(existing=[stored(status, managing=OTHER_AGENCY_ID)])
    if status in IN_FORCE | MOVING:  # established, or being linked/unlinked: managed by that agency
        (v,) = got
        assert v.code == 1424 and "Woodgrove Agency" in v.message
        assert not message_problems(v.message)
    else:  # a mere pending invitation of another agency, or an ended link: no obstacle
        assert got == []


def test_another_agency_wording():
    (v,) = invite(existing=[stored("Active", managing=OTHER_AGENCY_ID)])
    assert v.message == ("Account Fabrikam Shoes (F2001) is already managed by another agency (Woodgrove Agency); "
                         "the client must unlink it there first.")
    (v,) = invite(existing=[stored("LinkAccepted", managing=OTHER_AGENCY_ID)])
    assert "is being linked to another agency (Woodgrove Agency)" in v.message
    (v,) = invite(existing=[stored("Active", managing=555, managing_customer_name=None)])
    assert "(customer 555)" in v.message


def test_other_agencies_do_not_block_customer_links():
    assert invite(CUSTOMER_DRAFT, existing=[stored("Active", LinkType.CustomerLink, managing=OTHER_AGENCY_ID)]) == []


# ---- combined: every violation, not just the first -------------------------------------------------------------------


def test_a_draft_breaking_every_rule_gets_every_violation():
    draft = ClientLink(type=LinkType.CustomerLink, client_entity_id=CLIENT_ID, client_entity_number="C200",
                       is_bill_to_client=True, customer_link_permission="Owner", name="n" * 41,
                       status=S.Active, timestamp="x", client_entity_name="n")
    got = invite(draft, agency(100))
    assert codes(got) == sorted([90002, 90003, 90006, 90008, 90004, 90009, 90009, 90009, 1001])
    assert len({v.message for v in got}) == len(got)


def test_an_account_draft_with_context_problems_gets_them_all():
    draft = replace(ACCOUNT_DRAFT, is_bill_to_client=None, customer_link_permission="Standard",
                    client_entity_id="x2001")
    got = invite(draft, agency(16), client_account=PREPAID)
    assert codes(got) == sorted([90010, 90005, 90007, 1001, 1471])
    got = invite(ACCOUNT_DRAFT, client_account=PREPAID,
                 existing=[stored("LinkPending"), stored("Active", managing=OTHER_AGENCY_ID)])
    assert codes(got) == [1410, 1424, 1471]


# ---- the update check -------------------------------------------------------------------------------------------------

#: Every element an update must send back unchanged (full-update semantics), with a different value for each.
CHANGES = {
    "type": LinkType.CustomerLink, "client_entity_id": 2002, "client_entity_number": "F2002",
    "client_entity_name": "Other", "managing_customer_id": 101, "managing_customer_number": "C101",
    "managing_customer_name": "Other Agency", "name": "Renamed", "inviter_email": "bob@example.org",
    "inviter_name": "Bob", "inviter_phone": "555-0199", "is_bill_to_client": False,
    "start_date": T0 + timedelta(hours=1), "suppress_notification": True,
    "customer_link_permission": CustomerLinkPermission.Administrative, "client_entity_customer_number": "C999",
}
WIRE = {"type": "Type", "client_entity_id": "ClientEntityId", "client_entity_number": "ClientEntityNumber",
        "client_entity_name": "ClientEntityName", "managing_customer_id": "ManagingCustomerId",
        "managing_customer_number": "ManagingCustomerNumber", "managing_customer_name": "ManagingCustomerName",
        "name": "Name", "inviter_email": "InviterEmail", "inviter_name": "InviterName",
        "inviter_phone": "InviterPhone", "is_bill_to_client": "IsBillToClient", "start_date": "StartDate",
        "suppress_notification": "SuppressNotification", "customer_link_permission": "CustomerLinkPermission",
        "client_entity_customer_number": "ClientEntityCustomerNumber"}


@pytest.mark.parametrize("attr", sorted(CHANGES))
def test_every_read_only_element_refuses_a_change_with_3083(attr):
    link = stored("Active")
    for requested_status in (S.Active, S.UnlinkRequested):
        (v,) = update(link, link.replace(status=requested_status, **{attr: CHANGES[attr]}))
        assert (v.code, v.field) == (3083, WIRE[attr])
        assert f"({WIRE[attr]}) cannot be changed by an update" in v.message
        assert not message_problems(v.message)


def test_several_changed_elements_are_each_reported():
    link = stored("Active")
    got = update(link, link.replace(name="x", inviter_name="y", start_date=None))
    assert [(v.code, v.field) for v in got] == [(3083, "Name"), (3083, "InviterName"), (3083, "StartDate")]


def test_elements_left_out_of_a_full_update_count_as_changed():
    link = stored("Active")
    (v,) = update(link, link.replace(is_bill_to_client=None))
    assert v.field == "IsBillToClient"


def test_equal_values_in_other_shapes_are_not_changes():
    link = stored("Active", inviter_phone=None, client_entity_customer_number="")
    naive = T0.replace(tzinfo=None)
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    for requested in (
        link.replace(start_date=naive),  # the SDK example strips tzinfo before sending
        link.replace(start_date=plus_two),
        link.replace(inviter_phone=""),
        link.replace(client_entity_customer_number=None),
        link.replace(type=None),
        link.replace(type=""),
        link.replace(type="AccountLink"),
        link.replace(suppress_notification=None),
        link.replace(status="Active"),
        link.replace(note=None),  # no value: the note is not changed
        link.replace(note="A new note"),
        link.replace(last_modified_date_time=NOW, last_modified_by_user_id=99),  # set by the service; ignored
        link.replace(forward_compatibility_map=(("k", "v"),)),
    ):
        assert update(link, requested) == [], requested
    customer = stored("Active", LinkType.CustomerLink)
    assert update(customer, customer.replace(customer_link_permission="Standard")) == []
    blank_ts = link.replace(timestamp="")
    assert update(blank_ts, blank_ts.replace(timestamp=None)) == []


def test_a_naive_datetime_one_hour_off_is_a_change():
    link = stored("Active")
    (v,) = update(link, link.replace(start_date=(T0 + timedelta(hours=1)).replace(tzinfo=None)))
    assert v.field == "StartDate"


def test_timestamp_mismatch_is_209_alone_or_with_other_problems():
    link = stored("Active")
    (v,) = update(link, link.replace(status=S.UnlinkRequested, timestamp="AAAAAAAAB9F="))
    assert (v.code, v.field) == (209, "Timestamp")
    assert not message_problems(v.message)
    (v,) = update(link, link.replace(timestamp=None))
    assert v.code == 209
    got = update(stored("Inactive"), stored("Inactive").replace(timestamp="old", name="x"))
    assert codes(got) == [209, 3083, 90012]


def test_note_only_updates():
    link = stored("Active")
    assert update(link, link.replace(note="Changed")) == []
    assert update(stored("LinkPending"), stored("LinkPending").replace(note="Changed")) == []
    (v,) = update(link, link.replace(note="Changed"), actor=agency(100))
    assert v.code == 1001 and "change account links" in v.message
    (v,) = update(link, link.replace(note="Changed"), actor=client(), party=Party.CLIENT)
    assert v.code == 90001
    (v,) = update(stored("Inactive"), stored("Inactive").replace(note="Changed"))
    assert v.code == 90012


def test_status_is_required_on_update():
    link = stored("Active")
    for blank in (None, ""):
        (v,) = update(link, link.replace(status=blank))
        assert (v.code, v.field) == (90014, "Status")
        assert not message_problems(v.message)


def test_accept_cooldown_boundary():
    link = stored("LinkPending", at=T0)
    accept = link.replace(status=S.LinkAccepted)
    kw = dict(actor=client(), party=Party.CLIENT)
    (v,) = update(link, accept, now=T0 + timedelta(hours=5, minutes=59), **kw)
    assert (v.code, v.field) == (90011, "Status")
    assert v.message == ("The invitation was sent at 2 Mar 2026 09:00 UTC and can be accepted from "
                         "2 Mar 2026 15:00 UTC, 6 hours later.")
    assert codes(update(link, accept, now=T0 + timedelta(hours=6) - timedelta(microseconds=1), **kw)) == [90011]
    assert update(link, accept, now=T0 + timedelta(hours=6), **kw) == []
    # declining is possible at once (the delay is only for accepting)
    assert update(link, link.replace(status=S.LinkDeclined), now=T0 + timedelta(minutes=1), **kw) == []
    # the agency's cancel is not delayed either
    assert update(link, link.replace(status=S.LinkCanceled), now=T0 + timedelta(minutes=1)) == []


def test_cooldown_and_expiry_use_the_invitation_time_when_given():
    link = stored("LinkPending", at=T0 + timedelta(hours=5))  # e.g. the note was edited later
    accept = link.replace(status=S.LinkAccepted)
    kw = dict(actor=client(), party=Party.CLIENT)
    assert codes(update(link, accept, now=T0 + timedelta(hours=7), **kw)) == [90011]
    assert update(link, accept, now=T0 + timedelta(hours=7), invited_at=T0, **kw) == []
    assert codes(update(link, accept, now=T0 + timedelta(days=30), invited_at=T0, **kw)) == [90012]
    # unknown invitation time: nothing to hold the acceptance back
    unknown = link.replace(last_modified_date_time=None)
    assert update(unknown, unknown.replace(status=S.LinkAccepted), now=T0, **kw) == []


def test_an_expired_pending_link_refuses_every_update():
    link = stored("LinkPending", at=T0)
    at_expiry = T0 + timedelta(days=30)
    for target in STATUSES:
        for who, party in ((SA, Party.AGENCY), (client(), Party.CLIENT)):
            (v,) = update(link, link.replace(status=target), actor=who, party=party, now=at_expiry)
            assert v.code == 90012
            assert v.message == ("The invitation to account Fabrikam Shoes (F2001) expired unanswered on "
                                 "1 Apr 2026 (LinkExpired), 30 days after it was sent; it cannot change, so send a "
                                 "new invitation instead.")
    just_before = at_expiry - timedelta(seconds=1)
    assert update(link, link.replace(status=S.LinkAccepted), actor=client(), party=Party.CLIENT, now=just_before) == []


def test_unknown_statuses():
    link = stored("Active").replace(status="LinkSuspended")
    (v,) = update(link, link.replace(status=S.UnlinkRequested))
    assert v.code == 90001
    assert v.message == ("Only an active link can be unlinked; this one is 'LinkSuspended' (a status this version of "
                         "linkdesk does not know).")
    (v,) = update(stored("Active"), stored("Active").replace(status="Frozen"))
    assert v.message == "There is no client-link status called 'Frozen'."


# ---- the six (seven) decisions of design.md §2 --------------------------------------------------------------------


def test_decision_1_timestamp_is_an_optimistic_concurrency_token():
    link = stored("LinkPending")
    assert update(link, link.replace(status=S.LinkCanceled)) == []
    stale = link.replace(status=S.LinkCanceled, timestamp="AAAAAAAAB8A=")
    (v,) = update(link, stale)
    assert v.code == rules.E_TIMESTAMP == 209
    assert rules.error_info(209).symbol == "TimestampNotMatch" and rules.error_info(209).documented


@pytest.mark.parametrize("status", ["UnlinkFailed", "UnlinkCanceled"])
def test_decision_2_unlink_failed_and_canceled_behave_like_active(status):
    link = stored(status)
    assert update(link, link.replace(status=S.UnlinkRequested)) == []
    assert codes(invite(existing=[link])) == [1410]
    assert codes(invite(existing=[stored(status, managing=OTHER_AGENCY_ID)])) == [1424]
    for perspective in Perspective:
        assert rules.stage(link, perspective, NOW) == Stage.ACTIVE
    allowed = {o.action for o in rules.available_actions(link, SA, Party.AGENCY, NOW) if o.allowed}
    assert allowed == {rules.Action.UNLINK}
    assert "still linked" in rules.describe_status(status)
    assert rules.waiting_reason(link, NOW) is None


def test_decision_2_unlink_failure_is_reported_as_unlink_failed_not_active():
    assert rules.next_statuses(S.UnlinkInProgress) == [S.Inactive, S.UnlinkFailed]
    assert all(t.to != S.UnlinkCanceled for t in rules.LIFECYCLE)  # reserved: never emitted


def test_decision_3_pending_expires_30_days_after_the_invitation():
    assert rules.EXPIRY == timedelta(days=30)
    link = stored("LinkPending", at=T0)
    assert not rules.is_expired(T0, T0 + timedelta(days=30) - timedelta(microseconds=1))
    assert rules.is_expired(T0, T0 + timedelta(days=30))
    assert rules.effective_status(link, T0 + timedelta(days=30)) == S.LinkExpired
    assert rules.effective_status(link, T0 + timedelta(days=29, hours=23)) == S.LinkPending
    assert invite(existing=[link], now=T0 + timedelta(days=30)) == []
    assert rules.stage(link, Perspective.SENT, T0 + timedelta(days=30)) == Stage.ENDED


def test_decision_4_acceptance_cooldown_is_6_hours():
    assert rules.ACCEPT_COOLDOWN == timedelta(hours=6)
    assert rules.accept_possible_at(T0) == T0 + timedelta(hours=6)
    link = stored("LinkPending", at=T0)
    early = {o.action: o for o in rules.available_actions(link, client(), Party.CLIENT, T0 + timedelta(hours=1))}
    assert not early[rules.Action.ACCEPT].allowed and "15:00 UTC" in early[rules.Action.ACCEPT].reason
    assert early[rules.Action.DECLINE].allowed


def test_decision_5_who_may_act_and_how_a_refusal_is_worded():
    (v,) = invite(CUSTOMER_DRAFT, agency(100))
    assert v.message == ("Only a Super Admin of Contoso Agency can send customer-level invitations; "
                         "you are a Viewer.")
    (v,) = invite(CUSTOMER_DRAFT, agency(203))
    assert v.message.endswith("you are a Standard User.")
    (v,) = invite(ACCOUNT_DRAFT, agency(16))
    assert v.message.endswith("you are an Advertiser Campaign Manager.")
    link = stored("LinkPending")
    (v,) = update(link, link.replace(status=S.LinkAccepted), actor=client(100), party=Party.CLIENT)
    assert v.message == "Only a Super Admin of Fabrikam can accept this invitation; you are a Viewer."
    customer = stored("Active", LinkType.CustomerLink)
    (v,) = update(customer, customer.replace(status=S.UnlinkRequested), actor=agency(203))
    assert v.message == "Only a Super Admin of Contoso Agency can unlink customer-level links; you are a Standard User."
    (v,) = update(link, link.replace(status=S.LinkCanceled), actor=agency(33))
    assert v.message == ("Only a Super Admin or Standard User of Contoso Agency can cancel account invitations; "
                         "you are an Aggregator.")
    anonymous = Actor(user_id=7, customer_id=AGENCY_ID, role=Role.Viewer)
    assert rules.may_send_invitation(anonymous, LinkType.CustomerLink) == (
        "Only a Super Admin of customer 100 can send customer-level invitations; you are a Viewer.")
    assert rules.may_send_invitation(SA, LinkType.CustomerLink) is None
    assert rules.may_send_invitation(agency(203), LinkType.AccountLink) is None


def test_decision_6_batch_and_page_sizes():
    assert rules.BATCH_MAX == 10
    assert rules.PAGE_MAX == 100
    assert rules.error_info(rules.E_BATCH_SIZE).code == 3024
    assert rules.error_info(rules.E_PAGE_INFO).code == 3080
    assert rules.NAME_MAX == 40


def test_decision_7_project_codes_are_separate_from_documented_ones():
    documented = {e.code for e in rules.DOCUMENTED_CODES}
    own = {e.code for e in rules.PROJECT_CODES}
    assert not documented & own
    assert max(documented) < rules.OWN_CODE_BASE <= min(own)
    for e in rules.PROJECT_CODES:
        assert not e.documented and e.origin == "linkdesk (no documented code)"
    for e in rules.DOCUMENTED_CODES:
        assert e.documented and e.origin == "Microsoft Advertising"
    # every failure the documentation names without a number has a project code
    symbols = {e.symbol for e in rules.PROJECT_CODES}
    assert {"InvalidStatusTransition", "IdAndNumberBothSet", "LinkNameTooLong", "ClientLinkFieldInvalid",
            "LinkPairMismatch", "AcceptTooSoon"} <= symbols


# ---- the error table --------------------------------------------------------------------------------------------------

#: client-links-api.md §1.8, code -> documented symbolic name ("" where the docs say n/a).
DOCUMENTED = {
    0: "InternalError", 100: "NullRequest", 105: "InvalidCredentials", 106: "UserIsNotAuthorized",
    109: "AuthenticationTokenExpired", 116: "RequestMissingHeaders", 117: "CallRateExceeded",
    120: "UserLoginAccessDenied", 201: "ApiInputValidationError", 203: "NullParameter", 206: "NullArrayArgument",
    209: "TimestampNotMatch", 210: "EntityNotExistent", 211: "NameTooLong", 474: "", 1001: "", 1410: "", 1424: "",
    1471: "", 1472: "", 2108: "", 3024: "", 3030: "", 3080: "", 3083: "", 3087: "",
}


def test_every_documented_code_is_in_the_table():
    for code, symbol in DOCUMENTED.items():
        e = rules.ERROR_CODES[code]
        assert e.code == code and e.documented
        if symbol:
            assert e.symbol == symbol
    assert {e.code for e in rules.DOCUMENTED_CODES} == set(DOCUMENTED)


def test_project_codes_are_marked_and_do_not_collide():
    all_codes = [e.code for e in rules.DOCUMENTED_CODES + rules.PROJECT_CODES]
    assert len(all_codes) == len(set(all_codes)) == len(rules.ERROR_CODES)
    symbols = [e.symbol for e in rules.DOCUMENTED_CODES + rules.PROJECT_CODES]
    assert len(symbols) == len(set(symbols))
    for code, e in rules.ERROR_CODES.items():
        assert e.documented == (code in DOCUMENTED)
        assert e.documented or code >= 90000


def test_every_code_constant_has_an_entry():
    names = [n for n in dir(rules) if n.startswith("E_")]
    assert len(names) >= 35
    for n in names:
        assert getattr(rules, n) in rules.ERROR_CODES, n
    assert (rules.E_DUPLICATE, rules.E_OTHER_AGENCY, rules.E_PREPAID, rules.E_IN_PROGRESS,
            rules.E_NOT_UPDATABLE) == (1410, 1424, 1471, 1472, 3083)


def test_error_texts_are_sentences():
    for e in rules.ERROR_CODES.values():
        assert e.meaning[0].isupper() and e.meaning.endswith("."), e
        assert not message_problems(e.user_text), (e.code, message_problems(e.user_text))


def test_error_info_on_strings_and_unknown_codes():
    assert rules.error_info("1410") is rules.ERROR_CODES[1410]
    assert rules.error_info(" 1472 ") is rules.ERROR_CODES[1472]
    assert rules.error_info(90004) is rules.ERROR_CODES[90004]
    unknown = rules.error_info(4242)
    assert (unknown.code, unknown.symbol, unknown.documented) == (4242, "Unknown", True)
    assert unknown.user_text == "Microsoft Advertising refused the request with error code 4242."
    assert not rules.error_info(99999).documented
    for weird in (None, "", "abc", True, "12.5"):
        e = rules.error_info(weird)
        assert e.code == -1 and e.symbol == "Unknown"
        assert not message_problems(e.user_text) and not message_problems(e.meaning), e
    assert "no error code" in rules.error_info(None).user_text
    assert "(abc)" in rules.error_info("abc").user_text


def test_violation_info():
    v = rules.Violation("Name", 90004, "Too long.")
    assert v.info.symbol == "LinkNameTooLong"


# ---- time -------------------------------------------------------------------------------------------------------------


def test_expires_at_and_accept_possible_at():
    assert rules.expires_at(T0) == datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    assert rules.expires_at(T0.replace(tzinfo=None)) == rules.expires_at(T0)  # naive is UTC
    assert rules.expires_at(T0.astimezone(timezone(timedelta(hours=-5)))) == rules.expires_at(T0)
    assert rules.accept_possible_at(T0) == datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize("after,left", [
    (timedelta(0), 30),
    (timedelta(seconds=1), 29),
    (timedelta(days=23), 7),
    (timedelta(days=23, seconds=1), 6),
    (timedelta(days=29), 1),
    (timedelta(days=29, seconds=1), 0),  # the last day
    (timedelta(days=30) - timedelta(microseconds=1), 0),
    (timedelta(days=30), -1),  # expired at this very instant
    (timedelta(days=31), -1),
    (timedelta(days=31, seconds=1), -2),
    (-timedelta(days=1), 31),  # a clock behind the invitation
])
def test_days_left_boundaries(after, left):
    assert rules.days_left(T0, T0 + after) == left
    assert (left < 0) == rules.is_expired(T0, T0 + after)


def test_days_left_and_is_expired_without_an_invitation_time():
    assert rules.days_left(None, NOW) is None
    assert rules.is_expired(None, NOW + timedelta(days=400)) is False


def test_invited_at():
    assert rules.invited_at(stored("LinkPending", at=T0.replace(tzinfo=None))) == T0
    assert rules.invited_at(stored("Active")) is None
    assert rules.invited_at(stored("LinkPending", last_modified_date_time=None)) is None


def test_effective_status():
    pending = stored("LinkPending", at=T0)
    late = T0 + timedelta(days=30)
    assert rules.effective_status(pending, late) == S.LinkExpired
    assert rules.effective_status(pending, late, T0 + timedelta(days=1)) == S.LinkPending  # invitation time given
    assert rules.effective_status(pending.replace(last_modified_date_time=None), late) == S.LinkPending
    for s in STATUSES:
        if s != "LinkPending":
            assert rules.effective_status(stored(s, at=T0), late) == s


# ---- views: stage -----------------------------------------------------------------------------------------------------

#: Moments after the invitation at which the stage of a pending link changes (design.md §5: pending ones expiring within
#: 7 days need action).
MOMENTS = {
    "fresh": timedelta(hours=1),
    "just outside the 7-day window": timedelta(days=23) - timedelta(seconds=1),
    "7 days left": timedelta(days=23),
    "last second": timedelta(days=30) - timedelta(seconds=1),
    "expired": timedelta(days=30),
    "long expired": timedelta(days=90),
}


def expected_stage(status: str, perspective: Perspective, after: timedelta) -> Stage:
    if status in ENDED:
        return Stage.ENDED
    if status == "LinkPending":
        if after >= timedelta(days=30):
            return Stage.ENDED
        if perspective == Perspective.RECEIVED or timedelta(days=30) - after <= timedelta(days=7):
            return Stage.NEEDS_ACTION
        return Stage.PENDING
    if status in IN_FORCE:
        return Stage.ACTIVE
    return Stage.IN_PROGRESS


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("perspective", list(Perspective))
@pytest.mark.parametrize("status", STATUSES)
def test_stage(status, perspective, moment):
    after = MOMENTS[moment]
    link = stored(status, at=T0)
    assert rules.stage(link, perspective, T0 + after) == expected_stage(status, perspective, after)
    # the invitation time can be given instead of read from the link
    blind = link.replace(last_modified_date_time=None)
    assert rules.stage(blind, perspective, T0 + after, invited_at=T0) == expected_stage(status, perspective, after)


def test_stage_without_an_invitation_time_and_of_unknown_statuses():
    pending = stored("LinkPending", last_modified_date_time=None)
    assert rules.stage(pending, Perspective.SENT, NOW + timedelta(days=100)) == Stage.PENDING
    assert rules.stage(stored("Active").replace(status="Frozen"), Perspective.SENT, NOW) == Stage.IN_PROGRESS


# ---- views: available actions -----------------------------------------------------------------------------------------


def agency_role_may(role: int, link_type: LinkType) -> bool:
    return role in (41, 203) if link_type == LinkType.AccountLink else role == 41


def expected_actions(status: str, party: Party | None, role: int, link_type: LinkType) -> set[str]:
    out = set()
    if status == "LinkPending":
        if party == Party.CLIENT and role == 41:
            out |= {"accept", "decline"}
        if party == Party.AGENCY and agency_role_may(role, link_type):
            out.add("cancel")
    if status in IN_FORCE and party == Party.AGENCY and agency_role_may(role, link_type):
        out.add("unlink")
    if status in ENDED and party == Party.AGENCY and agency_role_may(role, link_type):
        out.add("reinvite")
    return out


def actor_for(party: Party | None, role: int) -> Actor:
    if party == Party.AGENCY:
        return agency(role)
    if party == Party.CLIENT:
        return client(role)
    return Actor(user_id=3000 + role, customer_id=OTHER_AGENCY_ID, role=Role(role), customer_name="Woodgrove Agency")


@pytest.mark.parametrize("link_type", [LinkType.AccountLink, LinkType.CustomerLink])
@pytest.mark.parametrize("status", STATUSES)
def test_available_actions_are_exactly_the_allowed_set(status, link_type):
    for party in (Party.AGENCY, Party.CLIENT, None):
        for role in ROLES:
            link = stored(status, link_type)
            options = rules.available_actions(link, actor_for(party, role), party, NOW)
            assert [o.action.value for o in options] == ["accept", "decline", "cancel", "unlink", "reinvite"]
            allowed = {o.action.value for o in options if o.allowed}
            assert allowed == expected_actions(status, party, role, link_type), (party, role)
            for o in options:
                if o.allowed:
                    assert o.reason is None
                else:
                    assert o.reason and not message_problems(o.reason), (o, message_problems(o.reason or ""))


def test_available_actions_follow_the_clock():
    link = stored("LinkPending", at=T0)
    def allowed(actor, party, now):
        return {o.action.value for o in rules.available_actions(link, actor, party, now) if o.allowed}
    assert allowed(client(), Party.CLIENT, T0 + timedelta(hours=1)) == {"decline"}
    assert allowed(client(), Party.CLIENT, T0 + timedelta(hours=6)) == {"accept", "decline"}
    assert allowed(client(), Party.CLIENT, T0 + timedelta(days=30)) == set()
    assert allowed(SA, Party.AGENCY, T0 + timedelta(days=30)) == {"reinvite"}
    options = rules.available_actions(link, SA, Party.AGENCY, T0 + timedelta(days=30))
    assert options[2].reason.startswith("The invitation to account Fabrikam Shoes (F2001) expired unanswered on 1 Apr")


def test_refusal_reasons_of_actions():
    reasons = {o.action.value: o.reason for o in rules.available_actions(stored("LinkPending"), SA, Party.AGENCY, NOW)}
    assert reasons["unlink"] == "Only an active link can be unlinked; this one is LinkPending (waiting for the client)."
    assert reasons["accept"] == "Only the client can accept this invitation; you are on the agency side."
    assert reasons["reinvite"] == ("This link is LinkPending (waiting for the client); a new invitation is possible "
                                   "only after it has ended.")
    reasons = {o.action.value: o.reason
               for o in rules.available_actions(stored("UnlinkRequested"), SA, Party.AGENCY, NOW)}
    assert reasons["unlink"] == "This link is already UnlinkRequested (unlink requested)."
    reasons = {o.action.value: o.reason
               for o in rules.available_actions(stored("LinkAccepted"), client(), Party.CLIENT, NOW)}
    assert reasons["accept"] == "This link is already LinkAccepted (accepted, about to be linked)."
    reasons = {o.action.value: o.reason
               for o in rules.available_actions(stored("Inactive"), client(), Party.CLIENT, NOW)}
    assert reasons["reinvite"] == "Only the agency that sent the invitation can re-invite."
    reasons = {o.action.value: o.reason
               for o in rules.available_actions(stored("Inactive", LinkType.CustomerLink), agency(203), Party.AGENCY,
                                                NOW)}
    assert reasons["reinvite"].endswith("you are a Standard User.")


def test_reinvite_is_refused_while_a_newer_link_of_the_pair_is_open():
    ended = stored("LinkDeclined")
    newer = stored("LinkPending", at=NOW)
    options = {o.action: o for o in rules.available_actions(ended, SA, Party.AGENCY, NOW, existing=[ended, newer])}
    assert not options[rules.Action.REINVITE].allowed
    assert "already has a link with your agency in LinkPending" in options[rules.Action.REINVITE].reason


def test_reinvite_draft_repeats_the_terms():
    account = rules.reinvite_draft(stored("LinkExpired", is_bill_to_client=False))
    assert account == ClientLink(type=LinkType.AccountLink, client_entity_id=2001, managing_customer_id=AGENCY_ID,
                                 note="Welcome", name="Shoes link", is_bill_to_client=False)
    assert invite(account) == []
    customer = rules.reinvite_draft(stored("Inactive", LinkType.CustomerLink))
    assert customer.customer_link_permission == CustomerLinkPermission.Standard and customer.is_bill_to_client is None
    assert invite(customer) == []


def test_action_labels_targets_and_consequences():
    for action in rules.Action:
        assert action.label and action.target in S
        text = rules.ACTION_CONSEQUENCES[action]
        assert not message_problems(text.split(". ")[-1]) and text.endswith(".")
    assert rules.Action.UNLINK.target == S.UnlinkRequested and rules.Action.REINVITE.target == S.LinkPending


# ---- views: waiting reasons and status texts -------------------------------------------------------------------------


def test_waiting_statuses():
    assert {s.value for s in rules.WAITING} == MOVING


@pytest.mark.parametrize("status", STATUSES)
def test_waiting_reason(status):
    link = stored(status)
    reason = rules.waiting_reason(link, NOW)
    if status in MOVING:  # the four waiting statuses of design.md §5, and the agency's instant UnlinkRequested
        assert reason and not message_problems(reason), (reason, message_problems(reason or ""))
    else:
        assert reason is None


def test_waiting_reasons_mention_the_start_date_only_when_it_is_ahead():
    later = NOW + timedelta(days=3)
    for status in ("LinkInProgress", "UnlinkInProgress"):
        assert "6 Mar 2026" in rules.waiting_reason(stored(status, start_date=later), NOW)
        assert "start date" not in rules.waiting_reason(stored(status, start_date=T0), NOW)
        assert "start date" not in rules.waiting_reason(stored(status, start_date=None), NOW)
        assert "1472" in rules.waiting_reason(stored(status), NOW)
    assert "accepted" in rules.waiting_reason(stored("LinkAccepted"), NOW)
    assert "still manages" in rules.waiting_reason(stored("UnlinkPending"), NOW)
    assert rules.waiting_reason(stored("UnlinkRequested"), NOW).startswith("The unlink was requested")


@pytest.mark.parametrize("status", STATUSES)
def test_status_text_for_every_status(status):
    text = rules.status_text(status)
    assert text == rules.status_text(S(status))
    assert not message_problems(text), message_problems(text)


def test_status_text_distinct_and_for_unknown():
    assert len({rules.status_text(s) for s in STATUSES}) == 14
    assert rules.status_text("LinkSuspended") == (
        "The status 'LinkSuspended' is unknown to this version of linkdesk (probably newer).")
    assert rules.status_text(None) == "No status."
    assert not message_problems(rules.status_text("x" * 100))


def test_describe_status():
    assert rules.describe_status(S.LinkPending) == "LinkPending (waiting for the client)"
    assert rules.describe_status("Active") == "Active (linked)"
    assert rules.describe_status(None) == "without a status"
    assert rules.describe_status("Odd") == "'Odd' (a status this version of linkdesk does not know)"
    assert set(rules.STATUS_SHORT) == set(S)


# ---- helpers used by the screens --------------------------------------------------------------------------------------


def test_party_of():
    account = stored("Active")
    assert rules.party_of(SA, account, CLIENT_ID) == Party.AGENCY
    assert rules.party_of(client(), account, CLIENT_ID) == Party.CLIENT
    assert rules.party_of(client(), account) is None  # an account link's client is its parent, which the caller knows
    assert rules.party_of(actor_for(None, 41), account, CLIENT_ID) is None
    customer = stored("Active", LinkType.CustomerLink)
    assert rules.party_of(client(), customer) == Party.CLIENT
    assert rules.party_of(SA, stored("Active", managing_customer_id=None), CLIENT_ID) is None


def test_entity_label_and_field_label():
    assert rules.entity_label(stored("Active")) == "account Fabrikam Shoes (F2001)"
    assert rules.entity_label(stored("Active", client_entity_number=None)) == "account Fabrikam Shoes (2001)"
    assert rules.entity_label(stored("Active", client_entity_name=None)) == "account F2001"
    assert rules.entity_label(ClientLink(type=LinkType.CustomerLink)) == "customer (unknown)"
    assert rules.field_label("IsBillToClient") == "who pays (IsBillToClient)"
    assert rules.field_label("client_entity_id", LinkType.CustomerLink) == "the client customer id (ClientEntityId)"
    assert rules.field_label("Whatever") == "Whatever"
    from linkdesk.core.model import CLIENT_LINK_WIRE

    for attr, wire in CLIENT_LINK_WIRE.items():
        assert rules.field_label(attr).endswith(f"({wire})")


def test_every_message_of_this_file_is_a_sentence():
    """Collect the messages of the invitation table and of a sweep of updates, actions and views."""
    messages: set[str] = set()
    for _id, draft, actor, kw, _want in INVITATION_CASES:
        messages |= {v.message for v in invite(draft, actor, **kw)}
    for status in STATUSES:
        for managing in (AGENCY_ID, OTHER_AGENCY_ID):
            for t in (LinkType.AccountLink, LinkType.CustomerLink):
                link = stored(status, t, managing=managing)
                draft = ACCOUNT_DRAFT if t == LinkType.AccountLink else CUSTOMER_DRAFT
                messages |= {v.message for v in invite(draft, existing=[link])}
                for attr, value in CHANGES.items():
                    messages |= {v.message for v in update(link, link.replace(**{attr: value}))}
                for moment in MOMENTS.values():
                    for party in (Party.AGENCY, Party.CLIENT, None):
                        for role in ROLES:
                            for o in rules.available_actions(link, actor_for(party, role), party, T0 + moment):
                                messages |= {o.reason} if o.reason else set()
                messages |= {rules.waiting_reason(link, NOW) or "Not waiting.", rules.status_text(status)}
    assert len(messages) > 100
    bad = {m: message_problems(m) for m in messages if message_problems(m)}
    assert not bad, bad


def test_valid_id_and_number_forms():
    assert rules.valid_id(1) and rules.valid_id(2**63 - 1)
    assert not any(rules.valid_id(v) for v in (0, -1, 2**63, None, True, "12", 1.0))
    assert rules.valid_number("F8E18F45") and not rules.valid_number("F8-1") and not rules.valid_number(None)
