"""The data model of Microsoft Advertising client links, customers, accounts and users.

Enum values are the exact wire names of the Customer Management v13 WSDL. Dataclass fields are snake_case; the
mapping to and from wire element names lives in one place (``CLIENT_LINK_WIRE``), in WSDL element order.

This module is pure: no I/O, no third-party imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, IntEnum
from typing import Any, NamedTuple


class StrEnum(str, Enum):
    """A str-valued enum whose ``str()`` is the wire value."""

    def __str__(self) -> str:
        return self.value


class ClientLinkStatus(StrEnum):
    """The 14 ClientLinkStatus values, in WSDL order."""

    LinkPending = "LinkPending"
    LinkCanceled = "LinkCanceled"
    LinkExpired = "LinkExpired"
    LinkAccepted = "LinkAccepted"
    LinkDeclined = "LinkDeclined"
    LinkInProgress = "LinkInProgress"
    Active = "Active"
    LinkFailed = "LinkFailed"
    UnlinkRequested = "UnlinkRequested"
    UnlinkPending = "UnlinkPending"
    UnlinkCanceled = "UnlinkCanceled"
    UnlinkInProgress = "UnlinkInProgress"
    Inactive = "Inactive"
    UnlinkFailed = "UnlinkFailed"

    @classmethod
    def parse(cls, value: str | None) -> "ClientLinkStatus | str | None":
        """The member for a wire value; an unknown (newer) value is kept as the plain string."""
        if value is None or value == "":
            return None
        try:
            return cls(value)
        except ValueError:
            return value


class LinkType(StrEnum):
    AccountLink = "AccountLink"
    CustomerLink = "CustomerLink"

    @classmethod
    def parse(cls, value: str | None) -> "LinkType":
        """Wire value to member; an empty Type means AccountLink, as the service defaults it."""
        if value is None or value == "":
            return cls.AccountLink
        return cls(value)


class CustomerLinkPermission(StrEnum):
    Administrative = "Administrative"
    Standard = "Standard"


class Role(IntEnum):
    """User role ids (CustomerRole.RoleId)."""

    SuperAdmin = 41
    Standard = 203
    AdvertiserCampaignManager = 16
    Viewer = 100
    Aggregator = 33

    @property
    def label(self) -> str:
        return ROLE_LABELS[self]

    @classmethod
    def parse(cls, value: int | str | None) -> "Role | None":
        if value is None or value == "":
            return None
        try:
            return cls(int(value))
        except ValueError:
            return None


ROLE_LABELS: dict[Role, str] = {
    Role.SuperAdmin: "Super Admin",
    Role.Standard: "Standard User",
    Role.AdvertiserCampaignManager: "Advertiser Campaign Manager",
    Role.Viewer: "Viewer",
    Role.Aggregator: "Aggregator",
}


class Party(StrEnum):
    """Who causes a lifecycle transition."""

    AGENCY = "agency"
    CLIENT = "client"
    SERVICE = "service"


class Perspective(StrEnum):
    """Which side of a link the viewer is on."""

    SENT = "sent"  # the viewer's customer is the managing customer (agency)
    RECEIVED = "received"  # the viewer's customer owns the client entity


class Stage(StrEnum):
    """Inbox stages, in display order."""

    NEEDS_ACTION = "needs_action"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ACTIVE = "active"
    ENDED = "ended"

    @property
    def label(self) -> str:
        return STAGE_LABELS[self]


STAGE_LABELS: dict[Stage, str] = {
    Stage.NEEDS_ACTION: "Needs action",
    Stage.PENDING: "Pending",
    Stage.IN_PROGRESS: "In progress",
    Stage.ACTIVE: "Active",
    Stage.ENDED: "Ended",
}


class LinkKey(NamedTuple):
    """A client link's identity: the API has no link id (ClientEntityId + ManagingCustomerId, plus the type)."""

    client_entity_id: int
    managing_customer_id: int
    type: LinkType = LinkType.AccountLink

    def __str__(self) -> str:
        return f"{getattr(self.type, 'value', self.type)}:{self.client_entity_id}@{self.managing_customer_id}"


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    name: str
    number: str | None = None
    life_cycle_status: str = "Active"
    financial_status: str | None = None
    market_country: str | None = None
    market_language: str | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """An advertiser account."""

    id: int
    name: str
    number: str | None
    parent_customer_id: int
    bill_to_customer_id: int | None = None
    life_cycle_status: str = "Active"
    financial_status: str | None = None
    currency_code: str | None = None
    pause_reason: int | None = None
    #: True/False when known (prepaid accounts cannot be linked: 1471); None when the API does not say.
    prepaid: bool | None = None
    linked_agency_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CustomerRole:
    """A user's role at one customer, and the accounts it reaches there."""

    customer_id: int
    role: Role
    #: None means customer-level access (all accounts of the customer).
    account_ids: tuple[int, ...] | None = None
    linked_account_ids: tuple[int, ...] = ()
    customer_link_permission: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: int
    user_name: str
    customer_id: int
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    life_cycle_status: str = "Active"
    roles: tuple[CustomerRole, ...] = ()

    @property
    def display_name(self) -> str:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or self.user_name

    def role_at(self, customer_id: int) -> Role | None:
        """The user's role at a customer (the highest-privilege one when several are listed)."""
        found = [r.role for r in self.roles if r.customer_id == customer_id]
        for preferred in (Role.SuperAdmin, Role.Standard, Role.AdvertiserCampaignManager, Role.Viewer, Role.Aggregator):
            if preferred in found:
                return preferred
        return None

    def reachable_account_ids(self) -> tuple[int, ...]:
        """Accounts listed explicitly in the user's roles (own and linked)."""
        seen: dict[int, None] = {}
        for r in self.roles:
            for a in (r.account_ids or ()) + r.linked_account_ids:
                seen[a] = None
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: a user, at one customer, with one role there."""

    user_id: int
    customer_id: int
    role: Role
    customer_name: str = ""
    user_name: str = ""
    #: The customer's Number (e.g. "C1234567"), when known: lets the rules check a ManagingCustomerNumber.
    customer_number: str | None = None

    @property
    def describe(self) -> str:
        who = self.user_name or f"user {self.user_id}"
        at = self.customer_name or f"customer {self.customer_id}"
        return f"{who} ({self.role.label} at {at})"


@dataclass(frozen=True, slots=True)
class ClientLink:
    """Every element of the ClientLink data object (WSDL order), snake_case."""

    type: LinkType | None = LinkType.AccountLink
    client_entity_id: int | None = None
    client_entity_number: str | None = None
    client_entity_name: str | None = None
    managing_customer_id: int | None = None
    managing_customer_number: str | None = None
    managing_customer_name: str | None = None
    note: str | None = None
    name: str | None = None
    inviter_email: str | None = None
    inviter_name: str | None = None
    inviter_phone: str | None = None
    is_bill_to_client: bool | None = None
    start_date: datetime | None = None
    #: A ClientLinkStatus, or the raw string of a status this version does not know.
    status: ClientLinkStatus | str | None = None
    suppress_notification: bool = False
    last_modified_date_time: datetime | None = None
    last_modified_by_user_id: int | None = None
    timestamp: str | None = None
    forward_compatibility_map: tuple[tuple[str, str], ...] = ()
    customer_link_permission: CustomerLinkPermission | str | None = None
    client_entity_customer_number: str | None = None

    @property
    def link_type(self) -> LinkType:
        return self.type or LinkType.AccountLink

    @property
    def key(self) -> LinkKey:
        if self.client_entity_id is None or self.managing_customer_id is None:
            raise ValueError("a link without ClientEntityId and ManagingCustomerId has no identity yet")
        return LinkKey(int(self.client_entity_id), int(self.managing_customer_id), self.link_type)

    def replace(self, **changes: Any) -> "ClientLink":
        return dataclasses.replace(self, **changes)

    def to_wire(self, *, include_none: bool = False) -> dict[str, Any]:
        """A dict keyed by wire element names, in WSDL order (enum members become their strings)."""
        out: dict[str, Any] = {}
        for attr, wire in CLIENT_LINK_WIRE.items():
            value = getattr(self, attr)
            if isinstance(value, Enum):
                value = value.value
            if attr == "forward_compatibility_map":
                value = [{"key": k, "value": v} for k, v in value] if value else None
            if value is None and not include_none:
                continue
            out[wire] = value
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "ClientLink":
        """Build from a dict keyed by wire names with already-typed values; unknown keys are ignored."""
        kwargs: dict[str, Any] = {}
        for attr, wire in CLIENT_LINK_WIRE.items():
            if wire not in data:
                continue
            value = data[wire]
            if attr == "type":
                value = LinkType.parse(value)
            elif attr == "status":
                value = ClientLinkStatus.parse(value)
            elif attr == "customer_link_permission" and value:
                try:
                    value = CustomerLinkPermission(value)
                except ValueError:
                    pass
            elif attr == "forward_compatibility_map":
                value = tuple((d["key"], d["value"]) for d in value) if value else ()
            elif attr == "suppress_notification" and value is None:
                value = False
            kwargs[attr] = value
        return cls(**kwargs)


#: snake_case attribute -> wire element name, in WSDL order. The one place this mapping lives.
CLIENT_LINK_WIRE: dict[str, str] = {
    "type": "Type",
    "client_entity_id": "ClientEntityId",
    "client_entity_number": "ClientEntityNumber",
    "client_entity_name": "ClientEntityName",
    "managing_customer_id": "ManagingCustomerId",
    "managing_customer_number": "ManagingCustomerNumber",
    "managing_customer_name": "ManagingCustomerName",
    "note": "Note",
    "name": "Name",
    "inviter_email": "InviterEmail",
    "inviter_name": "InviterName",
    "inviter_phone": "InviterPhone",
    "is_bill_to_client": "IsBillToClient",
    "start_date": "StartDate",
    "status": "Status",
    "suppress_notification": "SuppressNotification",
    "last_modified_date_time": "LastModifiedDateTime",
    "last_modified_by_user_id": "LastModifiedByUserId",
    "timestamp": "Timestamp",
    "forward_compatibility_map": "ForwardCompatibilityMap",
    "customer_link_permission": "CustomerLinkPermission",
    "client_entity_customer_number": "ClientEntityCustomerNumber",
}
WIRE_TO_ATTR: dict[str, str] = {v: k for k, v in CLIENT_LINK_WIRE.items()}

#: Elements the service sets itself; a caller may not set them on AddClientLinks.
READ_ONLY_ON_ADD: tuple[str, ...] = (
    "client_entity_name",
    "managing_customer_name",
    "status",
    "last_modified_date_time",
    "last_modified_by_user_id",
    "timestamp",
)

#: The only elements an update may change.
UPDATABLE: tuple[str, ...] = ("status", "note")

#: Elements compared on update (full-update semantics: everything echoed back must be unchanged).
#: LastModified* and Timestamp are handled separately (Timestamp is the concurrency token).
COMPARED_ON_UPDATE: tuple[str, ...] = tuple(
    a
    for a in CLIENT_LINK_WIRE
    if a not in UPDATABLE
    and a not in ("last_modified_date_time", "last_modified_by_user_id", "timestamp", "forward_compatibility_map")
)
