"""Domain errors -> gRPC status codes, in one place.

Servicers call :func:`status_for` (or :func:`abort`) and never pick a status code themselves.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from baseliner.models.errors import (
    BaselinerError,
    ConfigError,
    StateError,
    StateVersionError,
    UnknownBaselineError,
    ValidationError,
)


class UnknownEventError(BaselinerError):
    """Admin.Feedback named an event the service does not hold (unknown, or too old to be kept)."""


class ProtocolError(BaselinerError):
    """The peer broke the stream protocol (for example: a batch before the Hello)."""


class SchemaVersionError(BaselinerError):
    """The peer speaks a wire schema version this service does not read (``protos/v1/schema.py``)."""


class AuthenticationError(BaselinerError):
    """No credential, or one the service does not know (``service/auth.py``)."""


class PermissionDeniedError(BaselinerError):
    """A known credential used for something it does not grant (another node, the Admin API)."""


class DurabilityError(BaselinerError):
    """The write-ahead log could not record a batch: nothing was applied, the sensor should resend later."""


_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (DurabilityError, grpc.StatusCode.UNAVAILABLE),
    (UnknownBaselineError, grpc.StatusCode.NOT_FOUND),
    (UnknownEventError, grpc.StatusCode.NOT_FOUND),
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProtocolError, grpc.StatusCode.FAILED_PRECONDITION),
    (SchemaVersionError, grpc.StatusCode.UNIMPLEMENTED),  # the sensor stops retrying (sensor/transport.py)
    (StateVersionError, grpc.StatusCode.FAILED_PRECONDITION),
    (StateError, grpc.StatusCode.DATA_LOSS),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (BaselinerError, grpc.StatusCode.INTERNAL),
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code a domain error is reported with (INTERNAL for anything unexpected).

    >>> status_for(UnknownBaselineError("x")).name
    'NOT_FOUND'
    >>> status_for(KeyError("x")).name
    'INTERNAL'
    """
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def details_for(exc: BaseException) -> str:
    if isinstance(exc, BaselinerError):
        return str(exc) or type(exc).__name__
    return "internal error (see the service log)"


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    await context.abort(status_for(exc), details_for(exc))
    raise AssertionError("unreachable")  # context.abort raises
