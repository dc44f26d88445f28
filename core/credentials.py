"""Live sign-in: the OAuth flow of the official SDK, and where its secrets are kept.

What is stored, per live profile (``live-<customer id>``):

* a **record** (not secret): environment, client id, who signed in (user and customer ids and names), when, and
  where the secrets are — ``<config dir>/credentials/<profile>.json``, mode 0600;
* the **secrets** (refresh token, developer token): in the operating system's keyring when the ``keyring`` module is
  importable and has a usable backend, else in ``<config dir>/credentials/<profile>.secret.json`` with mode 0600.
  ``LINKDESK_KEYRING=0`` forces the file (headless machines, tests).

Tokens are never printed, logged or put in an exception message: :class:`Secrets` hides them from ``repr``, and every
error raised here is a sentence without them. Tokens the SDK refreshes are written back through its
``token_refreshed_callback`` (:func:`make_grant`'s ``on_refresh``).

The token endpoint is injectable (``token_url``) so that the flow can run against the built-in simulator's loopback
token endpoint; only ``https://`` URLs and ``http://`` on loopback are accepted.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, urlparse

from . import paths

ENV_DEVELOPER_TOKEN = "LINKDESK_DEVELOPER_TOKEN"
ENV_CLIENT_ID = "LINKDESK_CLIENT_ID"
ENV_KEYRING = "LINKDESK_KEYRING"
KEYRING_SERVICE = "linkdesk"
ENVIRONMENTS = ("production", "sandbox")


class CredentialsError(Exception):
    """Something about the sign-in failed; the message is one sentence a person can act on (never a token)."""


class NotSignedIn(CredentialsError):
    """No stored sign-in for the requested profile."""


@dataclass(frozen=True)
class Secrets:
    """The secret half of a sign-in. ``repr`` never shows the values."""

    refresh_token: str = field(repr=False)
    developer_token: str = field(repr=False)

    def __repr__(self) -> str:  # dataclass repr=False on fields would still print the class; be explicit
        return "Secrets(<hidden>)"


@dataclass(frozen=True)
class SignIn:
    """The non-secret record of a live sign-in."""

    profile: str
    environment: str
    client_id: str
    customer_id: int
    customer_name: str
    user_id: int
    user_name: str
    signed_in_at: str  # ISO 8601, UTC
    store: str = "file"  # where the secrets are: "keyring" or "file"
    service_url: str | None = None  # None: Microsoft's endpoint for the environment
    token_url: str | None = None  # None: Microsoft's token endpoint
    role_id: int | None = None  # the user's role at its customer when it signed in

    @staticmethod
    def profile_for(customer_id: int) -> str:
        return f"live-{int(customer_id)}"


# --------------------------------------------------------------------------------------------------------------------
# Secret stores
# --------------------------------------------------------------------------------------------------------------------


class SecretStore(Protocol):
    name: str

    def get(self, profile: str) -> Secrets | None: ...
    def set(self, profile: str, value: Secrets) -> None: ...
    def delete(self, profile: str) -> None: ...


def _credentials_dir() -> Path:
    d = paths.config_dir() / "credentials"
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def _write_private(target: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with mode 0600."""
    paths.write_private_json(target, data, prefix=".cred-")


class FileStore:
    """Secrets in a 0600 JSON file per profile under the config directory."""

    name = "file"

    def _path(self, profile: str) -> Path:
        return _credentials_dir() / f"{paths.validate_profile(profile)}.secret.json"

    def get(self, profile: str) -> Secrets | None:
        try:
            data = json.loads(self._path(profile).read_text(encoding="utf-8"))
            return Secrets(str(data["refresh_token"]), str(data["developer_token"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise CredentialsError(f"The stored sign-in of {profile} is damaged; sign in again with "
                                   "`linkdesk auth login`.") from None

    def set(self, profile: str, value: Secrets) -> None:
        _write_private(self._path(profile), {"refresh_token": value.refresh_token,
                                             "developer_token": value.developer_token})

    def delete(self, profile: str) -> None:
        try:
            self._path(profile).unlink()
        except FileNotFoundError:
            pass


class KeyringStore:
    """Secrets in the OS keyring (service ``linkdesk``, one entry per profile)."""

    name = "keyring"

    def __init__(self, backend: Any):
        self._kr = backend

    def get(self, profile: str) -> Secrets | None:
        try:
            raw = self._kr.get_password(KEYRING_SERVICE, profile)
        except Exception as exc:  # keyring backends raise their own types
            raise CredentialsError(f"The system keyring could not be read ({type(exc).__name__}); unlock it, or "
                                   f"set {ENV_KEYRING}=0 and sign in again to keep the sign-in in a file.") from None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Secrets(str(data["refresh_token"]), str(data["developer_token"]))
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"The sign-in of {profile} in the keyring is damaged; sign in again with "
                                   "`linkdesk auth login`.") from None

    def set(self, profile: str, value: Secrets) -> None:
        payload = json.dumps({"refresh_token": value.refresh_token, "developer_token": value.developer_token})
        try:
            self._kr.set_password(KEYRING_SERVICE, profile, payload)
        except Exception as exc:
            raise CredentialsError(f"The system keyring refused to store the sign-in ({type(exc).__name__}); set "
                                   f"{ENV_KEYRING}=0 to keep it in a private file instead.") from None

    def delete(self, profile: str) -> None:
        try:
            self._kr.delete_password(KEYRING_SERVICE, profile)
        except Exception:  # absent entry: nothing to delete
            pass


def keyring_backend() -> Any | None:
    """The ``keyring`` module when it is importable, enabled and has a usable backend; else None."""
    if os.environ.get(ENV_KEYRING, "").strip().lower() in ("0", "no", "off", "false"):
        return None
    try:
        import keyring  # optional dependency
        from keyring.backends import fail
    except Exception:
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
            return None
    except Exception:
        return None
    return keyring


def default_store() -> SecretStore:
    """The keyring when usable, else the private file."""
    backend = keyring_backend()
    return KeyringStore(backend) if backend is not None else FileStore()


def store_named(name: str) -> SecretStore:
    if name == "keyring":
        backend = keyring_backend()
        if backend is None:
            raise CredentialsError("This sign-in was kept in the system keyring, which is not available now; "
                                   "sign in again with `linkdesk auth login`.")
        return KeyringStore(backend)
    return FileStore()


# --------------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------------


def _record_path(profile: str) -> Path:
    return _credentials_dir() / f"{paths.validate_profile(profile)}.json"


def save(record: SignIn, value: Secrets, store: SecretStore | None = None) -> SignIn:
    """Store a sign-in (secrets first, so a record never points at missing secrets). Returns the stored record."""
    store = store or default_store()
    store.set(record.profile, value)
    stored = SignIn(**{**asdict(record), "store": store.name})
    _write_private(_record_path(record.profile), asdict(stored))
    return stored


def load_record(profile: str) -> SignIn:
    """The record of a profile; raises NotSignedIn when there is none."""
    try:
        data = json.loads(_record_path(profile).read_text(encoding="utf-8"))
        return SignIn(**data)
    except FileNotFoundError:
        raise NotSignedIn(f"There is no sign-in for {profile}; sign in with `linkdesk auth login`.") from None
    except (OSError, ValueError, TypeError):
        raise CredentialsError(f"The stored sign-in of {profile} is damaged; sign in again with "
                               "`linkdesk auth login`.") from None


def load(profile: str) -> tuple[SignIn, Secrets]:
    """A profile's record and secrets; raises NotSignedIn / CredentialsError with a sentence."""
    record = load_record(profile)
    value = store_named(record.store).get(profile)
    if value is None:
        raise NotSignedIn(f"The sign-in of {profile} has no stored token any more; sign in again with "
                          "`linkdesk auth login`.")
    return record, value


def update_refresh_token(profile: str, refresh_token: str) -> None:
    """Keep the refresh token the SDK just received (rotation), leaving the rest of the sign-in as is."""
    record = load_record(profile)
    store = store_named(record.store)
    current = store.get(profile)
    if current is None or not refresh_token or current.refresh_token == refresh_token:
        return
    store.set(profile, Secrets(refresh_token, current.developer_token))


def profiles() -> list[SignIn]:
    """Every stored sign-in, newest first."""
    out = []
    for p in sorted(_credentials_dir().glob("live-*.json")):
        if p.name.endswith(".secret.json"):
            continue
        try:
            out.append(load_record(p.stem))
        except (CredentialsError, ValueError):
            continue
    return sorted(out, key=lambda r: r.signed_in_at, reverse=True)


def delete(profile: str) -> bool:
    """Forget a sign-in: its secrets (file and keyring, wherever they are) and its record. True when there was one."""
    existed = _record_path(profile).exists()
    stores: list[SecretStore] = [FileStore()]
    backend = keyring_backend()
    if backend is not None:
        stores.append(KeyringStore(backend))
    for store in stores:
        store.delete(profile)
    try:
        _record_path(profile).unlink()
    except FileNotFoundError:
        pass
    return existed


# --------------------------------------------------------------------------------------------------------------------
# The OAuth grant
# --------------------------------------------------------------------------------------------------------------------


def check_token_url(url: str) -> str:
    """Accept https anywhere and http only on loopback (the simulator); else raise CredentialsError."""
    u = urlparse(url)
    if u.scheme == "https" and u.hostname:
        return url
    if u.scheme == "http" and u.hostname in ("127.0.0.1", "localhost", "::1"):
        return url
    raise CredentialsError(f"The token URL must use https (or http on 127.0.0.1 for the simulator), not {url!r}.")


def make_grant(client_id: str, environment: str = "production", *, token_url: str | None = None,
               refresh_token: str | None = None, on_refresh: Callable[[str], None] | None = None,
               grant_class: type | None = None) -> Any:
    """An ``OAuthDesktopMobileAuthCodeGrant`` (or ``grant_class``) for the SDK, refreshing through ``token_url``.

    ``on_refresh(refresh_token)`` runs whenever the SDK receives tokens (consent, refresh, automatic refresh on 109),
    so a rotated refresh token is never lost. Imports bingads (about a second): call it off the UI path.
    """
    if environment not in ENVIRONMENTS:
        raise CredentialsError(f"The environment must be production or sandbox, not {environment!r}.")
    from bingads.authorization import OAuthDesktopMobileAuthCodeGrant, OAuthTokens

    if grant_class is None:
        grant_class = OAuthDesktopMobileAuthCodeGrant
        if token_url is not None:
            grant_class = _token_url_grant_class(check_token_url(token_url))
    tokens = OAuthTokens(refresh_token=refresh_token) if refresh_token else None
    grant = grant_class(client_id=client_id, oauth_tokens=tokens, env=environment)

    def callback(t: Any) -> None:
        if on_refresh is not None and getattr(t, "refresh_token", None):
            on_refresh(t.refresh_token)

    grant.token_refreshed_callback = callback
    return grant


def _token_url_grant_class(token_url: str) -> type:
    """A desktop grant whose token requests go to ``token_url`` (the SDK hard-codes Microsoft's endpoint)."""
    from bingads.authorization import OAuthDesktopMobileAuthCodeGrant, OAuthTokens
    from bingads.exceptions import OAuthTokenRequestException

    def post(data: dict[str, str]) -> Any:
        import requests

        try:
            r = requests.post(token_url, data=data, timeout=30)
        except requests.RequestException as exc:
            raise CredentialsError(f"The token endpoint could not be reached ({type(exc).__name__}).") from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200:
            raise OAuthTokenRequestException(body.get("error", f"http_{r.status_code}"),
                                             body.get("error_description", "token request refused"))
        return OAuthTokens(body["access_token"], int(body.get("expires_in", 3600)), body.get("refresh_token"), body)

    class TokenUrlGrant(OAuthDesktopMobileAuthCodeGrant):
        def request_oauth_tokens_by_response_uri(self, response_uri: str, **kwargs: Any) -> Any:
            code = parse_qs(urlparse(response_uri).query).get("code", [None])[0]
            if not code:
                raise ValueError("The address has no code parameter.")
            self._oauth_tokens = post({"client_id": self.client_id, "grant_type": "authorization_code",
                                       "code": code, "redirect_uri": self.redirection_uri})
            if self.token_refreshed_callback is not None:
                self.token_refreshed_callback(self._oauth_tokens)
            return self._oauth_tokens

        def request_oauth_tokens_by_refresh_token(self, refresh_token: str) -> Any:
            self._oauth_tokens = post({"client_id": self.client_id, "grant_type": "refresh_token",
                                       "refresh_token": refresh_token})
            if self.token_refreshed_callback is not None:
                self.token_refreshed_callback(self._oauth_tokens)
            return self._oauth_tokens

    return TokenUrlGrant


@dataclass
class LoginFlow:
    """One consent round: show :attr:`consent_url`, then :meth:`finish` with the address the browser ended on."""

    grant: Any
    state: str
    latest_refresh_token: list[str] = field(default_factory=list, repr=False)

    @property
    def consent_url(self) -> str:
        return self.grant.get_authorization_endpoint()

    def finish(self, redirect_url: str) -> None:
        """Exchange the code in ``redirect_url`` for tokens; raises CredentialsError with a sentence."""
        url = redirect_url.strip()
        query = parse_qs(urlparse(url).query)
        if "error" in query:
            desc = (query.get("error_description") or query["error"])[0]
            raise CredentialsError(f"The sign-in was not completed: {desc[:200]}.")
        if not query.get("code"):
            raise CredentialsError("That address has no sign-in code in it; paste the whole address the browser "
                                   "showed after you signed in (it contains '?code=').")
        if query.get("state", [None])[0] != self.state:
            raise CredentialsError("That address belongs to a different sign-in attempt (its state does not match); "
                                   "start `linkdesk auth login` again and use the new address.")
        try:
            self.grant.request_oauth_tokens_by_response_uri(url)
        except CredentialsError:
            raise
        except Exception as exc:
            raise CredentialsError(f"Microsoft refused the sign-in code ({_oauth_reason(exc)}); start `linkdesk "
                                   "auth login` again.") from None
        if not self.latest_refresh_token:
            raise CredentialsError("The sign-in returned no refresh token; check that the app registration allows "
                                   "offline access.")

    @property
    def refresh_token(self) -> str:
        return self.latest_refresh_token[-1]


def _oauth_reason(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(code) if code else type(exc).__name__


def begin_login(client_id: str, environment: str = "production", *, token_url: str | None = None,
                grant: Any = None) -> LoginFlow:
    """Start a sign-in: a grant with a fresh random ``state`` (checked in :meth:`LoginFlow.finish`).

    ``grant``: an already built authorization-code grant to use instead (e.g. the simulator's, whose consent page
    and token endpoint are on 127.0.0.1)."""
    if not client_id or not client_id.strip():
        raise CredentialsError(f"Give your app's client id with --client-id or {ENV_CLIENT_ID}.")
    holder: list[str] = []
    if grant is None:
        grant = make_grant(client_id.strip(), environment, token_url=token_url, on_refresh=holder.append)
    else:
        grant.token_refreshed_callback = lambda t: holder.append(t.refresh_token) if t.refresh_token else None
    state = _secrets.token_urlsafe(16)
    grant.state = state
    return LoginFlow(grant, state, holder)


def now_iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")
