"""``linkdesk simulator serve | users | advance | reset`` and the simulator's OAuth endpoints."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import pytest

from linkdesk.core.simulator import cli, world
from linkdesk.core.simulator.app import Simulator
from linkdesk.core.simulator.auth import (
    UnknownUser,
    authorization_for,
    issue_tokens,
    simulator_authorization_class,
)
from linkdesk.core.simulator.service import CustomerManagementService
from linkdesk.core.simulator.state import State

UTC = timezone.utc
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def run(command, argv):
    out, err = io.StringIO(), io.StringIO()
    code = command(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def service_accepts(path, token: str) -> bool:
    with State(path) as st:
        svc = CustomerManagementService(st)
        user = svc.handle(SimpleNamespace(operation="GetCurrentUser", body={},
                                          headers={"DeveloperToken": "BBD37VB98", "AuthenticationToken": token}))
    return bool(user["User"]["Id"])


# ----------------------------------------------------------------------------------------------------------- users


def test_users_json_shape(tmp_path):
    path = tmp_path / "sim.sqlite"
    code, out, err = run(cli.users, ["--state", str(path), "--json"])
    assert code == 0 and err == ""
    data = json.loads(out)
    required = {"user_id": int, "username": str, "customer_id": int, "customer_name": str, "side": str, "role": str,
                "role_id": int, "access_token": str}
    for row in data:
        for key, typ in required.items():
            assert isinstance(row[key], typ), (key, row)
    assert {r["side"] for r in data} == {"agency", "client", "other-agency"}
    agency = {r["role"]: r for r in data if r["side"] == "agency"}
    assert {name: r["role_id"] for name, r in agency.items()} == {
        "SuperAdmin": 41, "Standard": 203, "AdvertiserCampaignManager": 16, "Viewer": 100}
    assert agency["AdvertiserCampaignManager"]["user_id"] == world.USER_A
    assert all(r["role"] == "SuperAdmin" for r in data if r["side"] != "agency")
    assert len({r["access_token"] for r in data}) == len(data)
    assert service_accepts(path, agency["Viewer"]["access_token"])
    # Fresh tokens on every run.
    again = json.loads(run(cli.users, ["--state", str(path), "--json"])[1])
    assert again[0]["access_token"] != data[0]["access_token"]


def test_users_table_and_side_filter(tmp_path):
    code, out, _ = run(cli.users, ["--state", str(tmp_path / "s.sqlite"), "--side", "other-agency"])
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["USER", "ID", "USERNAME"]
    assert "admin@fabrikam.example" in lines[1] and "SuperAdmin" in lines[1]
    assert "simAT." in lines[1]  # showing tokens is this command's purpose
    assert "contoso" not in out


def test_default_state_is_the_demo_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path / "home"))
    code, _, _ = run(cli.users, ["--json"])
    assert code == 0
    assert (tmp_path / "home" / "demo" / "simulator.sqlite").exists()


# ------------------------------------------------------------------------------------------------- advance, reset


def test_advance_moves_the_clock_and_applies_transitions(tmp_path):
    path = tmp_path / "sim.sqlite"
    with State(path) as st:
        st.freeze(NOW)
        world.seed_world(st)
    code, out, _ = run(cli.advance, ["--state", str(path), "31d"])
    assert code == 0
    assert "31d forward" in out and "2026-04-02 09:30 UTC" in out and "service transitions applied" in out
    with State(path) as st, st.read() as tx:
        assert tx.latest_link(149000005, "AccountLink", world.AGENCY_ID).link.status == "LinkExpired"
        assert st.now() == NOW + timedelta(days=31)


@pytest.mark.parametrize("argv", [["6"], ["-3h"], ["soon"], []])
def test_advance_refuses_bad_durations(tmp_path, argv, capsys):
    code, _, _ = run(cli.advance, ["--state", str(tmp_path / "s.sqlite"), *argv])
    assert code == 2
    assert "usage:" in capsys.readouterr().err


def test_reset_replaces_the_world_and_the_clock(tmp_path):
    path = tmp_path / "sim.sqlite"
    run(cli.advance, ["--state", str(path), "2d"])
    with State(path) as st, st.write() as tx:
        tx.c.execute("DELETE FROM client_links")
    code, out, _ = run(cli.reset, ["--state", str(path), "--scale", "3", "--seed", "9"])
    assert code == 0 and "seed 9, scale 3" in out
    with State(path) as st, st.read() as tx:
        assert tx.counts()["client_links"] > 30
        assert tx.meta("scale") == "3"
        assert abs(st.now() - datetime.now(UTC)) < timedelta(minutes=1)


def test_unusable_state_file_is_exit_1_with_advice(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 500)
    for command, extra in ((cli.users, []), (cli.advance, ["1h"]), (cli.reset, []), (cli.serve, [])):
        code, out, err = run(command, ["--state", str(bad), *extra])
        assert code == 1, command
        assert "--state" in err and out == ""


def test_help_everywhere(capsys):
    for command in (cli.serve, cli.users, cli.advance, cli.reset):
        assert command(["--help"]) == 0
    assert cli.main(["--help"]) == 0
    assert cli.main([]) == 2
    assert cli.main(["launch"]) == 2
    assert "unknown command 'launch'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- serve


def test_serve_in_process_until_stopped(tmp_path):
    seen = {}

    def ready(sim):
        token = sim.access_token(world.AGENCY_SUPER_ADMIN)
        body = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
                b'<s:Header><h:DeveloperToken xmlns:h="https://bingads.microsoft.com/Customer/v13">BBD37VB98'
                b'</h:DeveloperToken><h:AuthenticationToken xmlns:h="https://bingads.microsoft.com/Customer/v13">'
                + token.encode() + b'</h:AuthenticationToken></s:Header><s:Body>'
                b'<GetCurrentUserRequest xmlns="https://bingads.microsoft.com/Customer/v13"/></s:Body></s:Envelope>')
        parts = urlsplit(sim.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("POST", parts.path, body, {"Content-Type": "text/xml", "SOAPAction": '"GetCurrentUser"'})
        resp = conn.getresponse()
        seen["status"], seen["body"] = resp.status, resp.read()
        conn.close()
        sim.stop()

    code, out, err = run(lambda argv, **kw: cli.serve(argv, ready=ready, **kw),
                         ["--state", str(tmp_path / "s.sqlite"), "--scale", "2", "--latency", "5"])
    assert code == 0, err
    assert seen["status"] == 200 and b"admin@contoso.example" in seen["body"]
    assert "Seeded the demo world (seed 1, scale 2)" in out
    assert "Simulator endpoint: http://127.0.0.1:" in out and "/oauth2/token" in out
    assert out.rstrip().endswith("Simulator stopped.")


def test_serve_with_faults_injects_them_and_reports_the_count(tmp_path):
    seen = {}

    def ready(sim):
        parts = urlsplit(sim.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("POST", parts.path, b"<x/>", {"Content-Type": "text/xml", "SOAPAction": '"GetCurrentUser"'})
        resp = conn.getresponse()
        seen["status"], seen["body"] = resp.status, resp.read()
        conn.close()
        sim.stop()

    code, out, err = run(lambda argv, **kw: cli.serve(argv, ready=ready, **kw),
                         ["--state", str(tmp_path / "s.sqlite"), "--faults", "rate=1,kinds=http503,seed=3"])
    assert code == 0, err
    assert seen["status"] == 503  # every request faulted, with the kind asked for
    assert "Injecting faults: rate 1, kinds http503, seed 3." in out
    assert "Faults injected: 1 of 1 requests faulted: http503 1." in out


def test_serve_with_an_unknown_fault_kind_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(cli.serve, ["--state", str(tmp_path / "s.sqlite"), "--faults", "kinds=meteor"])
    err += capsys.readouterr().err  # argparse's own usage errors go to sys.stderr
    assert code == 2 and "meteor" in err and "http503" in err


def test_serve_port_in_use_is_exit_1(tmp_path):
    with Simulator(tmp_path / "a.sqlite") as sim:
        code, _, err = run(cli.serve, ["--state", str(tmp_path / "b.sqlite"), "--port", str(sim.server.port)])
    assert code == 1 and "another --port" in err


def test_serve_as_a_process_stops_cleanly_on_ctrl_c(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from linkdesk.core.simulator.cli import main; sys.exit(main())",
         "serve", "--state", str(tmp_path / "s.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        url = next(x.split(": ", 1)[1].strip() for x in lines if x.startswith("Simulator endpoint"))
        assert urlsplit(url).hostname == "127.0.0.1"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Simulator stopped." in out and "Traceback" not in err


# --------------------------------------------------------------------------------------------------- OAuth routes


@pytest.fixture
def sim(tmp_path):
    with Simulator(tmp_path / "sim.sqlite", frozen_at=NOW) as s:
        yield s


def post_form(sim, form: dict[str, str], content_type="application/x-www-form-urlencoded"):
    parts = urlsplit(sim.token_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("POST", parts.path, urlencode(form), {"Content-Type": content_type})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def test_token_endpoint_refreshes_like_microsoft(sim):
    issued = sim.tokens(world.USER_B)
    status, data = post_form(sim, {"grant_type": "refresh_token", "refresh_token": issued.refresh_token,
                                   "client_id": "my-app"})
    assert status == 200
    assert set(data) >= {"access_token", "refresh_token", "expires_in", "token_type"}
    assert data["expires_in"] == 3600 and data["access_token"] != issued.access_token
    assert service_accepts(sim.state_path, data["access_token"])


@pytest.mark.parametrize("form,error", [
    ({"grant_type": "refresh_token", "refresh_token": "simRT.bogus", "client_id": "x"}, "invalid_grant"),
    ({"grant_type": "refresh_token", "refresh_token": "", "client_id": "x"}, "invalid_grant"),
    ({"grant_type": "password", "client_id": "x"}, "unsupported_grant_type"),
    ({"grant_type": "refresh_token", "refresh_token": "simRT.bogus"}, "invalid_request"),
    ({"grant_type": "authorization_code", "code": "simAC.bogus", "client_id": "x"}, "invalid_grant"),
])
def test_token_endpoint_errors(sim, form, error):
    status, data = post_form(sim, form)
    assert status == 400 and data["error"] == error and data["error_description"].endswith(".")


def test_refresh_tokens_expire_and_access_tokens_are_not_refresh_tokens(sim):
    issued = sim.tokens(world.USER_A)
    status, data = post_form(sim, {"grant_type": "refresh_token", "refresh_token": issued.access_token,
                                   "client_id": "x"})
    assert (status, data["error"]) == (400, "invalid_grant")
    sim.advance("91d")
    status, data = post_form(sim, {"grant_type": "refresh_token", "refresh_token": issued.refresh_token,
                                   "client_id": "x"})
    assert (status, data["error"]) == (400, "invalid_grant") and "expired" in data["error_description"]


def test_form_encoding_is_required(sim):
    status, data = post_form(sim, {"grant_type": "refresh_token"}, content_type="application/json")
    assert (status, data["error"]) == (400, "invalid_request")


def test_authorization_for_signs_in_over_http(sim):
    refreshed = []
    auth = authorization_for(sim.url, "user.a@contoso.example", token_refreshed_callback=refreshed.append)
    assert isinstance(auth, simulator_authorization_class())
    assert len(refreshed) == 1 and refreshed[0].refresh_token
    assert service_accepts(sim.state_path, auth.oauth_tokens.access_token)
    # The code cannot be used twice, and the SDK-facing refresh goes to the simulator too.
    auth.request_oauth_tokens_by_refresh_token(auth.oauth_tokens.refresh_token)
    assert len(refreshed) == 2
    with pytest.raises(UnknownUser, match="simulator users"):
        authorization_for(sim.url, "nobody@example.com")


def test_authorization_code_is_single_use(sim):
    from bingads.authorization import OAuthTokenRequestException

    auth = simulator_authorization_class()(sim.url)
    consent = auth.get_authorization_endpoint() + "&" + urlencode({"login_hint": str(world.AGENCY_SUPER_ADMIN)})
    parts = urlsplit(consent)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"Accept": "application/json"})
    location = json.loads(conn.getresponse().read())["location"]
    conn.close()
    assert location.startswith(auth.redirection_uri + "?code=")
    auth.request_oauth_tokens_by_response_uri(location)
    with pytest.raises(OAuthTokenRequestException):
        auth.request_oauth_tokens_by_response_uri(location)


def test_authorize_page_for_people(sim):
    parts = urlsplit(sim.base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/oauth2/authorize?client_id=x&state=abc")
    page = conn.getresponse().read().decode()
    conn.request("GET", "/oauth2/authorize?client_id=x&state=abc&login_hint=admin%40contoso.example")
    consent = conn.getresponse().read().decode()
    conn.close()
    assert "admin@contoso.example" in page and "[bold red]Markup[/] &amp; Co" in page
    assert "code=simAC." in consent and "state=abc" in consent


def test_auth_module_does_not_import_bingads_until_needed():
    code = ("import sys; import linkdesk.core.simulator.auth as a; assert 'bingads' not in sys.modules; "
            "a.SimulatorAuthorization; assert 'bingads' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_issued_tokens_expire_in_simulated_time(tmp_path):
    with State(tmp_path / "s.sqlite") as st:
        st.freeze(NOW)
        world.seed_world(st)
        issued = issue_tokens(st, "USER.A@contoso.example")
        assert issued.user_id == world.USER_A and issued.expires_at == NOW + timedelta(hours=1)
