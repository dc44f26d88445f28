"""Issue 7.8: the simulator as a network service. It binds 127.0.0.1 only, bounds what a request may send, and no slow
or malicious client — dribbling headers or bodies (slowloris), floods of idle connections, half-open or non-reading
connections — can hang it for others. Everything here runs on loopback, with time bounds."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from linkdesk.core.simulator.server import SERVICE_PATH, SoapServer

READ_TIMEOUT = 1.0
DEADLINE = 2.0
ENVELOPE = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            b'<GetUserRequest xmlns="https://bingads.microsoft.com/Customer/v13"/></s:Body></s:Envelope>')


@pytest.fixture
def server():
    srv = SoapServer(lambda r: {"User": None, "CustomerRoles": []}, read_timeout=READ_TIMEOUT, max_connections=8,
                     request_deadline=DEADLINE, max_body=64 * 1024)
    with srv:
        yield srv


def served_quickly(srv: SoapServer, limit: float = 1.5) -> float:
    """A whole SOAP call from another client; returns how long it took (and asserts it worked in time)."""
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=limit + 2)
    try:
        c.request("POST", SERVICE_PATH, body=ENVELOPE, headers={"SOAPAction": '"GetUser"',
                                                                "Content-Type": "text/xml; charset=utf-8"})
        r = c.getresponse()
        assert r.status == 200 and b"GetUserResponse" in r.read()
    finally:
        c.close()
    elapsed = time.perf_counter() - t
    assert elapsed < limit, elapsed
    return elapsed


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# ---------------------------------------------------------------------------------------------------------- binding


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "localhost", "192.168.1.10", "127.0.0.2", "::1"])
def test_it_refuses_to_listen_anywhere_but_127_0_0_1(host):
    with pytest.raises(ValueError, match="only listens on 127.0.0.1"):
        SoapServer(lambda r: {}, host=host)


def test_it_listens_on_127_0_0_1_only(tmp_path):
    from linkdesk.core.simulator.app import Simulator

    with Simulator(tmp_path / "sim.sqlite") as sim:
        host, port = sim.server._httpd.socket.getsockname()[:2]
        assert host == "127.0.0.1" and sim.url.startswith(f"http://127.0.0.1:{port}/")
        assert sim.token_url.startswith("http://127.0.0.1:")


# ---------------------------------------------------------------------------------------------------------- bounds


def raw(srv: SoapServer, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n", b"413"),  # bigger than max_body: unread
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
    (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"411"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", b"431"),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n", b"431"),
])
def test_oversized_or_broken_requests_are_refused_at_once(server, request_bytes, status):
    t = time.perf_counter()
    reply = raw(server, request_bytes)
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == status, reply[:200]
    assert time.perf_counter() - t < 2.5
    served_quickly(server)


def test_binary_garbage_without_a_line_end_is_dropped_after_the_read_timeout(server):
    t = time.perf_counter()
    reply = raw(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100)  # a TLS hello
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    assert time.perf_counter() - t < READ_TIMEOUT + 1.5
    served_quickly(server)


# ---------------------------------------------------------------------------------------------------------- slow clients


@pytest.mark.parametrize("start", [b"POST " + SERVICE_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n",
                                   b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"],
                         ids=["dribbled headers", "dribbled body"])
def test_slowloris_is_cut_off_at_the_request_deadline_and_others_are_served(server, start):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        s.sendall(start)
        t = time.perf_counter()
        cut = None
        while time.perf_counter() - t < DEADLINE + 3:  # a byte every 0.3 s: each read is well within read_timeout
            try:
                s.sendall(b"X-a: b\r\n"[:1])
            except OSError:
                cut = time.perf_counter() - t
                break
            if (time.perf_counter() - t) < 1:
                served_quickly(server)  # others are served meanwhile
            time.sleep(0.3)
        assert cut is not None and cut < DEADLINE + 1.5, cut
    finally:
        s.close()
    served_quickly(server)


def test_a_flood_of_idle_connections_cannot_starve_a_real_client(server):
    flood = []
    try:
        for _ in range(40):  # five times the connection slots
            flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.2)
        for _ in range(5):
            served_quickly(server, limit=2.0)  # room is made by closing the longest-idle connection
        # and connections that dribble their request are no better placed than idle ones
        for s in flood[:8]:
            try:
                s.sendall(b"POST / HTTP/1.1\r\n")
            except OSError:
                pass
        served_quickly(server, limit=2.0)
    finally:
        for s in flood:
            s.close()


def test_half_open_and_vanishing_clients_do_not_hold_threads(server):
    # sends a whole request, then closes its sending side and never reads
    half = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    half.sendall(b"POST " + SERVICE_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nSOAPAction: \"GetUser\"\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(ENVELOPE) + ENVELOPE)
    half.shutdown(socket.SHUT_WR)
    # connects and resets at once, before and after sending part of a request
    for data in (b"", b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if data:
            s.sendall(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    served_quickly(server)
    assert closed_by_server(half, within=READ_TIMEOUT + 2)
    half.close()
    deadline = time.monotonic() + READ_TIMEOUT + 2
    while server._conn_states and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server._conn_states  # every connection's thread has ended


def test_a_client_that_never_reads_its_replies_is_dropped(server):
    """Pipelined requests for the WSDL (hundreds of kilobytes each) from a client that never reads: the server's
    writes block once the socket buffers are full, and time out."""
    greedy = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        greedy.sendall(b"GET /?wsdl HTTP/1.1\r\nHost: x\r\n\r\n" * 60)
        time.sleep(0.3)
        served_quickly(server)
        deadline = time.monotonic() + READ_TIMEOUT * 2 + 20
        while len(server._conn_states) > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server._conn_states  # its thread gave up writing
    finally:
        greedy.close()
    served_quickly(server)
