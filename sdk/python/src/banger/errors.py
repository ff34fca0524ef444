"""Exceptions raised by the banger SDK.

Every failure the daemon reports carries its API error code (``code``), its
message and the operation id that also appears in the daemon's log
(``op_id``). Each code has its own subclass, so callers can write
``except banger.NotFoundError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

if TYPE_CHECKING:
    from .client import ExecResult


class BangerError(Exception):
    """A failed banger call. ``code`` is the API error code."""

    code: str = "operation_failed"

    def __init__(self, message: str, code: Optional[str] = None, op_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.op_id = op_id

    def __str__(self) -> str:
        s = self.message
        if self.op_id:
            s += f" (op {self.op_id})"
        return s


class NotFoundError(BangerError):
    """The VM, file, session... does not exist (``not_found``)."""

    code = "not_found"


class AlreadyExistsError(BangerError):
    """The name is taken (``already_exists``)."""

    code = "already_exists"


class BadRequestError(BangerError):
    """The daemon refused the request's parameters (``bad_request``)."""

    code = "bad_request"


class ConflictError(BangerError):
    """The VM is not in a state that allows the operation (``conflict``)."""

    code = "conflict"


class NotRunningError(ConflictError):
    """The VM is not running (``not_running``)."""

    code = "not_running"


class OperationFailedError(BangerError):
    """The operation failed in the daemon or the guest (``operation_failed``)."""

    code = "operation_failed"


class UnknownMethodError(BangerError):
    """The daemon does not know the call: it is older or newer than this SDK
    (``unknown_method``, ``bad_version``)."""

    code = "unknown_method"


class DaemonUnavailableError(BangerError):
    """No daemon answers on the socket (code ``unavailable``, SDK-side)."""

    code = "unavailable"


class ProtocolError(BangerError):
    """The daemon's answer broke the protocol: malformed, or cut short
    (code ``protocol``, SDK-side)."""

    code = "protocol"


class LimitExceededError(BangerError):
    """An answer is larger than the limit the caller set (code ``too_large``,
    SDK-side)."""

    code = "too_large"


class ExecTimeoutError(BangerError, TimeoutError):
    """A command ran past its timeout; it was killed (the connection was
    closed, which makes the guest agent kill it). ``partial`` holds the
    output received until then (code ``timeout``, SDK-side)."""

    code = "timeout"

    def __init__(self, message: str, partial: "Optional[ExecResult]" = None) -> None:
        super().__init__(message)
        self.partial = partial


class CommandError(BangerError):
    """``ExecResult.check()`` on a command that failed (code ``command_failed``,
    SDK-side). ``result`` is the ExecResult."""

    code = "command_failed"

    def __init__(self, message: str, result: "ExecResult") -> None:
        super().__init__(message)
        self.result = result


_BY_CODE: Dict[str, Type[BangerError]] = {
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "bad_request": BadRequestError,
    "conflict": ConflictError,
    "not_running": NotRunningError,
    "operation_failed": OperationFailedError,
    "unknown_method": UnknownMethodError,
    "bad_version": UnknownMethodError,
}


def from_api(obj: object, fallback: str = "daemon error") -> BangerError:
    """Build the exception for an ``api.Error`` JSON object
    (``{"code", "message", "op_id"}``)."""
    if isinstance(obj, dict) and isinstance(obj.get("code"), str) and obj.get("code"):
        code = obj["code"]
        msg = obj.get("message")
        op = obj.get("op_id")
        cls = _BY_CODE.get(code, BangerError)
        return cls(msg if isinstance(msg, str) else fallback, code=code, op_id=op if isinstance(op, str) else None)
    return OperationFailedError(fallback)
