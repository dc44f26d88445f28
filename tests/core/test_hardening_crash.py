"""Issue 7.2: kill -9 at many points of `linkdesk sync --demo` and of a bulk `linkdesk invite --demo --csv`.

Every kill point is a real process killed with SIGKILL by itself at a deterministic place: after N SQL statements on
the cache, at the N-th API call, when the N-th AddClientLinks reaches the simulator, or after the simulator applied
it but before the reply left. Afterwards the cache must open, pass ``PRAGMA integrity_check`` and
``foreign_key_check``, hold exactly the previous complete state (or, after the commit, exactly the new one); a
restarted sync completes, and a restarted bulk invitation sends no invitation twice.

To keep 60 points affordable, two "zygote" subprocesses import linkdesk, the SDK and the simulator once and fork a
child per run (the killed run, then the restart). Each point works on its own copy of one template home.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from linkdesk.core import rules

FROZEN = datetime(2025, 11, 3, 12, 0, tzinfo=timezone.utc)
SEED = 7
SYNC_SQL_POINTS = 22
SYNC_FETCH_POINTS = 6
INVITE_SQL_POINTS = 14
INVITE_FETCH_POINTS = 2
BULK_SIZE = 12  # two AddClientLinks batches (10 + 2)

# The zygote: imports everything once, then forks one child per run. Reads jobs (JSON) on stdin, prints one JSON line
# per job. A child installs the job's kill hook, runs the CLI command, and (when not killed) exits 100 + its code.
_ZYGOTE = r'''
import json, os, signal, sys, threading, traceback

from linkdesk.core import actions, cache as cache_mod, cli, api as api_mod
from linkdesk.core.simulator import app as sim_app, soap
import bingads.service_client, suds.client, sqlite_utils  # noqa: F401  (warm imports before forking)

soap.load_schema()

def argv_of(job):
    if job["mode"] == "sync":
        return ["sync", "--demo"]
    return ["invite", "--demo", "--csv", os.path.join(job["dir"], "bulk.csv")]

def snapshot(path):
    out = {"opened": False}
    try:
        c = cache_mod.Cache.open(path)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    try:
        out["opened"] = True
        out["problems"] = c.integrity_problems()
        q = lambda sql: [list(r) for r in c._conn.execute(sql)]
        out["links"] = q("SELECT type, client_entity_id, managing_customer_id, status, timestamp FROM client_links "
                         "ORDER BY 1, 2, 3")
        out["accounts"] = q("SELECT id, name, parent_customer_id FROM accounts ORDER BY id")
        out["customers"] = q("SELECT id, name FROM customers ORDER BY id")
        out["users"] = q("SELECT id, user_name FROM users ORDER BY id")
        out["events"] = q("SELECT count(*) FROM link_events")[0][0]
        out["ok_run"] = q("SELECT max(id) FROM sync_runs WHERE outcome = 'ok'")[0][0]
        out["unanswered"] = len(actions.unanswered_intents(c))
    finally:
        c.close()
    return out

def sim_rows(job):
    import sqlite3
    with sqlite3.connect(os.path.join(job["dir"], "demo", "simulator.sqlite")) as c:
        rows = c.execute("SELECT client_entity_id FROM client_links WHERE id > ?", (job["baseline"],)).fetchall()
    counts = {}
    for (e,) in rows:
        counts[str(e)] = counts.get(str(e), 0) + 1
    return counts

def child(job, phase):
    os.environ["LINKDESK_HOME"] = job["dir"]
    out = open(os.path.join(job["dir"], f"{phase}.out"), "w")
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    counts = {"sql": 0, "fetch": 0, "send_in": 0, "send_applied": 0}
    lock = threading.Lock()
    trigger, n = (job["trigger"], job["n"]) if phase == "kill" else (None, None)

    def tick(kind):
        with lock:
            counts[kind] += 1
            hit = kind == trigger and counts[kind] == n
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    marks = []  # (statement number, BEGIN/COMMIT/ROLLBACK): where the transactions are
    def traced(sql):
        tick("sql")
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word in ("BEGIN", "COMMIT", "ROLLBACK"):
            marks.append((counts["sql"], word))
    original_init = cache_mod.Cache.__init__
    def init(self, conn, *a, **k):
        original_init(self, conn, *a, **k)
        conn.set_trace_callback(traced)
    cache_mod.Cache.__init__ = init

    original_invoke = api_mod.CustomerManagementApi._invoke_once
    def invoke(self, op, kwargs, **k):
        tick("fetch")
        return original_invoke(self, op, kwargs, **k)
    api_mod.CustomerManagementApi._invoke_once = invoke

    sent = []
    original_add = api_mod.CustomerManagementApi.add_client_links
    def add(self, links):
        sent.extend(l.client_entity_id for l in links)
        return original_add(self, links)
    api_mod.CustomerManagementApi.add_client_links = add

    original_open = sim_app.Simulator.open
    def sim_open(self):
        original_open(self)
        server = self.server
        handle = server.handler
        def hook(ctx):
            if (ctx.soap_action or "").endswith("AddClientLinks"):
                tick("send_in")
            return None
        def handler(request):
            reply = handle(request)
            if request.operation == "AddClientLinks":
                tick("send_applied")  # applied and committed; the reply has not left yet
            return reply
        server.before_request = hook
        server.handler = handler
        return self
    sim_app.Simulator.open = sim_open

    facts = {}
    if phase == "verify":
        facts["post_kill"] = snapshot(os.path.join(job["dir"], "demo", "cache.sqlite"))
        facts["sim_before_restart"] = sim_rows(job)
    code = cli.main(argv_of(job))
    facts.update(code=code, counts=counts, marks=marks, sent=sent, final=snapshot(os.path.join(job["dir"], "demo",
                                                                                   "cache.sqlite")))
    if job["mode"] == "invite":
        facts["sim_final"] = sim_rows(job)
    with open(os.path.join(job["dir"], f"{phase}.json"), "w") as fh:
        json.dump(facts, fh)
    out.flush()

def run(job, phase):
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            child(job, phase)
            code = 100
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

for line in sys.stdin:
    job = json.loads(line)
    result = {"id": job["id"]}
    for phase in job["phases"]:
        result[phase] = run(job, phase)
    print(json.dumps(result), flush=True)
'''


def _run_zygotes(jobs: list[dict], workers: int = 2, timeout: float = 150) -> dict[str, dict]:
    """Run jobs on ``workers`` zygotes in parallel; returns id -> exit statuses per phase."""
    env = dict(os.environ)
    env.pop("LINKDESK_DEMO_FAULTS", None)
    procs = []
    for w in range(workers):
        share = jobs[w::workers]
        if not share:
            continue
        job_file = Path(share[0]["dir"]).parent / f"jobs-{share[0]['id']}.jsonl"
        job_file.write_text("".join(json.dumps(j) + "\n" for j in share))
        with open(job_file) as stdin:
            procs.append(subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=stdin, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, env=env))
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"the kill-point runs took longer than {timeout:.0f} s: {err[-2000:]}")
        assert p.returncode == 0, err[-3000:]
        for line in out.splitlines():
            r = json.loads(line)
            results[r["id"]] = r
    return results


def _load(job: dict, phase: str) -> dict:
    path = Path(job["dir"]) / f"{phase}.json"
    assert path.exists(), (job, (Path(job["dir"]) / f"{phase}.out").read_text()[-3000:])
    return json.loads(path.read_text())


def _state(snap: dict) -> tuple:
    """The complete state a sync writes (not the run bookkeeping)."""
    return tuple(json.dumps(snap[k]) for k in ("links", "accounts", "customers", "users", "events"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A demo home synced once with a frozen clock, whose simulator has since moved 31 days (so the next sync has
    changes, and many pending invitations have expired: clients to invite again), plus a bulk file."""
    from linkdesk.core.session import Session

    home = tmp_path_factory.mktemp("crash-template")
    s = Session.demo(home=home, clock=lambda: FROZEN, scale=12)
    assert s.sync().ok
    s.advance("31d")
    agency = s.identity().customer_id
    s.close()
    blocking = sorted(str(x) for x in rules.BLOCKING)
    with sqlite3.connect(home / "demo" / "simulator.sqlite") as c:
        accounts = [r[0] for r in c.execute(
            f"""SELECT a.id FROM accounts a JOIN customers c ON c.id = a.parent_customer_id
                WHERE c.side = 'client' AND a.prepaid = 0 AND NOT EXISTS (
                    SELECT 1 FROM client_links l WHERE l.type = 'AccountLink' AND l.client_entity_id = a.id
                    AND l.status IN ({','.join('?' * len(blocking))})) ORDER BY a.id""", blocking)]
        baseline = c.execute("SELECT max(id) FROM client_links").fetchone()[0]
    with sqlite3.connect(home / "demo" / "cache.sqlite") as c:  # not blocked in the (older) cache either
        stale = {r[0] for r in c.execute(f"SELECT client_entity_id FROM client_links WHERE status IN "
                                         f"({','.join('?' * len(blocking))})", blocking)}
    accounts = [a for a in accounts if a not in stale]
    assert len(accounts) >= BULK_SIZE, accounts
    chosen = accounts[:BULK_SIZE]
    (home / "bulk.csv").write_text("client_account_id,bill_to,note\n" + "".join(
        f"{a},client,crash test {n}\n" for n, a in enumerate(chosen)), encoding="utf-8")
    return {"home": home, "accounts": chosen, "baseline": baseline, "agency": agency}


def _job(template: dict, root: Path, jid: str, mode: str, trigger: str | None, n: int | None,
         phases: list[str]) -> dict:
    d = root / jid
    shutil.copytree(template["home"], d)
    return {"id": jid, "dir": str(d), "mode": mode, "trigger": trigger, "n": n, "phases": phases,
            "baseline": template["baseline"]}


@pytest.mark.slow
def test_kill_9_at_50_or_more_points_of_sync_and_bulk_invite_loses_nothing(template, tmp_path):
    started = time.monotonic()
    # 1. Uninterrupted runs of both commands: how many SQL statements, calls and sends there are, and the state an
    #    uninterrupted sync leaves.
    probes = [_job(template, tmp_path, "probe-sync", "sync", None, None, ["probe"]),
              _job(template, tmp_path, "probe-invite", "invite", None, None, ["probe"])]
    statuses = _run_zygotes(probes)
    for p in probes:
        assert statuses[p["id"]]["probe"] == 100, (Path(p["dir"]) / "probe.out").read_text()[-3000:]
    sync_probe, invite_probe = _load(probes[0], "probe"), _load(probes[1], "probe")
    assert sync_probe["code"] == 0 and invite_probe["code"] == 0
    expected_after = _state(sync_probe["final"])
    before_path = template["home"] / "demo"
    before = None
    # the previous complete state, read the same way
    from linkdesk.core.cache import Cache

    with Cache.open(before_path / "cache.sqlite") as c:
        q = lambda sql: [list(r) for r in c._conn.execute(sql)]  # noqa: E731
        before = {
            "links": q("SELECT type, client_entity_id, managing_customer_id, status, timestamp FROM client_links "
                       "ORDER BY 1, 2, 3"),
            "accounts": q("SELECT id, name, parent_customer_id FROM accounts ORDER BY id"),
            "customers": q("SELECT id, name FROM customers ORDER BY id"),
            "users": q("SELECT id, user_name FROM users ORDER BY id"),
            "events": q("SELECT count(*) FROM link_events")[0][0],
            "ok_run": q("SELECT max(id) FROM sync_runs WHERE outcome = 'ok'")[0][0],
        }
    assert _state(before) != expected_after  # the sync has something to change
    sc, ic = sync_probe["counts"], invite_probe["counts"]
    assert sc["sql"] > 50 and sc["fetch"] > 10 and ic["send_in"] == 2, (sc, ic)

    # 2. The kill points, chosen deterministically.
    rng = random.Random(SEED)
    points = [("sync", "sql", n) for n in sorted(rng.sample(range(1, sc["sql"] + 1), SYNC_SQL_POINTS))]
    # ... plus points inside the snapshot's swap transaction (the longest one) and around its COMMIT
    windows = [(a[0], b[0]) for a, b in zip(sync_probe["marks"], sync_probe["marks"][1:])
               if a[1] == "BEGIN" and b[1] == "COMMIT"]
    begin, commit = max(windows, key=lambda w: w[1] - w[0])
    assert commit - begin > 10, windows
    swap = set(rng.sample(range(begin + 1, commit), 4)) | {commit - 1, commit, commit + 1, sc["sql"]}
    points += [("sync", "sql", n) for n in sorted(swap - {p[2] for p in points})]
    points += [("sync", "fetch", n) for n in sorted(rng.sample(range(1, sc["fetch"] + 1), SYNC_FETCH_POINTS))]
    points += [("invite", "sql", n) for n in sorted(rng.sample(range(1, ic["sql"] + 1), INVITE_SQL_POINTS))]
    points += [("invite", "fetch", n) for n in sorted(rng.sample(range(1, ic["fetch"] + 1), INVITE_FETCH_POINTS))]
    points += [("invite", "send_in", 1), ("invite", "send_in", 2),
               ("invite", "send_applied", 1), ("invite", "send_applied", 2)]
    jobs = [_job(template, tmp_path, f"{mode}-{trigger}-{n}", mode, trigger, n, ["kill", "verify"])
            for mode, trigger, n in points]
    statuses = _run_zygotes(jobs)

    figures = Counter()
    for job in jobs:
        status = statuses[job["id"]]
        assert status["kill"] == -9, (job["id"], status, (Path(job["dir"]) / "kill.out").read_text()[-2000:])
        assert status["verify"] == 100, (job["id"], (Path(job["dir"]) / "verify.out").read_text()[-3000:])
        facts = _load(job, "verify")
        post = facts["post_kill"]
        # the cache opens and is sound
        assert post["opened"], (job["id"], post.get("error"))
        assert post["problems"] == [], (job["id"], post["problems"])
        final = facts["final"]
        assert final["opened"] and final["problems"] == [], (job["id"], final)
        if job["mode"] == "sync":
            # exactly the previous complete state, or (killed after the commit) exactly the new one
            if _state(post) == _state(before):
                assert post["ok_run"] == before["ok_run"], job["id"]
                figures["sync: previous state kept"] += 1
            else:
                assert _state(post) == expected_after, job["id"]
                assert post["ok_run"] != before["ok_run"], job["id"]
                figures["sync: killed after its commit"] += 1
            # and the next sync completes, with the same result an uninterrupted one has
            assert facts["code"] == 0, (job["id"], (Path(job["dir"]) / "verify.out").read_text()[-2000:])
            assert _state(final) == expected_after, job["id"]
        else:
            drafted = {str(a) for a in template["accounts"]}
            # links of other clients are untouched by an interrupted invitation
            others = lambda s: [l for l in s["links"] if str(l[1]) not in drafted]  # noqa: E731
            assert others(post) == others(before), job["id"]
            applied_before = facts["sim_before_restart"]
            assert all(v == 1 for v in applied_before.values()), (job["id"], applied_before)
            # the restart reconciled first: nothing already applied was sent again ...
            assert not set(map(str, facts["sent"])) & set(applied_before), (job["id"], facts["sent"],
                                                                               applied_before)
            # ... and in the end every client of the file has exactly one new invitation
            assert facts["sim_final"] == {a: 1 for a in drafted}, (job["id"], facts["sim_final"])
            assert final["unanswered"] == 0, job["id"]
            assert facts["code"] in (0, 1)  # 1 when rows already pending are reported as refused
            figures["invite: applied before the kill"] += len(applied_before)
        figures[f"points {job['mode']}"] += 1
    elapsed = time.monotonic() - started
    print(f"\nissue 7.2 figures: {len(jobs)} kill points ({dict(figures)}), data lost: none, {elapsed:.0f} s")
    assert len(jobs) >= 50
