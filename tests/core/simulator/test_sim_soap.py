"""SOAP request parsing and reply/fault serialisation, without the SDK (stdlib ElementTree as the reader)."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from linkdesk.core import model
from linkdesk.core.simulator import soap
from linkdesk.core.simulator.faults import AdApiError, AdApiFault, ApiFault, ClientFault, OperationError
from linkdesk.core.simulator.soap import (
    SOAP_ENV,
    XSI,
    ActionNotSupportedFault,
    DeserializationFault,
    ProtocolFault,
    SchemaError,
    parse_request,
    serialize_fault,
    serialize_response,
)
from linkdesk.core.simulator.wsdl import ADAPI, ARRAYS, ENTITIES, EXCEPTION, TNS

UTC = timezone.utc
WCF = "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher"


def envelope(body: str, headers: str = "", env: str = "SOAP-ENV", t: str = "ns0", e: str = "ns1") -> bytes:
    """A request like the SDK's, with chosen prefixes: env = envelope, t = Customer/v13, e = Entities."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><{env}:Envelope xmlns:{env}="{SOAP_ENV}" xmlns:xsi="{XSI}" '
        f'xmlns:tns="{TNS}" xmlns:{t}="{TNS}" xmlns:{e}="{ENTITIES}"><{env}:Header>{headers}</{env}:Header>'
        f"<{env}:Body>{body}</{env}:Body></{env}:Envelope>"
    ).encode("utf-8")


SEARCH_BODY = (
    "<{t}:SearchClientLinksRequest><{t}:Predicates><{e}:Predicate><{e}:Field>DirectManagingCustomerId</{e}:Field>"
    "<{e}:Operator>Equals</{e}:Operator><{e}:Value>251000001</{e}:Value></{e}:Predicate></{t}:Predicates>"
    "<{t}:Ordering><{e}:OrderBy><{e}:Field>Name</{e}:Field><{e}:Order>Ascending</{e}:Order></{e}:OrderBy></{t}:Ordering>"
    "<{t}:PageInfo><{e}:Index>0</{e}:Index><{e}:Size>100</{e}:Size></{t}:PageInfo></{t}:SearchClientLinksRequest>"
)
SEARCH_DICT = {
    "Predicates": [{"Field": "DirectManagingCustomerId", "Operator": "Equals", "Value": "251000001"}],
    "Ordering": [{"Field": "Name", "Order": "Ascending"}],
    "PageInfo": {"Index": 0, "Size": 100},
}
AUTH_HEADERS = "<tns:AuthenticationToken>AT-1</tns:AuthenticationToken><tns:DeveloperToken>BBD37VB98</tns:DeveloperToken>"


def add_request(link_xml: str, op: str = "AddClientLinks") -> bytes:
    return envelope(f"<ns0:{op}Request><ns0:ClientLinks>{link_xml}</ns0:ClientLinks></ns0:{op}Request>")


def link_xml(inner: str) -> str:
    return f"<ns1:ClientLink>{inner}</ns1:ClientLink>"


# ------------------------------------------------------------------------------------------------ request parsing


@pytest.mark.parametrize(
    "env,t,e",
    [("SOAP-ENV", "ns0", "ns1"), ("ns2", "ns1", "ns0"), ("soap", "cm", "ent"), ("s", "ns0", "a")],
)
def test_search_request_parses_by_namespace_not_prefix(env, t, e):
    req = parse_request(envelope(SEARCH_BODY.format(t=t, e=e), AUTH_HEADERS, env, t, e), '"SearchClientLinks"')
    assert req.operation == "SearchClientLinks"
    assert req.body == SEARCH_DICT
    assert req.headers == {"AuthenticationToken": "AT-1", "DeveloperToken": "BBD37VB98"}


def test_default_namespace_declarations_work_too():
    body = (
        f'<SearchClientLinksRequest xmlns="{TNS}"><Predicates><Predicate xmlns="{ENTITIES}"><Field>ClientAccountId</Field>'
        "<Operator>In</Operator><Value>1,2</Value></Predicate></Predicates></SearchClientLinksRequest>"
    )
    req = parse_request(envelope(body), "SearchClientLinks")
    assert req.body == {"Predicates": [{"Field": "ClientAccountId", "Operator": "In", "Value": "1,2"}]}


def test_headers_only_those_present_nil_skipped_unknown_ignored():
    headers = (
        "<tns:DeveloperToken>D</tns:DeveloperToken><tns:UserName>u</tns:UserName><tns:Password>p</tns:Password>"
        "<tns:ApplicationToken>a</tns:ApplicationToken><tns:AuthenticationToken xsi:nil=\"true\"/>"
        f'<Action xmlns="http://schemas.microsoft.com/ws/2005/05/addressing/none">GetUser</Action>'
        f'<tns:CustomerId>5</tns:CustomerId>'
    )
    req = parse_request(envelope("<ns0:GetUserRequest/>", headers), "GetUser")
    assert req.headers == {"DeveloperToken": "D", "UserName": "u", "Password": "p", "ApplicationToken": "a"}
    assert req.body == {}


def test_no_header_element_at_all():
    body = f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><GetUserRequest xmlns="{TNS}"/></s:Body></s:Envelope>'.encode()
    assert parse_request(body, "GetUser").headers == {}


@pytest.mark.parametrize("action", ['"GetUser"', "GetUser", ' "GetUser" ', None, "", '""'])
def test_soap_action_quoted_unquoted_or_absent(action):
    assert parse_request(envelope("<ns0:GetUserRequest/>"), action).operation == "GetUser"


def test_soap_action_body_mismatch_is_a_client_fault():
    with pytest.raises(ProtocolFault, match="does not match the body element 'GetUserRequest'") as info:
        parse_request(envelope("<ns0:GetUserRequest/>"), '"SearchClientLinks"')
    assert isinstance(info.value, ClientFault) and info.value.faultcode == "s:Client"


def test_unknown_action_is_action_not_supported():
    with pytest.raises(ActionNotSupportedFault, match="Action 'DeleteEverything'") as info:
        parse_request(envelope("<ns0:DeleteEverythingRequest/>"), '"DeleteEverything"')
    assert info.value.faultcode == "a:ActionNotSupported"
    with pytest.raises(ActionNotSupportedFault):  # no SOAPAction and an unknown body element
        parse_request(envelope("<ns0:DeleteEverythingRequest/>"), None)
    with pytest.raises(ActionNotSupportedFault):  # actions are matched exactly, as WCF does
        parse_request(envelope("<ns0:GetUserRequest/>"), "getuser")


def test_body_element_in_the_wrong_namespace_is_refused():
    body = f'<GetUserRequest xmlns="{ENTITIES}"/>'
    with pytest.raises(ProtocolFault, match="does not match"):
        parse_request(envelope(body), "GetUser")


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"", "body is empty"),
        (b"   \n", "body is empty"),
        (b"<not xml", "not well-formed XML"),
        (b"\xff\xfe\x00garbage", "XML"),
        (b"<a><b></a>", "not well-formed XML"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "Document type definitions"),
        (b"<Envelope/>", "not a SOAP 1.1 envelope"),
        (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>', "SOAP 1.1 only"),
        (f'<s:Envelope xmlns:s="{SOAP_ENV}"/>'.encode(), "no Body"),
        (f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body/></s:Envelope>'.encode(), "exactly one element"),
        (
            f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><GetUserRequest xmlns="{TNS}"/><GetUserRequest xmlns="{TNS}"/>'
            "</s:Body></s:Envelope>".encode(),
            "exactly one element",
        ),
    ],
)
def test_malformed_envelopes_are_client_faults(raw, match):
    with pytest.raises(ProtocolFault, match=match) as info:
        parse_request(raw, "GetUser")
    assert isinstance(info.value, ClientFault)


FULL_LINK = (
    "<ns1:Type>AccountLink</ns1:Type><ns1:ClientEntityId>149000009</ns1:ClientEntityId>"
    "<ns1:ManagingCustomerId>251000001</ns1:ManagingCustomerId><ns1:Note>Hi &lt;b&gt; &amp; ü</ns1:Note>"
    "<ns1:Name></ns1:Name><ns1:InviterPhone xsi:nil=\"true\"/>"
    "<ns1:IsBillToClient>1</ns1:IsBillToClient><ns1:StartDate>2026-03-01T12:00:00+02:00</ns1:StartDate>"
    "<ns1:Status>LinkAccepted</ns1:Status><ns1:SuppressNotification>0</ns1:SuppressNotification>"
    "<ns1:LastModifiedDateTime>2026-01-05T10:11:12.1234567Z</ns1:LastModifiedDateTime>"
    "<ns1:LastModifiedByUserId> 987654 </ns1:LastModifiedByUserId><ns1:Timestamp>AAAAAAAAB9E=</ns1:Timestamp>"
    "<ns1:ForwardCompatibilityMap/><ns1:CustomerLinkPermission xsi:nil=\"true\"/>"
)


def test_client_link_values_are_typed_by_the_wsdl():
    req = parse_request(add_request(link_xml(FULL_LINK)), "AddClientLinks")
    (link,) = req.body["ClientLinks"]
    assert link == {
        "Type": "AccountLink",
        "ClientEntityId": 149000009,
        "ManagingCustomerId": 251000001,
        "Note": "Hi <b> & ü",
        "Name": "",
        "InviterPhone": None,
        "IsBillToClient": True,
        "StartDate": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        "Status": "LinkAccepted",
        "SuppressNotification": False,
        "LastModifiedDateTime": datetime(2026, 1, 5, 10, 11, 12, 123457, tzinfo=UTC),
        "LastModifiedByUserId": 987654,
        "Timestamp": "AAAAAAAAB9E=",
        "ForwardCompatibilityMap": [],
        "CustomerLinkPermission": None,
    }
    assert "ClientEntityNumber" not in link  # absent -> key missing
    # The parsed dict is what model.ClientLink.from_wire takes.
    assert model.ClientLink.from_wire(link).status is model.ClientLinkStatus.LinkAccepted


def test_arrays_empty_nil_and_key_value_pairs():
    kv = (
        '<ns1:ForwardCompatibilityMap xmlns:g="http://schemas.datacontract.org/2004/07/System.Collections.Generic">'
        "<g:KeyValuePairOfstringstring><g:key>k</g:key><g:value>v</g:value></g:KeyValuePairOfstringstring>"
        "</ns1:ForwardCompatibilityMap>"
    )
    req = parse_request(add_request(link_xml(kv) + '<ns1:ClientLink xsi:nil="true"/>' + link_xml("")), None)
    assert req.body["ClientLinks"] == [{"ForwardCompatibilityMap": [{"key": "k", "value": "v"}]}, None, {}]
    assert parse_request(add_request(""), None).body == {"ClientLinks": []}
    nil = envelope('<ns0:AddClientLinksRequest><ns0:ClientLinks xsi:nil="true"/></ns0:AddClientLinksRequest>')
    assert parse_request(nil, None).body == {"ClientLinks": None}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00+00:00", datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ("2026-03-01T12:00:00-05:30", datetime(2026, 3, 1, 17, 30, tzinfo=UTC)),
        ("2026-03-01T00:30:00+02:00", datetime(2026, 2, 28, 22, 30, tzinfo=UTC)),
        ("2026-03-01T12:00:00.5", datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-03-01T12:00:00.123456", datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-01T12:00:59.9999999Z", datetime(2026, 3, 1, 12, 1, tzinfo=UTC)),  # rounding carries
    ],
)
def test_parse_datetime_accepts_naive_z_and_offsets(text, expected):
    got = soap.parse_datetime(text)
    assert got == expected and got.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "2026-03-01", "2026-03-01 12:00:00", "2026-13-01T00:00:00", "2026-03-01T12:00:00+25:00", "now"]
)
def test_parse_datetime_rejects_non_xsd(text):
    with pytest.raises(ValueError):
        soap.parse_datetime(text)


@pytest.mark.parametrize(
    "inner,element,reason",
    [
        ("<ns1:Status/>", "ClientLinks/ClientLink[1]/Status", "empty value is not a valid ClientLinkStatus"),
        ("<ns1:Status>Bogus</ns1:Status>", "ClientLinks/ClientLink[1]/Status", "'Bogus' is not a valid value"),
        ("<ns1:IsBillToClient/>", "ClientLinks/ClientLink[1]/IsBillToClient", "'' cannot be parsed as the type 'Boolean'"),
        ("<ns1:IsBillToClient>yes</ns1:IsBillToClient>", "ClientLinks/ClientLink[1]/IsBillToClient", "'yes'"),
        ("<ns1:ClientEntityId>abc</ns1:ClientEntityId>", "ClientLinks/ClientLink[1]/ClientEntityId", "'Int64'"),
        ("<ns1:ClientEntityId>1.5</ns1:ClientEntityId>", "ClientLinks/ClientLink[1]/ClientEntityId", "'Int64'"),
        ("<ns1:ClientEntityId>9223372036854775808</ns1:ClientEntityId>", "ClientLinks/ClientLink[1]/ClientEntityId",
         "out of range"),
        ("<ns1:StartDate>tomorrow</ns1:StartDate>", "ClientLinks/ClientLink[1]/StartDate", "'DateTime'"),
        ("<ns1:StartDate/>", "ClientLinks/ClientLink[1]/StartDate", "'DateTime'"),
        ('<ns1:SuppressNotification xsi:nil="true"/>', "ClientLinks/ClientLink[1]/SuppressNotification",
         "cannot be null"),
        ("<ns1:BrandNewField>x</ns1:BrandNewField>", "ClientLinks/ClientLink[1]/BrandNewField",
         "does not declare it"),
        ("<ns0:Name>x</ns0:Name>", "ClientLinks/ClientLink[1]/Name", "expected in namespace"),
        ("<ns1:Name>a</ns1:Name><ns1:Name>b</ns1:Name>", "ClientLinks/ClientLink[1]/Name", "more than once"),
        ("<ns1:Name><ns1:Type>x</ns1:Type></ns1:Name>", "ClientLinks/ClientLink[1]/Name", "child elements"),
        ("loose text", "ClientLinks/ClientLink[1]", "text was found"),
    ],
)
def test_bad_values_are_deserialization_faults_naming_the_element(inner, element, reason):
    with pytest.raises(DeserializationFault) as info:
        parse_request(add_request(link_xml("<ns1:Name>ok</ns1:Name>") + link_xml(inner)), "AddClientLinks")
    fault = info.value
    assert fault.element == element.replace("ClientLink[1]", "ClientLink[2]")
    assert reason in fault.reason
    assert isinstance(fault, ClientFault) and fault.faultcode == "a:DeserializationFailed"
    assert fault.faultstring.startswith("The formatter threw an exception while trying to deserialize the message")
    assert f"{TNS}:ClientLinks" in fault.faultstring and fault.element in fault.faultstring


def test_unknown_item_in_an_array_and_unknown_wrapper_child():
    with pytest.raises(DeserializationFault, match="holds only ClientLink items"):
        parse_request(add_request("<ns1:Predicate/>"), None)
    with pytest.raises(DeserializationFault, match="has no element 'Foo'") as info:
        parse_request(envelope("<ns0:GetUserRequest><ns0:Foo>1</ns0:Foo></ns0:GetUserRequest>"), "GetUser")
    assert info.value.element == "Foo"


def test_missing_required_key_value_member():
    kv = (
        '<ns1:ForwardCompatibilityMap xmlns:g="http://schemas.datacontract.org/2004/07/System.Collections.Generic">'
        "<g:KeyValuePairOfstringstring><g:key>k</g:key></g:KeyValuePairOfstringstring></ns1:ForwardCompatibilityMap>"
    )
    with pytest.raises(DeserializationFault, match="required element is missing"):
        parse_request(add_request(link_xml(kv)), None)


def test_other_request_shapes():
    req = parse_request(envelope('<ns0:GetUserRequest><ns0:UserId xsi:nil="true"/></ns0:GetUserRequest>'), "GetUser")
    assert req.body == {"UserId": None}
    req = parse_request(
        envelope("<ns0:GetAccountsInfoRequest><ns0:CustomerId>5</ns0:CustomerId>"
                 "<ns0:OnlyParentAccounts>false</ns0:OnlyParentAccounts></ns0:GetAccountsInfoRequest>"),
        "GetAccountsInfo",
    )
    assert req.body == {"CustomerId": 5, "OnlyParentAccounts": False}
    req = parse_request(
        envelope("<ns0:GetAccountRequest><ns0:AccountId>7</ns0:AccountId>"
                 "<ns0:ReturnAdditionalFields>TaxCertificate ParentCustomerNumber</ns0:ReturnAdditionalFields>"
                 "</ns0:GetAccountRequest>"),
        "GetAccount",
    )
    assert req.body == {"AccountId": 7, "ReturnAdditionalFields": ["TaxCertificate", "ParentCustomerNumber"]}
    with pytest.raises(DeserializationFault, match="'Everything' is not a valid value for AccountAdditionalField"):
        parse_request(
            envelope("<ns0:GetAccountRequest><ns0:ReturnAdditionalFields>Everything</ns0:ReturnAdditionalFields>"
                     "</ns0:GetAccountRequest>"),
            "GetAccount",
        )
    req = parse_request(
        envelope("<ns0:GetCustomersInfoRequest><ns0:CustomerNameFilter/><ns0:TopN>10</ns0:TopN>"
                 "</ns0:GetCustomersInfoRequest>"),
        "GetCustomersInfo",
    )
    assert req.body == {"CustomerNameFilter": "", "TopN": 10}


# ------------------------------------------------------------------------------------------------ serialisation

NOW = datetime(2026, 1, 5, 10, 11, 12, 123456, tzinfo=UTC)


def a_link(i: int = 1, **changes) -> model.ClientLink:
    base = model.ClientLink(
        type=model.LinkType.AccountLink,
        client_entity_id=149000000 + i,
        client_entity_number=f"F1{i:06d}",
        client_entity_name=f"Client {i}",
        managing_customer_id=251000001,
        managing_customer_number="C251X001",
        managing_customer_name="Fabrikam Agency",
        name=f"Link {i}",
        inviter_email="ops@fabrikam.example",
        inviter_name="Fabrikam Agency",
        is_bill_to_client=True,
        start_date=datetime(2026, 1, 5, tzinfo=UTC),
        status=model.ClientLinkStatus.LinkPending,
        last_modified_date_time=NOW,
        last_modified_by_user_id=987654,
        timestamp="AAAAAAAAB9E=",
    )
    return base.replace(**changes)


def body_of(reply: bytes) -> ET.Element:
    root = ET.fromstring(reply)
    assert root.tag == f"{{{SOAP_ENV}}}Envelope"
    (child,) = list(root.find(f"{{{SOAP_ENV}}}Body"))
    return child


def local(el: ET.Element) -> str:
    return el.tag.split("}")[1]


def test_envelope_shape_and_tracking_id():
    reply = serialize_response("SearchClientLinks", {"ClientLinks": [a_link()]}, "0f8fad5b-d9cb-469f-a165-70867728950e")
    text = reply.decode()
    assert text.startswith(f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Header><TrackingId xmlns="{TNS}">')
    root = ET.fromstring(reply)
    assert root.find(f"{{{SOAP_ENV}}}Header/{{{TNS}}}TrackingId").text == "0f8fad5b-d9cb-469f-a165-70867728950e"
    resp = body_of(reply)
    assert resp.tag == f"{{{TNS}}}SearchClientLinksResponse"
    assert f'<SearchClientLinksResponse xmlns="{TNS}" xmlns:a="{ENTITIES}"' in text
    assert f'xmlns:i="{XSI}"' in text and "<a:ClientLink>" in text  # Entities items carry a prefix


def test_client_link_written_in_wsdl_order_with_nil_and_omissions():
    wire = a_link().to_wire(include_none=True)
    shuffled = dict(reversed(list(wire.items())))
    reply = serialize_response("SearchClientLinks", {"ClientLinks": [shuffled]}, "t")
    (cl,) = list(body_of(reply).find(f"{{{TNS}}}ClientLinks"))
    assert cl.tag == f"{{{ENTITIES}}}ClientLink"
    names = [local(c) for c in cl]
    assert names == [n for n in model.CLIENT_LINK_WIRE.values() if n != "ClientEntityCustomerNumber"]
    nil = {local(c) for c in cl if c.get(f"{{{XSI}}}nil") == "true"}
    assert nil == {"Note", "InviterPhone", "ForwardCompatibilityMap", "CustomerLinkPermission"}
    values = {local(c): c.text for c in cl}
    assert values["ClientEntityId"] == "149000001" and values["IsBillToClient"] == "true"
    assert values["SuppressNotification"] == "false" and values["Status"] == "LinkPending"
    assert values["StartDate"] == "2026-01-05T00:00:00Z"
    assert values["LastModifiedDateTime"] == "2026-01-05T10:11:12.123456Z"
    # Non-nillable elements given None are omitted, never nil.
    reply = serialize_response("SearchClientLinks", {"ClientLinks": [{"LastModifiedDateTime": None, "Name": None}]}, "t")
    (cl,) = list(body_of(reply).find(f"{{{TNS}}}ClientLinks"))
    assert [(local(c), c.get(f"{{{XSI}}}nil")) for c in cl] == [("Name", "true")]


def test_client_entity_customer_number_only_when_set():
    reply = serialize_response("SearchClientLinks", {"ClientLinks": [a_link(client_entity_customer_number="C9")]}, "t")
    (cl,) = list(body_of(reply).find(f"{{{TNS}}}ClientLinks"))
    assert local(cl[-1]) == "ClientEntityCustomerNumber" and cl[-1].text == "C9"


def test_model_objects_and_dicts_serialise_identically():
    links = [a_link(1), a_link(2, type=model.LinkType.CustomerLink,
                                customer_link_permission=model.CustomerLinkPermission.Administrative)]
    as_objects = serialize_response("SearchClientLinks", {"ClientLinks": links}, "t")
    as_dicts = serialize_response("SearchClientLinks", {"ClientLinks": [l.to_wire(include_none=True) for l in links]}, "t")
    assert as_objects == as_dicts


@pytest.mark.parametrize(
    "value,expected",
    [
        ("<b>&amp;</b> [bold red]x[/]", "<b>&amp;</b> [bold red]x[/]"),
        ("Zoë & Søn — 東京", "Zoë & Søn — 東京"),
        ("line1\r\nline2", "line1\r\nline2"),
        ("bell\x07 esc\x1b[31m nul\x00", "bell\ufffd esc\ufffd[31m nul\ufffd"),
        ("]]> ' \"", "]]> ' \""),
    ],
)
def test_text_is_escaped_and_round_trips(value, expected):
    reply = serialize_response("SearchClientLinks", {"ClientLinks": [a_link(name=value, note=value)]}, "t")
    (cl,) = list(body_of(reply).find(f"{{{TNS}}}ClientLinks"))
    assert cl.find(f"{{{ENTITIES}}}Name").text == expected
    assert cl.find(f"{{{ENTITIES}}}Note").text == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        (datetime(2026, 1, 5), "2026-01-05T00:00:00Z"),  # naive = UTC
        (datetime(2026, 1, 5, 2, 0, tzinfo=timezone(timedelta(hours=2))), "2026-01-05T00:00:00Z"),
        (datetime(2026, 1, 5, 0, 0, 0, 100000, tzinfo=UTC), "2026-01-05T00:00:00.1Z"),
        (datetime(2026, 1, 5, 0, 0, 0, 1, tzinfo=UTC), "2026-01-05T00:00:00.000001Z"),
    ],
)
def test_datetimes_are_utc_like_wcf(value, expected):
    assert soap.format_datetime(value) == expected
    assert soap.parse_datetime(expected) == (value if value.tzinfo else value.replace(tzinfo=UTC))


def test_empty_and_nil_arrays():
    assert "<ClientLinks/>" in serialize_response("SearchClientLinks", {"ClientLinks": []}, "t").decode()
    assert '<ClientLinks i:nil="true"/>' in serialize_response("SearchClientLinks", {"ClientLinks": None}, "t").decode()
    assert list(body_of(serialize_response("SearchClientLinks", {}, "t"))) == []


def test_partial_errors_keep_positions():
    payload = {
        "OperationErrors": None,
        "PartialErrors": [None, [OperationError(1410, "dup")], None,
                          [{"Code": 1471, "Details": "prepaid", "Message": "Prepaid"}, OperationError(3083, "ro")]],
    }
    resp = body_of(serialize_response("AddClientLinks", payload, "t"))
    assert resp.find(f"{{{TNS}}}OperationErrors").get(f"{{{XSI}}}nil") == "true"
    entries = list(resp.find(f"{{{TNS}}}PartialErrors"))
    assert [e.tag for e in entries] == [f"{{{EXCEPTION}}}ArrayOfOperationError"] * 4
    positional = [
        None if e.get(f"{{{XSI}}}nil") == "true" else [int(x.find(f"{{{EXCEPTION}}}Code").text) for x in e]
        for e in entries
    ]
    assert positional == [None, [1410], None, [1471, 3083]]
    second = entries[3][0]
    assert [local(c) for c in second] == ["Code", "Details", "Message"]
    assert second.find(f"{{{EXCEPTION}}}Details").text == "prepaid"


def test_array_of_long_items_in_the_arrays_namespace():
    payload = {"User": None, "CustomerRoles": [
        {"RoleId": model.Role.SuperAdmin, "CustomerId": 251000001, "AccountIds": None, "LinkedAccountIds": [1, 2],
         "CustomerLinkPermission": None}]}
    resp = body_of(serialize_response("GetUser", payload, "t"))
    role = resp.find(f"{{{TNS}}}CustomerRoles/{{{ENTITIES}}}CustomerRole")
    assert role.find(f"{{{ENTITIES}}}RoleId").text == "41"  # IntEnum written as its number
    linked = role.find(f"{{{ENTITIES}}}LinkedAccountIds")
    assert [(c.tag, c.text) for c in linked] == [(f"{{{ARRAYS}}}long", "1"), (f"{{{ARRAYS}}}long", "2")]


@pytest.mark.parametrize(
    "operation,payload,match",
    [
        ("SearchClientLinks", {"Links": []}, "no element"),
        ("SearchClientLinks", {"ClientLinks": [{"Colour": "red"}]}, "ClientLink has no element"),
        ("SearchClientLinks", {"ClientLinks": [{"ClientEntityId": "149"}]}, "expected an integer"),
        ("SearchClientLinks", {"ClientLinks": [{"ClientEntityId": True}]}, "expected an integer"),
        ("SearchClientLinks", {"ClientLinks": [{"ClientEntityId": 2**63}]}, "out of range"),
        ("SearchClientLinks", {"ClientLinks": [{"IsBillToClient": 1}]}, "expected a bool"),
        ("SearchClientLinks", {"ClientLinks": [{"Status": "SomeFutureStatus"}]}, "not a ClientLinkStatus value"),
        ("SearchClientLinks", {"ClientLinks": [{"Name": 5}]}, "expected a string"),
        ("SearchClientLinks", {"ClientLinks": [{"StartDate": "2026-01-01"}]}, "expected a datetime"),
        ("SearchClientLinks", {"ClientLinks": {"ClientLink": []}}, "expected a list"),
        ("SearchClientLinks", {"ClientLinks": [object()]}, "expected a dict"),
        ("GetUser", {"CustomerRoles": [{"LinkedAccountIds": [1, None]}]}, "cannot be nil"),
        ("GetUser", {"CustomerRoles": [{"LinkedAccountIds": [1, "2"]}]}, "expected an integer"),
        ("NoSuchOperation", {}, "no operation named"),
    ],
)
def test_serializer_refuses_what_the_wsdl_does_not_know(operation, payload, match):
    with pytest.raises(SchemaError, match=match):
        serialize_response(operation, payload, "t")


def test_other_responses_serialise():
    accounts = {"AccountsInfo": [{"Id": 1, "Name": "A1", "Number": "X1", "AccountLifeCycleStatus": "Active",
                                  "PauseReason": None}]}
    assert b"<a:AccountInfo>" in serialize_response("GetAccountsInfo", accounts, "t")
    with pytest.raises(SchemaError, match="AccountLifeCycleStatus"):
        serialize_response("GetAccountsInfo", {"AccountsInfo": [{"AccountLifeCycleStatus": "Gone"}]}, "t")
    account = {"Account": {"BillToCustomerId": 5, "CurrencyCode": "USD", "Id": 7, "Name": "A", "ParentCustomerId": 5,
                           "LinkedAgencies": [{"Id": 9, "Name": "Agency"}], "BillingThresholdAmount": Decimal("12.50"),
                           "ForwardCompatibilityMap": [{"key": "k", "value": None}]}}
    resp = body_of(serialize_response("GetAccount", account, "t"))
    acc = resp.find(f"{{{TNS}}}Account")
    assert acc.find(f"{{{ENTITIES}}}BillingThresholdAmount").text == "12.50"
    assert [local(c) for c in acc] == ["BillToCustomerId", "CurrencyCode", "Id", "Name", "ParentCustomerId",
                                      "ForwardCompatibilityMap", "LinkedAgencies", "BillingThresholdAmount"]


# ------------------------------------------------------------------------------------------------------- faults


def fault_parts(reply: bytes) -> tuple[str, str, ET.Element | None]:
    fault = body_of(reply)
    assert fault.tag == f"{{{SOAP_ENV}}}Fault"
    detail = fault.find("detail")
    return fault.find("faultcode").text, fault.find("faultstring").text, (detail[0] if detail is not None else None)


def test_adapi_fault_detail():
    fault = AdApiFault([AdApiError(109, "AuthenticationTokenExpired",
                                   "Authentication token expired. Please renew it or obtain a new token.")])
    code, string, detail = fault_parts(serialize_fault(fault, "trk-9"))
    assert code == "s:Server"
    assert string == ("Invalid client data. Check the SOAP fault details for more information. TrackingId: trk-9.")
    assert detail.tag == f"{{{ADAPI}}}AdApiFaultDetail"
    assert detail.find(f"{{{ADAPI}}}TrackingId").text == "trk-9"
    (err,) = list(detail.find(f"{{{ADAPI}}}Errors"))
    assert [local(c) for c in err] == ["Code", "Detail", "ErrorCode", "Message"]
    assert err.find(f"{{{ADAPI}}}Code").text == "109"
    assert err.find(f"{{{ADAPI}}}Detail").get(f"{{{XSI}}}nil") == "true"
    assert err.find(f"{{{ADAPI}}}ErrorCode").text == "AuthenticationTokenExpired"


def test_api_fault_detail_with_tracking_id_in_adapi_namespace():
    fault = ApiFault([OperationError(3030, "The Predicate passed in the search is invalid.", "Field X")])
    code, string, detail = fault_parts(serialize_fault(fault, "trk-2"))
    assert code == "s:Server" and string.endswith("TrackingId: trk-2.")
    assert detail.tag == f"{{{EXCEPTION}}}ApiFault"
    assert [c.tag for c in detail] == [f"{{{ADAPI}}}TrackingId", f"{{{EXCEPTION}}}OperationErrors"]
    (err,) = list(detail.find(f"{{{EXCEPTION}}}OperationErrors"))
    assert [(local(c), c.text) for c in err] == [
        ("Code", "3030"), ("Details", "Field X"), ("Message", "The Predicate passed in the search is invalid.")]


def test_client_faults():
    code, string, detail = fault_parts(serialize_fault(ClientFault("The operation SignupCustomer is not simulated."), "t"))
    assert (code, string, detail) == ("s:Client", "The operation SignupCustomer is not simulated.", None)
    reply = serialize_fault(ActionNotSupportedFault("Nope"), "t")
    assert f'<faultcode xmlns:a="{WCF}">a:ActionNotSupported</faultcode>' in reply.decode()
    code, string, _ = fault_parts(serialize_fault(DeserializationFault("ClientLinks/ClientLink[1]/Status", "bad <x>"), "t"))
    assert code == "a:DeserializationFailed" and "bad <x>" in string


def test_internal_error_is_code_zero():
    _, _, detail = fault_parts(serialize_fault(soap.internal_error(), "t"))
    err = detail.find(f"{{{ADAPI}}}Errors/{{{ADAPI}}}AdApiError")
    assert err.find(f"{{{ADAPI}}}Code").text == "0" and err.find(f"{{{ADAPI}}}ErrorCode").text == "InternalError"


def test_serialising_from_many_threads_gives_identical_bytes():
    links = [a_link(i) for i in range(20)]
    expected = serialize_response("SearchClientLinks", {"ClientLinks": links}, "t")
    results: list[bytes] = []

    def work() -> None:
        for _ in range(10):
            results.append(serialize_response("SearchClientLinks", {"ClientLinks": links}, "t"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 40 and all(r == expected for r in results)
