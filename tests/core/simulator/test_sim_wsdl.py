"""The schema table read from the WSDL shipped inside bingads (no SDK import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from linkdesk.core import model
from linkdesk.core.simulator import wsdl
from linkdesk.core.simulator.wsdl import ADAPI, ARRAYS, ENTITIES, EXCEPTION, GENERIC, TNS, XS, SchemaError, qname


@pytest.fixture(scope="module")
def schema() -> wsdl.Schema:
    return wsdl.load_schema()


def test_loads_without_importing_bingads_and_only_once():
    code = textwrap.dedent(
        """
        import sys, time
        t = time.perf_counter()
        from linkdesk.core.simulator import wsdl
        s = wsdl.load_schema()
        total = time.perf_counter() - t
        assert wsdl.load_schema() is s, "parsed twice"
        print("bingads" in sys.modules, "suds" in sys.modules, round(s.parse_seconds, 4), round(total, 4))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"]
    assert float(out[2]) > 0  # the parse cost is recorded (bench/ reports it)


def test_wsdl_path_points_into_the_installed_package():
    path = wsdl.wsdl_path()
    assert path.name == "customermanagement_service.xml"
    assert path.parts[-5:-1] == ("bingads", "v13", "proxies", "production")


def test_missing_bingads_is_reported_in_plain_words(monkeypatch):
    monkeypatch.setattr(wsdl.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="bingads package is not installed"):
        wsdl.wsdl_path()


def test_client_link_elements_in_wsdl_order_with_types(schema):
    ct = schema.complex_type(qname(ENTITIES, "ClientLink"))
    assert [e.name for e in ct.elements] == list(model.CLIENT_LINK_WIRE.values())
    by = ct.by_name
    assert by["ClientEntityId"].type == qname(XS, "long") and by["ClientEntityId"].nillable
    assert by["IsBillToClient"].type == qname(XS, "boolean")
    assert by["StartDate"].type == qname(XS, "dateTime")
    assert by["Status"].type == qname(ENTITIES, "ClientLinkStatus")
    assert by["Timestamp"].type == qname(XS, "base64Binary")
    assert by["ForwardCompatibilityMap"].type == qname(GENERIC, "ArrayOfKeyValuePairOfstringstring")
    # Three elements are not nillable (value types in WCF).
    assert [e.name for e in ct.elements if not e.nillable] == [
        "SuppressNotification", "LastModifiedDateTime", "LastModifiedByUserId"
    ]
    # EmitDefaultValue=false: only ClientEntityCustomerNumber.
    assert [e.name for e in ct.elements if not e.emit_default] == ["ClientEntityCustomerNumber"]
    assert all(e.min_occurs == 0 and e.max_occurs == 1 and e.ns == ENTITIES for e in ct.elements)


def test_enumerations(schema):
    status = schema.simple_type(qname(ENTITIES, "ClientLinkStatus"))
    assert status.enums == tuple(s.value for s in model.ClientLinkStatus)
    assert status.kind == "str" and not status.is_list
    op = schema.simple_type(qname(ENTITIES, "PredicateOperator"))
    assert op.enums == ("Equals", "NotEquals", "Contains", "In", "GreaterThanEquals", "LessThanEquals",
                        "StartsWith", "NotContains")
    extra = schema.simple_type(qname(ENTITIES, "AccountAdditionalField"))
    assert extra.is_list and "ParentCustomerNumber" in extra.enums


def test_extension_puts_base_elements_first_in_the_base_namespace(schema):
    api = schema.complex_type(qname(EXCEPTION, "ApiFault"))
    assert api.base == qname(ADAPI, "ApplicationFault")
    assert [(e.ns, e.name) for e in api.elements] == [(ADAPI, "TrackingId"), (EXCEPTION, "OperationErrors")]
    ad = schema.complex_type(qname(ADAPI, "AdApiFaultDetail"))
    assert [e.name for e in ad.elements] == ["TrackingId", "Errors"]
    err = schema.complex_type(qname(ADAPI, "AdApiError"))
    assert [e.name for e in err.elements] == ["Code", "Detail", "ErrorCode", "Message"]
    oe = schema.complex_type(qname(EXCEPTION, "OperationError"))
    assert [e.name for e in oe.elements] == ["Code", "Details", "Message"]


def test_array_types(schema):
    links = schema.complex_type(qname(ENTITIES, "ArrayOfClientLink")).array_item
    assert links is not None and links.name == "ClientLink" and links.nillable
    longs = schema.complex_type(qname(ARRAYS, "ArrayOflong")).array_item
    assert longs is not None and (longs.ns, longs.name, longs.nillable) == (ARRAYS, "long", False)
    nested = schema.complex_type(qname(EXCEPTION, "ArrayOfArrayOfOperationError")).array_item
    assert nested is not None and nested.type == qname(EXCEPTION, "ArrayOfOperationError") and nested.nillable
    assert schema.complex_type(qname(ENTITIES, "ClientLink")).array_item is None
    kv = schema.complex_type(qname(GENERIC, "KeyValuePairOfstringstring"))
    assert [(e.name, e.min_occurs) for e in kv.elements] == [("key", 1), ("value", 1)]


def test_operations(schema):
    assert len(schema.operations) == 39
    op = schema.operation("SearchClientLinks")
    assert op.soap_action == "SearchClientLinks"
    assert op.request.qname == qname(TNS, "SearchClientLinksRequest")
    assert op.response.qname == qname(TNS, "SearchClientLinksResponse")
    assert op.input_headers == wsdl.HEADER_NAMES
    assert op.output_headers == ("TrackingId",)
    assert set(op.faults) == {qname(ADAPI, "AdApiFaultDetail"), qname(TNS, "ApiFault")}
    req = schema.complex_type(op.request.type)
    assert [(e.name, e.ns) for e in req.elements] == [("Predicates", TNS), ("Ordering", TNS), ("PageInfo", TNS)]
    resp = schema.complex_type(schema.operation("AddClientLinks").response.type)
    assert [e.name for e in resp.elements] == ["OperationErrors", "PartialErrors"]
    assert schema.operation_for_action("GetUser") is schema.operation("GetUser")
    assert schema.operation_for_action("getuser") is None  # WCF matches actions exactly
    for name in ("GetUser", "GetUsersInfo", "GetCustomersInfo", "GetAccountsInfo", "GetLinkedAccountsAndCustomersInfo",
                 "SearchAccounts", "GetCustomer", "GetAccount", "AddClientLinks", "UpdateClientLinks"):
        assert schema.operation(name).soap_action == name
    assert schema.location == (
        "https://clientcenter.api.bingads.microsoft.com/Api/CustomerManagement/v13/CustomerManagementService.svc"
    )


def test_unknown_names_raise_schema_error(schema):
    with pytest.raises(SchemaError, match="no operation named 'DeleteEverything'"):
        schema.operation("DeleteEverything")
    with pytest.raises(SchemaError):
        schema.complex_type(qname(ENTITIES, "NoSuchType"))
    with pytest.raises(SchemaError):
        schema.simple_type(qname(ENTITIES, "NoSuchType"))


def test_namespaces_reachable(schema):
    op = schema.operation("GetUser")
    reachable = schema.namespaces_reachable(op.response.type)
    assert reachable[0] == TNS and ENTITIES in reachable and ARRAYS in reachable
    assert EXCEPTION not in reachable


def test_a_dangling_type_reference_fails_at_load_time(tmp_path):
    text = wsdl.wsdl_path().read_text(encoding="utf-8")
    broken = text.replace('type="xs:dateTime"', 'type="xs:dateTimeX"', 1)
    assert broken != text
    path = tmp_path / "broken.xml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(SchemaError, match="unknown type"):
        wsdl.parse_wsdl(path)


def test_qname_helpers():
    assert wsdl.split_qname(qname(TNS, "X")) == (TNS, "X")
    assert wsdl.split_qname("plain") == ("", "plain")
