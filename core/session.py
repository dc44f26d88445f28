"""The one object the TUI and the command line drive: profile, cache, API (live or the in-process simulator), sync and
actions (see ../notes/session.md for the contract).

* ``Session.demo()`` starts the built-in simulator in this process on ``127.0.0.1:0`` from the demo profile's state
  and acts as the agency's Super Admin (``switch_identity`` picks any demo user; each has its own access token).
* ``Session.live()`` uses the stored sign-in (``core.credentials``); the refresh token is renewed through the SDK and
  saved back on every refresh.

Heavy imports (bingads, sqlite_utils, the simulator) happen inside methods, never when this module is imported, so
the TUI can draw its first frame from the cache before any of them load. Every method that talks to the service is
blocking: call it from a worker thread. Failures come back as results with one sentence, not exceptions — except
the constructors, which raise :class:`SessionError` (or :class:`NotSignedIn`) with a sentence.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import paths, rules
from .credentials import CredentialsError, NotSignedIn
from .model import Actor, ClientLink, LinkKey, Role
from .rules import Violation
from .sync import SyncProgress, SyncResult

if TYPE_CHECKING:
    from .api import CustomerManagementApi
    from .cache import Cache

from .actions import ActionResult  # noqa: E402  (light module; re-exported for the TUI)

log = logging.getLogger(__name__)

__all__ = ["ActionResult", "Identity", "NotSignedIn", "Session", "SessionError", "SyncProgress", "SyncResult"]

SANDBOX_DEVELOPER_TOKEN = "BBD37VB98"
#: Demo only: inject faults into the in-process simulator (``FaultPlan.parse`` text, e.g. ``rate=0.2,seed=3``), to
#: see how linkdesk behaves when the service misbehaves. Never affects a live profile.
ENV_DEMO_FAULTS = "LINKDESK_DEMO_FAULTS"


class SessionError(Exception):
    """A session could not be opened; the message is one sentence saying what to do."""


@dataclass(frozen=True)
class Identity:
    """An acting identity: in demo any simulator user, live the signed-in user."""

    user_id: int
    user_name: str
    customer_id: int
    customer_name: str
    side: str  # "agency" | "client" | "other-agency"
    role: Role
    customer_number: str | None = None

    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, customer_id=self.customer_id, role=self.role,
                     customer_name=self.customer_name, user_name=self.user_name,
                     customer_number=self.customer_number)

    @property
    def label(self) -> str:
        """'ann (Super Admin at Contoso Agency)'."""
        return f"{self.user_name} ({self.role.label} at {self.customer_name or f'customer {self.customer_id}'})"


def _system_clock() -> datetime:
    return datetime.now(timezone.utc)


def _profile_dir(home: Path | None, profile: str) -> Path:
    if home is None:
        return paths.profile_dir(profile)
    d = Path(home) / paths.validate_profile(profile)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


class Session:
    """Profile + cache + API + sync + actions. Create with :meth:`demo` or :meth:`live`."""

    profile: str
    is_demo: bool
    clock: Callable[[], datetime]

    def __init__(self, profile: str, *, is_demo: bool, clock: Callable[[], datetime], cache_path: Path):
        self.profile = profile
        self.is_demo = is_demo
        self.clock = clock
        self.cache_path = cache_path
        self._local = threading.local()
        self._caches: list[Any] = []
        self._lock = threading.RLock()
        self._apis: dict[int, Any] = {}
        self._identity: Identity | None = None
        self._identities: list[Identity] = []
        self._observer_id: int | None = None
        self._online: bool | None = None
        self._closed = False
        # demo
        self._sim: Any = None
        # live
        self._signin: Any = None
        self._secrets: Any = None

    # ---------------------------------------------------------------------------------------------- constructors

    @classmethod
    def demo(cls, *, home: Path | str | None = None, fresh: bool = False, clock: Callable[[], datetime] | None = None,
             scale: int = 0, seed: int = 1) -> "Session":
        """Start the simulator in-process on 127.0.0.1 (ephemeral port) from the demo state and act as the agency's
        Super Admin. ``fresh`` resets the simulator's world and the demo cache. ``clock`` freezes time (tests,
        screenshots); by default the simulator's virtual clock is the session's clock. ``$LINKDESK_DEMO_FAULTS``
        (a ``FaultPlan.parse`` text) makes the simulator inject faults."""
        from .simulator.app import Simulator  # imports the simulator only now

        # The in-process simulator logs its internal errors with tracebacks; they belong in a log a developer
        # configures (LINKDESK_DEBUG), never on the user's terminal (Python's last-resort handler would print them).
        sim_log = logging.getLogger("linkdesk.core.simulator")
        if not any(isinstance(h, logging.NullHandler) for h in sim_log.handlers):
            sim_log.addHandler(logging.NullHandler())

        home = Path(home) if home is not None else None
        pdir = _profile_dir(home, paths.DEMO_PROFILE)
        cache_path = pdir / "cache.sqlite"
        if fresh:
            _remove_cache_files(cache_path)
        sim = Simulator(pdir / "simulator.sqlite", seed=seed, scale=scale, reset=fresh,
                        frozen_at=clock() if clock is not None else None)
        plan = None
        if os.environ.get(ENV_DEMO_FAULTS, "").strip():
            from .simulator.faultinject import FaultPlan, FaultPlanError

            try:
                plan = FaultPlan.parse(os.environ[ENV_DEMO_FAULTS])
            except FaultPlanError as exc:
                raise SessionError(f"{ENV_DEMO_FAULTS} is not understood: {exc}") from None
        try:
            sim.start()
            if plan is not None:
                assert sim.server is not None
                sim.server.before_request = plan
        except Exception as exc:  # the simulator's own errors are sentences already
            sim.stop()
            raise SessionError(f"The built-in simulator could not start: {exc}") from exc
        # The simulator's clock is the session's: a given ``clock`` freezes the simulator there (kept in its state
        # file), and advance() moves both.
        session = cls(paths.DEMO_PROFILE, is_demo=True, clock=_DemoClock(sim), cache_path=cache_path)
        session._sim = sim
        # The demo's users are read from the simulator's state when asked for, never all held: a world of 100,000
        # links has some 48,000 users, and holding them (and every customer's number) cost ~70 MB.
        agency_admin = session._demo_identities("c.side = 'agency' AND r.role_id = ?", (int(Role.SuperAdmin),), 1)
        if not agency_admin:
            sim.stop()
            raise SessionError("The simulator's world has no agency Super Admin; reset it with "
                               "`linkdesk demo --fresh`.")
        session._observer_id = agency_admin[0].user_id
        session._identity = agency_admin[0]
        try:
            saved = session.cache().meta_get("acting_user_id")
            if saved is not None and saved.isdigit():
                match = session._demo_identities("u.id = ?", (int(saved),), 1)
                if match:
                    session._identity = match[0]
        except Exception:
            pass  # an unreadable cache is reported by the first real use, not here
        return session

    @classmethod
    def live(cls, profile: str | None = None, *, home: Path | str | None = None,
             clock: Callable[[], datetime] | None = None) -> "Session":
        """The stored sign-in of ``profile`` (default: the last live profile used, else the newest sign-in).
        Raises NotSignedIn with a sentence when there is none."""
        from . import credentials

        if profile is None:
            last = paths.last_profile()
            if last and last.startswith("live-"):
                profile = last
            else:
                known = credentials.profiles()
                if not known:
                    raise NotSignedIn("You are not signed in; sign in with `linkdesk auth login`, or try the demo "
                                      "with `linkdesk demo`.")
                profile = known[0].profile
        record, secret = credentials.load(profile)
        home = Path(home) if home is not None else None
        cache_path = _profile_dir(home, profile) / "cache.sqlite"
        session = cls(profile, is_demo=False, clock=clock or _system_clock, cache_path=cache_path)
        session._signin, session._secrets = record, secret
        role = Role.parse(getattr(record, "role_id", None)) or Role.SuperAdmin
        try:
            cached = session.cache().user(record.user_id)
            if cached is not None:
                role = cached.role_at(record.customer_id) or role
        except Exception:
            pass
        number = None
        try:
            own = session.cache().customer(record.customer_id)
            number = own.number if own is not None else None
        except Exception:
            pass
        ident = Identity(record.user_id, record.user_name, record.customer_id, record.customer_name, "agency", role,
                         number)
        session._identity = ident
        session._identities = [ident]
        session._observer_id = record.user_id
        return session

    # ---------------------------------------------------------------------------------------------- cache

    def cache(self) -> "Cache":
        """A Cache for the calling thread (opened lazily, one per thread)."""
        c = getattr(self._local, "cache", None)
        if c is None:
            from .cache import Cache

            c = Cache.open(self.cache_path)
            self._local.cache = c
            with self._lock:
                self._caches.append(c)
        return c

    # ---------------------------------------------------------------------------------------------- identities

    def identity(self) -> Identity:
        assert self._identity is not None
        return self._identity

    def identities(self, limit: int | None = None) -> list[Identity]:
        """Every identity this session may act as, by user id (demo: the simulator's users, read now; ``limit``
        caps how many, for lists people pick from)."""
        if self._sim is not None:
            return self._demo_identities("", (), limit)
        return list(self._identities)[:limit]

    def _demo_identities(self, where: str, params: tuple[Any, ...], limit: int | None) -> list[Identity]:
        """Demo identities matching an SQL condition on the simulator's users ``u``, their home customer ``c`` and
        their role there ``r`` (the join of ``state.Tx.identities``), by user id."""
        state = self._sim.state if self._sim is not None else None
        if state is None:
            return []
        sql = ("SELECT u.id, u.username, c.id, c.name, c.side, r.role_id, c.number FROM users u"
               " JOIN customers c ON c.id = u.customer_id"
               " JOIN user_roles r ON r.user_id = u.id AND r.customer_id = u.customer_id"
               + (f" WHERE {where}" if where else "") + " ORDER BY u.id"
               + (f" LIMIT {int(limit)}" if limit is not None else ""))
        with state.read() as tx:
            rows = tx.c.execute(sql, params).fetchall()
        return [Identity(int(uid), str(name), int(cid), str(cname), str(side), Role.parse(role) or Role.Viewer,
                         number) for uid, name, cid, cname, side, role, number in rows]

    def switch_identity(self, user_id: int, *, remember: bool = True) -> Identity:
        """Act as another user (demo: any simulator user; live: only the signed-in one). ``remember``: the demo
        starts as this user next time too (the command line's one-off ``--as`` does not remember)."""
        if self._sim is not None:
            match = self._demo_identities("u.id = ?", (int(user_id),), 1)
        else:
            match = [i for i in self._identities if i.user_id == int(user_id)]
        if not match:
            if not self.is_demo:
                raise SessionError("A live session acts only as the signed-in user; sign in as the other user with "
                                   "`linkdesk auth login`.")
            raise SessionError(f"There is no demo user {user_id}; `linkdesk simulator users` lists them.")
        self._identity = match[0]
        if self.is_demo and remember:
            try:
                self.cache().meta_set("acting_user_id", str(match[0].user_id))
            except Exception:
                pass
        return match[0]

    def identity_for_customer(self, customer_id: int, role: Role = Role.SuperAdmin) -> Identity | None:
        """A demo identity of ``customer_id`` with ``role`` (e.g. the client Super Admin who accepts)."""
        if self._sim is not None:
            found = self._demo_identities("c.id = ? AND r.role_id = ?", (int(customer_id), int(role)), 1)
            return found[0] if found else None
        for i in self._identities:
            if i.customer_id == customer_id and i.role == role:
                return i
        return None

    def client_identity(self, key: LinkKey) -> Identity | None:
        """Demo: the Super Admin of the customer that owns the link's client entity (who accepts or declines).

        The cache knows the owner once the account is visible to the agency; before that the link's
        ClientEntityCustomerNumber names it, matched against the demo customers' numbers."""
        stored = self.cache().stored_link(key)
        if stored is None:
            return None
        if stored.client_customer_id is not None:
            found = self.identity_for_customer(stored.client_customer_id)
            if found is not None:
                return found
        number = stored.link.client_entity_customer_number
        if self.is_demo and number and self._sim is not None and self._sim.state is not None:
            with self._sim.state.read() as tx:
                row = tx.customer_by_number(number)
            if row is not None:
                return self.identity_for_customer(row.id)
        return None

    # ---------------------------------------------------------------------------------------------- API clients

    def api(self, user_id: int | None = None) -> "CustomerManagementApi":
        """The API client acting as ``user_id`` (default: the acting identity). Blocking on first use."""
        uid = self.identity().user_id if user_id is None else int(user_id)
        with self._lock:
            api = self._apis.get(uid)
            if api is None:
                api = self._build_api(uid)
                self._apis[uid] = api
            return api

    def _build_api(self, user_id: int) -> "CustomerManagementApi":
        from .api import CustomerManagementApi

        if self.is_demo:
            sim = self._sim
            return CustomerManagementApi(developer_token=SANDBOX_DEVELOPER_TOKEN,
                                         authentication=sim.authorization(user_id), environment="production",
                                         location=sim.url)
        from . import credentials
        from .api import AuthError

        record, secret = self._signin, self._secrets
        if user_id != record.user_id:
            raise SessionError("A live session acts only as the signed-in user.")
        grant = credentials.make_grant(record.client_id, record.environment, token_url=record.token_url,
                                       refresh_token=secret.refresh_token,
                                       on_refresh=lambda rt: credentials.update_refresh_token(record.profile, rt))
        try:
            grant.request_oauth_tokens_by_refresh_token(secret.refresh_token)
        except CredentialsError as exc:
            raise AuthError(str(exc), sent=False) from None
        except Exception as exc:
            code = getattr(exc, "error_code", None) or type(exc).__name__
            raise AuthError("Your sign-in could not be renewed; sign in again with `linkdesk auth login`.",
                            symbol=str(code), sent=False) from None
        return CustomerManagementApi(developer_token=secret.developer_token, authentication=grant,
                                     environment=record.environment, location=record.service_url)

    def _views(self) -> list[Any]:
        from .sync import View

        assert self._observer_id is not None
        views = [View(self.api(self._observer_id), True)]
        me = self.identity()
        if self.is_demo and me.user_id != self._observer_id and me.side != "agency":
            views.append(View(self.api(me.user_id), False))
        return views

    # ---------------------------------------------------------------------------------------------- sync

    def sync(self, progress: Callable[[SyncProgress], None] | None = None,
             cancel: threading.Event | None = None) -> SyncResult:
        """A full sync into the cache (blocking; call from a worker thread)."""
        from . import sync as sync_mod
        from .api import ApiError

        try:
            views = self._views()
        except ApiError as err:
            self._note_error(err)
            return SyncResult(False, False, self._link_count(), 0,
                              f"{err.user_message} The cache still holds the previous sync.", err)
        from .cache import CacheError

        try:
            cache = self.cache()
        except CacheError as exc:
            return SyncResult(False, False, 0, 0, str(exc))
        result = sync_mod.full_sync(cache, views, clock=self.clock, progress=progress, cancel=cancel)
        if self.is_demo and not result.ok and _lost_demo_sign_in(result.error):
            # Another process moved the simulator's clock and its expired tokens were forgotten: the demo signs in
            # again by itself (fresh tokens from the simulator) rather than asking for `linkdesk auth login`.
            self._drop_apis()
            try:
                views = self._views()
            except ApiError as err:
                self._note_error(err)
                return result
            result = sync_mod.full_sync(cache, views, clock=self.clock, progress=progress, cancel=cancel)
        if result.ok:
            self._online = True
        elif result.error is not None:
            self._note_error(result.error)
        return result

    def _drop_apis(self) -> None:
        with self._lock:
            apis, self._apis = list(self._apis.values()), {}
        for api in apis:
            try:
                api.close()
            except Exception:
                pass

    def _link_count(self) -> int:
        try:
            return self.cache().link_count()
        except Exception:
            return 0

    def _note_error(self, err: Any) -> None:
        from .api import ApiTimeout, ServiceUnavailable

        if isinstance(err, (ServiceUnavailable, ApiTimeout)):
            self._online = False

    # ---------------------------------------------------------------------------------------------- actions

    def _context(self) -> Any:
        from .actions import ActionContext

        return ActionContext(self.api(), self.cache(), self.identity().actor(), self.clock)

    def check_invitation(self, draft: ClientLink) -> list[Violation]:
        """The rules' verdict on a draft invitation with the cache's context (no network)."""
        from . import actions
        from .cache import CacheError

        try:
            return actions.check_invitation(self.cache(), self.identity().actor(), draft, self.clock())
        except CacheError as exc:  # nothing is checked (or sent) without the cache's context
            return [Violation(None, -1, str(exc))]

    def invite(self, drafts: list[ClientLink], progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> list[ActionResult]:
        """Send invitations (checked first, batches of 10); one result per draft, in order."""
        from . import actions
        from .api import ApiError
        from .cache import CacheError

        try:
            ctx = self._context()
        except ApiError as err:
            self._note_error(err)
            return [ActionResult(False, None, err.user_message) for _ in drafts]
        except CacheError as exc:
            return [ActionResult(False, None, str(exc)) for _ in drafts]
        try:
            return actions.invite(ctx, drafts, progress=progress, cancel=cancel)
        except CacheError as exc:
            # The cache failed part-way (disk full, damaged): some invitations may have gone out. Their intents are
            # recorded, so the next run checks with the service before sending anything again.
            msg = (f"{exc} Some invitations may have been sent before this happened; once the cache works again, "
                   "sync to see them (linkdesk checks with the service before sending again).")
            return [ActionResult(False, None, msg) for _ in drafts]

    def act(self, action: rules.Action | str, key: LinkKey, note: str | None = None) -> ActionResult:
        """Cancel, unlink, accept, decline or re-invite ``key`` as the acting identity."""
        from . import actions
        from .api import ApiError
        from .cache import CacheError

        try:
            ctx = self._context()
        except ApiError as err:
            self._note_error(err)
            return ActionResult(False, key, err.user_message)
        except CacheError as exc:
            return ActionResult(False, key, str(exc))
        try:
            return actions.act(ctx, action, key, note)
        except CacheError as exc:
            return ActionResult(False, key, f"{exc} The change may have been sent before this happened; once the "
                                            "cache works again, sync to see the link as it is.")

    # ---------------------------------------------------------------------------------------------- demo clock

    def advance(self, duration: str) -> str:
        """Demo only: move the simulator's clock and apply what came due; returns a summary for people."""
        if not self.is_demo:
            raise SessionError("Only the demo's simulated clock can be moved.")
        from .simulator.clock import format_duration, parse_duration

        d = parse_duration(duration)
        before = self._sim.now()
        now, applied = self._sim.advance(d)
        self._renew_demo_sign_ins()
        changes = f"{applied} link change{'s' if applied != 1 else ''} came due" if applied else "nothing came due"
        return (f"The simulated clock moved {format_duration(now - before)} to {_fmt_time(now)}; {changes}. "
                "Sync to see the effects.")

    def _renew_demo_sign_ins(self) -> None:
        """Demo: after the simulated clock jumped, every access token this session holds has expired, and the
        simulator forgets expired tokens once they are a day old (it would then answer 105, "sign in again", instead
        of 109). Fresh tokens now keep the session signed in; an API that cannot renew is rebuilt on next use."""
        with self._lock:
            apis = list(self._apis.items())
        for uid, api in apis:
            try:
                api.renew_sign_in()
            except Exception:
                log.debug("renewing the demo sign-in of user %s failed; rebuilding it", uid, exc_info=True)
                with self._lock:
                    if self._apis.get(uid) is api:
                        del self._apis[uid]

    def simulator_url(self) -> str | None:
        return self._sim.url if self._sim is not None else None

    # ---------------------------------------------------------------------------------------------- state

    def online(self) -> bool:
        """False after the service could not be reached (until a call succeeds again)."""
        if self.is_demo:
            return self._sim is not None and self._sim.server is not None and self._online is not False
        return self._online is not False

    def close(self) -> None:
        """Stop the simulator (demo), close API clients and this thread's cache."""
        if self._closed:
            return
        self._closed = True
        for api in list(self._apis.values()):
            try:
                api.close()
            except Exception:
                pass
        self._apis.clear()
        if self._sim is not None:
            try:
                self._sim.stop()
            except Exception:
                pass
        with self._lock:
            caches, self._caches = self._caches, []
        for c in caches:
            try:
                c.close()
            except Exception:
                pass  # a cache owned by another thread closes with it

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _DemoClock:
    """The simulator's virtual clock; once the simulator is stopped, the last clock it had keeps running."""

    def __init__(self, sim: Any):
        self._sim = sim
        self._last: Any = None

    def __call__(self) -> datetime:
        state = self._sim.state
        if state is not None:
            try:
                with state.read() as tx:
                    self._last = tx.clock()
            except Exception:
                if self._last is None:
                    raise
        return self._last.now()


def _fmt_time(d: datetime) -> str:
    d = d.astimezone(timezone.utc)
    return f"{d.day} {d:%b %Y %H:%M} UTC"


def demo_clock(home: Path | str | None = None) -> Callable[[], datetime] | None:
    """The demo simulator's virtual clock read from its state file without starting it (None: no demo yet).

    Offline commands (``linkdesk links --demo``) use it so stages agree with the simulated time."""
    base = Path(home) if home is not None else paths.home()
    state_path = base / paths.DEMO_PROFILE / "simulator.sqlite"
    if not state_path.exists():
        return None
    from .simulator.state import State

    state = State(state_path)
    try:
        with state.read() as tx:
            virtual = tx.clock()
    finally:
        state.close()
    return virtual.now


def _lost_demo_sign_in(err: Any) -> bool:
    from .api import AuthError

    return isinstance(err, AuthError) and err.code in (105, 109)


def _remove_cache_files(cache_path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(str(cache_path) + suffix)
        except FileNotFoundError:
            pass
