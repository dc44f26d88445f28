"""Paging at scale: a generated world and SearchClientLinks pages served from it (100,000 links when opted in).

Run with ``LINKDESK_SIM_SCALE=1 .venv/bin/python -m pytest tests/core/simulator/test_sim_scale.py -s``. It prints
the generation time and the server-side time (parse + handle + serialise, from the server's own timings) of pages
of 100 links at several depths and orderings. It asserts what the world and the pages contain, not how fast they
were: timing depends on the machine (the targets, 60 s and 20 ms, are checked by reading the printed figures).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
from urllib.parse import urlsplit


from linkdesk.core.simulator import world
from linkdesk.core.simulator.app import Simulator
from linkdesk.core.simulator.state import State

#: In the default run a small generated world checks that paging (1 and 4 in flight, every ordering, cold deep
#: pages) returns every link exactly once; with LINKDESK_SIM_SCALE=1 the same test runs at agency scale and prints
#: the figures. 48,000 clients give at least 100,000 most-recent links (about 2.1 links per client).
FULL = os.environ.get("LINKDESK_SIM_SCALE") == "1"
SCALE = int(os.environ.get("LINKDESK_SIM_SCALE_CLIENTS", "48000" if FULL else "1200"))
MIN_LATEST = 100_000 if FULL else 2_000
RUNS = 7

ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:t="https://bingads.microsoft.com/Customer/v13" xmlns:e="https://bingads.microsoft.com/Customer/v13/Entities">'
    "<s:Header><t:AuthenticationToken>{token}</t:AuthenticationToken><t:DeveloperToken>BBD37VB98</t:DeveloperToken>"
    "</s:Header><s:Body><t:SearchClientLinksRequest><t:Predicates><e:Predicate><e:Field>DirectManagingCustomerId"
    "</e:Field><e:Operator>Equals</e:Operator><e:Value>{agency}</e:Value></e:Predicate></t:Predicates>{ordering}"
    "<t:PageInfo><e:Index>{index}</e:Index><e:Size>100</e:Size></t:PageInfo></t:SearchClientLinksRequest>"
    "</s:Body></s:Envelope>"
)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    conn.request("POST", path, body, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"SearchClientLinks"'})
    resp = conn.getresponse()
    reply = resp.read()
    assert resp.status == 200, reply[:500]
    return reply


def _summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"pages": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "max_ms": round(ms[-1], 2)}


def test_scale_world_and_page_times(tmp_path):
    path = tmp_path / "scale.sqlite"
    with State(path) as st:
        t0 = time.perf_counter()
        summary = world.seed_world(st, seed=1, scale=SCALE)
        generation = time.perf_counter() - t0
        with st.read() as tx:
            agency_links = tx.c.execute("SELECT COUNT(*) FROM client_links WHERE is_latest = 1 AND "
                                        "managing_customer_id = ?", (world.AGENCY_ID,)).fetchone()[0]
    assert summary.latest_links >= MIN_LATEST
    report: dict[str, object] = {"clients": SCALE, "links": summary.links, "latest_links": summary.latest_links,
                                 "agency_links": agency_links, "generation_s": round(generation, 2)}
    pages_total = (agency_links + 99) // 100
    with Simulator(path) as sim:
        token = sim.access_token(world.AGENCY_SUPER_ADMIN)
        parts = urlsplit(sim.url)

        def body(index: int, order: str) -> bytes:
            order_xml = "" if order == "Id" else (
                "<t:Ordering><e:OrderBy><e:Field>Name</e:Field><e:Order>"
                f"{'Descending' if order == 'NameDesc' else 'Ascending'}</e:Order></e:OrderBy></t:Ordering>")
            return ENVELOPE.format(token=token, agency=world.AGENCY_ID, ordering=order_xml, index=index).encode()

        results: dict[str, object] = {}
        for order, in_flight in (("Id", 1), ("Id", 4), ("Name", 1), ("NameDesc", 1), ("NameDesc", 4)):
            # A sync: every page in turn, 1 or 4 requests in flight (bounded concurrency), one connection each.
            sim.server.stats.reset()
            sim.state.cursors = type(sim.state.cursors)()
            counter = iter(range(pages_total))
            lock = threading.Lock()
            seen: list[int] = []

            def pager() -> None:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                while True:
                    with lock:
                        index = next(counter, None)
                    if index is None:
                        break
                    reply = _post(conn, parts.path, body(index, order))
                    with lock:
                        seen.append(reply.count(b"<a:ClientLink>"))
                conn.close()

            threads = [threading.Thread(target=pager) for _ in range(in_flight)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            assert sum(seen) == agency_links
            timings = sim.server.stats.timings("SearchClientLinks")
            results[f"sync_{order}_{in_flight}_in_flight"] = {**_summary([t.total * 1000 for t in timings]),
                                        "handler_median_ms": round(statistics.median(t.handle for t in timings) * 1000, 2),
                                        "wall_s": round(wall, 2)}
            if in_flight > 1:
                continue
            # A cold deep page (no cursor): the OFFSET scan, measured alone.
            sim.state.cursors = type(sim.state.cursors)()
            sim.server.stats.reset()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            for _ in range(RUNS):
                sim.state.cursors = type(sim.state.cursors)()
                assert _post(conn, parts.path, body(pages_total - 2, order)).count(b"<a:ClientLink>") == 100
            conn.close()
            results[f"cold_deep_{order}"] = _summary([t.total * 1000 for t in sim.server.stats.timings("SearchClientLinks")])
    report["search_page_100"] = results
    report["load_average"] = os.getloadavg()
    print("\nSIMULATOR SCALE " + json.dumps(report, indent=2))
