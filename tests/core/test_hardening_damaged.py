"""Issue 7.4: a damaged cache — corrupt, from a newer version, without permission, on a full disk. The user gets a
sentence saying what to do (CLI and Session), and nothing is destroyed: a damaged file is moved aside, never
deleted, and a file linkdesk cannot or must not use is left byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys

import pytest

from linkdesk.core import cli
from linkdesk.core.cache import Cache
from linkdesk.core.model import ClientLink, LinkKey

FIGURES: dict[str, int] = {}


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_message(err: str) -> str:
    """The `linkdesk: ...` line (stderr may also carry the cache-age line)."""
    lines = [l for l in err.splitlines() if l.startswith("linkdesk: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def synced_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("damaged-template")
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
def home(tmp_path, synced_home, monkeypatch):
    h = tmp_path / "home"
    shutil.copytree(synced_home, h)
    monkeypatch.setenv("LINKDESK_HOME", str(h))
    return h


def cache_file(home):
    return home / "demo" / "cache.sqlite"


# ---------------------------------------------------------------------------------------------------------- damage


def garbage(path):
    path.write_bytes(random.Random(1).randbytes(50_000))


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def broken_pages(path):
    data = bytearray(path.read_bytes())
    rnd = random.Random(2)
    for off in range(4096 * 3, len(data), 4096 * 2):  # every other page after the schema: the links' pages too
        data[off + 100:off + 300] = rnd.randbytes(200)
    path.write_bytes(bytes(data))


def another_program(path):
    path.unlink()
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, caption TEXT)")


DAMAGE = {"garbage": garbage, "truncated": truncated, "broken pages": broken_pages, "another program": another_program}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_cache_is_explained_then_moved_aside_by_sync_and_rebuilt(capsys, home, kind):
    path = cache_file(home)
    DAMAGE[kind](path)
    damaged = digest(path)
    damaged_bytes = path.read_bytes()

    code, out, err = run(capsys, "links", "--demo")
    assert code == 1 and "Traceback" not in out + err
    msg = one_message(err)
    assert "damaged" in msg and "linkdesk sync" in msg and "nothing is deleted" in msg
    assert digest(path) == damaged  # a read never changes the file

    code, out, err = run(capsys, "sync", "--demo")
    assert code == 0, (out, err)
    assert "moved to" in err and "nothing was deleted" in err
    moved = [p for p in path.parent.iterdir() if p.name.startswith("cache.sqlite.broken-")]
    assert len(moved) == 1
    if kind == "broken pages":
        # The damage is deep in the file: the quick check at start does not see it, the sync fails on it (its
        # bookkeeping row is written to the file first), a closer look finds it, and the file is moved aside.
        assert moved[0].stat().st_size >= len(damaged_bytes) // 2
    else:
        assert digest(moved[0]) == damaged  # kept, byte for byte
    with Cache.open(path) as c:
        assert c.integrity_problems() == [] and c.link_count() > 10
    assert run(capsys, "links", "--demo")[0] == 0
    FIGURES[f"damaged: {kind}"] = 1


def test_a_cache_from_a_newer_linkdesk_is_left_untouched(capsys, home):
    path = cache_file(home)
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA user_version = 99")
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files = lambda: {p.name: digest(p) for p in path.parent.iterdir() if p.name.startswith("cache.sqlite")}  # noqa
    before = files()
    for argv in (["links", "--demo"], ["sync", "--demo"], ["history", "--demo", "1"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and "Traceback" not in out + err
        msg = one_message(err)
        assert "newer version of linkdesk" in msg and "Upgrade linkdesk" in msg and "left untouched" in msg
    assert files() == before  # not a byte changed, nothing moved aside


def test_a_session_on_a_damaged_cache_answers_in_sentences_and_moves_nothing(home):
    from linkdesk.core.session import Session

    path = cache_file(home)
    garbage(path)
    before = digest(path)
    s = Session.demo(home=home)
    try:
        result = s.sync()
        assert not result.ok and "damaged" in result.message
        (violation,) = s.check_invitation(ClientLink(client_entity_id=149000005, is_bill_to_client=True))
        assert "damaged" in violation.message
        (inv,) = s.invite([ClientLink(client_entity_id=149000005, is_bill_to_client=True)])
        assert not inv.ok and "damaged" in inv.message
        act = s.act("cancel", LinkKey(149000005, s.identity().customer_id))
        assert not act.ok and "damaged" in act.message
    finally:
        s.close()
    assert digest(path) == before


# ---------------------------------------------------------------------------------------------------------- permissions

_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
_SETPRIV = shutil.which("setpriv")
#: Root ignores file modes. To test what a user sees, root runs the command without the capabilities that let it
#: bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), through util-linux's setpriv.
_DROP = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
         "-dac_override,-dac_read_search"]


def run_unprivileged(*argv) -> tuple[int, str, str]:
    prefix = _DROP if _AS_ROOT else []
    p = subprocess.run([*prefix, sys.executable, "-m", "linkdesk.core.cli", *argv], capture_output=True, text=True,
                       env=dict(os.environ), timeout=120)
    return p.returncode, p.stdout, p.stderr


needs_permissions = pytest.mark.skipif(
    _AS_ROOT and not _SETPRIV,
    reason="running as root, which ignores file modes, and util-linux's setpriv (to drop CAP_DAC_OVERRIDE) is not "
           "installed: a permission test could not fail")


@needs_permissions
def test_permission_cases_are_sentences_and_nothing_is_moved(home):
    path = cache_file(home)
    before = digest(path)
    folder = path.parent
    try:
        os.chmod(path, 0)  # no access at all
        for argv in (["links", "--demo"], ["sync", "--demo"]):
            code, out, err = run_unprivileged(*argv)
            assert code == 1 and "Traceback" not in out + err, (argv, out, err)
            assert "Permission denied" in out + err and "permissions" in out + err
        os.chmod(path, 0o400)  # read-only: listing works offline, a sync says why it cannot save
        code, out, err = run_unprivileged("links", "--demo")
        assert code == 0 and "Contoso" in out, err
        code, out, err = run_unprivileged("sync", "--demo")
        assert code == 1 and "read-only" in out + err and "Traceback" not in out + err
        os.chmod(path, 0o600)
        os.chmod(folder, 0o500)  # a read-only folder
        code, out, err = run_unprivileged("sync", "--demo")
        assert code == 1 and "read-only" in out + err and "Traceback" not in out + err
    finally:
        os.chmod(folder, 0o700)
        os.chmod(path, 0o600)
    assert digest(path) == before
    assert not [p for p in folder.iterdir() if ".broken-" in p.name]
    FIGURES["permission cases"] = 4


# ---------------------------------------------------------------------------------------------------------- full disk


@pytest.fixture
def full_disk(monkeypatch):
    """Every cache connection may not grow the file: SQLITE_FULL as soon as a write needs a new page."""
    original = Cache.__init__

    def init(self, conn, *a, **k):
        original(self, conn, *a, **k)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")

    monkeypatch.setattr(Cache, "__init__", init)
    return lambda: monkeypatch.setattr(Cache, "__init__", original)


def fill(write) -> int:
    """Call ``write(n, size)`` with smaller and smaller rows until not even a tiny one fits. Returns rows written."""
    from linkdesk.core.cache import CacheUnavailable

    n = 0
    for size in (400, 60, 1):
        with pytest.raises(CacheUnavailable, match="disk is full"):
            while n < 100_000:
                write(n, size)
                n += 1
        n += 1
    return n


def _snapshot(path):
    with sqlite3.connect(path) as c:
        return (c.execute("SELECT type, client_entity_id, managing_customer_id, status, timestamp FROM client_links "
                          "ORDER BY 1, 2, 3").fetchall(), c.execute("SELECT count(*) FROM link_events").fetchone())


def test_a_full_disk_during_sync_keeps_the_previous_cache(capsys, home, full_disk):
    from linkdesk.core.session import Session

    s = Session.demo(home=home)
    s._sim.reseed(scale=60)  # the service now has a few hundred links more: the next sync needs new pages
    s.close()
    path = cache_file(home)
    before = _snapshot(path)
    code, out, err = run(capsys, "sync", "--demo")
    assert code == 1 and "Traceback" not in out + err
    assert "disk is full" in out and "free disk space" in out
    assert _snapshot(path) == before
    assert not [p for p in path.parent.iterdir() if ".broken-" in p.name]  # full is not damaged
    full_disk()  # space was freed
    assert run(capsys, "sync", "--demo")[0] == 0
    assert _snapshot(path) != before
    with Cache.open(path) as c:
        assert c.integrity_problems() == []


def test_a_full_disk_during_invitations_is_a_sentence_and_nothing_is_sent_twice(home, full_disk):
    from linkdesk.core.session import Session

    with sqlite3.connect(cache_file(home)) as c:
        agency = int(c.execute("SELECT value FROM meta WHERE key = 'customer_id'").fetchone()[0])
        ended = [r[0] for r in c.execute(
            "SELECT client_entity_id FROM client_links WHERE type = 'AccountLink' AND managing_customer_id = ? AND "
            "status IN ('LinkCanceled', 'LinkExpired') ORDER BY 1", (agency,))]
    assert ended
    drafts = [ClientLink(client_entity_id=a, is_bill_to_client=True) for a in ended]
    s = Session.demo(home=home)
    try:
        sent: list[int] = []
        api = s.api()
        original = api.add_client_links
        api.add_client_links = lambda links: sent.extend(l.client_entity_id for l in links) or original(links)
        cache = s.cache()
        # the timeline (where intents are recorded before sending) fills up
        fill(lambda n, size: cache.record_event(LinkKey(ended[0], agency), at=s.clock(), source="filler",
                                                kind="change", detail="x" * size))
        results = s.invite(drafts)
        assert all(not r.ok and "disk is full" in r.message for r in results), [r.message for r in results]
        assert sent == []  # the intent could not be recorded, so nothing was sent
    finally:
        s.close()
    full_disk()  # space was freed
    s = Session.demo(home=home)
    try:
        results = s.invite(drafts)
        assert all(r.ok for r in results), [r.message for r in results]
        with Cache.open(cache_file(home)) as c:
            assert c.integrity_problems() == []
    finally:
        s.close()


def test_zz_report_figures(capsys):
    with capsys.disabled():
        print("\nissue 7.4 figures:", FIGURES)
