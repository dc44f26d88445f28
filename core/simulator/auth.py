"""Sign-in against the simulator: demo access tokens, an OAuth token endpoint on the same loopback server, and a
bingads grant class that refreshes through it.

Tokens
    Every demo user gets access tokens valid for **one simulated hour** (after ``linkdesk simulator advance 2h`` they
    are refused with 109 AuthenticationTokenExpired, exactly like an expired Microsoft token) and refresh tokens valid
    for 90 simulated days. The state file keeps only their SHA-256 hashes. These are simulator-only demo tokens; they
    mean nothing to Microsoft.

Endpoints (mounted on the simulator's own 127.0.0.1 server)
    ``POST /oauth2/token`` — form-encoded, like Microsoft's ``/oauth2/v2.0/token``: ``grant_type=refresh_token``
    (``refresh_token``, ``client_id``) or ``grant_type=authorization_code`` (``code``, ``client_id``,
    ``redirect_uri``). Replies JSON ``{"token_type", "scope", "expires_in", "ext_expires_in", "access_token",
    "refresh_token"}``; errors are HTTP 400 ``{"error", "error_description"}`` (``invalid_grant`` for an unknown or
    expired refresh token), which the SDK raises as ``OAuthTokenRequestException``.

    ``GET /oauth2/authorize?client_id=…&redirect_uri=…&login_hint=<user id or username>[&state=…]`` — the consent
    step: it consents at once for the user named by ``login_hint`` and sends the browser on to
    ``redirect_uri?code=…&state=…`` (an HTML page that follows the link at once; with ``Accept: application/json``
    the reply is ``{"location": "<that URL>"}`` instead — the server's route interface cannot send a 302 Location
    header). Without ``login_hint`` it shows the list of demo users as links.

Using the simulator from your own bingads scripts::

    # terminal 1
    linkdesk simulator serve --port 8765
    # your script
    from bingads.authorization import AuthorizationData
    from bingads.service_client import ServiceClient
    from linkdesk.core.simulator.auth import authorization_for, SANDBOX_DEVELOPER_TOKEN

    url = "http://127.0.0.1:8765/Api/CustomerManagement/v13/CustomerManagementService.svc"
    auth = authorization_for(url, "admin@contoso.example")          # a SimulatorAuthorization
    data = AuthorizationData(developer_token=SANDBOX_DEVELOPER_TOKEN, authentication=auth)
    cm = ServiceClient("CustomerManagementService", 13, authorization_data=data, location=url)
    print(cm.GetUser(UserId=None).User.UserName)

The SDK refreshes on 109 by itself: ``SimulatorAuthorization`` is an ``OAuthDesktopMobileAuthCodeGrant`` whose
``request_oauth_tokens_by_refresh_token`` and ``request_oauth_tokens_by_response_uri`` post to the simulator's token
endpoint instead of login.microsoftonline.com. ``bingads`` is imported only when the class is first used.
"""

from __future__ import annotations

import html
import http.client
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from .service import SANDBOX_DEVELOPER_TOKEN
from .state import State, UserRow

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "AUTHORIZE_PATH",
    "DEFAULT_CLIENT_ID",
    "IssuedTokens",
    "SANDBOX_DEVELOPER_TOKEN",
    "SimulatorAuthorization",
    "TOKEN_PATH",
    "TokenEndpoint",
    "UnknownUser",
    "authorization_for",
    "base_url_of",
    "issue_access_tokens",
    "issue_tokens",
    "make_authorization",
    "resolve_user",
    "simulator_authorization_class",
]

ACCESS_TOKEN_LIFETIME = timedelta(hours=1)
REFRESH_TOKEN_LIFETIME = timedelta(days=90)
CODE_LIFETIME = timedelta(minutes=10)
TOKEN_PATH = "/oauth2/token"
AUTHORIZE_PATH = "/oauth2/authorize"
DEFAULT_CLIENT_ID = "linkdesk-simulator"
#: Where the authorize step sends the browser back to (the SDK's desktop redirect; only its query matters).
DEFAULT_REDIRECT_URI = "https://login.microsoftonline.com/common/oauth2/nativeclient"
SCOPE = "https://ads.microsoft.com/msads.manage offline_access"


class UnknownUser(LookupError):
    """No demo user matches; the message says how to list them."""


@dataclass(frozen=True)
class IssuedTokens:
    """A fresh access token (one simulated hour) and, optionally, a refresh token. ``repr`` hides both."""

    user_id: int
    access_token: str
    refresh_token: str | None
    expires_in: int
    expires_at: datetime

    def __repr__(self) -> str:
        return f"IssuedTokens(user_id={self.user_id}, expires_at={self.expires_at.isoformat()}, tokens=<hidden>)"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"token_type": "Bearer", "scope": SCOPE, "expires_in": self.expires_in,
                               "ext_expires_in": self.expires_in, "access_token": self.access_token}
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


def resolve_user(state: State, who: int | str) -> UserRow:
    """A demo user by id (int or digits) or username (case-insensitive)."""
    with state.read() as tx:
        user = None
        if isinstance(who, int) or (isinstance(who, str) and who.strip().isdigit()):
            user = tx.user(int(who))
        elif isinstance(who, str) and who.strip():
            user = tx.user_by_name(who.strip())
    if user is None:
        raise UnknownUser(f"No simulator user {who!r}. Run `linkdesk simulator users` to list the demo users and "
                          "their ids.")
    return user


def issue_tokens(state: State, who: int | str, *, refresh: bool = True, client_id: str | None = None,
                 now: datetime | None = None) -> IssuedTokens:
    """Issue an access token (valid one simulated hour from now) and, with ``refresh``, a refresh token."""
    user = resolve_user(state, who)
    access = "simAT." + secrets.token_urlsafe(24)
    refresh_token = "simRT." + secrets.token_urlsafe(32) if refresh else None
    with state.write() as tx:
        at = now or tx.clock().now()
        # Forget only tokens long past: an expired access token must still be known, so the service answers 109
        # (expired: the SDK refreshes) rather than 105 (unknown), even after `advance 31d`.
        tx.purge_tokens(at - REFRESH_TOKEN_LIFETIME)
        tx.store_token(access, "access", user.id, at, at + ACCESS_TOKEN_LIFETIME, client_id)
        if refresh_token:
            tx.store_token(refresh_token, "refresh", user.id, at, at + REFRESH_TOKEN_LIFETIME, client_id)
    return IssuedTokens(user.id, access, refresh_token, int(ACCESS_TOKEN_LIFETIME.total_seconds()),
                        at + ACCESS_TOKEN_LIFETIME)


def issue_access_tokens(state: State, user_ids: list[int], *, now: datetime | None = None) -> list[IssuedTokens]:
    """Access tokens (no refresh tokens) for many users at once, in one transaction: ``simulator users``."""
    out: list[IssuedTokens] = []
    with state.write() as tx:
        at = now or tx.clock().now()
        # Forget only tokens long past: an expired access token must still be known, so the service answers 109
        # (expired: the SDK refreshes) rather than 105 (unknown), even after `advance 31d`.
        tx.purge_tokens(at - REFRESH_TOKEN_LIFETIME)
        for user_id in user_ids:
            access = "simAT." + secrets.token_urlsafe(24)
            tx.store_token(access, "access", user_id, at, at + ACCESS_TOKEN_LIFETIME)
            out.append(IssuedTokens(user_id, access, None, int(ACCESS_TOKEN_LIFETIME.total_seconds()),
                                    at + ACCESS_TOKEN_LIFETIME))
    return out


# --------------------------------------------------------------------------------------------------- the endpoints


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json; charset=utf-8", json.dumps(payload).encode("utf-8")


def _oauth_error(error: str, description: str, status: int = 400) -> tuple[int, str, bytes]:
    return _json(status, {"error": error, "error_description": description})


class TokenEndpoint:
    """``/oauth2/token`` and ``/oauth2/authorize`` for a SoapServer (``mount(server)``)."""

    def __init__(self, state: State):
        self.state = state

    def mount(self, server: Any) -> None:
        server.add_route("POST", TOKEN_PATH, self.token)
        server.add_route("GET", AUTHORIZE_PATH, self.authorize)

    def token(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        ctype = headers.get("content-type", "")
        if "application/x-www-form-urlencoded" not in ctype.lower():
            return _oauth_error("invalid_request", "The request body must be application/x-www-form-urlencoded.")
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return _oauth_error("invalid_request", "The request body is not UTF-8.")
        client_id = form.get("client_id", "").strip()
        if not client_id:
            return _oauth_error("invalid_request", "client_id is required.")
        grant = form.get("grant_type")
        with self.state.read() as tx:
            now = tx.clock().now()
        if grant == "refresh_token":
            token = form.get("refresh_token", "")
            with self.state.read() as tx:
                found = tx.token(token) if token else None
            if found is None or found[0] != "refresh":
                return _oauth_error("invalid_grant", "The refresh token is not valid; sign in again.")
            if now >= found[2]:
                return _oauth_error("invalid_grant", "The refresh token has expired due to inactivity; sign in again.")
            issued = issue_tokens(self.state, found[1], client_id=client_id, now=now)
            return _json(200, issued.as_json())
        if grant == "authorization_code":
            code = form.get("code", "")
            with self.state.write() as tx:
                found = tx.token(code) if code else None
                if found is None or found[0] != "code" or found[5]:
                    return _oauth_error("invalid_grant", "The authorization code is not valid or was already used.")
                if now >= found[2]:
                    return _oauth_error("invalid_grant", "The authorization code has expired; sign in again.")
                if found[4] and form.get("redirect_uri") and form["redirect_uri"] != found[4]:
                    return _oauth_error("invalid_grant", "redirect_uri does not match the authorization request.")
                tx.mark_token_used(code)
            issued = issue_tokens(self.state, found[1], client_id=client_id, now=now)
            return _json(200, issued.as_json())
        return _oauth_error("unsupported_grant_type",
                            f"grant_type {grant!r} is not supported; use refresh_token or authorization_code.")

    def authorize(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}
        client_id = query.get("client_id", "").strip()
        redirect_uri = query.get("redirect_uri") or DEFAULT_REDIRECT_URI
        if not client_id:
            return 400, "text/plain; charset=utf-8", b"client_id is required.\n"
        hint = query.get("login_hint", "").strip()
        if not hint:
            return 200, "text/html; charset=utf-8", self._chooser(query).encode("utf-8")
        try:
            user = resolve_user(self.state, hint)
        except UnknownUser as exc:
            return 400, "text/plain; charset=utf-8", (str(exc) + "\n").encode("utf-8")
        code = "simAC." + secrets.token_urlsafe(24)
        with self.state.write() as tx:
            now = tx.clock().now()
            tx.store_token(code, "code", user.id, now, now + CODE_LIFETIME, client_id, redirect_uri)
        params = {"code": code}
        if "state" in query:
            params["state"] = query["state"]
        sep = "&" if urlsplit(redirect_uri).query else "?"
        location = f"{redirect_uri}{sep}{urlencode(params)}"
        if "application/json" in headers.get("accept", ""):
            return _json(200, {"location": location})
        link = html.escape(location, quote=True)
        page = (f'<!doctype html><meta http-equiv="refresh" content="0;url={link}"><title>Signed in</title>'
                f'<p>Signed in to the simulator as {html.escape(user.username)}. Continue to <a href="{link}">{link}</a>'
                " and paste that address where linkdesk asks for it.</p>")
        return 200, "text/html; charset=utf-8", page.encode("utf-8")

    def _chooser(self, query: dict[str, str]) -> str:
        with self.state.read() as tx:
            identities = tx.identities()[:200]
        rows = []
        for user, customer, _role in identities:
            q = dict(query, login_hint=user.username)
            rows.append(f'<li><a href="{AUTHORIZE_PATH}?{html.escape(urlencode(q))}">{html.escape(user.username)}</a>'
                        f" — {html.escape(customer.name)}</li>")
        return ("<!doctype html><title>linkdesk simulator sign-in</title><h1>Sign in to the simulator as…</h1>"
                f"<ul>{''.join(rows)}</ul>")


# ------------------------------------------------------------------------------------------------ the grant class


def base_url_of(url: str) -> str:
    """``http://127.0.0.1:PORT`` of a simulator URL (service endpoint or base)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not a simulator URL; expected http://127.0.0.1:PORT/... as printed by "
                         "`linkdesk simulator serve`.")
    return f"{parts.scheme}://{parts.netloc}"


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One loopback HTTP exchange with http.client: no proxies, no redirects followed."""
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


_CLASS: type | None = None


def simulator_authorization_class() -> type:
    """Build (once) and return ``SimulatorAuthorization``; imports bingads on first use."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from bingads.authorization import OAuthDesktopMobileAuthCodeGrant, OAuthTokenRequestException, OAuthTokens

    class SimulatorAuthorization(OAuthDesktopMobileAuthCodeGrant):
        """An OAuthDesktopMobileAuthCodeGrant that talks to the simulator's token endpoint (see module docstring)."""

        def __init__(self, simulator_url: str, client_id: str = DEFAULT_CLIENT_ID, oauth_tokens: Any = None,
                     token_refreshed_callback: Callable[[Any], None] | None = None):
            super().__init__(client_id=client_id, oauth_tokens=oauth_tokens, env="production")
            self.simulator_base_url = base_url_of(simulator_url)
            self.token_refreshed_callback = token_refreshed_callback

        @property
        def token_url(self) -> str:
            return self.simulator_base_url + TOKEN_PATH

        def get_authorization_endpoint(self) -> str:
            params = {"client_id": self.client_id, "response_type": "code", "redirect_uri": self.redirection_uri,
                      "scope": SCOPE}
            if self.state is not None:
                params["state"] = self.state
            return f"{self.simulator_base_url}{AUTHORIZE_PATH}?{urlencode(params)}"

        def _request_tokens(self, form: dict[str, str]) -> Any:
            status, _headers, raw = _http("POST", self.token_url, urlencode(form).encode("ascii"),
                                          {"Content-Type": "application/x-www-form-urlencoded"})
            try:
                data = json.loads(raw.decode("utf-8"))
            except ValueError:
                data = {}
            if status != 200 or "access_token" not in data:
                raise OAuthTokenRequestException(data.get("error", f"http_{status}"),
                                                 data.get("error_description", "The simulator refused the request."))
            self._oauth_tokens = OAuthTokens(data["access_token"], int(data["expires_in"]),
                                             data.get("refresh_token"), data)
            if self.token_refreshed_callback is not None:
                self.token_refreshed_callback(self._oauth_tokens)
            return self._oauth_tokens

        def request_oauth_tokens_by_refresh_token(self, refresh_token: str) -> Any:
            return self._request_tokens({"grant_type": "refresh_token", "refresh_token": refresh_token or "",
                                         "client_id": self.client_id, "scope": SCOPE})

        def request_oauth_tokens_by_response_uri(self, response_uri: str, **kwargs: Any) -> Any:
            codes = parse_qs(urlsplit(response_uri).query).get("code")
            if not codes:
                raise ValueError("The redirect URL has no code parameter; paste the whole URL the browser ended on.")
            return self._request_tokens({"grant_type": "authorization_code", "code": codes[0],
                                         "client_id": self.client_id, "redirect_uri": self.redirection_uri})

        def __repr__(self) -> str:
            return f"SimulatorAuthorization({self.simulator_base_url!r}, client_id={self.client_id!r})"

    _CLASS = SimulatorAuthorization
    return _CLASS


def make_authorization(simulator_url: str, tokens: IssuedTokens | None = None, *,
                       client_id: str = DEFAULT_CLIENT_ID,
                       token_refreshed_callback: Callable[[Any], None] | None = None) -> Any:
    """A ``SimulatorAuthorization`` holding ``tokens`` (issued in-process, e.g. by ``Simulator.tokens``)."""
    cls = simulator_authorization_class()
    oauth = None
    if tokens is not None:
        from bingads.authorization import OAuthTokens

        oauth = OAuthTokens(tokens.access_token, tokens.expires_in, tokens.refresh_token)
    return cls(simulator_url, client_id=client_id, oauth_tokens=oauth, token_refreshed_callback=token_refreshed_callback)


def authorization_for(simulator_url: str, user: int | str, *, client_id: str = DEFAULT_CLIENT_ID,
                      token_refreshed_callback: Callable[[Any], None] | None = None) -> Any:
    """Sign in to a running simulator as ``user`` (id or username) over HTTP; returns a SimulatorAuthorization.

    Runs the authorization-code flow against the simulator: GET /oauth2/authorize with ``login_hint`` (consent is
    automatic), then POST /oauth2/token. Works for a simulator in another process (``linkdesk simulator serve``).
    """
    auth = make_authorization(simulator_url, client_id=client_id, token_refreshed_callback=token_refreshed_callback)
    consent = auth.get_authorization_endpoint() + "&" + urlencode({"login_hint": str(user)})
    status, _headers, raw = _http("GET", consent, headers={"Accept": "application/json"})
    location = None
    if status == 200:
        try:
            location = json.loads(raw.decode("utf-8")).get("location")
        except ValueError:
            location = None
    if not location:
        message = raw.decode("utf-8", "replace").strip() or f"HTTP {status}"
        if status == 400:
            raise UnknownUser(message)
        raise RuntimeError(f"The simulator at {auth.simulator_base_url} did not sign in {user!r}: {message}")
    auth.request_oauth_tokens_by_response_uri(location)
    return auth


def __getattr__(name: str) -> Any:  # PEP 562: `from ...auth import SimulatorAuthorization` imports bingads lazily
    if name == "SimulatorAuthorization":
        return simulator_authorization_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
