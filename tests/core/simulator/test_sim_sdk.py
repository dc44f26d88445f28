"""The whole simulator (service + SOAP server + token endpoint) driven by the unmodified bingads SDK over loopback."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from linkdesk.core import rules
from linkdesk.core.simulator import world
from linkdesk.core.simulator.app import Simulator
from linkdesk.core.simulator.auth import make_authorization
from linkdesk.core.simulator.service import ServiceOptions
from linkdesk.core.simulator.wsdl import EXCEPTION

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
AGENCY, FABRIKAM = world.AGENCY_ID, world.OTHER_AGENCY_ID
SA, STD, UA, UB = world.AGENCY_SUPER_ADMIN, world.AGENCY_STANDARD, world.USER_A, world.USER_B
NORTHWIND_ADMIN = 301000103
MINE = {"Predicate": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": str(AGENCY)}]}
PAGE = {"Index": 0, "Size": 100}


@pytest.fixture(scope="module")
def sdk() -> SimpleNamespace:
    # Imported here: bingads costs about a second to import.
    from bingads.authorization import AuthorizationData
    from bingads.service_client import ServiceClient
    from suds import WebFault

    logging.getLogger("suds").setLevel(logging.CRITICAL)
    return SimpleNamespace(AuthorizationData=AuthorizationData, ServiceClient=ServiceClient, WebFault=WebFault)


@pytest.fixture
def sim(tmp_path):
    with Simulator(tmp_path / "sim.sqlite", frozen_at=NOW) as s:
        yield s


def links_of(result: Any) -> list:
    return list(getattr(result, "ClientLink", None) or [])  # empty array parses as '' (pitfall P2)


def fault_codes(exc: Any) -> list[int]:
    """Codes of a WebFault's AdApiFaultDetail or ApiFault (fault details are untyped strings, pitfall P8)."""
    detail = exc.fault.detail
    if hasattr(detail, "AdApiFaultDetail"):
        errors = detail.AdApiFaultDetail.Errors.AdApiError
    else:
        errors = detail.ApiFault.OperationErrors.OperationError
    errors = errors if isinstance(errors, list) else [errors]
    return [int(e.Code) for e in errors]


def call_fault(sdk, fn, *args, **kwargs) -> list[int]:
    with pytest.raises(sdk.WebFault) as err:
        fn(*args, **kwargs)
    return fault_codes(err.value)


def positional_partial_errors(cm) -> list[list[int] | None]:
    """PartialErrors read from the raw reply kept by the SDK (suds drops a leading nil entry, pitfall P1)."""
    ns = ("x", EXCEPTION)
    resp = cm.hp.document.getChild("Envelope").getChild("Body").children[0]
    return [None if e.isnil() else [int(x.getChild("Code", ns).getText()) for x in e.getChildren("OperationError", ns)]
            for e in resp.getChild("PartialErrors").getChildren("ArrayOfOperationError", ns)]


def search_all(cm, predicates=MINE, size: int = 100) -> list:
    out, index = [], 0
    while True:
        page = links_of(cm.SearchClientLinks(Predicates=predicates, PageInfo={"Index": index, "Size": size}))
        out.extend(page)
        if len(page) < size:
            return out
        index += 1


def one_link(cm, account: int, manager: int = AGENCY):
    found = links_of(cm.SearchClientLinks(
        Predicates={"Predicate": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": str(account)}]},
        PageInfo=PAGE))
    (link,) = [x for x in found if x.ManagingCustomerId == manager]
    return link


def invite(entity: int, **extra: Any) -> dict[str, Any]:
    return {"ClientEntityId": entity, "ManagingCustomerId": AGENCY, "IsBillToClient": True, **extra}


# ------------------------------------------------------------------------------------------------- every operation


def test_search_add_update_round_trip(sim, sdk):
    cm = sim.service_client(STD)
    found = search_all(cm)
    assert {x.ClientEntityId for x in found} >= {world.A1, world.A2, world.B1, world.B2}
    assert all(x.ManagingCustomerId == AGENCY for x in found)
    result = cm.AddClientLinks(ClientLinks={"ClientLink": [invite(world.UNINVITED_ACCOUNT, Note="Hallo ☕")]})
    assert positional_partial_errors(cm) == [None]
    assert not result.OperationErrors
    link = one_link(cm, world.UNINVITED_ACCOUNT)
    assert (link.Status, link.Note, link.Name, link.InviterEmail) == ("LinkPending", "Hallo ☕", "Northwind Wholesale",
                                                                      "standard@contoso.example")
    assert link.ClientEntityCustomerNumber == world.customer_number(251000103)
    link.Status = "LinkCanceled"  # the documented pattern: change the searched object and send it all back
    cm.UpdateClientLinks(ClientLinks={"ClientLink": [link]})
    assert positional_partial_errors(cm) == [None]
    again = one_link(cm, world.UNINVITED_ACCOUNT)
    assert again.Status == "LinkCanceled" and str(again.Timestamp) != str(link.Timestamp)


def test_hierarchy_operations(sim, sdk):
    cm = sim.service_client(SA)
    me = cm.GetUser(UserId=None)
    assert me.User.UserName == "admin@contoso.example" and me.User.Name.FirstName == "Ada"
    roles = {r.CustomerId: r for r in me.CustomerRoles.CustomerRole}
    assert roles[AGENCY].RoleId == 41 and world.A1 in roles[AGENCY].LinkedAccountIds.long
    assert roles[world.CUSTOMER_LINKED_CLIENT].CustomerLinkPermission == "Administrative"
    assert cm.GetCurrentUser().UserName == "admin@contoso.example"
    assert [u.Id for u in cm.GetUsersInfo(CustomerId=AGENCY, StatusFilter=None).UserInfo] == [SA, STD, UA, UB]
    assert [c.Name for c in cm.GetCustomersInfo(CustomerNameFilter="", TopN=10).CustomerInfo] == [
        "Contoso Agency", "Litware, Inc."]
    accounts = cm.GetAccountsInfo(CustomerId=AGENCY, OnlyParentAccounts=False).AccountInfo
    assert {a.Id for a in accounts} >= {world.A1, world.AGENCY_HOUSE_ACCOUNT}
    tree = cm.GetLinkedAccountsAndCustomersInfo(CustomerId=AGENCY, OnlyParentAccounts=False)
    assert [c.Id for c in tree.CustomersInfo.CustomerInfo] == [world.CUSTOMER_LINKED_CLIENT]
    found = cm.SearchAccounts(
        Predicates={"Predicate": [{"Field": "UserId", "Operator": "Equals", "Value": str(UB)}]},
        PageInfo={"Index": 0, "Size": 10}, ReturnAdditionalFields="ParentCustomerNumber")
    assert [(a.Id, a.ParentCustomerNumber) for a in found.AdvertiserAccount] == [
        (world.A2, world.customer_number(world.CLIENT_A_ID)), (world.B1, world.customer_number(world.CLIENT_B_ID)),
        (world.B2, world.customer_number(world.CLIENT_B_ID))]
    customer = cm.GetCustomer(CustomerId=world.CLIENT_B_ID)
    assert (customer.Name, customer.Number) == ("Client B", world.customer_number(world.CLIENT_B_ID))
    account = cm.GetAccount(AccountId=world.A2, ReturnAdditionalFields=None)
    assert (account.BillToCustomerId, account.ParentCustomerId) == (AGENCY, world.CLIENT_A_ID)
    assert [c.Name for c in account.LinkedAgencies.CustomerInfo] == ["Contoso Agency"]
    hits = cm.FindAccountsOrCustomersInfo(Filter="Client B", TopN=10, ReturnAdditionalFields=None)
    assert [(h.CustomerName, h.AccountName) for h in hits.AccountInfoWithCustomerData] == [
        ("Client B", "B1"), ("Client B", "B2")]


def test_unsimulated_operation(sim, sdk):
    cm = sim.service_client(SA)
    assert call_fault(sdk, cm.GetCustomerPilotFeatures, CustomerId=AGENCY) == [rules.E_NOT_SIMULATED]


# ------------------------------------------------------------------------------------------------------ credentials


def test_credentials_faults(sim, sdk):
    auth = sim.authorization(SA)
    wrong_dev = sdk.ServiceClient("CustomerManagementService", 13, location=sim.url, authorization_data=
                                  sdk.AuthorizationData(developer_token="WRONG", authentication=auth))
    assert call_fault(sdk, wrong_dev.GetUser, UserId=None) == [105]
    from bingads.authorization import Authentication

    class NoToken(Authentication):  # sends the developer token only
        def enrich_headers(self, headers):
            return headers

    no_token = sdk.ServiceClient("CustomerManagementService", 13, location=sim.url, authorization_data=
                                 sdk.AuthorizationData(developer_token="BBD37VB98", authentication=NoToken()))
    assert call_fault(sdk, no_token.GetUser, UserId=None) == [116]
    from bingads.authorization import OAuthTokens

    bogus = make_authorization(sim.url)
    bogus._oauth_tokens = OAuthTokens("simAT.not-a-token", 3600, None)
    bad = sdk.ServiceClient("CustomerManagementService", 13, location=sim.url, authorization_data=
                            sdk.AuthorizationData(developer_token="BBD37VB98", authentication=bogus))
    assert call_fault(sdk, bad.GetUser, UserId=None) == [105]


def test_expired_token_is_refreshed_by_the_sdk_through_the_simulator(sim, sdk):
    refreshed = []
    data = sim.authorization_data(SA, token_refreshed_callback=refreshed.append)
    cm = sdk.ServiceClient("CustomerManagementService", 13, authorization_data=data, location=sim.url)
    first = data.authentication.oauth_tokens.access_token
    cm.GetUser(UserId=None)
    sim.advance("2h")  # one simulated hour has passed: the service now answers 109
    assert cm.GetUser(UserId=None).User.Id == SA  # 109, refresh at /oauth2/token, retry: invisible to the caller
    assert len(refreshed) == 1
    assert refreshed[0].access_token != first and refreshed[0].refresh_token
    cm.refresh_oauth_tokens_automatically = False
    sim.advance("2h")
    assert call_fault(sdk, cm.GetUser, UserId=None) == [109]


def test_a_token_expired_long_ago_is_still_109_not_105(sim, sdk):
    data = sim.authorization_data(SA)
    cm = sdk.ServiceClient("CustomerManagementService", 13, authorization_data=data, location=sim.url)
    cm.refresh_oauth_tokens_automatically = False
    sim.advance("31d")
    sim.access_token(UB)  # issuing tokens purges old ones: the expired one must still be known
    assert call_fault(sdk, cm.GetUser, UserId=None) == [109]  # expired (the SDK would refresh), not "unknown"


def test_throttling_117(tmp_path, sdk):
    with Simulator(tmp_path / "t.sqlite", frozen_at=NOW, service_options=ServiceOptions(calls_per_minute=2)) as sim:
        cm = sim.service_client(SA)
        cm.GetCurrentUser()
        cm.GetCurrentUser()
        assert call_fault(sdk, cm.GetCurrentUser) == [117]


def test_access_faults(sim, sdk):
    client_a = sim.service_client(world.CLIENT_A_ADMIN)
    assert call_fault(sdk, client_a.GetUsersInfo, CustomerId=world.CLIENT_B_ID, StatusFilter=None) == [106]
    viewer = sim.service_client(UB)
    assert call_fault(sdk, viewer.SearchClientLinks, Predicates=MINE, PageInfo=PAGE) == [1001]
    viewer.AddClientLinks(ClientLinks={"ClientLink": [invite(world.UNINVITED_ACCOUNT)]})
    assert positional_partial_errors(viewer) == [[1001]]


# ----------------------------------------------------------------------------------------- request-level faults


@pytest.mark.parametrize("kwargs,code", [
    ({"Predicates": None, "PageInfo": PAGE}, 474),
    ({"Predicates": {"Predicate": [{"Field": "ClientAccountId", "Operator": "Contains", "Value": "1490"}]},
      "PageInfo": PAGE}, 3030),
    ({"Predicates": MINE, "PageInfo": {"Index": 0, "Size": 101}}, 3080),
    ({"Predicates": MINE, "PageInfo": None}, 3080),
])
def test_search_faults(sim, sdk, kwargs, code):
    cm = sim.service_client(SA)
    assert call_fault(sdk, cm.SearchClientLinks, **kwargs) == [code]


@pytest.mark.parametrize("operation", ["AddClientLinks", "UpdateClientLinks"])
def test_batch_faults(sim, sdk, operation):
    cm = sim.service_client(SA)
    fn = getattr(cm, operation)
    assert call_fault(sdk, fn, ClientLinks=None) == [3087]
    assert call_fault(sdk, fn, ClientLinks={"ClientLink": []}) == [3087]
    assert call_fault(sdk, fn, ClientLinks={"ClientLink": [invite(149000016)] * 11}) == [3024]


def test_get_account_while_linking_is_1472(sim, sdk):
    cm = sim.service_client(SA)
    assert call_fault(sdk, cm.GetAccount, AccountId=149000012, ReturnAdditionalFields=None) == [1472]


# -------------------------------------------------------------------------------------------- partial errors


def test_add_partial_errors_keep_their_positions(sim, sdk):
    cm = sim.service_client(STD)
    cm.AddClientLinks(ClientLinks={"ClientLink": [
        invite(world.UNINVITED_ACCOUNT),          # ok (a leading success: suds would drop this nil)
        invite(world.A1),                         # 1410
        invite(world.PREPAID_ACCOUNT),            # 1471
        invite(149000013),                        # ok (a re-invitation after LinkDeclined)
        invite(world.MANAGED_BY_OTHER_AGENCY),    # 1424
        invite(999999999),                        # 210
        invite(149000015, Name="x" * 41),         # name too long
    ]})
    assert positional_partial_errors(cm) == [None, [1410], [1471], None, [1424], [210], [rules.E_NAME_TOO_LONG]]


def test_update_partial_errors_keep_their_positions(sim, sdk):
    cm = sim.service_client(SA)
    ok1 = one_link(cm, 149000005)
    stale = one_link(cm, 149000006)
    stale_copy = one_link(cm, 149000006)
    stale_copy.Note = "changed first"
    cm.UpdateClientLinks(ClientLinks={"ClientLink": [stale_copy]})  # 149000006 now has a new Timestamp
    renamed = one_link(cm, 149000009)
    renamed.Name, renamed.Status = "Renamed", "LinkCanceled"
    in_progress = one_link(cm, 149000012)
    in_progress.Status = "LinkCanceled"
    ok1.Status = stale.Status = "LinkCanceled"
    missing = {"ClientEntityId": world.UNINVITED_ACCOUNT, "ManagingCustomerId": AGENCY, "Status": "LinkCanceled"}
    cm.UpdateClientLinks(ClientLinks={"ClientLink": [ok1, stale, renamed, in_progress, missing]})
    assert positional_partial_errors(cm) == [None, [209], [3083], [1472], [210]]


# --------------------------------------------------------------------------------------------------- lifecycle


def test_whole_lifecycle_through_the_sdk(sim, sdk):
    agency = sim.service_client(STD)
    agency.AddClientLinks(ClientLinks={"ClientLink": [invite(world.UNINVITED_ACCOUNT, IsBillToClient=False)]})
    assert positional_partial_errors(agency) == [None]
    client = sim.service_client(NORTHWIND_ADMIN)
    link = one_link(client, world.UNINVITED_ACCOUNT)
    link.Status = "LinkAccepted"
    client.UpdateClientLinks(ClientLinks={"ClientLink": [link]})
    assert positional_partial_errors(client) == [[rules.E_ACCEPT_TOO_SOON]]  # the 6-hour cooldown
    sim.advance("6h")  # tokens expire too: both clients refresh on 109 by themselves
    link = one_link(client, world.UNINVITED_ACCOUNT)
    link.Status = "LinkAccepted"
    client.UpdateClientLinks(ClientLinks={"ClientLink": [link]})
    assert positional_partial_errors(client) == [None]
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "LinkAccepted"
    sim.advance("2m")
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "LinkInProgress"
    sim.advance("15m")
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "Active"
    admin = sim.service_client(SA)
    assert world.UNINVITED_ACCOUNT in {a.Id for a in admin.GetAccountsInfo(CustomerId=AGENCY,
                                                                           OnlyParentAccounts=False).AccountInfo}
    assert admin.GetAccount(AccountId=world.UNINVITED_ACCOUNT, ReturnAdditionalFields=None).BillToCustomerId == AGENCY
    link = one_link(agency, world.UNINVITED_ACCOUNT)
    link.Status = "UnlinkRequested"
    agency.UpdateClientLinks(ClientLinks={"ClientLink": [link]})
    assert positional_partial_errors(agency) == [None]
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "UnlinkPending"
    sim.advance("5m")
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "UnlinkInProgress"
    sim.advance("20m")
    assert one_link(agency, world.UNINVITED_ACCOUNT).Status == "Inactive"
    assert world.UNINVITED_ACCOUNT not in {a.Id for a in admin.GetAccountsInfo(
        CustomerId=AGENCY, OnlyParentAccounts=False).AccountInfo}


def test_expiry_and_failures_through_the_sdk(sim, sdk):
    cm = sim.service_client(SA)
    margie = sim.service_client(301000106)
    failing = one_link(margie, world.FAILING_LINK_INVITATION)
    failing.Status = "LinkAccepted"
    margie.UpdateClientLinks(ClientLinks={"ClientLink": [failing]})
    unlinking = one_link(cm, world.FAILING_UNLINK_ACTIVE)
    unlinking.Status = "UnlinkRequested"
    cm.UpdateClientLinks(ClientLinks={"ClientLink": [unlinking]})
    pending_before = {x.ClientEntityId for x in search_all(cm) if x.Status == "LinkPending"}
    sim.advance("31d")
    after = {x.ClientEntityId: x.Status for x in search_all(cm)}
    assert after[world.FAILING_LINK_INVITATION] == "LinkFailed"
    assert after[world.FAILING_UNLINK_ACTIVE] == "UnlinkFailed"
    assert {e for e in pending_before if e != world.FAILING_LINK_INVITATION} == {
        e for e, s in after.items() if s == "LinkExpired" and e in pending_before}


# --------------------------------------------------------------------------------- scale, threads and restarts


def test_paging_over_more_than_250_links(tmp_path, sdk):
    with Simulator(tmp_path / "big.sqlite", frozen_at=NOW, scale=140, seed=3) as sim:
        with sim.state.read() as tx:
            expected = [r[0] for r in tx.c.execute(
                "SELECT client_entity_id FROM client_links WHERE is_latest = 1 AND managing_customer_id = ? "
                "ORDER BY client_entity_id, type", (AGENCY,))]
        assert len(expected) > 250
        cm = sim.service_client(SA)
        got = search_all(cm)
        assert [x.ClientEntityId for x in got] == expected
        named = []
        for index in range(len(expected) // 100 + 1):
            named += links_of(cm.SearchClientLinks(
                Predicates=MINE, Ordering={"OrderBy": [{"Field": "Name", "Order": "Descending"}]},
                PageInfo={"Index": index, "Size": 100}))
        assert len(named) == len(expected)
        assert [x.Name for x in named] == sorted((x.Name for x in got), reverse=True)


def test_several_sdk_clients_at_once(sim, sdk):
    accounts = [world.UNINVITED_ACCOUNT, 149000013, 149000015, 149000016]
    errors: list[BaseException] = []
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        try:
            cm = sim.service_client(SA if i % 2 else STD)
            for _ in range(3):
                assert len(search_all(cm)) >= 24  # Standard users do not see the 2 customer links
                assert cm.GetUser(UserId=None).User.Id in (SA, STD)
            cm.AddClientLinks(ClientLinks={"ClientLink": [invite(accounts[i])]})
            results[i] = positional_partial_errors(cm)
        except BaseException as exc:  # surfaced below with the thread's index
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == {i: [None] for i in range(4)}
    statuses = {x.ClientEntityId: x.Status for x in search_all(sim.service_client(SA))}
    assert all(statuses[a] == "LinkPending" for a in accounts)
    # Every SDK call came on its own connection, so on its own server thread: connections are pooled, not leaked.
    assert sim.server.stats.requests > 20
    assert sim.state.open_connections <= sim.state.POOL_SIZE


def test_state_and_tokens_survive_a_restart(tmp_path, sdk):
    path = tmp_path / "sim.sqlite"
    with Simulator(path, frozen_at=NOW) as sim:
        tokens = sim.tokens(STD)
        cm = sim.service_client(STD)
        cm.AddClientLinks(ClientLinks={"ClientLink": [invite(world.UNINVITED_ACCOUNT)]})
        sim.advance("10m")
    with Simulator(path) as sim:  # no reseed; the frozen clock and its offset are kept
        assert sim.now() == NOW + timedelta(minutes=10)
        auth = make_authorization(sim.url, tokens)
        cm = sdk.ServiceClient("CustomerManagementService", 13, location=sim.url, authorization_data=
                               sdk.AuthorizationData(developer_token="BBD37VB98", authentication=auth))
        assert one_link(cm, world.UNINVITED_ACCOUNT).Status == "LinkPending"
