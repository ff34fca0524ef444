"""The wire: HTTP over bangerd's Unix socket, and the framed stream of the
upgraded calls (exec), as internal/client and internal/agent define them.

Every read from the daemon is bounded: JSON answers, error bodies, header
lines, stream events and frames each have a cap, so a broken or hostile
peer cannot make the SDK allocate without limit.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

from . import errors

API_VERSION = "v1"
UPGRADE = "banger-stream"

# Frame types (internal/agent/frame.go).
FRAME_STDIN = ord("i")  # data; an empty payload closes stdin
FRAME_STDOUT = ord("o")
FRAME_STDERR = ord("e")
FRAME_EXIT = ord("x")  # JSON ExitStatus: the last frame from the guest
FRAME_SIGNAL = ord("s")  # one byte: signal number
FRAME_RESIZE = ord("r")
FRAME_PROGRESS = ord("p")  # JSON, daemon to client
FRAME_ERROR = ord("E")  # JSON api.Error, daemon to client

MAX_FRAME = 1 << 20  # a frame's payload (agent.MaxFrame)
MAX_JSON = 16 << 20  # a JSON answer (a VM list of a busy host is far below)
MAX_ERROR_BODY = 1 << 20  # an error answer's body
MAX_EVENT_LINE = 16 << 20  # one line of a streamed answer (as the Go client)
MAX_HEADER_LINE = 8 << 10
MAX_HEADERS = 100

INSTALL_METADATA = "/etc/banger/install.json"


def default_socket(environ: Optional[Dict[str, str]] = None, metadata_file: str = INSTALL_METADATA) -> str:
    """The daemon's socket, found the way the banger CLI finds it
    (internal/paths): $BANGER_RUNTIME_DIR; else the installed service's
    runtime directory when this user owns it (/etc/banger/install.json);
    else $XDG_RUNTIME_DIR/banger, /run/user/UID/banger or
    /tmp/banger-UID/banger. The directory is checked like the CLI checks
    it: a directory another user controls could hold their socket."""
    env = os.environ if environ is None else environ
    uid = os.getuid()
    v = env.get("BANGER_RUNTIME_DIR", "")
    if v:
        if not os.path.isabs(v):
            raise errors.BadRequestError(f"BANGER_RUNTIME_DIR must be an absolute path, got {v!r}")
        _check_private_dir(v, managed=True)
        return os.path.join(v, "bangerd.sock")
    d = _installed_runtime_dir(metadata_file, uid)
    if d:
        _check_private_dir(d, managed=True)
        return os.path.join(d, "bangerd.sock")
    runtime = env.get("XDG_RUNTIME_DIR", "")
    parent = None
    if not runtime:
        runtime = f"/run/user/{uid}"
        if not os.path.exists(runtime):
            runtime = parent = f"/tmp/banger-{uid}"
    d = os.path.join(runtime, "banger")
    if parent is not None:
        _check_private_dir(parent, managed=False)
    _check_private_dir(d, managed=False)
    return os.path.join(d, "bangerd.sock")


def _installed_runtime_dir(path: str, uid: int) -> str:
    try:
        with open(path, "rb") as f:
            m = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return ""
    if not isinstance(m, dict) or m.get("uid") != uid:
        return ""
    d = m.get("runtime_dir")
    if isinstance(d, str) and os.path.isabs(d):
        return d
    return ""


def _check_private_dir(d: str, managed: bool) -> None:
    """Refuse a runtime directory that is a symlink, not ours, or open to
    group/others (managed, i.e. made by the service manager: not writable
    by them). A missing one is fine: the connect then fails clearly."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return
    except OSError as e:
        raise errors.DaemonUnavailableError(f"runtime directory {d}: {e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise errors.DaemonUnavailableError(f"runtime directory {d} is a symbolic link: refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise errors.DaemonUnavailableError(f"runtime directory {d} is not a directory: refusing to use it")
    if st.st_uid != os.geteuid():
        raise errors.DaemonUnavailableError(
            f"runtime directory {d} is owned by uid {st.st_uid}, not {os.geteuid()}: refusing to use it")
    bad = 0o022 if managed else 0o077
    if st.st_mode & bad:
        raise errors.DaemonUnavailableError(
            f"runtime directory {d} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can use it; refusing it")


ERROR_TRAILER = "x-banger-error"


class _Response(http.client.HTTPResponse):
    """An answer that keeps its trailer (a download that fails after its
    first byte reports its error in the X-Banger-Error trailer)."""

    trailers: Dict[str, str]

    def _read_and_discard_trailer(self) -> None:
        self.trailers = {}
        for _ in range(MAX_HEADERS):
            line = self.fp.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                raise errors.ProtocolError("trailer line from daemon too long")
            if line in (b"\r\n", b"\n", b""):
                return
            k, _, v = line.decode("latin-1").partition(":")
            self.trailers[k.strip().lower()] = v.strip()
        raise errors.ProtocolError("too many trailers from daemon")


def check_trailer(resp: http.client.HTTPResponse) -> None:
    """At the end of a download: raise the error the daemon reported in
    its trailer, or ProtocolError when the answer ended before its
    announced length (the daemon cuts the connection on a failure)."""
    if resp.length:
        raise errors.ProtocolError("the daemon cut the answer short (see its log)")
    t = getattr(resp, "trailers", {}).get(ERROR_TRAILER)
    if t:
        try:
            obj = json.loads(t)
        except ValueError:
            obj = None
        raise errors.from_api(obj, f"download failed: {t}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket."""

    response_class = _Response

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("bangerd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = _connect(self._path, self.timeout)


def _connect(path: str, timeout: Optional[float]) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise errors.DaemonUnavailableError(
            f"daemon unavailable: {path}: {e.strerror or e} (is bangerd running? `banger daemon start`)") from None
    return s


def api_path(path: str, query: Optional[Dict[str, str]] = None) -> str:
    from urllib.parse import urlencode

    p = "/" + API_VERSION + path
    if query:
        p += "?" + urlencode(query)
    return p


def read_capped(r: Any, cap: int, what: str) -> bytes:
    """Read all of r, failing with LimitExceededError past cap bytes."""
    b = r.read(cap + 1)
    if len(b) > cap:
        raise errors.LimitExceededError(f"{what} is over {cap} bytes")
    return bytes(b)


def raise_for(resp: http.client.HTTPResponse) -> None:
    """Turn a failed answer into the exception for its API error code."""
    if resp.status // 100 == 2:
        return
    body = resp.read(MAX_ERROR_BODY)
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    raise errors.from_api(obj, f"daemon answered {resp.status} {resp.reason}: {body[:200].decode('utf-8', 'replace').strip()}")


Body = Union[None, bytes, BinaryIO]


class Transport:
    """One daemon socket. Each call uses its own connection."""

    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, *, json_body: Any = None, body: Body = None,
                query: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
                ) -> Tuple[_UnixHTTPConnection, http.client.HTTPResponse]:
        """Send a request and return the connection and its (successful)
        answer; the caller reads the answer and closes the connection."""
        conn = _UnixHTTPConnection(self.socket_path, timeout if timeout is not None else self.timeout)
        headers = {}
        data: Any = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data = body
            headers["Content-Type"] = "application/octet-stream"
        try:
            if data is not None and not isinstance(data, (bytes, bytearray)):
                conn.request(method, api_path(path, query), body=data, headers=headers, encode_chunked=True)
            else:
                conn.request(method, api_path(path, query), body=data, headers=headers)
            resp = conn.getresponse()
        except errors.BangerError:
            conn.close()
            raise
        except (ConnectionError, socket.timeout) as e:
            conn.close()
            raise errors.DaemonUnavailableError(f"daemon unavailable: {self.socket_path}: {e}") from None
        except http.client.HTTPException as e:
            conn.close()
            raise errors.ProtocolError(f"bad answer from daemon: {e}") from None
        try:
            raise_for(resp)
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def call(self, method: str, path: str, *, json_body: Any = None, body: Body = None,
             query: Optional[Dict[str, str]] = None, cap: int = MAX_JSON) -> Any:
        """A simple call: the JSON answer, decoded (None for an empty one)."""
        conn, resp = self.request(method, path, json_body=json_body, body=body, query=query)
        try:
            raw = read_capped(resp, cap, "daemon answer")
        finally:
            conn.close()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise errors.ProtocolError(f"bad JSON from daemon: {e}") from None

    def stream(self, method: str, path: str, json_body: Any, on_progress: Any = None,
               timeout: Optional[float] = None) -> Any:
        """A long call answered with newline-delimited events: progress
        events go to on_progress; the result is returned, an error raised."""
        conn, resp = self.request(method, path, json_body=json_body, timeout=timeout)
        try:
            while True:
                line = resp.readline(MAX_EVENT_LINE + 1)
                if not line:
                    raise errors.ProtocolError("daemon ended the stream without a result (did it stop or crash? see its log)")
                if len(line) > MAX_EVENT_LINE:
                    raise errors.LimitExceededError(f"stream event over {MAX_EVENT_LINE} bytes")
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError as e:
                    raise errors.ProtocolError(f"bad event from daemon: {e}") from None
                if not isinstance(ev, dict):
                    raise errors.ProtocolError("bad event from daemon: not an object")
                if ev.get("error") is not None:
                    raise errors.from_api(ev["error"])
                if ev.get("progress") is not None:
                    if on_progress is not None:
                        on_progress(ev["progress"])
                    continue
                if "result" in ev:
                    return ev["result"]
        except (socket.timeout, ConnectionError) as e:
            raise errors.DaemonUnavailableError(f"daemon stream: {e}") from None
        finally:
            conn.close()

    def upgrade(self, path: str, json_body: Any, timeout: Optional[float]) -> "FrameConn":
        """Make an exec-like call and return the framed stream it upgrades
        to (HTTP/1.1 101 with Upgrade: banger-stream)."""
        sock = _connect(self.socket_path, timeout)
        try:
            body = json.dumps(json_body).encode()
            head = (
                f"POST {api_path(path)} HTTP/1.1\r\n"
                "Host: bangerd\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: Upgrade\r\n"
                f"Upgrade: {UPGRADE}\r\n\r\n"
            ).encode()
            sock.sendall(head + body)
            r = sock.makefile("rb")
            status, headers = _read_head(r)
            if status != 101:
                _raise_upgrade_failure(r, status, headers)
            return FrameConn(sock, r)
        except (socket.timeout, ConnectionError) as e:
            sock.close()
            raise errors.DaemonUnavailableError(f"daemon unavailable: {self.socket_path}: {e}") from None
        except BaseException:
            sock.close()
            raise


def _read_line(r: BinaryIO) -> bytes:
    line = r.readline(MAX_HEADER_LINE + 1)
    if len(line) > MAX_HEADER_LINE:
        raise errors.ProtocolError("header line from daemon too long")
    if not line:
        raise errors.ProtocolError("daemon closed the connection before answering")
    return line


def _read_head(r: BinaryIO) -> Tuple[int, Dict[str, str]]:
    parts = _read_line(r).decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise errors.ProtocolError("bad status line from daemon")
    headers: Dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        line = _read_line(r).decode("latin-1").rstrip("\r\n")
        if not line:
            return int(parts[1]), headers
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    raise errors.ProtocolError("too many headers from daemon")


def _raise_upgrade_failure(r: BinaryIO, status: int, headers: Dict[str, str]) -> None:
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while len(body) <= MAX_ERROR_BODY:
            size_line = _read_line(r).split(b";")[0].strip()
            try:
                n = int(size_line, 16)
            except ValueError:
                raise errors.ProtocolError("bad chunk from daemon") from None
            if n == 0:
                break
            if n > MAX_ERROR_BODY:
                raise errors.LimitExceededError("error answer too large")
            body += r.read(n)
            r.read(2)
    else:
        try:
            n = int(headers.get("content-length", "0"))
        except ValueError:
            n = 0
        body = r.read(min(max(n, 0), MAX_ERROR_BODY))
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    raise errors.from_api(obj, f"daemon answered {status} instead of upgrading: {body[:200].decode('utf-8', 'replace').strip()}")


class FrameConn:
    """The framed stream of an upgraded call (internal/agent/frame.go):
    a 1-byte type, a big-endian uint32 length, then the payload
    (at most MAX_FRAME bytes)."""

    def __init__(self, sock: socket.socket, reader: BinaryIO) -> None:
        self.sock = sock
        self._r = reader

    def write(self, ftype: int, payload: bytes = b"") -> None:
        mv = memoryview(payload)
        while True:
            chunk = mv[:MAX_FRAME]
            self.sock.sendall(struct.pack(">BI", ftype, len(chunk)) + bytes(chunk))
            mv = mv[len(chunk):]
            if len(mv) == 0:
                return

    def read(self) -> Optional[Tuple[int, bytes]]:
        """The next frame, or None at a clean end of stream (EOF between
        frames)."""
        hdr = self._r.read(5)
        if not hdr:
            return None
        if len(hdr) < 5:
            raise errors.ProtocolError("stream cut inside a frame header")
        ftype, n = struct.unpack(">BI", hdr)
        if n > MAX_FRAME:
            raise errors.ProtocolError(f"frame of {n} bytes exceeds the {MAX_FRAME} byte limit")
        payload = self._r.read(n) if n else b""
        if len(payload) < n:
            raise errors.ProtocolError("stream cut inside a frame")
        return ftype, payload

    def close_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._r.close()
        self.sock.close()


def json_payload(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as e:
        raise errors.ProtocolError(f"bad JSON frame: {e}") from None


def env_list(env: Optional[Dict[str, str]]) -> List[str]:
    out = []
    for k, v in (env or {}).items():
        if not k or "=" in k or "\0" in k or "\0" in v:
            raise errors.BadRequestError(f"bad environment variable name {k!r}")
        out.append(f"{k}={v}")
    return out
