"""core/cache.py: the fast column conversion of a ClientLink gives exactly the general one's values."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from linkdesk.core import cache as C
from linkdesk.core.model import ClientLink, ClientLinkStatus, CustomerLinkPermission, LinkType


def _random_link(rng: random.Random) -> ClientLink:
    def maybe(v):
        return None if rng.random() < 0.2 else v

    base = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(10**8), microseconds=rng.randrange(10**6))
    status = rng.choice([*ClientLinkStatus, "SomeFutureStatus", None])
    return ClientLink(
        type=rng.choice([LinkType.AccountLink, LinkType.CustomerLink, None, "FutureLink"]),
        client_entity_id=rng.randrange(1, 10**9),
        client_entity_number=maybe(f"F{rng.randrange(10**6):06d}"),
        client_entity_name=maybe(rng.choice(["Straße GmbH", "ÉCOLE", "plain", "", "Ǆemo ΣΑΣ"])),
        managing_customer_id=rng.randrange(1, 10**9),
        managing_customer_number=maybe("CEF5F4C1"),
        managing_customer_name=maybe("Contoso Agency"),
        note=maybe(rng.choice(["a note", "", "ﬁne"])),
        name=maybe("Link name"),
        inviter_email=maybe("a@b.example"),
        inviter_name=maybe("Inviter"),
        inviter_phone=maybe("+1 555"),
        is_bill_to_client=rng.choice([True, False, None]),
        start_date=maybe(base if rng.random() < 0.8 else base.replace(tzinfo=None)),
        status=status,
        suppress_notification=rng.choice([True, False]),
        last_modified_date_time=maybe(base + timedelta(days=rng.randrange(90))),
        last_modified_by_user_id=maybe(rng.randrange(1, 10**9)),
        timestamp=maybe("AAAAAAAACjY="),
        forward_compatibility_map=rng.choice([(), (("k", "v"),), (("a", "1"), ("b", "2"))]),
        customer_link_permission=rng.choice([*CustomerLinkPermission, "FuturePermission", None]),
        client_entity_customer_number=maybe("CF0537F1"),
    )


def test_fast_values_equal_the_general_ones_value_for_value_and_type_for_type():
    rng = random.Random(6)
    for _ in range(3000):
        link = _random_link(rng)
        fast, general = C._link_values(link), C._link_values_general(link)
        assert fast == general
        assert [type(v) for v in fast] == [type(v) for v in general]


def test_a_link_without_identity_is_refused_by_both():
    for link in (ClientLink(client_entity_id=None, managing_customer_id=1), ClientLink(client_entity_id=1)):
        with pytest.raises(ValueError, match="without ClientEntityId"):
            C._link_values(link)


def test_an_unexpected_value_takes_the_general_path():
    link = ClientLink(client_entity_id="150000001", managing_customer_id=251000001, last_modified_by_user_id="42")
    assert C._link_values(link) == C._link_values_general(link)
