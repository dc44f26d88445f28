"""The simulated service's business logic, called directly with parsed request dicts (no HTTP, no SDK)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from linkdesk.core import rules
from linkdesk.core.model import ClientLink, ClientLinkStatus as S, LinkType, Party
from linkdesk.core.simulator import world
from linkdesk.core.simulator.auth import issue_tokens
from linkdesk.core.simulator.faults import AdApiFault, ApiFault
from linkdesk.core.simulator.service import (
    REACHABLE,
    CustomerManagementService,
    ServiceOptions,
    advance,
    next_service_step,
)
from linkdesk.core.simulator.state import State

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
AGENCY, FABRIKAM = world.AGENCY_ID, world.OTHER_AGENCY_ID
SA, STD, UA, UB = world.AGENCY_SUPER_ADMIN, world.AGENCY_STANDARD, world.USER_A, world.USER_B
CLIENT_A_ADMIN, CLIENT_B_ADMIN = world.CLIENT_A_ADMIN, world.CLIENT_B_ADMIN
TAILSPIN_ADMIN = 301000104
MARGIE_ADMIN = 301000106
NORTHWIND_ADMIN = 301000103
FABRIKAM_SA = world.OTHER_AGENCY_SUPER_ADMIN


@dataclass
class Env:
    state: State
    service: CustomerManagementService

    def headers(self, user: int) -> dict[str, str]:
        return {"DeveloperToken": "BBD37VB98", "AuthenticationToken": issue_tokens(self.state, user).access_token}

    def call(self, op: str, user: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
             ) -> dict[str, Any]:
        return self.service.handle(SimpleNamespace(operation=op, headers=headers or self.headers(user),
                                                   body=body or {}))

    def api_fault(self, op: str, user: int, body: dict[str, Any] | None = None) -> list[int]:
        with pytest.raises(ApiFault) as err:
            self.call(op, user, body)
        return [e.code for e in err.value.operation_errors]

    def adapi_fault(self, op: str, user: int | None, body: dict[str, Any] | None = None,
                    headers: dict[str, str] | None = None) -> int:
        with pytest.raises(AdApiFault) as err:
            self.call(op, user, body, headers)  # type: ignore[arg-type]
        (error,) = err.value.errors
        assert error.error_code == rules.error_info(error.code).symbol and error.message
        return error.code

    def search(self, user: int, *preds: tuple[str, str, str], size: int = 100, index: int = 0,
               ordering: list[dict[str, str]] | None = None) -> list[ClientLink]:
        body: dict[str, Any] = {"Predicates": [{"Field": f, "Operator": o, "Value": v} for f, o, v in preds],
                                "PageInfo": {"Index": index, "Size": size}}
        if ordering is not None:
            body["Ordering"] = ordering
        return [ClientLink.from_wire(x) for x in self.call("SearchClientLinks", user, body)["ClientLinks"]]

    def link(self, entity: int, manager: int = AGENCY, link_type: str = "AccountLink") -> ClientLink | None:
        with self.state.read() as tx:
            stored = tx.latest_link(entity, link_type, manager)
        return stored.link if stored else None

    def add(self, user: int, *links: dict[str, Any]) -> list[list[int] | None]:
        result = self.call("AddClientLinks", user, {"ClientLinks": list(links)})
        assert result["OperationErrors"] == []
        return [None if e is None else [x.code for x in e] for e in result["PartialErrors"]]

    def update(self, user: int, *links: ClientLink | dict[str, Any]) -> list[list[int] | None]:
        items = [x.to_wire() if isinstance(x, ClientLink) else x for x in links]
        result = self.call("UpdateClientLinks", user, {"ClientLinks": items})
        assert result["OperationErrors"] == []
        return [None if e is None else [x.code for x in e] for e in result["PartialErrors"]]

    def set_status(self, user: int, entity: int, status: S, manager: int = AGENCY, link_type: str = "AccountLink",
                   **changes: Any) -> list[int] | None:
        return self.update(user, self.link(entity, manager, link_type).replace(status=status, **changes))[0]

    def advance(self, duration: str) -> int:
        from linkdesk.core.simulator.clock import parse_duration

        return advance(self.state, parse_duration(duration))[1]

    def count_links(self) -> int:
        with self.state.read() as tx:
            return tx.counts()["client_links"]


def make_env(tmp_path, **options: Any) -> Env:
    state = State(tmp_path / "sim.sqlite")
    state.freeze(NOW)
    world.seed_world(state)
    return Env(state, CustomerManagementService(state, ServiceOptions(**options)))


@pytest.fixture
def env(tmp_path):
    e = make_env(tmp_path)
    yield e
    e.state.close()


def invite(entity: int, manager: int = AGENCY, **extra: Any) -> dict[str, Any]:
    return {"ClientEntityId": entity, "ManagingCustomerId": manager, "IsBillToClient": True, **extra}


# ------------------------------------------------------------------------------------------------------ credentials


def test_missing_headers_are_116(env):
    token = env.headers(SA)["AuthenticationToken"]
    assert env.adapi_fault("GetUser", None, headers={"DeveloperToken": "BBD37VB98"}) == 116
    assert env.adapi_fault("GetUser", None, headers={"AuthenticationToken": token}) == 116
    assert env.adapi_fault("GetUser", None, headers={"DeveloperToken": "", "AuthenticationToken": token}) == 116


def test_wrong_developer_token_and_unknown_access_token_are_105(env):
    token = env.headers(SA)["AuthenticationToken"]
    assert env.adapi_fault("GetUser", None, headers={"DeveloperToken": "NOTTHEONE", "AuthenticationToken": token}) == 105
    assert env.adapi_fault("GetUser", None, headers={"DeveloperToken": "BBD37VB98",
                                                     "AuthenticationToken": "simAT.madeup"}) == 105


def test_access_tokens_expire_after_one_simulated_hour(env):
    headers = env.headers(SA)
    env.call("GetUser", SA, headers=headers)
    env.advance("59m")
    env.call("GetUser", SA, headers=headers)
    env.advance("1m")
    assert env.adapi_fault("GetUser", None, headers=headers) == 109
    env.call("GetUser", SA)  # a fresh token works


def test_refresh_token_is_not_an_access_token(env):
    issued = issue_tokens(env.state, SA)
    assert env.adapi_fault("GetUser", None, headers={"DeveloperToken": "BBD37VB98",
                                                     "AuthenticationToken": issued.refresh_token}) == 105


def test_throttling_is_per_user_and_off_by_default(tmp_path):
    e = make_env(tmp_path, calls_per_minute=3)
    headers = e.headers(SA)
    for _ in range(3):
        e.call("GetCurrentUser", SA, headers=headers)
    assert e.adapi_fault("GetCurrentUser", None, headers=headers) == 117
    e.call("GetCurrentUser", STD)  # another user has its own budget
    e.state.close()
    plain = make_env(tmp_path / "b")
    for _ in range(30):
        plain.call("GetCurrentUser", SA)
    plain.state.close()


def test_unsimulated_operations_say_so(env):
    with pytest.raises(ApiFault) as err:
        env.call("SignupCustomer", SA)
    (error,) = err.value.operation_errors
    assert error.code == rules.E_NOT_SIMULATED
    assert "not simulated" in error.message and "SearchClientLinks" in error.message


# ------------------------------------------------------------------------------------------------- search: validity

GOOD = ("DirectManagingCustomerId", "Equals", str(AGENCY))


@pytest.mark.parametrize("body,code", [
    ({"PageInfo": {"Index": 0, "Size": 10}}, 474),
    ({"Predicates": None, "PageInfo": {"Index": 0, "Size": 10}}, 474),
    ({"Predicates": [], "PageInfo": {"Index": 0, "Size": 10}}, 474),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": "149000001"}] * 3}, 3030),
    ({"Predicates": [{"Field": "AccountName", "Operator": "Equals", "Value": "A1xx"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Contains", "Value": "1490"}]}, 3030),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "In", "Value": "251000001"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "In",
                      "Value": ",".join(str(149000001 + i) for i in range(11))}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": "149"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": "abcdef"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": None}]}, 3030),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"},
                     {"Field": "ManagingCustomerId", "Operator": "Equals", "Value": "251000001"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": "149000001"},
                     {"Field": "ClientCustomerId", "Operator": "Equals", "Value": "251000109"}]}, 3030),
    ({"Predicates": [{"Field": "ClientAccountId", "Operator": "Equals", "Value": "149000001"},
                     {"Field": "ClientAccountId", "Operator": "Equals", "Value": "149000002"}]}, 3030),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": "omit"}, 3080),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": None}, 3080),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": {"Index": 0}}, 3080),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": {"Index": 0, "Size": 101}}, 3080),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": {"Index": -1, "Size": 10}}, 3080),
    ({"Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
      "PageInfo": {"Index": 0, "Size": 10}, "Ordering": [{"Field": "LifeCycleStatus", "Order": "Ascending"}]}, 201),
])
def test_invalid_searches_are_refused_whole(env, body, code):
    if body.get("PageInfo") == "omit":
        del body["PageInfo"]
    else:
        body.setdefault("PageInfo", {"Index": 0, "Size": 10})
    assert env.api_fault("SearchClientLinks", SA, body) == [code]


def test_roles_that_may_not_search(env):
    assert env.api_fault("SearchClientLinks", UA, {"Predicates": [dict(zip(("Field", "Operator", "Value"), GOOD))],
                                                   "PageInfo": {"Index": 0, "Size": 10}}) == [1001]
    assert env.api_fault("SearchClientLinks", UB, {"Predicates": [dict(zip(("Field", "Operator", "Value"), GOOD))],
                                                   "PageInfo": {"Index": 0, "Size": 10}}) == [1001]
    standard = env.search(STD, GOOD)
    assert standard and all(x.link_type == LinkType.AccountLink for x in standard)
    assert any(x.link_type == LinkType.CustomerLink for x in env.search(SA, GOOD))
    assert env.api_fault("SearchClientLinks", STD, {
        "Predicates": [{"Field": "ClientCustomerId", "Operator": "Equals", "Value": str(world.CUSTOMER_LINKED_CLIENT)}],
        "PageInfo": {"Index": 0, "Size": 10}}) == [1001]


# ----------------------------------------------------------------------------------------------- search: semantics


def _latest_managed_by(env: Env, manager: int) -> list[int]:
    with env.state.read() as tx:
        return [r[0] for r in tx.c.execute("SELECT client_entity_id FROM client_links WHERE is_latest = 1 AND "
                                            "managing_customer_id = ? ORDER BY client_entity_id, type", (manager,))]


def test_agency_sees_the_most_recent_link_of_each_pair(env):
    links = env.search(SA, GOOD)
    assert [x.client_entity_id for x in links] == _latest_managed_by(env, AGENCY)
    b1 = [x for x in links if x.client_entity_id == world.B1]
    assert len(b1) == 1 and b1[0].status == S.Active  # not the older LinkExpired one
    assert all(x.managing_customer_id == AGENCY for x in links)


def test_ordering_and_paging(env):
    by_id = env.search(SA, GOOD)
    desc = env.search(SA, GOOD, ordering=[{"Field": "Id", "Order": "Descending"}])
    assert [x.client_entity_id for x in desc] == [x.client_entity_id for x in reversed(by_id)]
    by_name = env.search(SA, GOOD, ordering=[{"Field": "Name", "Order": "Ascending"},
                                             {"Field": "Id", "Order": "Descending"}])  # only the first counts
    assert [x.name for x in by_name] == sorted(x.name for x in by_id)
    number = env.search(CLIENT_A_ADMIN, ("ClientAccountId", "Equals", str(world.A2)),
                        ordering=[{"Field": "Number", "Order": "Descending"}])
    assert [x.managing_customer_number for x in number] == sorted((x.managing_customer_number for x in number),
                                                                   reverse=True)
    pages = [env.search(SA, GOOD, size=7, index=i) for i in range(5)]
    assert [len(p) for p in pages] == [7, 7, 7, 5, 0]
    assert [x.client_entity_id for p in pages for x in p] == [x.client_entity_id for x in by_id]


def test_client_sees_only_its_own_links(env):
    mine = env.search(CLIENT_A_ADMIN, GOOD)
    assert {x.client_entity_id for x in mine} == {world.A1, world.A2}
    # Every manager's link to its account, also another agency's (a client may search "one account at a time").
    a2 = env.search(CLIENT_A_ADMIN, ("ClientAccountId", "Equals", str(world.A2)))
    assert {(x.managing_customer_id, x.status) for x in a2} == {(AGENCY, S.Active), (FABRIKAM, S.LinkCanceled)}
    assert env.search(CLIENT_A_ADMIN, ("ClientAccountId", "Equals", str(world.B1))) == []


def test_agency_does_not_see_other_agencies_links_unless_through_managing_customer_id(env):
    hiking = str(world.MANAGED_BY_OTHER_AGENCY)
    direct = env.search(SA, ("ClientAccountId", "Equals", hiking))
    assert [(x.managing_customer_id, x.status) for x in direct] == [(AGENCY, S.LinkDeclined)]
    inclusive = env.search(SA, ("ManagingCustomerId", "Equals", str(AGENCY)))
    hiking_links = {(x.managing_customer_id, x.status) for x in inclusive if x.client_entity_id == world.MANAGED_BY_OTHER_AGENCY}
    assert hiking_links == {(AGENCY, S.LinkDeclined), (FABRIKAM, S.Active)}
    assert all(x.link_type == LinkType.AccountLink for x in inclusive)
    # Next to ClientAccountId, ManagingCustomerId is ignored (documented).
    assert env.search(SA, ("ClientAccountId", "Equals", hiking), ("ManagingCustomerId", "Equals", str(FABRIKAM))) \
        == direct


def test_combined_predicates_and_customer_links(env):
    both = env.search(SA, ("ClientAccountId", "In", f"{world.A1},{world.B2}"), GOOD)
    assert [x.client_entity_id for x in both] == [world.A1, world.B2]
    customers = env.search(SA, ("ClientCustomerId", "In", f"{world.CUSTOMER_LINKED_CLIENT},251000110"))
    assert [(x.client_entity_id, x.link_type, x.customer_link_permission) for x in customers] == [
        (world.CUSTOMER_LINKED_CLIENT, LinkType.CustomerLink, "Administrative"),
        (251000110, LinkType.CustomerLink, "Standard")]
    assert customers[0].client_entity_customer_number is None


def test_received_invitations(env):
    received = env.search(SA, ("DirectManagingCustomerId", "Equals", str(FABRIKAM)))
    assert {(x.client_entity_id, x.link_type, x.status) for x in received} == {
        (world.AGENCY_HOUSE_ACCOUNT, LinkType.AccountLink, S.LinkPending),
        (AGENCY, LinkType.CustomerLink, S.LinkPending)}


def test_search_items_are_exactly_the_stored_links(env):
    items = env.call("SearchClientLinks", SA, {"Predicates": [dict(zip(("Field", "Operator", "Value"), GOOD))],
                                               "PageInfo": {"Index": 0, "Size": 100}})["ClientLinks"]
    with env.state.read() as tx:
        for item in items:
            stored = tx.latest_link(item["ClientEntityId"], item["Type"], item["ManagingCustomerId"])
            assert item == stored.link.to_wire(include_none=True)


def test_links_carry_names_numbers_and_the_client_customer_number(env):
    (a1,) = env.search(SA, ("ClientAccountId", "Equals", str(world.A1)))
    assert (a1.client_entity_name, a1.client_entity_number) == ("A1", world.account_number(world.A1))
    assert (a1.managing_customer_name, a1.managing_customer_number) == ("Contoso Agency",
                                                                        world.customer_number(AGENCY))
    assert a1.client_entity_customer_number == world.customer_number(world.CLIENT_A_ID)
    assert a1.timestamp and a1.last_modified_by_user_id and a1.start_date and a1.inviter_email


# ------------------------------------------------------------------------------------------------------------ add


def test_add_sets_every_default(env):
    assert env.add(STD, invite(world.UNINVITED_ACCOUNT)) == [None]
    link = env.link(world.UNINVITED_ACCOUNT)
    assert link.status == S.LinkPending
    assert link.name == "Northwind Wholesale"
    assert (link.inviter_email, link.inviter_name) == ("standard@contoso.example", "Contoso Agency")
    assert link.start_date == link.last_modified_date_time == NOW
    assert link.last_modified_by_user_id == STD
    assert link.suppress_notification is False and link.is_bill_to_client is True
    assert link.client_entity_name == "Northwind Wholesale"
    assert link.managing_customer_name == "Contoso Agency"
    assert link.client_entity_customer_number == world.customer_number(251000103)
    assert link.timestamp and link.timestamp not in {x.timestamp for x in env.search(SA, GOOD) if x != link}


def test_add_by_numbers_and_with_given_values(env):
    start = NOW + timedelta(days=3)
    assert env.add(SA, {"ClientEntityNumber": world.account_number(world.UNINVITED_ACCOUNT),
                        "ManagingCustomerNumber": world.customer_number(AGENCY), "IsBillToClient": False,
                        "Name": "Wholesale ☕ [b]x[/b]", "Note": "Hallo", "StartDate": start,
                        "SuppressNotification": True, "InviterPhone": "+1 555 0100"}) == [None]
    link = env.link(world.UNINVITED_ACCOUNT)
    assert (link.name, link.note, link.start_date, link.suppress_notification, link.is_bill_to_client,
            link.inviter_phone) == ("Wholesale ☕ [b]x[/b]", "Hallo", start, True, False, "+1 555 0100")


def test_customer_links_by_super_admin_only(env):
    customer_link = {"Type": "CustomerLink", "ClientEntityId": world.CLIENT_B_ID, "ManagingCustomerId": AGENCY,
                     "CustomerLinkPermission": "Administrative"}
    assert env.add(STD, customer_link) == [[1001]]
    assert env.add(SA, customer_link) == [None]
    link = env.link(world.CLIENT_B_ID, link_type="CustomerLink")
    assert (link.link_type, link.customer_link_permission, link.is_bill_to_client) == (
        LinkType.CustomerLink, "Administrative", None)


def test_add_mixed_batch_reports_one_entry_per_link_in_order(env):
    count = env.count_links()
    result = env.add(
        STD,
        invite(world.UNINVITED_ACCOUNT),                       # ok
        invite(world.A1),                                      # already Active with us: 1410
        invite(world.B1 + 10_000_000),                         # no such account: 210
        invite(world.PREPAID_ACCOUNT),                         # prepaid: 1471
        invite(world.MANAGED_BY_OTHER_AGENCY),                 # Fabrikam manages it: 1424
        invite(149000013),                                     # declined before: a new invitation is fine
        invite(world.UNINVITED_ACCOUNT),                       # twice in this request
        invite(149000015, manager=FABRIKAM),                   # on behalf of another customer: 1001
        {"ClientEntityId": 149000016, "ClientEntityNumber": world.account_number(149000016),
         "ManagingCustomerId": AGENCY, "IsBillToClient": True},  # both id and number
        None,                                                  # a nil item
    )
    assert result == [None, [1410], [210], [1471], [1424], None, [rules.E_DUPLICATE_IN_REQUEST], [1001],
                      [rules.E_ID_AND_NUMBER], [rules.E_FIELD_INVALID]]
    assert env.count_links() == count + 2


@pytest.mark.parametrize("item,codes", [
    ({"ClientEntityId": 149000016, "ManagingCustomerId": AGENCY}, [rules.E_BILL_TO_REQUIRED]),
    (invite(149000016, Name="x" * 41), [rules.E_NAME_TOO_LONG]),
    (invite(149000016, Status="LinkPending"), [rules.E_READ_ONLY]),
    (invite(149000016, CustomerLinkPermission="Standard"), [rules.E_PERMISSION_NOT_APPLICABLE]),
    (invite(149000016, ClientEntityCustomerNumber=world.customer_number(world.CLIENT_A_ID)), [rules.E_PAIR_MISMATCH]),
    (invite(world.AGENCY_HOUSE_ACCOUNT), [rules.E_FIELD_INVALID]),
    ({"ClientEntityId": 149000016, "IsBillToClient": True}, [rules.E_ID_OR_NUMBER_REQUIRED]),
    ({"Type": "CustomerLink", "ClientEntityNumber": world.customer_number(AGENCY), "ManagingCustomerId": AGENCY},
     [rules.E_FIELD_INVALID]),
])
def test_add_refusals_come_from_the_rules(env, item, codes):
    count = env.count_links()
    assert env.add(SA, item) == [codes]
    assert env.count_links() == count


@pytest.mark.parametrize("user", [UA, UB])
def test_read_only_roles_cannot_invite(env, user):
    assert env.add(user, invite(world.UNINVITED_ACCOUNT)) == [[1001]]


@pytest.mark.parametrize("op", ["AddClientLinks", "UpdateClientLinks"])
def test_whole_request_failures_apply_nothing(env, op):
    count = env.count_links()
    assert env.api_fault(op, SA, {}) == [3087]
    assert env.api_fault(op, SA, {"ClientLinks": None}) == [3087]
    assert env.api_fault(op, SA, {"ClientLinks": []}) == [3087]
    eleven = [invite(world.UNINVITED_ACCOUNT)] + [invite(149000016)] * 10
    assert env.api_fault(op, SA, {"ClientLinks": eleven}) == [3024]
    assert env.count_links() == count
    assert env.link(world.UNINVITED_ACCOUNT) is None


def test_reinvitation_after_an_ended_link_keeps_history(env):
    assert env.add(STD, invite(149000013)) == [None]
    with env.state.read() as tx:
        history = tx.link_history(149000013, "AccountLink", AGENCY)
    assert [h.link.status for h in history] == [S.LinkDeclined, S.LinkPending]


# --------------------------------------------------------------------------------------------------------- update


def test_agency_cancels_a_pending_invitation(env):
    before = env.link(149000005)
    env.advance("1m")
    assert env.set_status(STD, 149000005, S.LinkCanceled) is None
    after = env.link(149000005)
    assert after.status == S.LinkCanceled
    assert after.timestamp != before.timestamp
    assert after.last_modified_date_time == NOW + timedelta(minutes=1) and after.last_modified_by_user_id == STD


def test_full_update_semantics(env):
    link = env.link(149000005)
    assert env.update(SA, link.replace(status=S.LinkCanceled, name="Renamed")) == [[3083]]
    minimal = {"ClientEntityId": 149000005, "ManagingCustomerId": AGENCY, "Status": "LinkCanceled",
               "Timestamp": link.timestamp}
    codes = env.update(SA, minimal)[0]
    assert codes and set(codes) == {3083}
    assert env.link(149000005).status == S.LinkPending


def test_stale_timestamp_is_209(env):
    read = env.link(149000005)
    assert env.update(SA, read.replace(note="First")) == [None]  # a note-only change
    assert env.link(149000005).note == "First"
    assert env.update(SA, read.replace(status=S.LinkCanceled)) == [[209]]
    assert env.update(SA, read.replace(status=S.LinkCanceled, timestamp=None)) == [[209]]


def test_unchanged_echo_is_a_no_op_keeping_the_timestamp(env):
    read = env.link(149000005)
    assert env.update(SA, read) == [None]
    assert env.link(149000005).timestamp == read.timestamp


def test_in_progress_and_ended_links_refuse_updates(env):
    assert env.set_status(SA, 149000012, S.LinkCanceled) == [1472]  # LinkInProgress
    assert env.set_status(SA, 149000022, S.UnlinkRequested) == [1472]  # UnlinkInProgress
    assert env.set_status(SA, 149000013, S.LinkPending) == [rules.E_LINK_ENDED]  # LinkDeclined


def test_who_may_set_what(env):
    assert env.set_status(SA, 149000005, S.LinkAccepted) == [rules.E_INVALID_TRANSITION]  # only the client
    assert env.set_status(UB, 149000005, S.LinkCanceled) == [1001]  # a Viewer
    assert env.set_status(NORTHWIND_ADMIN, 149000005, S.LinkCanceled) == [rules.E_INVALID_TRANSITION]
    assert env.set_status(CLIENT_A_ADMIN, 149000005, S.LinkDeclined) == [210]  # not its link: invisible
    assert env.set_status(FABRIKAM_SA, 149000005, S.LinkCanceled) == [210]
    assert env.set_status(NORTHWIND_ADMIN, 149000005, S.LinkDeclined) is None
    assert env.link(149000005).status == S.LinkDeclined


def test_update_mixed_batch_positions(env):
    items = [env.link(149000005).replace(status=S.LinkCanceled),            # ok
             env.link(149000013).replace(status=S.LinkCanceled),            # ended
             {"ClientEntityId": world.UNINVITED_ACCOUNT, "ManagingCustomerId": AGENCY, "Status": "LinkCanceled"},
             env.link(149000006).replace(status=S.LinkCanceled),            # ok
             env.link(149000006).replace(status=S.LinkCanceled)]            # the same link again
    assert env.update(SA, *items) == [None, [rules.E_LINK_ENDED], [210], None, [rules.E_DUPLICATE_IN_REQUEST]]


# ------------------------------------------------------------------------------------------- lifecycle over time


def test_acceptance_cooldown_then_link_then_reach(env):
    account = world.COOLDOWN_INVITATION  # invited two hours before NOW
    assert env.set_status(TAILSPIN_ADMIN, account, S.LinkAccepted) == [rules.E_ACCEPT_TOO_SOON]
    env.advance("3h59m")
    assert env.set_status(TAILSPIN_ADMIN, account, S.LinkAccepted) == [rules.E_ACCEPT_TOO_SOON]
    env.advance("1m")
    assert env.set_status(TAILSPIN_ADMIN, account, S.LinkAccepted) is None
    assert env.link(account).status == S.LinkAccepted
    env.advance("2m")
    assert env.link(account).status == S.LinkInProgress
    assert env.api_fault("GetAccount", SA, {"AccountId": account}) == [1472]
    assert account not in _agency_linked_ids(env)
    env.advance("15m")
    link = env.link(account)
    assert link.status == S.Active
    assert link.last_modified_date_time == NOW + timedelta(hours=4, minutes=17)  # accepted at +4h, +2m, +15m
    assert link.last_modified_by_user_id == TAILSPIN_ADMIN
    assert account in _agency_linked_ids(env)
    got = env.call("GetAccount", SA, {"AccountId": account})["Account"]
    assert got["LinkedAgencies"] == [{"Id": AGENCY, "Name": "Contoso Agency"}]
    assert got["BillToCustomerId"] == 251000104  # the client pays


def _agency_linked_ids(env: Env) -> list[int]:
    roles = env.call("GetUser", SA)["CustomerRoles"]
    return next(r for r in roles if r["CustomerId"] == AGENCY)["LinkedAccountIds"]


def test_configurable_cooldown(tmp_path):
    e = make_env(tmp_path, accept_cooldown=timedelta(hours=1))
    assert e.set_status(TAILSPIN_ADMIN, world.COOLDOWN_INVITATION, S.LinkAccepted) is None
    e.state.close()
    e = make_env(tmp_path / "b", accept_cooldown=timedelta(hours=3))
    assert e.set_status(TAILSPIN_ADMIN, world.COOLDOWN_INVITATION, S.LinkAccepted) == [rules.E_ACCEPT_TOO_SOON]
    e.state.close()


def test_link_waits_for_its_start_date(env):
    # Tailspin Kids: accepted, in progress, start date four days after the invitation (three days from NOW).
    env.advance("1d")
    assert env.link(149000012).status == S.LinkInProgress
    env.advance("2d")
    assert env.link(149000012).status == S.Active


def test_billing_problem_makes_the_link_fail(env):
    assert env.set_status(MARGIE_ADMIN, world.FAILING_LINK_INVITATION, S.LinkAccepted) is None
    env.advance("1h")
    link = env.link(world.FAILING_LINK_INVITATION)
    assert link.status == S.LinkFailed
    assert world.FAILING_LINK_INVITATION not in _agency_linked_ids(env)
    assert env.add(SA, invite(world.FAILING_LINK_INVITATION)) == [None]  # ended: a new invitation is possible


def test_unlink_to_inactive_removes_reach(env):
    roles = env.call("GetUser", UA)["CustomerRoles"]
    assert roles[0]["LinkedAccountIds"] == [world.A1] and roles[0]["AccountIds"] == []
    assert env.set_status(SA, world.A1, S.UnlinkRequested) is None
    assert env.link(world.A1).status == S.UnlinkPending  # the service moves on at once
    assert world.A1 in _agency_linked_ids(env)  # still managed while the unlink runs
    env.advance("5m")
    assert env.link(world.A1).status == S.UnlinkInProgress
    assert env.api_fault("GetAccount", SA, {"AccountId": world.A1}) == [1472]
    assert env.api_fault("GetAccount", CLIENT_A_ADMIN, {"AccountId": world.A1}) == [1472]
    env.advance("20m")
    assert env.link(world.A1).status == S.Inactive
    assert world.A1 not in _agency_linked_ids(env)
    assert env.call("GetUser", UA)["CustomerRoles"][0]["LinkedAccountIds"] == []
    assert env.call("GetAccount", CLIENT_A_ADMIN, {"AccountId": world.A1})["Account"]["LinkedAgencies"] == []
    with pytest.raises(AdApiFault):
        env.call("GetAccount", SA, {"AccountId": world.A1})


def test_unlink_failure_keeps_the_link_in_force(env):
    account = world.FAILING_UNLINK_ACTIVE
    assert env.set_status(SA, account, S.UnlinkRequested) is None
    env.advance("30m")
    assert env.link(account).status == S.UnlinkFailed
    assert account in _agency_linked_ids(env)
    assert env.set_status(SA, account, S.UnlinkRequested) is None  # the agency may try again
    assert env.link(account).status == S.UnlinkPending


def test_invitations_expire_after_thirty_days(env):
    pending = {x.client_entity_id: x for x in env.search(SA, GOOD) if x.status == S.LinkPending}
    with env.state.read() as tx:
        created = {e: tx.latest_link(e, x.link_type.value, AGENCY).created_at for e, x in pending.items()}
    applied = env.advance("31d")
    assert applied >= len(pending)
    after = {x.client_entity_id: x for x in env.search(SA, GOOD)}
    for entity in pending:
        assert after[entity].status == S.LinkExpired
        assert after[entity].last_modified_date_time == created[entity] + rules.EXPIRY
    assert env.set_status(NORTHWIND_ADMIN, 149000005, S.LinkAccepted) == [rules.E_LINK_ENDED]


def test_bill_to_agency_when_the_agency_pays(env):
    a2 = env.call("GetAccount", SA, {"AccountId": world.A2, "ReturnAdditionalFields": ["ParentCustomerNumber"]})
    assert a2["Account"]["BillToCustomerId"] == AGENCY
    assert a2["Account"]["ParentCustomerNumber"] == world.customer_number(world.CLIENT_A_ID)
    a1 = env.call("GetAccount", SA, {"AccountId": world.A1})["Account"]
    assert a1["BillToCustomerId"] == world.CLIENT_A_ID and a1["ParentCustomerNumber"] is None


def test_service_steps_are_lifecycle_transitions():
    t = NOW
    for status in S:
        step = next_service_step(status, t, created_at=t, start_date=t, fail_link=False)
        failing = next_service_step(status, t, created_at=t, start_date=t, fail_link=True, fail_unlink=True)
        for got in (step, failing):
            if got is not None:
                assert rules.transition(status, got[1], Party.SERVICE) is not None, (status, got)
    assert {s for s in S if next_service_step(s, t) is not None} == set(rules.IN_PROGRESS) | {S.LinkPending}
    assert REACHABLE == {S.Active, S.UnlinkFailed, S.UnlinkCanceled, S.UnlinkRequested, S.UnlinkPending,
                         S.UnlinkInProgress}


# ---------------------------------------------------------------------------------------------- users, accounts


def test_get_user_roles_and_reach(env):
    me = env.call("GetUser", SA)
    assert me["User"]["UserName"] == "admin@contoso.example" and me["User"]["CustomerId"] == AGENCY
    roles = {r["CustomerId"]: r for r in me["CustomerRoles"]}
    assert roles[AGENCY]["RoleId"] == 41 and roles[AGENCY]["AccountIds"] is None
    assert {world.A1, world.A2, world.B1, world.B2} <= set(roles[AGENCY]["LinkedAccountIds"])
    assert roles[world.CUSTOMER_LINKED_CLIENT]["CustomerLinkPermission"] == "Administrative"
    b = env.call("GetUser", SA, {"UserId": UB})
    assert b["User"]["Id"] == UB
    assert [(r["RoleId"], r["LinkedAccountIds"]) for r in b["CustomerRoles"]] == [(100, [world.A2, world.B1, world.B2])]
    assert env.adapi_fault("GetUser", CLIENT_A_ADMIN, {"UserId": SA}) == 106
    assert env.api_fault("GetUser", SA, {"UserId": 999}) == [210]
    assert env.call("GetCurrentUser", UA)["User"]["Id"] == UA


def test_users_and_customers_info(env):
    assert [u["Id"] for u in env.call("GetUsersInfo", UB, {"CustomerId": AGENCY})["UsersInfo"]] == [SA, STD, UA, UB]
    assert env.call("GetUsersInfo", SA, {"CustomerId": AGENCY, "StatusFilter": "Inactive"})["UsersInfo"] == []
    assert env.adapi_fault("GetUsersInfo", SA, {"CustomerId": world.CLIENT_B_ID}) == 106
    info = env.call("GetCustomersInfo", SA, {"CustomerNameFilter": "", "TopN": 10})["CustomersInfo"]
    assert [c["Id"] for c in info] == [AGENCY, world.CUSTOMER_LINKED_CLIENT]
    assert [c["Name"] for c in env.call("GetCustomersInfo", SA, {"CustomerNameFilter": "lit", "TopN": 5})[
        "CustomersInfo"]] == ["Litware, Inc."]
    assert env.api_fault("GetCustomersInfo", SA, {"CustomerNameFilter": "", "TopN": 0}) == [201]


def test_accounts_info_and_hierarchy(env):
    own = env.call("GetAccountsInfo", SA, {"CustomerId": AGENCY, "OnlyParentAccounts": True})["AccountsInfo"]
    assert [a["Id"] for a in own] == [world.AGENCY_HOUSE_ACCOUNT]
    every = [a["Id"] for a in env.call("GetAccountsInfo", SA, {"OnlyParentAccounts": False})["AccountsInfo"]]
    assert set(every) == {world.AGENCY_HOUSE_ACCOUNT, *_agency_linked_ids(env)}
    assert [a["Id"] for a in env.call("GetAccountsInfo", UA, {})["AccountsInfo"]] == [world.A1]
    tree = env.call("GetLinkedAccountsAndCustomersInfo", SA, {"CustomerId": AGENCY, "OnlyParentAccounts": False})
    assert tree["CustomersInfo"] == [{"Id": world.CUSTOMER_LINKED_CLIENT, "Name": "Litware, Inc."}]
    assert {a["Id"] for a in tree["AccountsInfo"]} == set(every)
    litware = env.call("GetAccountsInfo", SA, {"CustomerId": world.CUSTOMER_LINKED_CLIENT})["AccountsInfo"]
    assert [a["Name"] for a in litware] == ["Litware Search", "Litware Shopping"]
    assert env.adapi_fault("GetAccountsInfo", UA, {"CustomerId": world.CLIENT_A_ID}) == 106


def test_search_accounts(env):
    def ids(user: int, *preds: tuple[str, str, str], size: int = 100, **extra: Any) -> list[int]:
        body = {"Predicates": [{"Field": f, "Operator": o, "Value": v} for f, o, v in preds],
                "PageInfo": {"Index": 0, "Size": size}, **extra}
        return [a["Id"] for a in env.call("SearchAccounts", user, body)["Accounts"]]

    assert ids(SA, ("AccountId", "Equals", str(world.A1))) == [world.A1]
    assert ids(SA, ("AccountId", "In", f"{world.A1},{world.MANAGED_BY_OTHER_AGENCY}")) == [world.A1]  # reach only
    assert ids(SA, ("UserId", "Equals", str(UB))) == [world.A2, world.B1, world.B2]
    assert ids(SA, ("AccountName", "Contains", "margie")) == [149000019, 149000020]
    assert ids(SA, ("AccountNumber", "Equals", world.account_number(world.B2))) == [world.B2]
    assert world.AGENCY_HOUSE_ACCOUNT in ids(SA, ("CustomerId", "Equals", str(AGENCY)))
    assert ids(SA, ("CustomerId", "Equals", str(AGENCY)), ("AccountLifeCycleStatus", "Equals", "Inactive")) == []
    assert ids(SA, ("UserId", "Equals", str(UB)), Ordering=[{"Field": "Name", "Order": "Descending"}]) == [
        world.B2, world.B1, world.A2]
    assert env.api_fault("SearchAccounts", SA, {"PageInfo": {"Index": 0, "Size": 10}}) == [474]
    assert env.api_fault("SearchAccounts", SA, {"Predicates": [{"Field": "AccountId", "Operator": "Equals",
                                                                 "Value": "149000001"}],
                                                 "PageInfo": {"Index": 0, "Size": 1001}}) == [3080]
    assert env.api_fault("SearchAccounts", SA, {"Predicates": [{"Field": "Planet", "Operator": "Equals",
                                                                 "Value": "Mars"}],
                                                 "PageInfo": {"Index": 0, "Size": 10}}) == [3030]
    assert env.adapi_fault("SearchAccounts", CLIENT_A_ADMIN, {
        "Predicates": [{"Field": "UserId", "Operator": "Equals", "Value": str(SA)}],
        "PageInfo": {"Index": 0, "Size": 10}}) == 106


def test_get_customer_and_account_access(env):
    assert env.call("GetCustomer", SA, {"CustomerId": world.CLIENT_A_ID})["Customer"]["Name"] == "Client A"
    assert env.call("GetCustomer", SA, {"CustomerId": 251000103})["Customer"]["Number"] == world.customer_number(
        251000103)  # only pending links: the agency still knows whom it invited
    assert env.call("GetCustomer", SA, {"CustomerId": FABRIKAM})["Customer"]["Name"] == "Fabrikam Agency"
    assert env.adapi_fault("GetCustomer", CLIENT_A_ADMIN, {"CustomerId": world.CLIENT_B_ID}) == 106
    assert env.api_fault("GetCustomer", SA, {"CustomerId": 999999}) == [210]
    assert env.api_fault("GetAccount", SA, {"AccountId": 999999}) == [2108]
    assert env.adapi_fault("GetAccount", SA, {"AccountId": world.MANAGED_BY_OTHER_AGENCY}) == 106
    got = env.call("GetAccount", UA, {"AccountId": world.A1})["Account"]
    assert got["Id"] == world.A1 and got["ParentCustomerId"] == world.CLIENT_A_ID
    assert got["PaymentMethodType"] is None  # documented: always NULL, so prepaid cannot be pre-checked
    assert env.adapi_fault("GetAccount", UA, {"AccountId": world.A2}) == 106


def test_find_accounts_or_customers(env):
    found = env.call("FindAccountsOrCustomersInfo", SA, {"Filter": "client", "TopN": 10})
    rows = found["AccountInfoWithCustomerData"]
    assert [(r["CustomerName"], r["AccountName"]) for r in rows] == [
        ("Client A", "A1"), ("Client A", "A2"), ("Client B", "B1"), ("Client B", "B2")]
    assert len(env.call("FindAccountsOrCustomersInfo", SA, {"Filter": "", "TopN": 3})[
        "AccountInfoWithCustomerData"]) == 3
    assert env.api_fault("FindAccountsOrCustomersInfo", SA, {"Filter": "a", "TopN": 0}) == [201]


def test_due_transitions_are_applied_lazily_by_the_next_request(env):
    # Another process (or plain time) moved the clock without applying anything: the next request catches up.
    with env.state.write() as tx:
        clock = tx.clock()
        clock.advance("31d")
        tx.save_clock(clock)
        assert tx.latest_link(149000005, "AccountLink", AGENCY).link.status == S.LinkPending
    env.call("GetCurrentUser", SA)  # any operation, even one that only reads
    assert env.link(149000005).status == S.LinkExpired
    assert env.link(149000011).status == S.Active  # LinkAccepted -> LinkInProgress -> Active, chained


def test_update_items_by_numbers_and_malformed_items(env):
    link = env.link(149000005)
    by_number = link.to_wire()
    by_number.pop("ClientEntityId")
    by_number.pop("ManagingCustomerId")
    assert env.update(SA, {**by_number, "Status": "LinkCanceled"}) == [[3083, 3083]]  # found, but ids must be echoed
    assert env.update(SA, {"ClientEntityNumber": "NOSUCHONE", "ManagingCustomerId": AGENCY,
                           "Status": "LinkCanceled"}) == [[210]]
    assert env.update(SA, {"ClientEntityId": 149000005, "Status": "LinkCanceled"}) == [
        [rules.E_ID_OR_NUMBER_REQUIRED]]
    assert env.update(SA, {**link.to_wire(), "Type": "PartnerLink"}, None) == [
        [rules.E_LINK_TYPE_INVALID], [rules.E_FIELD_INVALID]]
    assert env.link(149000005).status == S.LinkPending


def test_search_accounts_by_the_callers_own_user_pages_its_reach_and_follows_link_changes(env):
    def page(index: int, size: int, order: str = "Ascending", user: int = SA) -> list[int]:
        body = {"Predicates": [{"Field": "UserId", "Operator": "Equals", "Value": str(user)}],
                "Ordering": [{"Field": "Id", "Order": order}], "PageInfo": {"Index": index, "Size": size}}
        return [a["Id"] for a in env.call("SearchAccounts", SA, body)["Accounts"]]

    every = page(0, 1000)
    assert every == sorted(every) and world.A1 in every and world.AGENCY_HOUSE_ACCOUNT in every
    assert page(1, 3) == every[3:6] and page(0, 3, "Descending") == every[::-1][:3]
    assert page(0, 1000) == every  # the cached reach answers the same
    # An unlink ends the agency's reach of A1: the next page must not come from the reach cached before it.
    assert env.set_status(SA, world.A1, S.UnlinkRequested) is None
    env.advance("25m")
    assert env.link(world.A1).status == S.Inactive
    got = page(0, 1000)
    assert world.A1 not in got
    env.service._reach_cache.clear()
    assert page(0, 1000) == got  # the same as computed afresh (other links moved on in those 25 minutes too)
    assert page(0, 1000, user=UB) == [world.A2, world.B1, world.B2]  # another user's reach: the general path
