"""banger: disposable Linux microVMs from Python.

A client of bangerd's HTTP API on its Unix socket, standard library only::

    import banger

    with banger.Sandbox(image="debian") as sb:
        r = sb.exec(["uname", "-a"])
        print(r.exit_code, r.stdout_text)
        sb.files.write("/root/hello.txt", b"hi\\n")
        print(sb.files.read("/root/hello.txt"))

``banger.Client`` lists, gets, creates and deletes VMs, runs commands, moves
files, ships workspaces (git repositories) in and patches out, and runs
sessions (long-lived commands) in any running VM. Errors are ``banger.BangerError`` subclasses carrying the
API error code.
"""

from .client import (
    DEFAULT_IMAGE,
    DEFAULT_MAX_OUTPUT,
    DEFAULT_MAX_PATCH,
    DEFAULT_MAX_READ,
    GUEST_REPO_DIR,
    VM,
    Client,
    ExecResult,
    FileInfo,
    FileList,
    Files,
    Session,
    SessionLogs,
    Workspace,
)
from .errors import (
    AlreadyExistsError,
    BadRequestError,
    BangerError,
    CommandError,
    ConflictError,
    DaemonUnavailableError,
    ExecTimeoutError,
    LimitExceededError,
    NotFoundError,
    NotRunningError,
    OperationFailedError,
    ProtocolError,
    UnknownMethodError,
)
from .sandbox import Sandbox

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "BadRequestError", "BangerError", "Client", "CommandError", "ConflictError",
    "DEFAULT_IMAGE", "DEFAULT_MAX_OUTPUT", "DEFAULT_MAX_PATCH", "DEFAULT_MAX_READ", "GUEST_REPO_DIR", "DaemonUnavailableError", "ExecResult",
    "ExecTimeoutError", "FileInfo", "FileList", "Files", "LimitExceededError", "NotFoundError", "NotRunningError",
    "OperationFailedError", "ProtocolError", "Sandbox", "Session", "SessionLogs", "UnknownMethodError", "VM",
    "Workspace",
]
