"""The linkdesk Textual app, and the entry points ``linkdesk demo`` and ``linkdesk`` call.

Start-up is cache first: the first frame is drawn from the profile's SQLite cache (standard ``sqlite3`` only), with
the inbox's first page already read. Only once that frame is on screen does the app start a thread worker that
creates the Session (which starts the simulator and imports the SDK): that worker would otherwise hold the GIL and
delay the frame. The clients tree is built when it is first shown (1). A background sync follows, with progress in
the status line and ``esc`` to stop it. Everything that may block runs in a thread worker and reports back with a
Message; one ``Worker.StateChanged`` handler turns any worker failure into an error dialog.

``$LINKDESK_TIMINGS`` (off by default) names a file to which the app appends one JSON line per start-up milestone:
``app_init`` (everything imported, the app being built), ``first_frame`` (the first frame on the terminal),
``inbox_rows`` (the first frame showing the inbox's first page from the cache), ``session_ready`` and
``sync_finished``. Each line holds ``event``, ``monotonic`` (``time.monotonic()``: comparable between processes of
one machine, so a launcher can subtract its own spawn time), ``cpu_s`` (CPU seconds of the process so far, all
threads), ``rss_mb`` (resident memory, Linux) and, for ``inbox_rows``, ``rows``. bench/bench_tui.py uses it to time
``linkdesk demo`` exactly as installed; a file that cannot be written is ignored (a timing aid never stops the app).
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.worker import Worker, WorkerState

from linkdesk.core import paths, rules
from linkdesk.core.model import Actor, ClientLink, LinkKey, Perspective, Role

from .commands import LinkdeskCommands, PaletteCommand
from .messages import InviteRequested, LinkActionRequested, OpenLink
from .source import link_context
from .text import action_billing, clean, join
from .widgets.status_line import StatusInfo

if TYPE_CHECKING:  # the real modules are imported lazily, off the first-frame path
    from linkdesk.core.session import Session

    from .screens.main import MainScreen

Clock = Callable[[], datetime]

#: Clock steps offered in demo mode: (duration for Session.advance, label).
ADVANCE_STEPS: tuple[tuple[str, str], ...] = (("6h", "+6 hours"), ("1d", "+1 day"), ("31d", "+31 days"))

#: Environment variable naming the start-up timings file (see the module docstring).
ENV_TIMINGS = "LINKDESK_TIMINGS"
#: How many identities the palette and the Act as… dialog offer (demo).
IDENTITY_CHOICES = 200
#: Start the session this long after the first frame even if the inbox's first page has not been shown by then.
SESSION_START_FALLBACK = 2.0


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Timings:
    """Start-up milestones as JSON lines in ``$LINKDESK_TIMINGS`` (each event once); a no-op when it is unset."""

    def __init__(self, path: str | None) -> None:
        self._path = path or None
        self.seen: set[str] = set()

    def __bool__(self) -> bool:
        return self._path is not None

    def emit(self, event: str, **data: Any) -> None:
        if event in self.seen:
            return
        self.seen.add(event)
        if self._path is None:
            return
        line = {"event": event, "monotonic": time.monotonic(), "cpu_s": round(time.process_time(), 4),
                "rss_mb": _rss_mb(), **data}
        try:
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError:
            self._path = None  # a timing aid never stops the app


def _rss_mb() -> float | None:
    """Resident memory of this process in MB (10^6 bytes), from /proc (None where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) * 1024 / 1e6, 1)
    except (OSError, ValueError):
        return None
    return None


# ------------------------------------------------------------------------------------------------------------------
# Messages from workers
# ------------------------------------------------------------------------------------------------------------------


class SessionReady(Message):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session


class SessionFailed(Message):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class SyncProgressed(Message):
    def __init__(self, progress: Any) -> None:
        super().__init__()
        self.progress = progress


class SyncFinished(Message):
    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class ActionFinished(Message):
    def __init__(self, action: rules.Action, key: LinkKey, result: Any) -> None:
        super().__init__()
        self.action = action
        self.key = key
        self.result = result


class IdentitySwitched(Message):
    def __init__(self, identity: Any) -> None:
        super().__init__()
        self.identity = identity


class ClockAdvanced(Message):
    def __init__(self, summary: str) -> None:
        super().__init__()
        self.summary = summary


# ------------------------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------------------------


def user_message(error: BaseException) -> str:
    """The sentence to show for a failure: the error's own user message when it has one, never a traceback."""
    text = getattr(error, "user_message", None)
    if text:
        return clean(text, max_chars=600)
    if isinstance(error, (ConnectionError, TimeoutError)):
        return "The service could not be reached; check the connection and try again (s syncs again)."
    detail = clean(str(error), max_chars=300)
    kind = type(error).__name__
    return f"Something went wrong ({kind}{': ' + detail if detail else ''}). Try again; if it keeps happening, " \
           "report it with what you were doing."


class LinkdeskApp(App[int]):
    """The terminal app. Give it a ``session`` (tests) or a ``session_factory`` (called in a thread worker).

    ``clock`` is used until the session exists (then the session's clock, which in demo mode is the simulator's
    virtual time); ``home`` overrides the data root (``LINKDESK_HOME``); ``profile`` names the cache to draw first.
    """

    CSS_PATH = "app.tcss"
    TITLE = "linkdesk"
    COMMANDS = {LinkdeskCommands}

    BINDINGS = [
        Binding("1", "show('clients')", "Clients tree", show=False, id="app.clients"),
        Binding("2", "show('inbox')", "Link inbox", show=False, id="app.inbox"),
        Binding("n", "new_invitation", "Invite", id="app.invite"),
        Binding("b", "bulk_invitation", "Bulk invite", show=False, id="app.bulk"),
        Binding("s", "sync", "Sync", id="app.sync"),
        Binding("escape", "stop_sync", "Stop sync", id="app.stop_sync"),
        Binding("i", "choose_identity", "Act as", id="demo.identity"),
        Binding("plus,equals_sign", "choose_advance", "Clock", id="demo.advance"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    #: What the status line shows. A ``var``, not a ``reactive``: the status line watches it, and a reactive of the
    #: app would also repaint the whole screen on every change (ten times a second during a sync).
    status: var[StatusInfo] = var(StatusInfo, always_update=True, init=False)

    #: Freeze the garbage collector's view of what start-up built, once the session is ready (see _session_ready).
    #: Off in the test suite, whose processes build hundreds of apps (each freeze would keep the garbage of those
    #: before it for good).
    FREEZE_GC = True

    def __init__(
        self,
        session_factory: Callable[[], "Session"] | None = None,
        *,
        session: "Session | None" = None,
        clock: Clock | None = None,
        home: Path | str | None = None,
        profile: str = paths.DEMO_PROFILE,
        is_demo: bool | None = None,
        fresh: bool = False,
        sync_on_start: bool = True,
    ) -> None:
        self.timings = _Timings(os.environ.get(ENV_TIMINGS))
        self.timings.emit("app_init")
        super().__init__()
        if session is None and session_factory is None:
            raise ValueError("LinkdeskApp needs a session or a session_factory.")
        self._factory = session_factory
        self.session: "Session | None" = session
        self._clock: Clock = clock or _utcnow
        self._home = Path(home) if home is not None else None
        self.profile = session.profile if session is not None else profile
        self.is_demo = session.is_demo if session is not None else (
            is_demo if is_demo is not None else profile == paths.DEMO_PROFILE)
        self._fresh = fresh
        self._sync_on_start = sync_on_start
        self.cache: Any = None
        self.identity: Any = None
        self._sync_cancel: threading.Event | None = None
        self._local = threading.local()
        self._syncing = False
        self.main: "MainScreen | None" = None
        #: Set once the first inbox page is on screen (or given up on): the session follows.
        self._started = False
        self._gc_frozen = False
        #: Whether the garbage collector was paused for start-up and is to run again after the first frame (see
        #: ``_pause_gc``; set by the entry points, not by the tests' apps).
        self._resume_gc = False
        self._rows_timer: Any = None

    # -- time and who -------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The time the rules use: the session's clock (the simulator's virtual time in demo mode) once it exists."""
        session = self.session
        if session is not None:
            return session.clock()
        return self._clock()

    def thread_cache(self) -> Any:
        """A cache for the calling thread: the screens read on the main thread, their queries run in workers."""
        if threading.current_thread() is threading.main_thread() and self.cache is not None:
            return self.cache
        if self.session is not None:
            return self.session.cache()
        cache = getattr(self._local, "cache", None)
        if cache is None:
            from linkdesk.core.cache import Cache

            cache = self._local.cache = Cache.open(self._cache_path())
        return cache

    @property
    def actor(self) -> Actor | None:
        return self.identity.actor() if self.identity is not None else None

    # -- start-up -------------------------------------------------------------------------------------------------

    def _cache_path(self) -> Path:
        if self._home is not None:
            return self._home / self.profile / "cache.sqlite"
        return paths.cache_path(self.profile)

    async def on_mount(self) -> None:
        from .screens.main import MainScreen

        self._apply_keymap()
        self.main = MainScreen(self.now)
        await self.push_screen(self.main)
        # This method runs inside Textual's start-up batch, which draws nothing: the first frame on the terminal is
        # the refresh after it, which a callback queued on the app (not the screen, whose callbacks run during the
        # batch) waits for.
        self.call_after_refresh(self.timings.emit, "first_frame")
        message = "Opening the cache…" if self.session is not None else (
            "Starting the simulator…" if self.is_demo else "Connecting to Microsoft Advertising…")
        self.status = StatusInfo(profile=self.profile, is_demo=self.is_demo, message=message)
        waiting = self._first_frame()
        if waiting and not self._first_rows_read():
            self._rows_timer = self.set_interval(1 / 60, self._watch_first_rows)
        if waiting and self.session is None:
            # Creating the session waits for the inbox's first page (see _first_rows_shown), or this long.
            self.set_timer(SESSION_START_FALLBACK, self._start_rest)
        else:
            self._start_rest()

    def _gc_resume(self) -> None:
        """Let the garbage collector run again, if it was paused for start-up (see ``_pause_gc``)."""
        if self._resume_gc:
            self._resume_gc = False
            gc.enable()

    def _start_rest(self) -> None:
        """What start-up does once the inbox's first page is on screen: the session."""
        self._gc_resume()
        if self._started:
            return
        self._started = True
        if self.session is not None:
            self.post_message(SessionReady(self.session))
        else:
            self._create_session()

    def _first_rows_shown(self) -> None:
        """Called after the refresh that follows the inbox's first result: that frame shows its rows."""
        if self.main is not None:
            self.timings.emit("inbox_rows", rows=self.main.inbox.link_list.row_count)
        self._start_rest()

    def _first_rows_read(self) -> bool:
        """Whether the inbox holds its first query result (usually read before the first frame, see
        ``_first_frame``); if so, ``_first_rows_shown`` follows the refresh that draws it."""
        inbox = self.main.inbox if self.main is not None else None
        if inbox is None or inbox.query_state is None or not inbox.settled:
            return False
        self.call_after_refresh(self._first_rows_shown)
        return True

    def _watch_first_rows(self) -> None:
        """Until the inbox shows its first query result, when it was read in the background (checked at the frame
        rate: the inbox's messages stay in the inbox)."""
        if self._rows_timer is not None and self._first_rows_read():
            self._rows_timer.stop()
            self._rows_timer = None

    def _apply_keymap(self) -> None:
        keymap = paths.read_config().get("keymap")
        if isinstance(keymap, dict):
            self.set_keymap({str(k): str(v) for k, v in keymap.items()})

    def _identity_from_cache(self) -> Any:
        """Who acted last, as the cache knows it (the session's acting user, else the user the last sync ran as):
        enough to draw the first frame before the session exists, and offline."""
        cache = self.cache
        try:
            observer_customer = int(cache.meta_get("customer_id") or 0) or None
            acting = cache.meta_get("acting_user_id") or cache.meta_get("user_id")
            user = cache.user(int(acting), with_accounts=False) if acting else None
        except (TypeError, ValueError):
            return None
        if user is None:
            return None
        customer_id = user.customer_id
        role = user.role_at(customer_id) or next((r.role for r in user.roles), None)
        if role is None:
            return None
        customer = cache.customer(customer_id)
        side = "agency" if observer_customer in (None, customer_id) else "client"
        return _RememberedIdentity(user.id, user.user_name, customer_id, customer.name if customer else "", side,
                                   role)

    def _first_frame(self) -> bool:
        """Draw the cache as it is: no network, no SDK, only sqlite3. True when the inbox is reading its first page
        (the clients tree and the session wait for it)."""
        if self.session is not None:
            self.cache = self.session.cache()
        elif not self._fresh and self._cache_path().exists():
            from linkdesk.core.cache import Cache, CacheError

            try:
                self.cache = Cache.open(self._cache_path())
            except CacheError as exc:
                self.cache = None
                self.notify(clean(str(exc), max_chars=400), title="The cache cannot be read", severity="error",
                            markup=False, timeout=15)
        if self.cache is None:
            return False
        self.identity = self.session.identity() if self.session is not None else self._identity_from_cache()
        self._show_identity()
        self._update_age()
        # The first page is read here, before the first frame, so that frame already shows rows (one frame, not
        # two; the reads take a few tens of ms at 100,000 links, and no key is waiting yet).
        self.main.load(self.thread_cache, self.actor, side=self._default_side(), at_once=True)
        return self.actor is not None

    def _default_side(self) -> Perspective:
        side = getattr(self.identity, "side", "agency")
        return Perspective.RECEIVED if side == "client" else Perspective.SENT

    def _show_identity(self) -> None:
        ident = self.identity
        if ident is None:
            self.status = self.status.with_(user="", role="", customer="")
            return
        self.status = self.status.with_(user=ident.user_name, role=Role(ident.role).label,
                                        customer=ident.customer_name)

    def _update_age(self) -> None:
        if self.cache is None:
            return
        run = self.cache.last_ok_sync()
        self.status = self.status.with_(last_sync=run.finished_at if run is not None else None)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="start session")
    def _create_session(self) -> None:
        assert self._factory is not None
        try:
            session = self._factory()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence and the offline state
            self.post_message(SessionFailed(exc))
            return
        self.post_message(SessionReady(session))

    @on(SessionReady)
    def _session_ready(self, event: SessionReady) -> None:
        self.session = event.session
        self.profile = event.session.profile
        self.is_demo = event.session.is_demo
        if self.cache is None:
            self.cache = self.session.cache()
        before = _who(self.identity)
        self.identity = self.session.identity()
        self._show_identity()
        self._update_age()
        self.status = self.status.with_(profile=self.profile, is_demo=self.is_demo, message="")
        self.timings.emit("session_ready")
        if self.FREEZE_GC and not self._gc_frozen:
            # What start-up built (Textual, the SDK, the simulator's world) lives as long as the app: moved out of the
            # collector's reach, a collection no longer walks it in the middle of a keystroke (the inbox cursor's
            # worst key at 100,000 links: 19.6 ms before, 5.9 ms after).
            self._gc_frozen = True
            gc.freeze()
        if _who(self.identity) != before:
            # The cache's remembered identity was not the session's (or there was none): read the views again.
            self.main.load(self.thread_cache, self.actor, side=self._default_side())
        self.refresh_bindings()
        if self._sync_on_start:
            self.action_sync()

    @on(SessionFailed)
    def _session_failed(self, event: SessionFailed) -> None:
        message = user_message(event.error)
        self.status = self.status.with_(online=False, message=message)
        self.notify(message, title="Working offline", severity="warning", markup=False, timeout=12)

    # -- sync -----------------------------------------------------------------------------------------------------

    def action_sync(self) -> None:
        """Sync now (s)."""
        if self.session is None:
            self.notify("Not connected yet: linkdesk shows the cache. Sync starts when the connection is ready.",
                        severity="warning")
            return
        if self._syncing:
            self.notify("A sync is already running; esc stops it.")
            return
        self._syncing = True
        self._sync_cancel = threading.Event()
        self.status = self.status.with_(phase="sync", done=0, total=None, message="Syncing…")
        self.refresh_bindings()
        self._sync(self._sync_cancel)

    @work(thread=True, exclusive=True, group="sync", exit_on_error=False, name="sync")
    def _sync(self, cancel: threading.Event) -> None:
        session = self.session
        assert session is not None
        result = session.sync(progress=lambda p: self.post_message(SyncProgressed(p)), cancel=cancel)
        self.post_message(SyncFinished(result))

    @on(SyncProgressed)
    def _sync_progressed(self, event: SyncProgressed) -> None:
        p = event.progress
        if self._syncing:
            self.status = self.status.with_(phase=p.phase, done=p.done, total=p.total, message=p.message)

    @on(SyncFinished)
    def _sync_finished(self, event: SyncFinished) -> None:
        result = event.result
        self.timings.emit("sync_finished", ok=bool(result.ok))
        self._sync_ended()
        error = getattr(result, "error", None)
        offline = not result.ok and not result.cancelled and error is not None and _is_network(error)
        self.status = self.status.with_(online=False if offline else (True if result.ok else self.status.online),
                                        message="" if result.ok else clean(result.message, max_chars=300))
        self._update_age()
        if result.cancelled:
            self.notify("Sync stopped; the cache still shows the last complete sync.")
        elif not result.ok:
            self.notify(clean(result.message, max_chars=400), title="Sync failed", severity="error", markup=False,
                        timeout=12)
        self.reload_views()

    def _sync_ended(self) -> None:
        self._syncing = False
        self._sync_cancel = None
        self.status = self.status.with_(phase=None, done=0, total=None)
        self.refresh_bindings()

    def action_stop_sync(self) -> None:
        """Stop the running sync (esc); the cache keeps the last complete state."""
        if self._sync_cancel is not None:
            self._sync_cancel.set()
            self.status = self.status.with_(message="Stopping the sync…")

    def reload_views(self) -> None:
        """Re-read every visible view from the cache (after a sync, an action, a clock step)."""
        if self.main is not None and self.cache is not None:
            self.main.reload()
        for screen in self.screen_stack:
            reload = getattr(screen, "reload", None)
            if reload is not None and screen is not self.main:
                reload()

    # -- bindings state -------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_sync":
            return self._syncing
        if action in ("choose_identity", "choose_advance"):
            return self.is_demo
        return True

    # -- views ----------------------------------------------------------------------------------------------------

    def _back_to_main(self) -> bool:
        """Close pushed screens down to the main one; False when a modal dialog is open (it must be answered)."""
        from textual.screen import ModalScreen

        while len(self.screen_stack) > 1 and self.screen is not self.main:
            if isinstance(self.screen, ModalScreen):
                return False
            self.pop_screen()
        return True

    def action_show(self, view: str) -> None:
        """Show the clients tree (1) or the link inbox (2)."""
        if self.main is not None and self._back_to_main():
            self.main.show(view)

    @on(OpenLink)
    def _open_link(self, event: OpenLink) -> None:
        from .screens.detail import LinkDetailScreen

        if self.cache is None:
            return
        self.push_screen(LinkDetailScreen(event.key))

    # -- help and palette -----------------------------------------------------------------------------------------

    def action_help(self) -> None:
        """Keys and what the current screen shows (? or F1)."""
        from .screens.help import HelpScreen, keys_from_bindings

        screen = self.screen
        title, about = getattr(screen, "help_text", ("linkdesk", ""))
        self.push_screen(HelpScreen(title, about, keys_from_bindings(self, screen.active_bindings)))

    def palette_commands(self, screen: Any) -> Iterable[PaletteCommand]:
        """What the command palette offers now: views, sync, invitations, the selected link's allowed actions, and
        in demo mode the identities and clock steps."""
        yield PaletteCommand("Show clients tree", "The agency, its users and client accounts (1)",
                             lambda: self.action_show("clients"))
        yield PaletteCommand("Show link inbox", "Sent and received links by stage (2)",
                             lambda: self.action_show("inbox"))
        if self._syncing:
            yield PaletteCommand("Stop sync", "Stop the running sync; the cache keeps the last complete state (esc)",
                                 self.action_stop_sync)
        else:
            yield PaletteCommand("Sync now", "Read every link and the hierarchy from the service (s)",
                                 self.action_sync)
        if screen is self.main and self.main is not None and self.main.current == "inbox":
            yield from self._inbox_commands()
        yield PaletteCommand("New invitation", "Invite a client account or customer (n)", self.action_new_invitation)
        yield PaletteCommand("Bulk invitations from a CSV file", "Dry run, then send, with a result per row (b)",
                             self.action_bulk_invitation)
        key = self._selected_key(screen)
        if key is not None and self.cache is not None:
            ctx = link_context(self.cache, key, self.actor, self.now())
            if ctx is not None:
                label = rules.entity_label(ctx.link)
                for option in ctx.options:
                    if option.allowed:
                        yield PaletteCommand(f"{option.action.label}: {label}",
                                             rules.ACTION_CONSEQUENCES[option.action],
                                             _bind(self.post_message, LinkActionRequested(option.action, key)))
        if self.is_demo and self.session is not None:
            current = getattr(self.identity, "user_id", None)
            for ident in self._identities():
                if ident.user_id != current:
                    yield PaletteCommand(
                        f"Act as {ident.user_name} ({Role(ident.role).label}, {ident.customer_name})",
                        "Demo: switch the acting identity and sync as that user",
                        _bind(self.switch_identity, ident.user_id))
            for duration, label in ADVANCE_STEPS:
                yield PaletteCommand(f"Advance the simulator clock {label}",
                                     "Demo: move the simulated time; due transitions happen, then linkdesk syncs",
                                     _bind(self.advance_clock, duration))
        yield PaletteCommand("Help", "Keys and what this screen shows (? or F1)", self.action_help)
        yield PaletteCommand("Change theme", "Pick another colour theme", self.action_change_theme)
        yield PaletteCommand("Quit", "Leave linkdesk (q)", self.action_quit)

    def _inbox_commands(self) -> Iterable[PaletteCommand]:
        """Filter, stage, side and sort of the inbox, as commands."""
        from .screens.inbox import STAGE_ORDER
        from .source import SORTS

        inbox = self.main.inbox
        query = inbox.query_state
        if query is None:
            return
        yield PaletteCommand("Filter the inbox", "Type part of a client, account, number or note (/)",
                             inbox.action_filter)
        for stage in STAGE_ORDER:
            if stage != query.stage:
                label = stage.label if stage else "All stages"
                yield PaletteCommand(f"Inbox: {label}", "Show the links in this stage ([ and ] step through them)",
                                     _bind(inbox.set_stage, stage))
        other = "received" if query.perspective == Perspective.SENT else "sent"
        yield PaletteCommand(f"Inbox: {other} links", "Links your customer sent as the agency, or received as the "
                             "client (t)", inbox.action_toggle_side)
        for key, title in SORTS:
            if key != query.sort:
                yield PaletteCommand(f"Sort the inbox by {title.lower()}", "o cycles the sorts, O reverses",
                                     _bind(inbox.set_sort, key))

    def _selected_key(self, screen: Any) -> LinkKey | None:
        key = getattr(screen, "link_key", None)
        if key is not None:
            return key
        if screen is self.main and self.main is not None:
            if self.main.current == "inbox":
                line = self.main.inbox.link_list.highlighted
                return line.key if line is not None else None
            return self.main.clients._link_key(self.main.clients.selected)
        return None

    def _identities(self) -> list[Any]:
        """Identities to offer (palette, Act as…): the first IDENTITY_CHOICES by user id — the demo world's named
        users; a world of 100,000 links adds some 48,000 generated client users, too many to list or to read on every
        palette keystroke."""
        session = self.session
        if session is None:
            return []
        try:
            return list(session.identities(limit=IDENTITY_CHOICES))
        except Exception:  # noqa: BLE001 - a palette must open even if the list cannot be read
            return []

    # -- link actions ---------------------------------------------------------------------------------------------

    @on(LinkActionRequested)
    def _link_action(self, event: LinkActionRequested) -> None:
        from .screens.confirm import ConfirmationModal

        action, key = event.action, event.key
        if self.cache is None:
            return
        ctx = link_context(self.cache, key, self.actor, self.now())
        if ctx is None:
            self.notify("That link is no longer in the cache; sync (s) and try again.", severity="warning")
            return
        option = ctx.option(action)
        if not option.allowed:
            self.notify(clean(option.reason or "Not possible now.", max_chars=500),
                        title=f"Cannot {action.label.lower()}", severity="warning", markup=False, timeout=10)
            return
        if self.session is None:
            self.notify("linkdesk is offline: actions need the service. Press s to try to sync again.",
                        title=f"Cannot {action.label.lower()}", severity="warning")
            return
        consequence = rules.ACTION_CONSEQUENCES[action]
        billing = action_billing(action.value, ctx.link.is_bill_to_client,
                                 agency=clean(ctx.link.managing_customer_name) or "the agency")
        if billing:
            consequence += " " + billing
        subject = join((rules.entity_label(ctx.link), "bold"), "\n", ("", ""),
                       f"{ctx.link.status} · {ctx.client_customer_name or ''}".rstrip(" ·"))
        self.push_screen(
            ConfirmationModal(f"{action.label}?", subject, consequence, confirm_label=action.label,
                              danger=action in (rules.Action.CANCEL, rules.Action.UNLINK, rules.Action.DECLINE)),
            callback=lambda ok: self._run_action(action, key, ctx.link) if ok else None,
        )

    @work(thread=True, group="action", exit_on_error=False, name="link action")
    def _run_action(self, action: rules.Action, key: LinkKey, link: ClientLink) -> None:
        session = self.session
        assert session is not None
        result = session.act(action, key)
        self.post_message(ActionFinished(action, key, result))

    @on(ActionFinished)
    def _action_finished(self, event: ActionFinished) -> None:
        from .screens.error import ErrorModal

        result = event.result
        self.reload_views()
        if result.ok:
            self.notify(clean(result.message, max_chars=400) or f"{event.action.label}: done.",
                        title=event.action.label, markup=False)
        else:
            lines = [clean(v.message, max_chars=400) for v in (result.violations or [])]
            message = clean(result.message, max_chars=400)
            body = "\n".join([message, *[f"• {line}" for line in lines if line != message]])
            self.push_screen(ErrorModal(f"{event.action.label} did not go through", body))

    # -- invitations ----------------------------------------------------------------------------------------------

    def action_new_invitation(self, draft: ClientLink | None = None) -> None:
        """Open the invitation form (n)."""
        from .screens.invite import InvitationScreen

        if self.actor is None:
            self.notify("linkdesk does not know who you are yet; wait for the session.", severity="warning")
            return
        if not isinstance(self.screen, InvitationScreen):
            self.push_screen(InvitationScreen(draft))

    @on(InviteRequested)
    def _invite_requested(self, event: InviteRequested) -> None:
        self.action_new_invitation(event.draft)

    def action_bulk_invitation(self) -> None:
        """Invite many accounts from a CSV file (b)."""
        from .screens.bulk import BulkInviteScreen

        if self.actor is None:
            self.notify("linkdesk does not know who you are yet; wait for the session.", severity="warning")
            return
        if not isinstance(self.screen, BulkInviteScreen):
            self.push_screen(BulkInviteScreen())

    def check_invitation(self, draft: ClientLink) -> list[rules.Violation]:
        """Every rule a draft breaks, with the cache's knowledge (existing links, prepaid accounts)."""
        if self.session is not None:
            return list(self.session.check_invitation(draft))
        actor = self.actor
        if actor is None or self.cache is None:
            return []
        existing = self.cache.links_for_entity(draft.client_entity_id) if draft.client_entity_id else []
        account = self.cache.account(draft.client_entity_id) if draft.client_entity_id else None
        return rules.check_new_invitation(draft, actor=actor, now=self.now(), existing=existing,
                                          client_account=account)

    # -- demo: identity and clock -----------------------------------------------------------------------------------

    def action_choose_identity(self) -> None:
        """Demo: act as another user (i)."""
        from .screens.demo import IdentityModal

        if self.session is None:
            self.notify("The simulator is still starting.", severity="warning")
            return
        current = getattr(self.identity, "user_id", None)
        self.push_screen(IdentityModal(self._identities(), current),
                         callback=lambda user_id: self.switch_identity(user_id) if user_id is not None else None)

    def switch_identity(self, user_id: int) -> None:
        if self.session is None:
            return
        self._switch_identity(user_id)

    @work(thread=True, exclusive=True, group="identity", exit_on_error=False, name="switch identity")
    def _switch_identity(self, user_id: int) -> None:
        assert self.session is not None
        identity = self.session.switch_identity(user_id)
        self.post_message(IdentitySwitched(identity))

    @on(IdentitySwitched)
    def _identity_switched(self, event: IdentitySwitched) -> None:
        self.identity = event.identity
        self._show_identity()
        self.notify(Text(f"Acting as {clean(event.identity.user_name)} ({Role(event.identity.role).label} at "
                         f"{clean(event.identity.customer_name)}).").plain, markup=False)
        if self.main is not None:
            self.main.load(self.thread_cache, self.actor, side=self._default_side())
        self.reload_views()
        self.action_sync()

    def action_choose_advance(self) -> None:
        """Demo: move the simulator clock (+)."""
        from .screens.demo import AdvanceModal

        if self.session is None:
            self.notify("The simulator is still starting.", severity="warning")
            return
        self.push_screen(AdvanceModal(ADVANCE_STEPS),
                         callback=lambda duration: self.advance_clock(duration) if duration else None)

    def advance_clock(self, duration: str) -> None:
        if self.session is not None:
            self._advance(duration)

    @work(thread=True, exclusive=True, group="clock", exit_on_error=False, name="advance clock")
    def _advance(self, duration: str) -> None:
        assert self.session is not None
        summary = self.session.advance(duration)
        self.post_message(ClockAdvanced(summary))

    @on(ClockAdvanced)
    def _clock_advanced(self, event: ClockAdvanced) -> None:
        self.notify(clean(event.summary, max_chars=400), title="Simulator clock", markup=False)
        self.reload_views()
        if self._syncing and self._sync_cancel is not None:
            self._sync_cancel.set()
        self.call_after_refresh(self.action_sync)

    # -- failures ---------------------------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a worker's failure becomes a dialog (never a traceback)."""
        if event.state != WorkerState.ERROR:
            return
        from .screens.error import ErrorModal

        worker = event.worker
        error = worker.error
        if worker.group == "sync":
            self._sync_ended()
            self.status = self.status.with_(online=False if _is_network(error) else self.status.online)
        self.log.error(f"worker {worker.name!r} failed: {error!r}")
        title = {"sync": "Sync failed", "action": "The action failed", "invite": "Sending failed",
                 "identity": "Could not switch identity", "clock": "Could not move the clock",
                 "session": "Could not start"}.get(worker.group, "Something went wrong")
        self.push_screen(ErrorModal(title, user_message(error) if error else "The task stopped unexpectedly."))

    # -- leaving ----------------------------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self._sync_cancel is not None:
            self._sync_cancel.set()
        self.exit(0)


class _RememberedIdentity:
    """The identity the cache remembers (see ``_identity_from_cache``), until the session says who acts."""

    def __init__(self, user_id: int, user_name: str, customer_id: int, customer_name: str, side: str,
                 role: Role) -> None:
        self.user_id, self.user_name, self.customer_id = user_id, user_name, customer_id
        self.customer_name, self.side, self.role = customer_name, side, role

    def actor(self) -> Actor:
        return Actor(self.user_id, self.customer_id, self.role, self.customer_name, self.user_name)


def _who(identity: Any) -> tuple[Any, ...] | None:
    """What the views depend on of an identity (a remembered one and the session's compare equal)."""
    if identity is None:
        return None
    return identity.user_id, identity.customer_id, Role(identity.role), getattr(identity, "side", "agency")


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def _is_network(error: Any) -> bool:
    """Whether a failure means 'the service cannot be reached' (offline), as opposed to a refusal."""
    if error is None:
        return False
    names = {c.__name__ for c in type(error).__mro__}
    return bool(names & {"ServiceUnavailable", "ApiTimeout", "ConnectionError", "TimeoutError", "OSError"})


# ----------------------------------------------------------------------------------------------------------------
# Entry points (core/cli.py imports these lazily)
# ----------------------------------------------------------------------------------------------------------------


def _pause_gc() -> bool:
    """Pause the garbage collector until the first frame is drawn; True if it was running.

    Start-up only builds (Textual's widgets, styles, the first page of rows): the collections that tens of thousands
    of new objects trigger find next to nothing to free, yet walked all of them before the first frame, about 30 ms
    at 100,000 links (one full collection, 20-25 ms, and a few younger ones). Objects without cycles are freed as
    ever; the collector runs again once the first frame with the inbox's rows is drawn (``LinkdeskApp._start_rest``),
    or when the app ends."""
    running = gc.isenabled()
    gc.disable()
    return running


def _run_app(build: Callable[[], LinkdeskApp]) -> int:
    """Build and run the app with the garbage collector paused for start-up (see ``_pause_gc``); close its session
    afterwards. The exit code: 0 unless the app returned another."""
    resume_gc = _pause_gc()
    try:
        app = build()
    except BaseException:
        if resume_gc:
            gc.enable()
        raise
    app._resume_gc = resume_gc
    try:
        code = app.run()
    finally:
        app._gc_resume()
        if app.session is not None:
            app.session.close()
    return code if isinstance(code, int) else 0


def run_demo(fresh: bool = False, *, home: Path | str | None = None, clock: Clock | None = None) -> int:
    """``linkdesk demo``: the app against the built-in simulator (state kept between runs; ``fresh`` resets it)."""

    def factory() -> "Session":
        from linkdesk.core.session import Session

        return Session.demo(home=home, fresh=fresh, clock=clock)

    return _run_app(lambda: LinkdeskApp(factory, clock=clock, home=home, profile=paths.DEMO_PROFILE, is_demo=True,
                                        fresh=fresh))


def run(profile: str | None = None, *, home: Path | str | None = None, clock: Clock | None = None) -> int:
    """``linkdesk``: the app on a signed-in profile (the last one used when none is given).

    With no profile signed in, say how to sign in or start the demo, and return 1.
    """
    import sys

    profile = profile or paths.last_profile()
    if profile is None:
        print("linkdesk has no signed-in profile yet.\n"
              "  Sign in to Microsoft Advertising:  linkdesk auth login\n"
              "  Or try it with the built-in simulator:  linkdesk demo", file=sys.stderr)
        return 1
    if profile == paths.DEMO_PROFILE:
        return run_demo(home=home, clock=clock)

    def factory() -> "Session":
        from linkdesk.core.session import Session

        return Session.live(profile, home=home, clock=clock)

    return _run_app(lambda: LinkdeskApp(factory, clock=clock, home=home, profile=profile, is_demo=False))
