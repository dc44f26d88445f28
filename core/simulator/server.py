"""The simulator's HTTP side: a threaded SOAP 1.1 endpoint on 127.0.0.1 around a business-logic handler.

``SoapServer(handler)`` parses each POST with ``soap.parse_request``, calls ``handler(request) -> dict``, and
answers 200 with ``soap.serialize_response`` or 500 with ``soap.serialize_fault``. The handler raises
``faults.SimulatorFault`` subclasses for refusals; any other exception becomes an InternalError fault (code 0) and
its traceback goes to this module's logger, never to stdout. The server never binds anything but 127.0.0.1, bounds
request bodies, and puts a socket timeout on every connection so a stalled client only ever holds its own thread.

Usage::

    with SoapServer(service.handle) as server:
        client = ServiceClient("CustomerManagementService", 13, authorization_data=..., location=server.url)
"""

from __future__ import annotations

import io
import logging
import socket
import statistics
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import soap
from .faults import SimulatorFault

__all__ = [
    "SERVICE_PATH",
    "ConnectionAbort",
    "HookContext",
    "RequestTiming",
    "RouteHandler",
    "ServerStats",
    "SoapServer",
]

log = logging.getLogger(__name__)

#: The path of the real service (the SDK posts to whatever ``location`` says; any POST path is served).
SERVICE_PATH = "/Api/CustomerManagement/v13/CustomerManagementService.svc"
LOOPBACK = "127.0.0.1"
DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 256
#: A request (its line, headers and body) must arrive within this many seconds of its first byte: a client that
#: dribbles a byte now and then ("slowloris") would otherwise hold its thread for ever, read_timeout being per read.
DEFAULT_REQUEST_DEADLINE = 30.0
#: When every connection slot is taken, how long a new connection waits for one after the longest-waiting idle or
#: still-sending connection was closed to make room.
_EVICT_WAIT = 1.0

#: ``fn(path, headers, body) -> (status, content_type, body_bytes)``; headers with lower-cased names.
RouteHandler = Callable[[str, dict[str, str], bytes], tuple[int, str, bytes]]


class ConnectionAbort(Exception):
    """Raised by a ``before_request`` hook to drop the connection without any reply (simulates a reset)."""


@dataclass(frozen=True, slots=True)
class HookContext:
    """What a ``before_request`` hook sees: the raw request, before it is parsed."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    soap_action: str | None  # unquoted; None when absent


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """Server-side time of one SOAP request (seconds), excluding network I/O and injected hooks."""

    operation: str | None
    status: int
    parse: float
    handle: float
    serialize: float
    bytes_out: int

    @property
    def total(self) -> float:
        return self.parse + self.handle + self.serialize


class ServerStats:
    """Thread-safe record of the most recent requests' server-side timings."""

    def __init__(self, keep: int = 10_000):
        self._lock = threading.Lock()
        self._records: deque[RequestTiming] = deque(maxlen=keep)
        self.requests = 0
        self.faults = 0

    def record(self, timing: RequestTiming) -> None:
        with self._lock:
            self._records.append(timing)
            self.requests += 1
            if timing.status != 200:
                self.faults += 1

    def timings(self, operation: str | None = None) -> list[RequestTiming]:
        """Recorded timings, oldest first, optionally only one operation's."""
        with self._lock:
            records = list(self._records)
        return [r for r in records if operation is None or r.operation == operation]

    def summary(self) -> dict[str, dict[str, float]]:
        """Per operation: count and median / p95 / max of the total server-side time in milliseconds."""
        by_op: dict[str, list[float]] = {}
        for r in self.timings():
            by_op.setdefault(r.operation or "(unparsed)", []).append(r.total * 1000)
        out = {}
        for op, values in sorted(by_op.items()):
            values.sort()
            out[op] = {
                "count": len(values),
                "median_ms": statistics.median(values),
                "p95_ms": values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))],
                "max_ms": values[-1],
            }
        return out

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self.requests = 0
            self.faults = 0


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: "SoapServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback to stderr; keep it in the log.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Bound the connection threads. When all are taken, the connection that has waited longest without sending
        # a whole request is closed to make room (a flood of idle or dribbling connections cannot starve clients that
        # send requests); only when every connection is busy processing does a newcomer get a quick 503.
        owner = self.owner
        if not owner._slots.acquire(blocking=False) and not (owner._evict_one_waiting()
                                                             and owner._slots.acquire(timeout=_EVICT_WAIT)):
            log.warning("too many open connections (%d); refusing %s", self.owner.max_connections, client_address)
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._slots.release()


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by read_timeout, and a whole request by the request deadline (counted
    from its first byte; ``handler.waiting`` is True until then)."""

    def __init__(self, sock: socket.socket, handler: "_Handler"):
        self.sock = sock
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        h = self.handler
        owner = h.server.owner
        if h.deadline is None:
            self.sock.settimeout(owner.read_timeout)
        else:
            remaining = h.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request took longer than the request deadline")
            self.sock.settimeout(min(owner.read_timeout, remaining))
        n = self.sock.recv_into(buffer)
        if n and h.deadline is None:
            h.deadline = time.monotonic() + owner.request_deadline
            owner._set_state(h, "receiving")
        return n


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    #: A reply's headers and body leave in one write (see _send), and nothing waits for the peer's delayed ACK: on a
    #: kept-alive connection, Nagle's algorithm would hold a small reply ~40 ms (the client's delayed acknowledgement).
    disable_nagle_algorithm = True
    server_version = "linkdesk-simulator"
    sys_version = ""

    # -- plumbing -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.owner.read_timeout  # StreamRequestHandler applies it to the socket
        super().setup()
        self.deadline: float | None = None
        plain, self.rfile = self.rfile, io.BufferedReader(_DeadlineReader(self.connection, self))
        plain.close()  # releases its hold on the socket (the socket itself stays open)
        self.server.owner._set_state(self, "idle")

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._set_state(self, None)

    def handle_one_request(self) -> None:
        self.deadline = None  # the next request's deadline starts with its first byte
        self.server.owner._set_state(self, "idle")
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        log.debug("%s %s", self.address_string(), format % args)

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send(self, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        if self.command != "HEAD" and self.request_version != "HTTP/0.9" and hasattr(self, "_headers_buffer"):
            self._headers_buffer.append(b"\r\n" + body)  # end_headers' blank line, then the body: one write
            self.flush_headers()
        else:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def _refuse(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        """Answer with a short text and close the connection (the request body, if any, is not read)."""
        self.close_connection = True
        self._send(status, "text/plain; charset=utf-8", (message + "\n").encode("utf-8"), extra)
        self._drain_after_refusal()

    def _drain_after_refusal(self) -> None:
        # Closing with unread data makes the kernel send a reset, which can destroy the reply before the client
        # reads it. Half-close, then discard what is in flight for a short, bounded time.
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            deadline = time.monotonic() + 1.0
            drained = 0
            while time.monotonic() < deadline and drained < 4 * 1024 * 1024:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def _read_body(self) -> bytes | None:
        """The request body, or None after a refusal was sent (too large, no length, stalled, truncated)."""
        owner = self.server.owner
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(411, "Chunked request bodies are not supported; send a Content-Length.")
            return None
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self._refuse(411, "A Content-Length header is required.")
            return None
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self._refuse(400, "The Content-Length header is not a valid length.")
            return None
        if length > owner.max_body:
            log.info("refused a %d-byte request body (limit %d)", length, owner.max_body)
            self._refuse(413, f"The request body is larger than the simulator accepts ({owner.max_body} bytes).")
            return None
        try:
            body = self.rfile.read(length)
        except (TimeoutError, socket.timeout):
            log.info("a client stalled while sending its request body; connection closed")
            self.close_connection = True
            return None
        if len(body) != length:
            self.close_connection = True
            return None  # the client went away mid-body; nobody to answer
        return body

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client is invited to send it.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > self.server.owner.max_body:
            self._refuse(413, f"The request body is larger than the simulator accepts ({self.server.owner.max_body} bytes).")
            return False
        return super().handle_expect_100()

    # -- methods --------------------------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        route = owner._routes.get((method, path))
        try:
            if route is not None:
                self._serve_route(route)
            elif method == "POST":
                self._serve_soap()
            elif method in ("GET", "HEAD"):
                self._serve_info()
            else:
                self._refuse(405, "Method not allowed. POST SOAP 1.1 requests to this endpoint.", {"Allow": "POST, GET"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log.debug("client disconnected before the reply was sent")
        except ConnectionAbort:
            self.close_connection = True
            try:  # linger 0: close() sends a reset, like a crashed peer
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass

    def _serve_info(self) -> None:
        owner = self.server.owner
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True  # an unread body must not be taken for the next request
        query = urlsplit(self.path).query.lower()
        if query in ("wsdl", "singlewsdl"):
            self._send(200, "text/xml; charset=utf-8", owner.wsdl_bytes())
            return
        text = (
            "linkdesk simulator of the Microsoft Advertising Customer Management v13 SOAP service.\n"
            f"POST SOAP 1.1 requests to {owner.url}\n"
            f"WSDL: {owner.url}?wsdl\n"
        )
        self._send(200, "text/plain; charset=utf-8", text.encode("utf-8"))

    def _serve_route(self, route: RouteHandler) -> None:
        body = b""
        if self.command in ("POST", "PUT", "PATCH") or self.headers.get("Content-Length"):
            got = self._read_body()
            if got is None:
                return
            body = got
        self.server.owner._set_state(self, "processing")
        try:
            status, content_type, payload = route(self.path, self._headers(), body)
        except Exception:
            log.exception("route %s %s failed", self.command, self.path)
            status, content_type, payload = 500, "text/plain; charset=utf-8", b"Internal error in the simulator.\n"
        self._send(status, content_type, payload)

    def _serve_soap(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        if body is None:
            return
        owner._set_state(self, "processing")
        action_header = self.headers.get("SOAPAction")
        if owner.before_request is not None:
            ctx = HookContext(
                method="POST",
                path=self.path,
                headers=self._headers(),
                body=body,
                soap_action=soap._unquote_action(action_header) if action_header is not None else None,
            )
            try:
                override = owner.before_request(ctx)
            except SimulatorFault as fault:
                self._send(500, "text/xml; charset=utf-8", owner._fault_bytes(fault, str(uuid.uuid4())))
                return
            except ConnectionAbort:
                raise
            except Exception:
                tracking_id = str(uuid.uuid4())
                log.exception("the before_request hook failed (TrackingId %s)", tracking_id)
                self._send(500, "text/xml; charset=utf-8", owner._fault_bytes(soap.internal_error(), tracking_id))
                return
            if override is not None:
                status, content_type, payload, *rest = override
                self._send(status, content_type, payload, rest[0] if rest else None)
                return
        status, payload, timing = owner.process(body, action_header)
        owner.stats.record(timing)
        self._send(status, "text/xml; charset=utf-8", payload)


class SoapServer:
    """A threaded SOAP 1.1 server on 127.0.0.1 (port 0 = an ephemeral port) around ``handler``.

    ``handler(request: soap.Request) -> dict`` returns the response payload (see ``soap.serialize_response``) or
    raises a ``faults.SimulatorFault``. ``before_request(ctx: HookContext)`` (optional, for injected latency or
    faults) runs before parsing: it may sleep, return ``(status, content_type, bytes)`` (or ``(status, content_type,
    bytes, headers)``) to send instead, raise a
    SimulatorFault to answer with that fault, or raise ConnectionAbort to drop the connection. It can also be set
    or cleared later through the ``before_request`` attribute.

    Each connection has its own daemon thread with a ``read_timeout`` on each read of its socket and a
    ``request_deadline`` for a whole request from its first byte (a stalled or dribbling client only holds its own
    thread, and loses it); at most ``max_connections`` are served at once: when all are taken, the connection that
    waited longest without sending a whole request is closed to make room, and only when all are processing
    requests does a newcomer get an immediate 503. Bodies above ``max_body`` bytes get 413 before they are read.
    """

    def __init__(
        self,
        handler: Callable[[soap.Request], dict[str, Any]],
        host: str = LOOPBACK,
        port: int = 0,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        before_request: Callable[[HookContext], tuple | None] | None = None,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE,
    ):
        if host != LOOPBACK:
            raise ValueError(
                f"The simulator only listens on {LOOPBACK} (asked for {host!r}); it is a local test service and "
                "must not be reachable from other machines."
            )
        if max_body <= 0 or read_timeout <= 0 or max_connections <= 0 or request_deadline <= 0:
            raise ValueError("max_body, read_timeout, max_connections and request_deadline must be positive.")
        self.request_deadline = request_deadline
        #: handler -> (state, since): "idle" (waiting for a request), "receiving" (it has begun), "processing".
        self._conn_states: dict[Any, tuple[str, float]] = {}
        self._conn_lock = threading.Lock()
        self.handler = handler
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.before_request = before_request
        self.stats = ServerStats()
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self._thread: threading.Thread | None = None
        self._wsdl: bytes | None = None
        self._httpd = _HTTPServer((LOOPBACK, port), _Handler)
        self._httpd.owner = self
        self._closed = False
        self._serving = threading.Event()

    # -- connections ----------------------------------------------------------------------------------------------

    def _set_state(self, handler: Any, state: str | None) -> None:
        with self._conn_lock:
            if state is None:
                self._conn_states.pop(handler, None)
            else:
                self._conn_states[handler] = (state, time.monotonic())

    def _evict_one_waiting(self) -> bool:
        """Close the connection that has waited longest without sending a whole request; False if there is none."""
        with self._conn_lock:
            waiting = [(since, h) for h, (state, since) in self._conn_states.items() if state != "processing"]
            if not waiting:
                return False
            _, victim = min(waiting, key=lambda w: w[0])
            self._conn_states.pop(victim, None)
        log.info("all connection slots taken; closing the connection that waited longest without a request")
        try:
            victim.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    # -- addresses ------------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (for non-SOAP routes such as a token endpoint)."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The service endpoint to pass as ``location=`` to the SDK's ServiceClient."""
        return self.base_url + SERVICE_PATH

    # -- routes ---------------------------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, fn: RouteHandler) -> None:
        """Serve ``method path`` (exact path, query ignored) with ``fn(path, headers, body) -> (status, ctype, bytes)``.

        ``path`` passed to ``fn`` includes the query string; ``headers`` has lower-cased names. Bodies are bounded
        by ``max_body`` like SOAP requests; an exception in ``fn`` becomes a 500 (traceback logged).
        """
        if not path.startswith("/"):
            raise ValueError(f"A route path must start with '/': {path!r}")
        self._routes[(method.upper(), path)] = fn

    # -- the SOAP pipeline ----------------------------------------------------------------------------------------

    def process(self, body: bytes, soap_action: str | None) -> tuple[int, bytes, RequestTiming]:
        """Parse, handle and serialise one SOAP request: ``(http_status, reply_bytes, timing)``. Never raises."""
        tracking_id = str(uuid.uuid4())
        operation: str | None = None
        t0 = time.perf_counter()
        t_parsed: float | None = None
        t_handled: float | None = None
        try:
            request = soap.parse_request(body, soap_action)
            operation = request.operation
            request.tracking_id = tracking_id
            t_parsed = time.perf_counter()
            payload = self.handler(request)
            t_handled = time.perf_counter()
            reply = soap.serialize_response(request.operation, payload, tracking_id)
            status = 200
        except SimulatorFault as fault:
            t_fail = time.perf_counter()
            t_parsed, t_handled = t_parsed or t_fail, t_handled or t_fail
            if not isinstance(fault, soap.ProtocolFault):
                log.debug("%s answered with a fault: %s", operation, fault)
            reply = self._fault_bytes(fault, tracking_id)
            status = 500
        except Exception:
            t_fail = time.perf_counter()
            t_parsed, t_handled = t_parsed or t_fail, t_handled or t_fail
            log.exception("internal error while serving %s (TrackingId %s)", operation or "a request", tracking_id)
            reply = self._fault_bytes(soap.internal_error(), tracking_id)
            status = 500
        t_end = time.perf_counter()
        timing = RequestTiming(operation, status, t_parsed - t0, t_handled - t_parsed, t_end - t_handled, len(reply))
        return status, reply, timing

    @staticmethod
    def _fault_bytes(fault: SimulatorFault, tracking_id: str) -> bytes:
        try:
            return soap.serialize_fault(fault, tracking_id)
        except Exception:  # a fault the schema refuses (e.g. a bad error object) must still get an answer
            log.exception("could not serialise fault %r", fault)
            return soap.serialize_fault(soap.internal_error(), tracking_id)

    def wsdl_bytes(self) -> bytes:
        """The shipped WSDL with its service address pointing at this server (served at ``url?wsdl``)."""
        if self._wsdl is None:
            schema = soap.load_schema()
            data = schema.path.read_bytes()
            if schema.location:
                data = data.replace(schema.location.encode(), self.url.encode())
            self._wsdl = data
        return self._wsdl

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> "SoapServer":
        """Serve in a background daemon thread; returns self."""
        if self._closed:
            raise RuntimeError("This simulator server was stopped; create a new one.")
        if self._thread is None:
            soap.load_schema()  # parse the WSDL now, not inside the first request's timing
            self._serving.set()
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                name=f"simulator-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` is called from another thread (or KeyboardInterrupt)."""
        if self._closed:
            raise RuntimeError("This simulator server was stopped; create a new one.")
        soap.load_schema()
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.1)
        finally:
            self._serving.clear()

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._serving.is_set():
            self._httpd.shutdown()  # returns once serve_forever has left its loop
            self._serving.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> "SoapServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
