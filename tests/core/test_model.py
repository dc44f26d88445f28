"""core/model.py: wire names and order (client-links-api.md §1.2, §1.3, §2), parsing, identity and the small helpers."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from linkdesk.core import model
from linkdesk.core.model import (
    CLIENT_LINK_WIRE,
    COMPARED_ON_UPDATE,
    READ_ONLY_ON_ADD,
    UPDATABLE,
    WIRE_TO_ATTR,
    Account,
    Actor,
    ClientLink,
    ClientLinkStatus,
    Customer,
    CustomerLinkPermission,
    CustomerRole,
    LinkKey,
    LinkType,
    Party,
    Perspective,
    Role,
    Stage,
    User,
)

#: client-links-api.md §1.2, WSDL element order.
WSDL_ORDER = [
    "Type", "ClientEntityId", "ClientEntityNumber", "ClientEntityName", "ManagingCustomerId", "ManagingCustomerNumber",
    "ManagingCustomerName", "Note", "Name", "InviterEmail", "InviterName", "InviterPhone", "IsBillToClient",
    "StartDate", "Status", "SuppressNotification", "LastModifiedDateTime", "LastModifiedByUserId", "Timestamp",
    "ForwardCompatibilityMap", "CustomerLinkPermission", "ClientEntityCustomerNumber",
]
#: client-links-api.md §1.3, WSDL order.
STATUS_ORDER = ["LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress",
                "Active", "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress",
                "Inactive", "UnlinkFailed"]
T = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_statuses_are_the_14_wire_names_in_wsdl_order():
    assert [s.value for s in ClientLinkStatus] == STATUS_ORDER
    assert all(s.name == s.value for s in ClientLinkStatus)
    assert str(ClientLinkStatus.Active) == f"{ClientLinkStatus.Active}" == "Active"
    assert ClientLinkStatus.Active == "Active" and hash(ClientLinkStatus.Active) == hash("Active")


def test_status_parse():
    assert ClientLinkStatus.parse("UnlinkFailed") is ClientLinkStatus.UnlinkFailed
    assert ClientLinkStatus.parse(None) is None and ClientLinkStatus.parse("") is None
    newer = ClientLinkStatus.parse("LinkSuspended")  # a status a newer service might send: kept, not dropped
    assert newer == "LinkSuspended" and not isinstance(newer, ClientLinkStatus)


def test_link_type_and_permission_values():
    assert [t.value for t in LinkType] == ["AccountLink", "CustomerLink"]
    assert LinkType.parse(None) is LinkType.AccountLink and LinkType.parse("") is LinkType.AccountLink
    assert LinkType.parse("CustomerLink") is LinkType.CustomerLink
    with pytest.raises(ValueError):
        LinkType.parse("PartnerLink")
    assert [p.value for p in CustomerLinkPermission] == ["Administrative", "Standard"]


def test_roles_are_the_documented_ids():
    assert {r.name: r.value for r in Role} == {"SuperAdmin": 41, "Standard": 203, "AdvertiserCampaignManager": 16,
                                               "Viewer": 100, "Aggregator": 33}
    assert Role.SuperAdmin.label == "Super Admin" and Role.Standard.label == "Standard User"
    assert Role.AdvertiserCampaignManager.label == "Advertiser Campaign Manager"
    assert all(r.label for r in Role)


@pytest.mark.parametrize("value,expected", [
    (41, Role.SuperAdmin), ("203", Role.Standard), (" 16", Role.AdvertiserCampaignManager), (None, None), ("", None),
    ("abc", None), (999, None), (True, None),
])
def test_role_parse(value, expected):
    assert Role.parse(value) is expected


def test_small_enums():
    assert [p.value for p in Party] == ["agency", "client", "service"]
    assert [p.value for p in Perspective] == ["sent", "received"]
    assert [s.value for s in Stage] == ["needs_action", "pending", "in_progress", "active", "ended"]
    assert [s.label for s in Stage] == ["Needs action", "Pending", "In progress", "Active", "Ended"]


def test_wire_mapping_covers_every_field_in_wsdl_order():
    assert list(CLIENT_LINK_WIRE.values()) == WSDL_ORDER
    assert list(CLIENT_LINK_WIRE) == [f.name for f in dataclasses.fields(ClientLink)]
    assert {v: k for k, v in CLIENT_LINK_WIRE.items()} == WIRE_TO_ATTR


def test_field_groups():
    assert set(READ_ONLY_ON_ADD) == {"client_entity_name", "managing_customer_name", "status",
                                     "last_modified_date_time", "last_modified_by_user_id", "timestamp"}
    assert UPDATABLE == ("status", "note")
    # Compared on update: every element except the updatable ones, the service-set ones and the concurrency token.
    assert set(COMPARED_ON_UPDATE) == set(CLIENT_LINK_WIRE) - {
        "status", "note", "last_modified_date_time", "last_modified_by_user_id", "timestamp",
        "forward_compatibility_map"}
    assert len(COMPARED_ON_UPDATE) == 16


def full_link() -> ClientLink:
    return ClientLink(
        type=LinkType.CustomerLink, client_entity_id=200, client_entity_number="C200", client_entity_name="Fabrikam",
        managing_customer_id=100, managing_customer_number="C100", managing_customer_name="Contoso Agency",
        note="Hi", name="Fabrikam", inviter_email="a@contoso.example", inviter_name="Ann", inviter_phone="1",
        is_bill_to_client=None, start_date=T, status=ClientLinkStatus.LinkPending, suppress_notification=True,
        last_modified_date_time=T, last_modified_by_user_id=9, timestamp="AAAAAAAAB9E=",
        forward_compatibility_map=(("k", "v"),), customer_link_permission=CustomerLinkPermission.Administrative,
        client_entity_customer_number="C200",
    )


def test_to_wire_uses_wire_names_and_strings():
    wire = full_link().to_wire()
    assert list(wire) == [w for w in WSDL_ORDER if w != "IsBillToClient"]  # None is left out
    assert wire["Type"] == "CustomerLink" and type(wire["Type"]) is str
    assert wire["Status"] == "LinkPending" and type(wire["Status"]) is str
    assert wire["CustomerLinkPermission"] == "Administrative" and type(wire["CustomerLinkPermission"]) is str
    assert wire["ForwardCompatibilityMap"] == [{"key": "k", "value": "v"}]
    everything = ClientLink().to_wire(include_none=True)
    assert list(everything) == WSDL_ORDER
    assert everything["ForwardCompatibilityMap"] is None and everything["SuppressNotification"] is False


def test_from_wire_round_trip_and_tolerance():
    link = full_link()
    assert ClientLink.from_wire(link.to_wire()) == link
    assert ClientLink.from_wire(link.to_wire(include_none=True)) == link
    odd = ClientLink.from_wire({"Type": "", "Status": "LinkSuspended", "CustomerLinkPermission": "LinkedEntityOnly",
                                "SuppressNotification": None, "ForwardCompatibilityMap": None, "Unknown": 1})
    assert odd.type is LinkType.AccountLink
    assert odd.status == "LinkSuspended"
    assert odd.customer_link_permission == "LinkedEntityOnly"
    assert odd.suppress_notification is False and odd.forward_compatibility_map == ()
    assert ClientLink.from_wire({"CustomerLinkPermission": ""}).customer_link_permission == ""


def test_identity():
    link = ClientLink(client_entity_id=2001, managing_customer_id=100)
    assert link.key == LinkKey(2001, 100, LinkType.AccountLink)
    assert str(link.key) == "AccountLink:2001@100"
    assert ClientLink(type=None, client_entity_id=1, managing_customer_id=2).key.type is LinkType.AccountLink
    assert ClientLink(type=None).link_type is LinkType.AccountLink
    with pytest.raises(ValueError):
        ClientLink(client_entity_id=2001).key
    with pytest.raises(ValueError):
        ClientLink(managing_customer_id=100).key
    assert link.replace(note="x").note == "x" and link.note is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.note = "x"  # type: ignore[misc]


def test_user_helpers():
    user = User(id=1, user_name="bob@contoso.example", customer_id=100, first_name="Bob", last_name=None, roles=(
        CustomerRole(100, Role.Viewer, account_ids=(1, 2)),
        CustomerRole(100, Role.Standard, account_ids=(2, 3), linked_account_ids=(4,)),
        CustomerRole(200, Role.Aggregator),
        CustomerRole(300, Role.AdvertiserCampaignManager, account_ids=None, linked_account_ids=(4, 5)),
    ))
    assert user.display_name == "Bob"
    assert User(id=2, user_name="x@y.example", customer_id=1).display_name == "x@y.example"
    assert user.role_at(100) is Role.Standard  # the highest privilege of several
    assert user.role_at(200) is Role.Aggregator and user.role_at(300) is Role.AdvertiserCampaignManager
    assert user.role_at(999) is None
    assert user.reachable_account_ids() == (1, 2, 3, 4, 5)


def test_actor_describe_and_optional_number():
    a = Actor(user_id=7, customer_id=100, role=Role.Viewer, customer_name="Contoso Agency", user_name="ann")
    assert a.describe == "ann (Viewer at Contoso Agency)"
    assert Actor(user_id=7, customer_id=100, role=Role.SuperAdmin).describe == "user 7 (Super Admin at customer 100)"
    assert a.customer_number is None
    assert Actor(7, 100, Role.Viewer, "C", "u", "C100").customer_number == "C100"


def test_customer_and_account_defaults():
    c = Customer(id=1, name="Contoso")
    assert (c.number, c.life_cycle_status) == (None, "Active")
    acc = Account(id=5, name="Shoes", number="F5", parent_customer_id=1)
    assert acc.prepaid is None and acc.linked_agency_ids == () and acc.life_cycle_status == "Active"


def test_model_is_pure():
    """No I/O and no third-party imports (the module's contract)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(model))
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "dataclasses", "datetime", "enum", "typing"}
