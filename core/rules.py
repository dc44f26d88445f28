"""The client-link rules: lifecycle, who may do what, invitation and update checks, time, and views for people.

This module is the single source of truth. The simulator enforces these rules on the server side; the cache, the
command line and the screens ask them what is allowed and why. Everything is pure: ``now`` is always passed in.

Sources: ../shared/docs/design.md §2 (including the six decisions where the documentation contradicts itself) and
client-links-api.md §1.8, §3.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Iterable

from .model import (
    CLIENT_LINK_WIRE,
    COMPARED_ON_UPDATE,
    READ_ONLY_ON_ADD,
    WIRE_TO_ATTR,
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

# --------------------------------------------------------------------------------------------------------------------
# Error codes
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One error code: documented by Microsoft, or defined by this project for a documented-but-unnumbered failure."""

    code: int
    symbol: str
    meaning: str
    user_text: str
    documented: bool

    @property
    def origin(self) -> str:
        return "Microsoft Advertising" if self.documented else "linkdesk (no documented code)"


def _doc(code: int, symbol: str, meaning: str, user_text: str) -> ErrorCode:
    return ErrorCode(code, symbol, meaning, user_text, True)


def _own(code: int, symbol: str, meaning: str, user_text: str) -> ErrorCode:
    return ErrorCode(code, symbol, meaning, user_text, False)


#: Codes documented by Microsoft (client-links-api.md §1.8). Meanings are the documentation's words, trimmed.
DOCUMENTED_CODES: tuple[ErrorCode, ...] = (
    _doc(0, "InternalError", "An internal error has occurred.",
         "The service had an internal error; try again in a few minutes."),
    _doc(100, "NullRequest", "The request message is null.",
         "The request was empty; this is a bug in the calling program."),
    _doc(105, "InvalidCredentials", "Authentication failed: the access token or developer token is not valid for "
         "this environment, the account is inactive, or the user was not found.",
         "Your sign-in was not accepted; sign in again with `linkdesk auth login`."),
    _doc(106, "UserIsNotAuthorized", "The credentials are valid but the user has no access to an entity in the "
         "request.", "Your user has no access to this customer or account; ask its Super Admin for access."),
    _doc(109, "AuthenticationTokenExpired", "Authentication token expired. Please renew it or obtain a new token.",
         "Your sign-in has expired; sign in again with `linkdesk auth login`."),
    _doc(116, "RequestMissingHeaders", "Required header elements are missing from the request.",
         "The request lacked its credentials; sign in again with `linkdesk auth login`."),
    _doc(117, "CallRateExceeded", "The per-minute call limit was exceeded; resubmit after waiting 60 seconds.",
         "Microsoft Advertising asked us to slow down; linkdesk waits and retries automatically."),
    _doc(120, "UserLoginAccessDenied", "Merged (consolidated) credentials are no longer accepted.",
         "This sign-in is no longer accepted; sign in again with your own Microsoft account."),
    _doc(201, "ApiInputValidationError", "The request failed input validation.",
         "The request was not valid; check the fields and try again."),
    _doc(203, "NullParameter", "A required parameter is null.", "A required value was missing."),
    _doc(206, "NullArrayArgument", "A required list is null.", "A required list was missing."),
    _doc(209, "TimestampNotMatch", "The time stamp does not match.",
         "Someone changed this link since it was read; linkdesk re-read it, check it and try again."),
    _doc(210, "EntityNotExistent", "The entity does not exist.",
         "That link, account or customer does not exist or is not visible to you."),
    _doc(211, "NameTooLong", "The name is too long.", "The name is too long."),
    _doc(474, "SearchPredicateMissing", "Required search predicate is missing.",
         "A search needs one or two conditions."),
    _doc(1001, "UserNotAuthorized", "The user is not authorized to perform this action.",
         "Your role does not allow this action."),
    _doc(1410, "ClientLinkAlreadyExists", "An invitation to manage the specified client account has already been sent.",
         "This client already has an open invitation or link with your agency; cancel or unlink it first."),
    _doc(1424, "ManagedByAnotherAgency", "The client account is already managed by another agency.",
         "Another agency manages this account; the client must unlink it from that agency first."),
    _doc(1471, "PrepaidNotSupported", "Prepaid client accounts are not supported for management by agencies.",
         "Prepaid accounts cannot be managed by an agency; the client must switch the account to post-pay billing."),
    _doc(1472, "LinkOrUnlinkInProgress", "You cannot get, delete, or update an account that is being linked or "
         "unlinked; if the client link status is LinkInProgress or UnlinkInProgress, try waiting 5 to 30 minutes.",
         "This account is being linked or unlinked right now; wait 5 to 30 minutes and try again."),
    _doc(2108, "InvalidAccountId", "The account identifier is invalid.", "That account id is not valid."),
    _doc(3024, "BatchSizeExceeded", "The batch size exceeds the limit.",
         "Too many links in one request (at most 10); linkdesk sends them in batches."),
    _doc(3030, "InvalidPredicate", "The Predicate passed in the search is invalid. For example you used an invalid "
         "predicate operator for a valid predicate field.", "The search conditions were not valid."),
    _doc(3080, "InvalidPageInfo", "Page Info must be present and have index greater than 0 (zero).",
         "The page request was not valid (page size must be 1 to 100)."),
    _doc(3083, "ClientLinkFieldNotUpdatable", "A specified element of the client link may not be updated.",
         "Only the status and the note of a link can change; send the link back as it was read."),
    _doc(3087, "ListNullOrEmpty", "The required list of elements is null or empty.", "The request held no links."),
)

#: First project-defined code. Documented codes are all below it, so the two can never collide.
OWN_CODE_BASE = 90000

#: Codes this project defines for failures the documentation describes without a number.
PROJECT_CODES: tuple[ErrorCode, ...] = (
    _own(90001, "InvalidStatusTransition", "The requested status change is not part of the client-link lifecycle "
         "for this party.", "That status change is not possible from the link's current status."),
    _own(90002, "IdAndNumberBothSet", "Both the id and the number were given; the documentation says specifying "
         "both will cause the operation to fail.", "Give either the id or the number, not both."),
    _own(90003, "IdOrNumberRequired", "Neither the id nor the number was given.", "Give the id or the number."),
    _own(90004, "LinkNameTooLong", "Name is longer than the documented maximum of 40 characters.",
         "The link name can have at most 40 characters."),
    _own(90005, "BillToRequired", "IsBillToClient is required for advertiser account links.",
         "Say who pays: the client or your agency."),
    _own(90006, "BillToNotApplicable", "IsBillToClient is not applicable to customer links.",
         "Who pays is not set on customer-level links; leave it empty."),
    _own(90007, "PermissionNotApplicable", "CustomerLinkPermission applies only to customer links.",
         "Permission is only for customer-level links; leave it empty."),
    _own(90008, "PermissionInvalid", "CustomerLinkPermission must be Administrative or Standard.",
         "Permission must be Administrative or Standard."),
    _own(90009, "ReadOnlyFieldSet", "A read-only element was set on a new client link.",
         "That field is set by Microsoft Advertising and cannot be given."),
    _own(90010, "InvalidIdFormat", "An id or number is not in a valid format.", "That id or number is not valid."),
    _own(90011, "AcceptTooSoon", "The link cannot be accepted within 6 hours of the invitation (observed "
         "behaviour of the service: 'needs to be delayed for 6').",
         "An invitation can be accepted only 6 hours after it was sent."),
    _own(90012, "LinkEnded", "The link has ended; ended links cannot be updated and a new invitation is needed.",
         "This link has ended and cannot change; send a new invitation instead."),
    _own(90013, "LinkTypeInvalid", "Type must be AccountLink or CustomerLink.",
         "The link type must be AccountLink or CustomerLink."),
    _own(90014, "StatusRequired", "Status is required on update.", "Give the status the link should have."),
    _own(90015, "ClientLinkFieldInvalid", "A required client-link field is missing or invalid (documented "
         "symbolically as ClientLinkFieldInvalid, without a number).", "A field of the link is not valid."),
    _own(90016, "LinkPairMismatch", "The client entity does not belong to the given customer (documented "
         "symbolically as LinkPairMismatch, without a number).",
         "The account does not belong to the client customer given."),
    _own(90017, "DuplicateInRequest", "The same client entity appears twice in one request.",
         "The same client appears twice in this request; keep one."),
    _own(90018, "NotSimulated", "The operation or option is not simulated.", "The simulator does not offer this."),
)

ERROR_CODES: dict[int, ErrorCode] = {e.code: e for e in DOCUMENTED_CODES + PROJECT_CODES}

E_INTERNAL = 0
E_INVALID_CREDENTIALS = 105
E_USER_NOT_AUTHORIZED_ENTITY = 106
E_TOKEN_EXPIRED = 109
E_MISSING_HEADERS = 116
E_CALL_RATE = 117
E_VALIDATION = 201
E_TIMESTAMP = 209
E_NOT_FOUND = 210
E_PREDICATE_MISSING = 474
E_NOT_AUTHORIZED = 1001
E_DUPLICATE = 1410
E_OTHER_AGENCY = 1424
E_PREPAID = 1471
E_IN_PROGRESS = 1472
E_INVALID_ACCOUNT_ID = 2108
E_BATCH_SIZE = 3024
E_PREDICATE_INVALID = 3030
E_PAGE_INFO = 3080
E_NOT_UPDATABLE = 3083
E_EMPTY_LIST = 3087
E_INVALID_TRANSITION = 90001
E_ID_AND_NUMBER = 90002
E_ID_OR_NUMBER_REQUIRED = 90003
E_NAME_TOO_LONG = 90004
E_BILL_TO_REQUIRED = 90005
E_BILL_TO_NOT_APPLICABLE = 90006
E_PERMISSION_NOT_APPLICABLE = 90007
E_PERMISSION_INVALID = 90008
E_READ_ONLY = 90009
E_INVALID_ID = 90010
E_ACCEPT_TOO_SOON = 90011
E_LINK_ENDED = 90012
E_LINK_TYPE_INVALID = 90013
E_STATUS_REQUIRED = 90014
E_FIELD_INVALID = 90015
E_PAIR_MISMATCH = 90016
E_DUPLICATE_IN_REQUEST = 90017
E_NOT_SIMULATED = 90018


def error_info(code: int | str | None) -> ErrorCode:
    """What a code means. Unknown codes get a generic entry that still reads as a sentence.

    Codes arrive as ints or, from fault details, as strings ("1410"). An unknown number below ``OWN_CODE_BASE`` is
    taken to be Microsoft's (documented=True: its origin, not a claim that we hold its text); a missing or unreadable
    code gets code -1.
    """
    n: int | None
    if isinstance(code, bool):  # bool is an int subclass; True is not code 1
        n = None
    else:
        try:
            n = int(str(code).strip()) if code is not None else None
        except ValueError:
            n = None
    if n is not None and n in ERROR_CODES:
        return ERROR_CODES[n]
    if n is None:
        shown = str(code).strip()[:40] if code is not None else ""
        said = f"an unreadable code ({shown})" if shown else "no error code"
        return ErrorCode(-1, "Unknown", f"The service gave {said}.",
                         f"Microsoft Advertising refused the request and gave {said}.", True)
    return ErrorCode(n, "Unknown", f"Error code {n} is not in linkdesk's table.",
                     f"Microsoft Advertising refused the request with error code {n}.", n < OWN_CODE_BASE)


# --------------------------------------------------------------------------------------------------------------------
# Lifecycle as data
# --------------------------------------------------------------------------------------------------------------------

EXPIRY = timedelta(days=30)
ACCEPT_COOLDOWN = timedelta(hours=6)
EXPIRING_SOON = timedelta(days=7)
NAME_MAX = 40
BATCH_MAX = 10
PAGE_MAX = 100


class Kind(str, Enum):
    """How a transition happens."""

    ADD = "add"  # AddClientLinks
    UPDATE = "update"  # UpdateClientLinks
    SERVICE = "service"  # the service moves the link on by itself
    TIME = "time"  # the service moves the link on when a deadline passes


@dataclass(frozen=True, slots=True)
class Transition:
    frm: S | None
    to: S
    party: Party
    kind: Kind
    note: str


LIFECYCLE: tuple[Transition, ...] = (
    Transition(None, S.LinkPending, Party.AGENCY, Kind.ADD,
               "The agency invites; the service sets LinkPending immediately. Also after a link has ended."),
    Transition(S.LinkPending, S.LinkCanceled, Party.AGENCY, Kind.UPDATE, "The agency cancels its invitation."),
    Transition(S.LinkPending, S.LinkAccepted, Party.CLIENT, Kind.UPDATE,
               "The client accepts (a write-only request status; not within 6 hours of the invitation)."),
    Transition(S.LinkPending, S.LinkDeclined, Party.CLIENT, Kind.UPDATE, "The client declines."),
    Transition(S.LinkPending, S.LinkExpired, Party.SERVICE, Kind.TIME,
               "Nobody acted within 30 days of the invitation."),
    Transition(S.LinkAccepted, S.LinkInProgress, Party.SERVICE, Kind.SERVICE,
               "The service starts the billing transition (usually within minutes)."),
    Transition(S.LinkInProgress, S.Active, Party.SERVICE, Kind.SERVICE,
               "The billing transition completed and the start date has arrived: the link is established."),
    Transition(S.LinkInProgress, S.LinkFailed, Party.SERVICE, Kind.SERVICE,
               "The billing transition failed."),
    Transition(S.Active, S.UnlinkRequested, Party.AGENCY, Kind.UPDATE,
               "The agency requests an unlink (a write-only request status)."),
    Transition(S.UnlinkFailed, S.UnlinkRequested, Party.AGENCY, Kind.UPDATE,
               "The agency requests the unlink again after a failed unlink (the link stayed in force)."),
    Transition(S.UnlinkCanceled, S.UnlinkRequested, Party.AGENCY, Kind.UPDATE,
               "UnlinkCanceled is reserved for future use and treated like Active."),
    Transition(S.UnlinkRequested, S.UnlinkPending, Party.SERVICE, Kind.SERVICE,
               "The service moves an unlink request to UnlinkPending immediately."),
    Transition(S.UnlinkPending, S.UnlinkInProgress, Party.SERVICE, Kind.SERVICE,
               "System resources became available; the billing transition starts."),
    Transition(S.UnlinkInProgress, S.Inactive, Party.SERVICE, Kind.SERVICE,
               "The unlink completed (on or after the start date)."),
    Transition(S.UnlinkInProgress, S.UnlinkFailed, Party.SERVICE, Kind.SERVICE,
               "The billing transition could not be completed; the link stays in force."),
)

#: Terminal: never updatable; a new invitation is needed.
ENDED: frozenset[S] = frozenset({S.LinkCanceled, S.LinkDeclined, S.LinkExpired, S.LinkFailed, S.Inactive})
#: The relationship is in force (decision 2: UnlinkFailed and UnlinkCanceled behave like Active).
ACTIVE_LIKE: frozenset[S] = frozenset({S.Active, S.UnlinkFailed, S.UnlinkCanceled})
#: Moving between states, driven by the service.
IN_PROGRESS: frozenset[S] = frozenset(
    {S.LinkAccepted, S.LinkInProgress, S.UnlinkRequested, S.UnlinkPending, S.UnlinkInProgress}
)
#: Statuses that refuse a new invitation for the same client entity and managing customer (1410).
BLOCKING: frozenset[S] = frozenset({S.LinkPending}) | IN_PROGRESS | ACTIVE_LIKE
#: Statuses during which the service refuses updates and account reads (1472).
UPDATE_LOCKED: frozenset[S] = frozenset({S.LinkInProgress, S.UnlinkInProgress})
#: Write-only request statuses: a party sets them; the service moves on from them by itself.
REQUEST_STATUSES: frozenset[S] = frozenset({S.LinkAccepted, S.UnlinkRequested})
#: Statuses in which another agency's link makes the account "managed by another agency" (1424).
MANAGED: frozenset[S] = BLOCKING - {S.LinkPending}


#: A few words that give a wire status name its meaning in a sentence: "LinkPending (waiting for the client)".
STATUS_SHORT: dict[S, str] = {
    S.LinkPending: "waiting for the client",
    S.LinkCanceled: "canceled by the agency",
    S.LinkExpired: "expired unanswered",
    S.LinkAccepted: "accepted, about to be linked",
    S.LinkDeclined: "declined by the client",
    S.LinkInProgress: "being linked",
    S.Active: "linked",
    S.LinkFailed: "linking failed",
    S.UnlinkRequested: "unlink requested",
    S.UnlinkPending: "unlink waiting to start",
    S.UnlinkCanceled: "unlink canceled, still linked",
    S.UnlinkInProgress: "being unlinked",
    S.Inactive: "unlinked",
    S.UnlinkFailed: "unlink failed, still linked",
}


def describe_status(status: S | str | None) -> str:
    """A status name with its meaning, for use inside a sentence: 'LinkPending (waiting for the client)'."""
    if status is None or status == "":
        return "without a status"
    try:
        return f"{S(status).value} ({STATUS_SHORT[S(status)]})"
    except ValueError:
        return f"'{str(status)[:40]}' (a status this version of linkdesk does not know)"


def transition(frm: S | str | None, to: S | str | None, party: Party) -> Transition | None:
    """The lifecycle transition from ``frm`` to ``to`` caused by ``party``, or None when there is none."""
    for t in LIFECYCLE:
        if t.frm == frm and t.to == to and t.party == party:
            return t
    return None


def next_statuses(frm: S | None, party: Party | None = None) -> list[S]:
    """Statuses reachable from ``frm`` in one step (by ``party`` when given), in lifecycle order."""
    return [t.to for t in LIFECYCLE if t.frm == frm and (party is None or t.party == party)]


def is_ended(status: S | str | None) -> bool:
    return status in ENDED


# --------------------------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------------------------


def _utc(d: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC (as the service's are)."""
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def invited_at(link: ClientLink) -> datetime | None:
    """When a pending invitation was made, as far as the link itself tells (its last change while pending)."""
    if link.status == S.LinkPending and link.last_modified_date_time is not None:
        return _utc(link.last_modified_date_time)
    return None


def expires_at(invited: datetime) -> datetime:
    """When a pending invitation made at ``invited`` expires (decision 3: 30 days later)."""
    return _utc(invited) + EXPIRY


def is_expired(invited: datetime | None, now: datetime) -> bool:
    """Whether a pending invitation made at ``invited`` has expired at ``now``."""
    return invited is not None and _utc(now) >= expires_at(invited)


def days_left(invited: datetime | None, now: datetime) -> int | None:
    """Whole days until a pending invitation expires (0 on its last day, negative once expired).

    Consistent with ``is_expired``: ``days_left(...) < 0`` exactly when the invitation has expired, including at the
    very instant of expiry (when floor division alone would still say 0).
    """
    if invited is None:
        return None
    remaining = expires_at(invited) - _utc(now)
    if remaining <= timedelta(0):
        return min(remaining.days, -1)
    return remaining.days


def accept_possible_at(invited: datetime) -> datetime:
    """The earliest time the client can accept an invitation made at ``invited`` (decision 4: 6 hours later)."""
    return _utc(invited) + ACCEPT_COOLDOWN


def effective_status(link: ClientLink, now: datetime, invited: datetime | None = None) -> S | str | None:
    """The status at ``now``: a pending invitation past its 30 days counts as LinkExpired even before a sync says so."""
    if link.status == S.LinkPending:
        inv = invited if invited is not None else invited_at(link)
        if is_expired(inv, now):
            return S.LinkExpired
    return link.status


# --------------------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: the wire field it concerns (None for the whole link), its code, and a sentence for people."""

    field: str | None
    code: int
    message: str

    @property
    def info(self) -> ErrorCode:
        return error_info(self.code)


_NUMBER_RE = re.compile(r"^[A-Za-z0-9]{4,20}$")
_MAX_ID = 2**63 - 1
@functools.cache
def xml_illegal() -> re.Pattern[str]:
    """Characters XML 1.0 cannot carry at all, not even escaped: a SOAP request holding one is refused as a whole.
    Compiled on first use: compiling it costs some 7 ms, which every start of the app would otherwise pay before
    its first frame."""
    return re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def valid_id(value: object) -> bool:
    """Whether ``value`` is a usable entity id (a whole number from 1 to 2**63 - 1)."""
    return _id_violation("Id", value, "entity") is None and value is not None


def valid_number(value: object) -> bool:
    """Whether ``value`` has the form of an account or customer number (4 to 20 letters and digits)."""
    return isinstance(value, str) and _NUMBER_RE.match(value) is not None


def text_violation(field: str, value: object, what: str) -> Violation | None:
    """A Name or Note the service cannot be sent: not text, or holding a character XML cannot carry."""
    if value is None:
        return None
    if not isinstance(value, str):
        return Violation(field, E_FIELD_INVALID, f"The {what} must be text, not {_quote(value)}.")
    bad = xml_illegal().search(value)
    if bad is None:
        return None
    return Violation(field, E_FIELD_INVALID,
                     f"The {what} contains a character Microsoft Advertising cannot accept (U+{ord(bad.group()):04X}"
                     f" at position {bad.start() + 1}, a control character such as a pasted terminal escape); "
                     "remove it.")


def _fmt_date(d: datetime) -> str:
    d = _utc(d)
    return f"{d.day} {d:%b %Y}"


def _fmt_time(d: datetime) -> str:
    d = _utc(d)
    return f"{d.day} {d:%b %Y %H:%M} UTC"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _quote(value: object) -> str:
    """A user-supplied value quoted for a message, cut to 40 characters."""
    return f"'{str(value)[:40]}'"


def _blank(value: object) -> bool:
    """Empty on the wire: nil, an empty string, or an empty list."""
    return value is None or value == "" or value == ()


def entity_label(link: ClientLink) -> str:
    """How people name the client side of a link: 'account Contoso Shoes (F1000001)'."""
    kind = "customer" if link.link_type == LinkType.CustomerLink else "account"
    name = link.client_entity_name
    ident = link.client_entity_number or (str(link.client_entity_id) if link.client_entity_id is not None else None)
    if name and ident:
        return f"{kind} {name} ({ident})"
    return f"{kind} {name or ident or '(unknown)'}"


def _agency_label(actor: Actor) -> str:
    return actor.customer_name or f"customer {actor.customer_id}"


#: Each ClientLink element in words, for messages ("{kind}" is "account" or "customer").
_FIELD_WORDS: dict[str, str] = {
    "type": "the link type",
    "client_entity_id": "the client {kind} id",
    "client_entity_number": "the client {kind} number",
    "client_entity_name": "the client {kind} name",
    "managing_customer_id": "the managing customer id",
    "managing_customer_number": "the managing customer number",
    "managing_customer_name": "the managing customer name",
    "note": "the note",
    "name": "the link name",
    "inviter_email": "the inviter's email",
    "inviter_name": "the inviter's name",
    "inviter_phone": "the inviter's phone",
    "is_bill_to_client": "who pays",
    "start_date": "the start date",
    "status": "the status",
    "suppress_notification": "the choice to suppress the email to the client",
    "last_modified_date_time": "the time of the last change",
    "last_modified_by_user_id": "the user who made the last change",
    "timestamp": "the change token",
    "forward_compatibility_map": "the forward compatibility map",
    "customer_link_permission": "the permission",
    "client_entity_customer_number": "the client customer number",
}


def field_label(attr: str, link_type: LinkType | str | None = None) -> str:
    """A ClientLink element (snake_case attribute or wire name) in words, with its wire name: 'who pays
    (IsBillToClient)'."""
    attr = WIRE_TO_ATTR.get(attr, attr)
    kind = "customer" if link_type == LinkType.CustomerLink else "account"
    words = _FIELD_WORDS.get(attr, attr).format(kind=kind)
    wire = CLIENT_LINK_WIRE.get(attr)
    return f"{words} ({wire})" if wire else words


def _id_violation(field: str, value: object, what: str) -> Violation | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return Violation(field, E_INVALID_ID, f"The {what} id was given as text ({_quote(value)}); give it as a "
                                              "number.")
    if isinstance(value, bool) or not isinstance(value, int):
        return Violation(field, E_INVALID_ID, f"The {what} id must be a whole number, not {_quote(value)}.")
    if value < 1:
        return Violation(field, E_INVALID_ID, f"The {what} id must be a positive number; {value} is not valid.")
    if value > _MAX_ID:
        return Violation(field, E_INVALID_ID, f"The {what} id {value} is too large; ids are at most {_MAX_ID}.")
    return None


def _number_violation(field: str, value: object, what: str) -> Violation | None:
    if value is None:
        return None
    if not valid_number(value):
        return Violation(field, E_INVALID_ID, f"The {what} number must be 4 to 20 letters and digits, "
                                              f"not {_quote(value)}.")
    return None


def may_send_invitation(actor: Actor, link_type: LinkType) -> str | None:
    """None when the actor's role may invite for this link type; else the reason in words (decision 5)."""
    agency = _agency_label(actor)
    if link_type == LinkType.CustomerLink:
        if actor.role != Role.SuperAdmin:
            return (f"Only a Super Admin of {agency} can send customer-level invitations; "
                    f"you are {_a(_role_label(actor))}.")
        return None
    if actor.role not in (Role.SuperAdmin, Role.Standard):
        return (f"Only a Super Admin or Standard User of {agency} can send account invitations; "
                f"you are {_a(_role_label(actor))}.")
    return None


def _role_label(actor: Actor) -> str:
    return actor.role.label if isinstance(actor.role, Role) else f"user with role {actor.role}"


def _a(label: str) -> str:
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def _same_client(link: ClientLink, draft: ClientLink) -> bool:
    if draft.client_entity_id is not None and link.client_entity_id == draft.client_entity_id:
        return True
    return draft.client_entity_number is not None and link.client_entity_number == draft.client_entity_number


def _same_manager(link: ClientLink, draft: ClientLink, actor: Actor) -> bool:
    if draft.managing_customer_id is not None:
        return link.managing_customer_id == draft.managing_customer_id
    if draft.managing_customer_number is not None:
        return link.managing_customer_number == draft.managing_customer_number
    return link.managing_customer_id == actor.customer_id


def _blank_to_none(link: ClientLink) -> ClientLink:
    """The same link with empty strings read as nil, as the service reads them (an empty form field is not set)."""
    changes = {a: None for a in CLIENT_LINK_WIRE
               if a not in ("suppress_notification", "forward_compatibility_map") and getattr(link, a) == ""}
    return link.replace(**changes) if changes else link


def check_new_invitation(
    draft: ClientLink,
    *,
    actor: Actor,
    now: datetime,
    existing: Iterable[ClientLink] = (),
    client_account: Account | None = None,
) -> list[Violation]:
    """Every rule a new invitation (AddClientLinks item) breaks; an empty list means it may be sent.

    ``existing`` holds the known links of the draft's client entity (any managing customer; the function picks the
    draft's pair itself); ``client_account`` the client account when known (for the prepaid check). Empty strings
    count as not set.
    """
    v: list[Violation] = []
    draft = _blank_to_none(draft)
    link_type = draft.type if draft.type is not None else LinkType.AccountLink
    if not isinstance(link_type, LinkType):
        try:
            link_type = LinkType(link_type)
        except ValueError:
            v.append(Violation("Type", E_LINK_TYPE_INVALID,
                               f"The link type must be AccountLink (one account) or CustomerLink (a whole client "
                               f"customer), not {_quote(link_type)}."))
            link_type = LinkType.AccountLink
    kind = "customer" if link_type == LinkType.CustomerLink else "account"

    # Exactly one of id / number, for the client entity and for the managing customer.
    bad_manager_id = False
    for id_field, num_field, what in (
        ("client_entity_id", "client_entity_number", f"client {kind}"),
        ("managing_customer_id", "managing_customer_number", "managing customer"),
    ):
        id_value, num_value = getattr(draft, id_field), getattr(draft, num_field)
        id_wire, num_wire = CLIENT_LINK_WIRE[id_field], CLIENT_LINK_WIRE[num_field]
        if id_value is not None and num_value is not None:
            v.append(Violation(id_wire, E_ID_AND_NUMBER,
                               f"Give either the {what} id or its number, not both."))
        elif id_value is None and num_value is None:
            v.append(Violation(id_wire, E_ID_OR_NUMBER_REQUIRED, f"Give the {what} id or its number."))
        bad_id = _id_violation(id_wire, id_value, what)
        bad_number = _number_violation(num_wire, num_value, what)
        v.extend(b for b in (bad_id, bad_number) if b)
        if id_field == "managing_customer_id":
            bad_manager_id = bad_id is not None or bad_number is not None

    # Who pays, and permission, depend on the link type.
    perm = draft.customer_link_permission
    if link_type == LinkType.AccountLink:
        if draft.is_bill_to_client is None:
            v.append(Violation("IsBillToClient", E_BILL_TO_REQUIRED,
                               "Say who pays for an account link: the client (bill to client) or your agency."))
        elif not isinstance(draft.is_bill_to_client, bool):
            v.append(Violation("IsBillToClient", E_FIELD_INVALID,
                               f"Who pays must be yes (the client pays) or no (your agency pays), not "
                               f"{_quote(draft.is_bill_to_client)}."))
        if perm is not None:
            v.append(Violation("CustomerLinkPermission", E_PERMISSION_NOT_APPLICABLE,
                               "Permission applies only to customer-level links; leave it empty for an account link."))
    else:
        if draft.is_bill_to_client is not None:
            v.append(Violation("IsBillToClient", E_BILL_TO_NOT_APPLICABLE,
                               "Who pays is not set on customer-level links; leave it empty."))
        if perm is not None and perm not in (CustomerLinkPermission.Administrative, CustomerLinkPermission.Standard):
            v.append(Violation("CustomerLinkPermission", E_PERMISSION_INVALID,
                               f"Permission must be Administrative or Standard, not {_quote(perm)}."))

    if draft.name is not None and len(str(draft.name)) > NAME_MAX:
        v.append(Violation("Name", E_NAME_TOO_LONG,
                           f"The link name can have at most {NAME_MAX} characters; this one has "
                           f"{len(str(draft.name))}."))
    v.extend(b for b in (text_violation("Name", draft.name, "link name"), text_violation("Note", draft.note, "note"))
             if b)

    for attr in READ_ONLY_ON_ADD:
        if getattr(draft, attr) is not None:
            v.append(Violation(CLIENT_LINK_WIRE[attr], E_READ_ONLY,
                               f"{_cap(field_label(attr, link_type))} is set by Microsoft Advertising and cannot be "
                               "given on a new invitation."))

    # The inviter: must act for the managing customer, with a role that may invite for this link type.
    if not bad_manager_id:
        if draft.managing_customer_id is not None and draft.managing_customer_id != actor.customer_id:
            v.append(Violation("ManagingCustomerId", E_NOT_AUTHORIZED,
                               f"You can only send invitations on behalf of {_agency_label(actor)}, the customer you "
                               f"are signed in to, not customer {draft.managing_customer_id}."))
        elif (draft.managing_customer_number is not None and actor.customer_number is not None
              and draft.managing_customer_number != actor.customer_number):
            v.append(Violation("ManagingCustomerNumber", E_NOT_AUTHORIZED,
                               f"You can only send invitations on behalf of {_agency_label(actor)} "
                               f"({actor.customer_number}), the customer you are signed in to, not customer "
                               f"{draft.managing_customer_number}."))
    refusal = may_send_invitation(actor, link_type)
    if refusal:
        v.append(Violation(None, E_NOT_AUTHORIZED, refusal))

    # Nobody manages itself: a customer link to the inviting customer, or an account link to one of its own accounts.
    manager = draft.managing_customer_id if not bad_manager_id and draft.managing_customer_id is not None \
        else actor.customer_id
    if link_type == LinkType.CustomerLink and draft.client_entity_id is not None \
            and draft.client_entity_id == manager:
        v.append(Violation("ClientEntityId", E_FIELD_INVALID,
                           "A customer cannot invite itself; give the id of the client customer to manage."))
    if (link_type == LinkType.AccountLink and client_account is not None
            and client_account.parent_customer_id == manager):
        v.append(Violation("ClientEntityId", E_FIELD_INVALID,
                           f"Account {client_account.name} already belongs to the managing customer; only another "
                           "customer's account can be invited."))

    if link_type == LinkType.AccountLink and client_account is not None and client_account.prepaid:
        v.append(Violation("ClientEntityId", E_PREPAID,
                           f"Account {client_account.name} is prepaid, and prepaid accounts cannot be managed by an "
                           "agency; the client must switch it to post-pay billing first."))

    # An open link for the same pair blocks a new one; another agency's established link means 1424.
    for link in existing:
        if not _same_client(link, draft) or link.link_type != link_type:
            continue
        status = effective_status(link, now)
        label = _cap(entity_label(link))
        if _same_manager(link, draft, actor):
            if status in BLOCKING:
                since = link.last_modified_date_time
                when = f" since {_fmt_date(since)}" if since is not None else ""
                with_whom = "your agency" if link.managing_customer_id in (None, actor.customer_id) else (
                    link.managing_customer_name or f"customer {link.managing_customer_id}")
                v.append(Violation("ClientEntityId", E_DUPLICATE,
                                   f"{label} already has a link with {with_whom} in {describe_status(status)}"
                                   f"{when}; {_blocking_advice(status)}"))
        elif status in MANAGED and link_type == LinkType.AccountLink:
            who = link.managing_customer_name or f"customer {link.managing_customer_id}"
            if status in (S.LinkAccepted, S.LinkInProgress):
                text = (f"{label} is being linked to another agency ({who}); it can be invited only if that "
                        "agency unlinks it later.")
            else:
                text = f"{label} is already managed by another agency ({who}); the client must unlink it there first."
            v.append(Violation("ClientEntityId", E_OTHER_AGENCY, text))
    return v


def _blocking_advice(status: S | str | None) -> str:
    if status == S.LinkPending:
        return "cancel it or wait for the client to answer."
    if status in ACTIVE_LIKE:
        return "it is already linked; unlink it first if you want a new link."
    return "wait until it has finished moving."


def party_of(actor: Actor, link: ClientLink, client_customer_id: int | None = None) -> Party | None:
    """Which side of the link the actor is on: the managing customer (agency) or the client, or neither.

    For account links the client customer is the account's parent customer, which the caller knows; for customer
    links it is the client entity itself.
    """
    if link.managing_customer_id is not None and actor.customer_id == link.managing_customer_id:
        return Party.AGENCY
    if client_customer_id is None and link.link_type == LinkType.CustomerLink:
        client_customer_id = link.client_entity_id
    if client_customer_id is not None and actor.customer_id == client_customer_id:
        return Party.CLIENT
    return None


def _norm(attr: str, value: object) -> object:
    """A value as the service would store it, so that equal values compare equal across representations."""
    if attr == "type":
        return LinkType.AccountLink.value if _blank(value) else str(value)
    if attr == "suppress_notification":
        return bool(value)  # not nillable: nil arrives as false
    if _blank(value):
        return None
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return _utc(value)
    return value


#: The verb for each status an update may ask for; and how an agency-side refusal names the act per link type.
_ASKS: dict[S, str] = {
    S.LinkCanceled: "cancel",
    S.LinkAccepted: "accept",
    S.LinkDeclined: "decline",
    S.UnlinkRequested: "unlink",
}
_AGENCY_PHRASES: dict[tuple[str, LinkType], str] = {
    ("cancel", LinkType.AccountLink): "cancel account invitations",
    ("unlink", LinkType.AccountLink): "unlink accounts",
    ("change", LinkType.AccountLink): "change account links",
    ("cancel", LinkType.CustomerLink): "cancel customer-level invitations",
    ("unlink", LinkType.CustomerLink): "unlink customer-level links",
    ("change", LinkType.CustomerLink): "change customer-level links",
}


def _role_refusal(actor: Actor, party: Party | None, link: ClientLink, verb: str) -> str | None:
    """Why the actor's role may not change this link (None when it may)."""
    if party is None:
        return (f"You are signed in to {_agency_label(actor)}, which is on neither side of this link, so you cannot "
                f"{verb} it.")
    if party == Party.CLIENT:
        if actor.role != Role.SuperAdmin:
            return (f"Only a Super Admin of {_agency_label(actor)} can {verb} this invitation; "
                    f"you are {_a(_role_label(actor))}.")
        return None
    phrase = _AGENCY_PHRASES.get((verb, link.link_type), f"{verb} this link")
    if link.link_type == LinkType.CustomerLink:
        if actor.role != Role.SuperAdmin:
            return f"Only a Super Admin of {_agency_label(actor)} can {phrase}; you are {_a(_role_label(actor))}."
        return None
    if actor.role not in (Role.SuperAdmin, Role.Standard):
        return (f"Only a Super Admin or Standard User of {_agency_label(actor)} can {phrase}; "
                f"you are {_a(_role_label(actor))}.")
    return None


def _invalid_transition(stored_status: S | str | None, target: S | str) -> str:
    """Why no update can take a link from ``stored_status`` to ``target``, said by what the target is for."""
    now_is = describe_status(stored_status)
    try:
        target = S(target)
    except ValueError:
        return f"There is no client-link status called {_quote(target)}."
    if target == S.UnlinkRequested:
        return f"Only an active link can be unlinked; this one is {now_is}."
    if target == S.LinkCanceled:
        return f"Only a pending invitation can be canceled; this link is {now_is}."
    if target in (S.LinkAccepted, S.LinkDeclined):
        return f"Only a pending invitation can be {_ASKS[target]}d; this link is {now_is}."
    if target == S.LinkPending:
        return (f"A link cannot be set back to {describe_status(target)}; this one is {now_is}. Send a new "
                "invitation once it has ended.")
    return (f"The status {describe_status(target)} is set only by Microsoft Advertising; an update can only cancel "
            "an invitation, accept or decline it, or request an unlink.")


def check_update(
    stored: ClientLink,
    requested: ClientLink,
    *,
    actor: Actor,
    party: Party | None,
    now: datetime,
    invited_at: datetime | None = None,
) -> list[Violation]:
    """Every rule an update (UpdateClientLinks item) of ``stored`` into ``requested`` breaks.

    Customer Management does full updates: everything but Status and Note must come back as it was read (3083), with
    the Timestamp read (209). Note left empty means "unchanged". Ended links refuse every update; links in
    LinkInProgress / UnlinkInProgress refuse with 1472. The client side may only accept or decline a pending
    invitation (not within 6 hours of it); the agency may cancel a pending invitation and request an unlink of a link
    in force (Active, UnlinkFailed, UnlinkCanceled); a request that keeps the status changes only the note, which
    only the agency may do.
    """
    v: list[Violation] = []
    inv = invited_at if invited_at is not None else _invited_from(stored)
    current = effective_status(stored, now, inv)
    label = entity_label(stored)

    if current in ENDED:
        if current != stored.status:  # a pending invitation past its 30 days, before the service says so
            text = (f"The invitation to {label} expired unanswered on "
                    f"{_fmt_date(expires_at(inv))} (LinkExpired), 30 days after it was sent; "  # type: ignore[arg-type]
                    "it cannot change, so send a new invitation instead.")
        else:
            since = stored.last_modified_date_time
            when = f" since {_fmt_date(since)}" if since is not None else ""
            text = (f"The link to {label} has ended: it is {describe_status(current)}{when}. An ended link cannot "
                    "change; send a new invitation instead.")
        v.append(Violation("Status", E_LINK_ENDED, text))
    elif current in UPDATE_LOCKED:
        v.append(Violation("Status", E_IN_PROGRESS,
                           f"The link to {label} is {describe_status(current)}, and Microsoft Advertising refuses "
                           "changes until that finishes; try again in 5 to 30 minutes."))

    for attr in COMPARED_ON_UPDATE:
        if _norm(attr, getattr(requested, attr)) != _norm(attr, getattr(stored, attr)):
            v.append(Violation(CLIENT_LINK_WIRE[attr], E_NOT_UPDATABLE,
                               f"{_cap(field_label(attr, stored.link_type))} cannot be changed by an update; only "
                               "the status and the note can. Send the link back as it was read."))

    if _norm("timestamp", requested.timestamp) != _norm("timestamp", stored.timestamp):
        v.append(Violation("Timestamp", E_TIMESTAMP,
                           "The link changed since it was read (its Timestamp differs); read it again and retry."))
    if requested.note != stored.note:
        bad_note = text_violation("Note", requested.note, "note")
        if bad_note:
            v.append(bad_note)

    target = None if _blank(requested.status) else requested.status
    if target is None:
        v.append(Violation("Status", E_STATUS_REQUIRED,
                           "Give the status the link should have; send its current status to change only the note."))
        return v
    if current in ENDED or current in UPDATE_LOCKED:
        return v  # the status check adds nothing the reasons above do not already say

    if target == stored.status:  # a note-only update: the agency's, never the client's
        if party == Party.CLIENT:
            v.append(Violation("Status", E_INVALID_TRANSITION,
                               "The client side can only accept or decline a pending invitation; anything else "
                               "about the link is changed by the agency."))
            return v
        refusal = _role_refusal(actor, party, stored, "change")
        if refusal:
            v.append(Violation(None, E_NOT_AUTHORIZED, refusal))
        return v

    allowed_parties = [t.party for t in LIFECYCLE if t.frm == stored.status and t.to == target
                       and t.kind == Kind.UPDATE]
    if not allowed_parties:
        v.append(Violation("Status", E_INVALID_TRANSITION, _invalid_transition(stored.status, target)))
        return v
    verb = _ASKS.get(target, "change")  # type: ignore[arg-type]
    if party not in allowed_parties:
        if party is None:
            v.append(Violation(None, E_NOT_AUTHORIZED, _role_refusal(actor, party, stored, verb) or ""))
        else:
            who, side = ("the client", "agency") if allowed_parties[0] == Party.CLIENT else ("the agency", "client")
            what = "request an unlink" if target == S.UnlinkRequested else f"{verb} this invitation"
            v.append(Violation("Status", E_INVALID_TRANSITION,
                               f"Only {who} can {what}; you are on the {side} side."))
        return v
    refusal = _role_refusal(actor, party, stored, verb)
    if refusal:
        v.append(Violation(None, E_NOT_AUTHORIZED, refusal))
    if target == S.LinkAccepted and inv is not None and _utc(now) < accept_possible_at(inv):
        v.append(Violation("Status", E_ACCEPT_TOO_SOON,
                           f"The invitation was sent at {_fmt_time(inv)} and can be accepted from "
                           f"{_fmt_time(accept_possible_at(inv))}, 6 hours later."))
    return v


def _invited_from(link: ClientLink) -> datetime | None:
    return invited_at(link)


# --------------------------------------------------------------------------------------------------------------------
# Views for people
# --------------------------------------------------------------------------------------------------------------------


def stage(link: ClientLink, perspective: Perspective, now: datetime, invited_at: datetime | None = None) -> Stage:
    """The inbox stage of a link seen from one side at ``now``."""
    inv = invited_at if invited_at is not None else _invited_from(link)
    status = effective_status(link, now, inv)
    if status in ENDED:
        return Stage.ENDED
    if status == S.LinkPending:
        if perspective == Perspective.RECEIVED:
            return Stage.NEEDS_ACTION
        if inv is not None and expires_at(inv) - _utc(now) <= EXPIRING_SOON:
            return Stage.NEEDS_ACTION
        return Stage.PENDING
    if status in ACTIVE_LIKE:
        return Stage.ACTIVE
    return Stage.IN_PROGRESS  # the moving statuses, and any status this version does not know


class Action(str, Enum):
    CANCEL = "cancel"
    UNLINK = "unlink"
    REINVITE = "reinvite"
    ACCEPT = "accept"
    DECLINE = "decline"

    @property
    def label(self) -> str:
        return ACTION_LABELS[self]

    @property
    def target(self) -> S:
        return ACTION_TARGETS[self]


ACTION_LABELS = {
    Action.CANCEL: "Cancel invitation",
    Action.UNLINK: "Request unlink",
    Action.REINVITE: "Re-invite",
    Action.ACCEPT: "Accept",
    Action.DECLINE: "Decline",
}
ACTION_TARGETS = {
    Action.CANCEL: S.LinkCanceled,
    Action.UNLINK: S.UnlinkRequested,
    Action.REINVITE: S.LinkPending,
    Action.ACCEPT: S.LinkAccepted,
    Action.DECLINE: S.LinkDeclined,
}
#: What each action does, in words, for confirmations.
ACTION_CONSEQUENCES = {
    Action.CANCEL: "The invitation is withdrawn; the client can no longer accept it. A new invitation is needed later.",
    Action.UNLINK: "Your agency will stop managing the account once the service completes the unlink "
                   "(on or after the link's start date); billing returns to the client.",
    Action.REINVITE: "A new invitation is sent to the client, who has 30 days to accept it.",
    Action.ACCEPT: "The agency will manage this account once the service completes the billing transition.",
    Action.DECLINE: "The invitation ends; the agency will need to send a new one.",
}


@dataclass(frozen=True, slots=True)
class ActionOption:
    action: Action
    allowed: bool
    reason: str | None = None  # why not, when not allowed


def reinvite_draft(link: ClientLink) -> ClientLink:
    """A new invitation that repeats an ended link's terms."""
    is_account = link.link_type == LinkType.AccountLink
    return ClientLink(
        type=link.link_type,
        client_entity_id=link.client_entity_id,
        managing_customer_id=link.managing_customer_id,
        note=link.note,
        name=link.name,
        is_bill_to_client=link.is_bill_to_client if is_account else None,
        customer_link_permission=None if is_account else link.customer_link_permission,
        suppress_notification=link.suppress_notification,
    )


def available_actions(
    link: ClientLink,
    actor: Actor,
    party: Party | None,
    now: datetime,
    invited_at: datetime | None = None,
    *,
    existing: Iterable[ClientLink] = (),
) -> list[ActionOption]:
    """Each action with whether this actor may take it on this link now, and if not, why.

    ``existing``: other known links of the same client entity, so that a re-invite is refused while a newer link of
    the pair is open (SearchClientLinks returns only the most recent link per pair, so this is rarely needed).
    """
    out: list[ActionOption] = []
    current = effective_status(link, now, invited_at if invited_at is not None else _invited_from(link))
    for action in (Action.ACCEPT, Action.DECLINE, Action.CANCEL, Action.UNLINK):
        if current == action.target:  # e.g. unlinking a link whose unlink was just requested: nothing to do
            out.append(ActionOption(action, False, f"This link is already {describe_status(current)}."))
            continue
        requested = link.replace(status=action.target)
        problems = check_update(link, requested, actor=actor, party=party, now=now, invited_at=invited_at)
        out.append(ActionOption(action, not problems, problems[0].message if problems else None))
    if current not in ENDED:
        out.append(ActionOption(Action.REINVITE, False,
                                f"This link is {describe_status(current)}; a new invitation is possible only after "
                                "it has ended."))
    elif party != Party.AGENCY:
        out.append(ActionOption(Action.REINVITE, False, "Only the agency that sent the invitation can re-invite."))
    else:
        others = [e for e in existing if e is not link]
        problems = check_new_invitation(reinvite_draft(link), actor=actor, now=now, existing=others)
        out.append(ActionOption(Action.REINVITE, not problems, problems[0].message if problems else None))
    return out


#: Statuses in which a link waits for the service (design.md §5, link detail); UnlinkRequested is the agency's
#: write-only request, which the service moves on from at once, so it gets a reason too.
WAITING: frozenset[S] = frozenset({S.LinkAccepted, S.LinkInProgress, S.UnlinkRequested, S.UnlinkPending,
                                   S.UnlinkInProgress})


def waiting_reason(link: ClientLink, now: datetime) -> str | None:
    """Why a moving link waits, and how long that usually takes; None for links that are not waiting."""
    status = link.status
    if status not in WAITING:
        return None
    start = link.start_date
    later_start = start is not None and _utc(start) > _utc(now)
    if status == S.LinkAccepted:
        return ("The client accepted. Microsoft Advertising now starts the billing transition; the link then shows "
                f"as {describe_status(S.LinkInProgress)}, usually within minutes.")
    if status == S.LinkInProgress:
        text = "Waiting for the billing transition to complete, which usually takes 5 to 30 minutes"
        if later_start:
            text += f", and for the start date ({_fmt_date(start)}) to arrive"
        return text + ". Changes to the account are refused until then (error 1472)."
    if status == S.UnlinkRequested:
        return (f"The unlink was requested; Microsoft Advertising moves it to {describe_status(S.UnlinkPending)} "
                "immediately.")
    if status == S.UnlinkPending:
        return (f"The unlink waits for system resources and usually becomes {describe_status(S.UnlinkInProgress)} "
                "quickly; the agency still manages the account meanwhile.")
    # UnlinkInProgress
    text = "Waiting for the billing transition back to the client, which usually takes 5 to 30 minutes"
    if later_start:
        text += f"; the unlink completes on or after the start date ({_fmt_date(start)})"
    return text + ". Changes to the account are refused until then (error 1472)."


STATUS_TEXT: dict[S, str] = {
    S.LinkPending: "Invitation sent; waiting for the client to accept or decline (30 days).",
    S.LinkCanceled: "The agency canceled the invitation.",
    S.LinkExpired: "Nobody answered the invitation within 30 days.",
    S.LinkAccepted: "The client accepted; the service is starting the link.",
    S.LinkDeclined: "The client declined the invitation.",
    S.LinkInProgress: "Being linked: the billing transition is under way.",
    S.Active: "Linked: the agency manages this account.",
    S.LinkFailed: "Linking failed (for example a billing transition error).",
    S.UnlinkRequested: "The agency requested an unlink.",
    S.UnlinkPending: "Unlink requested; waiting for the service to start it.",
    S.UnlinkCanceled: "Unlink canceled (reserved by Microsoft for future use); the link stays in force.",
    S.UnlinkInProgress: "Being unlinked: the billing transition is under way.",
    S.Inactive: "Unlinked: the agency no longer manages this account.",
    S.UnlinkFailed: "The unlink failed; the link stays in force and the unlink can be requested again.",
}


def status_text(status: S | str | None) -> str:
    """A status in plain words."""
    if status is None:
        return "No status."
    if isinstance(status, S):
        return STATUS_TEXT[status]
    try:
        return STATUS_TEXT[S(status)]
    except ValueError:
        return f"The status {_quote(status)} is unknown to this version of linkdesk (probably newer)."
