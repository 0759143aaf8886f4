"""Domain errors. The gRPC edge maps them to status codes in one place (``service/errors.py``)."""

from __future__ import annotations


class BaselinerError(Exception):
    """Base of every error Baseliner raises on purpose."""


class ValidationError(BaselinerError):
    """A vector (or batch) that cannot be accepted.

    ``reason`` is one of the wire protocol's ``RejectReason`` names without the prefix
    (``"NOT_FINITE"``, ``"NEGATIVE"``, ``"BAD_WINDOW"`` ...), ``index`` the vector's position in its batch.
    """

    def __init__(self, reason: str, message: str, index: int = -1) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.index = index


class StateError(BaselinerError):
    """Persisted state that cannot be loaded (corrupt, tampered with, inconsistent)."""


class StateVersionError(StateError):
    """Persisted state written in a format version this build does not read."""


class UnknownBaselineError(BaselinerError):
    """An admin request named a baseline that does not exist."""


class ConfigError(BaselinerError):
    """Invalid configuration, reported at start with what to fix."""
