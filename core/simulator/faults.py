"""Exceptions a simulated operation raises; the SOAP layer turns them into HTTP 500 SOAP faults."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdApiError:
    code: int
    error_code: str
    message: str
    detail: str | None = None


@dataclass
class OperationError:
    code: int
    message: str
    details: str | None = None


class SimulatorFault(Exception):
    """Base class: anything the SOAP layer serialises as an s:Fault."""

    faultstring = "Invalid client data. Check the SOAP fault details for more information."


class AdApiFault(SimulatorFault):
    """AdApiFaultDetail: credentials, authorisation and throttling (105, 106, 109, 116, 117)."""

    def __init__(self, errors: list[AdApiError]):
        super().__init__("; ".join(f"{e.code} {e.error_code}" for e in errors))
        self.errors = errors


class ApiFault(SimulatorFault):
    """ApiFault with OperationErrors: the request as a whole is invalid; nothing was applied."""

    def __init__(self, operation_errors: list[OperationError]):
        super().__init__("; ".join(f"{e.code} {e.message}" for e in operation_errors))
        self.operation_errors = operation_errors


class ClientFault(SimulatorFault):
    """A malformed request (not XML, not SOAP, unknown or unsimulated operation): a plain s:Client fault."""

    def __init__(self, faultstring: str):
        super().__init__(faultstring)
        self.faultstring = faultstring
