"""core/api.py against a canned-reply SOAP stub on 127.0.0.1, through the real bingads SDK."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from api_soap_stub import (
    ENT,
    RESET,
    Reply,
    Slow,
    StubServer,
    adapi_fault,
    api_fault,
    closed_port_url,
    envelope,
    link_xml,
    plain_fault,
    request_link_fields,
    search_page,
    search_reply,
    write_reply,
)
from linkdesk.core.api import (
    AccountInfo,
    ApiError,
    ApiTimeout,
    AuthError,
    Cancelled,
    CustomerInfo,
    CustomerManagementApi,
    MalformedReply,
    OrderBy,
    Predicate,
    RequestRefused,
    ServiceUnavailable,
    ThrottledError,
    UserInfo,
    wire_datetime,
)
from linkdesk.core.model import ClientLink, ClientLinkStatus, CustomerLinkPermission, LinkType, Role

DEV = "DEVTOKEN-secret-1"
AT_OLD, AT_NEW, RT1, RT2 = "AT-old-secret", "AT-new-secret", "RT-one-secret", "RT-two-secret"
PRED = [Predicate("DirectManagingCustomerId", "Equals", 251000001)]
DT_TAGS = ("StartDate", "LastModifiedDateTime")


def _grant_class():
    from bingads.authorization import OAuthDesktopMobileAuthCodeGrant, OAuthTokens

    class OfflineGrant(OAuthDesktopMobileAuthCodeGrant):
        """Refreshes without any network (the real one posts to login.microsoftonline.com)."""

        refreshes = 0

        def request_oauth_tokens_by_refresh_token(self, refresh_token):
            type(self).refreshes += 1
            self.refreshed_with = refresh_token
            time.sleep(0.05)  # widen the window in which concurrent 109s overlap
            self._oauth_tokens = OAuthTokens(AT_NEW, 3600, RT2)
            if self.token_refreshed_callback:
                self.token_refreshed_callback(self._oauth_tokens)
            return self._oauth_tokens

    return OfflineGrant, OAuthTokens


def _new_auth():
    cls, tokens = _grant_class()
    a = cls(client_id="00000000-0000-0000-0000-000000000000")
    a._oauth_tokens = tokens(AT_OLD, 3600, RT1)
    a.callbacks = []
    a.token_refreshed_callback = lambda t: a.callbacks.append(t.access_token)
    return a


# The stub, the authentication and the adapter are shared by the tests of this module (building a ServiceClient parses
# a 285 KB WSDL); the function-scoped fixtures reset their state and wait until no request of a test is in flight.


@pytest.fixture(scope="module")
def _stub_module():
    with StubServer() as s:
        yield s


@pytest.fixture(scope="module")
def _auth_module():
    return _new_auth()


@pytest.fixture(scope="module")
def _api_module(_stub_module, _auth_module):
    a = CustomerManagementApi(developer_token=DEV, authentication=_auth_module, location=_stub_module.url, timeout=5)
    yield a
    a.close()


@pytest.fixture
def stub(_stub_module):
    s = _stub_module
    deadline = time.monotonic() + 10  # a slow answer of an earlier test (timeouts) may still be pending
    while s.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    s.queue.clear()
    s.captured.clear()
    s.handler = None
    s.max_in_flight = 0
    yield s


@pytest.fixture
def auth(_auth_module):
    from bingads.authorization import OAuthTokens

    a = _auth_module
    a._oauth_tokens = OAuthTokens(AT_OLD, 3600, RT1)
    a.callbacks.clear()
    type(a).refreshes = 0
    return a


@pytest.fixture
def sleeps():
    return []


def _wait_idle(a: CustomerManagementApi) -> None:
    """Pages fetched beyond the last one finish in the background; wait for them so no test sees another's."""
    deadline = time.monotonic() + 10
    while len(a._idle) < a.clients_built and time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture
def api(_api_module, stub, auth, sleeps):
    a = _api_module
    a._sleep = sleeps.append
    yield a
    _wait_idle(a)


def _own_api(stub_or_url, auth, sleeps, **kw) -> CustomerManagementApi:
    url = stub_or_url if isinstance(stub_or_url, str) else stub_or_url.url
    return CustomerManagementApi(developer_token=DEV, authentication=auth, location=url, sleep=sleeps.append, **kw)


def _links(n: int, **kw) -> list[ClientLink]:
    return [ClientLink(client_entity_id=149000000 + i, managing_customer_id=251000001, is_bill_to_client=True, **kw)
            for i in range(n)]


# --------------------------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["prod", "Production", " production", "sandbox ", "", "test"])
def test_environment_must_be_exact(env, auth):
    with pytest.raises(ValueError, match="production' or 'sandbox"):
        CustomerManagementApi(developer_token=DEV, authentication=auth, environment=env)


def test_importing_the_module_does_not_import_the_sdk():
    code = "import sys, linkdesk.core.api; print(sorted(m for m in ('bingads', 'suds') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_repr_names_the_endpoint_and_hides_tokens(api, stub):
    text = repr(api)
    assert stub.url in text
    for secret in (DEV, AT_OLD, RT1):
        assert secret not in text


@pytest.mark.parametrize("env, host", [("production", "clientcenter.api.bingads"),
                                       ("sandbox", "clientcenter.api.sandbox.bingads")])
def test_environment_selects_that_wsdl(env, host, auth):
    a = CustomerManagementApi(developer_token=DEV, authentication=auth, environment=env)
    with a._client() as pooled:
        assert host in pooled.service.soap_client.wsdl.services[0].ports[0].location


def test_timeout_is_passed_to_suds(auth):
    a = CustomerManagementApi(developer_token=DEV, authentication=auth, location="http://127.0.0.1:9/x", timeout=7.5)
    with a._client() as pooled:
        assert pooled.service.soap_client.options.timeout == 7.5
        assert pooled.transport.options.timeout == 7.5


# --------------------------------------------------------------------------------------------------------------------
# SearchClientLinks: reply shapes (P2, P3, P5, P7, P8, P9)
# --------------------------------------------------------------------------------------------------------------------


def test_search_request_is_built_from_plain_values(api, stub):
    stub.push(search_reply(""))
    api.search_client_links([Predicate("ClientAccountId", "In", "1,2"), ("DirectManagingCustomerId", "Equals", 7)],
                            ordering=[OrderBy("Name", "Descending")], index=3, size=50)
    req = stub.captured[-1]
    assert req.op == "SearchClientLinks"
    body = req.body_element()
    preds = [request_link_fields(p) for p in body.iter(f"{{{ENT}}}Predicate")]
    assert preds == [{"Field": "ClientAccountId", "Operator": "In", "Value": "1,2"},
                     {"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "7"}]
    assert [request_link_fields(o) for o in body.iter(f"{{{ENT}}}OrderBy")] == [{"Field": "Name",
                                                                                  "Order": "Descending"}]
    assert req.page_index() == 3
    assert req.header_text("DeveloperToken") == DEV
    assert req.header_text("AuthenticationToken") == AT_OLD


@pytest.mark.parametrize("links", ["", None], ids=["empty", "nil"])
def test_search_empty_and_nil_arrays_are_no_links(api, stub, links):
    stub.push(search_reply(links))
    assert api.search_client_links(PRED) == []


def test_search_absent_clientlinks_element_is_no_links(api, stub):
    stub.push(envelope('<SearchClientLinksResponse xmlns="https://bingads.microsoft.com/Customer/v13"/>'))
    assert api.search_client_links(PRED) == []


def test_search_one_link_every_field(api, stub):
    stub.push(search_reply(link_xml(1, Type="CustomerLink", Status="Active", CustomerLinkPermission="Administrative",
                                    IsBillToClient="NIL", Note="hello &lt;b&gt;",
                                    ForwardCompatibilityMap=None, ClientEntityCustomerNumber="C999")
                           .replace("</a:Timestamp>", "</a:Timestamp>"
                                    '<a:ForwardCompatibilityMap xmlns:b="http://schemas.datacontract.org/2004/07/'
                                    'System.Collections.Generic"><b:KeyValuePairOfstringstring><b:key>k</b:key>'
                                    "<b:value>v</b:value></b:KeyValuePairOfstringstring></a:ForwardCompatibilityMap>")))
    [link] = api.search_client_links(PRED)
    assert link.type is LinkType.CustomerLink
    assert link.client_entity_id == 149000001 and isinstance(link.client_entity_id, int)
    assert link.client_entity_number == "F1000001"
    assert link.managing_customer_id == 251000001
    assert link.note == "hello <b>"
    assert link.is_bill_to_client is None
    assert link.inviter_phone is None
    assert link.status is ClientLinkStatus.Active
    assert link.customer_link_permission is CustomerLinkPermission.Administrative
    assert link.suppress_notification is False
    assert link.start_date == datetime(2026, 1, 5, tzinfo=timezone.utc)
    assert link.last_modified_date_time == datetime(2026, 1, 5, 10, 11, 12, 123456, tzinfo=timezone.utc)
    assert link.last_modified_by_user_id == 987654
    assert link.timestamp == "AAAAAAAAB9E="
    assert link.forward_compatibility_map == (("k", "v"),)
    assert link.client_entity_customer_number == "C999"


def test_search_many_links_in_reply_order(api, stub):
    stub.push(search_page(0, 37))
    links = api.search_client_links(PRED)
    assert [l.client_entity_id for l in links] == [149000000 + i for i in range(37)]


def test_unknown_enum_values_are_kept_as_strings(api, stub):
    stub.push(search_reply(link_xml(1, Status="SomeFutureStatus", Type="FutureLink",
                                    CustomerLinkPermission="LinkedEntityOnly")))
    [link] = api.search_client_links(PRED)
    assert link.status == "SomeFutureStatus" and not isinstance(link.status, ClientLinkStatus)
    assert link.type == "FutureLink"
    assert link.customer_link_permission == "LinkedEntityOnly"


def test_absent_elements_keep_defaults_and_unknown_elements_are_ignored(api, stub):
    xml = link_xml(4, Type=None, Note=None, SuppressNotification=None, Timestamp=None, InviterPhone=None)
    xml = xml.replace("</a:ClientLink>", "<a:BrandNewField><a:Deep>x</a:Deep></a:BrandNewField></a:ClientLink>")
    stub.push(search_reply(xml))
    [link] = api.search_client_links(PRED)
    assert link.type is LinkType.AccountLink  # absent Type = AccountLink, as the service defaults it
    assert link.note is None and link.timestamp is None and link.suppress_notification is False
    assert link.client_entity_id == 149000004


def test_reordered_elements_and_other_prefixes_parse_by_namespace(api, stub):
    xml = link_xml(5, p="zz", Type=None)
    xml = xml.replace("</zz:ClientLink>", "<zz:Type>CustomerLink</zz:Type></zz:ClientLink>")
    inner = (f'<q:SearchClientLinksResponse xmlns:q="https://bingads.microsoft.com/Customer/v13">'
             f'<q:ClientLinks xmlns:zz="{ENT}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">{xml}'
             f"</q:ClientLinks></q:SearchClientLinksResponse>")
    stub.push(envelope(inner))
    [link] = api.search_client_links(PRED)
    assert link.type is LinkType.CustomerLink and link.client_entity_id == 149000005


def test_element_in_a_foreign_namespace_is_not_taken_for_a_field(api, stub):
    xml = link_xml(6, Status=None).replace("</a:ClientLink>",
                                           '<x:Status xmlns:x="urn:other">Active</x:Status></a:ClientLink>')
    stub.push(search_reply(xml))
    [link] = api.search_client_links(PRED)
    assert link.status is None


def test_datetime_offsets_become_utc(api, stub):
    stub.push(search_reply(link_xml(1, StartDate="2026-03-01T12:00:00+02:00",
                                    LastModifiedDateTime="2026-03-01T00:00:00")))
    [link] = api.search_client_links(PRED)
    assert link.start_date == datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    assert link.last_modified_date_time.tzinfo is not None


def test_missing_response_header_is_fine(api, stub):
    stub.push(search_reply(link_xml(1), tracking=None))
    assert len(api.search_client_links(PRED)) == 1


@pytest.mark.parametrize("field, value", [("ClientEntityId", "abc"), ("IsBillToClient", "maybe"),
                                          ("StartDate", "yesterday")])
def test_bad_values_are_a_malformed_reply(api, stub, field, value):
    stub.push(search_reply(link_xml(1, **{field: value})))
    with pytest.raises(MalformedReply) as info:
        api.search_client_links(PRED)
    assert field in info.value.detail
    assert info.value.tracking_id == "trk-1"


def test_unexpected_response_element_is_malformed(api, stub):
    stub.push(*[envelope('<GetUserResponse xmlns="https://bingads.microsoft.com/Customer/v13"/>')] * 4)
    with pytest.raises(MalformedReply):
        api.search_client_links(PRED)


def test_xml_that_is_not_soap_is_malformed(api, stub):
    stub.push(*[Reply(200, "<html><body>hello</body></html>")] * 4)
    with pytest.raises(MalformedReply):
        api.search_client_links(PRED)


def test_page_size_is_checked(api):
    with pytest.raises(ValueError):
        api.search_client_links(PRED, size=101)


# --------------------------------------------------------------------------------------------------------------------
# Add / Update: PartialErrors positions (P1), OperationErrors, batching, what is sent (P4, P7, full update)
# --------------------------------------------------------------------------------------------------------------------

# Every wire pattern of api-probe/pe_patterns.out, and what suds made of it (the index loss we avoid).
PE_PATTERNS = ["N 1401", "1400 N", "N 1401 N 1403", "N", "N N", "1400 1401", "1400"]


@pytest.mark.parametrize("pattern", PE_PATTERNS)
def test_partial_errors_are_positional(api, stub, pattern):
    tokens = pattern.split()
    stub.push(write_reply("AddClientLinks", pattern))
    results = api.add_client_links(_links(len(tokens)))
    assert [r.index for r in results] == list(range(len(tokens)))
    assert [None if r.ok else r.errors[0].code for r in results] == [None if t == "N" else int(t) for t in tokens]
    for r, link in zip(results, _links(len(tokens))):
        assert r.link == link


@pytest.mark.parametrize("partial", ["nil", "absent", "empty"])
def test_no_partial_errors_means_every_link_succeeded(api, stub, partial):
    stub.push(write_reply("UpdateClientLinks", partial=partial))
    results = api.update_client_links(_links(3, status=ClientLinkStatus.LinkCanceled))
    assert [r.ok for r in results] == [True, True, True]


def test_partial_error_details_are_kept(api, stub):
    stub.push(write_reply("AddClientLinks", "N 1410"))
    r = api.add_client_links(_links(2))[1]
    assert r.errors[0].code == 1410 and r.errors[0].message == "message 1410"
    assert r.errors[0].symbol == "ClientLinkAlreadyExists"
    assert "open invitation" in r.errors[0].user_message


def test_partial_errors_count_mismatch_is_malformed_and_maybe_applied(api, stub):
    stub.push(write_reply("AddClientLinks", "N 1410"))
    with pytest.raises(MalformedReply) as info:
        api.add_client_links(_links(3))
    assert info.value.maybe_applied


def test_operation_errors_fail_every_link_of_the_batch(api, stub):
    stub.push(write_reply("AddClientLinks", operation_errors=[3024, 201]), write_reply("AddClientLinks", "N N"))
    results = api.add_client_links(_links(12))
    assert len(results) == 12
    assert all([e.code for e in r.errors] == [3024, 201] for r in results[:10])
    assert all(r.ok for r in results[10:])


def test_api_fault_on_a_batch_maps_to_its_links_and_other_batches_still_go(api, stub):
    stub.push(write_reply("UpdateClientLinks", "N " * 10), api_fault(3087))
    results = api.update_client_links(_links(13, status=ClientLinkStatus.LinkCanceled))
    assert [r.ok for r in results] == [True] * 10 + [False] * 3
    assert results[12].errors[0].code == 3087 and results[12].index == 12
    assert len(stub.captured) == 2


def test_batching_25_links_into_10_10_5(api, stub):
    stub.push(write_reply("AddClientLinks", "N " * 10), write_reply("AddClientLinks", "N " * 9 + "1410"),
              write_reply("AddClientLinks", "1471 N N N N"))
    links = _links(25)
    results = api.add_client_links(links)
    assert [len(r.client_links()) for r in stub.captured] == [10, 10, 5]
    sent_ids = [int(request_link_fields(el)["ClientEntityId"]) for r in stub.captured for el in r.client_links()]
    assert sent_ids == [l.client_entity_id for l in links]
    assert [r.index for r in results] == list(range(25))
    assert [i for i, r in enumerate(results) if not r.ok] == [19, 20]
    assert results[19].errors[0].code == 1410 and results[20].errors[0].code == 1471


def test_empty_write_sends_nothing(api, stub):
    assert api.add_client_links([]) == []
    assert stub.captured == []


def test_add_sends_only_invitation_fields_and_naive_utc_dates(api, stub):
    stub.push(write_reply("AddClientLinks", "N"))
    draft = ClientLink(client_entity_number="F123", managing_customer_id=251000001, is_bill_to_client=False,
                       start_date=datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))),
                       status=ClientLinkStatus.Active, timestamp="AAA=", name="Mine")
    api.add_client_links([draft])
    [el] = stub.captured[-1].client_links()
    fields = request_link_fields(el)
    assert fields == {"Type": "AccountLink", "ClientEntityNumber": "F123", "ManagingCustomerId": "251000001",
                      "Name": "Mine", "IsBillToClient": "false", "StartDate": "2026-03-01T10:00:00",
                      "SuppressNotification": "false"}
    assert "<ns" in stub.captured[-1].text and "Status" not in stub.captured[-1].text  # never an empty <Status/>


def test_update_sends_the_searched_link_back_whole(api, stub):
    stub.push(search_reply(link_xml(1, Note="old note", ClientEntityCustomerNumber="C77")))
    [read] = api.search_client_links(PRED)
    stub.push(write_reply("UpdateClientLinks", "N"))
    api.update_client_links([read.replace(status=ClientLinkStatus.LinkCanceled)])
    [el] = stub.captured[-1].client_links()
    sent = request_link_fields(el)
    assert sent == {
        "Type": "AccountLink", "ClientEntityId": "149000001", "ClientEntityNumber": "F1000001",
        "ClientEntityName": "Client 1", "ManagingCustomerId": "251000001", "ManagingCustomerNumber": "C251X001",
        "ManagingCustomerName": "Fabrikam Agency", "Note": "old note", "Name": "Link 1",
        "InviterEmail": "ops@fabrikam.example", "InviterName": "Fabrikam Agency", "IsBillToClient": "true",
        "StartDate": "2026-01-05T00:00:00", "Status": "LinkCanceled", "SuppressNotification": "false",
        "LastModifiedDateTime": "2026-01-05T10:11:12.123456", "LastModifiedByUserId": "987654",
        "Timestamp": "AAAAAAAAB9E=", "ClientEntityCustomerNumber": "C77",
    }
    # Elements in WSDL order (suds serialises dicts in schema order; checked, not assumed).
    order = [re.sub(r"^\{.*\}", "", c.tag) for c in el]
    assert order == [
        "Type", "ClientEntityId", "ClientEntityNumber", "ClientEntityName", "ManagingCustomerId",
        "ManagingCustomerNumber", "ManagingCustomerName", "Note", "Name", "InviterEmail", "InviterName",
        "IsBillToClient", "StartDate", "Status", "SuppressNotification", "LastModifiedDateTime",
        "LastModifiedByUserId", "Timestamp", "ClientEntityCustomerNumber"]


def test_no_datetime_is_sent_with_an_offset(api, stub):
    aware = datetime(2026, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    link = _links(1, status=ClientLinkStatus.LinkAccepted, start_date=aware,
                  last_modified_date_time=datetime(2026, 1, 1, tzinfo=timezone.utc))[0]
    stub.push(write_reply("UpdateClientLinks", "N"))
    api.update_client_links([link])
    text = stub.captured[-1].text
    values = re.findall(r"<ns\d:(StartDate|LastModifiedDateTime)>([^<]*)<", text)
    assert dict(values) == {"StartDate": "2026-05-02T04:30:00", "LastModifiedDateTime": "2026-01-01T00:00:00"}
    for _, v in values:
        assert not re.search(r"(Z|[+-]\d\d:\d\d)$", v)


@pytest.mark.parametrize("value, expected", [
    (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
    (datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc), "2026-01-02T03:04:05.120000"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2026-01-02T01:04:05"),
    ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05"),
    ("2026-01-02T03:04:05.1234567+01:00", "2026-01-02T02:04:05.123456"),
])
def test_wire_datetime(value, expected):
    assert wire_datetime(value) == expected


# --------------------------------------------------------------------------------------------------------------------
# Faults and failures -> typed errors
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code, symbol", [(105, "InvalidCredentials"), (106, "UserIsNotAuthorized"),
                                          (116, "RequestMissingHeaders"), (120, "UserLoginAccessDenied"),
                                          (1001, "UserNotAuthorized")])
def test_auth_faults(api, stub, code, symbol, auth):
    stub.push(adapi_fault(code, symbol, f"problem {code}"))
    with pytest.raises(AuthError) as info:
        api.get_user()
    e = info.value
    assert (e.code, e.symbol, e.tracking_id, e.retryable) == (code, symbol, "trk-f", False)
    assert e.meaning and e.user_message.endswith(".")
    assert len(stub.captured) == 1  # never retried
    assert type(auth).refreshes == 0


def test_1001_in_an_api_fault_is_an_auth_error(api, stub):
    stub.push(api_fault(1001))
    with pytest.raises(AuthError) as info:
        api.search_client_links(PRED)
    assert info.value.code == 1001 and info.value.tracking_id == "trk-f2"


def test_109_refreshes_the_token_and_retries(api, stub, auth):
    stub.push(adapi_fault(109, "AuthenticationTokenExpired"), search_page(0, 2))
    assert len(api.search_client_links(PRED)) == 2
    assert [r.header_text("AuthenticationToken") for r in stub.captured] == [AT_OLD, AT_NEW]
    assert auth.callbacks == [AT_NEW] and auth.refreshed_with == RT1


def test_109_after_refresh_is_an_auth_error(api, stub, auth):
    stub.push(adapi_fault(109, "AuthenticationTokenExpired"), adapi_fault(109, "AuthenticationTokenExpired"))
    with pytest.raises(AuthError) as info:
        api.get_user()
    assert info.value.code == 109 and "linkdesk auth login" in info.value.user_message
    assert type(auth).refreshes == 1 and len(stub.captured) == 2


def test_concurrent_109s_refresh_once(api, stub, auth):
    def handler(req):
        if req.header_text("AuthenticationToken") == AT_OLD:
            return Slow(0.1, adapi_fault(109, "AuthenticationTokenExpired"))
        return search_page(req.page_index() * 100, 100 if req.page_index() < 3 else 7)

    stub.handler = handler
    links = list(api.iter_client_links(PRED, concurrency=4))
    assert len(links) == 307
    assert type(auth).refreshes == 1 and auth.callbacks == [AT_NEW]


def test_failed_token_refresh_is_an_auth_error(stub, sleeps):
    from bingads.authorization import OAuthTokenRequestException

    def boom(refresh_token):
        raise OAuthTokenRequestException("invalid_grant", f"refresh token {RT1} was revoked")

    own = _new_auth()
    own.request_oauth_tokens_by_refresh_token = boom
    stub.push(adapi_fault(109, "AuthenticationTokenExpired"))
    with pytest.raises(AuthError) as info:
        _own_api(stub, own, sleeps).get_user()
    assert info.value.symbol == "invalid_grant"
    assert RT1 not in str(info.value) and RT1 not in (info.value.detail or "")


def test_117_is_retried_after_the_wait_it_asks_for(api, stub, sleeps):
    stub.push(adapi_fault(117, "CallRateExceeded", "Resubmit after waiting 45 seconds."), search_page(0, 1))
    assert len(api.search_client_links(PRED)) == 1
    assert sleeps == [45.0]


def test_117_default_wait_and_retry_after_header(api, stub, sleeps):
    r = adapi_fault(117, "CallRateExceeded", "slow down")
    r.headers["Retry-After"] = "12"
    stub.push(adapi_fault(117, "CallRateExceeded", "slow down"), r, search_page(0, 1))
    api.search_client_links(PRED)
    assert sleeps == [60.0, 12.0]


def test_117_gives_up_after_throttle_retries(stub, auth, sleeps):
    a = _own_api(stub, auth, sleeps, throttle_retries=2)
    stub.push(*[adapi_fault(117, "CallRateExceeded")] * 3)
    with pytest.raises(ThrottledError) as info:
        a.get_user()
    assert info.value.code == 117 and info.value.retry_after == 60 and info.value.retryable
    assert sleeps == [60.0, 60.0] and len(stub.captured) == 3


def test_117_on_a_write_is_retried(api, stub, sleeps):
    stub.push(adapi_fault(117, "CallRateExceeded"), write_reply("AddClientLinks", "N"))
    assert api.add_client_links(_links(1))[0].ok
    assert sleeps == [60.0]


def test_api_fault_is_a_refusal_and_never_retried(api, stub, sleeps):
    stub.push(api_fault(3030, 474))
    with pytest.raises(RequestRefused) as info:
        api.search_client_links(PRED)
    e = info.value
    assert e.code == 3030 and e.symbol == "InvalidPredicate" and e.tracking_id == "trk-f2"
    assert [x.code for x in e.errors] == [3030, 474]
    assert e.meaning.startswith("The Predicate passed in the search is invalid")
    assert e.user_message.startswith("The search conditions were not valid.")
    assert not e.retryable and sleeps == [] and len(stub.captured) == 1


def test_fault_codes_arrive_as_strings_and_are_ints(api, stub):
    stub.push(adapi_fault(106, "UserIsNotAuthorized"))
    with pytest.raises(AuthError) as info:
        api.get_user()
    assert info.value.code == 106 and isinstance(info.value.errors[0].code, int)


def test_plain_soap_fault_is_a_refusal(api, stub):
    stub.push(plain_fault("The operation GetFoo is not simulated."))
    with pytest.raises(RequestRefused) as info:
        api.get_user()
    assert "not simulated" in info.value.user_message and info.value.code is None


def test_fault_with_http_200_is_still_a_fault(api, stub):
    stub.push(api_fault(3030))
    stub.queue[0].status = 200
    with pytest.raises(RequestRefused):
        api.search_client_links(PRED)


def test_internal_error_0_is_retried(api, stub, sleeps):
    stub.push(adapi_fault(0, "InternalError"), search_page(0, 1))
    assert len(api.search_client_links(PRED)) == 1
    assert sleeps == [1.0]


def test_503_html_is_service_unavailable_and_retried_with_backoff(api, stub, sleeps):
    html = Reply(503, "<html><head><title>Service Unavailable</title></head><body><p>down</body></html>",
                 {"Content-Type": "text/html"})
    stub.push(html, html, html, search_page(0, 1))
    assert len(api.search_client_links(PRED)) == 1
    assert sleeps == [1.0, 2.0, 4.0]


def test_503_gives_up_after_retries(api, stub, sleeps):
    stub.push(*[Reply(503, "<html>busy</html>")] * 4)
    with pytest.raises(ServiceUnavailable) as info:
        api.get_user()
    assert info.value.http_status == 503 and info.value.retryable
    assert "503" in info.value.user_message
    assert len(stub.captured) == 4 and sleeps == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("body", ["<html><body>oops<br></body></html>", "Internal Server Error", ""])
def test_500_that_is_not_soap_is_service_unavailable(api, stub, body):
    stub.push(*[Reply(500, body, {"Content-Type": "text/html"})] * 4)
    with pytest.raises(ServiceUnavailable) as info:
        api.get_user()
    assert info.value.http_status == 500


def test_404_is_not_retried(api, stub, sleeps):
    stub.push(Reply(404, "<html>not found</html>"))
    with pytest.raises(ServiceUnavailable) as info:
        api.get_user()
    assert not info.value.retryable and sleeps == []


def test_401_is_an_auth_error(api, stub):
    stub.push(Reply(401, "no"))
    with pytest.raises(AuthError):
        api.get_user()


@pytest.mark.parametrize("body", ["<s:Envelope", "not xml at all", "<a><b></a>", ""])
def test_malformed_200_is_malformed_reply(api, stub, body, sleeps):
    # A garbled reply to a read is transient (a proxy, a cut-off body): retried with backoff, then reported.
    stub.push(*[Reply(200, body)] * 4)
    with pytest.raises(MalformedReply) as info:
        api.get_user()
    assert info.value.retryable and sleeps == [1.0, 2.0, 4.0]


def test_a_malformed_reply_to_a_read_is_retried_once_good(api, stub, sleeps):
    stub.push(Reply(200, "<s:Envelope"), search_reply(""))
    assert api.search_client_links(PRED) == [] and sleeps == [1.0]


def test_a_malformed_reply_to_a_write_is_never_retried(api, stub, sleeps):
    stub.push(Reply(200, "<s:Envelope"))
    with pytest.raises(MalformedReply) as info:
        api.add_client_links(_links(1))
    assert info.value.maybe_applied and sleeps == [] and len(stub.captured) == 1


def test_connection_reset_is_service_unavailable_and_retried(api, stub, sleeps):
    stub.push(RESET, search_page(0, 1))
    assert len(api.search_client_links(PRED)) == 1
    assert sleeps == [1.0]


def test_connection_reset_gives_up(api, stub):
    stub.push(*[RESET] * 4)
    with pytest.raises(ServiceUnavailable) as info:
        api.get_user()
    assert info.value.retryable and info.value.sent


def test_connection_refused(auth, sleeps):
    a = _own_api(closed_port_url(), auth, sleeps, retries=2)
    with pytest.raises(ServiceUnavailable) as info:
        a.get_user()
    assert not info.value.sent and "Could not connect to 127.0.0.1" in info.value.user_message
    assert sleeps == [1.0, 2.0]


def test_timeout(stub, auth, sleeps):
    a = _own_api(stub, auth, sleeps, timeout=0.3, retries=1)
    stub.push(Slow(1.0, search_page(0, 1)), search_page(0, 2))
    assert len(a.search_client_links(PRED)) == 2
    assert sleeps == [1.0]
    stub.push(Slow(1.0, search_page(0, 1)), Slow(1.0, search_page(0, 1)))
    with pytest.raises(ApiTimeout) as info:
        a.search_client_links(PRED)
    assert info.value.retryable and "0.3 seconds" in info.value.user_message


def test_write_is_not_retried_after_a_timeout(stub, auth, sleeps):
    a = _own_api(stub, auth, sleeps, timeout=0.3)
    stub.push(write_reply("AddClientLinks", "N " * 10), Slow(1.0, write_reply("AddClientLinks", "N N")))
    with pytest.raises(ApiTimeout) as info:
        a.add_client_links(_links(12))
    e = info.value
    assert e.maybe_applied and "sync before trying again" in e.user_message
    assert len(stub.captured) == 2 and sleeps == []
    assert [r.index for r in e.results_so_far] == list(range(10))


@pytest.mark.parametrize("failure", [RESET, Reply(503, "<html>busy</html>"), Reply(200, "<broken")])
def test_write_is_not_retried_when_it_may_have_been_applied(api, stub, sleeps, failure):
    stub.push(failure, write_reply("UpdateClientLinks", "N"))
    with pytest.raises(ApiError) as info:
        api.update_client_links(_links(1, status=ClientLinkStatus.LinkCanceled))
    assert info.value.maybe_applied and len(stub.captured) == 1 and sleeps == []


def test_write_is_retried_when_the_connection_was_refused(auth, sleeps):
    a = _own_api(closed_port_url(), auth, sleeps, retries=1)
    with pytest.raises(ServiceUnavailable) as info:
        a.add_client_links(_links(1))
    assert sleeps == [1.0] and not info.value.maybe_applied


def test_tokens_never_appear_in_errors_or_logs(api, stub, caplog, auth):
    caplog.set_level(logging.DEBUG)
    stub.push(adapi_fault(105, "InvalidCredentials", f"token {AT_OLD} with developer token {DEV} is invalid",
                          detail=f"refresh {RT1}"))
    with pytest.raises(AuthError) as info:
        api.get_user()
    e = info.value
    stub.push(api_fault(3030), Reply(503, f"<html>{AT_OLD}</html>"), Reply(503, ""), Reply(503, ""), Reply(503, ""))
    with pytest.raises(RequestRefused) as info2:
        api.get_user()
    with pytest.raises(ServiceUnavailable) as info3:
        api.get_user()
    texts = [str(x) for x in (e, info2.value, info3.value)] + [repr(x) for x in (e, info2.value, info3.value)]
    texts += [x.detail or "" for x in (e, info2.value, info3.value)]
    texts += [er.message + (er.details or "") for er in e.errors]
    texts += [caplog.text, repr(api)]
    for secret in (DEV, AT_OLD, RT1):
        assert not any(secret in t for t in texts), secret
    assert "[redacted]" in e.errors[0].message


# --------------------------------------------------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------------------------------------------------


def _paged_handler(total: int, delay: float = 0.02, requested: list | None = None):
    def handler(req):
        i = req.page_index()
        if requested is not None:
            requested.append(i)
        start = i * 100
        return Slow(delay, search_page(start, max(0, min(100, total - start))))
    return handler


def test_paging_250_links_concurrently_in_order(api, stub):
    requested: list[int] = []
    stub.handler = _paged_handler(250, requested=requested)
    progress: list[int] = []
    links = list(api.iter_client_links(PRED, concurrency=4, progress=progress.append))
    assert [l.client_entity_id for l in links] == [149000000 + i for i in range(250)]
    assert stub.max_in_flight <= 4
    # No page asked twice; pages 0-2, plus at most concurrency-1 beyond the short page (some of which may still be on
    # their way to the server when the last link is yielded: ``requested`` is written as requests arrive).
    assert len(set(requested)) == len(requested)
    assert {0, 1, 2} <= set(requested) <= set(range(3 + 3))
    assert progress == [100, 200, 250]
    # Default ordering keeps paging stable.
    assert all(r.body_element().find(f".//{{{ENT}}}OrderBy") is not None for r in stub.captured)


def test_paging_is_concurrent(api, stub):
    # 8 pages at 0.15 s each: sequential ≥ 1.2 s; with 4 in flight about 0.3-0.45 s.
    api.warm_up(4)
    stub.handler = _paged_handler(750, delay=0.15)
    assert len(list(api.iter_client_links(PRED, concurrency=4))) == 750
    assert stub.max_in_flight == 4  # bounded concurrency, observed at the server (bench/ measures the speed-up)


def test_paging_exact_multiple_stops_at_the_empty_page(api, stub):
    requested: list[int] = []
    stub.handler = _paged_handler(200, requested=requested)
    assert len(list(api.iter_client_links(PRED, concurrency=1))) == 200
    assert requested == [0, 1, 2]


def test_paging_skips_links_seen_on_an_earlier_page(api, stub):
    def handler(req):
        i = req.page_index()
        if i == 0:
            return search_page(0, 100)
        return search_reply(link_xml(99) + link_xml(100) + link_xml(101))  # 99 shifted onto page 1

    stub.handler = handler
    ids = [l.client_entity_id - 149000000 for l in api.iter_client_links(PRED, concurrency=2)]
    assert ids == list(range(102))


def test_paging_error_propagates(api, stub):
    def handler(req):
        return api_fault(3030) if req.page_index() == 1 else search_page(0, 100)

    stub.handler = handler
    got = []
    with pytest.raises(RequestRefused):
        for link in api.iter_client_links(PRED, concurrency=3):
            got.append(link)
    assert len(got) == 100


def test_paging_can_be_cancelled(api, stub):
    cancel = threading.Event()
    stub.handler = _paged_handler(10_000, delay=0.05)
    got = 0
    with pytest.raises(Cancelled):
        for _ in api.iter_client_links(PRED, concurrency=4, cancel=cancel):
            got += 1
            if got == 150:
                cancel.set()
    assert got < 400
    time.sleep(0.2)
    assert len(stub.captured) < 12


def test_clients_are_not_shared_between_threads_and_are_reused(stub, auth, sleeps):
    api = _own_api(stub, auth, sleeps, max_workers=3)
    stub.handler = _paged_handler(1000, delay=0.05)
    list(api.iter_client_links(PRED, concurrency=3))
    built = api.clients_built
    assert 1 <= built <= 3
    list(api.iter_client_links(PRED, concurrency=3))
    assert api.clients_built == built  # the second run reuses them
    _wait_idle(api)
    with api._pool_lock:
        ids = [id(p) for p in api._idle]
    assert len(ids) == len(set(ids)) == built  # every client back in the pool exactly once


# --------------------------------------------------------------------------------------------------------------------
# Hierarchy operations
# --------------------------------------------------------------------------------------------------------------------

ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
I = "http://www.w3.org/2001/XMLSchema-instance"
TNS = "https://bingads.microsoft.com/Customer/v13"


def test_get_user(api, stub):
    stub.push(envelope(
        f'<GetUserResponse xmlns="{TNS}"><User xmlns:a="{ENT}" xmlns:i="{I}"><a:ContactInfo><a:Address i:nil="true"/>'
        "<a:Email>ann@fabrikam.example</a:Email><a:Phone1>555</a:Phone1></a:ContactInfo>"
        "<a:CustomerId>251000001</a:CustomerId><a:Id>7001</a:Id><a:Name><a:FirstName>Ann</a:FirstName>"
        "<a:LastName>Lee</a:LastName><a:MiddleInitial i:nil=\"true\"/></a:Name>"
        "<a:UserLifeCycleStatus>Active</a:UserLifeCycleStatus><a:UserName>ann</a:UserName><a:Unknown>x</a:Unknown>"
        f'</User><CustomerRoles xmlns:a="{ENT}" xmlns:i="{I}">'
        f'<a:CustomerRole><a:RoleId>41</a:RoleId><a:CustomerId>251000001</a:CustomerId><a:AccountIds xmlns:b="{ARR}"/>'
        f'<a:LinkedAccountIds xmlns:b="{ARR}"><b:long>149000001</b:long><b:long>149000002</b:long></a:LinkedAccountIds>'
        '<a:CustomerLinkPermission i:nil="true"/></a:CustomerRole>'
        f'<a:CustomerRole><a:RoleId>16</a:RoleId><a:CustomerId>300</a:CustomerId><a:AccountIds xmlns:b="{ARR}">'
        f'<b:long>5</b:long></a:AccountIds><a:LinkedAccountIds i:nil="true"/>'
        "<a:CustomerLinkPermission>Standard</a:CustomerLinkPermission></a:CustomerRole>"
        "</CustomerRoles></GetUserResponse>"))
    user, roles = api.get_user()
    assert (user.id, user.user_name, user.customer_id, user.first_name, user.last_name, user.email, user.phone) == (
        7001, "ann", 251000001, "Ann", "Lee", "ann@fabrikam.example", "555")
    assert roles == user.roles and len(roles) == 2
    assert roles[0].role is Role.SuperAdmin and roles[0].account_ids is None
    assert roles[0].linked_account_ids == (149000001, 149000002)
    assert roles[1].role is Role.AdvertiserCampaignManager and roles[1].account_ids == (5,)
    assert roles[1].linked_account_ids == () and roles[1].customer_link_permission == "Standard"
    assert len(stub.captured[-1].body_element()) == 0  # <GetUserRequest/>: no UserId = the authenticated user


def test_get_user_by_id_and_nil_user(api, stub):
    stub.push(envelope(f'<GetUserResponse xmlns="{TNS}"><User i:nil="true" xmlns:i="{I}"/>'
                       f'<CustomerRoles i:nil="true" xmlns:i="{I}"/></GetUserResponse>'))
    with pytest.raises(MalformedReply):
        api.get_user(42)
    assert re.search(r"<ns\d:UserId>42</ns\d:UserId>", stub.captured[-1].text)


def test_get_users_info(api, stub):
    stub.push(envelope(f'<GetUsersInfoResponse xmlns="{TNS}"><UsersInfo xmlns:a="{ENT}" xmlns:i="{I}">'
                       "<a:UserInfo><a:Id>1</a:Id><a:UserName>ann</a:UserName></a:UserInfo>"
                       '<a:UserInfo><a:Id>2</a:Id><a:UserName i:nil="true"/></a:UserInfo>'
                       "</UsersInfo></GetUsersInfoResponse>"))
    assert api.get_users_info(251000001) == [UserInfo(1, "ann"), UserInfo(2, None)]
    assert re.search(r"<ns\d:CustomerId>251000001</ns\d:CustomerId>", stub.captured[-1].text)


def _infos(tag, items):
    return "".join(f"<a:{tag}>{x}</a:{tag}>" for x in items)


def test_get_customers_info(api, stub):
    stub.push(envelope(f'<GetCustomersInfoResponse xmlns="{TNS}"><CustomersInfo xmlns:a="{ENT}" xmlns:i="{I}">'
                       + _infos("CustomerInfo", ["<a:Id>1</a:Id><a:Name>Fabrikam</a:Name>",
                                                 "<a:Id>2</a:Id><a:Name>Contoso</a:Name>"])
                       + "</CustomersInfo></GetCustomersInfoResponse>"))
    assert api.get_customers_info("Fa", top_n=10) == [CustomerInfo(1, "Fabrikam"), CustomerInfo(2, "Contoso")]
    text = stub.captured[-1].text
    assert re.search(r"CustomerNameFilter>Fa<", text) and re.search(r"TopN>10<", text)


def test_get_accounts_info(api, stub):
    stub.push(envelope(f'<GetAccountsInfoResponse xmlns="{TNS}"><AccountsInfo xmlns:a="{ENT}" xmlns:i="{I}">'
                       + _infos("AccountInfo", ["<a:Id>149000001</a:Id><a:Name>A1</a:Name><a:Number>F1</a:Number>"
                                                "<a:AccountLifeCycleStatus>Active</a:AccountLifeCycleStatus>"
                                                '<a:PauseReason i:nil="true"/>'])
                       + "</AccountsInfo></GetAccountsInfoResponse>"))
    assert api.get_accounts_info(251000001, only_parent_accounts=True) == [
        AccountInfo(149000001, "A1", "F1", "Active", None)]
    text = stub.captured[-1].text
    assert re.search(r"CustomerId>251000001<", text) and re.search(r"OnlyParentAccounts>true<", text)


def test_get_linked_accounts_and_customers_info(api, stub):
    stub.push(envelope(
        f'<GetLinkedAccountsAndCustomersInfoResponse xmlns="{TNS}"><AccountsInfo xmlns:a="{ENT}" xmlns:i="{I}">'
        + _infos("AccountInfo", ["<a:Id>1</a:Id><a:Name>A</a:Name><a:Number>N1</a:Number>"
                                 "<a:AccountLifeCycleStatus>Pause</a:AccountLifeCycleStatus><a:PauseReason>2"
                                 "</a:PauseReason>"])
        + f'</AccountsInfo><CustomersInfo xmlns:a="{ENT}" xmlns:i="{I}">'
        + _infos("CustomerInfo", ["<a:Id>9</a:Id><a:Name>Child</a:Name>"])
        + "</CustomersInfo></GetLinkedAccountsAndCustomersInfoResponse>"))
    accounts, customers = api.get_linked_accounts_and_customers_info(251000001)
    assert accounts == [AccountInfo(1, "A", "N1", "Pause", 2)] and customers == [CustomerInfo(9, "Child")]


ACCOUNT = ("<a:BillToCustomerId>251000001</a:BillToCustomerId><a:CurrencyCode>USDollar</a:CurrencyCode>"
           "<a:AccountFinancialStatus>ClearFinancialStatus</a:AccountFinancialStatus><a:Id>149000001</a:Id>"
           "<a:Language>English</a:Language><a:Name>A1</a:Name><a:Number>F1000001</a:Number>"
           '<a:ParentCustomerId>300</a:ParentCustomerId><a:PaymentMethodType i:nil="true"/>'
           "<a:AccountLifeCycleStatus>Active</a:AccountLifeCycleStatus><a:PauseReason i:nil=\"true\"/>"
           "<a:LinkedAgencies><a:CustomerInfo><a:Id>251000001</a:Id><a:Name>Fabrikam</a:Name></a:CustomerInfo>"
           "</a:LinkedAgencies><a:TaxCertificate i:nil=\"true\"/>")


def test_get_account_with_linked_agencies(api, stub):
    stub.push(envelope(f'<GetAccountResponse xmlns="{TNS}"><Account xmlns:a="{ENT}" xmlns:i="{I}">{ACCOUNT}'
                       "</Account></GetAccountResponse>"))
    acc = api.get_account(149000001)
    assert (acc.id, acc.name, acc.number, acc.parent_customer_id, acc.bill_to_customer_id) == (
        149000001, "A1", "F1000001", 300, 251000001)
    assert acc.linked_agency_ids == (251000001,) and acc.financial_status == "ClearFinancialStatus"
    assert acc.currency_code == "USDollar" and acc.prepaid is None


def test_get_account_1472_is_a_refusal(api, stub):
    stub.push(api_fault(1472))
    with pytest.raises(RequestRefused) as info:
        api.get_account(149000001)
    assert "5 to 30 minutes" in info.value.user_message


def test_search_accounts(api, stub):
    stub.push(envelope(f'<SearchAccountsResponse xmlns="{TNS}"><Accounts xmlns:a="{ENT}" xmlns:i="{I}">'
                       f"<a:AdvertiserAccount>{ACCOUNT}</a:AdvertiserAccount>"
                       f"<a:AdvertiserAccount>{ACCOUNT.replace('149000001', '149000002')}</a:AdvertiserAccount>"
                       "</Accounts></SearchAccountsResponse>"))
    accounts = api.search_accounts([Predicate("UserId", "Equals", 7001)], size=500)
    assert [a.id for a in accounts] == [149000001, 149000002]
    text = stub.captured[-1].text
    assert re.search(r"Field>UserId<", text) and re.search(r"Size>500<", text)


def test_get_customer(api, stub):
    stub.push(envelope(f'<GetCustomerResponse xmlns="{TNS}"><Customer xmlns:a="{ENT}" xmlns:i="{I}">'
                       "<a:CustomerFinancialStatus>ClearFinancialStatus</a:CustomerFinancialStatus><a:Id>300</a:Id>"
                       "<a:MarketCountry>US</a:MarketCountry><a:MarketLanguage>English</a:MarketLanguage>"
                       "<a:Name>Contoso</a:Name><a:CustomerLifeCycleStatus>Active</a:CustomerLifeCycleStatus>"
                       "<a:Number>C300</a:Number></Customer></GetCustomerResponse>"))
    c = api.get_customer(300)
    assert (c.id, c.name, c.number, c.market_country, c.financial_status) == (300, "Contoso", "C300", "US",
                                                                              "ClearFinancialStatus")


# --------------------------------------------------------------------------------------------------------------------
# Parse cost: raw path vs suds objects (the reason for the raw path)
# --------------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------------
# Against the built-in simulator (its SOAP serialiser, not its business rules): the raw parser must read exactly what
# the SDK's own suds objects read from the same replies.
# --------------------------------------------------------------------------------------------------------------------

AGENCY_ADMIN = "admin@contoso.example"
AGENCY_ID = 251000001


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from linkdesk.core.simulator.app import Simulator

    with Simulator(tmp_path_factory.mktemp("sim") / "sim.db", scale=120, seed=3) as s:
        yield s


def _sim_api(sim, auth, **kw) -> CustomerManagementApi:
    from linkdesk.core.simulator.service import SANDBOX_DEVELOPER_TOKEN

    return CustomerManagementApi(developer_token=kw.pop("developer_token", SANDBOX_DEVELOPER_TOKEN),
                                 authentication=auth, environment="sandbox", location=sim.url, **kw)


def _suds_value(obj, wire):
    v = getattr(obj, wire, None)
    if wire == "ForwardCompatibilityMap":
        pairs = getattr(v, "KeyValuePairOfstringstring", None) or []
        return tuple((p.key, p.value) for p in pairs)
    if wire == "SuppressNotification" and v is None:
        return False
    if isinstance(v, datetime):
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
    if wire == "Type" and not v:
        return "AccountLink"
    return str(v) if v.__class__.__name__ == "Text" else v


def _mine(link, attr):
    v = getattr(link, attr)
    return v.value if hasattr(v, "value") else v


def test_simulator_links_parse_exactly_like_suds_objects(sim):
    from bingads.service_client import ServiceClient

    from linkdesk.core.model import CLIENT_LINK_WIRE

    api = _sim_api(sim, sim.authorization(AGENCY_ADMIN))
    mine = list(api.iter_client_links([Predicate("DirectManagingCustomerId", "Equals", AGENCY_ID)], concurrency=4))
    api.close()
    sdk = ServiceClient("CustomerManagementService", 13, authorization_data=sim.authorization_data(AGENCY_ADMIN),
                        environment="sandbox", location=sim.url)
    theirs, index = [], 0
    while True:
        page = sdk.SearchClientLinks(
            Predicates={"Predicate": [{"Field": "DirectManagingCustomerId", "Operator": "Equals",
                                       "Value": str(AGENCY_ID)}]},
            Ordering={"OrderBy": [{"Field": "Id", "Order": "Ascending"}]}, PageInfo={"Index": index, "Size": 100})
        items = getattr(page, "ClientLink", None) or []
        theirs += items
        if len(items) < 100:
            break
        index += 1
    assert len(mine) == len(theirs) > 250
    assert len({(l.client_entity_id, l.managing_customer_id, l.type) for l in mine}) == len(mine)
    for link, obj in zip(mine, theirs):
        for attr, wire in CLIENT_LINK_WIRE.items():
            assert _mine(link, attr) == _suds_value(obj, wire), (link.client_entity_id, wire)


def test_simulator_get_user_agrees_with_suds(sim):
    from bingads.service_client import ServiceClient

    api = _sim_api(sim, sim.authorization(AGENCY_ADMIN))
    user, roles = api.get_user()
    sdk = ServiceClient("CustomerManagementService", 13, authorization_data=sim.authorization_data(AGENCY_ADMIN),
                        environment="sandbox", location=sim.url)
    r = sdk.GetUser(UserId=None)
    assert (user.id, user.user_name, user.customer_id) == (r.User.Id, r.User.UserName, r.User.CustomerId)
    sroles = r.CustomerRoles.CustomerRole
    assert [(x.customer_id, int(x.role)) for x in roles] == [(s.CustomerId, s.RoleId) for s in sroles]
    assert [x.linked_account_ids for x in roles] == [
        tuple(getattr(s.LinkedAccountIds, "long", None) or ()) for s in sroles]


def test_simulator_wrong_developer_token_is_an_auth_error(sim):
    api = _sim_api(sim, sim.authorization(AGENCY_ADMIN), developer_token="NOT-THE-SANDBOX-TOKEN")
    with pytest.raises(AuthError) as info:
        api.get_user()
    assert info.value.code == 105 and info.value.tracking_id


def test_simulator_expired_token_is_refreshed_through_its_token_endpoint(sim):
    refreshed = []
    auth = sim.authorization(AGENCY_ADMIN, token_refreshed_callback=lambda t: refreshed.append(t.access_token))
    api = _sim_api(sim, auth)
    before = auth.oauth_tokens.access_token
    api.get_user()
    sim.advance("2h")  # the simulated hour of the access token is over: the next call gets 109
    user, _ = api.get_user()
    assert user.user_name == AGENCY_ADMIN
    assert len(refreshed) == 1 and auth.oauth_tokens.access_token != before
