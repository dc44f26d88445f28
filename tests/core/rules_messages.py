"""The one check that a rule's message is a full sentence a user understands (shared by the rules tests).

Written independently of core/rules and core/model on purpose: the wire names are listed here, not imported.
"""

from __future__ import annotations

import re

STATUS_NAMES = [
    "LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
    "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive", "UnlinkFailed",
]
WIRE_FIELDS = [
    "Type", "ClientEntityId", "ClientEntityNumber", "ClientEntityName", "ManagingCustomerId", "ManagingCustomerNumber",
    "ManagingCustomerName", "Note", "Name", "InviterEmail", "InviterName", "InviterPhone", "IsBillToClient",
    "StartDate", "Status", "SuppressNotification", "LastModifiedDateTime", "LastModifiedByUserId", "Timestamp",
    "ForwardCompatibilityMap", "CustomerLinkPermission", "ClientEntityCustomerNumber",
]
ARTEFACTS = ["<", ">", "None", "Status.", "ClientLinkStatus.", "LinkType.", "Role.", "Party.", "Kind.", "Action.",
             "{", "}", "  ", " .", " ,", "..", ";.", "()", "''", "\n", "Traceback", "self.", "__"]


def message_problems(msg: str) -> list[str]:
    """What keeps ``msg`` from being a full sentence a user understands (empty when it is one)."""
    problems = []
    if not msg or not msg[0].isupper():
        problems.append("does not start with a capital letter")
    if not msg.endswith("."):
        problems.append("does not end with '.'")
    problems += [f"contains {a!r}" for a in ARTEFACTS if a in msg]
    # A wire status or element name is jargon unless the sentence explains it: inside parentheses, or followed by one.
    for name in STATUS_NAMES + WIRE_FIELDS:
        for m in re.finditer(rf"\b{name}\b", msg):
            before, after = msg[: m.start()], msg[m.end():]
            if before.count("(") <= before.count(")") and not after.startswith(" ("):
                problems.append(f"uses {name} without saying what it means")
    return problems
