"""Measure the cache's queries at agency scale: 100,000 links, 20,000 reachable accounts.

Run:  .venv/bin/python bench/bench_cache.py [--links 100000] [--accounts 20000] [--runs 7] [--json FILE]

Builds a synthetic world in a temporary LINKDESK-free directory (deterministic, seed 1), then prints the median
(and worst) wall time of each query over ``--runs`` runs. A measurement, not a test: nothing fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from linkdesk.core.cache import Cache
from linkdesk.core.model import (
    Account,
    ClientLink,
    ClientLinkStatus as S,
    Customer,
    CustomerRole,
    LinkType,
    Perspective,
    Role,
    Stage,
    User,
)

AGENCY = 1_000
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

# A realistic mix (weights): most links active or ended, a good share pending.
STATUS_MIX = [
    (S.Active, 30), (S.LinkPending, 20), (S.LinkExpired, 15), (S.LinkCanceled, 8), (S.LinkDeclined, 7),
    (S.Inactive, 8), (S.LinkInProgress, 3), (S.LinkAccepted, 2), (S.UnlinkRequested, 2), (S.UnlinkPending, 1),
    (S.UnlinkFailed, 2), (S.LinkFailed, 2),
]
WORDS = ["Acme", "Contoso", "Fabrikam", "Northwind", "Tailspin", "Litware", "Adatum", "Proseware", "Wingtip",
         "Woodgrove", "Alpine", "Coho", "Fourth", "Lucerne", "Margie", "Trey", "Wide World", "Blue Yonder"]


def build_world(n_links: int, n_accounts: int, seed: int = 1) -> dict[str, list[Any]]:
    """Client customers with 1-4 accounts each; one account link per account; ``n_accounts`` of them known as
    accounts (the active-like ones first), reachable by the agency's Super Admin; a Campaign Manager reaches 5,000."""
    rnd = random.Random(seed)
    statuses = [s for s, w in STATUS_MIX for _ in range(w)]
    customers = [Customer(AGENCY, "Contoso Agency", "AG1000")]
    links: list[ClientLink] = []
    accounts: list[Account] = []
    cust_id, acc_id = 2_000_000, 50_000_000
    while len(links) < n_links:
        cust_id += 1
        cname = f"{rnd.choice(WORDS)} {rnd.choice(WORDS)} {cust_id}"
        customers.append(Customer(cust_id, cname, f"C{cust_id}"))
        for _ in range(rnd.randint(1, 4)):
            if len(links) >= n_links:
                break
            acc_id += 1
            st = rnd.choice(statuses)
            if len(accounts) < n_accounts and st in (S.Active, S.UnlinkFailed):
                accounts.append(Account(acc_id, f"{cname} acct {acc_id}", f"A{acc_id}", cust_id,
                                        linked_agency_ids=(AGENCY,)))
            changed = NOW - timedelta(minutes=rnd.randint(0, 60 * 24 * 45))
            links.append(
                ClientLink(
                    type=LinkType.AccountLink, client_entity_id=acc_id, client_entity_number=f"A{acc_id}",
                    client_entity_name=f"{cname} acct {acc_id}", managing_customer_id=AGENCY,
                    managing_customer_number="AG1000", managing_customer_name="Contoso Agency",
                    note=rnd.choice([None, "Q3 onboarding", "renewal", "[bold]vip[/bold]"]), name=f"Link {acc_id}",
                    inviter_email="am@contoso.example", is_bill_to_client=rnd.random() < 0.7,
                    start_date=changed, status=st, last_modified_date_time=changed, last_modified_by_user_id=7,
                    timestamp=f"{rnd.getrandbits(32):08x}", client_entity_customer_number=f"C{cust_id}",
                )
            )
    reach = [a.id for a in accounts]
    users = [
        User(7, "super@contoso", AGENCY, "Sam", "Super", roles=(CustomerRole(AGENCY, Role.SuperAdmin, None, tuple(reach)),)),
        User(8, "std@contoso", AGENCY, "Stan", "Dard", roles=(CustomerRole(AGENCY, Role.Standard, None, tuple(reach)),)),
        User(9, "cm@contoso", AGENCY, "Cam", "Manager",
             roles=(CustomerRole(AGENCY, Role.AdvertiserCampaignManager, tuple(reach[:5000])),)),
        User(10, "viewer@contoso", AGENCY, "Vi", "Ewer", roles=(CustomerRole(AGENCY, Role.Viewer, tuple(reach[:50])),)),
    ]
    return {"customers": customers, "accounts": accounts, "users": users, "links": links}


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """(median ms, worst ms, last result) over ``runs`` runs after one warm-up."""
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--links", type=int, default=100_000)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    world = build_world(args.links, args.accounts)
    gen_s = time.perf_counter() - t0
    results: list[dict[str, Any]] = []

    def row(name: str, median: float, worst: float, note: str = "") -> None:
        results.append({"query": name, "median_ms": round(median, 2), "worst_ms": round(worst, 2), "note": note})

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.sqlite"
        cache = Cache.open(path)

        # --- snapshot: first sync (empty -> everything), then a re-sync with ~1% of statuses changed.
        def full_sync(links: list[ClientLink], at: datetime) -> Any:
            snap = cache.begin_snapshot(at)
            snap.add_customers(world["customers"])
            snap.add_accounts(world["accounts"])
            snap.add_users(world["users"])
            t = time.perf_counter()
            snap.add_links(links)
            staged = time.perf_counter() - t
            t = time.perf_counter()
            run = snap.commit(at)
            return staged, time.perf_counter() - t, run

        staged, committed, run = full_sync(world["links"], NOW)
        row(f"first sync: stage {len(world['links']):,} links", staged * 1000, staged * 1000, "batched TEMP inserts")
        row("first sync: commit (swap in + events)", committed * 1000, committed * 1000, f"{run.events:,} events")

        rnd = random.Random(2)
        resync_times, commit_times = [], []
        for i in range(3):
            changed = [
                lk.replace(status=S.Active) if rnd.random() < 0.01 and lk.status == S.LinkPending else lk
                for lk in world["links"]
            ]
            s, c, run = full_sync(changed, NOW + timedelta(hours=i + 1))
            resync_times.append(s * 1000)
            commit_times.append(c * 1000)
            world["links"] = changed
        row("re-sync: stage 100k links", statistics.median(resync_times), max(resync_times))
        row("re-sync: commit (~0.2% changed)", statistics.median(commit_times), max(commit_times),
            f"{run.events:,} events")
        cache.close()

        def reopen() -> None:
            Cache.open(path).close()

        m, w, _ = timed(reopen, args.runs)
        row("Cache.open + close (existing 100k cache)", m, w)
        cache = Cache.open(path)

        runs = args.runs
        q = dict(customer_id=AGENCY, now=NOW)
        for stage in Stage:
            m, w, res = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, stage=stage, sort="client", **q),
                              runs)
            row(f"inbox_page sent stage={stage.value} sort=client", m, w, f"{len(res)} rows")
        for sort in ("client", "status", "age", "days_left", "last_change"):
            for desc in (False, True):
                m, w, _ = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, sort=sort, descending=desc,
                                                         **q), runs)
                row(f"inbox_page sent all sort={sort}{' desc' if desc else ''}", m, w)
        m, w, _ = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, stage=Stage.PENDING, sort="days_left",
                                                 **q), runs)
        row("inbox_page sent stage=pending sort=days_left", m, w)
        m, w, _ = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, sort="client", offset=50_000, **q), runs)
        row("inbox_page sent all sort=client offset=50,000", m, w)
        m, w, _ = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, stage=Stage.ENDED, sort="client",
                                                 offset=20_000, **q), runs)
        row("inbox_page sent stage=ended offset=20,000", m, w)
        for text in ("acme", "zzq", "[bold]", "50012345"):
            m, w, res = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, text=text, sort="client", **q),
                              runs)
            row(f"inbox_page text={text!r}", m, w, f"{len(res)} rows")
        m, w, _ = timed(lambda: cache.inbox_page(perspective=Perspective.SENT, stage=Stage.ACTIVE, text="acme",
                                                 sort="last_change", descending=True, **q), runs)
        row("inbox_page stage=active text='acme' sort=last_change desc", m, w)
        m, w, _ = timed(lambda: cache.inbox_page(perspective=None, stage=Stage.NEEDS_ACTION, sort="client", **q), runs)
        row("inbox_page both perspectives stage=needs_action", m, w)

        m, w, n = timed(lambda: cache.inbox_count(perspective=Perspective.SENT, **q), runs)
        row("inbox_count sent all", m, w, f"{n:,}")
        for stage in (Stage.NEEDS_ACTION, Stage.ACTIVE, Stage.ENDED):
            m, w, n = timed(lambda: cache.inbox_count(perspective=Perspective.SENT, stage=stage, **q), runs)
            row(f"inbox_count sent stage={stage.value}", m, w, f"{n:,}")
        m, w, n = timed(lambda: cache.inbox_count(perspective=Perspective.SENT, text="acme", **q), runs)
        row("inbox_count text='acme'", m, w, f"{n:,}")
        m, w, n = timed(lambda: cache.inbox_count(perspective=None, stage=Stage.PENDING, **q), runs)
        row("inbox_count both perspectives stage=pending", m, w, f"{n:,}")
        m, w, c = timed(lambda: cache.stage_counts(AGENCY, NOW), runs)
        row("stage_counts (both perspectives)", m, w, " ".join(f"{k.value}={v}" for k, v in c.items()))
        m, w, c = timed(lambda: cache.stage_counts(AGENCY, NOW, text="acme"), runs)
        row("stage_counts text='acme'", m, w)

        m, w, _ = timed(lambda: cache.agency_users(AGENCY), runs)
        row("agency_users", m, w)
        m, w, n = timed(lambda: cache.user_accounts_count(7), runs)
        row("user_accounts_count (Super Admin)", m, w, f"{n:,}")
        m, w, _ = timed(lambda: cache.user_accounts(7, 0, 100), runs)
        row("user_accounts page 1 (20,000 accounts)", m, w)
        m, w, _ = timed(lambda: cache.user_accounts(7, n - 100, 100), runs)
        row("user_accounts last page", m, w)
        m, w, n = timed(lambda: cache.client_customers_count(AGENCY), runs)
        row("client_customers_count", m, w, f"{n:,}")
        m, w, res = timed(lambda: cache.client_customers(AGENCY, 0, 100), runs)
        row("client_customers page 1", m, w)
        m, w, _ = timed(lambda: cache.client_customers(AGENCY, n - 100, 100), runs)
        row("client_customers last page", m, w)
        cid = res[0].customer_id
        m, w, _ = timed(lambda: cache.customer_accounts(cid, agency_customer_id=AGENCY), runs)
        row("customer_accounts page", m, w)
        m, w, _ = timed(lambda: cache.customer_accounts_count(cid, agency_customer_id=AGENCY), runs)
        row("customer_accounts_count", m, w)
        key = world["links"][12_345].key
        m, w, _ = timed(lambda: cache.link(key), runs)
        row("link(key)", m, w)
        m, w, _ = timed(lambda: cache.timeline(key), runs)
        row("timeline(key)", m, w)
        size_mb = path.stat().st_size / 1e6
        cache.close()

    print(f"linkdesk cache benchmark — {args.links:,} links, {args.accounts:,} accounts; medians of {args.runs} runs")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"load average (1/5/15 min) at the end: {load} on {os.cpu_count()} CPUs — figures scale with it")
    print(f"machine: {platform.platform()}, Python {platform.python_version()}, "
          f"SQLite {__import__('sqlite3').sqlite_version}; world generated in {gen_s:.1f} s; cache file {size_mb:.0f} MB")
    width = max(len(r["query"]) for r in results)
    print(f"{'query':<{width}}  {'median ms':>10}  {'worst ms':>9}  note")
    for r in results:
        print(f"{r['query']:<{width}}  {r['median_ms']:>10.2f}  {r['worst_ms']:>9.2f}  {r['note']}")
    if args.json:
        args.json.write_text(json.dumps({"links": args.links, "accounts": args.accounts, "runs": args.runs,
                                         "platform": platform.platform(), "load": load, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
