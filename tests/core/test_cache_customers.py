"""Cache.customers: many customers in batched queries, exactly as Cache.customer reads each."""
from __future__ import annotations

from datetime import datetime, timezone

from linkdesk.core.cache import Cache
from linkdesk.core.model import Customer

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_customers_reads_what_customer_reads_for_every_id(tmp_path):
    cache = Cache.open(tmp_path / "cache.sqlite")
    stored = [Customer(id=1000 + i, name=("" if i % 7 == 0 else f"Customer {i}"), number=f"C{i}",
                       life_cycle_status=("Inactive" if i % 5 == 0 else "Active"), market_country="US")
              for i in range(1200)]
    w = cache.begin_snapshot(NOW)
    w.add_customers(stored)
    w.commit(NOW)
    asked = [c.id for c in stored[::3]] + [5, 999_999, stored[0].id]  # unknown ids and a repeated one
    got = cache.customers(asked)
    assert got == {cid: cache.customer(cid) for cid in asked if cache.customer(cid) is not None}
    assert set(got) == {c.id for c in stored[::3]}
    assert cache.customers([]) == {}
    cache.close()
