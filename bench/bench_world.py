"""The simulator at agency scale: how long the demo world takes to generate, the server-side time of one
SearchClientLinks page of 100 links (target ≤ 20 ms at 100,000 links, issue 3), and the server time of every operation
of one full sync.

Run:  .venv/bin/python bench/bench_world.py [--quick] [--runs 5] [--json FILE]

Generation: ``seed_world`` at the scale that gives 1k / 10k / 100k links (``linkdesk simulator serve --scale``),
median of the runs, into a fresh state file each time.

Page time: the request the sync sends (DirectManagingCustomerId = the agency, ordered by Id, pages of 100) is captured
once from the real SDK, then replayed through ``SoapServer.process`` (parse + service + serialise, as the server's
own stats count it, without HTTP) for every page in order, as a sync reads them. One pass over all pages is a run;
the figure is the median over runs of each pass's median page, with the worst page of all passes beside it.

Operations: one full sync, one call at a time, against the simulator in this process; ``S.op.<operation>`` is the
server's own time (``SoapServer.stats``) of each call of that operation, every call a sample.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

_CLOSE_LINK = re.compile(rb"</(?:[\w.-]+:)?ClientLink>")


def page_times(state_src: Path, runs: int, *, log=print) -> dict:
    """Replay every SearchClientLinks page through the server pipeline ``runs`` times; per-page times in ms."""
    from linkdesk.core.api import CustomerManagementApi, OrderBy, Predicate
    from linkdesk.core.simulator.app import Simulator
    from linkdesk.core.simulator.world import AGENCY_ID

    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp:
        state = Path(tmp) / "simulator.sqlite"
        C.copy_db(state_src, state)
        with Simulator(state) as sim:
            captured: dict[str, tuple[bytes, str]] = {}

            def hook(ctx):  # noqa: ANN001, ANN202 - SoapServer hook
                captured[ctx.soap_action or ""] = (ctx.body, ctx.headers.get("soapaction", ""))
                return None

            sim.server.before_request = hook
            api = CustomerManagementApi(developer_token=C.DEVELOPER_TOKEN,
                                        authentication=sim.authorization(C.AGENCY_ADMIN), location=sim.url)
            api.search_client_links([Predicate("DirectManagingCustomerId", "Equals", AGENCY_ID)],
                                    [OrderBy("Id", "Ascending")], 0, 100)
            sim.server.before_request = None
            body, action = next(v for k, v in captured.items() if k.endswith("SearchClientLinks"))
            if not re.search(rb"Index>0<", body):
                raise RuntimeError("The captured SearchClientLinks request has no PageInfo Index to replay.")

            def request(index: int) -> bytes:
                return re.sub(rb"(Index>)0(<)", lambda m: m.group(1) + str(index).encode() + m.group(2), body,
                              count=1)

            passes, components, worst = [], {"parse": [], "handle": [], "serialize": []}, 0.0
            pages = None
            for run in range(runs + 1):  # the first pass warms the OS cache and the server's page cursors
                times = []
                index = 0
                while True:
                    status, reply, timing = sim.server.process(request(index), action)
                    if status != 200:
                        raise RuntimeError(f"SearchClientLinks page {index} failed: {reply[:300]!r}")
                    times.append(timing.total * 1000)
                    if run:
                        components["parse"].append(timing.parse * 1000)
                        components["handle"].append(timing.handle * 1000)
                        components["serialize"].append(timing.serialize * 1000)
                    if len(_CLOSE_LINK.findall(reply)) < 100:  # fewer than 100 links: the last page
                        break
                    index += 1
                pages = index + 1
                if run:
                    passes.append(C.median(times))
                    worst = max(worst, max(times))
                    log(f"    pass {run}: {pages} pages, median {C.median(times):.2f} ms, worst {max(times):.1f} ms")
            return {"pass_medians": passes, "worst": worst, "pages": pages,
                    "components_median_ms": {k: round(C.median(v), 3) for k, v in components.items()}}


def sync_server_times(state_src: Path, *, log=print) -> dict:
    """One full sync (one call at a time) against an in-process simulator: server-side ms per operation."""
    from datetime import datetime, timezone

    from linkdesk.core import sync
    from linkdesk.core.api import CustomerManagementApi
    from linkdesk.core.cache import Cache
    from linkdesk.core.simulator.app import Simulator

    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp:
        state = Path(tmp) / "simulator.sqlite"
        C.copy_db(state_src, state)
        with Simulator(state) as sim:
            api = CustomerManagementApi(developer_token=C.DEVELOPER_TOKEN,
                                        authentication=sim.authorization(C.AGENCY_ADMIN), location=sim.url)
            cache = Cache.open(Path(tmp) / "cache.sqlite")
            sim.server.stats.reset()
            t0 = time.perf_counter()
            result = sync.full_sync(cache, api, clock=lambda: datetime.now(timezone.utc), concurrency=1)
            seconds = time.perf_counter() - t0
            cache.close()
            api.close()
            ops = {}
            for op in sim.server.stats.summary():
                times = [t.total * 1000 for t in sim.server.stats.timings(op)]
                ops[op] = {"calls": len(times), "median_ms": round(C.median(times), 2), "max_ms": round(max(times), 1),
                           "total_s": round(sum(times) / 1000, 2), "ms": times}
    log(f"    one sync ({result.links:,} links, one call at a time) in {seconds:.1f} s; server time by operation: "
        + ", ".join(f"{op} {v['calls']}× {v['median_ms']} ms = {v['total_s']} s" for op, v in ops.items()))
    return {"seconds": seconds, "ops": ops, "ok": result.ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(ap)
    args = ap.parse_args(argv)
    runs = C.runs_of(args)
    sizes = {"1k": 1_000} if args.quick else C.SIZES
    report = C.Report("bench_world", vars(args) | {"json": str(args.json) if args.json else None})
    print(f"bench_world: {runs} runs per figure; machine {report.machine['nproc']} × {report.machine['cpu']}")

    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp:
        for label, links in sizes.items():
            seconds, info = [], {}
            for _ in range(runs):
                info = C.generate_world(Path(tmp) / f"world-{label}.sqlite", links)
                seconds.append(info["seconds"])
            ok = C.within(C.median(seconds), 60) if links >= 100_000 else None
            report.add(C.Figure(f"W.gen.{label}", f"generate the demo world, {info['latest_links']:,} links "
                                f"(scale {info['scale']:,})", "s", seconds,
                                target="≤ 60 s" if ok is not None else None, ok=ok, extra=info))

    biggest = max(sizes.values())
    label = next(k for k, v in sizes.items() if v == biggest)
    state = C.world_state(biggest)
    print(f"  server-side SearchClientLinks pages at {label} ...")
    pt = page_times(state, runs)
    report.add(C.Figure(f"S.page.{label}", f"server time of one SearchClientLinks page of 100 ({pt['pages']} pages "
                        "in order; median page of each pass)", "ms", pt["pass_medians"], target="≤ 20 ms",
                        ok=C.within(C.median(pt["pass_medians"]), 20),
                        note=f"worst page {pt['worst']:.1f} ms; parse/handle/serialise medians "
                             f"{pt['components_median_ms']}",
                        extra={"worst_ms": round(pt["worst"], 2), **pt["components_median_ms"]}))
    print(f"  server time by operation during one sync at {label} ...")
    st = sync_server_times(state)
    for op, v in sorted(st["ops"].items(), key=lambda kv: -kv[1]["total_s"]):
        report.add(C.Figure(f"S.op.{op}.{label}", f"server time of one {op} during a full sync at {label} (each call "
                            "is a sample)", "ms", v["ms"], note=f"{v['calls']} calls, {v['total_s']} s in all",
                            extra={"calls": v["calls"], "total_s": v["total_s"]}))
    report.write(args.json)
    return 0


if __name__ == "__main__":
    C.main_guard(main)
