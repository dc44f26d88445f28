"""SOAP 1.1 for the simulator: parse requests into plain dicts, write replies and faults like the real service.

Everything here is driven by the schema of the WSDL shipped with ``bingads`` (``wsdl.load_schema()``): requests are
read by namespace URI (never by prefix), values are typed by their declared XSD type, and replies are written in WSDL
element order. An element, type or enumeration value the shipped WSDL does not know is refused in both directions.

Request body dict (``Request.body``) — keys are the request wrapper's child element names:

* absent element -> key missing; ``i:nil="true"`` -> ``None``;
* ``long``/``int``/``short``/``unsignedByte`` -> ``int``; ``boolean`` -> ``bool`` (``true``/``false``/``1``/``0``);
  ``dateTime`` -> aware UTC ``datetime`` (naive input is taken as UTC; ``Z`` and ``±hh:mm`` accepted; more than six
  fractional digits are rounded to microseconds); ``decimal`` -> ``Decimal``; ``double`` -> ``float``;
  ``base64Binary`` -> the text as is (``str``); ``string`` -> ``str`` (empty element -> ``""``);
  enumerations -> ``str`` (must be a WSDL value); ``xs:list`` of enumerations -> ``list[str]``;
* complex types -> ``dict`` (same rules, recursively); ``ArrayOfX`` types -> ``list`` of items (empty element ->
  ``[]``; a nil item -> ``None``).

Refused requests raise a ``ProtocolFault`` (a ``ClientFault``), serialised as an HTTP 500 ``s:Fault`` without detail:
broken XML, not SOAP 1.1, unknown or mismatched operation (WCF's ``a:ActionNotSupported``), and values that cannot be
read as their declared type, unknown elements, duplicates, empty non-string values and nil non-nillable values
(``DeserializationFault``: WCF's ``a:DeserializationFailed`` with the formatter's wording; ``.element`` holds the
path, e.g. ``ClientLinks/ClientLink[2]/Status``, 1-based like XPath). The SDK surfaces these as ``suds.WebFault``.

Reply payloads (``serialize_response``) use the same conventions in reverse; see that function.
"""

from __future__ import annotations

import base64
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Callable
from xml.sax.saxutils import escape as _sax_escape

from .faults import AdApiError, AdApiFault, ApiFault, ClientFault, OperationError, SimulatorFault
from .wsdl import (
    ADAPI,
    ARRAYS,
    ENTITIES,
    EXCEPTION,
    GENERIC,
    HEADER_NAMES,
    INT_RANGES,
    SERIALIZATION,
    TNS,
    ComplexType,
    ElementDecl,
    Operation,
    Schema,
    SchemaError,
    SimpleType,
    load_schema,
    qname,
    split_qname,
)

__all__ = [
    "SOAP_ENV",
    "XSI",
    "ActionNotSupportedFault",
    "DeserializationFault",
    "ProtocolFault",
    "Request",
    "SchemaError",
    "format_datetime",
    "internal_error",
    "parse_datetime",
    "parse_request",
    "serialize_fault",
    "serialize_response",
]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WCF_DISPATCHER = "http://schemas.microsoft.com/net/2005/12/windowscommunicationfoundation/dispatcher"

_XSI_NIL = qname(XSI, "nil")
_ENVELOPE = qname(SOAP_ENV, "Envelope")
_HEADER = qname(SOAP_ENV, "Header")
_BODY = qname(SOAP_ENV, "Body")

#: Fixed prefixes for namespaces other than the default one of the element being written (WCF picks a, b, c…;
#: any prefix is valid, clients must resolve by URI).
_PREFIXES: dict[str, str] = {ENTITIES: "a", ARRAYS: "b", GENERIC: "c", ADAPI: "d", EXCEPTION: "e", SERIALIZATION: "f"}


# --------------------------------------------------------------------------------------------------------- faults


class ProtocolFault(ClientFault):
    """A request refused by the protocol layer before any business logic runs (HTTP 500 ``s:Fault``, no detail)."""

    #: faultcode text, and the namespace of its ``a:`` prefix when it is a WCF code.
    faultcode: str = "s:Client"
    faultcode_ns: str | None = None


class ActionNotSupportedFault(ProtocolFault):
    """The SOAPAction names no operation of the Customer Management v13 WSDL (WCF's ContractFilter mismatch)."""

    faultcode = "a:ActionNotSupported"
    faultcode_ns = WCF_DISPATCHER

    def __init__(self, action: str):
        self.action = action
        super().__init__(
            f"The message with Action '{action}' cannot be processed at the receiver, due to a ContractFilter "
            "mismatch at the EndpointDispatcher. The Customer Management v13 service has no such operation; "
            "check the operation name and the SOAPAction header."
        )


class DeserializationFault(ProtocolFault):
    """A value or element of the request that cannot be read as the WSDL declares it (WCF's formatter fault)."""

    faultcode = "a:DeserializationFailed"
    faultcode_ns = WCF_DISPATCHER

    def __init__(self, element: str, reason: str):
        self.element = element
        self.reason = reason
        parameter = element.split("/", 1)[0].split("[", 1)[0]
        super().__init__(
            "The formatter threw an exception while trying to deserialize the message: There was an error while "
            f"trying to deserialize parameter {TNS}:{parameter}. The InnerException message was "
            f"'Element {element}: {reason}'. Please see InnerException for more details."
        )


# -------------------------------------------------------------------------------------------------------- request


@dataclass
class Request:
    """A parsed SOAP request."""

    operation: str
    #: Only the headers present (and not nil): DeveloperToken, AuthenticationToken, UserName, Password, ApplicationToken.
    headers: dict[str, str]
    body: dict[str, Any]
    #: Set by the server before the handler runs (the TrackingId of the reply).
    tracking_id: str = ""


_INT_RE = re.compile(r"[+-]?\d+\Z")
_DEC_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)\Z")
_DT_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?\Z"
)
_BOOL = {"true": True, "false": False, "1": True, "0": False}
_DOTNET_NAMES = {
    "long": "Int64", "int": "Int32", "short": "Int16", "byte": "SByte", "unsignedByte": "Byte",
    "unsignedShort": "UInt16", "unsignedInt": "UInt32", "unsignedLong": "UInt64", "boolean": "Boolean",
    "dateTime": "DateTime", "decimal": "Decimal", "double": "Double", "float": "Single",
}


def parse_datetime(text: str) -> datetime:
    """An XSD dateTime -> aware UTC datetime (naive = UTC; fractions beyond µs rounded). ValueError if invalid."""
    m = _DT_RE.match(text)
    if not m:
        raise ValueError(f"'{text}' is not an xs:dateTime (expected e.g. 2026-01-05T10:11:12Z)")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
    if frac:
        micro = round(int(frac) * 10 ** (6 - len(frac))) if len(frac) <= 6 else round(int(frac) / 10 ** (len(frac) - 6))
        dt += timedelta(microseconds=micro)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        if hours > 14 or minutes > 59:
            raise ValueError(f"'{text}' has an invalid time-zone offset")
        return (dt - sign * timedelta(hours=hours, minutes=minutes)).replace(tzinfo=timezone.utc)
    return dt.replace(tzinfo=timezone.utc)


def _read_simple(text: str, st: SimpleType, path: str) -> Any:
    kind = st.kind
    if st.enums is not None:
        if st.is_list:
            values = text.split()
            for v in values:
                if v not in st.enums:
                    raise DeserializationFault(path, f"'{v}' is not a valid value for {st.name}.")
            return values
        if text not in st.enums:
            if text == "":
                raise DeserializationFault(path, f"an empty value is not a valid {st.name}; omit the element or send a value.")
            raise DeserializationFault(path, f"'{text}' is not a valid value for {st.name}.")
        return text
    if kind == "str" or kind == "base64":
        return text
    value = text.strip()
    target = _DOTNET_NAMES.get(st.builtin, st.builtin)
    if value == "":
        raise DeserializationFault(path, f"the value '' cannot be parsed as the type '{target}'.")
    if kind == "int":
        if not _INT_RE.match(value):
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type '{target}'.")
        number = int(value)
        lo, hi = INT_RANGES.get(st.builtin, (None, None))
        if lo is not None and not lo <= number <= hi:  # type: ignore[operator]
            raise DeserializationFault(path, f"the value '{value}' is out of range for the type '{target}'.")
        return number
    if kind == "bool":
        try:
            return _BOOL[value]
        except KeyError:
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type 'Boolean'.") from None
    if kind == "datetime":
        try:
            return parse_datetime(value)
        except (ValueError, OverflowError):
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type 'DateTime'.") from None
    if kind == "decimal":
        if not _DEC_RE.match(value):
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type 'Decimal'.")
        try:
            return Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type 'Decimal'.") from None
    if kind == "float":
        special = {"INF": float("inf"), "-INF": float("-inf"), "NaN": float("nan")}
        if value in special:
            return special[value]
        if not _DEC_RE.match(value.replace("E", "e").split("e")[0]):
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type '{target}'.")
        try:
            return float(value)
        except ValueError:
            raise DeserializationFault(path, f"the value '{value}' cannot be parsed as the type '{target}'.") from None
    return text  # pragma: no cover - every kind is handled above


class _Reader:
    """Reads request elements into plain values according to the schema."""

    def __init__(self, schema: Schema):
        self.schema = schema

    def value(self, elem: ET.Element, decl: ElementDecl, path: str) -> Any:
        nil = elem.get(_XSI_NIL)
        if nil in ("true", "1"):
            if not decl.nillable:
                raise DeserializationFault(path, "the element cannot be null (i:nil) here; omit it or send a value.")
            return None
        schema = self.schema
        ct = schema.complex_types.get(decl.type)
        if ct is None:
            if len(elem):
                raise DeserializationFault(path, "a simple value was expected but the element has child elements.")
            return _read_simple(elem.text or "", schema.simple_types[decl.type], path)
        if elem.text and elem.text.strip():
            raise DeserializationFault(path, "text was found where only child elements are allowed.")
        item = ct.array_item
        if item is not None:
            out = []
            for i, child in enumerate(elem, start=1):
                if child.tag != item.qname:
                    raise DeserializationFault(
                        f"{path}/{_local(child.tag)}", f"unexpected element; {ct.name} holds only {item.name} items."
                    )
                out.append(self.value(child, item, f"{path}/{item.name}[{i}]"))
            return out
        return self.fields(elem, ct, path)

    def fields(self, elem: ET.Element, ct: ComplexType, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        prefix = f"{path}/" if path else ""
        for child in elem:
            decl = ct.by_qname.get(child.tag)  # type: ignore[arg-type]
            if decl is None:
                ns, local = split_qname(str(child.tag))
                known = ct.by_name.get(local)
                hint = f" (expected in namespace {known.ns})" if known is not None else ""
                raise DeserializationFault(
                    f"{prefix}{local}", f"{ct.name.removesuffix('@element')} has no element '{local}' in namespace "
                    f"'{ns}'{hint}; the Customer Management v13 WSDL does not declare it."
                )
            if decl.name in out:
                raise DeserializationFault(f"{prefix}{decl.name}", "the element appears more than once.")
            out[decl.name] = self.value(child, decl, prefix + decl.name)
        for decl in ct.elements:
            if decl.min_occurs > 0 and decl.name not in out:
                raise DeserializationFault(f"{prefix}{decl.name}", "the required element is missing.")
        return out


def _local(tag: Any) -> str:
    return split_qname(str(tag))[1]


def _unquote_action(soap_action: str | None) -> str:
    if soap_action is None:
        return ""
    action = soap_action.strip()
    if len(action) >= 2 and action[0] == action[-1] == '"':
        action = action[1:-1].strip()
    return action


_REQUEST_INDEX: dict[str, Operation] | None = None


def _operation_for_request_element(schema: Schema, tag: str) -> Operation | None:
    global _REQUEST_INDEX
    if _REQUEST_INDEX is None:  # built whole, then published: concurrent readers never see a partial index
        _REQUEST_INDEX = {op.request.qname: op for op in schema.operations.values()}
    return _REQUEST_INDEX.get(tag)


#: Tags (``<``), and attributes, a request may hold: the largest real request (AddClientLinks with 10 links) has a
#: few hundred.
MAX_TAGS = 100_000


def _declares_dtd(body: bytes) -> bool:
    """Whether the body has a DOCTYPE or ENTITY declaration, in whatever encoding XML allows (UTF-16 and UTF-32
    hide them from a byte search). Expat still bounds entity expansion; this refuses DTDs outright."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return True
    head = body[:4]
    if b"\x00" in head or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        for encoding in ("utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
            try:
                text = body.decode(encoding)
            except UnicodeDecodeError:
                continue
            if "<!DOCTYPE" in text or "<!ENTITY" in text:
                return True
    return False


def parse_request(body: bytes, soap_action: str | None) -> Request:
    """Parse a SOAP 1.1 request.

    Dispatches on ``soap_action`` (the SOAPAction header value, quoted or not) and checks that the body's element
    is ``<Operation>Request`` in the Customer Management namespace. Without a SOAPAction (None or empty) the body
    element decides. Raises ProtocolFault (a ClientFault) for anything malformed, unknown or mistyped.
    """
    schema = load_schema()
    if not body or not body.strip():
        raise ProtocolFault("The request body is empty. Send a SOAP 1.1 envelope with the operation's request element.")
    if _declares_dtd(body):
        raise ProtocolFault("Document type definitions are not allowed in SOAP messages. Remove the DOCTYPE and retry.")
    if body.count(b"<") > MAX_TAGS or body.count(b'="') + body.count(b"='") > MAX_TAGS:
        # A parsed element or attribute costs ~100 bytes: a 10 MB body of empty tags (or of attributes) would take
        # 300-400 MB and seconds of CPU.
        raise ProtocolFault(f"The request has more than {MAX_TAGS:,} XML tags or attributes, far more than any "
                            "Customer Management request needs. Send a smaller request.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProtocolFault(f"The request is not well-formed XML ({exc}). Send a well-formed SOAP 1.1 envelope.") from None
    except Exception as exc:  # expat can also raise e.g. for an unknown declared encoding
        raise ProtocolFault(f"The request could not be read as XML ({type(exc).__name__}). Send UTF-8 XML.") from None

    if root.tag != _ENVELOPE:
        if root.tag == qname(SOAP12_ENV, "Envelope"):
            raise ProtocolFault("This endpoint speaks SOAP 1.1 only; send a SOAP 1.1 envelope (text/xml).")
        raise ProtocolFault(
            f"The request is not a SOAP 1.1 envelope (root element {_local(root.tag)!r} in namespace "
            f"{split_qname(str(root.tag))[0]!r})."
        )

    headers: dict[str, str] = {}
    header_el = root.find(_HEADER)
    if header_el is not None:
        for child in header_el:
            ns, local = split_qname(str(child.tag))
            if ns == TNS and local in HEADER_NAMES and child.get(_XSI_NIL) not in ("true", "1"):
                headers[local] = child.text or ""

    body_el = root.find(_BODY)
    if body_el is None:
        raise ProtocolFault("The SOAP envelope has no Body element.")
    children = list(body_el)
    if len(children) != 1:
        raise ProtocolFault(
            "The SOAP Body must contain exactly one element, the operation's request element; "
            f"it contains {len(children)}."
        )
    wrapper = children[0]

    action = _unquote_action(soap_action)
    if action:
        op = schema.operation_for_action(action)
        if op is None:
            raise ActionNotSupportedFault(action)
        if wrapper.tag != op.request.qname:
            raise ProtocolFault(
                f"The SOAPAction '{action}' does not match the body element '{_local(wrapper.tag)}' "
                f"in namespace '{split_qname(str(wrapper.tag))[0]}'; expected '{op.request.name}' in '{TNS}'."
            )
    else:
        op = _operation_for_request_element(schema, str(wrapper.tag))
        if op is None:
            raise ActionNotSupportedFault(_local(wrapper.tag).removesuffix("Request") or "(none)")

    reader = _Reader(schema)
    data = reader.fields(wrapper, schema.complex_type(op.request.type), "")
    return Request(operation=op.name, headers=headers, body=data)


# ------------------------------------------------------------------------------------------------------ replies

_MISSING = object()
# Characters XML 1.0 cannot carry at all (not even as references) become U+FFFD; '\r' must be a reference to survive.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return s
    s = _INVALID_XML.sub("\ufffd", s)
    return _sax_escape(s, {"\r": "&#13;"})


def format_datetime(value: datetime) -> str:
    """UTC with WCF's ``yyyy-MM-ddTHH:mm:ss.FFFFFFFZ`` (up to 7 fractional digits, trailing zeros trimmed)."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    frac = f".{value.microsecond:06d}".rstrip("0") if value.microsecond else ""
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{frac}Z"
    )


def _fmt_str(value: Any, path: str) -> str:
    if isinstance(value, Enum):
        value = value.value
    if not isinstance(value, str):
        raise SchemaError(f"{path}: expected a string, got {type(value).__name__} {value!r}.")
    return _text(value)


def _make_formatter(st: SimpleType) -> Callable[[Any, str], str]:
    kind = st.kind
    if st.enums is not None:
        allowed = frozenset(st.enums)
        if st.is_list:
            def fmt_list(value: Any, path: str) -> str:
                items = value.split() if isinstance(value, str) else [getattr(v, "value", v) for v in value]
                for v in items:
                    if v not in allowed:
                        raise SchemaError(f"{path}: {v!r} is not a {st.name} value in the WSDL.")
                return " ".join(items)
            return fmt_list

        def fmt_enum(value: Any, path: str) -> str:
            if isinstance(value, Enum):
                value = value.value
            if value not in allowed:
                raise SchemaError(f"{path}: {value!r} is not a {st.name} value in the WSDL.")
            return value
        return fmt_enum
    if kind == "str":
        return _fmt_str
    if kind == "int":
        lo, hi = INT_RANGES.get(st.builtin, (-(2**64), 2**64))

        def fmt_int(value: Any, path: str) -> str:
            if type(value) is not int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise SchemaError(f"{path}: expected an integer ({st.builtin}), got {type(value).__name__} {value!r}.")
                value = int(value)
            if not lo <= value <= hi:
                raise SchemaError(f"{path}: {value} is out of range for xs:{st.builtin}.")
            return str(value)
        return fmt_int
    if kind == "bool":
        def fmt_bool(value: Any, path: str) -> str:
            if value is True:
                return "true"
            if value is False:
                return "false"
            raise SchemaError(f"{path}: expected a bool, got {type(value).__name__} {value!r}.")
        return fmt_bool
    if kind == "datetime":
        def fmt_dt(value: Any, path: str) -> str:
            if not isinstance(value, datetime):
                raise SchemaError(f"{path}: expected a datetime, got {type(value).__name__} {value!r}.")
            return format_datetime(value)
        return fmt_dt
    if kind == "base64":
        def fmt_b64(value: Any, path: str) -> str:
            if isinstance(value, (bytes, bytearray)):
                return base64.b64encode(value).decode("ascii")
            return _fmt_str(value, path)
        return fmt_b64
    if kind == "decimal":
        def fmt_dec(value: Any, path: str) -> str:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise SchemaError(f"{path}: expected a number, got {type(value).__name__} {value!r}.")
            return format(Decimal(value) if not isinstance(value, Decimal) else value, "f")
        return fmt_dec
    if kind == "float":
        def fmt_float(value: Any, path: str) -> str:
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise SchemaError(f"{path}: expected a number, got {type(value).__name__} {value!r}.")
            f = float(value)
            if f != f:
                return "NaN"
            if f in (float("inf"), float("-inf")):
                return "INF" if f > 0 else "-INF"
            return repr(f)
        return fmt_float
    raise SchemaError(f"No formatter for simple type {st.qname}.")  # pragma: no cover


_SIMPLE, _COMPLEX, _ARRAY = 0, 1, 2


@dataclass(slots=True)
class _ElPlan:
    """How to write one element: precomputed tags and the plan of its content."""

    name: str
    open: str
    close: str
    nil: str
    empty: str
    nillable: bool
    required: bool
    emit_default: bool
    kind: int
    fmt: Callable[[Any, str], str] | None = None
    type_plan: "_TypePlan | None" = None
    item: "_ElPlan | None" = None


@dataclass(slots=True)
class _TypePlan:
    name: str
    elements: tuple[_ElPlan, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)


class _Planner:
    """Builds and caches write plans per (complex type, default namespace)."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._types: dict[tuple[str, str], _TypePlan] = {}
        self._formatters: dict[str, Callable[[Any, str], str]] = {}
        self._lock = threading.Lock()

    def type_plan(self, type_qname: str, default_ns: str) -> _TypePlan:
        key = (type_qname, default_ns)
        plan = self._types.get(key)
        if plan is not None:
            return plan
        with self._lock:
            building: dict[tuple[str, str], _TypePlan] = {}
            plan = self._build_type(type_qname, default_ns, building)
            self._types.update(building)
            return plan

    def _build_type(self, type_qname: str, default_ns: str, building: dict) -> _TypePlan:
        key = (type_qname, default_ns)
        existing = self._types.get(key) or building.get(key)
        if existing is not None:
            return existing
        ct = self.schema.complex_type(type_qname)
        plan = _TypePlan(ct.name.removesuffix("@element"))
        building[key] = plan  # registered before its elements, so recursive types terminate
        plan.elements = tuple(self._build_element(e, default_ns, building) for e in ct.elements)
        plan.names = frozenset(e.name for e in ct.elements)
        return plan

    def _build_element(self, decl: ElementDecl, default_ns: str, building: dict) -> _ElPlan:
        tag = decl.name if decl.ns == default_ns else f"{_PREFIXES[decl.ns]}:{decl.name}"
        ep = _ElPlan(
            name=decl.name,
            open=f"<{tag}>",
            close=f"</{tag}>",
            nil=f'<{tag} i:nil="true"/>',
            empty=f"<{tag}/>",
            nillable=decl.nillable,
            required=decl.min_occurs > 0,
            emit_default=decl.emit_default,
            kind=_SIMPLE,
        )
        ct = self.schema.complex_types.get(decl.type)
        if ct is None:
            fmt = self._formatters.get(decl.type)
            if fmt is None:
                fmt = self._formatters[decl.type] = _make_formatter(self.schema.simple_type(decl.type))
            ep.fmt = fmt
        elif ct.array_item is not None:
            ep.kind = _ARRAY
            ep.item = self._build_element(ct.array_item, default_ns, building)
        else:
            ep.kind = _COMPLEX
            ep.type_plan = self._build_type(decl.type, default_ns, building)
        return ep


def _as_mapping(value: Any, plan: _TypePlan, path: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    to_wire = getattr(value, "to_wire", None)
    if to_wire is not None:  # model.ClientLink and friends
        return to_wire(include_none=True)
    if isinstance(value, OperationError) and plan.name == "OperationError":
        return {"Code": value.code, "Details": value.details, "Message": value.message}
    if isinstance(value, AdApiError) and plan.name == "AdApiError":
        return {"Code": value.code, "Detail": value.detail, "ErrorCode": value.error_code, "Message": value.message}
    raise SchemaError(f"{path}: expected a dict for {plan.name}, got {type(value).__name__}.")


def _write_fields(out: list[str], plan: _TypePlan, value: Mapping[str, Any], path: str) -> None:
    seen = 0
    get = value.get
    append = out.append
    for ep in plan.elements:
        v = get(ep.name, _MISSING)
        if v is _MISSING:
            if ep.required:
                raise SchemaError(f"{path}/{ep.name}: the element is required by the WSDL.")
            continue
        seen += 1
        if v is None:
            if ep.nillable:
                if ep.emit_default:
                    append(ep.nil)
            elif ep.required:
                raise SchemaError(f"{path}/{ep.name}: the element cannot be nil.")
            continue
        if ep.kind == _SIMPLE:
            append(ep.open)
            append(ep.fmt(v, path))  # type: ignore[misc]
            append(ep.close)
        else:
            _write_value(out, ep, v, f"{path}/{ep.name}")
    if seen != len(value):
        unknown = sorted(set(value) - plan.names)
        raise SchemaError(
            f"{path}: {plan.name} has no element(s) {', '.join(map(repr, unknown))} in the shipped WSDL."
        )


def _write_value(out: list[str], ep: _ElPlan, v: Any, path: str) -> None:
    if ep.kind == _SIMPLE:
        out.append(ep.open)
        out.append(ep.fmt(v, path))  # type: ignore[misc]
        out.append(ep.close)
    elif ep.kind == _ARRAY:
        if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
            raise SchemaError(f"{path}: expected a list, got {type(v).__name__}.")
        items = list(v)
        if not items:
            out.append(ep.empty)
            return
        out.append(ep.open)
        item = ep.item
        assert item is not None
        for i, x in enumerate(items):
            if x is None:
                if not item.nillable:
                    raise SchemaError(f"{path}[{i}]: {item.name} items cannot be nil.")
                out.append(item.nil)
            else:
                _write_value(out, item, x, f"{path}[{i}]")
        out.append(ep.close)
    else:
        plan = ep.type_plan
        assert plan is not None
        out.append(ep.open)
        _write_fields(out, plan, _as_mapping(v, plan, path), path)
        out.append(ep.close)


_PLANNER: _Planner | None = None


def _planner() -> _Planner:
    global _PLANNER
    if _PLANNER is None:
        _PLANNER = _Planner(load_schema())
    return _PLANNER


def _xmlns(schema: Schema, type_qname: str, default_ns: str) -> str:
    decls = [f' xmlns="{default_ns}"']
    for ns in schema.namespaces_reachable(type_qname):
        if ns != default_ns:
            decls.append(f' xmlns:{_PREFIXES[ns]}="{ns}"')
    decls.append(f' xmlns:i="{XSI}"')
    return "".join(decls)


_WRAPPERS: dict[str, tuple[str, str, _TypePlan]] = {}


def _wrapper(op_name: str) -> tuple[str, str, _TypePlan]:
    got = _WRAPPERS.get(op_name)
    if got is None:
        schema = load_schema()
        op = schema.operation(op_name)
        plan = _planner().type_plan(op.response.type, TNS)
        got = (f"<{op.response.name}{_xmlns(schema, op.response.type, TNS)}>", f"</{op.response.name}>", plan)
        _WRAPPERS[op_name] = got
    return got


def _head(tracking_id: str) -> str:
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Header><TrackingId xmlns="{TNS}">{_text(tracking_id)}</TrackingId>'
        "</s:Header><s:Body>"
    )


_TAIL = "</s:Body></s:Envelope>"


def serialize_response(operation: str, payload: Mapping[str, Any], tracking_id: str) -> bytes:
    """The reply envelope of ``operation`` for ``payload`` (UTF-8 bytes).

    ``payload`` keys are the response wrapper's child element names (e.g. ``{"ClientLinks": [...]}``); values:
    ``None`` -> ``i:nil="true"`` if the element is nillable, else omitted (and omitted for WCF EmitDefaultValue=false
    elements such as ClientLink.ClientEntityCustomerNumber); a missing key -> omitted; lists -> array items named as
    the WSDL says (a ``None`` item -> a nil item, e.g. ``<e:ArrayOfOperationError i:nil="true"/>``); dicts -> complex
    types written in WSDL order whatever the dict order; ``model.ClientLink`` (anything with
    ``to_wire(include_none=True)``), ``faults.OperationError`` and ``faults.AdApiError`` are accepted where those
    types are expected; datetime -> UTC ``…Z`` (naive = UTC); bool -> true/false; Enum members -> their value.
    Raises SchemaError for anything the shipped WSDL does not declare (unknown keys, wrong value types, unknown
    enumeration values): the simulator never emits what the SDK could not parse.
    """
    open_tag, close_tag, plan = _wrapper(operation)
    if not isinstance(payload, Mapping):
        raise SchemaError(f"{operation}: the handler must return a dict of response elements, not {type(payload).__name__}.")
    out = [_head(tracking_id), open_tag]
    _write_fields(out, plan, payload, operation + "Response")
    out.append(close_tag)
    out.append(_TAIL)
    return "".join(out).encode("utf-8")


def _detail(type_qname: str, element_name: str, default_ns: str, payload: Mapping[str, Any]) -> str:
    schema = load_schema()
    plan = _planner().type_plan(type_qname, default_ns)
    out = [f"<{element_name}{_xmlns(schema, type_qname, default_ns)}>"]
    _write_fields(out, plan, payload, element_name)
    out.append(f"</{element_name}>")
    return "".join(out)


def internal_error() -> AdApiFault:
    """The fault for an unexpected failure inside the simulator (code 0, InternalError)."""
    return AdApiFault(
        [AdApiError(0, "InternalError", "An internal error has occurred. Please try again later.")]
    )


def serialize_fault(fault: SimulatorFault, tracking_id: str) -> bytes:
    """An HTTP 500 SOAP 1.1 fault envelope for ``fault`` (UTF-8 bytes).

    AdApiFault -> ``detail/AdApiFaultDetail`` (adapi namespace) with TrackingId and ``Errors/AdApiError``;
    ApiFault -> ``detail/ApiFault`` (Exception namespace; its TrackingId in the adapi namespace, as WCF writes the
    inherited member) with ``OperationErrors/OperationError``; both with faultcode ``s:Server`` and the real
    service's faultstring ending in ``TrackingId: <id>.``. A ClientFault -> its faultcode (``s:Client`` or a WCF
    ``a:`` code) and faultstring, no detail.
    """
    faultcode, faultcode_ns, detail = "s:Server", None, ""
    faultstring = f"{fault.faultstring} TrackingId: {tracking_id}."
    if isinstance(fault, AdApiFault):
        detail = _detail(
            qname(ADAPI, "AdApiFaultDetail"), "AdApiFaultDetail", ADAPI,
            {"TrackingId": tracking_id, "Errors": list(fault.errors)},
        )
    elif isinstance(fault, ApiFault):
        detail = _detail(
            qname(EXCEPTION, "ApiFault"), "ApiFault", EXCEPTION,
            {"TrackingId": tracking_id, "OperationErrors": list(fault.operation_errors)},
        )
    elif isinstance(fault, ClientFault):
        faultcode = getattr(fault, "faultcode", "s:Client")
        faultcode_ns = getattr(fault, "faultcode_ns", None)
        faultstring = fault.faultstring
    else:
        faultstring = str(fault) or fault.faultstring
    code_xmlns = f' xmlns:a="{faultcode_ns}"' if faultcode_ns else ""
    return (
        f"{_head(tracking_id)}<s:Fault><faultcode{code_xmlns}>{faultcode}</faultcode>"
        f'<faultstring xml:lang="en-US">{_text(faultstring)}</faultstring>'
        f"{f'<detail>{detail}</detail>' if detail else ''}</s:Fault>{_TAIL}"
    ).encode("utf-8")
