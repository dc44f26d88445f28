"""Issue 7.3: two processes on one cache. Real `linkdesk sync --demo` and `linkdesk links --demo` processes run one
after another while this process behaves like the TUI (a reader thread, and a worker that syncs, invites, cancels and
switches identity). Both sides also run their own in-process simulator on the same state file, as a TUI and a
`linkdesk sync --demo` in another terminal do. No "database is locked" (nor any busy message) may reach the user."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from linkdesk.core.model import ClientLink, ClientLinkStatus as S, LinkType, Perspective, Stage
from linkdesk.core.rules import Action
from linkdesk.core.session import Session

BAD_WORDS = ("locked", "busy", "Traceback", "unexpected error", "damaged")

#: Found by the test below (fixed in core/cache.py): Cache.open read the file header with open()/close(), and closing
#: any descriptor of a file drops every POSIX lock the process holds on it -- including the locks of the connections
#: other threads of the same process (the TUI: UI thread + workers) have open. Another process (`linkdesk sync`) then
#: believed it was the last user, checkpointed and deleted the WAL under the running app.


def clean(text: str) -> bool:
    return not any(w.lower() in text.lower() for w in BAD_WORDS)


_HOLDER = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM meta').fetchone(); " \
          "c.close()"


def _second_open_drops_the_locks(tmp_path) -> bool:
    """Open a cache, open it again from another thread, let another process connect and leave: is the WAL gone?"""
    from linkdesk.core.cache import Cache

    path = tmp_path / "locks.sqlite"
    first = Cache.open(path)
    try:
        first.meta_set("k", "v")
        t = threading.Thread(target=lambda: Cache.open(path).close())
        t.start()
        t.join()
        subprocess.run([sys.executable, "-c", _HOLDER, str(path)], check=True, timeout=60)
        return not (tmp_path / "locks.sqlite-wal").exists()
    finally:
        first.close()


def test_opening_the_cache_in_a_second_thread_keeps_the_first_connections_locks(tmp_path):
    assert not _second_open_drops_the_locks(tmp_path)


@pytest.mark.slow
def test_linkdesk_sync_and_a_tui_like_process_share_one_cache(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LINKDESK_HOME", str(home))
    tui = Session.demo(home=home, scale=150)
    assert tui.sync().ok
    agency = tui.identity().customer_id
    problems: list[str] = []
    stats = {"reads": 0, "tui syncs": 0, "actions": 0, "cli runs": 0}
    done = threading.Event()

    def cli_runs() -> None:
        env = dict(os.environ, LINKDESK_HOME=str(home))
        env.pop("LINKDESK_DEMO_FAULTS", None)
        for argv in (["sync", "--demo"], ["links", "--demo", "--format", "json"], ["sync", "--demo"]):
            p = subprocess.run([sys.executable, "-m", "linkdesk.core.cli", *argv], env=env, capture_output=True,
                               text=True, timeout=120)
            stats["cli runs"] += 1
            if p.returncode != 0 or not clean(p.stdout + p.stderr):
                problems.append(f"linkdesk {' '.join(argv)} -> {p.returncode}: {p.stdout[-500:]} {p.stderr[-1500:]}")
        done.set()

    def reader() -> None:  # the TUI's screen: reads its own connection while everything else writes
        try:
            cache = tui.cache()
            stages = list(Stage)
            n = 0
            while not done.is_set():
                now = tui.clock()
                cache.inbox_page(customer_id=agency, stage=stages[n % len(stages)], limit=100, now=now)
                cache.stage_counts(customer_id=agency, perspective=Perspective.SENT, now=now)
                rows = cache.inbox_page(customer_id=agency, limit=5, offset=n % 50, now=now)
                for r in rows:
                    cache.timeline(r.key)
                cache.client_customers(agency, 0, 50)
                cache.last_ok_sync()
                stats["reads"] += 1
                n += 1
        except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
            import traceback
            problems.append(f"reader: {type(exc).__name__}: {exc} {traceback.format_exc()} {exc.__cause__!r}")
            done.set()

    threads = [threading.Thread(target=cli_runs), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    # The TUI's worker: background syncs, invitations, cancellations, identity switches (each a cache write).
    try:
        round_ = 0
        while not done.is_set() and round_ < 200:
            round_ += 1
            result = tui.sync()
            stats["tui syncs"] += 1
            if not result.ok or not clean(result.message):
                problems.append(f"TUI sync: {result.message}")
            cache = tui.cache()
            now = tui.clock()
            rows = cache.inbox_page(customer_id=agency, perspective=Perspective.SENT, limit=500, now=now)
            pending = [r for r in rows if r.status == S.LinkPending and r.key.type == LinkType.AccountLink]
            ended = [r for r in rows if r.status in (S.LinkCanceled, S.LinkExpired, S.LinkDeclined)
                     and r.key.type == LinkType.AccountLink]
            if pending:
                r = tui.act(Action.CANCEL, pending[round_ % len(pending)].key)
                stats["actions"] += 1
                if not clean(r.message):
                    problems.append(f"cancel: {r.message}")
            if ended:
                drafts = [ClientLink(client_entity_id=e.key.client_entity_id, is_bill_to_client=True)
                          for e in ended[:3]]
                for r in tui.invite(drafts):
                    stats["actions"] += 1
                    if not clean(r.message):
                        problems.append(f"invite: {r.message}")
            tui.switch_identity(tui.identity().user_id)  # remembered in the cache: a small write
            time.sleep(0.05)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=180)
    try:
        assert problems == [], "\n".join(problems)
        assert stats["cli runs"] == 3 and stats["tui syncs"] >= 3 and stats["actions"] >= 3 and stats["reads"] > 10
        assert tui.cache().integrity_problems() == []
    finally:
        tui.close()
    print(f"\nissue 7.3 figures: {stats}")
