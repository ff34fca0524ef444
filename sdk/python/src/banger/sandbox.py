"""Sandbox: a VM that lives for one ``with`` block."""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import Any, BinaryIO, Dict, List, Optional, Type

from . import errors
from .client import (DEFAULT_IMAGE, DEFAULT_MAX_OUTPUT, DEFAULT_MAX_PATCH, VM, Client, Command, ExecResult, Files,
                     Session, SessionLogs, Stdin, Workspace)


class Sandbox:
    """A disposable VM::

        with banger.Sandbox(image="debian") as sb:
            r = sb.exec(["make", "test"], cwd="/root/repo")
            sb.files.write("/root/x", b"...")

    The VM is created and booted on entering the block and deleted when it
    ends, also when it ends with an exception. Without ``name`` one is
    generated (``sb-`` and 8 hex digits) before the create call, so a
    create that fails half-way can still be cleaned up. ``create_args``
    are passed to ``Client.create`` (vcpu, memory_mib, disk_size, network, files,
    nat, wait).
    """

    def __init__(self, image: str = DEFAULT_IMAGE, *, name: Optional[str] = None, client: Optional[Client] = None,
                 socket: Optional[str] = None, **create_args: Any) -> None:
        self.client = client or Client(socket=socket)
        self.image = image
        self.name = name or "sb-" + secrets.token_hex(4)
        self._create_args: Dict[str, Any] = create_args
        self.vm: Optional[VM] = None
        self._files: Optional[Files] = None

    def start(self) -> "Sandbox":
        """Create and boot the VM (the ``with`` statement calls this)."""
        try:
            self.vm = self.client.create(self.image, self.name, **self._create_args)
        except errors.AlreadyExistsError:
            # The name was someone else's: never delete their VM.
            raise
        except BaseException:
            self._delete_quietly()
            raise
        return self

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.delete()

    def delete(self) -> None:
        """Delete the VM (nothing happens when it is already gone)."""
        if self.vm is None:
            return
        try:
            self.client.delete(self.name)
        except errors.NotFoundError:
            pass
        self.vm = None

    def _delete_quietly(self) -> None:
        try:
            self.client.delete(self.name)
        except errors.BangerError:
            pass

    @property
    def files(self) -> Files:
        """The sandbox's files (read, write, list, stat, remove, mkdir)."""
        if self._files is None:
            self._files = self.client.files(self.name)
        return self._files

    def exec(self, command: Command, *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
             stdin: Stdin = None, timeout: Optional[float] = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecResult:
        """Run a command (see ``Client.exec``)."""
        return self.client.exec(self.name, command, cwd=cwd, env=env, stdin=stdin, timeout=timeout,
                                max_output=max_output)

    def prepare_workspace(self, host_path: str, *, include_untracked: bool = False, full_copy: bool = False,
                          timeout: Optional[float] = None) -> Workspace:
        """Ship a host git repository to /root/repo (see ``Client.prepare_workspace``)."""
        return self.client.prepare_workspace(self.name, host_path, include_untracked=include_untracked,
                                             full_copy=full_copy, timeout=timeout)

    def export_workspace(self, dst: Optional[BinaryIO] = None, *, base_commit: Optional[str] = None,
                         max_bytes: int = DEFAULT_MAX_PATCH) -> bytes:
        """The guest's changes as a git patch (see ``Client.export_workspace``)."""
        return self.client.export_workspace(self.name, dst, base_commit=base_commit, max_bytes=max_bytes)

    def start_session(self, command: Command, *, session: Optional[str] = None, cwd: Optional[str] = None,
                      env: Optional[Dict[str, str]] = None) -> Session:
        """Start a long-lived guest command (see ``Client.start_session``)."""
        return self.client.start_session(self.name, command, session=session, cwd=cwd, env=env)

    def sessions(self) -> List[Session]:
        return self.client.sessions(self.name)

    def get_session(self, session: str) -> Session:
        return self.client.get_session(self.name, session)

    def stop_session(self, session: str, signal: int = 0) -> Session:
        return self.client.stop_session(self.name, session, signal)

    def session_logs(self, session: str, *, follow: bool = False, tail: int = 0,
                     max_output: int = DEFAULT_MAX_OUTPUT, timeout: Optional[float] = None) -> SessionLogs:
        return self.client.session_logs(self.name, session, follow=follow, tail=tail, max_output=max_output,
                                        timeout=timeout)

    def __repr__(self) -> str:
        return f"Sandbox(name={self.name!r}, image={self.image!r})"
