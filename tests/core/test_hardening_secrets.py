"""Issue 7.7: secrets. A whole session through the real `linkdesk` command line — demo (sync, links in every format,
history, invite, accept, cancel, errors, a traceback under LINKDESK_DEBUG) and a live sign-in against the simulator
(auth login, sync, links, status) — then every output, the caches and every file under LINKDESK_HOME are searched
for every token the simulator issued (access, refresh and authorization codes). The developer token BBD37VB98 is the
sandbox's public one and is not a secret. Files holding secrets are 0600 in 0700 directories."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest

#: Runs several `linkdesk` commands in one process (imports once), recording every token the simulator stores.
#: Steps: [{"argv": [...], "env": {...}, "crash": bool}]; prints a marker with each exit code.
_WRAPPER = r"""
import json, os, sys
from linkdesk.core.simulator import state as state_mod
from linkdesk.core import cli, sync as sync_mod

log = open(os.environ["TOKEN_LOG"], "a")
original_store = state_mod.Tx.store_token
def store_token(self, token, kind, *a, **k):
    log.write(json.dumps([kind, token]) + "\n")
    log.flush()
    return original_store(self, token, kind, *a, **k)
state_mod.Tx.store_token = store_token

original_sync = sync_mod.full_sync
for n, step in enumerate(json.loads(sys.argv[1])):
    saved = dict(os.environ)
    os.environ.update(step.get("env", {}))
    if step.get("crash"):  # an unexpected error after real calls were made: LINKDESK_DEBUG prints its traceback
        def crashing(*a, **k):
            original_sync(*a, **k)
            raise RuntimeError("unexpected failure for the secrets test")
        sync_mod.full_sync = crashing
    try:
        code = cli.main(step["argv"])
    except SystemExit as e:
        code = e.code
    finally:
        sync_mod.full_sync = original_sync
        os.environ.clear()
        os.environ.update(saved)
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"=== step {n} exit {code} ===", flush=True)
    print(f"=== step {n} exit {code} ===", file=sys.stderr, flush=True)
"""

PUBLIC_DEVELOPER_TOKEN = "BBD37VB98"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _env(home: Path, token_log: Path) -> dict[str, str]:
    env = dict(os.environ, LINKDESK_HOME=str(home), LINKDESK_KEYRING="0", TOKEN_LOG=str(token_log),
               PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("LINKDESK_DEMO_FAULTS", None)
    env.pop("LINKDESK_DEBUG", None)
    return env


def _codes(stdout: str) -> list[int]:
    return [int(c) for c in re.findall(r"=== step \d+ exit (-?\d+) ===", stdout)]


@pytest.mark.slow
def test_no_token_ever_leaves_its_place(tmp_path, monkeypatch):
    from linkdesk.core.simulator import state as state_mod
    from linkdesk.core.simulator.app import Simulator

    home = tmp_path / "home"
    token_log = tmp_path / "tokens.jsonl"
    env = _env(home, token_log)
    outputs: list[str] = []

    # ---- 1. a demo session through the command line
    demo_steps = [
        {"argv": ["sync", "--demo"]},
        {"argv": ["links", "--demo"]},
        {"argv": ["links", "--demo", "--format", "json"]},
        {"argv": ["links", "--demo", "--format", "csv"]},
        {"argv": ["links", "--demo", "--format", "json", "--stage", "ended"]},
    ]
    p = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(demo_steps)], env=env, capture_output=True,
                       text=True, timeout=180)
    outputs += [p.stdout, p.stderr]
    assert _codes(p.stdout) == [0, 0, 0, 0, 0], p.stderr[-3000:]
    ended = json.loads(p.stdout.split("=== step 3 exit 0 ===")[1].split("=== step 4")[0])["links"]
    account = next(l for l in ended if l["type"] == "AccountLink" and l["perspective"] == "sent"
                   and l["status"] in ("LinkCanceled", "LinkExpired"))
    number = account["client_entity_number"]
    steps = [
        {"argv": ["history", "--demo", number]},
        {"argv": ["invite", "--demo", "--account", number, "--bill-to", "client", "--note", "secrets test"]},
        {"argv": ["accept", "--demo", number]},  # refused: within 6 hours of the invitation (an error path)
        {"argv": ["cancel", "--demo", number]},
        {"argv": ["history", "--demo", number]},
        {"argv": ["sync", "--demo"], "env": {"LINKDESK_DEBUG": "1"}},
        {"argv": ["sync", "--demo"], "env": {"LINKDESK_DEBUG": "1", "LINKDESK_DEMO_FAULTS": "rate=1,kinds=expire"}},
        {"argv": ["sync", "--demo"], "env": {"LINKDESK_DEBUG": "1"}, "crash": True},
        {"argv": ["cancel", "--demo", "nothing-like-this"], "env": {"LINKDESK_DEBUG": "1"}},
        {"argv": ["links", "--demo", "--format", "json"], "env": {"LINKDESK_DEBUG": "1"}},
    ]
    p = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(steps)], env=env, capture_output=True, text=True,
                       timeout=180)
    outputs += [p.stdout, p.stderr]
    assert _codes(p.stdout) == [0, 0, 1, 0, 0, 0, 1, 1, 1, 0], (p.stdout[-3000:], p.stderr[-3000:])
    assert "Traceback" in p.stderr and "unexpected failure for the secrets test" in p.stderr  # the debug run
    assert "sign in again" in p.stdout  # the 109 run, in a sentence

    # ---- 2. a live sign-in against a running simulator, then sync and exports with that profile
    recorded: list[str] = []
    original_store = state_mod.Tx.store_token
    monkeypatch.setattr(state_mod.Tx, "store_token",
                        lambda self, token, kind, *a, **k: recorded.append(token) or original_store(self, token, kind,
                                                                                                      *a, **k))
    with Simulator(tmp_path / "live-sim.sqlite") as sim:
        admin = next(u for u in sim.users() if u.side == "agency" and u.role_id == 41)
        live_steps = [{"argv": ["auth", "login", "--simulator", sim.url]},
                      {"argv": ["auth", "status"]},
                      {"argv": ["sync"]},
                      {"argv": ["links", "--format", "json"]},
                      {"argv": ["links", "--format", "csv"], "env": {"LINKDESK_DEBUG": "1"}}]
        proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, json.dumps(live_steps)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
        reader.start()
        out_lines = []
        for line in proc.stdout:  # the consent address, then the prompt for the redirect address
            out_lines.append(line)
            if "/oauth2/authorize?" in line:
                consent = line.strip()
                req = Request(consent + "&" + urlencode({"login_hint": admin.username}),
                              headers={"Accept": "application/json"})
                with urlopen(req, timeout=10) as resp:
                    location = json.loads(resp.read())["location"]
                proc.stdin.write(location + "\n")
                proc.stdin.flush()
                proc.stdin.close()
                break
        out_lines += list(proc.stdout)
        proc.wait(timeout=180)
        reader.join(timeout=10)
    live_out, live_err = "".join(out_lines), "".join(err_lines)
    outputs += [live_out, live_err]
    assert _codes(live_out) == [0, 0, 0, 0, 0], (live_out[-2000:], live_err[-3000:])
    assert "private file (mode 0600)" in live_out

    # ---- 3. every token, everywhere
    tokens = {t for line in token_log.read_text().splitlines() for t in [json.loads(line)[1]]} | set(recorded)
    tokens.discard(PUBLIC_DEVELOPER_TOKEN)
    assert len(tokens) >= 6, tokens  # access and refresh tokens of several users, an authorization code
    secret_files = set((home / "config" / "credentials").glob("*.secret.json"))
    assert len(secret_files) == 1
    searched = ["\n".join(outputs)]
    files = [f for f in home.rglob("*") if f.is_file()] + list(tmp_path.glob("live-sim.sqlite*"))
    for f in files:
        if f not in secret_files:
            searched.append(f.read_bytes().decode("latin-1"))  # every byte: SQLite pages, WAL, JSON, config
    haystack = "\n".join(searched)
    leaked = [t[:10] + "…" for t in tokens if t in haystack]
    assert leaked == [], f"tokens found outside the secret file: {leaked}"
    assert "simAT." not in haystack and "simRT." not in haystack
    # the secret file holds the current refresh token, and is private
    held = json.loads(next(iter(secret_files)).read_text())
    assert held["refresh_token"] in tokens

    # ---- 4. modes: secrets 0600 in 0700 directories; caches private too
    for f in secret_files | set((home / "config" / "credentials").glob("*.json")):
        assert _mode(f) == 0o600, (f, oct(_mode(f)))
    for d in [home / "config", home / "config" / "credentials", home / "demo", *home.glob("live-*")]:
        assert _mode(d) == 0o700, (d, oct(_mode(d)))
    for f in [*home.glob("*/cache.sqlite*"), home / "config" / "config.json"]:
        assert _mode(f) == 0o600, (f, oct(_mode(f)))
    print(f"\nissue 7.7 figures: {len(tokens)} tokens issued, {len(files)} files and "
          f"{sum(len(o) for o in outputs):,} characters of output searched; none found outside the 0600 secret file")


def test_error_reprs_and_debug_logs_redact_tokens(tmp_path, caplog):
    """The adapter's errors and its debug log never hold the tokens, even when the service echoes them back."""
    import logging

    from linkdesk.core.api import CustomerManagementApi
    from linkdesk.core.simulator.app import Simulator

    with Simulator(tmp_path / "sim.sqlite") as sim:
        admin = next(u for u in sim.users() if u.side == "agency" and u.role_id == 41)
        auth = sim.authorization(admin.user_id)
        secrets = [auth.oauth_tokens.access_token, auth.oauth_tokens.refresh_token]
        echo = f"your token {secrets[0]} and {secrets[1]} are wrong"

        def hook(ctx):
            from linkdesk.core.simulator.faults import AdApiError, AdApiFault

            raise AdApiFault([AdApiError(105, "InvalidCredentials", echo, echo)])

        sim.server.before_request = hook
        api = CustomerManagementApi(developer_token="BBD37VB98", authentication=auth, location=sim.url, timeout=5)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(Exception) as e:
            api.get_user(None)
        err = e.value
        text = " ".join([str(err), repr(err), err.detail or "", err.user_message,
                         *[f"{o.message} {o.details}" for o in err.errors], caplog.text])
        for s in secrets:
            assert s not in text
        assert "[redacted]" in text
        assert secrets[0] not in repr(api) and secrets[0] not in repr(auth.oauth_tokens.__dict__.keys())
