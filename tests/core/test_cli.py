"""The linkdesk command line, in-process (and a few subprocesses), against the built-in simulator."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from linkdesk.core import cli, credentials, paths

SUBCOMMANDS = ["sync", "links", "history", "invite", "cancel", "unlink", "accept", "decline", "auth", "demo"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A demo profile synced once through `linkdesk sync --demo` (its simulator is stopped afterwards)."""
    home = tmp_path_factory.mktemp("cli-home")
    old = os.environ.get("LINKDESK_HOME")
    os.environ["LINKDESK_HOME"] = str(home)
    try:
        assert cli.main(["sync", "--demo"]) == 0
    finally:
        if old is None:
            os.environ.pop("LINKDESK_HOME", None)
        else:
            os.environ["LINKDESK_HOME"] = old
    return home


@pytest.fixture
def home(tmp_path, demo_home, monkeypatch):
    """A private copy of the synced demo home for tests that change it."""
    h = tmp_path / "home"
    shutil.copytree(demo_home, h)
    monkeypatch.setenv("LINKDESK_HOME", str(h))
    return h


@pytest.fixture
def shared_home(demo_home, monkeypatch):
    """The synced demo home, read only."""
    monkeypatch.setenv("LINKDESK_HOME", str(demo_home))
    return demo_home


# ---------------------------------------------------------------------------------------------------------- basics


def test_help_everywhere(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "sync" in out and "Exit codes" in out
    for name in SUBCOMMANDS:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and "usage: linkdesk" in out, name
    for name in ("login", "status", "logout"):
        code, out, _ = run(capsys, "auth", name, "--help")
        assert code == 0 and "usage:" in out
    code, out, _ = run(capsys, "simulator", "--help")
    assert code == 0 and "serve" in out


def test_help_is_fast_because_nothing_heavy_is_imported():
    code = ("import sys, linkdesk.core.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('bingads', 'suds', 'sqlite_utils', 'textual', 'rich', 'linkdesk.core.cache', "
            "'linkdesk.core.api', 'linkdesk.core.simulator') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("argv", [["frobnicate"], ["links", "--format", "xml"], ["links", "--limit", "0"],
                                  ["history"], ["invite", "--bill-to", "nobody"], ["links", "--demo", "--profile",
                                                                                   "live-1"]])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "See `linkdesk" in err and "Traceback" not in err


def test_links_without_a_cache_says_to_sync(capsys):
    code, out, err = run(capsys, "links", "--demo")
    assert code == 1 and "linkdesk sync --demo" in err and out == ""


def test_bare_linkdesk_without_profile_says_how_to_start(capsys):
    code, out, _ = run(capsys)
    assert code == 1 and "linkdesk auth login" in out and "linkdesk demo" in out


def test_demo_without_the_terminal_app(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "linkdesk.tui.app", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "linkdesk.tui", None)
    code, _, err = run(capsys, "demo")
    assert code == 1 and "the terminal app is not installed" in err.lower()


def test_unexpected_errors_are_one_sentence_unless_debugging(capsys, monkeypatch, shared_home):
    def boom(args):
        raise ValueError("secret internals")

    monkeypatch.setattr(cli, "cmd_links", boom)
    code, _, err = run(capsys, "links", "--demo")
    assert code == 1 and "unexpected error" in err and "Traceback" not in err and "secret internals" not in err
    monkeypatch.setenv(cli.ENV_DEBUG, "1")
    code, _, err = run(capsys, "links", "--demo")
    assert code == 1 and "Traceback" in err


# ------------------------------------------------------------------------------------------------- output safety


@pytest.mark.parametrize("hostile, shown", [
    ("\x1b[31mred\x1b[0m", "\ufffd[31mred\ufffd[0m"),
    ("\x1b]8;;http://evil\x07click\x1b]8;;\x07", "\ufffd]8;;http://evil\ufffdclick\ufffd]8;;\ufffd"),
    ("csi \u009b31m c1", "csi \ufffd31m c1"),
    ("abc\u202edef\u2066x", "abc\ufffddef\ufffdx"),
    ("two\nlines\r", "two\ufffdlines\ufffd"),
    ("[bold red]x[/] [link=https://e.com]y[/link]", "[bold red]x[/] [link=https://e.com]y[/link]"),
])
def test_table_cells_show_client_text_literally(hostile, shown):
    out = io.StringIO()
    cli.print_table(["A", "B"], [[hostile, "ok"]], out=out)
    body = out.getvalue().splitlines()[1]
    assert body.startswith(shown) and body.endswith("ok")
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) < 0xA0 for c in out.getvalue() if c != "\n")


def test_long_text_is_shortened_with_an_ellipsis_by_display_width():
    assert cli.safe_text("x" * 50, 10) == "x" * 9 + "…"
    assert cli._width(cli.safe_text("東京" * 10, 10)) <= 10


@pytest.mark.parametrize("value, cell", [("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"),
                                         ("\tx", "'\tx"), ("plain", "plain"), (5, 5), (-3, -3)])
def test_csv_cells_neutralise_formulas(value, cell):
    assert cli.csv_cell(value) == cell


# ------------------------------------------------------------------------------------------------- offline reading


def test_links_table_and_age_offline(capsys, shared_home):
    code, out, err = run(capsys, "links", "--demo")
    assert code == 0
    assert "cache from" in err and "ago" in err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["CLIENT", "NUMBER", "TYPE", "STATUS"] and len(lines) > 20
    # markup-like client text is shown literally
    assert "[link=https://example.com]" in out or "[bold red]" in out


def test_links_json_shape_is_stable(capsys, shared_home):
    code, out, _ = run(capsys, "links", "--demo", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"profile", "customer_id", "now", "synced_at", "count", "links"}
    assert doc["profile"] == "demo" and doc["count"] == len(doc["links"]) > 20
    for link in doc["links"]:
        assert tuple(link) == cli.LINK_FIELDS
        assert link["type"] in ("AccountLink", "CustomerLink")
        assert link["stage"] in cli.STAGES and link["perspective"] in ("sent", "received")
        assert link["days_left"] is None or link["status"] == "LinkPending"
    assert {l["perspective"] for l in doc["links"]} == {"sent", "received"}


def test_links_filters(capsys, shared_home):
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--stage", "ended")
    ended = json.loads(out)["links"]
    assert ended and {l["stage"] for l in ended} == {"ended"}
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--status", "Active", "--status", "LinkPending")
    assert {l["status"] for l in json.loads(out)["links"]} == {"Active", "LinkPending"}
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--perspective", "received")
    assert {l["perspective"] for l in json.loads(out)["links"]} == {"received"}
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--text", "tailspin")
    names = [l["client_entity_name"] for l in json.loads(out)["links"]]
    assert names and all("tailspin" in n.lower() for n in names)
    code, out, err = run(capsys, "links", "--demo", "--format", "json", "--limit", "3")
    assert code == 0 and json.loads(out)["count"] == 3 and "raise --limit" in err


def test_links_and_history_never_start_the_simulator(capsys, shared_home, monkeypatch):
    from linkdesk.core.simulator import app as sim_app

    def refuse(*a, **k):
        raise AssertionError("an offline command started the simulator")

    monkeypatch.setattr(sim_app.Simulator, "start", refuse)
    monkeypatch.setattr(sim_app.Simulator, "open", refuse)
    assert run(capsys, "links", "--demo")[0] == 0
    assert run(capsys, "links", "--demo", "--format", "csv")[0] == 0
    code, out, _ = run(capsys, "history", "--demo", "Tailspin Online")
    assert code == 0 and "first seen" in out


def test_sync_progress_bar_on_a_terminal():
    from linkdesk.core.sync import SyncProgress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = cli._ProgressPrinter(stream)
    bar(SyncProgress("users", 1, 4, "Read 1 of 4 users."))
    bar(SyncProgress("links", 300, None, "Read 300 links so far."))
    bar.finish()
    text = stream.getvalue()
    assert text.startswith("\r[######" + "." * 18 + "] users") and "Read 300 links" in text
    assert "\n" not in text and text.endswith("\r")


def test_history_by_name_number_and_id_offline(capsys, shared_home):
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--text", "Tailspin Online")
    link = json.loads(out)["links"][0]
    for ident in (link["client_entity_name"], link["client_entity_number"].lower(), str(link["client_entity_id"])):
        code, out, _ = run(capsys, "history", "--demo", ident)
        assert code == 0, ident
        assert "Tailspin Online" in out and "first seen" in out and "sync" in out
    code, _, err = run(capsys, "history", "--demo", "Tailspin")
    assert code == 1 and "several clients" in err
    code, _, err = run(capsys, "history", "--demo", "no such account")
    assert code == 1 and "has no link" in err


# ---------------------------------------------------------------------------------------------------- writing


def _entity(capsys, text: str) -> dict:
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--text", text)
    return json.loads(out)["links"][0]


def _ended_account_links(capsys) -> list[dict]:
    links = json.loads(run(capsys, "links", "--demo", "--format", "json", "--stage", "ended")[1])["links"]
    return [l for l in links if l["type"] == "AccountLink" and l["perspective"] == "sent"]


def test_invite_cancel_and_their_exit_codes(capsys, home):
    candidates = _ended_account_links(capsys)
    number = candidates[0]["client_entity_number"]
    code, out, _ = run(capsys, "invite", "--demo", "--account", number, "--bill-to", "client", "--dry-run")
    assert code == 0 and "ready" in out and "nothing was sent" in out
    code, out, _ = run(capsys, "invite", "--demo", "--account", number, "--bill-to", "client",
                       "--name", "esc \x1b[31mred\x07")
    assert code == 1 and "control character" in out  # XML cannot carry them: refused before sending
    # The cache cannot know everything (prepaid accounts, other agencies' links): the service refuses some.
    for candidate in candidates:
        number = candidate["client_entity_number"]
        code, out, _ = run(capsys, "invite", "--demo", "--account", number, "--bill-to", "client",
                           "--note", "=HYPERLINK(\"http://x\")", "--name", "rtl \u202eevil\u009b31m")
        if code == 0:
            break
        assert "failed" in out and "0 of 1" in out
    assert code == 0 and "sent" in out and "1 of 1" in out
    code, out, _ = run(capsys, "invite", "--demo", "--account", number, "--bill-to", "client")
    assert code == 1 and "failed" in out and "already has a link" in out

    # csv export neutralises formulas; the table shows control characters replaced
    _, out, _ = run(capsys, "links", "--demo", "--format", "csv", "--text", number)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["note"] == "'=HYPERLINK(\"http://x\")"
    _, out, _ = run(capsys, "history", "--demo", number)
    _, table, _ = run(capsys, "links", "--demo", "--text", number, "--format", "table")
    _, out, _ = run(capsys, "links", "--demo", "--format", "json", "--text", number)
    assert json.loads(out)["links"][0]["name"] == "rtl \u202eevil\u009b31m"  # json keeps the data exactly
    assert "\u202e" not in table and "\u009b" not in table

    code, out, err = run(capsys, "cancel", "--demo", number)
    assert code == 0 and "Invitation canceled" in out and "Acting as admin@" in err
    code, out, _ = run(capsys, "cancel", "--demo", number)
    assert code == 1 and "ended" in out
    code, out, _ = run(capsys, "history", "--demo", number)
    assert "action:invite" in out and "action:cancel" in out and "intent" in out and "outcome" in out


def test_accept_acts_as_the_clients_super_admin_and_respects_the_cooldown(capsys, home):
    pending = next(l for l in json.loads(run(capsys, "links", "--demo", "--format", "json", "--status",
                                             "LinkPending", "--perspective", "sent")[1])["links"]
                   if l["type"] == "AccountLink" and "prepaid" not in (l["note"] or ""))
    code, out, err = run(capsys, "accept", "--demo", str(pending["client_entity_id"]))
    assert "Acting as admin@" in err and "Super Admin" in err and "Contoso" not in err.split("Acting as")[1]
    if code == 1:  # invited less than 6 hours ago
        assert "6 hours" in out
        assert run(capsys, "simulator", "advance", "6h")[0] == 0
        code, out, err = run(capsys, "accept", "--demo", str(pending["client_entity_id"]))
    assert code == 0 and "accepted" in out
    # a one-off --as is not remembered by the demo
    from linkdesk.core.cache import Cache

    with Cache.open(paths.cache_path("demo")) as c:
        assert c.meta_get("acting_user_id") is None


def test_viewer_is_refused_with_the_reason(capsys, home):
    viewer = next(u for u in json.loads(run(capsys, "simulator", "users", "--json")[1]) if u["role"] == "Viewer")
    active = next(l for l in json.loads(run(capsys, "links", "--demo", "--format", "json", "--status", "Active",
                                            "--perspective", "sent")[1])["links"])
    code, out, _ = run(capsys, "unlink", "--demo", str(active["client_entity_id"]), "--as", str(viewer["user_id"]))
    assert code == 1 and "you are a Viewer" in out


def test_invite_from_csv_dry_run_and_send(capsys, home, tmp_path):
    ended = [l for l in _ended_account_links(capsys) if l["client_entity_name"].startswith(("Tailspin", "Wide"))
             and "Prepaid" not in l["client_entity_name"]] or _ended_account_links(capsys)
    active = json.loads(run(capsys, "links", "--demo", "--format", "json", "--status", "Active", "--perspective",
                            "sent")[1])["links"][0]
    f = tmp_path / "invites.csv"
    f.write_bytes(("\ufefftype,client_account_id,client_account_number,bill_to,name\r\n"
                   f"AccountLink,{ended[0]['client_entity_id']},,client,first\r\n"
                   "\r\n"
                   f"AccountLink,{active['client_entity_id']},,agency,already linked\r\n"
                   "AccountLink,12ab,,client,bad id\r\n"
                   f"AccountLink,{ended[0]['client_entity_id']},,agency,duplicate\r\n").encode("utf-8"))
    code, out, _ = run(capsys, "invite", "--demo", "--csv", str(f), "--dry-run")
    assert code == 1
    lines = out.splitlines()
    assert "line 2" in lines[1] and "ready" in lines[1]
    assert "refused" in lines[2] and "already" in lines[2]
    assert "whole number" in lines[3]
    assert "line 2 of this file" in lines[4]
    assert "1 of 4 invitation(s) would be sent" in out
    code, out, _ = run(capsys, "invite", "--demo", "--csv", str(f))
    assert code == 1 and "1 of 4 invitation(s) sent." in out and out.count("failed") == 3

    bad = tmp_path / "bad.csv"
    bad.write_text("colour\nred\n")
    code, _, err = run(capsys, "invite", "--demo", "--csv", str(bad))
    assert code == 1 and "first line must be a header" in err


def test_sync_prints_plain_progress_lines_when_not_a_terminal(capsys, home):
    code, out, err = run(capsys, "sync", "--demo")
    assert code == 0 and "Synced" in out
    assert "links:" in err and "\r" not in err


# ------------------------------------------------------------------------------------------------------- auth


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_auth_login_status_logout_against_the_simulator(capsys, tmp_path, monkeypatch):
    from urllib.parse import urlencode
    from urllib.request import Request, urlopen

    from linkdesk.core.simulator.app import Simulator

    monkeypatch.setenv("LINKDESK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(credentials.ENV_KEYRING, "0")
    outputs = []
    with Simulator(tmp_path / "sim.sqlite") as sim:
        admin = next(u for u in sim.users() if u.side == "agency" and u.role_id == 41)

        def fake_input(prompt: str = "") -> str:
            printed = capsys.readouterr()
            outputs.append(printed.out + printed.err)
            consent = next(line.strip() for line in printed.out.splitlines() if "/oauth2/authorize?" in line)
            req = Request(consent + "&" + urlencode({"login_hint": admin.username}),
                          headers={"Accept": "application/json"})
            with urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())["location"]

        monkeypatch.setattr("builtins.input", fake_input)
        code, out, err = run(capsys, "auth", "login", "--simulator", sim.url)
        outputs.append(out + err)
        assert code == 0, err
        assert "Signed in as admin@contoso.example" in out and "private file (mode 0600)" in out

        profile = credentials.SignIn.profile_for(admin.customer_id)
        record, secret = credentials.load(profile)
        assert record.user_id == admin.user_id and record.role_id == 41
        cred_dir = paths.config_dir() / "credentials"
        assert _mode(cred_dir) == 0o700
        assert all(_mode(p) == 0o600 for p in cred_dir.iterdir())

        code, out, err = run(capsys, "auth", "status")
        outputs.append(out + err)
        assert code == 0 and profile in out and "secrets in the file" in out

        # the live profile works: sync, then offline links
        code, out, err = run(capsys, "sync")
        outputs.append(out + err)
        assert code == 0 and "Synced" in out
        code, out, err = run(capsys, "links", "--format", "json")
        outputs.append(out + err)
        assert code == 0 and json.loads(out)["profile"] == profile
        rotated = credentials.load(profile)[1].refresh_token

        code, out, err = run(capsys, "auth", "logout")
        outputs.append(out + err)
        assert code == 0 and f"Signed out of {profile}" in out
        assert run(capsys, "auth", "status")[0] == 1

    everything = "\n".join(outputs)
    for token in (secret.refresh_token, rotated, secret.developer_token):
        assert token not in everything
    assert "simRT." not in everything and "simAT." not in everything


def test_auth_login_needs_a_client_id_and_developer_token(capsys, monkeypatch):
    monkeypatch.delenv(credentials.ENV_CLIENT_ID, raising=False)
    monkeypatch.delenv(credentials.ENV_DEVELOPER_TOKEN, raising=False)
    code, _, err = run(capsys, "auth", "login")
    assert code == 1 and "LINKDESK_DEVELOPER_TOKEN" in err
    code, _, err = run(capsys, "auth", "login", "--developer-token", "x")
    assert code == 1 and "LINKDESK_CLIENT_ID" in err


def test_auth_login_with_a_bad_redirect_is_a_sentence(capsys, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt="": "https://login.microsoftonline.com/x?error=access_denied"
                                                            "&error_description=User+cancelled")
    code, out, err = run(capsys, "auth", "login", "--developer-token", "dev", "--client-id", "cid")
    assert code == 1 and "User cancelled" in err and "Traceback" not in err
    assert "login.microsoftonline.com" in out  # the consent address was shown


def test_sync_moves_a_damaged_cache_aside_and_rebuilds_it(capsys, home):
    cache_file = paths.cache_path("demo")
    for suffix in ("-wal", "-shm"):
        p = cache_file.with_name(cache_file.name + suffix)
        if p.exists():
            p.unlink()
    cache_file.write_bytes(b"this is not a database" * 10)
    code, out, err = run(capsys, "links", "--demo")
    assert code == 1 and "damaged" in err and "Traceback" not in err
    code, out, err = run(capsys, "sync", "--demo")
    assert code == 0 and "Synced" in out
    assert "moved to" in err and "nothing was deleted" in err
    moved = [p for p in cache_file.parent.iterdir() if ".broken-" in p.name]
    assert moved and moved[0].read_bytes().startswith(b"this is not a database")
    assert run(capsys, "links", "--demo")[0] == 0


def test_a_busy_cache_is_a_sentence(capsys, home, monkeypatch):
    from linkdesk.core import cache as cache_mod

    def busy(self, now):
        raise cache_mod.CacheBusy(self.path)

    monkeypatch.setattr(cache_mod.Cache, "begin_snapshot", busy)
    code, out, err = run(capsys, "sync", "--demo")
    assert code == 1 and "Another linkdesk process kept the cache" in out and "try again." in out
    assert "Traceback" not in out + err and "database is locked" not in out + err
