from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from linkdesk.core import credentials as cr

RT1, RT2, AT1, AT2 = "RT-secret-one-5f1c", "RT-secret-two-9a7e", "AT-secret-one-77d2", "AT-secret-two-3b0f"


@pytest.fixture(autouse=True)
def _no_keyring(monkeypatch):
    monkeypatch.setenv(cr.ENV_KEYRING, "0")


class _TokenHandler(BaseHTTPRequestHandler):
    issued: list[dict] = []

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(n).decode()).items()}
        self.issued.append(form)
        if form.get("grant_type") == "authorization_code" and form.get("code") == "good-code":
            body, status = {"access_token": AT1, "refresh_token": RT1, "expires_in": 3600}, 200
        elif form.get("grant_type") == "refresh_token" and form.get("refresh_token") in (RT1, RT2):
            body, status = {"access_token": AT2, "refresh_token": RT2, "expires_in": 3600}, 200
        else:
            body, status = {"error": "invalid_grant", "error_description": "nope"}, 400
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *a):
        pass


@pytest.fixture
def token_url():
    _TokenHandler.issued = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/token"
    srv.shutdown()
    srv.server_close()


def _record(customer_id=4242):
    return cr.SignIn(profile=cr.SignIn.profile_for(customer_id), environment="sandbox", client_id="cid",
                     customer_id=customer_id, customer_name="Contoso", user_id=7, user_name="ann",
                     signed_in_at="2025-11-03T12:00:00+00:00")


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_file_store_is_private_and_round_trips():
    stored = cr.save(_record(), cr.Secrets(RT1, "DEVTOKEN-x"))
    assert stored.store == "file"
    d = cr._credentials_dir()
    assert _mode(d) == 0o700
    for p in d.iterdir():
        assert _mode(p) == 0o600, p
    rec, sec = cr.load("live-4242")
    assert rec == stored and sec.refresh_token == RT1 and sec.developer_token == "DEVTOKEN-x"
    assert RT1 not in repr(sec) and "DEVTOKEN" not in repr(sec) and RT1 not in repr(rec)
    # the record file itself never holds a token
    assert RT1 not in (d / "live-4242.json").read_text()


def test_rotation_keeps_the_new_refresh_token():
    cr.save(_record(), cr.Secrets(RT1, "DEV"))
    cr.update_refresh_token("live-4242", RT2)
    assert cr.load("live-4242")[1].refresh_token == RT2
    assert _mode(cr._credentials_dir() / "live-4242.secret.json") == 0o600


def test_profiles_listing_and_logout():
    cr.save(_record(1001), cr.Secrets(RT1, "DEV"))
    cr.save(_record(1002), cr.Secrets(RT2, "DEV"))
    assert {r.profile for r in cr.profiles()} == {"live-1001", "live-1002"}
    assert cr.delete("live-1001") is True
    assert cr.delete("live-1001") is False
    with pytest.raises(cr.NotSignedIn, match="auth login"):
        cr.load("live-1001")
    assert not (cr._credentials_dir() / "live-1001.secret.json").exists()


def test_damaged_secret_file_is_a_sentence():
    cr.save(_record(), cr.Secrets(RT1, "DEV"))
    (cr._credentials_dir() / "live-4242.secret.json").write_text("{not json")
    with pytest.raises(cr.CredentialsError) as e:
        cr.load("live-4242")
    assert "damaged" in str(e.value) and RT1 not in str(e.value)


class _FakeKeyring:
    def __init__(self):
        self.data = {}

    def get_password(self, s, u):
        return self.data.get((s, u))

    def set_password(self, s, u, p):
        self.data[(s, u)] = p

    def delete_password(self, s, u):
        self.data.pop((s, u), None)


def test_keyring_store_is_used_when_available(monkeypatch):
    fake = _FakeKeyring()
    monkeypatch.setattr(cr, "keyring_backend", lambda: fake)
    stored = cr.save(_record(), cr.Secrets(RT1, "DEV"))
    assert stored.store == "keyring"
    assert not (cr._credentials_dir() / "live-4242.secret.json").exists()
    assert cr.load("live-4242")[1].refresh_token == RT1
    cr.delete("live-4242")
    assert fake.data == {}


def test_keyring_disabled_by_environment(monkeypatch):
    assert cr.keyring_backend() is None
    assert isinstance(cr.default_store(), cr.FileStore)


def test_token_url_must_be_https_or_loopback():
    assert cr.check_token_url("https://login.example.com/t")
    assert cr.check_token_url("http://127.0.0.1:5000/token")
    with pytest.raises(cr.CredentialsError):
        cr.check_token_url("http://evil.example.com/token")


def test_login_flow_against_a_loopback_token_endpoint(token_url):
    flow = cr.begin_login("my-client-id", "production", token_url=token_url)
    url = flow.consent_url
    q = parse_qs(urlparse(url).query)
    assert q["client_id"] == ["my-client-id"] and q["state"] == [flow.state]
    redirect = f"https://login.microsoftonline.com/common/oauth2/nativeclient?code=good-code&state={flow.state}"
    flow.finish(redirect)
    assert flow.refresh_token == RT1
    assert flow.grant.oauth_tokens.access_token == AT1
    assert _TokenHandler.issued[-1]["grant_type"] == "authorization_code"


@pytest.mark.parametrize("redirect, message", [
    ("https://x/nativeclient?code=good-code&state=WRONG", "different sign-in attempt"),
    ("https://x/nativeclient?error=access_denied&error_description=The+user+said+no", "The user said no"),
    ("https://x/nativeclient?state=S", "no sign-in code"),
    ("not a url at all", "no sign-in code"),
])
def test_login_flow_refusals_are_sentences(token_url, redirect, message):
    flow = cr.begin_login("cid", "sandbox", token_url=token_url)
    redirect = redirect.replace("state=S", f"state={flow.state}")
    with pytest.raises(cr.CredentialsError) as e:
        flow.finish(redirect)
    assert message in str(e.value)


def test_bad_code_is_refused_without_leaking(token_url):
    flow = cr.begin_login("cid", "production", token_url=token_url)
    with pytest.raises(cr.CredentialsError) as e:
        flow.finish(f"https://x/nativeclient?code=bad-code&state={flow.state}")
    assert "invalid_grant" in str(e.value)


def test_sdk_refresh_goes_through_the_callback(token_url):
    seen: list[str] = []
    grant = cr.make_grant("cid", "production", token_url=token_url, refresh_token=RT1, on_refresh=seen.append)
    grant.request_oauth_tokens_by_refresh_token(RT1)
    assert seen == [RT2] and grant.oauth_tokens.access_token == AT2


def test_missing_client_id_is_a_sentence():
    with pytest.raises(cr.CredentialsError, match="LINKDESK_CLIENT_ID"):
        cr.begin_login("  ")


def test_unknown_environment_is_refused():
    with pytest.raises(cr.CredentialsError, match="production or sandbox"):
        cr.make_grant("cid", "prod")
