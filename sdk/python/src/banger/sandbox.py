"""Sandbox: a VM that lives for one ``with`` block."""

from __future__ import annotations

import secrets
from types import TracebackType
from typing import Any, Dict, Optional, Type

from . import errors
from .client import DEFAULT_IMAGE, DEFAULT_MAX_OUTPUT, Client, Command, ExecResult, Files, Stdin, VM


class Sandbox:
    """A disposable VM::

        with banger.Sandbox(image="debian") as sb:
            r = sb.exec(["make", "test"], cwd="/root/repo")
            sb.files.write("/root/x", b"...")

    The VM is created and booted on entering the block and deleted when it
    ends, also when it ends with an exception. Without ``name`` one is
    generated (``sb-`` and 8 hex digits) before the create call, so a
    create that fails half-way can still be cleaned up. ``create_args``
    are passed to ``Client.create`` (vcpu, memory_mib, disk_size, network,
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

    def __repr__(self) -> str:
        return f"Sandbox(name={self.name!r}, image={self.image!r})"
