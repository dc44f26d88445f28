"""The ``linkdesk`` command line (design.md §6).

Exit codes: 0 success, 1 a failure the user must act on (validation, API refusal, missing cache or sign-in), 2 a usage
error. No traceback ever reaches the user: unexpected errors print one sentence (set ``LINKDESK_DEBUG=1`` to see the
traceback). No command prints a token.

Only the standard library is imported at module level so that ``linkdesk --help`` stays fast; the cache, the SDK, the
simulator and the TUI load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
ENV_DEBUG = "LINKDESK_DEBUG"

STAGES = ("needs_action", "pending", "in_progress", "active", "ended")
STATUSES = ("LinkPending", "LinkCanceled", "LinkExpired", "LinkAccepted", "LinkDeclined", "LinkInProgress", "Active",
            "LinkFailed", "UnlinkRequested", "UnlinkPending", "UnlinkCanceled", "UnlinkInProgress", "Inactive",
            "UnlinkFailed")

LINK_FIELDS = ("client_entity_id", "client_entity_number", "client_entity_name", "type", "managing_customer_id",
               "managing_customer_name", "status", "stage", "perspective", "is_bill_to_client", "invited_at",
               "last_modified", "days_left", "name", "note")

LINKS_EPILOG = """\
output formats:
  table  aligned columns for people; client text is shown literally, control characters replaced.
  csv    a header row and one row per link with the fields below; cells beginning with = + - @ (or a tab or
         carriage return) are prefixed with ' so that spreadsheets never evaluate them as formulas.
  json   one object (stable; new keys may be added, existing ones never change meaning):
           {"profile": "demo", "customer_id": 100, "now": "2025-11-03T12:00:00Z",
            "synced_at": "2025-11-03T11:58:00Z" | null, "count": 2, "links": [LINK, ...]}
         each LINK has exactly these keys:
           client_entity_id (int), client_entity_number (str|null), client_entity_name (str|null),
           type ("AccountLink"|"CustomerLink"), managing_customer_id (int), managing_customer_name (str|null),
           status (str|null, the ClientLinkStatus wire name), stage ("needs_action"|"pending"|"in_progress"|
           "active"|"ended"), perspective ("sent"|"received"), is_bill_to_client (bool|null),
           invited_at (ISO 8601 UTC|null), last_modified (ISO 8601 UTC|null), days_left (int|null, pending only),
           name (str|null), note (str|null)
         No token or secret is ever part of the output.

The list is read from the local cache only: it works offline, and says on stderr how old the cache is.
"""


class CliError(Exception):
    """A failure with a sentence for the user (exit 1)."""


# --------------------------------------------------------------------------------------------------------------------
# Small output helpers
# --------------------------------------------------------------------------------------------------------------------


def _err(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


_BIDI_AND_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
                       0x2060, 0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF}


def safe_text(value: Any, limit: int | None = None) -> str:
    """Client-supplied text made safe for a terminal: control, bidi and invisible format characters become U+FFFD,
    so escape sequences cannot act and the text reads literally. Optionally shortened with an ellipsis."""
    import unicodedata

    if value is None:
        return ""
    out = []
    for ch in str(value):
        cp = ord(ch)
        if cp < 0x20 or 0x7F <= cp < 0xA0 or cp in _BIDI_AND_INVISIBLE or unicodedata.category(ch) in ("Cs", "Co"):
            out.append("\ufffd")
        else:
            out.append(ch)
    text = "".join(out)
    if limit is not None and _width(text) > limit:
        # One pass (a name can be megabytes long): keep characters while they fit in limit - 1 columns.
        used, end = 0, 0
        for end, ch in enumerate(text):
            used += _char_width(ch)
            if used > limit - 1:
                break
        text = text[:end] + "…"
    if limit is not None and len(text) > 4 * limit:  # thousands of zero-width combining marks ("Zalgo" text)
        text = text[:4 * limit - 1] + "…"
    return text


def _char_width(c: str) -> int:
    import unicodedata

    return 0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1


def _width(text: str) -> int:
    return sum(_char_width(c) for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, limits: Sequence[int | None] | None = None,
                out: Any = None) -> None:
    """Aligned columns; every cell goes through :func:`safe_text`."""
    out = out or sys.stdout
    limits = limits or [None] * len(headers)
    cells = [[safe_text(c, lim) for c, lim in zip(r, limits)] for r in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(_pad(h, w) for h, w in zip(headers, widths)).rstrip(), file=out)
    for r in cells:
        print("  ".join(_pad(c, w) for c, w in zip(r, widths)).rstrip(), file=out)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Bidi embedding, override and isolate controls: they reorder what a terminal or a spreadsheet shows (Trojan
#: Source). The marks U+200E/U+200F, which right-to-left text needs, are kept.
_BIDI_CONTROLS = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}


def csv_cell(value: Any) -> Any:
    """A value for a CSV export: characters a terminal would act on (C0 controls other than tab and line breaks,
    DEL, C1 controls such as the one-byte CSI) and bidi overrides become U+FFFD; then text starting like a formula
    gets a leading apostrophe (OWASP CSV injection)."""
    if not isinstance(value, str):
        return value
    if any(_csv_unsafe(ch) for ch in value):
        value = "".join("\ufffd" if _csv_unsafe(ch) else ch for ch in value)
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_unsafe(ch: str) -> bool:
    cp = ord(ch)
    return (cp < 0x20 and ch not in "\t\n\r") or 0x7F <= cp < 0xA0 or cp in _BIDI_CONTROLS or 0xD800 <= cp < 0xE000


def json_text(doc: Any) -> str:
    """JSON with every character a terminal or a browser could act on written as a \\uXXXX escape (control, format
    and bidi characters, line separators, surrogates); other text stays readable. ``json.loads`` gives back exactly
    the original strings."""
    import json
    import unicodedata

    text = json.dumps(doc, ensure_ascii=False, indent=2)
    # Outside strings, JSON holds only ASCII punctuation, digits and whitespace: every such character is in a string.
    unsafe = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co")
    return "".join(_json_escape(ch) if ord(ch) > 0x7E and unicodedata.category(ch) in unsafe else ch for ch in text)


def _json_escape(ch: str) -> str:
    cp = ord(ch)
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # beyond the BMP: a surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def fmt_time(d: datetime | None) -> str:
    if d is None:
        return ""
    d = d.astimezone(timezone.utc) if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return f"{d.day} {d:%b %Y %H:%M} UTC"


def fmt_age(delta: timedelta | None) -> str:
    if delta is None:
        return "never"
    s = int(delta.total_seconds())
    if s < 0:
        return "just now"
    if s < 60:
        return "less than a minute ago"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if s >= size:
            n = s // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _iso(d: datetime | None) -> str | None:
    if d is None:
        return None
    d = d.astimezone(timezone.utc) if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------------------------
# Profiles, caches and sessions
# --------------------------------------------------------------------------------------------------------------------


def _profile_of(args: argparse.Namespace) -> str:
    from . import paths

    if getattr(args, "demo", False):
        return paths.DEMO_PROFILE
    if getattr(args, "profile", None):
        return paths.validate_profile(args.profile)
    last = paths.last_profile()
    if last:
        return last
    from . import credentials

    known = credentials.profiles()
    if known:
        return known[0].profile
    raise CliError("You are not signed in; sign in with `linkdesk auth login`, or add --demo to use the built-in "
                   "simulator.")


def _demo_clock() -> Callable[[], datetime]:
    """The simulator's virtual clock read from its state file (without starting it), else the system clock."""
    from .session import demo_clock

    try:
        clock = demo_clock()
    except Exception:  # an unreadable simulator state must not stop an offline listing
        clock = None
    return clock or (lambda: datetime.now(timezone.utc))


def _open_cache(profile: str) -> Any:
    """The profile's cache for reading; a profile never synced is a CliError."""
    from . import paths
    from .cache import Cache

    path = paths.home() / paths.validate_profile(profile) / "cache.sqlite"
    if not path.exists():
        raise CliError(f"There is no cache for {profile} yet; run `linkdesk sync"
                       f"{' --demo' if profile == paths.DEMO_PROFILE else ''}` first.")
    return Cache.open(path)


def _viewer_customer(cache: Any, args: argparse.Namespace) -> int:
    if getattr(args, "customer", None):
        return int(args.customer)
    cid = cache.meta_get("customer_id")
    if cid is None:
        raise CliError("The cache has not completed a sync yet; run `linkdesk sync` first.")
    return int(cid)


def _open_session(args: argparse.Namespace) -> Any:
    from .session import Session

    if getattr(args, "demo", False):
        return Session.demo()
    return Session.live(getattr(args, "profile", None))


def _say_cache_age(cache: Any, now: datetime, profile: str) -> None:
    run = cache.last_ok_sync()
    if run is None:
        _err(f"{profile}: the cache has no completed sync yet.")
        return
    _err(f"{profile}: cache from {fmt_time(run.finished_at)} ({fmt_age(cache.age(now))}).")


# --------------------------------------------------------------------------------------------------------------------
# sync
# --------------------------------------------------------------------------------------------------------------------


class _ProgressPrinter:
    """A one-line progress bar on a terminal; plain lines (one per phase, and every 1,000 links) otherwise."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.phase: str | None = None
        self.last_links = 0
        self.drawn = False
        self.spin = 0

    def __call__(self, p: Any) -> None:
        if self.tty:
            width = 24
            if p.total:
                filled = int(width * min(p.done, p.total) / p.total)
                bar = "#" * filled + "." * (width - filled)
            else:
                self.spin = (self.spin + 1) % width
                bar = "." * self.spin + "#" + "." * (width - self.spin - 1)
            line = f"\r[{bar}] {p.phase:<9} {safe_text(p.message, 60)}"
            self.stream.write(line.ljust(100)[:100])
            self.stream.flush()
            self.drawn = True
            return
        if p.phase != self.phase or (p.phase == "links" and p.done - self.last_links >= 1000):
            self.phase = p.phase
            if p.phase == "links":
                self.last_links = p.done
            if p.phase != "done":
                print(f"{p.phase}: {safe_text(p.message)}", file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _with_sigint_cancel(fn: Callable[[Any], Any]) -> Any:
    """Run ``fn(cancel_event)``; the first Ctrl+C sets the event (a clean stop), the second interrupts."""
    import signal
    import threading

    cancel = threading.Event()
    previous = None

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        _err("\nStopping after the current step (press Ctrl+C again to quit at once).")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        return fn(cancel)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _in_use_elsewhere(path: Any) -> bool:
    """Whether another process holds the file open with SQLite (its connections keep POSIX locks on it).

    Call only while this process has no SQLite connection to the file: closing the probe's descriptor drops every
    POSIX lock this process holds on it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: cannot tell, so assume someone may be using it
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the probe's own lock


def _move_aside_if_damaged(profile: str, *, confirmed: bool = False) -> None:
    """A damaged cache is moved aside (never deleted) so that this sync can rebuild it; say where it went.

    Only when the damage is confirmed by a second look (a reader can briefly see an inconsistent file while another
    process recovers it) and no other process has the file open: moving a cache from under a running app would
    split its data between two files."""
    import time

    from . import paths
    from .cache import Cache, CacheCorrupt

    path = paths.home() / paths.validate_profile(profile) / "cache.sqlite"
    if not path.exists():
        return
    try:
        Cache.open(path).close()
        if not confirmed:
            return
        raise CacheCorrupt(path, "its integrity check failed")
    except CacheCorrupt as exc:
        if not confirmed:
            time.sleep(0.2)
            try:
                Cache.open(path).close()
                return  # it was a passing glitch
            except CacheCorrupt:
                pass
        if _in_use_elsewhere(path):
            raise CliError(f"The cache {path} looks damaged ({exc.reason}), but another linkdesk process (the app, "
                           "or another sync) has it open. Close it, then run this sync again: the damaged cache is "
                           "then moved aside (nothing is deleted) and rebuilt.") from None
        moved = Cache.move_aside(path)
        _err(f"{exc.reason[:1].upper()}{exc.reason[1:]}: the cache was damaged. It was moved to {moved} (nothing was "
             "deleted) and this sync rebuilds it.")


def _damaged_on_closer_look(profile: str) -> bool:
    """After a sync failed without a service error: is the cache itself damaged (integrity check)?"""
    from . import paths
    from .cache import Cache, CacheCorrupt, CacheError

    path = paths.home() / paths.validate_profile(profile) / "cache.sqlite"
    if not path.exists():
        return False
    try:
        with Cache.open(path) as cache:
            return bool(cache.integrity_problems())
    except CacheCorrupt:
        return True
    except CacheError:
        return False


def _run_sync(args: argparse.Namespace) -> Any:
    from . import paths

    session = _open_session(args)
    try:
        printer = _ProgressPrinter(sys.stderr)
        result = _with_sigint_cancel(lambda cancel: session.sync(progress=printer, cancel=cancel))
        printer.finish()
        if not args.demo:
            paths.set_last_profile(session.profile)
    finally:
        session.close()
    return result


def cmd_sync(args: argparse.Namespace) -> int:
    profile = _profile_of(args)
    _move_aside_if_damaged(profile)
    result = _run_sync(args)
    if not result.ok and not result.cancelled and result.error is None and _damaged_on_closer_look(profile):
        # Damage the quick open did not see (a broken page deep in the file): move it aside and rebuild once.
        _move_aside_if_damaged(profile, confirmed=True)
        result = _run_sync(args)
    print(safe_text(result.message))
    return EXIT_OK if result.ok else EXIT_FAIL


# --------------------------------------------------------------------------------------------------------------------
# links
# --------------------------------------------------------------------------------------------------------------------


def _link_record(row: Any, now: datetime) -> dict[str, Any]:
    return {
        "client_entity_id": row.key.client_entity_id,
        "client_entity_number": row.client_entity_number,
        "client_entity_name": row.client_entity_name,
        "type": row.key.type.value,
        "managing_customer_id": row.key.managing_customer_id,
        "managing_customer_name": row.managing_customer_name,
        "status": None if row.status is None else str(row.status),
        "stage": row.stage.value,
        "perspective": row.perspective.value,
        "is_bill_to_client": row.is_bill_to_client,
        "invited_at": _iso(row.invited_at),
        "last_modified": _iso(row.last_modified),
        "days_left": row.days_left(now),
        "name": row.name,
        "note": row.note,
    }


def _iter_rows(cache: Any, *, limit: int | None, page: int = 1000, **filters: Any) -> Any:
    offset = 0
    while limit is None or offset < limit:
        size = page if limit is None else min(page, limit - offset)
        rows = cache.inbox_page(offset=offset, limit=size, **filters)
        yield from rows
        if len(rows) < size:
            return
        offset += size


def cmd_links(args: argparse.Namespace) -> int:
    from .model import ClientLinkStatus, Perspective, Stage

    profile = _profile_of(args)
    now = (_demo_clock() if profile == "demo" else (lambda: datetime.now(timezone.utc)))()
    cache = _open_cache(profile)
    try:
        customer_id = _viewer_customer(cache, args)
        _say_cache_age(cache, now, profile)
        filters: dict[str, Any] = {"customer_id": customer_id, "now": now, "sort": args.sort}
        if args.stage:
            filters["stage"] = Stage(args.stage)
        if args.status:
            filters["status"] = [ClientLinkStatus(s) for s in args.status]
        if args.text:
            filters["text"] = args.text
        if args.perspective:
            filters["perspective"] = Perspective(args.perspective)
        rows = list(_iter_rows(cache, limit=args.limit, **filters))
        total = cache.inbox_count(**{k: v for k, v in filters.items() if k != "sort"})
        synced = cache.last_ok_sync()
    finally:
        cache.close()

    if args.format == "json":
        doc = {"profile": profile, "customer_id": customer_id, "now": _iso(now),
               "synced_at": _iso(synced.finished_at) if synced else None, "count": len(rows),
               "links": [_link_record(r, now) for r in rows]}
        sys.stdout.write(json_text(doc) + "\n")
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\r\n")
        w.writerow(LINK_FIELDS)
        for r in rows:
            rec = _link_record(r, now)
            w.writerow([csv_cell("" if rec[f] is None else rec[f]) for f in LINK_FIELDS])
    else:
        if not rows:
            _err("No links match.")
        else:
            table = []
            for r in rows:
                days = r.days_left(now)
                table.append([
                    r.client_entity_name or "", r.client_entity_number or str(r.key.client_entity_id),
                    "customer" if r.key.type.value == "CustomerLink" else "account",
                    str(r.status or ""), r.stage.label,
                    "" if r.is_bill_to_client is None else ("client" if r.is_bill_to_client else "agency"),
                    fmt_age(now - r.invited_at) if r.invited_at else "",
                    "" if days is None else str(days),
                    r.managing_customer_name or str(r.key.managing_customer_id),
                ])
            print_table(["CLIENT", "NUMBER", "TYPE", "STATUS", "STAGE", "PAYS", "INVITED", "DAYS LEFT", "AGENCY"],
                        table, limits=[32, 14, 8, 16, 12, 6, 16, 9, 24])
    if len(rows) < total:
        _err(f"Showing {len(rows):,} of {total:,} links; raise --limit to see more.")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# Resolving an ACCOUNT argument to links
# --------------------------------------------------------------------------------------------------------------------


def _find_links(cache: Any, customer_id: int, ident: str, now: datetime) -> list[Any]:
    """StoredLinks matching an account id, number or name (exact first, then unique substring)."""
    from .model import LinkType

    ident = ident.strip()
    if not ident:
        raise CliError("Give an account id, number or name.")
    if ident.isdigit() and ident.isascii():
        keys = {l.key for l in cache.links_for_entity(int(ident))} if 0 < int(ident) < 2**63 else set()
    else:
        rows = cache.inbox_page(customer_id=customer_id, text=ident, limit=2000, now=now)
        low = ident.lower()
        exact = {r.key for r in rows if (r.client_entity_number or "").lower() == low
                 or (r.client_entity_name or "").lower() == low}
        if exact:
            keys = exact
        else:
            entities = {(r.key.client_entity_id, r.key.type) for r in rows
                        if low in (r.client_entity_name or "").lower() or low in (r.client_entity_number or "").lower()}
            if len(entities) > 1:
                names = sorted({safe_text(r.client_entity_name or r.client_entity_number, 40) for r in rows})[:8]
                raise CliError(f"{ident!r} matches several clients ({', '.join(names)}); give the account id or "
                               "number.")
            keys = {r.key for r in rows if (r.key.client_entity_id, r.key.type) in entities}
    stored = [s for s in (cache.stored_link(k) for k in sorted(keys, key=lambda k: (k.type.value, k[1]))) if s]
    # account links first: "ACCOUNT" means an account unless only a customer link matches
    stored.sort(key=lambda s: (s.link.link_type != LinkType.AccountLink, s.link.managing_customer_id))
    return stored


def _no_link(ident: str, profile: str) -> CliError:
    return CliError(f"The cache has no link for {ident!r}. Check the id, number or name, or run `linkdesk sync"
                    f"{' --demo' if profile == 'demo' else ''}` to refresh the cache.")


# --------------------------------------------------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    from . import rules

    profile = _profile_of(args)
    now = (_demo_clock() if profile == "demo" else (lambda: datetime.now(timezone.utc)))()
    cache = _open_cache(profile)
    try:
        customer_id = _viewer_customer(cache, args)
        _say_cache_age(cache, now, profile)
        found = _find_links(cache, customer_id, args.account, now)
        if not found:
            raise _no_link(args.account, profile)
        for n, stored in enumerate(found):
            link = stored.link
            if n:
                print()
            who = safe_text(link.managing_customer_name or f"customer {link.managing_customer_id}", 40)
            print(f"{safe_text(rules.entity_label(link), 70)} — {link.link_type.value} managed by {who}: "
                  f"{link.status}")
            print(f"  {rules.status_text(link.status)}")
            events = cache.timeline(link.key)
            if not events:
                print("  (no events recorded)")
                continue
            rows = []
            for e in events:
                change = ""
                if e.kind == "change":
                    change = (f"{e.from_status or 'first seen'} → {e.to_status}" if e.to_status is not None
                              else f"{e.from_status} → no longer returned")
                elif e.kind == "intent":
                    change = f"about to request {e.to_status or ''}".rstrip()
                elif e.kind == "outcome":
                    change = f"result: {e.to_status}" if e.to_status is not None else "result"
                rows.append([fmt_time(e.at), e.kind, e.source, change,
                             "" if e.actor_user_id is None else f"user {e.actor_user_id}", e.detail or ""])
            print_table(["WHEN", "KIND", "SOURCE", "CHANGE", "BY", "DETAIL"], rows,
                        limits=[22, 8, 18, 40, 16, 70])
    finally:
        cache.close()
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# invite
# --------------------------------------------------------------------------------------------------------------------


def _draft_from_flags(args: argparse.Namespace) -> Any:
    from .bulk import parse_date
    from .model import ClientLink, CustomerLinkPermission, LinkType

    link_type = LinkType.CustomerLink if args.type == "customer" else LinkType.AccountLink
    ident = args.account.strip()
    kw: dict[str, Any] = {"type": link_type}
    if ident.isdigit() and ident.isascii():
        kw["client_entity_id"] = int(ident)
    else:
        kw["client_entity_number"] = ident
    if args.bill_to:
        kw["is_bill_to_client"] = args.bill_to == "client"
    if args.permission:
        kw["customer_link_permission"] = CustomerLinkPermission(args.permission)
    if args.name is not None:
        kw["name"] = args.name
    if args.note is not None:
        kw["note"] = args.note
    if args.start_date:
        start = parse_date(args.start_date)
        if start is None:
            raise CliError(f"--start-date must be a date like 2025-11-30, not {args.start_date!r}.")
        kw["start_date"] = start
    if args.suppress_notification:
        kw["suppress_notification"] = True
    return ClientLink(**kw)


def cmd_invite(args: argparse.Namespace) -> int:
    from . import bulk, rules

    if args.csv and args.account:
        raise CliError("Give either --account or --csv, not both.")
    if not args.csv and not args.account:
        raise CliError("Give the client with --account ID|NUMBER (and --bill-to client|agency), or a file with "
                       "--csv FILE.")
    if args.csv:
        try:
            parsed = bulk.read_file(args.csv)
        except bulk.BulkFileError as exc:
            raise CliError(str(exc)) from None
        rows = [(f"line {r.line}", r) for r in parsed.rows]
    else:
        draft = _draft_from_flags(args)
        rows = [("1", bulk.BulkRow(0, {"client_id": args.account}, draft))]

    session = _open_session(args)
    try:
        agency = session.identity().customer_id
        checked = bulk.check(bulk.BulkFile((), tuple(r for _, r in rows)), session.check_invitation, agency).rows
        labels = [label for label, _ in rows]
        table: list[list[str]] = []
        failed = 0
        if args.dry_run:
            for label, row in zip(labels, checked):
                table.append([label, row.label, "ready" if row.ok else "refused",
                              "will be sent" if row.ok else row.verdict])
                failed += not row.ok
            print_table(["ROW", "CLIENT", "VERDICT", "DETAIL"], table, limits=[10, 24, 8, None])
            print(f"Dry run: {len(checked) - failed} of {len(checked)} invitation(s) would be sent; nothing was sent.")
            return EXIT_FAIL if failed else EXIT_OK
        ready = [(i, r) for i, r in enumerate(checked) if r.ok]
        printer = _ProgressPrinter(sys.stderr)

        def progress(done: int, total: int) -> None:
            from .sync import SyncProgress

            if total > 10:  # one batch needs no progress report
                printer(SyncProgress("invite", done, total, f"Handled {done} of {total}."))

        results = _with_sigint_cancel(
            lambda cancel: session.invite([r.draft for _, r in ready], progress=progress, cancel=cancel))
        printer.finish()
        by_index = {i: res for (i, _), res in zip(ready, results)}
        for i, (label, row) in enumerate(zip(labels, checked)):
            res = by_index.get(i)
            if res is None:
                table.append([label, row.label, "failed", row.verdict])
                failed += 1
            else:
                table.append([label, row.label, "sent" if res.ok else "failed", res.message])
                failed += not res.ok
        print_table(["ROW", "CLIENT", "RESULT", "DETAIL"], table, limits=[10, 24, 7, None])
        print(f"{len(checked) - failed} of {len(checked)} invitation(s) sent.")
    finally:
        session.close()
    return EXIT_FAIL if failed else EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# cancel / unlink / accept / decline
# --------------------------------------------------------------------------------------------------------------------


def cmd_update(args: argparse.Namespace) -> int:
    from .rules import Action

    action = Action(args.command)
    session = _open_session(args)
    try:
        cache = session.cache()
        now = session.clock()
        agency = int(cache.meta_get("customer_id") or session.identity().customer_id)
        found = _find_links(cache, agency, args.account, now)
        if args.agency:
            found = [s for s in found if s.link.managing_customer_id == int(args.agency)]
        elif action in (Action.CANCEL, Action.UNLINK):
            ours = [s for s in found if s.link.managing_customer_id == session.identity().customer_id]
            found = ours or found  # an agency cancels or unlinks its own links
        if not found:
            raise _no_link(args.account, session.profile)
        if len({s.link.managing_customer_id for s in found}) > 1:
            options = ", ".join(f"{safe_text(s.link.managing_customer_name, 30)} ({s.link.managing_customer_id})"
                                for s in found[:6])
            raise CliError(f"{args.account!r} is linked with several agencies ({options}); choose one with "
                           "--agency ID.")
        stored = found[0]
        if args.as_user:
            session.switch_identity(int(args.as_user), remember=False)
        elif session.is_demo and action in (Action.ACCEPT, Action.DECLINE):
            ident = session.client_identity(stored.link.key)
            if ident is None:
                raise CliError("linkdesk does not know the client's Super Admin for this account; give one with "
                               "--as USER_ID (see `linkdesk simulator users`).")
            session.switch_identity(ident.user_id, remember=False)
        me = session.identity()
        _err(f"Acting as {safe_text(me.label, 80)}.")
        result = session.act(action, stored.link.key, args.note)
    finally:
        session.close()
    print(safe_text(result.message))
    for v in result.violations[1:]:
        print(f"  also: {safe_text(v.message)}")
    return EXIT_OK if result.ok else EXIT_FAIL


# --------------------------------------------------------------------------------------------------------------------
# auth
# --------------------------------------------------------------------------------------------------------------------


def cmd_auth_login(args: argparse.Namespace) -> int:
    from . import credentials, paths
    from .api import ApiError, CustomerManagementApi
    from .model import Role

    token = args.developer_token or os.environ.get(credentials.ENV_DEVELOPER_TOKEN)
    client_id = args.client_id or os.environ.get(credentials.ENV_CLIENT_ID)
    grant = None
    if args.simulator:
        # A running `linkdesk simulator serve`: its consent page and token endpoint are on 127.0.0.1.
        from .simulator.auth import DEFAULT_CLIENT_ID, TOKEN_PATH, base_url_of, make_authorization
        from .simulator.server import SERVICE_PATH

        try:
            base = base_url_of(args.simulator)
        except Exception:
            raise CliError(f"{args.simulator!r} is not a simulator address; use the endpoint `linkdesk simulator "
                           "serve` printed, e.g. http://127.0.0.1:8080.") from None
        credentials.check_token_url(base + TOKEN_PATH)
        token = token or "BBD37VB98"
        client_id = client_id or DEFAULT_CLIENT_ID
        args.service_url, args.token_url = base + SERVICE_PATH, base + TOKEN_PATH
        grant = make_authorization(base, client_id=client_id)
    if not token:
        raise CliError(f"Give your developer token with --developer-token or the {credentials.ENV_DEVELOPER_TOKEN} "
                       "environment variable (the sandbox's is BBD37VB98).")
    if not client_id:
        raise CliError(f"Give your app's client id with --client-id or the {credentials.ENV_CLIENT_ID} environment "
                       "variable.")
    try:
        flow = credentials.begin_login(client_id, args.environment, token_url=args.token_url, grant=grant)
        print("Open this address in a browser and sign in to Microsoft Advertising:\n")
        print(f"  {flow.consent_url}\n")
        print("After signing in, the browser shows a blank page; copy its whole address from the address bar.")
        try:
            redirect = input("Paste the address here: ")
        except EOFError:
            raise CliError("No address was given; run `linkdesk auth login` again and paste the address the browser "
                           "ended on.") from None
        flow.finish(redirect)
    except credentials.CredentialsError as exc:
        raise CliError(str(exc)) from None
    api = CustomerManagementApi(developer_token=token, authentication=flow.grant, environment=args.environment,
                                location=args.service_url)
    try:
        user, roles = api.get_user(None)
        try:
            customer = api.get_customer(user.customer_id)
            customer_name = customer.name
        except ApiError:
            customer_name = ""
    except ApiError as err:
        raise CliError(f"Signed in, but Microsoft Advertising refused the first call: {err.user_message}") from None
    finally:
        api.close()
    role = user.role_at(user.customer_id)
    record = credentials.SignIn(
        profile=credentials.SignIn.profile_for(user.customer_id), environment=args.environment, client_id=client_id,
        customer_id=user.customer_id, customer_name=customer_name, user_id=user.id, user_name=user.user_name,
        signed_in_at=_iso(datetime.now(timezone.utc)) or "", service_url=args.service_url, token_url=args.token_url,
        role_id=int(role) if role is not None else None)
    stored = credentials.save(record, credentials.Secrets(flow.refresh_token, token))
    paths.set_last_profile(stored.profile)
    where = "the system keyring" if stored.store == "keyring" else "a private file (mode 0600)"
    role_label = role.label if isinstance(role, Role) else "unknown role"
    print(f"Signed in as {safe_text(user.user_name, 60)} ({role_label} at {safe_text(customer_name, 60) or 'customer'} "
          f"{user.customer_id}). Profile {stored.profile}; the sign-in is kept in {where}.")
    print("Next: `linkdesk sync` to fill the cache, then `linkdesk` to open the app.")
    return EXIT_OK


def cmd_auth_status(args: argparse.Namespace) -> int:
    from . import credentials, paths

    known = credentials.profiles()
    if not known:
        print("Not signed in. Sign in with `linkdesk auth login`, or try `linkdesk demo`.")
        return EXIT_FAIL
    last = paths.last_profile()
    for r in known:
        mark = "*" if r.profile == last else " "
        where = "keyring" if r.store == "keyring" else "file"
        endpoint = f", endpoint {r.service_url}" if r.service_url else ""
        print(f"{mark} {r.profile}: {safe_text(r.user_name, 60)} at {safe_text(r.customer_name, 60)} "
              f"(customer {r.customer_id}), {r.environment}{endpoint}, signed in {r.signed_in_at}, "
              f"secrets in the {where}")
    return EXIT_OK


def cmd_auth_logout(args: argparse.Namespace) -> int:
    from . import credentials, paths

    known = [r.profile for r in credentials.profiles()]
    if args.all:
        targets = known
    elif args.profile:
        targets = [paths.validate_profile(args.profile)]
    else:
        last = paths.last_profile()
        targets = [last] if last in known else known[:1]
    if not targets:
        print("Not signed in; nothing to do.")
        return EXIT_OK
    for p in targets:
        if credentials.delete(p):
            print(f"Signed out of {p}. Its cache is kept in {paths.home() / p}; delete that folder to remove it.")
        else:
            print(f"There was no sign-in for {p}.")
    if paths.last_profile() in targets:
        data = paths.read_config()
        data.pop("last_profile", None)
        paths.write_config(data)
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# simulator, demo, bare linkdesk
# --------------------------------------------------------------------------------------------------------------------


def cmd_simulator(args: argparse.Namespace) -> int:
    from .simulator import cli as sim_cli

    code = sim_cli.main(list(args.sim_args))
    return int(code or 0)


def _tui() -> Any:
    try:
        from linkdesk.tui import app
    except ImportError:
        raise CliError("The terminal app is not installed; reinstall linkdesk with its dependencies "
                       "(pip install linkdesk).") from None
    return app


def cmd_demo(args: argparse.Namespace) -> int:
    return int(_tui().run_demo(fresh=args.fresh) or 0)


def cmd_default(args: argparse.Namespace) -> int:
    from . import credentials, paths

    profile = paths.last_profile()
    if profile is None:
        known = credentials.profiles()
        profile = known[0].profile if known else None
    if profile is None:
        print("linkdesk has no signed-in profile yet.\n"
              "  Sign in to Microsoft Advertising:        linkdesk auth login\n"
              "  Or try it with the built-in simulator:  linkdesk demo")
        return EXIT_FAIL
    app = _tui()
    if profile == paths.DEMO_PROFILE:
        return int(app.run_demo() or 0)
    return int(app.run(profile) or 0)


# --------------------------------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with errors that end in a hint (exit 2 as usual)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}. See `{self.prog} --help`.\n")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    if n > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is too large for an id or a count")
    return n


def _add_profile_options(p: argparse.ArgumentParser, *, demo_help: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--demo", action="store_true", help=demo_help)
    g.add_argument("--profile", metavar="NAME", help="a live profile (live-<customer id>; default: the last used)")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("linkdesk")
    except PackageNotFoundError:
        ver = "unknown"
    parser = _Parser(
        prog="linkdesk",
        description="Manage Microsoft Advertising client links from the keyboard: the agency's hierarchy, the link "
                    "inbox, invitations, and an offline cache. Without a command, opens the app on the last profile.",
        epilog="Exit codes: 0 success, 1 failure to act on, 2 usage error. LINKDESK_HOME moves all data; "
               "LINKDESK_DEBUG=1 shows tracebacks of unexpected errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"linkdesk {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo_help = "use the demo profile with the built-in simulator (started in this process on 127.0.0.1)"
    offline_demo_help = "use the demo profile's cache"

    p = sub.add_parser("sync", help="sync the cache with the service, with a progress bar",
                       description="Read the hierarchy and every client link into the local cache. The previous "
                                   "cache stays intact if the sync fails or is interrupted (Ctrl+C stops cleanly).")
    _add_profile_options(p, demo_help=demo_help)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("links", help="list links from the cache (works offline)",
                       description="List client links from the local cache; nothing is read from the network.",
                       epilog=LINKS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_profile_options(p, demo_help=offline_demo_help)
    p.add_argument("--stage", choices=STAGES, help="only links in this inbox stage")
    p.add_argument("--status", choices=STATUSES, action="append", metavar="STATUS",
                   help="only links with this status (repeatable): " + ", ".join(STATUSES))
    p.add_argument("--text", metavar="T", help="only links whose client, agency, name or note contains T")
    p.add_argument("--perspective", choices=("sent", "received"), help="sent by your customer or received by it")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N links")
    p.add_argument("--sort", choices=("client", "status", "age", "days_left", "last_change"), default="client",
                   help="order (default client)")
    p.add_argument("--customer", type=_positive, metavar="ID", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_links)

    p = sub.add_parser("history", help="the timeline of the link(s) of one account (works offline)",
                       description="Every status change linkdesk observed for the links of ACCOUNT, with time and "
                                   "source (a sync, or one of your actions), read from the cache.")
    _add_profile_options(p, demo_help=offline_demo_help)
    p.add_argument("account", metavar="ACCOUNT", help="account (or customer) id, number, or name")
    p.add_argument("--customer", type=_positive, metavar="ID", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("invite", help="send invitations (one, or many from a CSV file)",
                       description="Invite a client to be managed by your agency. Every invitation is checked "
                                   "first; nothing invalid is sent. Exit 1 if any invitation failed.",
                       epilog="CSV columns (header row required; UTF-8, BOM allowed): type, client_account_id, "
                              "client_account_number, bill_to (client|agency), permission, name, note, start_date, "
                              "suppress_notification. At most 10,000 rows.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_profile_options(p, demo_help=demo_help)
    p.add_argument("--account", metavar="ID|NUMBER", help="the client account (or customer, with --type customer)")
    p.add_argument("--bill-to", choices=("client", "agency"), help="who pays (required for account links)")
    p.add_argument("--type", choices=("account", "customer"), default="account", help="link type (default account)")
    p.add_argument("--permission", choices=("Administrative", "Standard"), help="customer links: the permission")
    p.add_argument("--name", help="the link's name (at most 40 characters)")
    p.add_argument("--note", help="a message to the client")
    p.add_argument("--start-date", metavar="YYYY-MM-DD", help="when the link starts (default now)")
    p.add_argument("--suppress-notification", action="store_true", help="send the client no email")
    p.add_argument("--csv", metavar="FILE", help="invitations from a CSV file")
    p.add_argument("--dry-run", action="store_true", help="check only; send nothing")
    p.set_defaults(func=cmd_invite)

    verbs = {"cancel": "cancel a pending invitation", "unlink": "request the unlink of an active link",
             "accept": "accept an invitation (client side)", "decline": "decline an invitation (client side)"}
    for verb, text in verbs.items():
        p = sub.add_parser(verb, help=text,
                           description=f"{text[0].upper()}{text[1:]}. The link is read from the service first, "
                                       "checked, then sent back whole with the new status.")
        _add_profile_options(p, demo_help=demo_help)
        p.add_argument("account", metavar="ACCOUNT", help="account (or customer) id, number, or name")
        p.add_argument("--note", help="a note sent with the update")
        p.add_argument("--agency", type=_positive, metavar="ID", help="the managing customer, when several link it")
        p.add_argument("--as", dest="as_user", type=_positive, metavar="USER_ID",
                       help="demo: act as this simulator user (accept/decline default to the client's Super Admin)")
        p.set_defaults(func=cmd_update)

    auth = sub.add_parser("auth", help="sign in to Microsoft Advertising, show or remove sign-ins",
                          description="Live credentials through the official SDK's OAuth flow. Tokens are never "
                                      "printed; the refresh token is kept in the system keyring, or in a file with "
                                      "mode 0600.")
    asub = auth.add_subparsers(dest="auth_command", metavar="ACTION", parser_class=_Parser)
    auth.set_defaults(func=lambda a: _usage(auth))
    p = asub.add_parser("login", help="sign in (prints a consent address, reads back the redirect address)")
    p.add_argument("--environment", choices=("production", "sandbox"), default="production")
    p.add_argument("--developer-token", metavar="TOKEN", help="or LINKDESK_DEVELOPER_TOKEN")
    p.add_argument("--client-id", metavar="ID", help="your registered app's client id, or LINKDESK_CLIENT_ID")
    p.add_argument("--service-url", metavar="URL",
                   help="a different Customer Management endpoint (e.g. the built-in simulator's)")
    p.add_argument("--token-url", metavar="URL", help="a different OAuth token endpoint (e.g. the simulator's)")
    p.add_argument("--simulator", metavar="URL",
                   help="sign in to a running `linkdesk simulator serve` at URL instead of Microsoft (sets the "
                        "service and token addresses, the sandbox developer token and a client id)")
    p.set_defaults(func=cmd_auth_login)
    p = asub.add_parser("status", help="list sign-ins")
    p.set_defaults(func=cmd_auth_status)
    p = asub.add_parser("logout", help="forget a sign-in (the cache is kept)")
    p.add_argument("--profile", metavar="NAME")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_auth_logout)

    p = sub.add_parser("simulator", help="the built-in simulator: serve | users | advance | reset",
                       description="The built-in Customer Management simulator. Run `linkdesk simulator --help` "
                                   "for its commands.", add_help=False)
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("demo", help="open the app against the built-in simulator",
                       description="Open the terminal app against the built-in simulator (state kept between runs).")
    p.add_argument("--fresh", action="store_true", help="reset the simulator's world and the demo cache first")
    p.set_defaults(func=cmd_demo)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linkdesk`` console script."""
    debug = os.environ.get(ENV_DEBUG, "") not in ("", "0")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
    if debug:
        import logging

        logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
        logging.getLogger("linkdesk").setLevel(logging.DEBUG)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulator"]:
        # The simulator has its own parser (and its own --help); argparse's REMAINDER would not pass options through.
        return _guarded(lambda: cmd_simulator(argparse.Namespace(sim_args=argv[1:])), debug)
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = _undecodable_argument(args)
    if bad is not None:
        _err(f"linkdesk: the argument {bad!r} holds bytes that are not text in your terminal's encoding; type it "
             "again (or check the terminal's encoding settings).")
        return EXIT_USAGE
    func = getattr(args, "func", None) or cmd_default
    return _guarded(lambda: func(args), debug)


#: Arguments that are file names: any bytes the file system allows are fine there.
_PATH_ARGUMENTS = {"csv", "state", "sim_args"}


def _undecodable_argument(args: argparse.Namespace) -> str | None:
    """The first text argument Python could only decode with surrogate escapes (bytes that are not UTF-8)."""
    for name, value in vars(args).items():
        if name in _PATH_ARGUMENTS or callable(value):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and any("\ud800" <= ch <= "\udfff" for ch in item):
                return item.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def _guarded(run: Callable[[], Any], debug: bool) -> int:
    """Run a command; turn every failure into one sentence on stderr and an exit code."""
    try:
        return int(run() or 0)
    except CliError as exc:
        _err(f"linkdesk: {safe_text(str(exc))}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("linkdesk: interrupted.")
        return EXIT_FAIL
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): not an error worth a message
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the promise: never a traceback
        message = _known_error_message(exc)
        if debug:
            import traceback

            traceback.print_exc()
        _err(f"linkdesk: {safe_text(message)}")
        return EXIT_FAIL


def _known_error_message(exc: BaseException) -> str:
    """One sentence for an exception that escaped a command."""
    for attr in ("user_message",):
        msg = getattr(exc, attr, None)
        if isinstance(msg, str) and msg:
            return msg
    names = {c.__name__ for c in type(exc).__mro__}
    if "CacheCorrupt" in names:
        return f"{exc} Run `linkdesk sync` (with --demo for the demo) to do that."
    if names & {"CacheError", "CredentialsError", "SessionError", "BulkFileError", "DurationError", "StateError"}:
        return str(exc)
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename or exc}. Check the file's owner and mode."
    if isinstance(exc, OSError) and exc.errno == 28:
        return "The disk is full; free some space and try again."
    return (f"An unexpected error stopped linkdesk ({type(exc).__name__}). Run again with LINKDESK_DEBUG=1 to see "
            "the details, and report it if it keeps happening.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
