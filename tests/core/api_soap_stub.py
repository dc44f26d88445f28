"""A canned-reply SOAP stub on 127.0.0.1 for tests of core/api.py (like the probe in shared/docs/api-probe).

Replies come from a queue (or from a ``handler(request)`` callable); every request is captured. A reply is
``Reply(status, body, headers)``, or one of the special actions ``RESET`` (drop the connection with a TCP reset) and
``Slow(seconds, reply)`` (answer late, to trigger client timeouts).

The XML builders below write replies the way the service's WCF stack does: default namespaces and ``a:``/``i:``
prefixes that differ from the ones suds uses in requests, ``i:nil`` for nulls, a ``TrackingId`` header.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "https://bingads.microsoft.com/Customer/v13"
ENT = "https://bingads.microsoft.com/Customer/v13/Entities"
EXC = "https://bingads.microsoft.com/Customer/v13/Exception"
ADAPI = "https://adapi.microsoft.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
GEN = "http://schemas.datacontract.org/2004/07/System.Collections.Generic"


@dataclass
class Reply:
    status: int
    body: bytes | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Slow:
    seconds: float
    reply: Reply


RESET = "RESET"


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    #: The client's (host, port): requests on one kept-alive connection share it.
    peer: tuple = ()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def op(self) -> str:
        return self.headers.get("Soapaction", "").strip('"')

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    def body_element(self) -> ET.Element:
        return self.xml().find(f"{{{ENV_NS}}}Body")[0]

    def header_text(self, name: str) -> str | None:
        h = self.xml().find(f"{{{ENV_NS}}}Header")
        el = h.find(f"{{{TNS}}}{name}") if h is not None else None
        return el.text if el is not None else None

    def page_index(self) -> int:
        return int(self.xml().find(f".//{{{TNS}}}PageInfo/{{{ENT}}}Index").text)

    def client_links(self) -> list[ET.Element]:
        return self.xml().findall(f".//{{{TNS}}}ClientLinks/{{{ENT}}}ClientLink")


class StubServer:
    """ThreadingHTTPServer on 127.0.0.1:0. Use as a context manager."""

    def __init__(self) -> None:
        self.queue: deque = deque()
        self.captured: list[Captured] = []
        self.handler: Callable[[Captured], object] | None = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        #: Keep connections open between requests (HTTP/1.1 keep-alive) instead of closing after every reply.
        self.keep_alive = False
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = Captured(self.path, dict(self.headers), body, tuple(self.client_address))
                self.keep = stub.keep_alive  # decided when the request arrives (a test may change it after)
                with stub.lock:
                    stub.captured.append(req)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    action = stub.handler(req) if stub.handler else (stub.queue.popleft() if stub.queue else None)
                if isinstance(action, Slow):
                    time.sleep(action.seconds)
                    action = action.reply
                with stub.lock:  # counted as in flight until its answer starts (the client may ask again at once)
                    stub.in_flight -= 1
                self._answer(action)

            def _answer(self, action: object) -> None:
                if action == RESET:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if action is None:
                    action = Reply(500, "<html><body>stub: no reply queued</body></html>")
                assert isinstance(action, Reply)
                data = action.body.encode("utf-8") if isinstance(action.body, str) else action.body
                try:
                    self.send_response(action.status)
                    headers = {"Content-Type": "text/xml; charset=utf-8", **action.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    if not getattr(self, "keep", False):
                        self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                self.close_connection = not getattr(self, "keep", False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/Api/CustomerManagement/v13/CustomerManagementService.svc"

    def push(self, *replies: object) -> None:
        self.queue.extend(replies)

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/svc"


# --------------------------------------------------------------------------------------------------------------------
# Reply builders
# --------------------------------------------------------------------------------------------------------------------


def envelope(body: str, tracking: str | None = "trk-1", status: int = 200) -> Reply:
    header = (f'<s:Header><h:TrackingId xmlns:h="{TNS}">{tracking}</h:TrackingId></s:Header>'
              if tracking is not None else "")
    return Reply(status, f'<s:Envelope xmlns:s="{ENV_NS}">{header}<s:Body>{body}</s:Body></s:Envelope>')


LINK_DEFAULTS = {
    "Type": "AccountLink",
    "ClientEntityId": None,  # filled from i
    "ClientEntityNumber": None,
    "ClientEntityName": None,
    "ManagingCustomerId": "251000001",
    "ManagingCustomerNumber": "C251X001",
    "ManagingCustomerName": "Fabrikam Agency",
    "Note": "NIL",
    "Name": None,
    "InviterEmail": "ops@fabrikam.example",
    "InviterName": "Fabrikam Agency",
    "InviterPhone": "NIL",
    "IsBillToClient": "true",
    "StartDate": "2026-01-05T00:00:00",
    "Status": "LinkPending",
    "SuppressNotification": "false",
    "LastModifiedDateTime": "2026-01-05T10:11:12.1234567Z",
    "LastModifiedByUserId": "987654",
    "Timestamp": "AAAAAAAAB9E=",
    "ForwardCompatibilityMap": "EMPTYMAP",
    "CustomerLinkPermission": "NIL",
}


def link_xml(i: int, p: str = "a", **fields: str | None) -> str:
    """One ``ClientLink`` in WSDL order. Field values: a string, "NIL" (i:nil), None to omit the element."""
    values = dict(LINK_DEFAULTS)
    values.update(ClientEntityId=str(149000000 + i), ClientEntityNumber=f"F1{i:06d}", ClientEntityName=f"Client {i}",
                  Name=f"Link {i}")
    values.update(fields)
    out = [f"<{p}:ClientLink>"]
    for name, v in values.items():
        if v is None:
            continue
        if v == "NIL":
            out.append(f'<{p}:{name} i:nil="true"/>')
        elif v == "EMPTYMAP":
            out.append(f'<{p}:{name} xmlns:b="{GEN}"/>')
        else:
            out.append(f"<{p}:{name}>{v}</{p}:{name}>")
    out.append(f"</{p}:ClientLink>")
    return "".join(out)


def search_reply(links: str | None, tracking: str | None = "trk-1") -> Reply:
    """``links``: concatenated ClientLink XML ('' = empty array, None = nil array)."""
    inner = (f'<ClientLinks xmlns:a="{ENT}" xmlns:i="{XSI}">{links}</ClientLinks>' if links is not None
             else f'<ClientLinks i:nil="true" xmlns:i="{XSI}"/>')
    return envelope(f'<SearchClientLinksResponse xmlns="{TNS}">{inner}</SearchClientLinksResponse>', tracking)


def search_page(start: int, count: int) -> Reply:
    return search_reply("".join(link_xml(i) for i in range(start, start + count)))


def op_error_xml(code: int | str, p: str = "a", message: str | None = None) -> str:
    return (f"<{p}:OperationError><{p}:Code>{code}</{p}:Code><{p}:Details i:nil=\"true\"/>"
            f"<{p}:Message>{message or f'message {code}'}</{p}:Message></{p}:OperationError>")


def write_reply(op: str, pattern: str = "", operation_errors: list[int] | None = None,
                partial: str = "array") -> Reply:
    """Add/UpdateClientLinksResponse. ``pattern``: space-separated N (nil entry) / a code (error entry), in order.
    ``partial``: "array" (use pattern), "nil", "absent" or "empty"."""
    if operation_errors:
        oe = (f'<OperationErrors xmlns:a="{EXC}" xmlns:i="{XSI}">'
              + "".join(op_error_xml(c) for c in operation_errors) + "</OperationErrors>")
    else:
        oe = f'<OperationErrors i:nil="true" xmlns:i="{XSI}"/>'
    if partial == "nil":
        pe = f'<PartialErrors i:nil="true" xmlns:i="{XSI}"/>'
    elif partial == "absent":
        pe = ""
    elif partial == "empty":
        pe = f'<PartialErrors xmlns:a="{EXC}" xmlns:i="{XSI}"/>'
    else:
        items = []
        for tok in pattern.split():
            if tok == "N":
                items.append('<a:ArrayOfOperationError i:nil="true"/>')
            else:
                items.append(f"<a:ArrayOfOperationError>{op_error_xml(tok)}</a:ArrayOfOperationError>")
        pe = f'<PartialErrors xmlns:a="{EXC}" xmlns:i="{XSI}">{"".join(items)}</PartialErrors>'
    return envelope(f'<{op}Response xmlns="{TNS}">{oe}{pe}</{op}Response>')


def _fault(detail: str, status: int = 500, faultcode: str = "s:Server",
           faultstring: str = "Invalid client data. Check the SOAP fault details for more information. "
                              "TrackingId: trk-f.") -> Reply:
    return Reply(status, f'<s:Envelope xmlns:s="{ENV_NS}"><s:Body><s:Fault><faultcode>{faultcode}</faultcode>'
                         f'<faultstring xml:lang="en-US">{faultstring}</faultstring>'
                         f'<detail>{detail}</detail></s:Fault></s:Body></s:Envelope>')


def adapi_fault(code: int, error_code: str, message: str = "", detail: str | None = None,
                tracking: str = "trk-f", status: int = 500) -> Reply:
    d = f"<Detail>{detail}</Detail>" if detail is not None else '<Detail i:nil="true"/>'
    return _fault(f'<AdApiFaultDetail xmlns="{ADAPI}" xmlns:i="{XSI}"><TrackingId>{tracking}</TrackingId><Errors>'
                  f"<AdApiError><Code>{code}</Code>{d}<ErrorCode>{error_code}</ErrorCode>"
                  f"<Message>{message or error_code}</Message></AdApiError></Errors></AdApiFaultDetail>", status)


def api_fault(*codes: int, tracking: str = "trk-f2") -> Reply:
    errs = "".join(f'<OperationError><Code>{c}</Code><Details i:nil="true"/><Message>message {c}</Message>'
                   f"</OperationError>" for c in codes)
    return _fault(f'<ApiFault xmlns="{EXC}" xmlns:i="{XSI}"><TrackingId xmlns="{ADAPI}">{tracking}</TrackingId>'
                  f"<OperationErrors>{errs}</OperationErrors></ApiFault>")


def plain_fault(faultstring: str) -> Reply:
    return _fault("", faultcode="s:Client", faultstring=faultstring)


def request_link_fields(el: ET.Element) -> dict[str, str | None]:
    """A request's ClientLink element -> {local name: text} (by namespace URI, whatever the prefix)."""
    return {re.sub(r"^\{.*\}", "", c.tag): c.text for c in el}
