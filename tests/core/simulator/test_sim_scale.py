"""Opt-in measurement at agency scale: a 100,000-link world and SearchClientLinks pages served from it.

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
import time
from urllib.parse import urlsplit

import pytest

from linkdesk.core.simulator import world
from linkdesk.core.simulator.app import Simulator
from linkdesk.core.simulator.state import State

pytestmark = pytest.mark.skipif(
    os.environ.get("LINKDESK_SIM_SCALE") != "1",
    reason="opt-in measurement (about a minute): set LINKDESK_SIM_SCALE=1 to generate a 100,000-link world",
)

#: Generated clients for at least 100,000 most-recent links (about 2.1 links per client with the default mix).
SCALE = int(os.environ.get("LINKDESK_SIM_SCALE_CLIENTS", "48000"))
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


def test_scale_world_and_page_times(tmp_path):
    path = tmp_path / "scale.sqlite"
    with State(path) as st:
        t0 = time.perf_counter()
        summary = world.seed_world(st, seed=1, scale=SCALE)
        generation = time.perf_counter() - t0
        with st.read() as tx:
            agency_links = tx.c.execute("SELECT COUNT(*) FROM client_links WHERE is_latest = 1 AND "
                                        "managing_customer_id = ?", (world.AGENCY_ID,)).fetchone()[0]
    assert summary.latest_links >= 100_000
    report: dict[str, object] = {"clients": SCALE, "links": summary.links, "latest_links": summary.latest_links,
                                 "agency_links": agency_links, "generation_s": round(generation, 2)}
    with Simulator(path) as sim:
        token = sim.access_token(world.AGENCY_SUPER_ADMIN)
        parts = urlsplit(sim.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        last_page = (agency_links - 1) // 100  # the last full page is the one before it
        pages = {}
        for label, ordering in (("Id", ""), ("Name", "Name"), ("NameDesc", "Name")):
            order_xml = "" if not ordering else (
                f"<t:Ordering><e:OrderBy><e:Field>{ordering}</e:Field><e:Order>"
                f"{'Descending' if label.endswith('Desc') else 'Ascending'}</e:Order></e:OrderBy></t:Ordering>")
            for index in (0, last_page // 2, last_page - 1):
                body = ENVELOPE.format(token=token, agency=world.AGENCY_ID, ordering=order_xml, index=index).encode()
                sim.server.stats.reset()
                for _ in range(RUNS):
                    conn.request("POST", parts.path, body, {"Content-Type": "text/xml; charset=utf-8",
                                                            "SOAPAction": '"SearchClientLinks"'})
                    resp = conn.getresponse()
                    reply = resp.read()
                    assert resp.status == 200
                    assert reply.count(b"<a:ClientLink>") == 100
                totals = [t.total * 1000 for t in sim.server.stats.timings("SearchClientLinks")]
                handles = [t.handle * 1000 for t in sim.server.stats.timings("SearchClientLinks")]
                pages[f"{label}@{index}"] = {"median_ms": round(statistics.median(totals), 2),
                                             "max_ms": round(max(totals), 2),
                                             "handler_median_ms": round(statistics.median(handles), 2)}
        conn.close()
    report["search_page_100"] = pages
    print("\nSIMULATOR SCALE " + json.dumps(report, indent=2))
