"""The ``Simulator`` facade: open a state file, seed the demo world if needed, serve SOAP and OAuth on 127.0.0.1.

In-process use (demo mode, tests, benchmarks)::

    from linkdesk.core.simulator.app import Simulator

    with Simulator(state_path) as sim:                  # ephemeral port; seeds the demo world on first use
        auth_data = sim.authorization_data("admin@contoso.example")
        cm = ServiceClient("CustomerManagementService", 13, authorization_data=auth_data, location=sim.url)
        sim.advance("6h")                               # move the simulated clock; due transitions are applied

Options: ``port`` (0 = ephemeral), ``seed`` / ``scale`` (used when the state has no world yet, or with
``reset=True``), ``latency_ms`` (added to every SOAP reply), ``frozen_at`` (freeze the clock there: screenshots and
tests get identical times), ``service_options`` (throttling, acceptance cooldown).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Role
from .auth import IssuedTokens, TokenEndpoint, issue_tokens, make_authorization, resolve_user
from .clock import parse_duration
from .server import HookContext, SoapServer
from .service import SANDBOX_DEVELOPER_TOKEN, CustomerManagementService, ServiceOptions, advance as _advance
from .state import State
from .world import WorldSummary, ensure_world, seed_world


def default_state_path() -> Path:
    """The demo profile's simulator state (``linkdesk.core.paths.simulator_state_path``)."""
    from .. import paths

    return paths.simulator_state_path()


@dataclass(frozen=True)
class Identity:
    """One demo user as ``linkdesk simulator users`` lists it."""

    user_id: int
    username: str
    name: str
    customer_id: int
    customer_name: str
    side: str  # agency | client | other-agency
    role: str  # SuperAdmin | Standard | AdvertiserCampaignManager | Viewer | Aggregator
    role_id: int
    all_accounts: bool


def identities(state: State) -> list[Identity]:
    """Every demo user with its home customer, side and role, by user id."""
    with state.read() as tx:
        rows = tx.identities()
    out = []
    for user, customer, role in rows:
        name = " ".join(p for p in (user.first_name, user.last_name) if p) or user.username
        out.append(Identity(user.id, user.username, name, customer.id, customer.name, customer.side,
                            Role(role.role_id).name, role.role_id, role.all_accounts))
    return out


if TYPE_CHECKING:
    from .faultinject import FaultPlan


class Simulator:
    """A running simulator: state + service + SOAP/OAuth server on 127.0.0.1. Use as a context manager."""

    def __init__(
        self,
        state_path: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        seed: int = 1,
        scale: int = 0,
        reset: bool = False,
        latency_ms: float = 0,
        faults: "FaultPlan | None" = None,
        frozen_at: datetime | None = None,
        service_options: ServiceOptions | None = None,
    ):
        self.state_path = Path(state_path) if state_path is not None else default_state_path()
        self.port = port
        self.seed = seed
        self.scale = scale
        self.reset = reset
        self.latency_ms = latency_ms
        self.faults = faults
        self.frozen_at = frozen_at
        self.service_options = service_options or ServiceOptions()
        self.state: State | None = None
        self.service: CustomerManagementService | None = None
        self.server: SoapServer | None = None
        self.seeded: WorldSummary | None = None
        self._stop_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    def open(self) -> "Simulator":
        """Open the state (seeding the world when needed) and build the server, without serving yet."""
        if self.server is not None:
            return self
        self.state = State(self.state_path)
        try:
            if self.frozen_at is not None:
                self.state.freeze(self.frozen_at)
            if self.reset:
                self.seeded = seed_world(self.state, seed=self.seed, scale=self.scale)
            else:
                self.seeded = ensure_world(self.state, seed=self.seed, scale=self.scale)
            self.service = CustomerManagementService(self.state, self.service_options)
            self.server = SoapServer(self.service.handle, port=self.port,
                                     before_request=self._hook if (self.latency_ms > 0 or self.faults) else None)
            TokenEndpoint(self.state).mount(self.server)
        except BaseException:
            self.state.close()
            self.state = None
            raise
        return self

    def start(self) -> "Simulator":
        """Open and serve in a background thread."""
        self.open()
        assert self.server is not None
        self.server.start()
        return self

    def serve_forever(self) -> None:
        """Open and serve in this thread until ``stop()`` from another thread or KeyboardInterrupt."""
        self.open()
        assert self.server is not None
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the state (idempotent, safe from any thread)."""
        with self._stop_lock:
            server, self.server = self.server, None
            state, self.state = self.state, None
        if server is not None:
            server.stop()
        if state is not None:
            state.close()

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _hook(self, ctx: HookContext) -> tuple | None:
        """Injected latency, then injected faults (``simulator serve --latency/--faults``)."""
        if self.latency_ms > 0:
            time.sleep(self.latency_ms / 1000)
        return self.faults(ctx) if self.faults is not None else None

    # -- addresses ----------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The SOAP endpoint, for ``ServiceClient(..., location=sim.url)``."""
        return self._server.url

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def token_url(self) -> str:
        from .auth import TOKEN_PATH

        return self._server.base_url + TOKEN_PATH

    @property
    def _server(self) -> SoapServer:
        if self.server is None:
            raise RuntimeError("The simulator is not open; call start() or use it as a context manager.")
        return self.server

    @property
    def _state(self) -> State:
        if self.state is None:
            raise RuntimeError("The simulator is not open; call start() or use it as a context manager.")
        return self.state

    # -- identities and credentials -----------------------------------------------------------------------------------

    def users(self) -> list[Identity]:
        return identities(self._state)

    def tokens(self, user: int | str) -> IssuedTokens:
        """Fresh tokens for a demo user (id or username): access valid one simulated hour, plus a refresh token."""
        return issue_tokens(self._state, user)

    def access_token(self, user: int | str) -> str:
        return self.tokens(user).access_token

    def authorization(self, user: int | str, *, token_refreshed_callback: Any = None) -> Any:
        """A ``SimulatorAuthorization`` for ``user`` holding fresh tokens (refreshes through this simulator)."""
        return make_authorization(self.url, self.tokens(user), token_refreshed_callback=token_refreshed_callback)

    def authorization_data(self, user: int | str, *, token_refreshed_callback: Any = None) -> Any:
        """bingads ``AuthorizationData`` for ``user``: the sandbox developer token and a SimulatorAuthorization."""
        from bingads.authorization import AuthorizationData

        row = resolve_user(self._state, user)
        return AuthorizationData(customer_id=row.customer_id, developer_token=SANDBOX_DEVELOPER_TOKEN,
                                 authentication=self.authorization(row.id,
                                                                   token_refreshed_callback=token_refreshed_callback))

    def service_client(self, user: int | str, **suds_options: Any) -> Any:
        """A Customer Management ``ServiceClient`` signed in as ``user`` and pointed at this simulator."""
        from bingads.service_client import ServiceClient

        return ServiceClient("CustomerManagementService", 13, authorization_data=self.authorization_data(user),
                             location=self.url, **suds_options)

    # -- time ---------------------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._state.now()

    def advance(self, duration: str | timedelta) -> tuple[datetime, int]:
        """Move the simulated clock and apply the transitions that came due: (new now, transitions applied)."""
        d = parse_duration(duration) if isinstance(duration, str) else duration
        return _advance(self._state, d)

    def reseed(self, *, seed: int | None = None, scale: int | None = None) -> WorldSummary:
        """Replace the world (same seed/scale unless given)."""
        self.seeded = seed_world(self._state, seed=self.seed if seed is None else seed,
                                 scale=self.scale if scale is None else scale)
        return self.seeded
