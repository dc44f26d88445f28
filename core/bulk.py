"""Bulk invitations from a CSV file: parsing, and a dry-run verdict for every row.

The command line (``linkdesk invite --csv FILE [--dry-run]``) and the TUI's bulk mode both use this module, so a
file is judged the same way everywhere. Nothing here touches the network: rows are checked by ``core.rules`` with the
cache's knowledge (existing links of the same client, prepaid accounts) passed in as a ``check`` function.

File format
-----------
UTF-8 (with or without a byte-order mark), comma-separated, a header row first, fields quoted the usual CSV way
(``"Contoso, Inc."``; ``""`` for a quote inside). Blank lines are skipped; CRLF and LF both work. Column names are
case-insensitive and may use spaces or dashes instead of underscores. At most :data:`MAX_ROWS` data rows.

========================  ==========================================================================================
Column                    Meaning
========================  ==========================================================================================
``type``                  ``AccountLink`` (default; also ``account``) or ``CustomerLink`` (also ``customer``).
``client_account_id``     The client account's id (a customer link: the client customer's id). Alias:
                          ``client_id``, ``client_customer_id``.
``client_account_number`` The client account's number, e.g. ``F1000001`` (a customer link: the customer's number).
                          Alias: ``client_number``, ``client_customer_number``. Give the id **or** the number.
``bill_to``               Who pays, for account links: ``client`` or ``agency``. Leave empty for customer links.
``permission``            For customer links: ``Administrative`` or ``Standard``.
``name``                  The link's name (at most 40 characters; the service supplies one when empty).
``note``                  A message to the client.
``start_date``            ``YYYY-MM-DD`` (UTC) or an ISO date-time; empty means now.
``suppress_notification`` ``true``/``false`` (also ``yes``/``no``, ``1``/``0``); true sends the client no email.
========================  ==========================================================================================

Only one of the id columns and one of the number columns may appear. A file must have an id or a number column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from .model import ClientLink, CustomerLinkPermission, LinkType
from .rules import (
    E_ID_AND_NUMBER,
    E_ID_OR_NUMBER_REQUIRED,
    E_INVALID_ID,
    E_DUPLICATE_IN_REQUEST,
    E_FIELD_INVALID,
    E_LINK_TYPE_INVALID,
    E_PERMISSION_INVALID,
    Violation,
)

#: Data rows a file may hold; bigger files are refused as a whole (split them).
MAX_ROWS = 10_000
#: Bytes a file may hold before it is refused unread (10,000 rows of generous width).
MAX_BYTES = 20 * 1024 * 1024
#: Characters a single field may hold (names are 40, notes are short: anything longer is not an invitation).
MAX_FIELD = 2_000

#: Canonical column name -> accepted spellings (after lower-casing and turning spaces/dashes into underscores).
COLUMNS: dict[str, tuple[str, ...]] = {
    "type": ("type", "link_type"),
    "client_id": ("client_account_id", "client_id", "client_customer_id", "client_entity_id"),
    "client_number": ("client_account_number", "client_number", "client_customer_number", "client_entity_number"),
    "bill_to": ("bill_to",),
    "permission": ("permission", "customer_link_permission"),
    "name": ("name",),
    "note": ("note",),
    "start_date": ("start_date",),
    "suppress_notification": ("suppress_notification",),
}
_ALIASES: dict[str, str] = {alias: canon for canon, names in COLUMNS.items() for alias in names}

EXAMPLE_HEADER = "type,client_account_id,bill_to,name,note"


class BulkFileError(Exception):
    """The file as a whole cannot be used (not CSV, wrong encoding, too big, no usable header). One sentence."""


@dataclass(frozen=True)
class BulkRow:
    """One data row: where it is, what it said, the invitation it describes, and every problem found."""

    line: int  # physical line number in the file (1 = the header)
    values: dict[str, str]  # canonical column -> raw text
    draft: ClientLink | None  # None when the row could not be turned into an invitation
    problems: tuple[Violation, ...] = ()

    @property
    def ok(self) -> bool:
        return self.draft is not None and not self.problems

    @property
    def label(self) -> str:
        """How to name the row's client for people: its id or number as written."""
        return self.values.get("client_id") or self.values.get("client_number") or "(no client given)"

    @property
    def verdict(self) -> str:
        """'ready' or the problems, one sentence each."""
        return "ready" if self.ok else " ".join(p.message for p in self.problems)

    def with_problems(self, more: Iterable[Violation]) -> "BulkRow":
        merged = list(self.problems)
        seen = {(p.field, p.code) for p in merged}
        for p in more:
            if (p.field, p.code) not in seen:
                merged.append(p)
                seen.add((p.field, p.code))
        return BulkRow(self.line, self.values, self.draft, tuple(merged))


@dataclass(frozen=True)
class BulkFile:
    """A parsed file: its canonical columns and its rows (blank lines dropped)."""

    columns: tuple[str, ...]
    rows: tuple[BulkRow, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> list[BulkRow]:
        return [r for r in self.rows if r.ok]

    @property
    def failed(self) -> list[BulkRow]:
        return [r for r in self.rows if not r.ok]


def read_file(path: str | Path, *, max_rows: int = MAX_ROWS) -> BulkFile:
    """Read and parse a CSV file; raises BulkFileError with a sentence for a file that cannot be used."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise BulkFileError(f"There is no file {str(p)!r}; check the path.") from None
    except OSError as exc:
        raise BulkFileError(f"The file {str(p)!r} cannot be read ({exc.strerror or exc}).") from None
    if p.is_dir():
        raise BulkFileError(f"{str(p)!r} is a folder, not a CSV file.")
    if size > MAX_BYTES:
        raise BulkFileError(f"The file is {size / 1024 / 1024:.1f} MB; linkdesk reads CSV files of at most "
                            f"{MAX_BYTES // 1024 // 1024} MB ({max_rows:,} rows). Split it into smaller files.")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BulkFileError(f"The file {str(p)!r} cannot be read ({exc.strerror or exc}).") from None
    return parse(data, max_rows=max_rows)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise BulkFileError("The file is saved as UTF-16; save it as CSV UTF-8 (in Excel: 'CSV UTF-8 (Comma "
                                "delimited)') and try again.")
        raise BulkFileError("This is not a CSV text file (it contains binary data); export the sheet as CSV UTF-8.")
    if data[:4] == b"PK\x03\x04":
        raise BulkFileError("This is a spreadsheet (.xlsx), not a CSV file; export it as CSV UTF-8.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BulkFileError(f"The file is not UTF-8 text (line {line} has bytes that are not UTF-8); save it as "
                            "CSV UTF-8 and try again.") from None
    return text


def _canonical(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


def parse(data: bytes | str, *, max_rows: int = MAX_ROWS) -> BulkFile:
    """Parse CSV text (bytes are decoded as UTF-8, BOM allowed) into rows with parse-level problems.

    File-level problems raise :class:`BulkFileError`; row-level problems (bad ids, both id and number, duplicates
    inside the file, unknown values) are attached to their rows.
    """
    text = _decode(data) if isinstance(data, bytes) else data.lstrip("\ufeff")
    if not text.strip():
        raise BulkFileError(f"The file is empty; it needs a header row, for example: {EXAMPLE_HEADER!r}.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        records = _read_records(reader, max_rows)
    except csv.Error as exc:
        if "field limit" in str(exc):  # the csv module's own bound (128 KiB), usually an unclosed quote
            raise BulkFileError(f"Line {reader.line_num} has a field longer than {MAX_FIELD:,} characters; this does "
                                "not look like an invitation list (check the file's quotes).") from None
        raise BulkFileError(f"The file is not valid CSV near line {reader.line_num}: {exc}. Check its quotes.") \
            from None
    if not records:
        raise BulkFileError(f"The file is empty; it needs a header row, for example: {EXAMPLE_HEADER!r}.")
    header_line, header = records[0]
    columns = _header_columns(header)
    rows: list[BulkRow] = []
    first_seen: dict[tuple[str, str, str], int] = {}
    for line, cells in records[1:]:
        row = _parse_row(line, columns, cells)
        for key in _duplicate_keys(row):
            if key in first_seen:
                row = row.with_problems([Violation(
                    "ClientEntityId" if key[1] == "id" else "ClientEntityNumber", E_DUPLICATE_IN_REQUEST,
                    f"The same client ({key[2]}) is already on line {first_seen[key]} of this file; keep one.")])
            else:
                first_seen[key] = line
        rows.append(row)
    if not rows:
        raise BulkFileError("The file has a header but no invitations below it.")
    return BulkFile(tuple(c for c in columns if c is not None), tuple(rows))


def _read_records(reader, max_rows: int) -> list[tuple[int, list[str]]]:
    records: list[tuple[int, list[str]]] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue  # blank line (or a line of empty cells, as spreadsheets export)
        if len(records) > max_rows:  # records[0] is the header
            raise BulkFileError(f"The file has more than {max_rows:,} invitations; linkdesk reads at most "
                                f"{max_rows:,} rows at a time. Split it into smaller files.")
        if any(len(c) > MAX_FIELD for c in cells):
            raise BulkFileError(f"Line {reader.line_num} has a field longer than {MAX_FIELD:,} characters; this "
                                "does not look like an invitation list (check the file's quotes).")
        # the line where the record ended: good enough to point a person at it
        records.append((reader.line_num, cells))
    return records


def _header_columns(header: list[str]) -> list[str | None]:
    columns: list[str | None] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for raw in header:
        name = _canonical(raw)
        if not name:
            columns.append(None)  # an unnamed (usually empty, trailing) column is ignored
            continue
        canon = _ALIASES.get(name)
        if canon is None:
            unknown.append(raw.strip())
            columns.append(None)
            continue
        if canon in seen:
            raise BulkFileError(f"The columns {seen[canon]!r} and {raw.strip()!r} mean the same thing; keep one.")
        seen[canon] = raw.strip()
        columns.append(canon)
    if unknown:
        known = ", ".join(names[0] for names in COLUMNS.values())
        if not seen:  # nothing recognisable: most likely data without a header
            raise BulkFileError("The first line must be a header naming the columns, for example: "
                                f"{EXAMPLE_HEADER!r}.")
        raise BulkFileError(f"Unknown column{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(repr(u[:40]) for u in unknown[:5])}; the columns linkdesk reads are: {known}.")
    if "client_id" not in seen and "client_number" not in seen:
        raise BulkFileError("The file needs a client_account_id or a client_account_number column, for example: "
                            f"{EXAMPLE_HEADER!r}.")
    return columns


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _parse_row(line: int, columns: list[str | None], cells: list[str]) -> BulkRow:
    problems: list[Violation] = []
    values: dict[str, str] = {}
    extra = [c for c in cells[len(columns):] if c.strip()]
    if extra:
        problems.append(Violation(None, E_FIELD_INVALID, f"Line {line} has more fields than the header names "
                                                         f"({len(cells)} for {len(columns)} columns)."))
    for name, cell in zip(columns, cells):
        if name is not None:
            values[name] = cell.strip()

    kwargs: dict[str, object] = {}
    raw_type = values.get("type", "")
    link_type = LinkType.AccountLink
    if raw_type:
        t = raw_type.lower()
        if t in ("accountlink", "account"):
            link_type = LinkType.AccountLink
        elif t in ("customerlink", "customer"):
            link_type = LinkType.CustomerLink
        else:
            problems.append(Violation("Type", E_LINK_TYPE_INVALID,
                                      f"The type must be AccountLink or CustomerLink, not {raw_type[:40]!r}."))
    kwargs["type"] = link_type
    what = "customer" if link_type == LinkType.CustomerLink else "account"

    raw_id, raw_number = values.get("client_id", ""), values.get("client_number", "")
    if raw_id and raw_number:
        problems.append(Violation("ClientEntityId", E_ID_AND_NUMBER,
                                  f"Give either the client {what} id or its number, not both."))
    elif not raw_id and not raw_number:
        problems.append(Violation("ClientEntityId", E_ID_OR_NUMBER_REQUIRED,
                                  f"Give the client {what} id or its number."))
    if raw_id:
        if raw_id.isdigit() and raw_id.isascii() and 1 <= int(raw_id) <= 2**63 - 1:
            kwargs["client_entity_id"] = int(raw_id)
        else:
            problems.append(Violation("ClientEntityId", E_INVALID_ID,
                                      f"The client {what} id must be a positive whole number, not {raw_id[:40]!r}."))
    if raw_number:
        kwargs["client_entity_number"] = raw_number  # its format is a rule; core.rules says so in its words

    raw_bill = values.get("bill_to", "").lower()
    if raw_bill in ("client", "agency"):
        kwargs["is_bill_to_client"] = raw_bill == "client"
    elif raw_bill:
        problems.append(Violation("IsBillToClient", E_FIELD_INVALID,
                                  f"The bill_to value must be 'client' or 'agency', not {values['bill_to'][:40]!r}."))

    raw_perm = values.get("permission", "")
    if raw_perm:
        match = [p for p in CustomerLinkPermission if p.value.lower() == raw_perm.lower()]
        if match:
            kwargs["customer_link_permission"] = match[0]
        else:
            problems.append(Violation("CustomerLinkPermission", E_PERMISSION_INVALID,
                                      f"Permission must be Administrative or Standard, not {raw_perm[:40]!r}."))

    for col in ("name", "note"):
        if values.get(col):
            kwargs[col] = values[col]

    raw_start = values.get("start_date", "")
    if raw_start:
        start = parse_date(raw_start)
        if start is None:
            problems.append(Violation("StartDate", E_FIELD_INVALID,
                                      f"The start_date must be a date like 2025-11-30, not {raw_start[:40]!r}."))
        else:
            kwargs["start_date"] = start

    raw_sup = values.get("suppress_notification", "").lower()
    if raw_sup in _TRUE:
        kwargs["suppress_notification"] = True
    elif raw_sup and raw_sup not in _FALSE:
        problems.append(Violation("SuppressNotification", E_FIELD_INVALID,
                                  "The suppress_notification value must be true or false, not "
                                  f"{values['suppress_notification'][:40]!r}."))

    fatal = any(p.code in (E_INVALID_ID, E_LINK_TYPE_INVALID) for p in problems)
    draft = None if fatal else ClientLink(**kwargs)  # type: ignore[arg-type]
    return BulkRow(line, values, draft, tuple(problems))


def parse_date(text: str) -> datetime | None:
    """``YYYY-MM-DD`` or an ISO date-time as an aware UTC datetime; None when it is neither."""
    try:
        d = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def _duplicate_keys(row: BulkRow) -> list[tuple[str, str, str]]:
    raw_type = row.values.get("type", "").lower()
    kind = "customer" if raw_type in ("customer", "customerlink") else (
        "account" if raw_type in ("", "account", "accountlink") else raw_type)
    keys = []
    if row.values.get("client_id"):
        keys.append((kind, "id", row.values["client_id"].lstrip("0") or "0"))
    if row.values.get("client_number"):
        keys.append((kind, "number", row.values["client_number"].upper()))
    return keys


def check(bulk: BulkFile, check_draft: Callable[[ClientLink], list[Violation]],
          managing_customer_id: int | None = None) -> BulkFile:
    """Add the rules' verdict to every parsed row (the dry run).

    ``check_draft`` is ``Session.check_invitation`` (rules + cache context). ``managing_customer_id`` fills the
    drafts' managing customer (the signed-in agency) so the rules see the invitation exactly as it would be sent.
    """
    rows = []
    for row in bulk.rows:
        if row.draft is None:
            rows.append(row)
            continue
        draft = row.draft
        if managing_customer_id is not None and draft.managing_customer_id is None:
            draft = draft.replace(managing_customer_id=managing_customer_id)
        checked = BulkRow(row.line, row.values, draft, row.problems)
        rows.append(checked.with_problems(check_draft(draft)))
    return BulkFile(bulk.columns, tuple(rows))
