"""The one adapter over the official Microsoft Advertising SDK (``bingads``, SOAP/suds) for Customer Management v13.

Production, sandbox and the built-in simulator (``location=``) all go through the same code path:

* The SDK builds every request (from plain dicts, so only the elements we mean are sent: pitfall P4), sends the
  ``DeveloperToken``/``AuthenticationToken`` headers, and refreshes the OAuth access token once on fault 109.
* Every reply is read from the raw XML with :mod:`xml.etree.ElementTree`, by namespace URI, never by prefix (P5).
  suds builds objects at ~2.7 ms per client link and fails a whole call on an element its WSDL does not know (P9);
  it also drops a leading nil PartialErrors entry (P1). See :class:`_RawTransport` for how the raw bytes are taken
  without letting suds parse a large reply at all.
* Every failure becomes an :class:`ApiError` subclass carrying the code, its documented meaning (from
  :func:`linkdesk.core.rules.error_info`) and one sentence for the user.

``bingads`` (1.1 s to import) is imported only when the first client is built, never at module import: this module is
on the TUI's import path. Tokens never appear in log records, exception messages or reprs.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit

from . import rules
from .model import (
    CLIENT_LINK_WIRE,
    READ_ONLY_ON_ADD,
    Account,
    ClientLink,
    ClientLinkStatus,
    Customer,
    CustomerLinkPermission,
    CustomerRole,
    LinkType,
    Role,
    User,
)

log = logging.getLogger(__name__)
# Retry warnings belong in a log a developer configures (LINKDESK_DEBUG), never on the user's terminal through
# Python's last-resort handler: the package logger gets a NullHandler, as libraries should.
_pkg_log = logging.getLogger("linkdesk")
if not any(isinstance(h, logging.NullHandler) for h in _pkg_log.handlers):
    _pkg_log.addHandler(logging.NullHandler())

# --------------------------------------------------------------------------------------------------------------------
# Wire constants (namespace URIs; prefixes are unstable, P5)
# --------------------------------------------------------------------------------------------------------------------

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
TNS = "https://bingads.microsoft.com/Customer/v13"
ENT = "https://bingads.microsoft.com/Customer/v13/Entities"
EXC = "https://bingads.microsoft.com/Customer/v13/Exception"
ADAPI = "https://adapi.microsoft.com"
ARRAYS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
GENERIC = "http://schemas.datacontract.org/2004/07/System.Collections.Generic"
_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"

ENVIRONMENTS = ("production", "sandbox")
BATCH_SIZE = rules.BATCH_MAX  # AddClientLinks / UpdateClientLinks: "limit your request to 10 client links per call"
PAGE_SIZE = rules.PAGE_MAX  # SearchClientLinks: "The maximum size ... is 100"
DEFAULT_THROTTLE_WAIT = 60.0  # 117: "resubmit ... after waiting 60 seconds"

#: AdApiFaultDetail / OperationError codes that mean "your credentials or rights are the problem".
AUTH_CODES = frozenset({105, 106, 109, 116, 120, 1001})
THROTTLE_CODE = 117
INTERNAL_ERROR_CODE = 0

# suds logs whole envelopes (headers carry the tokens) at DEBUG; keep that out of any log an app configures.
_suds_log = logging.getLogger("suds")
if _suds_log.level < logging.INFO:
    _suds_log.setLevel(logging.INFO)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationError:
    """One error the service reported (an OperationError, or an AdApiError of a fault)."""

    code: int | None
    message: str = ""
    details: str | None = None
    #: AdApiError.ErrorCode (symbolic) when the service sent one; OperationErrors have none.
    error_code: str | None = None

    @property
    def info(self) -> rules.ErrorCode:
        return rules.error_info(self.code)

    @property
    def symbol(self) -> str:
        return self.error_code or self.info.symbol

    @property
    def meaning(self) -> str:
        return self.info.meaning

    @property
    def user_message(self) -> str:
        return self.info.user_text


class ApiError(Exception):
    """A Customer Management call failed. Subclasses say how; attributes say what and what to do.

    ``code``/``symbol``/``meaning``: the service's error code and its documented meaning (None when the failure is not
    a service error, e.g. a network error). ``user_message``: one sentence for the user. ``tracking_id``: quote it to
    Microsoft support. ``retryable``: a later identical call may succeed. ``maybe_applied``: for AddClientLinks /
    UpdateClientLinks, the request may have reached the service and been applied although no answer came back; sync
    before trying again. ``results_so_far``: for Add/Update, the results of the batches completed before this one.
    """

    default_message = "The Microsoft Advertising request failed; try again later."

    def __init__(
        self,
        user_message: str | None = None,
        *,
        code: int | None = None,
        symbol: str | None = None,
        meaning: str | None = None,
        tracking_id: str | None = None,
        retryable: bool = False,
        operation: str | None = None,
        detail: str | None = None,
        errors: Sequence[OperationError] = (),
        http_status: int | None = None,
        maybe_applied: bool = False,
        sent: bool = True,
    ):
        info = rules.error_info(code) if code is not None else None
        self.code = code
        self.symbol = symbol or (info.symbol if info else None)
        self.meaning = meaning or (info.meaning if info else None)
        self.user_message = user_message or (info.user_text if info else None) or self.default_message
        self.tracking_id = tracking_id
        self.retryable = retryable
        self.operation = operation
        #: Technical detail (the service's message, the exception type), tokens removed.
        self.detail = detail
        self.errors: list[OperationError] = list(errors)
        self.http_status = http_status
        self.maybe_applied = maybe_applied
        #: False when the request certainly never reached the service (connection refused, DNS failure).
        self.sent = sent
        self.results_so_far: list[LinkResult] = []
        super().__init__(self.user_message)

    def __str__(self) -> str:
        extra = []
        if self.code is not None:
            extra.append(f"code {self.code}" + (f" {self.symbol}" if self.symbol else ""))
        if self.http_status is not None:
            extra.append(f"HTTP {self.http_status}")
        if self.operation:
            extra.append(self.operation)
        if self.tracking_id:
            extra.append(f"tracking id {self.tracking_id}")
        return self.user_message + (f" ({'; '.join(extra)})" if extra else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, operation={self.operation!r}, tracking_id={self.tracking_id!r})"


class AuthError(ApiError):
    """The sign-in or developer token was refused, or the user may not do this (105, 106, 109 after refresh, 116,
    120, 1001, a failed token refresh)."""

    default_message = "Microsoft Advertising did not accept your sign-in; sign in again with `linkdesk auth login`."


class ThrottledError(ApiError):
    """117 CallRateExceeded (or HTTP 429): too many calls per minute. ``retry_after``: seconds to wait."""

    default_message = "Microsoft Advertising asked linkdesk to slow down; wait a minute and try again."

    def __init__(self, *args: Any, retry_after: float = DEFAULT_THROTTLE_WAIT, **kwargs: Any):
        kwargs.setdefault("retryable", True)
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class RequestRefused(ApiError):
    """The service refused the request as a whole (ApiFault with OperationErrors, or another SOAP fault); nothing was
    applied. ``errors`` lists every reason. Never retried."""

    default_message = "Microsoft Advertising refused the request; check it and try again."


class ServiceUnavailable(ApiError):
    """The service could not be reached or answered with an HTTP error page (5xx, connection refused or reset)."""

    default_message = "Microsoft Advertising is not reachable right now; check your connection and try again later."


class ApiTimeout(ApiError):
    """No answer within the timeout."""

    default_message = "Microsoft Advertising did not answer in time; try again later."


class MalformedReply(ApiError):
    """The service answered, but not with a reply linkdesk can read (bad XML, unexpected shape)."""

    default_message = ("Microsoft Advertising sent a reply linkdesk could not read; try again, and report it if it "
                       "keeps happening.")


class Cancelled(Exception):
    """The caller's cancel event was set; the operation stopped early and its result is incomplete."""


# --------------------------------------------------------------------------------------------------------------------
# Small result types
# --------------------------------------------------------------------------------------------------------------------


class Predicate(NamedTuple):
    field: str
    operator: str
    value: str | int


class OrderBy(NamedTuple):
    field: str
    order: str = "Ascending"


class UserInfo(NamedTuple):
    id: int
    user_name: str | None


class CustomerInfo(NamedTuple):
    id: int
    name: str | None


class AccountInfo(NamedTuple):
    """GetAccountsInfo / GetLinkedAccountsAndCustomersInfo: an account without its parent customer."""

    id: int
    name: str | None
    number: str | None
    life_cycle_status: str | None = None
    pause_reason: int | None = None


@dataclass(frozen=True, slots=True)
class LinkResult:
    """The outcome for one requested link: ``index`` is its position in the caller's list; no errors = success."""

    index: int
    link: ClientLink
    errors: list[OperationError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------------------------------------------------
# Parsing helpers (raw XML, by namespace URI)
# --------------------------------------------------------------------------------------------------------------------


class _Shape(ValueError):
    """Internal: a reply element has an unexpected shape or value (becomes MalformedReply)."""


def _is_nil(el: ET.Element) -> bool:
    return el.get(_NIL) in ("true", "1")


def _text(el: ET.Element | None) -> str | None:
    """Element text; nil or absent -> None; an empty element -> ''."""
    if el is None or _is_nil(el):
        return None
    return el.text or ""


def _int(text: str | None) -> int | None:
    if text is None or text.strip() == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise _Shape(f"{text[:40]!r} is not an integer") from None


def _bool(text: str | None) -> bool | None:
    if text is None or text.strip() == "":
        return None
    t = text.strip()
    if t in ("true", "1"):
        return True
    if t in ("false", "0"):
        return False
    raise _Shape(f"{text[:40]!r} is not a boolean")


def _datetime(text: str | None) -> datetime | None:
    """xs:dateTime -> aware UTC datetime (a value without offset is UTC, as the service's are; 7 digits truncated)."""
    if text is None or text.strip() == "":
        return None
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Shape(f"{text[:40]!r} is not a dateTime") from None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def _str_or_none(text: str | None) -> str | None:
    return text if text else None


def _child_text(el: ET.Element, ns: str, local: str) -> str | None:
    return _text(el.find(_q(ns, local)))


def _items(el: ET.Element | None, ns: str, local: str) -> list[ET.Element]:
    """Items of a SOAP array: absent, nil and empty are all no items (P2); one item is still a list."""
    if el is None or _is_nil(el):
        return []
    return el.findall(_q(ns, local))


def _long_list(el: ET.Element | None) -> tuple[int, ...]:
    return tuple(v for v in (_int(_text(c)) for c in _items(el, ARRAYS, "long")) if v is not None)


def _kv_pairs(el: ET.Element) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in _items(el, GENERIC, "KeyValuePairOfstringstring"):
        out.append((_child_text(pair, GENERIC, "key") or "", _child_text(pair, GENERIC, "value") or ""))
    return tuple(out)


def _link_type(text: str | None) -> LinkType | str:
    try:
        return LinkType.parse(text)
    except ValueError:
        return text  # a newer type than this version knows: kept as its wire string


def _permission(text: str | None) -> CustomerLinkPermission | str | None:
    if not text:
        return None
    try:
        return CustomerLinkPermission(text)
    except ValueError:
        return text


# Fast paths for the converters of ClientLink fields (100,000 links per sync): the common, well-formed value is one
# dict lookup or one constructor call; anything else goes to the general converter above, which decides (or raises).
_STATUS_BY_WIRE = {m.value: m for m in ClientLinkStatus}
_TYPE_BY_WIRE = {m.value: m for m in LinkType}
_BOOL_BY_WIRE = {"true": True, "false": False, "1": True, "0": False}


def _fast_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return _int(text)


def _fast_datetime(text: str) -> datetime | None:
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return _datetime(text)
    return d if d.tzinfo is timezone.utc else _datetime(text)


# ClientLink element tag -> (attribute, converter of the element's text). Built from the one wire mapping in model.
_CL_CONVERT: dict[str, Callable[[str], Any]] = {
    "type": lambda t: _TYPE_BY_WIRE.get(t) or _link_type(t),
    "client_entity_id": _fast_int,
    "managing_customer_id": _fast_int,
    "is_bill_to_client": lambda t: b if (b := _BOOL_BY_WIRE.get(t)) is not None else _bool(t),
    "start_date": _fast_datetime,
    "status": lambda t: _STATUS_BY_WIRE.get(t) or ClientLinkStatus.parse(t),
    "suppress_notification": lambda t: bool(_bool(t)),
    "last_modified_date_time": _fast_datetime,
    "last_modified_by_user_id": _fast_int,
    "customer_link_permission": _permission,
}
_KV = object()  # marker: the element holds key/value pairs, not text
#: tag -> (attribute, converter); converter None = the text as is.
_CL_FIELDS: dict[str, tuple[str, Any]] = {
    _q(ENT, wire): (attr, _CL_CONVERT.get(attr)) for attr, wire in CLIENT_LINK_WIRE.items()
}
_CL_FIELDS[_q(ENT, "ForwardCompatibilityMap")] = ("forward_compatibility_map", _KV)
_CL_NIL_DEFAULTS = {"suppress_notification": False, "forward_compatibility_map": (), "type": LinkType.AccountLink}


def parse_client_link(el: ET.Element) -> ClientLink:
    """One ``ClientLink`` element -> model.ClientLink. Absent elements keep the dataclass default (P3), nil ones are
    None, elements this version does not know are ignored (P9), unknown enum values are kept as strings."""
    kwargs: dict[str, Any] = {}
    fields = _CL_FIELDS
    for child in el:
        spec = fields.get(child.tag)
        if spec is None:
            continue
        attr, conv = spec
        nil = child.get(_NIL)
        if nil is not None and nil in ("true", "1"):
            kwargs[attr] = _CL_NIL_DEFAULTS.get(attr)
        elif conv is None:
            kwargs[attr] = child.text or ""
        elif conv is _KV:
            kwargs[attr] = _kv_pairs(child)
        else:
            try:
                kwargs[attr] = conv(child.text or "")
            except _Shape as exc:
                raise _Shape(f"ClientLink.{CLIENT_LINK_WIRE[attr]}: {exc}") from None
    if kwargs.get("type") is None:
        kwargs["type"] = LinkType.AccountLink
    return ClientLink(**kwargs)


def _parse_operation_error(el: ET.Element, ns: str) -> OperationError:
    return OperationError(
        code=_int(_child_text(el, ns, "Code")),
        message=_child_text(el, ns, "Message") or "",
        details=_str_or_none(_child_text(el, ns, "Details")),
    )


def _parse_partial_errors(resp: ET.Element, n: int) -> list[list[OperationError]]:
    """PartialErrors read positionally from the raw reply: one entry per requested link, nil for a success (P1).

    Absent, nil or empty PartialErrors means every link succeeded. Any other count than ``n`` cannot be mapped back to
    links (OperationError has no Index) and is a malformed reply.
    """
    pe = resp.find(_q(TNS, "PartialErrors"))
    entries = _items(pe, EXC, "ArrayOfOperationError")
    if not entries:
        return [[] for _ in range(n)]
    out = [
        [] if _is_nil(e) else [_parse_operation_error(o, EXC) for o in e.findall(_q(EXC, "OperationError"))]
        for e in entries
    ]
    if len(out) != n:
        if not any(out):
            return [[] for _ in range(n)]
        raise _Shape(f"PartialErrors has {len(out)} entries for {n} links")
    return out


def _parse_customer_role(el: ET.Element) -> CustomerRole:
    role_id = _int(_child_text(el, ENT, "RoleId"))
    account_ids = _long_list(el.find(_q(ENT, "AccountIds")))
    return CustomerRole(
        customer_id=_int(_child_text(el, ENT, "CustomerId")) or 0,
        role=Role.parse(role_id) or role_id,  # an unknown (newer) role id is kept as the int
        account_ids=account_ids or None,  # not returned = customer-level access
        linked_account_ids=_long_list(el.find(_q(ENT, "LinkedAccountIds"))),
        customer_link_permission=_str_or_none(_child_text(el, ENT, "CustomerLinkPermission")),
    )


def _parse_user(el: ET.Element, roles: tuple[CustomerRole, ...]) -> User:
    name = el.find(_q(ENT, "Name"))
    contact = el.find(_q(ENT, "ContactInfo"))
    uid = _int(_child_text(el, ENT, "Id"))
    if uid is None:
        raise _Shape("User has no Id")
    return User(
        id=uid,
        user_name=_child_text(el, ENT, "UserName") or "",
        customer_id=_int(_child_text(el, ENT, "CustomerId")) or 0,
        first_name=_str_or_none(_child_text(name, ENT, "FirstName")) if name is not None else None,
        last_name=_str_or_none(_child_text(name, ENT, "LastName")) if name is not None else None,
        email=_str_or_none(_child_text(contact, ENT, "Email")) if contact is not None else None,
        phone=_str_or_none(_child_text(contact, ENT, "Phone1")) if contact is not None else None,
        life_cycle_status=_child_text(el, ENT, "UserLifeCycleStatus") or "Active",
        roles=roles,
    )


def _children(el: ET.Element) -> dict[str, ET.Element]:
    """Child elements by tag (the first of each), read in one pass: large replies (SearchAccounts pages of 1,000
    accounts of ~30 elements each) would otherwise scan every child once per field looked up."""
    out: dict[str, ET.Element] = {}
    for child in el:
        out.setdefault(child.tag, child)
    return out


_E = {local: _q(ENT, local) for local in (
    "Id", "Name", "Number", "AccountLifeCycleStatus", "PauseReason", "LinkedAgencies", "CustomerInfo",
    "ParentCustomerId", "BillToCustomerId", "AccountFinancialStatus", "CurrencyCode")}


def _parse_account_info(el: ET.Element) -> AccountInfo:
    c = _children(el)
    aid = _int(_text(c.get(_E["Id"])))
    if aid is None:
        raise _Shape("AccountInfo has no Id")
    return AccountInfo(
        id=aid,
        name=_text(c.get(_E["Name"])),
        number=_text(c.get(_E["Number"])),
        life_cycle_status=_str_or_none(_text(c.get(_E["AccountLifeCycleStatus"]))),
        pause_reason=_int(_text(c.get(_E["PauseReason"]))),
    )


def _parse_customer_info(el: ET.Element) -> CustomerInfo:
    c = _children(el)
    cid = _int(_text(c.get(_E["Id"])))
    if cid is None:
        raise _Shape("CustomerInfo has no Id")
    return CustomerInfo(id=cid, name=_text(c.get(_E["Name"])))


def _parse_account(el: ET.Element) -> Account:
    c = _children(el)
    aid = _int(_text(c.get(_E["Id"])))
    if aid is None:
        raise _Shape("AdvertiserAccount has no Id")
    agencies = tuple(
        i for i in (_int(_child_text(a, ENT, "Id")) for a in _items(c.get(_E["LinkedAgencies"]), ENT,
                                                                     "CustomerInfo")) if i is not None
    )
    return Account(
        id=aid,
        name=_text(c.get(_E["Name"])) or "",
        number=_text(c.get(_E["Number"])),
        parent_customer_id=_int(_text(c.get(_E["ParentCustomerId"]))) or 0,
        bill_to_customer_id=_int(_text(c.get(_E["BillToCustomerId"]))),
        life_cycle_status=_text(c.get(_E["AccountLifeCycleStatus"])) or "Active",
        financial_status=_str_or_none(_text(c.get(_E["AccountFinancialStatus"]))),
        currency_code=_str_or_none(_text(c.get(_E["CurrencyCode"]))),
        pause_reason=_int(_text(c.get(_E["PauseReason"]))),
        prepaid=None,  # PaymentMethodType is NULL in GetAccount/SearchAccounts replies: the API does not say
        linked_agency_ids=agencies,
    )


def _parse_customer(el: ET.Element) -> Customer:
    cid = _int(_child_text(el, ENT, "Id"))
    if cid is None:
        raise _Shape("Customer has no Id")
    return Customer(
        id=cid,
        name=_child_text(el, ENT, "Name") or "",
        number=_child_text(el, ENT, "Number"),
        life_cycle_status=_child_text(el, ENT, "CustomerLifeCycleStatus") or "Active",
        financial_status=_str_or_none(_child_text(el, ENT, "CustomerFinancialStatus")),
        market_country=_str_or_none(_child_text(el, ENT, "MarketCountry")),
        market_language=_str_or_none(_child_text(el, ENT, "MarketLanguage")),
    )


# --------------------------------------------------------------------------------------------------------------------
# Request helpers (plain dicts: only the keys we mean, P4; dateTimes as naive UTC strings, P7)
# --------------------------------------------------------------------------------------------------------------------


def wire_datetime(value: datetime | str) -> str:
    """A dateTime as the service accepts it: UTC, without any offset (it rejects signed offsets such as +00:00).

    A naive datetime is taken to be UTC already; an aware one is converted; a string is parsed and re-formatted.
    """
    if isinstance(value, str):
        parsed = _datetime(value)
        assert parsed is not None
        value = parsed
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat()


#: suds escapes "&" only when it does not already start "&amp;", "&lt;", "&gt;", "&quot;" or "&apos;" (its
#: Encoder's negative lookahead), so a note reading "Tom &amp; Jerry" or "&lt;3" would reach the service as
#: "Tom & Jerry" / "<3". Escaping exactly those ampersands first makes suds send the text as it is.
_SUDS_SKIPS = re.compile(r"&(?=(?:amp|lt|gt|quot|apos);)")


def suds_text(value: str) -> str:
    """Text prepared for suds so that the service receives exactly ``value`` (see _SUDS_SKIPS)."""
    return _SUDS_SKIPS.sub("&amp;", value) if "&" in value else value


def _plain_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return wire_datetime(value)
    return value


def _wire_value(value: Any) -> Any:
    value = _plain_value(value)
    return suds_text(value) if isinstance(value, str) else value


def client_link_to_wire(link: ClientLink, *, for_add: bool) -> dict[str, Any]:
    """The dict the SDK serialises for one ClientLink, in WSDL order, only elements that have a value.

    Update (``for_add=False``): every element as read is sent back (full-update semantics), Timestamp verbatim.
    Add: the read-only elements the service sets itself (Status, names, LastModified*, Timestamp) are left out.
    Text is prepared for suds (:func:`suds_text`), so the service receives it exactly as given.
    """
    out: dict[str, Any] = {}
    for attr, wire in CLIENT_LINK_WIRE.items():
        if for_add and attr in READ_ONLY_ON_ADD:
            continue
        value = getattr(link, attr)
        if attr == "forward_compatibility_map":
            if value:
                out[wire] = {"KeyValuePairOfstringstring": [{"key": k, "value": v} for k, v in value]}
            continue
        if value is None:
            continue
        out[wire] = _wire_value(value)
    return out


def _predicates(predicates: Iterable[Predicate | tuple | dict]) -> dict[str, Any]:
    items = []
    for p in predicates:
        if isinstance(p, dict):
            f, o, v = p["Field"], p["Operator"], p["Value"]
        else:
            f, o, v = p
        items.append({"Field": str(f), "Operator": str(_plain_value(o)), "Value": suds_text(str(_plain_value(v)))})
    return {"Predicate": items}


def _ordering(ordering: Iterable[OrderBy | tuple | dict] | None) -> dict[str, Any] | None:
    if not ordering:
        return None
    items = []
    for o in ordering:
        if isinstance(o, dict):
            items.append({"Field": o["Field"], "Order": o.get("Order", "Ascending")})
        else:
            o = OrderBy(*o)
            items.append({"Field": o.field, "Order": o.order})
    return {"OrderBy": items}


# --------------------------------------------------------------------------------------------------------------------
# Transport: hands suds a tiny envelope instead of a large successful reply, keeps the raw bytes for us
# --------------------------------------------------------------------------------------------------------------------



class _ReplyReceived(Exception):
    """Internal: the transport holds a well-formed, fault-free SOAP reply (``transport.root``); the call succeeded.

    Raised by the transport instead of handing the reply to suds: suds only re-raises it (Method.__call__ handles
    WebFault only) and so does the SDK (its 109 refresh-and-retry looks at WebFaults only), so it reaches
    ``_invoke_once`` unchanged. Faults and non-SOAP bodies still go to suds, which raises WebFault as before."""

_TRANSPORT_CLS: type | None = None
_TRANSPORT_LOCK = threading.Lock()


def _parse_xml(data: bytes | None) -> ET.Element | None:
    if not data:
        return None
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        return None


def _body(root: ET.Element | None) -> ET.Element | None:
    if root is None:
        return None
    for ns in (SOAP_ENV, SOAP12_ENV):
        if root.tag == _q(ns, "Envelope"):
            return root.find(_q(ns, "Body"))
    return None


def _fault(root: ET.Element | None) -> ET.Element | None:
    body = _body(root)
    if body is None:
        return None
    for ns in (SOAP_ENV, SOAP12_ENV):
        f = body.find(_q(ns, "Fault"))
        if f is not None:
            return f
    return None


def _raw_transport_class() -> type:
    """Build (once) the suds transport subclass; suds is imported here, not at module import.

    Why a transport and not just ``retxml=True``: with ``retxml`` suds still SAX-parses every reply into its own tree
    before returning the bytes (14.6 ms for a 100-link page, 8x ElementTree). This transport parses the reply once with
    ElementTree and, when it is a SOAP envelope *without* a Fault, ends the call there (``_ReplyReceived``). Faults
    and non-SOAP bodies go to suds unchanged, so suds still raises ``WebFault`` and the SDK's 109 refresh-and-retry
    still works. It also records the HTTP status and headers suds would otherwise drop (5xx vs 200, Retry-After).
    """
    global _TRANSPORT_CLS
    with _TRANSPORT_LOCK:
        if _TRANSPORT_CLS is not None:
            return _TRANSPORT_CLS
        import http.client

        from suds.transport import Reply, TransportError
        from suds.transport.https import HttpAuthenticated

        class _RawTransport(HttpAuthenticated):
            _kept: Any = None  # the kept-alive http.client connection, and the (scheme, netloc) it goes to
            _kept_target: Any = None

            def u2opener(self):  # noqa: ANN202 - suds API
                # suds builds a new urllib opener (a dozen handlers) for every request: ~0.5 ms of CPU per call,
                # a tenth of a small call. One transport serves one client, used by one thread at a time.
                if self.urlopener is None:
                    self.urlopener = super().u2opener()
                return self.urlopener

            def _send_kept(self, request):  # noqa: ANN001, ANN202 - suds API
                """POST over a connection kept open between the calls of this client (HTTP/1.1 keep-alive), or None
                when the request must take urllib's path (a proxy, a compressed body, a redirect to follow).

                Why: urllib opens (and the service accepts) a new TCP connection for every call, and builds the
                request through a dozen handlers: at 100,000 links a sync makes ~2,100 calls. Only reads use it
                (the adapter sets ``keep_alive``): a read that meets a connection the peer has just closed is
                retried by the adapter's ordinary policy, a write never is. Errors are raised as urllib would have
                them classified: socket errors as they are, HTTP statuses as suds's TransportError."""
                url = urlsplit(request.url)
                if (url.scheme not in ("http", "https") or "Content-Encoding" in request.headers
                        or self.options.proxy or _proxied(url.hostname or "")):
                    self.close_kept()
                    return None
                timeout = request.timeout or self.options.timeout
                target = (url.scheme, url.netloc)
                conn = self._kept if self._kept_target == target else None
                if conn is not None and (conn.sock is None or _dropped(conn.sock)):
                    conn.close()
                    conn = None
                if conn is None:
                    self.close_kept()
                    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
                    conn = cls(url.hostname, url.port, timeout=timeout)
                    self._kept, self._kept_target = conn, target
                elif conn.sock is not None:
                    conn.sock.settimeout(timeout)
                # Header names as urllib writes them on the wire (title case: "Soapaction", "Content-Type").
                headers = {"User-Agent": _URLLIB_AGENT, **{k.title(): v for k, v in request.headers.items()}}
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                try:
                    conn.request("POST", path, body=request.message, headers=headers)
                    resp = conn.getresponse()
                    content = resp.read()
                except BaseException:
                    self.close_kept()
                    raise
                if resp.will_close:
                    self.close_kept()
                if 300 <= resp.status < 400:  # urllib follows redirects: let it
                    self.close_kept()
                    return None
                if not 200 <= resp.status < 300:
                    raise TransportError(resp.reason, resp.status, _ErrorBody(content, resp.headers))
                return Reply(http.client.OK, resp.headers, content)

            def close_kept(self) -> None:
                conn, self._kept, self._kept_target = getattr(self, "_kept", None), None, None
                if conn is not None:
                    conn.close()

            def reset(self) -> None:
                self.keep_alive: bool = False
                self.status: int | None = None
                self.headers: Any = None
                self.raw: bytes | None = None
                self.root: ET.Element | None = None
                self.requests = 0

            def send(self, request):  # noqa: ANN001 - suds API
                self.requests = getattr(self, "requests", 0) + 1
                self.status, self.headers, self.raw, self.root = None, None, None, None
                try:
                    reply = self._send_kept(request) if self.keep_alive else None
                    if reply is None:
                        reply = super().send(request)
                except TransportError as exc:
                    content = b""
                    if exc.fp is not None:
                        try:
                            content = exc.fp.read() or b""
                        except Exception:  # noqa: BLE001 - a broken error body is still an HTTP error
                            content = b""
                    self.status, self.headers, self.raw = exc.httpcode, getattr(exc.fp, "headers", None), content
                    self.root = _parse_xml(content)
                    raise TransportError(exc.args[0] if exc.args else "", exc.httpcode, io.BytesIO(content)) from None
                if reply is None:  # 202/204: suds returns nothing
                    self.status = 204
                    return reply
                self.status, self.headers, self.raw = reply.code or 200, reply.headers, reply.message
                self.root = _parse_xml(reply.message)
                body = _body(self.root)
                if body is not None and _fault(self.root) is None:
                    # The adapter reads the reply from ``root``: skip suds's reply processing (a SAX parse of even
                    # a stub envelope, ~0.5 ms a call) by leaving through suds and the SDK, which re-raise it.
                    raise _ReplyReceived()
                return reply

        _TRANSPORT_CLS = _RawTransport
        return _TRANSPORT_CLS


#: The User-Agent urllib sends (the keep-alive path sends the same request urllib would).
_URLLIB_AGENT = "Python-urllib/%d.%d" % __import__("sys").version_info[:2]


class _ErrorBody(io.BytesIO):
    """An HTTP error reply's body with its headers, as urllib's HTTPError gives them to suds."""

    def __init__(self, content: bytes, headers: Any):
        super().__init__(content)
        self.headers = headers


def _proxied(host: str) -> bool:
    """Whether the environment routes requests to ``host`` through a proxy (then urllib's path is taken)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    return bool(proxies) and not urllib.request.proxy_bypass(host)


def _dropped(sock: Any) -> bool:
    """Whether a kept connection was closed by the peer while idle (readable at rest means EOF or stray bytes)."""
    import select

    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Pooled:
    __slots__ = ("service", "transport")

    def __init__(self, service: Any, transport: Any):
        self.service = service
        self.transport = transport


_call_state = threading.local()  # the OAuth tokens object current when this thread's call began


def _install_single_flight_refresh(auth: Any) -> None:
    """Serialise token refreshes on a shared authentication object and skip redundant ones.

    Several threads share one authentication; when the token expires they all get 109 at once and the SDK would
    refresh once per thread (racing refresh-token rotation and the save callback). With this guard the first thread
    refreshes; the others see that the tokens changed since their call began and reuse the new ones.
    """
    if getattr(auth, "_linkdesk_single_flight", False) or not hasattr(auth, "request_oauth_tokens_by_refresh_token"):
        return
    original = auth.request_oauth_tokens_by_refresh_token
    lock = threading.Lock()

    def request_oauth_tokens_by_refresh_token(refresh_token: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            current = getattr(auth, "oauth_tokens", None)
            seen = getattr(_call_state, "tokens", None)
            if current is not None and seen is not None and current is not seen and not current.access_token_expired:
                return current
            fresh_rt = getattr(current, "refresh_token", None) or refresh_token
            return original(fresh_rt, *args, **kwargs)

    auth.request_oauth_tokens_by_refresh_token = request_oauth_tokens_by_refresh_token
    auth._linkdesk_single_flight = True


# --------------------------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------------------------


class CustomerManagementApi:
    """Customer Management v13 through the official SDK: production, sandbox, or the simulator via ``location``.

    ``authentication``: any bingads authentication object (``OAuthDesktopMobileAuthCodeGrant`` or a subclass, e.g. the
    simulator's). ``timeout``: seconds per HTTP request. ``max_workers``: threads for concurrent paging.

    Retries: 117 CallRateExceeded after the wait it asks for (``throttle_retries`` times); transient network failures
    (connection refused/reset, HTTP 5xx, timeouts, internal error 0) with exponential backoff ``backoff * 2**n``
    (``retries`` times). A refusal (ApiFault, 105/106/1001, ...) is never retried. ``sleep`` is injectable for tests.

    Clients: suds clients are not thread-safe (P10). Each call checks a ServiceClient out of a small pool, so one client
    is only ever used by one thread at a time, and clients (0.15-0.25 s of WSDL parsing each) are reused across the
    short-lived threads of UI workers instead of being rebuilt per thread.
    """

    def __init__(
        self,
        *,
        developer_token: str,
        authentication: Any,
        environment: str = "production",
        location: str | None = None,
        timeout: float = 60,
        max_workers: int = 4,
        retries: int = 3,
        backoff: float = 1.0,
        throttle_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if environment not in ENVIRONMENTS:
            # The SDK silently uses the sandbox WSDL for any value other than "production" (client-links-api.md §4).
            raise ValueError(f"environment must be 'production' or 'sandbox', not {environment!r}")
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._developer_token = developer_token
        self._authentication = authentication
        self.environment = environment
        self.location = location
        self.timeout = timeout
        self.max_workers = max_workers
        self.retries = retries
        self.backoff = backoff
        self.throttle_retries = throttle_retries
        self._sleep = sleep
        self._idle: list[_Pooled] = []
        self._pool_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        #: Number of ServiceClients built (each costs a WSDL parse); for tests and diagnostics.
        self.clients_built = 0

    def __repr__(self) -> str:
        where = self.location or self.environment
        return f"CustomerManagementApi(environment={self.environment!r}, endpoint={where!r})"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def warm_up(self, clients: int = 1) -> None:
        """Import the SDK and have ``clients`` clients ready (≈1.2 s cold for the first, ≈0.2 s for each further one),
        e.g. in a background worker at startup, so that the first calls and the first concurrent pages do not wait."""
        with self._pool_lock:
            missing = max(0, clients - len(self._idle))
        built = [self._new_client() for _ in range(missing)]
        with self._pool_lock:
            self._idle.extend(built)

    def renew_sign_in(self) -> None:
        """Get fresh access tokens now (through the authentication's refresh token) and put them on every idle
        client, e.g. after the simulator's clock jumped past their expiry. Raises what the token request raises."""
        tokens = getattr(self._authentication, "oauth_tokens", None)
        refresh_token = getattr(tokens, "refresh_token", None)
        if not refresh_token or not hasattr(self._authentication, "request_oauth_tokens_by_refresh_token"):
            return
        self._authentication.request_oauth_tokens_by_refresh_token(refresh_token)
        with self._pool_lock:
            idle = list(self._idle)
        for pooled in idle:  # the SDK writes the token into the SOAP headers when options are set
            pooled.service.set_options(**pooled.service._options)

    def close(self) -> None:
        """Stop the paging threads. Calls made after close() still work (one at a time)."""
        ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        with self._pool_lock:
            idle = list(self._idle)
        for pooled in idle:  # open keep-alive connections (a later call opens a new one)
            close_kept = getattr(pooled.transport, "close_kept", None)
            if close_kept is not None:
                close_kept()

    def __enter__(self) -> "CustomerManagementApi":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_client(self) -> _Pooled:
        from bingads.authorization import AuthorizationData
        from bingads.service_client import ServiceClient

        _install_single_flight_refresh(self._authentication)
        transport = _raw_transport_class()()
        transport.reset()
        options: dict[str, Any] = {"retxml": True, "transport": transport, "timeout": self.timeout}
        if self.location:
            options["location"] = self.location
        data = AuthorizationData(developer_token=self._developer_token, authentication=self._authentication)
        service = ServiceClient("CustomerManagementService", 13, authorization_data=data,
                                environment=self.environment, **options)
        with self._pool_lock:
            self.clients_built += 1
        return _Pooled(service, transport)

    @contextmanager
    def _client(self) -> Iterator[_Pooled]:
        with self._pool_lock:
            pooled = self._idle.pop() if self._idle else None
        if pooled is None:
            pooled = self._new_client()
        try:
            yield pooled
        finally:
            with self._pool_lock:
                self._idle.append(pooled)

    # -- secrets -------------------------------------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        out = [self._developer_token]
        auth = self._authentication
        tokens = getattr(auth, "oauth_tokens", None)
        for name in ("access_token", "refresh_token"):
            out.append(getattr(tokens, name, None))
        for name in ("client_secret", "password"):
            out.append(getattr(auth, name, None))
        return [s for s in out if isinstance(s, str) and len(s) >= 4]

    def _redact(self, text: str | None) -> str | None:
        if not text:
            return text
        for s in self._secrets():
            text = text.replace(s, "[redacted]")
        return text

    # -- one call ------------------------------------------------------------------------------------------------

    def _invoke_once(self, op: str, kwargs: dict[str, Any], *, write: bool) -> tuple[ET.Element, str | None]:
        """One SDK call (the SDK may itself send it twice around a 109 refresh). Returns (response element, tracking
        id) or raises an ApiError."""
        with self._client() as pooled:
            t = pooled.transport
            t.reset()
            t.keep_alive = not write  # a read may reuse the client's open connection (never a write: see send)
            _call_state.tokens = getattr(self._authentication, "oauth_tokens", None)
            err: ApiError | None = None
            try:
                getattr(pooled.service, op)(**kwargs)
            except _ReplyReceived:
                pass
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                err = self._classify(exc, t, op, write=write)
            finally:
                _call_state.tokens = None
            root = t.root
        if err is not None:
            raise err
        return self._response(root, op, write=write)

    def _response(self, root: ET.Element | None, op: str, *, write: bool) -> tuple[ET.Element, str | None]:
        body = _body(root)
        # A garbled reply (a proxy's page, a cut-off body) is transient: a read is retried, a write is not (it may
        # have been applied; ``_call`` retries writes only when they certainly were not sent).
        if body is None:
            raise MalformedReply(operation=op, detail="the reply is not a SOAP envelope", maybe_applied=write,
                                 retryable=True)
        resp = body.find(_q(TNS, f"{op}Response"))
        if resp is None:
            raise MalformedReply(operation=op, detail=f"the reply has no {op}Response element", maybe_applied=write,
                                 retryable=True)
        tracking = None
        assert root is not None
        for ns in (SOAP_ENV, SOAP12_ENV):
            header = root.find(_q(ns, "Header"))
            if header is not None:  # the header may be missing (P10)
                tracking = _child_text(header, TNS, "TrackingId")
                break
        return resp, tracking

    def _classify(self, exc: BaseException, t: Any, op: str, *, write: bool) -> ApiError:
        """Map whatever the SDK, suds or urllib raised to an ApiError subclass."""
        import socket
        import urllib.error
        from http.client import HTTPException
        from xml.sax import SAXException

        from suds import WebFault

        status = t.status
        common = {"operation": op}
        if isinstance(exc, WebFault):
            return self._from_fault(t, op, write=write, status=status)
        if type(exc).__name__ == "OAuthTokenRequestException":
            code = getattr(exc, "error_code", None) or "token_request_failed"
            return AuthError(
                "Your sign-in could not be renewed; sign in again with `linkdesk auth login`.",
                symbol=str(code), detail=self._redact(f"token refresh failed: {code}"), sent=False, **common)
        if isinstance(exc, ValueError) and "refresh token automatically" in str(exc):
            return AuthError("Your sign-in has expired and cannot be renewed automatically; sign in again with "
                             "`linkdesk auth login`.", code=109, sent=False, **common)
        if status is not None and status != 200:
            return self._from_http_status(t, op, write=write, exc=exc)
        if isinstance(exc, SAXException):
            # Status 200 (or unknown) with a body that is not XML.
            return MalformedReply(detail=f"the reply is not well-formed XML ({type(exc).__name__})",
                                  maybe_applied=write, http_status=status, retryable=True, **common)
        reason: BaseException = exc
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
            reason = exc.reason
        host = urlsplit(self.location).hostname if self.location else "Microsoft Advertising"
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return ApiTimeout(
                f"{'The service at ' + host if self.location else host} did not answer within {self.timeout:g} "
                "seconds; "
                + ("the change may have been applied, so sync before trying again." if write else "try again later."),
                retryable=True, maybe_applied=write, detail=type(reason).__name__, **common)
        if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
            return ServiceUnavailable(
                f"Could not connect to {host}; check your internet connection (or that the simulator is running) "
                "and try again.", retryable=True, sent=False, detail=type(reason).__name__, **common)
        if isinstance(reason, (ConnectionError, HTTPException, OSError, urllib.error.URLError)):
            return ServiceUnavailable(
                f"The connection to {host} was lost; "
                + ("the change may have been applied, so sync before trying again." if write
                   else "check your connection and try again."),
                retryable=True, maybe_applied=write, detail=type(reason).__name__, **common)
        return MalformedReply(detail=self._redact(f"{type(exc).__name__}: {exc}"[:300]), maybe_applied=write,
                              http_status=status, **common)

    def _from_http_status(self, t: Any, op: str, *, write: bool, exc: BaseException) -> ApiError:
        status = t.status
        common: dict[str, Any] = {"operation": op, "http_status": status}
        if status == 429:
            return ThrottledError(retry_after=_retry_after(t.headers, None), **common)
        if status in (401, 403):
            return AuthError(f"Microsoft Advertising refused access (HTTP {status}); sign in again with "
                             "`linkdesk auth login`.", **common)
        transient = status in (500, 502, 503, 504) or status == 408
        return ServiceUnavailable(
            f"Microsoft Advertising is not available right now (HTTP {status}); "
            + ("the change may have been applied, so sync before trying again." if write and transient
               else "try again in a few minutes." if transient
               else "check the service address and try again."),
            retryable=transient, maybe_applied=write, detail=type(exc).__name__, **common)

    def _from_fault(self, t: Any, op: str, *, write: bool, status: int | None) -> ApiError:
        fault = _fault(t.root)
        common: dict[str, Any] = {"operation": op, "http_status": status}
        if fault is None:
            return MalformedReply(detail="a SOAP fault that could not be read", maybe_applied=write, **common)
        faultstring = self._redact(_text(fault.find("faultstring")) or _text(fault.find(_q(SOAP12_ENV, "Reason"))))
        tracking = None
        errors: list[OperationError] = []
        detail = fault.find("detail")
        if detail is None:
            detail = fault.find(_q(SOAP12_ENV, "Detail"))
        for d in (detail if detail is not None else ()):
            if d.tag == _q(ADAPI, "AdApiFaultDetail"):
                tracking = _child_text(d, ADAPI, "TrackingId") or tracking
                for e in _items(d.find(_q(ADAPI, "Errors")), ADAPI, "AdApiError"):
                    errors.append(OperationError(
                        code=_safe_int(_child_text(e, ADAPI, "Code")),
                        message=self._redact(_child_text(e, ADAPI, "Message")) or "",
                        details=self._redact(_str_or_none(_child_text(e, ADAPI, "Detail"))),
                        error_code=_str_or_none(_child_text(e, ADAPI, "ErrorCode"))))
            elif d.tag == _q(EXC, "ApiFault"):
                tracking = _child_text(d, ADAPI, "TrackingId") or _child_text(d, EXC, "TrackingId") or tracking
                for e in _items(d.find(_q(EXC, "OperationErrors")), EXC, "OperationError"):
                    errors.append(OperationError(
                        code=_safe_int(_child_text(e, EXC, "Code")),
                        message=self._redact(_child_text(e, EXC, "Message")) or "",
                        details=self._redact(_str_or_none(_child_text(e, EXC, "Details")))))
        if tracking is None and faultstring:
            m = re.search(r"TrackingId:\s*([\w-]+)", faultstring)
            tracking = m.group(1) if m else None
        common["tracking_id"] = tracking
        codes = [e.code for e in errors]
        detail_text = "; ".join(f"{e.code}: {e.message}" for e in errors) or faultstring
        for e in errors:
            if e.code == THROTTLE_CODE:
                wait = _retry_after(t.headers, f"{e.message} {e.details or ''}")
                return ThrottledError(code=e.code, symbol=e.symbol, retry_after=wait, errors=errors,
                                      detail=detail_text, **common)
        for e in errors:
            if e.code in AUTH_CODES:
                msg = None
                if e.code == rules.E_TOKEN_EXPIRED:
                    msg = ("Your sign-in has expired and could not be renewed; sign in again with "
                           "`linkdesk auth login`.")
                return AuthError(msg, code=e.code, symbol=e.symbol, errors=errors, detail=detail_text, **common)
        if INTERNAL_ERROR_CODE in codes:
            return ServiceUnavailable(code=INTERNAL_ERROR_CODE, errors=errors, retryable=True, maybe_applied=write,
                                      detail=detail_text, **common)
        first = errors[0] if errors else None
        if first is None:
            return RequestRefused(
                "Microsoft Advertising refused the request" + (f": {faultstring}" if faultstring else "") + ".",
                detail=faultstring, **common)
        message = first.user_message
        if len(errors) > 1:
            message = f"{message} ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
        return RequestRefused(message, code=first.code, symbol=first.symbol, errors=errors, detail=detail_text,
                              **common)

    def _call(self, op: str, kwargs: dict[str, Any], *, write: bool = False) -> tuple[ET.Element, str | None]:
        """A call with the retry policy: 117 after its wait; transient failures with backoff. For writes
        (Add/Update), only failures where the request certainly was not applied are retried."""
        attempt = throttled = 0
        while True:
            try:
                return self._invoke_once(op, kwargs, write=write)
            except ThrottledError as err:
                if throttled >= self.throttle_retries:
                    raise
                throttled += 1
                log.warning("%s throttled (117); waiting %.0f s before retry %d", op, err.retry_after, throttled)
                self._sleep(err.retry_after)
            except ApiError as err:
                safe = not write or not err.sent
                if not (err.retryable and safe) or attempt >= self.retries:
                    raise
                delay = self.backoff * (2 ** attempt)
                attempt += 1
                log.warning("%s failed (%s); retry %d in %.1f s", op, type(err).__name__, attempt, delay)
                self._sleep(delay)

    def _parsed(self, op: str, resp: ET.Element, parse: Callable[[ET.Element], Any], tracking: str | None,
                *, write: bool = False) -> Any:
        try:
            return parse(resp)
        except _Shape as exc:
            raise MalformedReply(operation=op, tracking_id=tracking, detail=str(exc)[:300], maybe_applied=write) \
                from None

    # -- operations: users and hierarchy -------------------------------------------------------------------------

    def get_user(self, user_id: int | None = None) -> tuple[User, tuple[CustomerRole, ...]]:
        """GetUser: the user (the authenticated one when ``user_id`` is None) and its roles, one per customer.
        The returned User carries the same roles."""
        resp, trk = self._call("GetUser", {"UserId": user_id})

        def parse(r: ET.Element) -> tuple[User, tuple[CustomerRole, ...]]:
            roles = tuple(_parse_customer_role(c) for c in _items(r.find(_q(TNS, "CustomerRoles")), ENT,
                                                                   "CustomerRole"))
            u = r.find(_q(TNS, "User"))
            if u is None or _is_nil(u):
                raise _Shape("GetUser returned no User")
            return _parse_user(u, roles), roles

        return self._parsed("GetUser", resp, parse, trk)

    def get_users_info(self, customer_id: int, status_filter: str | None = None) -> list[UserInfo]:
        """GetUsersInfo: (id, user_name) of every user of a customer."""
        kwargs: dict[str, Any] = {"CustomerId": customer_id}
        if status_filter:
            kwargs["StatusFilter"] = status_filter
        resp, trk = self._call("GetUsersInfo", kwargs)

        def parse(r: ET.Element) -> list[UserInfo]:
            out = []
            for u in _items(r.find(_q(TNS, "UsersInfo")), ENT, "UserInfo"):
                uid = _int(_child_text(u, ENT, "Id"))
                if uid is None:
                    raise _Shape("UserInfo has no Id")
                out.append(UserInfo(uid, _child_text(u, ENT, "UserName")))
            return out

        return self._parsed("GetUsersInfo", resp, parse, trk)

    def get_customers_info(self, name_filter: str = "", top_n: int = 1000) -> list[CustomerInfo]:
        """GetCustomersInfo: customers the user can access whose name begins with ``name_filter`` ("" = all)."""
        resp, trk = self._call("GetCustomersInfo", {"CustomerNameFilter": suds_text(name_filter), "TopN": top_n})
        return self._parsed("GetCustomersInfo", resp, lambda r: [
            _parse_customer_info(c) for c in _items(r.find(_q(TNS, "CustomersInfo")), ENT, "CustomerInfo")], trk)

    def get_accounts_info(self, customer_id: int | None = None, only_parent_accounts: bool = False
                          ) -> list[AccountInfo]:
        """GetAccountsInfo: accounts of a customer (default: the user's), with linked accounts unless
        ``only_parent_accounts``."""
        kwargs: dict[str, Any] = {"OnlyParentAccounts": only_parent_accounts}
        if customer_id is not None:
            kwargs = {"CustomerId": customer_id, **kwargs}
        resp, trk = self._call("GetAccountsInfo", kwargs)
        return self._parsed("GetAccountsInfo", resp, lambda r: [
            _parse_account_info(a) for a in _items(r.find(_q(TNS, "AccountsInfo")), ENT, "AccountInfo")], trk)

    def get_linked_accounts_and_customers_info(self, customer_id: int, only_parent_accounts: bool = False
                                               ) -> tuple[list[AccountInfo], list[CustomerInfo]]:
        """GetLinkedAccountsAndCustomersInfo: the accounts and the directly linked child customers under a
        customer."""
        resp, trk = self._call("GetLinkedAccountsAndCustomersInfo",
                               {"CustomerId": customer_id, "OnlyParentAccounts": only_parent_accounts})

        def parse(r: ET.Element) -> tuple[list[AccountInfo], list[CustomerInfo]]:
            accounts = [_parse_account_info(a) for a in _items(r.find(_q(TNS, "AccountsInfo")), ENT, "AccountInfo")]
            customers = [_parse_customer_info(c) for c in _items(r.find(_q(TNS, "CustomersInfo")), ENT,
                                                                  "CustomerInfo")]
            return accounts, customers

        return self._parsed("GetLinkedAccountsAndCustomersInfo", resp, parse, trk)

    def search_accounts(self, predicates: Iterable[Predicate | tuple | dict], *,
                        ordering: Iterable[OrderBy | tuple | dict] | None = None, index: int = 0, size: int = 1000,
                        return_additional_fields: str | None = None) -> list[Account]:
        """SearchAccounts: one page (``index`` zero-based, ``size`` at most 1,000) of full advertiser accounts."""
        kwargs: dict[str, Any] = {"Predicates": _predicates(predicates)}
        if (o := _ordering(ordering)) is not None:
            kwargs["Ordering"] = o
        kwargs["PageInfo"] = {"Index": index, "Size": size}
        if return_additional_fields:
            kwargs["ReturnAdditionalFields"] = return_additional_fields
        resp, trk = self._call("SearchAccounts", kwargs)
        return self._parsed("SearchAccounts", resp, lambda r: [
            _parse_account(a) for a in _items(r.find(_q(TNS, "Accounts")), ENT, "AdvertiserAccount")], trk)

    def get_customer(self, customer_id: int) -> Customer:
        """GetCustomer."""
        resp, trk = self._call("GetCustomer", {"CustomerId": customer_id})

        def parse(r: ET.Element) -> Customer:
            c = r.find(_q(TNS, "Customer"))
            if c is None or _is_nil(c):
                raise _Shape("GetCustomer returned no Customer")
            return _parse_customer(c)

        return self._parsed("GetCustomer", resp, parse, trk)

    def get_account(self, account_id: int, return_additional_fields: str | None = None) -> Account:
        """GetAccount, including LinkedAgencies (1472 while a link or unlink is in progress: RequestRefused)."""
        kwargs: dict[str, Any] = {"AccountId": account_id}
        if return_additional_fields:
            kwargs["ReturnAdditionalFields"] = return_additional_fields
        resp, trk = self._call("GetAccount", kwargs)

        def parse(r: ET.Element) -> Account:
            a = r.find(_q(TNS, "Account"))
            if a is None or _is_nil(a):
                raise _Shape("GetAccount returned no Account")
            return _parse_account(a)

        return self._parsed("GetAccount", resp, parse, trk)

    # -- operations: client links ----------------------------------------------------------------------------------

    def search_client_links(self, predicates: Iterable[Predicate | tuple | dict],
                            ordering: Iterable[OrderBy | tuple | dict] | None = None, index: int = 0,
                            size: int = PAGE_SIZE) -> list[ClientLink]:
        """SearchClientLinks: one page (``index`` zero-based, ``size`` at most 100) of the most recent link per pair.

        ``predicates``: one or two ``Predicate(field, operator, value)`` (or 3-tuples / wire dicts).
        """
        if not 1 <= size <= PAGE_SIZE:
            raise ValueError(f"page size must be 1 to {PAGE_SIZE}, not {size}")
        kwargs: dict[str, Any] = {"Predicates": _predicates(predicates)}
        if (o := _ordering(ordering)) is not None:
            kwargs["Ordering"] = o
        kwargs["PageInfo"] = {"Index": index, "Size": size}
        resp, trk = self._call("SearchClientLinks", kwargs)
        return self._parsed("SearchClientLinks", resp, _parse_search_links, trk)

    def iter_client_links(
        self,
        predicates: Iterable[Predicate | tuple | dict],
        *,
        ordering: Iterable[OrderBy | tuple | dict] | None = (OrderBy("Id", "Ascending"),),
        page_size: int = PAGE_SIZE,
        concurrency: int = 4,
        cancel: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[ClientLink]:
        """Every link matching ``predicates``, fetching up to ``concurrency`` pages at once, yielded in page order.

        Stops at the first short page (the API returns no total count). A link seen on an earlier page is not yielded
        again (pages can shift while links change). The default ordering (by client entity id) keeps paging stable.
        ``progress(n)`` is called with the number of links yielded so far after each page. When ``cancel`` is set,
        pending pages are abandoned and :class:`Cancelled` is raised: the result is incomplete.
        """
        predicates = list(predicates)
        ordering = list(ordering) if ordering else None
        seen: set[tuple] = set()
        count = 0
        for page in self._pages(
            lambda i: self.search_client_links(predicates, ordering, i, page_size), page_size, concurrency, cancel
        ):
            for link in page:
                key = (link.client_entity_id, link.managing_customer_id, link.type)
                if key in seen:
                    continue
                seen.add(key)
                count += 1
                yield link
            if progress is not None:
                progress(count)

    def _pages(self, fetch: Callable[[int], list], page_size: int, concurrency: int,
               cancel: threading.Event | None) -> Iterator[list]:
        """Pages 0, 1, 2, ... fetched with at most ``concurrency`` in flight, yielded in order, until a short page."""
        concurrency = max(1, min(concurrency, self.max_workers))
        if concurrency == 1:
            index = 0
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("paging was cancelled")
                page = fetch(index)
                yield page
                if len(page) < page_size:
                    return
                index += 1
        if self._executor is None:
            with self._pool_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="linkdesk-api")
        executor = self._executor
        pending: deque[Future] = deque()
        next_index = 0
        try:
            while True:
                while len(pending) < concurrency:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("paging was cancelled")
                    pending.append(executor.submit(fetch, next_index))
                    next_index += 1
                future = pending.popleft()
                if cancel is not None:
                    while not wait([future], timeout=0.05).done:
                        if cancel.is_set():
                            raise Cancelled("paging was cancelled")
                page = future.result()
                yield page
                if len(page) < page_size:
                    return
        finally:
            for f in pending:
                f.cancel()

    def add_client_links(self, links: Sequence[ClientLink]) -> list[LinkResult]:
        """AddClientLinks in batches of 10: exactly one LinkResult per input link, in input order.

        Per-link failures come from PartialErrors (read positionally from the raw reply). A batch refused as a whole
        (OperationErrors in the reply, or an ApiFault) gives every link of that batch those errors; other batches
        still go. Sign-in problems, throttling beyond the retries, and network failures raise an ApiError whose
        ``results_so_far`` holds the completed batches.

        Not retried after a timeout, a lost connection or an HTTP 5xx: the service may have applied the request, so
        the error has ``maybe_applied=True`` and the caller must re-read (sync) before trying again. Only failures
        where nothing can have been applied (throttling, connection refused) are retried.
        """
        return self._write("AddClientLinks", links, for_add=True)

    def update_client_links(self, links: Sequence[ClientLink]) -> list[LinkResult]:
        """UpdateClientLinks in batches of 10, with the same result contract and retry policy as
        :meth:`add_client_links`. Each link is sent back whole, as read (full-update semantics; Timestamp verbatim),
        with the changed Status / Note: pass ``searched_link.replace(status=...)``."""
        return self._write("UpdateClientLinks", links, for_add=False)

    def _write(self, op: str, links: Sequence[ClientLink], *, for_add: bool) -> list[LinkResult]:
        links = list(links)
        results: list[LinkResult] = []
        for start in range(0, len(links), BATCH_SIZE):
            batch = links[start:start + BATCH_SIZE]
            payload = {"ClientLinks": {"ClientLink": [client_link_to_wire(l, for_add=for_add) for l in batch]}}
            try:
                resp, trk = self._call(op, payload, write=True)
            except RequestRefused as err:
                # An ApiFault refuses the whole batch and applies nothing: report it on each of its links.
                errs = err.errors or [OperationError(err.code, err.user_message, err.detail)]
                results.extend(LinkResult(start + i, l, list(errs)) for i, l in enumerate(batch))
                continue
            except ApiError as err:
                err.results_so_far = list(results)
                raise

            def parse(r: ET.Element, n: int = len(batch)) -> list[list[OperationError]]:
                whole = [_parse_operation_error(e, EXC) for e in _items(r.find(_q(TNS, "OperationErrors")), EXC,
                                                                        "OperationError")]
                if whole:
                    return [list(whole) for _ in range(n)]
                return _parse_partial_errors(r, n)

            try:
                per_link = self._parsed(op, resp, parse, trk, write=True)
            except ApiError as err:
                err.results_so_far = list(results)
                raise
            results.extend(LinkResult(start + i, l, e) for i, (l, e) in enumerate(zip(batch, per_link)))
        return results


def _parse_search_links(resp: ET.Element) -> list[ClientLink]:
    return [parse_client_link(c) for c in _items(resp.find(_q(TNS, "ClientLinks")), ENT, "ClientLink")]


def _safe_int(text: str | None) -> int | None:
    try:
        return _int(text)
    except _Shape:
        return None


def _retry_after(headers: Any, text: str | None) -> float:
    """Seconds a throttled caller should wait: the Retry-After header, a number of seconds in the message, or 60."""
    if headers is not None:
        try:
            value = headers.get("Retry-After")
        except Exception:  # noqa: BLE001 - any header container
            value = None
        if value and str(value).strip().isdigit():
            return float(str(value).strip())
    if text:
        m = re.search(r"(\d+)\s*seconds?", text)
        if m:
            return float(m.group(1))
    return DEFAULT_THROTTLE_WAIT


__all__ = [
    "AccountInfo", "ApiError", "ApiTimeout", "AuthError", "Cancelled", "CustomerInfo", "CustomerManagementApi",
    "LinkResult", "MalformedReply", "OperationError", "OrderBy", "Predicate", "RequestRefused", "ServiceUnavailable",
    "ThrottledError", "UserInfo", "client_link_to_wire", "parse_client_link", "suds_text", "wire_datetime",
]
