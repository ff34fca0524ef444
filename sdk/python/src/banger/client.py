"""The banger client: VMs, commands and files through bangerd's API."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Union

from . import _wire, _workspace, errors

DEFAULT_IMAGE = "debian"

#: Each of a command's stdout and stderr is kept up to this many bytes by
#: default; the rest is read and dropped, and ``*_truncated`` says so.
DEFAULT_MAX_OUTPUT = 16 << 20

#: ``Files.read`` refuses files larger than this by default (raise the limit
#: per call, or stream with ``Files.download``).
DEFAULT_MAX_READ = 64 << 20

#: ``export_workspace`` refuses a patch larger than this by default (or
#: stream it into a file object).
DEFAULT_MAX_PATCH = 256 << 20

#: Where a workspace lands in the guest (and where commands then start).
GUEST_REPO_DIR = "/root/repo"

#: A long call (create, which boots the VM) may stay silent this long.
STREAM_TIMEOUT = 900.0

Stdin = Union[None, bytes, str, BinaryIO]
Command = Union[str, Sequence[str]]


@dataclass
class VM:
    """A VM as the daemon describes it (``raw`` holds every field)."""

    id: str
    name: str
    image: str
    state: str
    ip: str = ""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "VM":
        if not isinstance(obj, dict):
            raise errors.ProtocolError("bad VM from daemon")
        return cls(id=str(obj.get("id", "")), name=str(obj.get("name", "")), image=str(obj.get("image", "")),
                   state=str(obj.get("state", "")), ip=str(obj.get("ip", "") or ""), raw=obj)


@dataclass
class ExecResult:
    """What a command did. ``stdout``/``stderr`` hold at most ``max_output``
    bytes each (the first ones); ``*_truncated`` says output was dropped."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: str = ""
    error: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def check(self) -> "ExecResult":
        """Return self, or raise CommandError when the command failed."""
        if self.exit_code != 0:
            why = f"signal {self.signal}" if self.signal else f"exit code {self.exit_code}"
            if self.error:
                why += f": {self.error}"
            raise errors.CommandError(f"command failed ({why}): {self.stderr_text[-500:]}", self)
        return self


@dataclass
class FileInfo:
    """One guest file (lstat: a symlink is described, not followed)."""

    name: str
    path: str
    type: str  # file, dir, symlink or other
    size: int
    mode: int  # permission (and set-id/sticky) bits
    mtime: str  # RFC 3339
    target: str = ""  # a symlink's target

    @classmethod
    def from_json(cls, obj: Any) -> "FileInfo":
        if not isinstance(obj, dict):
            raise errors.ProtocolError("bad file info from daemon")
        try:
            mode = int(str(obj.get("mode", "0")), 8)
        except ValueError:
            raise errors.ProtocolError("bad file mode from daemon") from None
        return cls(name=str(obj.get("name", "")), path=str(obj.get("path", "")), type=str(obj.get("type", "")),
                   size=int(obj.get("size", 0) or 0), mode=mode, mtime=str(obj.get("mtime", "")),
                   target=str(obj.get("target", "") or ""))


@dataclass
class FileList:
    """A directory listing; ``truncated``: it has more entries than listed."""

    path: str
    entries: List[FileInfo]
    truncated: bool = False


@dataclass
class Workspace:
    """A workspace shipped to /root/repo (what the daemon records)."""

    path: str  # the host repository root
    mode: str  # copy or full_copy
    head: str  # the commit, "" for a repository without commits
    files: int
    bytes: int
    include_untracked: bool = False


@dataclass
class Session:
    """A guest session: a long-lived command that survives detaches.
    ``exit_code``/``signal`` are set once it has ended (state "exited");
    "lost": the agent restarted and no longer has the process."""

    name: str
    state: str  # running, exited or lost
    argv: List[str]
    cwd: str = ""
    tty: bool = False
    pid: int = 0
    exit_code: Optional[int] = None
    signal: str = ""
    started_at: str = ""
    ended_at: str = ""
    output_bytes: int = 0
    attached: int = 0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Any) -> "Session":
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise errors.ProtocolError("bad session from daemon")
        ex = obj.get("exit")
        code: Optional[int] = None
        sig = ""
        if isinstance(ex, dict):
            code = int(ex.get("code", 0) or 0)
            sig = str(ex.get("signal", "") or "")
        argv = obj.get("argv") or []
        return cls(name=obj["name"], state=str(obj.get("state", "")),
                   argv=[str(a) for a in argv] if isinstance(argv, list) else [],
                   cwd=str(obj.get("cwd", "") or ""), tty=bool(obj.get("tty")), pid=int(obj.get("pid", 0) or 0),
                   exit_code=code, signal=sig, started_at=str(obj.get("started_at", "") or ""),
                   ended_at=str(obj.get("ended_at", "") or ""), output_bytes=int(obj.get("output_bytes", 0) or 0),
                   attached=int(obj.get("attached", 0) or 0), raw=obj)


@dataclass
class SessionLogs:
    """A session's retained (and, with follow, live) output. ``exit_code``
    is set when the session had ended (always, after a follow)."""

    output: bytes
    truncated: bool = False
    exit_code: Optional[int] = None
    signal: str = ""

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class _Counter:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = False

    def add(self, p: bytes) -> None:
        room = self.cap - len(self.buf)
        if len(p) > room:
            self.buf += p[:max(room, 0)]
            self.dropped = True
        else:
            self.buf += p


class Client:
    """A connection to bangerd (each call opens its own socket connection).

    ``socket`` defaults to the socket the banger CLI uses (see
    ``banger._wire.default_socket``); ``timeout`` bounds each simple call.
    """

    def __init__(self, socket: Optional[str] = None, timeout: float = 120.0) -> None:
        self.socket = socket or _wire.default_socket()
        self._t = _wire.Transport(self.socket, timeout)

    # --- VMs ---

    def ping(self) -> Dict[str, Any]:
        """The daemon's identity: version, pid, socket."""
        obj = self._t.call("GET", "/ping")
        if not isinstance(obj, dict):
            raise errors.ProtocolError("bad ping answer from daemon")
        return obj

    def list(self) -> List[VM]:
        """Every VM of this daemon."""
        return [VM.from_json(v) for v in (self._t.call("GET", "/vms") or [])]

    def get(self, name: str) -> VM:
        """One VM by name (or id); NotFoundError when there is none."""
        return VM.from_json(self._t.call("GET", _vm(name)))

    def create(self, image: str = DEFAULT_IMAGE, name: Optional[str] = None, *, vcpu: Optional[int] = None,
               memory_mib: Optional[int] = None, disk_size: Optional[str] = None, network: Optional[str] = None,
               nat: bool = False, wait: Optional[str] = None, no_start: bool = False,
               files: Optional[Dict[str, bytes]] = None,
               on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
               timeout: float = STREAM_TIMEOUT) -> VM:
        """Create a VM and (unless no_start) boot it; returns once its guest
        agent answers (or ``wait``: "ssh", "system"). ``on_progress`` gets
        each boot stage as a dict. ``timeout`` bounds a silence, not the
        whole boot. ``files`` ({guest path under /root: content}, at most
        16 files of 1 MiB) are written into the guest, 0600, once it has
        booted (what ``banger vm create --agent-auth`` sends); a VM whose
        files cannot be written is deleted."""
        p: Dict[str, Any] = {"image": image}
        for k, v in (("name", name), ("vcpu", vcpu), ("memory_mib", memory_mib), ("disk_size", disk_size),
                     ("network", network), ("wait", wait)):
            if v:
                p[k] = v
        if nat:
            p["nat"] = True
        if no_start:
            p["no_start"] = True
        if files:
            import base64
            p["files"] = [{"path": k, "data": base64.b64encode(v).decode()} for k, v in files.items()]
        return VM.from_json(self._t.stream("POST", "/vms", p, on_progress, timeout=timeout))

    def delete(self, name: str) -> None:
        """Delete a VM (a running one is killed first) and its disks."""
        self._t.call("DELETE", _vm(name))

    def stop(self, name: str) -> VM:
        """Stop a VM cleanly."""
        return VM.from_json(self._t.call("POST", _vm(name, "/stop")))

    # --- commands ---

    def exec(self, name: str, command: Command, *, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
             stdin: Stdin = None, timeout: Optional[float] = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecResult:
        """Run a command in a running VM and wait for it.

        ``command`` is an argv list, or a string run by ``/bin/sh -c``.
        ``stdin`` (bytes, str or a binary file object) is sent, then closed;
        without it the command's stdin is closed at once. ``env`` adds
        variables. ``timeout`` (seconds, None: no limit) kills the command
        when it runs longer and raises ExecTimeoutError with the output so
        far. Each of stdout and stderr is kept up to ``max_output`` bytes.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise errors.BadRequestError("empty command")
        params: Dict[str, Any] = {"vm": name, "argv": argv}
        if cwd:
            params["cwd"] = cwd
        if env:
            params["env"] = _wire.env_list(env)
        deadline = None if timeout is None else time.monotonic() + timeout
        fc = self._t.upgrade(_vm(name, "/exec"), params, timeout=_remaining(deadline, 60.0))
        out, err = _Counter(max_output), _Counter(max_output)
        writer = threading.Thread(target=_send_stdin, args=(fc, stdin), daemon=True)
        writer.start()
        try:
            while True:
                fc.sock.settimeout(_remaining(deadline, None))
                try:
                    fr = fc.read()
                except (socket.timeout, TimeoutError):
                    partial = ExecResult(-1, bytes(out.buf), bytes(err.buf), stdout_truncated=out.dropped,
                                         stderr_truncated=err.dropped, error="timed out")
                    raise errors.ExecTimeoutError(f"command ran over its {timeout} s timeout and was killed",
                                                  partial) from None
                except ConnectionError as e:
                    raise errors.ProtocolError(f"exec stream broke: {e}") from None
                if fr is None:
                    raise errors.ProtocolError("connection to the daemon ended before the command finished")
                t, p = fr
                if t == _wire.FRAME_STDOUT:
                    out.add(p)
                elif t == _wire.FRAME_STDERR:
                    err.add(p)
                elif t == _wire.FRAME_ERROR:
                    raise errors.from_api(_wire.json_payload(p), "exec failed")
                elif t == _wire.FRAME_EXIT:
                    st = _wire.json_payload(p)
                    if not isinstance(st, dict):
                        raise errors.ProtocolError("bad exit status")
                    return ExecResult(exit_code=int(st.get("code", 0) or 0), stdout=bytes(out.buf),
                                      stderr=bytes(err.buf), signal=str(st.get("signal", "") or ""),
                                      error=str(st.get("error", "") or ""), stdout_truncated=out.dropped,
                                      stderr_truncated=err.dropped)
        finally:
            # Closing before the exit frame makes the agent kill the command.
            fc.close()

    # --- workspaces ---

    def prepare_workspace(self, name: str, host_path: str, *, include_untracked: bool = False,
                          full_copy: bool = False, timeout: Optional[float] = None) -> Workspace:
        """Ship the git repository containing host_path to /root/repo in a
        running VM, replacing what was there: its tracked files
        (``include_untracked``: also untracked, never ignored ones;
        ``full_copy``: also its submodules' files) and a minimal .git at the
        same HEAD. Commands then start in /root/repo. Runs ``git`` on this
        host; never runs hooks."""
        plan = _workspace.inspect(host_path, include_untracked=include_untracked, full_copy=full_copy)
        params = plan.params()
        deadline = None if timeout is None else time.monotonic() + timeout
        fc = self._t.upgrade(_vm(name, "/workspace"), params, timeout=_remaining(deadline, 60.0))
        send_err: List[BaseException] = []

        def send() -> None:
            try:
                _workspace.write_tar(plan, _FrameWriter(fc))
                fc.write(_wire.FRAME_STDIN, b"")
            except BaseException as e:  # reported by the reader below
                send_err.append(e)
                fc.close_write()

        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        try:
            while True:
                fc.sock.settimeout(_remaining(deadline, None))
                try:
                    fr = fc.read()
                except (socket.timeout, TimeoutError):
                    raise errors.ExecTimeoutError(f"workspace prepare ran over its {timeout} s timeout") from None
                except (ConnectionError, OSError) as e:
                    fr = None
                    if not send_err:
                        raise errors.ProtocolError(f"workspace stream broke: {e}") from None
                if fr is None:
                    writer.join(5)
                    if send_err:
                        e = send_err[0]
                        if isinstance(e, errors.BangerError):
                            raise e
                        raise errors.ProtocolError(f"send workspace: {e}") from None
                    raise errors.ProtocolError("workspace upload ended early")
                t, p = fr
                if t == _wire.FRAME_ERROR:
                    raise errors.from_api(_wire.json_payload(p), "workspace prepare failed")
                if t == _wire.FRAME_EXIT:
                    st = _wire.json_payload(p)
                    if not isinstance(st, dict):
                        raise errors.ProtocolError("bad exit status")
                    if int(st.get("code", 0) or 0) != 0:
                        raise errors.OperationFailedError(
                            f"extract workspace in the guest: {st.get('error') or 'exit ' + str(st.get('code'))}")
                    return Workspace(path=plan.root, mode=plan.mode, head=plan.head, files=len(plan.files),
                                     bytes=plan.total_bytes, include_untracked=include_untracked)
        finally:
            fc.close()

    def export_workspace(self, name: str, dst: Optional[BinaryIO] = None, *, base_commit: Optional[str] = None,
                         max_bytes: int = DEFAULT_MAX_PATCH) -> bytes:
        """The guest's changes to /root/repo (since the prepared HEAD, or
        since ``base_commit`` with the guest's commits) as a binary git
        patch for ``git apply``; empty when nothing changed. With ``dst``
        the patch is streamed there and b"" returned. The patch is written
        by the guest: treat it as untrusted input."""
        body: Dict[str, Any] = {}
        if base_commit:
            body["base_commit"] = base_commit
        conn, resp = self._t.request("POST", _vm(name, "/workspace/export"), json_body=body, timeout=STREAM_TIMEOUT)
        total = 0
        out = bytearray()
        try:
            while True:
                try:
                    chunk = resp.read(256 << 10)
                except http.client.IncompleteRead:
                    raise errors.ProtocolError("export: the daemon cut the patch short (see its log)") from None
                if not chunk:
                    _wire.check_trailer(resp)
                    return bytes(out)
                total += len(chunk)
                if total > max_bytes:
                    raise errors.LimitExceededError(f"the workspace patch is over max_bytes={max_bytes}")
                if dst is not None:
                    dst.write(chunk)
                else:
                    out += chunk
        finally:
            conn.close()

    # --- sessions ---

    def start_session(self, name: str, command: Command, *, session: Optional[str] = None, cwd: Optional[str] = None,
                      env: Optional[Dict[str, str]] = None) -> Session:
        """Start a session in a running VM: a long-lived command whose
        output is kept and which survives detaches (and daemon restarts).
        ``session`` names it (default: generated). A string command runs
        under ``/bin/sh -c``."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
        if not argv:
            raise errors.BadRequestError("empty command")
        req: Dict[str, Any] = {"argv": argv}
        if session:
            req["name"] = session
        if cwd:
            req["cwd"] = cwd
        if env:
            req["env"] = _wire.env_list(env)
        return Session.from_json(self._t.call("POST", _vm(name, "/sessions"), json_body=req))

    def sessions(self, name: str) -> List[Session]:
        """A VM's sessions."""
        obj = self._t.call("GET", _vm(name, "/sessions")) or []
        if not isinstance(obj, list):
            raise errors.ProtocolError("bad session list from daemon")
        return [Session.from_json(s) for s in obj]

    def get_session(self, name: str, session: str) -> Session:
        """One session; NotFoundError when there is none."""
        return Session.from_json(self._t.call("GET", _session(name, session)))

    def stop_session(self, name: str, session: str, signal: int = 0) -> Session:
        """Signal a session (0: SIGTERM, then SIGKILL after a grace period)
        and return its final state."""
        body = {"signal": signal} if signal else {}
        return Session.from_json(self._t.call("POST", _session(name, session, "/stop"), json_body=body))

    def session_logs(self, name: str, session: str, *, follow: bool = False, tail: int = 0,
                     max_output: int = DEFAULT_MAX_OUTPUT, timeout: Optional[float] = None) -> SessionLogs:
        """A session's retained output (the last ``tail`` bytes; all when
        0). With ``follow`` the call goes on with live output until the
        session ends. At most ``max_output`` bytes are kept (the first);
        ``truncated`` says output was dropped. ``timeout`` bounds a follow
        (ExecTimeoutError, with what came so far)."""
        req: Dict[str, Any] = {}
        if follow:
            req["follow"] = True
        if tail:
            req["tail"] = tail
        deadline = None if timeout is None else time.monotonic() + timeout
        fc = self._t.upgrade(_session(name, session, "/logs"), req, timeout=_remaining(deadline, 60.0))
        out = _Counter(max_output)
        try:
            while True:
                fc.sock.settimeout(_remaining(deadline, None))
                try:
                    fr = fc.read()
                except (socket.timeout, TimeoutError):
                    partial = ExecResult(-1, bytes(out.buf), b"", stdout_truncated=out.dropped, error="timed out")
                    raise errors.ExecTimeoutError(f"session logs ran over their {timeout} s timeout", partial) from None
                except ConnectionError as e:
                    raise errors.ProtocolError(f"session log stream broke: {e}") from None
                if fr is None:
                    if follow:
                        raise errors.ProtocolError("connection to the daemon ended before the session did")
                    return SessionLogs(bytes(out.buf), out.dropped)
                t, p = fr
                if t in (_wire.FRAME_STDOUT, _wire.FRAME_STDERR):
                    out.add(p)
                elif t == _wire.FRAME_ERROR:
                    raise errors.from_api(_wire.json_payload(p), "session logs failed")
                elif t == _wire.FRAME_EXIT:
                    st = _wire.json_payload(p)
                    if not isinstance(st, dict):
                        raise errors.ProtocolError("bad exit status")
                    return SessionLogs(bytes(out.buf), out.dropped, exit_code=int(st.get("code", 0) or 0),
                                       signal=str(st.get("signal", "") or ""))
        finally:
            fc.close()

    # --- files ---

    def files(self, name: str) -> "Files":
        """The files of a running VM."""
        return Files(self, name)


def _remaining(deadline: Optional[float], default: Optional[float]) -> Optional[float]:
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.001)


def _send_stdin(fc: "_wire.FrameConn", stdin: Stdin) -> None:
    try:
        if isinstance(stdin, str):
            stdin = stdin.encode()
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            if stdin:
                fc.write(_wire.FRAME_STDIN, bytes(stdin))
        elif stdin is not None:
            while True:
                chunk = stdin.read(256 << 10)
                if not chunk:
                    break
                fc.write(_wire.FRAME_STDIN, chunk)
        fc.write(_wire.FRAME_STDIN, b"")
    except OSError:
        # The command ended (or the stream broke) first: the reader reports it.
        pass


class _FrameWriter:
    """A write-only file object that sends what is written as stdin
    frames (tarfile's stream mode writes through it)."""

    def __init__(self, fc: "_wire.FrameConn") -> None:
        self._fc = fc

    def write(self, b: bytes) -> int:
        if b:
            self._fc.write(_wire.FRAME_STDIN, bytes(b))
        return len(b)

    def flush(self) -> None:
        pass


def _session(name: str, session: str, suffix: str = "") -> str:
    from urllib.parse import quote

    if not session:
        raise errors.BadRequestError("a session name is required")
    return _vm(name, "/sessions/" + quote(session, safe="") + suffix)


def _vm(name: str, suffix: str = "") -> str:
    from urllib.parse import quote

    if not name:
        raise errors.BadRequestError("a VM name is required")
    return "/vms/" + quote(name, safe="") + suffix


def _mode(m: int) -> str:
    if not 0 <= m <= 0o7777:
        raise errors.BadRequestError(f"mode {m:o} is out of range")
    return f"{m:04o}"


class Files:
    """A running VM's files, by absolute guest path (resolved in the guest
    by its agent). Writes are atomic in the guest."""

    def __init__(self, client: Client, name: str) -> None:
        self._c = client
        self.name = name

    def _path(self, suffix: str = "") -> str:
        return _vm(self.name, "/files" + suffix)

    def read(self, path: str, *, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
        """A file's content; LimitExceededError when it is over max_bytes."""
        conn, resp = self._c._t.request("GET", self._path(), query={"path": path})
        try:
            n = resp.getheader("Content-Length")
            if n is not None and n.isdigit() and int(n) > max_bytes:
                raise errors.LimitExceededError(f"{path} is {n} bytes, over max_bytes={max_bytes}")
            data = _wire.read_capped(resp, max_bytes, path)
            _wire.check_trailer(resp)
            return data
        except http.client.IncompleteRead:
            raise errors.ProtocolError(f"read {path}: the daemon cut the answer short (see its log)") from None
        finally:
            conn.close()

    def read_text(self, path: str, *, encoding: str = "utf-8", max_bytes: int = DEFAULT_MAX_READ) -> str:
        return self.read(path, max_bytes=max_bytes).decode(encoding)

    def download(self, path: str, dst: BinaryIO, *, max_bytes: Optional[int] = None) -> int:
        """Stream a file into dst (never whole in memory); returns its size."""
        conn, resp = self._c._t.request("GET", self._path(), query={"path": path})
        total = 0
        try:
            while True:
                try:
                    chunk = resp.read(256 << 10)
                except http.client.IncompleteRead:
                    raise errors.ProtocolError(f"read {path}: the daemon cut the answer short (see its log)") from None
                if not chunk:
                    _wire.check_trailer(resp)
                    return total
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise errors.LimitExceededError(f"{path} is over max_bytes={max_bytes}")
                dst.write(chunk)
        finally:
            conn.close()

    def write(self, path: str, data: Union[bytes, str, BinaryIO], *, mode: int = 0o644, parents: bool = False) -> None:
        """Replace (or create) a file atomically; data is bytes, str (UTF-8)
        or a binary file object (streamed)."""
        if isinstance(data, str):
            data = data.encode()
        q = {"path": path, "mode": _mode(mode)}
        if parents:
            q["parents"] = "1"
        self._c._t.call("PUT", self._path(), body=data, query=q)

    def stat(self, path: str) -> FileInfo:
        return FileInfo.from_json(self._c._t.call("GET", self._path("/stat"), query={"path": path}))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except errors.NotFoundError:
            return False

    def list(self, path: str) -> FileList:
        obj = self._c._t.call("GET", self._path("/list"), query={"path": path})
        if not isinstance(obj, dict):
            raise errors.ProtocolError("bad listing from daemon")
        return FileList(path=str(obj.get("path", path)), entries=[FileInfo.from_json(e) for e in obj.get("entries") or []],
                        truncated=bool(obj.get("truncated")))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        q = {"path": path}
        if recursive:
            q["recursive"] = "1"
        self._c._t.call("DELETE", self._path(), query=q)

    def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = False) -> FileInfo:
        return FileInfo.from_json(self._c._t.call("POST", self._path("/mkdir"),
                                                  json_body={"path": path, "mode": _mode(mode), "parents": parents}))
