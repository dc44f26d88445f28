"""Injected faults for the simulator: a deterministic plan of HTTP errors, resets, timeouts, bad replies, throttling,
expired tokens and slow replies, installed as the SOAP server's ``before_request`` hook.

Usage::

    plan = FaultPlan(rate=0.2, seed=3)                 # every kind, 20% of SOAP requests
    server.before_request = plan                       # a SoapServer (or Simulator.server)
    ...
    plan.injected                                      # Counter: kind -> how many were injected

    FaultPlan.parse("rate=0.2,kinds=http503+reset+throttle,seed=7")   # the `--faults` option's text

Kinds (:data:`KINDS`):

``http500``    HTTP 500 with an HTML error page (a proxy or IIS failing, not a SOAP fault). Not applied.
``http503``    HTTP 503 with an HTML page and ``Retry-After`` (a gateway in maintenance). Not applied.
``reset``      The connection is dropped without a reply (TCP reset). Not applied.
``timeout``    The reply is held back for ``timeout_seconds`` (set it past the client's timeout), *then the request
               is processed*: a write may be applied although the client gave up (the dangerous case).
``malformed``  HTTP 200 with a truncated XML envelope. Not applied.
``throttle``   117 CallRateExceeded (an AdApiFaultDetail) with ``Retry-After: retry_after``. Not applied.
``expire``     109 AuthenticationTokenExpired for the access token the request carried; that token stays expired
               (a refreshed one works), as when a real token runs out in the middle of a sync.
``internal``   The service's internal error (AdApiFault code 0). Not applied.
``slow``       The reply is delayed by ``slow_seconds``, then served normally.

Determinism: whether (and how) a request is faulted depends only on ``seed``, the SOAPAction, the SOAP Body (tokens
in the header are ignored) and how many times that same request was seen before — not on thread timing — so a retry
of a faulted request gets its own, independent draw, and a run with the same seed and the same requests gets the same
faults. ``expire_after=N`` additionally expires every access token seen so far once, at the N-th SOAP request (109
"in the middle of a sync", deterministically). The token endpoint and GET routes are never faulted.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .faults import AdApiError, AdApiFault
from .server import ConnectionAbort, HookContext

__all__ = ["KINDS", "FaultPlan", "FaultPlanError"]

KINDS: tuple[str, ...] = ("http500", "http503", "reset", "timeout", "malformed", "throttle", "expire", "internal",
                          "slow")

#: Kinds after which the request was certainly not applied by the service.
NOT_APPLIED: frozenset[str] = frozenset({"http500", "http503", "reset", "malformed", "throttle", "expire", "internal"})

_HTML_500 = (b"<!DOCTYPE html><html><head><title>500 - Internal server error.</title></head><body>"
             b"<h1>Server Error</h1><h2>500 - Internal server error.</h2></body></html>")
_HTML_503 = (b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
             b"<h2>Service Unavailable</h2><p>HTTP Error 503. The service is unavailable.</p></body></html>")
_TRUNCATED = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><TrackingId '
              b'xmlns="https://bingads.microsoft.com/Customer/v13">00000000-0000-0000-0000-000000000000</TrackingId>'
              b'</s:Header><s:Body><SearchClientLinksResponse xmlns="https://bingads.microsoft.com/Customer/v13">'
              b'<ClientLinks xmlns:a="https://bingads.microsoft.com/Customer/v13/Entities"><a:ClientLink><a:Typ')
_TOKEN_RE = re.compile(rb"AuthenticationToken[^>]*>([^<]{4,4096})<")
_BODY_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Body[\s>]")


class FaultPlanError(ValueError):
    """A ``--faults`` text that cannot be understood; the message says what is allowed."""


@dataclass
class FaultPlan:
    """A deterministic fault injector; call it with a :class:`HookContext` (it is a ``before_request`` hook).

    ``rate``: share of SOAP requests faulted (0 to 1). ``kinds``: which kinds to draw from (equally likely).
    ``operations``: only these SOAP operations are faulted (None: all). ``max_faults``: stop after this many.
    ``timeout_seconds``/``slow_seconds``: how long ``timeout``/``slow`` hold a reply. ``retry_after``: seconds
    ``throttle`` asks for. ``expire_after``: at the N-th SOAP request, every access token seen so far expires.
    ``sleep`` is injectable (tests).
    """

    rate: float = 0.2
    kinds: tuple[str, ...] = KINDS
    seed: int = 0
    operations: frozenset[str] | None = None
    max_faults: int | None = None
    timeout_seconds: float = 3.0
    slow_seconds: float = 0.3
    retry_after: int = 1
    expire_after: int | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise FaultPlanError(f"The fault rate must be between 0 and 1, not {self.rate}.")
        self.kinds = tuple(self.kinds)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise FaultPlanError(f"Unknown fault kind(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose "
                                 f"from {', '.join(KINDS)}.")
        if self.operations is not None:
            self.operations = frozenset(self.operations)
        for name, what in (("timeout_seconds", "The timeout"), ("slow_seconds", "The slow delay"),
                           ("retry_after", "Retry-After")):
            if getattr(self, name) < 0:
                raise FaultPlanError(f"{what} must be 0 or more seconds.")
        self._lock = threading.Lock()
        self._seen: Counter[bytes] = Counter()
        self._tokens_seen: set[bytes] = set()
        self._expired: set[bytes] = set()
        self.requests = 0
        self.faulted = 0
        #: kind -> faults injected so far.
        self.injected: Counter[str] = Counter()
        #: (operation, kind) of every fault, in the order injected.
        self.log: list[tuple[str, str]] = []

    # ------------------------------------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str) -> "FaultPlan":
        """``rate=0.2,kinds=http500+reset,seed=3,ops=SearchClientLinks+GetUser,max=10,timeout=3,slow=0.3,
        retry_after=1,expire_after=12`` (every key optional; a bare number is the rate)."""
        kwargs: dict[str, object] = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            if not sep:
                key, value = "rate", part
            key, value = key.strip().lower(), value.strip()
            try:
                if key == "rate":
                    rate = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
                    kwargs["rate"] = rate
                elif key == "kinds":
                    kwargs["kinds"] = tuple(k.strip() for k in value.split("+") if k.strip())
                elif key == "seed":
                    kwargs["seed"] = int(value)
                elif key in ("ops", "operations"):
                    kwargs["operations"] = frozenset(o.strip() for o in value.split("+") if o.strip())
                elif key in ("max", "max_faults"):
                    kwargs["max_faults"] = int(value)
                elif key in ("timeout", "timeout_seconds"):
                    kwargs["timeout_seconds"] = float(value)
                elif key in ("slow", "slow_seconds"):
                    kwargs["slow_seconds"] = float(value)
                elif key == "retry_after":
                    kwargs["retry_after"] = int(value)
                elif key == "expire_after":
                    kwargs["expire_after"] = int(value)
                else:
                    raise FaultPlanError(f"Unknown fault setting {key!r}; use rate, kinds, seed, ops, max, timeout, "
                                         "slow, retry_after or expire_after (for example 'rate=0.2,seed=3').")
            except ValueError as exc:
                if isinstance(exc, FaultPlanError):
                    raise
                raise FaultPlanError(f"The fault setting {key}={value!r} is not a number.") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------ the hook

    def __call__(self, ctx: HookContext) -> tuple | None:
        operation = _operation(ctx)
        token = _token(ctx.body)
        with self._lock:
            self.requests += 1
            n = self.requests
            if self.expire_after is not None and n == self.expire_after:
                self._expired |= self._tokens_seen
            if token is not None:
                self._tokens_seen.add(token)
            if token is not None and token in self._expired:
                kind: str | None = "expire"  # a token that expired stays expired, whatever the rate
            else:
                kind = self._draw(ctx, operation)
            if kind is None:
                return None
            if kind == "expire" and token is not None:
                self._expired.add(token)
            self.faulted += 1
            self.injected[kind] += 1
            self.log.append((operation, kind))
        return self._inject(kind)

    def _draw(self, ctx: HookContext, operation: str) -> str | None:
        """The deterministic decision for this request (called under the lock)."""
        if self.rate <= 0 or (self.max_faults is not None and self.faulted >= self.max_faults):
            return None
        if self.operations is not None and operation not in self.operations:
            return None
        digest = hashlib.sha256(operation.encode() + b"\0" + _body_part(ctx.body)).digest()
        occurrence = self._seen[digest]
        self._seen[digest] += 1
        h = hashlib.sha256(f"{self.seed}:{occurrence}:".encode() + digest).digest()
        if int.from_bytes(h[:8], "big") / 2**64 >= self.rate:
            return None
        return self.kinds[int.from_bytes(h[8:16], "big") % len(self.kinds)]

    def _inject(self, kind: str) -> tuple | None:
        if kind == "http500":
            return 500, "text/html; charset=utf-8", _HTML_500
        if kind == "http503":
            return 503, "text/html; charset=utf-8", _HTML_503, {"Retry-After": str(self.retry_after)}
        if kind == "reset":
            raise ConnectionAbort()
        if kind == "timeout":
            self.sleep(self.timeout_seconds)
            return None  # processed after all: the client has given up by now
        if kind == "malformed":
            return 200, "text/xml; charset=utf-8", _TRUNCATED
        if kind == "throttle":
            from . import soap

            fault = AdApiFault([AdApiError(117, "CallRateExceeded",
                                           "You have exceeded the number of calls that you are allowed to make in a "
                                           f"given time period. Please resubmit your request after waiting "
                                           f"{self.retry_after} seconds.")])
            return 500, "text/xml; charset=utf-8", soap.serialize_fault(fault, _tracking()), \
                {"Retry-After": str(self.retry_after)}
        if kind == "expire":
            raise AdApiFault([AdApiError(109, "AuthenticationTokenExpired",
                                         "The OAuth access token has expired. Refresh it and try again.")])
        if kind == "internal":
            from . import soap

            raise soap.internal_error()
        if kind == "slow":
            self.sleep(self.slow_seconds)
            return None
        raise AssertionError(kind)  # pragma: no cover - kinds are checked in __post_init__

    # ------------------------------------------------------------------------------------------------ reporting

    def summary(self) -> str:
        """'7 of 41 requests faulted: http500 2, reset 1, ...' for logs and the closing note."""
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items()))
        return f"{self.faulted} of {self.requests} requests faulted" + (f": {parts}" if parts else "")

    def faulted_operations(self, kinds: Iterable[str] | None = None) -> list[str]:
        wanted = set(kinds) if kinds is not None else None
        return [op for op, k in self.log if wanted is None or k in wanted]


def _operation(ctx: HookContext) -> str:
    action = (ctx.soap_action or "").rstrip("/")
    return action.rsplit("/", 1)[-1] if action else "(none)"


def _token(body: bytes) -> bytes | None:
    m = _TOKEN_RE.search(body[:8192])
    return m.group(1) if m else None


def _body_part(body: bytes) -> bytes:
    """The request from its SOAP Body on (the header carries per-session tokens, which must not change the draw)."""
    m = _BODY_RE.search(body)
    return body[m.start():] if m else body


def _tracking() -> str:
    import uuid

    return str(uuid.uuid4())
