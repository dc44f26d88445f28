"""core/api.py: reads reuse the client's HTTP connection (keep-alive); writes, proxies and dropped connections do not."""
from __future__ import annotations

import socket
import time

import pytest
from api_soap_stub import StubServer, search_page, write_reply
from test_api import DEV, _links, _new_auth

from linkdesk.core import api as api_module
from linkdesk.core.api import CustomerManagementApi, Predicate

PRED = [Predicate("DirectManagingCustomerId", "Equals", 251000001)]


@pytest.fixture
def kept_stub():
    with StubServer() as s:
        s.keep_alive = True
        yield s


@pytest.fixture
def kapi(kept_stub):
    sleeps: list[float] = []
    a = CustomerManagementApi(developer_token=DEV, authentication=_new_auth(), location=kept_stub.url, timeout=5,
                              sleep=sleeps.append)
    a.sleeps = sleeps  # type: ignore[attr-defined]
    yield a
    a.close()


def test_reads_share_one_connection_and_send_what_urllib_sends(kapi, kept_stub):
    for i in range(3):
        kept_stub.push(search_page(i * 10, 10))
        assert len(kapi.search_client_links(PRED, index=i, size=10)) == 10
    peers = {r.peer for r in kept_stub.captured}
    assert len(peers) == 1
    for r in kept_stub.captured:
        assert r.op == "SearchClientLinks"  # header names capitalised as urllib writes them
        assert "Connection" not in r.headers
    assert kapi.sleeps == []


def test_a_write_takes_a_connection_of_its_own(kapi, kept_stub):
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    kept_stub.push(write_reply("AddClientLinks"))
    kapi.add_client_links(_links(1))
    read, write = kept_stub.captured
    assert write.op == "AddClientLinks"
    assert write.peer != read.peer
    assert write.headers.get("Connection") == "close"  # urllib's request, as before
    # The kept-alive read carries the headers urllib sends, spelled the same way (the SDK's User-Agent included).
    assert set(read.headers) | {"Connection"} == set(write.headers)
    assert read.headers["User-Agent"] == write.headers["User-Agent"]


def test_a_reply_that_closes_the_connection_is_followed_by_a_new_one(kapi, kept_stub):
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    kept_stub.keep_alive = False  # the next reply says Connection: close
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    kept_stub.keep_alive = True
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    first, second, third = (r.peer for r in kept_stub.captured)
    assert first == second != third
    assert kapi.sleeps == []


def test_a_connection_dropped_while_idle_is_replaced_without_an_error(kapi, kept_stub):
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    (pooled,) = kapi._idle
    pooled.transport._kept.sock.shutdown(socket.SHUT_RD)  # reads as end-of-stream at rest, like a peer's close
    deadline = time.monotonic() + 5
    while not api_module._dropped(pooled.transport._kept.sock) and time.monotonic() < deadline:
        time.sleep(0.01)
    kept_stub.push(search_page(0, 1))
    assert len(kapi.search_client_links(PRED, size=1)) == 1
    assert kept_stub.captured[0].peer != kept_stub.captured[1].peer
    assert kapi.sleeps == []  # no failure, no retry


def test_close_closes_the_kept_connections(kapi, kept_stub):
    kept_stub.push(search_page(0, 1))
    kapi.search_client_links(PRED, size=1)
    (pooled,) = kapi._idle
    assert pooled.transport._kept is not None
    kapi.close()
    assert pooled.transport._kept is None
    kept_stub.push(search_page(0, 1))
    assert len(kapi.search_client_links(PRED, size=1)) == 1  # calls after close() still work


def test_a_proxy_in_the_environment_sends_requests_through_urllib(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not api_module._proxied("127.0.0.1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert api_module._proxied("clientcenter.api.bingads.microsoft.com")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert not api_module._proxied("127.0.0.1")
