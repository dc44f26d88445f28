"""Text for the screen: untrusted names made safe, and times, days and money words formatted for people.

Client-supplied text (customer, account and user names, notes, invitation names) is untrusted: it may hold Rich or
Textual markup, ANSI or OSC escape sequences, control characters or bidi overrides. Everything here returns plain
strings with those removed, or ``rich.text.Text`` objects, which Textual never parses as markup. Widgets must never
put client text into a markup string.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from rich.text import Text

#: Escape sequences first (so their parameters go too), then single control and invisible-formatting characters:
#: C0/C1 controls, zero-width characters, bidi embeddings/overrides/isolates, BOM.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
_WHITESPACE = re.compile(r"[\t\n\r]+")
#: Lone surrogates cannot be encoded for the terminal (writing one raises); shown as the replacement character.
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Longest piece of client text shown anywhere (the API allows long notes; a screen never needs more).
MAX_CHARS = 2000


def clean(value: object, *, max_chars: int = MAX_CHARS, keep_newlines: bool = False) -> str:
    """``value`` as a single safe line of plain text (or lines, with ``keep_newlines``).

    Escape sequences and invisible control/bidi characters are removed, tabs and newlines become spaces, and very
    long text is cut with an ellipsis. The result is still untrusted: pass it on as ``Text``, never as markup.
    """
    if value is None:
        return ""
    text = _SURROGATES.sub("\ufffd", str(value))
    if "\x1b" in text or "\x9b" in text:
        text = _ESCAPES.sub("", text)
    if keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", " ").replace("\t", " ")
        text = "\n".join(_INVISIBLE.sub("", line) for line in text.split("\n"))
    else:
        text = _INVISIBLE.sub("", _WHITESPACE.sub(" ", text))
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def literal(value: object, style: str = "", *, max_chars: int = MAX_CHARS, keep_newlines: bool = False) -> Text:
    """Untrusted text as a Rich ``Text`` shown verbatim (no markup, no escapes)."""
    return Text(clean(value, max_chars=max_chars, keep_newlines=keep_newlines), style=style)


def join(*parts: Text | str | tuple[object, str]) -> Text:
    """Build a Text from pieces: a ``Text`` as is, a ``str`` as our own literal label, ``(value, style)`` cleaned."""
    out = Text()
    for part in parts:
        if isinstance(part, Text):
            out.append_text(part)
        elif isinstance(part, tuple):
            out.append(clean(part[0]), style=part[1])
        else:
            out.append(part)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------------------------


def utc(d: datetime) -> datetime:
    """Aware UTC; naive datetimes are UTC (as the service's are)."""
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def short_count(count: int) -> str:
    """A stage count in at most six columns: exact below 10,000, then 10.5k, 618k, 1.2M. At 100,000 links the exact
    counts of six stages no longer fit one 120-column line beside the sort, and the last one was cut ("All 99")."""
    if count < 10_000:
        return f"{count:,}"
    if count < 99_950:
        return f"{count / 1000:.1f}k"
    if count < 999_500:
        return f"{count / 1000:.0f}k"
    return f"{count / 1_000_000:.1f}M"


def short_span(delta: timedelta) -> str:
    """A duration in one short unit: '45s', '12m', '5h', '3d', '7w'."""
    seconds = int(abs(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    if seconds < 86400 * 60:
        return f"{seconds // 86400}d"
    return f"{seconds // (86400 * 7)}w"


def ago(then: datetime | None, now: datetime) -> str:
    """'just now', '3 min ago', '5 h ago', '2 days ago', or a date for anything older than two weeks."""
    if then is None:
        return "never"
    seconds = (utc(now) - utc(then)).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 14 * 86400:
        days = int(seconds // 86400)
        return "1 day ago" if days == 1 else f"{days} days ago"
    return f"on {date(then)}"


def date(d: datetime | None) -> str:
    """'2 Nov 2025'."""
    if d is None:
        return "—"
    d = utc(d)
    return f"{d.day} {d:%b %Y}"


def short_date(d: datetime | None, now: datetime | None = None) -> str:
    """'2 Nov 14:05' (the year only when it is not ``now``'s)."""
    if d is None:
        return "—"
    d = utc(d)
    if now is not None and utc(now).year != d.year:
        return f"{d.day} {d:%b %Y}"
    return f"{d.day} {d:%b %H:%M}"


def when(d: datetime | None) -> str:
    """'2 Nov 2025 14:05 UTC'."""
    if d is None:
        return "—"
    d = utc(d)
    return f"{d.day} {d:%b %Y %H:%M} UTC"


def days_left_text(days: int | None) -> str:
    """Days until a pending invitation expires, for a column."""
    if days is None:
        return ""
    if days < 0:
        return "expired"
    if days == 0:
        return "today"
    return f"{days}d"


def bill_to_text(is_bill_to_client: bool | None) -> str:
    """Who pays, in one word, for a column."""
    if is_bill_to_client is None:
        return "—"
    return "client" if is_bill_to_client else "agency"


def billing_consequence(is_bill_to_client: bool | None, client: str = "the client", agency: str = "your agency") -> str:
    """What choosing who pays means, in a sentence (the invitation summary and confirmations)."""
    if is_bill_to_client is None:
        return "Who pays is not set on customer-level links; each account keeps its own billing."
    if is_bill_to_client:
        return (f"{client[:1].upper()}{client[1:]} keeps paying for the account's ads with its own payment method; "
                f"{agency} only manages the campaigns.")
    return (f"{agency[:1].upper()}{agency[1:]} takes over billing: from the day the link becomes Active it pays for "
            f"the account's ads, including charges already pending then.")


def action_billing(action: str, is_bill_to_client: bool | None, agency: str = "the agency") -> str:
    """What an action on an existing account link means for billing, in a sentence ('' when nothing changes).

    ``action`` is a ``rules.Action`` value: ``accept`` (said to the client), ``unlink``, ``reinvite``.
    """
    if is_bill_to_client is None:
        return ""
    if action == "accept":
        if is_bill_to_client:
            return f"You keep paying for the account's ads; {agency} manages its campaigns."
        return (f"{agency[:1].upper()}{agency[1:]} takes over billing when the link becomes Active, including "
                "charges already pending then.")
    if action == "unlink":
        if is_bill_to_client:
            return "The client already pays for this account; billing does not change."
        return ("Your agency pays for this account today; after the unlink the client pays again, and a postpay or "
                "monthly-invoice account can be paused for up to 3 hours while billing moves back.")
    if action == "reinvite":
        return billing_consequence(is_bill_to_client)
    return ""


def link_billing(is_bill_to_client: bool | None, in_force: bool, agency: str = "the agency") -> str:
    """Who pays under an existing link: as it stands (``in_force``) or as it will be once the link is Active."""
    if is_bill_to_client is None:
        return "Customer-level link: each account keeps its own billing."
    if not in_force:
        return billing_consequence(is_bill_to_client, agency=agency)
    if is_bill_to_client:
        return f"The client pays for the account's ads; {agency} manages the campaigns."
    return f"{agency[:1].upper()}{agency[1:]} pays for the account's ads (it took over billing)."
