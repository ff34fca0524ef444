"""Unit tests: the SDK against a fake daemon on a Unix socket that speaks
HTTP and, for exec, the upgraded frame stream. No VM, no real daemon."""

from __future__ import annotations

import json
import os
import socketserver
import struct
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import parse_qs, urlparse

import pytest

import banger
from banger import _wire


def frame(t: str, payload: bytes = b"") -> bytes:
    return struct.pack(">BI", ord(t), len(payload)) + payload


def read_frame(rfile: Any) -> Tuple[str, bytes]:
    hdr = rfile.read(5)
    if len(hdr) < 5:
        raise EOFError
    t, n = struct.unpack(">BI", hdr)
    return chr(t), rfile.read(n)


class FakeDaemon:
    """Routes: (method, path) -> handler(req) where req is the handler
    instance; handlers answer with req.answer(...) or speak frames."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="banger-sdk-test-")
        os.chmod(self.dir, 0o700)
        self.socket = os.path.join(self.dir, "bangerd.sock")
        self.routes: Dict[Tuple[str, str], Callable[[Any], None]] = {}
        self.requests: List[Dict[str, Any]] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _handle(self) -> None:
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(n) if n else b""
                self.body = body
                self.query = {k: v[0] for k, v in parse_qs(u.query).items()}
                daemon.requests.append({"method": self.command, "path": u.path, "query": self.query,
                                        "body": body, "headers": dict(self.headers)})
                h = daemon.routes.get((self.command, u.path))
                if h is None:
                    self.answer(404, {"code": "unknown_method", "message": f"no such API call: {self.command} {u.path}", "op_id": "op1"})
                    return
                h(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def answer(self, status: int, obj: Any = None, raw: bytes = b"", ctype: str = "application/json") -> None:
                data = json.dumps(obj).encode() if obj is not None else raw
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def upgrade(self) -> None:
                assert self.headers.get("Upgrade") == "banger-stream"
                self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up early (the tests make some) is no failure

        self.server = Server(self.socket, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
        def deco(f: Callable[[Any], None]) -> Callable[[Any], None]:
            self.routes[(method, "/v1" + path)] = f
            return f
        return deco

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Any:
    d = FakeDaemon()
    yield d
    d.close()


@pytest.fixture
def client(fake: FakeDaemon) -> banger.Client:
    return banger.Client(socket=fake.socket, timeout=10)


# --- socket resolution ---

def test_default_socket_follows_the_cli(tmp_path: Any) -> None:
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    env = {"BANGER_RUNTIME_DIR": str(rt)}
    assert _wire.default_socket(env, metadata_file="/nonexistent") == str(rt / "bangerd.sock")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    assert _wire.default_socket({"XDG_RUNTIME_DIR": str(xdg)}, metadata_file="/nonexistent") == str(xdg / "banger" / "bangerd.sock")
    meta = tmp_path / "install.json"
    svc = tmp_path / "svc"
    svc.mkdir(mode=0o755)
    meta.write_text(json.dumps({"uid": os.getuid(), "runtime_dir": str(svc)}))
    assert _wire.default_socket({"XDG_RUNTIME_DIR": str(xdg)}, metadata_file=str(meta)) == str(svc / "bangerd.sock")
    meta.write_text(json.dumps({"uid": os.getuid() + 1, "runtime_dir": str(svc)}))
    assert _wire.default_socket({"XDG_RUNTIME_DIR": str(xdg)}, metadata_file=str(meta)).startswith(str(xdg))
    with pytest.raises(banger.BadRequestError):
        _wire.default_socket({"BANGER_RUNTIME_DIR": "relative/dir"}, metadata_file="/nonexistent")


def test_default_socket_refuses_open_or_linked_dirs(tmp_path: Any) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "banger").mkdir(parents=True)
    os.chmod(xdg / "banger", 0o777)
    with pytest.raises(banger.DaemonUnavailableError, match="group or others"):
        _wire.default_socket({"XDG_RUNTIME_DIR": str(xdg)}, metadata_file="/nonexistent")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chmod(xdg / "banger", 0o700)
    os.rmdir(xdg / "banger")
    os.symlink(other, xdg / "banger")
    with pytest.raises(banger.DaemonUnavailableError, match="symbolic link"):
        _wire.default_socket({"XDG_RUNTIME_DIR": str(xdg)}, metadata_file="/nonexistent")


def test_unavailable(tmp_path: Any) -> None:
    c = banger.Client(socket=str(tmp_path / "none.sock"))
    with pytest.raises(banger.DaemonUnavailableError) as ei:
        c.list()
    assert ei.value.code == "unavailable"


# --- simple calls and errors ---

def test_list_get_delete_and_error_codes(fake: FakeDaemon, client: banger.Client) -> None:
    vms = [{"id": "1", "name": "a", "image": "debian", "state": "running", "ip": "10.0.0.2"}]

    @fake.route("GET", "/vms")
    def _(r: Any) -> None:
        r.answer(200, vms)

    @fake.route("GET", "/vms/a")
    def _(r: Any) -> None:
        r.answer(200, vms[0])

    @fake.route("GET", "/vms/ghost")
    def _(r: Any) -> None:
        r.answer(404, {"code": "not_found", "message": "vm \"ghost\" not found", "op_id": "abcd"})

    @fake.route("DELETE", "/vms/busy")
    def _(r: Any) -> None:
        r.answer(409, {"code": "not_running", "message": "vm is stopped"})

    @fake.route("DELETE", "/vms/a")
    def _(r: Any) -> None:
        r.answer(200, {"ok": True})

    [v] = client.list()
    assert (v.name, v.state, v.ip, v.raw["id"]) == ("a", "running", "10.0.0.2", "1")
    assert client.get("a").id == "1"
    with pytest.raises(banger.NotFoundError) as ei:
        client.get("ghost")
    assert ei.value.code == "not_found" and ei.value.op_id == "abcd" and "ghost" in str(ei.value)
    with pytest.raises(banger.ConflictError) as ei2:
        client.delete("busy")
    assert isinstance(ei2.value, banger.NotRunningError) and ei2.value.code == "not_running"
    client.delete("a")
    with pytest.raises(banger.UnknownMethodError):
        client.stop("a")


def test_bad_and_oversized_answers(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("GET", "/vms")
    def _(r: Any) -> None:
        r.answer(200, raw=b"{not json")

    @fake.route("GET", "/vms/x")
    def _(r: Any) -> None:
        r.answer(500, raw=b"<html>proxy error</html>", ctype="text/html")

    with pytest.raises(banger.ProtocolError):
        client.list()
    with pytest.raises(banger.OperationFailedError, match="500"):
        client.get("x")


def test_create_streams_progress_then_result(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        p = json.loads(r.body)
        if p["name"] == "bad":
            lines = [{"progress": {"stage": "disk", "duration_ms": 1}}, {"error": {"code": "bad_request", "message": "no such image"}}]
        else:
            lines = [{"progress": {"stage": "disk", "duration_ms": 1}}, {"progress": {"stage": "boot", "duration_ms": 2}},
                     {"result": {"id": "9", "name": p["name"], "image": p["image"], "state": "running"}}]
        r.answer(200, raw=b"".join(json.dumps(x).encode() + b"\n" for x in lines), ctype="application/x-ndjson")

    stages: List[str] = []
    v = client.create("debian", "one", vcpu=2, memory_mib=512, on_progress=lambda p: stages.append(p["stage"]))
    assert v.name == "one" and v.state == "running" and stages == ["disk", "boot"]
    sent = json.loads(fake.requests[-1]["body"])
    assert sent == {"image": "debian", "name": "one", "vcpu": 2, "memory_mib": 512}
    with pytest.raises(banger.BadRequestError, match="no such image"):
        client.create("nope", "bad")


def test_create_stream_without_result(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        r.answer(200, raw=b'{"progress":{"stage":"disk"}}\n', ctype="application/x-ndjson")

    with pytest.raises(banger.ProtocolError, match="without a result"):
        client.create("debian", "x")


# --- exec over the upgraded stream ---

def exec_route(fake: FakeDaemon, name: str, behave: Callable[[Any, Dict[str, Any], bytes], None]) -> None:
    @fake.route("POST", f"/vms/{name}/exec")
    def _(r: Any) -> None:
        params = json.loads(r.body)
        r.upgrade()
        stdin = b""
        while True:
            t, p = read_frame(r.rfile)
            if t == "i" and not p:
                break
            stdin += p
        r.wfile.sock = r.connection
        behave(r.wfile, params, stdin)
        r.wfile.flush()


def test_exec_stdin_env_cwd_and_exit(fake: FakeDaemon, client: banger.Client) -> None:
    got: Dict[str, Any] = {}

    def behave(w: Any, params: Dict[str, Any], stdin: bytes) -> None:
        got.update(params)
        up = stdin.upper()
        for i in range(0, len(up), 1 << 20):
            w.write(frame("o", up[i:i + (1 << 20)]))
        w.write(frame("e", b"warning\n"))
        w.write(frame("x", json.dumps({"code": 3}).encode()))

    exec_route(fake, "a", behave)
    big = b"abc" * 700000  # over one frame: sent in several
    r = client.exec("a", ["tr", "a-z", "A-Z"], cwd="/root/repo", env={"FOO": "bar"}, stdin=big)
    assert r.exit_code == 3 and not r.ok
    assert r.stdout == big.upper() and r.stderr == b"warning\n"
    assert got == {"vm": "a", "argv": ["tr", "a-z", "A-Z"], "cwd": "/root/repo", "env": ["FOO=bar"]}
    with pytest.raises(banger.CommandError) as ei:
        r.check()
    assert ei.value.result is r
    r2 = client.exec("a", "echo hi | wc -c")
    assert got["argv"] == ["/bin/sh", "-c", "echo hi | wc -c"] and r2.stdout == b""


def test_exec_output_is_capped(fake: FakeDaemon, client: banger.Client) -> None:
    def behave(w: Any, params: Dict[str, Any], stdin: bytes) -> None:
        for _ in range(10):
            w.write(frame("o", b"x" * 100000))
        w.write(frame("x", b'{"code":0,"signal":""}'))

    exec_route(fake, "a", behave)
    r = client.exec("a", ["yes"], max_output=250000)
    assert r.ok and len(r.stdout) == 250000 and r.stdout_truncated and not r.stderr_truncated


def test_exec_refuses_oversized_frame(fake: FakeDaemon, client: banger.Client) -> None:
    def behave(w: Any, params: Dict[str, Any], stdin: bytes) -> None:
        w.write(struct.pack(">BI", ord("o"), (1 << 20) + 1))
        w.write(b"x" * 100)

    exec_route(fake, "a", behave)
    with pytest.raises(banger.ProtocolError, match="limit"):
        client.exec("a", ["x"])


def test_exec_cut_stream_and_error_frame(fake: FakeDaemon, client: banger.Client) -> None:
    exec_route(fake, "cut", lambda w, p, s: w.write(frame("o", b"partial")))
    with pytest.raises(banger.ProtocolError, match="before the command finished"):
        client.exec("cut", ["x"])
    exec_route(fake, "err", lambda w, p, s: w.write(frame("E", json.dumps({"code": "not_running", "message": "vm is stopped", "op_id": "o9"}).encode())))
    with pytest.raises(banger.NotRunningError) as ei:
        client.exec("err", ["x"])
    assert ei.value.op_id == "o9"


def test_exec_refused_before_upgrade(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("POST", "/vms/stopped/exec")
    def _(r: Any) -> None:
        r.answer(409, {"code": "not_running", "message": "vm \"stopped\" is not running", "op_id": "z"})

    with pytest.raises(banger.NotRunningError, match="not running"):
        client.exec("stopped", ["true"])


def test_exec_timeout_kills_and_keeps_partial_output(fake: FakeDaemon, client: banger.Client) -> None:
    ended = threading.Event()

    def behave(w: Any, params: Dict[str, Any], stdin: bytes) -> None:
        w.write(frame("o", b"started\n"))
        w.flush()
        # Wait for the client to go away (it closes the connection).
        try:
            while w.sock.recv(1):
                pass
        except OSError:
            pass
        ended.set()

    exec_route(fake, "slow", behave)
    with pytest.raises(banger.ExecTimeoutError) as ei:
        client.exec("slow", ["sleep", "100"], timeout=0.5)
    assert isinstance(ei.value, TimeoutError)
    assert ei.value.partial is not None and ei.value.partial.stdout == b"started\n"
    assert ended.wait(5), "the connection stayed open after the timeout"


# --- files ---

def test_files(fake: FakeDaemon, client: banger.Client) -> None:
    store: Dict[str, bytes] = {}
    info = {"name": "x", "path": "/root/x", "type": "file", "size": 3, "mode": "0644", "mtime": "2026-12-07T10:00:00.123456789Z"}

    @fake.route("PUT", "/vms/a/files")
    def _(r: Any) -> None:
        store[r.query["path"]] = r.body
        r.answer(200, {"ok": True})

    @fake.route("GET", "/vms/a/files")
    def _(r: Any) -> None:
        p = r.query["path"]
        if p not in store:
            r.answer(404, {"code": "not_found", "message": f"{p}: no such file"})
            return
        r.answer(200, raw=store[p], ctype="application/octet-stream")

    @fake.route("GET", "/vms/a/files/stat")
    def _(r: Any) -> None:
        if r.query["path"] not in store:
            r.answer(404, {"code": "not_found", "message": "no such file"})
            return
        r.answer(200, info)

    @fake.route("GET", "/vms/a/files/list")
    def _(r: Any) -> None:
        r.answer(200, {"path": r.query["path"], "entries": [info, dict(info, name="l", type="symlink", target="/etc", mode="0777")], "truncated": False})

    @fake.route("POST", "/vms/a/files/mkdir")
    def _(r: Any) -> None:
        p = json.loads(r.body)
        r.answer(200, dict(info, path=p["path"], type="dir", mode=p["mode"]))

    @fake.route("DELETE", "/vms/a/files")
    def _(r: Any) -> None:
        store.pop(r.query["path"], None)
        r.answer(200, {"ok": True})

    f = client.files("a")
    f.write("/root/x", b"hi\n", mode=0o755, parents=True)
    put = fake.requests[-1]
    assert put["query"] == {"path": "/root/x", "mode": "0755", "parents": "1"}
    assert put["headers"]["Content-Type"] == "application/octet-stream"
    assert f.read("/root/x") == b"hi\n" and f.read_text("/root/x") == "hi\n"
    with pytest.raises(banger.LimitExceededError):
        f.read("/root/x", max_bytes=2)
    f.write("/root/big", b"y" * 5000)
    import io
    buf = io.BytesIO()
    assert f.download("/root/big", buf) == 5000 and buf.getvalue() == b"y" * 5000
    # A file object is streamed (chunked).
    f.write("/root/streamed", io.BytesIO(b"z" * 300000))
    assert store["/root/streamed"] == b"z" * 300000
    st = f.stat("/root/x")
    assert (st.type, st.mode, st.size) == ("file", 0o644, 3)
    assert f.exists("/root/x") and not f.exists("/root/nope")
    ls = f.list("/root")
    assert [e.name for e in ls.entries] == ["x", "l"] and ls.entries[1].target == "/etc" and not ls.truncated
    d = f.mkdir("/root/d", mode=0o700, parents=True)
    assert d.type == "dir" and d.mode == 0o700
    assert json.loads(fake.requests[-1]["body"]) == {"path": "/root/d", "mode": "0700", "parents": True}
    f.remove("/root/x", recursive=True)
    assert fake.requests[-1]["query"] == {"path": "/root/x", "recursive": "1"}
    with pytest.raises(banger.NotFoundError):
        f.read("/root/x")
    with pytest.raises(banger.BadRequestError):
        f.write("/root/x", b"", mode=0o17777)


# --- Sandbox ---

def sandbox_routes(fake: FakeDaemon, deleted: List[str]) -> None:
    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        p = json.loads(r.body)
        def delete(rr: Any) -> None:
            deleted.append(p["name"])
            rr.answer(200, {"ok": True})
        fake.routes[("DELETE", "/v1/vms/" + p["name"])] = delete
        r.answer(200, raw=json.dumps({"result": {"id": "1", "name": p["name"], "image": p["image"], "state": "running"}}).encode() + b"\n")


def test_sandbox_deleted_on_exit_and_on_exception(fake: FakeDaemon) -> None:
    deleted: List[str] = []
    sandbox_routes(fake, deleted)
    with banger.Sandbox(image="debian", socket=fake.socket) as sb:
        assert sb.name.startswith("sb-") and sb.vm is not None
        name = sb.name
    assert deleted == [name]
    with pytest.raises(RuntimeError):
        with banger.Sandbox(image="debian", name="boom", socket=fake.socket, vcpu=1):
            raise RuntimeError("test failure")
    assert deleted == [name, "boom"]
    assert json.loads([r for r in fake.requests if r["method"] == "POST"][-1]["body"])["vcpu"] == 1


def test_sandbox_failed_create_cleans_up_but_never_a_taken_name(fake: FakeDaemon) -> None:
    deleted: List[str] = []

    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        p = json.loads(r.body)
        if p["name"] == "taken":
            r.answer(409, {"code": "already_exists", "message": "vm \"taken\" already exists"})
            return
        r.answer(200, raw=b'{"error":{"code":"operation_failed","message":"boot timed out"}}\n')

    @fake.route("DELETE", "/vms/half")
    def _(r: Any) -> None:
        deleted.append("half")
        r.answer(200, {"ok": True})

    @fake.route("DELETE", "/vms/taken")
    def _(r: Any) -> None:
        deleted.append("taken")
        r.answer(200, {"ok": True})

    with pytest.raises(banger.OperationFailedError, match="boot timed out"):
        with banger.Sandbox(name="half", socket=fake.socket):
            pass
    assert deleted == ["half"]
    with pytest.raises(banger.AlreadyExistsError):
        with banger.Sandbox(name="taken", socket=fake.socket):
            pass
    assert deleted == ["half"], "a VM that was someone else's was deleted"


def test_file_read_failing_midway(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("GET", "/vms/a/files")
    def _(r: Any) -> None:
        r.close_connection = True
        if r.query["path"] == "/proc/x":
            # Size unknown: chunked, the failure in the trailer.
            r.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
                          b"Trailer: X-Banger-Error\r\n\r\n5\r\nhello\r\n0\r\n"
                          b'X-Banger-Error: {"code":"bad_request","message":"file is over the 1 MiB limit","op_id":"t1"}\r\n\r\n')
        else:
            # Size announced, connection cut before the end.
            r.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        r.wfile.flush()

    f = client.files("a")
    with pytest.raises(banger.BadRequestError, match="limit") as ei:
        f.read("/proc/x")
    assert ei.value.op_id == "t1"
    import io
    with pytest.raises(banger.BadRequestError):
        f.download("/proc/x", io.BytesIO())
    with pytest.raises(banger.ProtocolError, match="cut"):
        f.read("/root/cut")
    with pytest.raises(banger.ProtocolError, match="cut"):
        f.download("/root/cut", io.BytesIO())


# --- workspaces ---

def _git(cwd: Any, *args: str) -> None:
    import subprocess
    subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _repo(tmp_path: Any) -> Any:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "--initial-branch=dev")
    (repo / "a.txt").write_text("tracked\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(repo / "sub" / "run.sh", 0o755)
    os.symlink("a.txt", repo / "link")
    (repo / ".gitignore").write_text("ignored.txt\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    (repo / "a.txt").write_text("changed in the work tree\n")
    (repo / "untracked.txt").write_text("u\n")
    (repo / "ignored.txt").write_text("never sent\n")
    return repo


def workspace_route(fake: FakeDaemon, name: str, got: Dict[str, Any], answer: bytes) -> None:
    @fake.route("POST", f"/vms/{name}/workspace")
    def _(r: Any) -> None:
        got["params"] = json.loads(r.body)
        r.upgrade()
        data = b""
        while True:
            t, p = read_frame(r.rfile)
            assert t == "i"
            if not p:
                break
            data += p
        got["tar"] = data
        r.wfile.write(answer)
        r.wfile.flush()


def _tar_members(data: bytes) -> Dict[str, Any]:
    import io
    import tarfile
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf.getmembers():
            out[m.name] = (m, tf.extractfile(m).read() if m.isreg() else None)  # type: ignore[union-attr]
    return out


def test_prepare_workspace_sends_files_and_a_git_dir(fake: FakeDaemon, client: banger.Client, tmp_path: Any) -> None:
    import subprocess
    repo = _repo(tmp_path)
    got: Dict[str, Any] = {}
    workspace_route(fake, "a", got, frame("x", b'{"code":0}'))
    ws = client.prepare_workspace("a", str(repo / "sub"))
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, check=True).stdout.decode().strip()
    assert ws.head == head and ws.path == str(repo) and ws.mode == "copy" and ws.files == 4
    assert got["params"] == {"path": str(repo), "mode": "copy", "files": 4, "bytes": ws.bytes, "head": head}
    m = _tar_members(got["tar"])
    assert m["a.txt"][1] == b"changed in the work tree\n"
    assert m["sub/run.sh"][0].mode == 0o755
    assert m["link"][0].issym() and m["link"][0].linkname == "a.txt"
    assert "untracked.txt" not in m and "ignored.txt" not in m
    assert "link" in m and ".git/HEAD" in m and m[".git/shallow"][1] == (head + "\n").encode()
    assert not any(n.startswith(".git/hooks") for n in m)
    # The .git it sends is a real repository at HEAD: unpack and ask git.
    import tarfile, io
    dst = tmp_path / "guest"
    dst.mkdir()
    with tarfile.open(fileobj=io.BytesIO(got["tar"]), mode="r:") as tf:
        tf.extractall(dst, filter="tar") if hasattr(tarfile, "tar_filter") else tf.extractall(dst)
    status = subprocess.run(["git", "-C", str(dst), "status", "--porcelain"], capture_output=True, check=True).stdout
    assert status.strip() == b"M a.txt"
    branch = subprocess.run(["git", "-C", str(dst), "symbolic-ref", "--short", "HEAD"], capture_output=True, check=True)
    assert branch.stdout.strip() == b"dev"

    client.prepare_workspace("a", str(repo), include_untracked=True)
    m = _tar_members(got["tar"])
    assert "untracked.txt" in m and "ignored.txt" not in m
    assert got["params"]["include_untracked"] is True and got["params"]["files"] == 5


def test_prepare_workspace_errors(fake: FakeDaemon, client: banger.Client, tmp_path: Any) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(banger.BadRequestError, match="not inside a git repository"):
        client.prepare_workspace("a", str(tmp_path))
    with pytest.raises(banger.BadRequestError, match="not a directory"):
        client.prepare_workspace("a", str(tmp_path / "nope"))
    got: Dict[str, Any] = {}
    workspace_route(fake, "a", got, frame("E", json.dumps({"code": "not_running", "message": "vm \"a\" is stopped"}).encode()))
    with pytest.raises(banger.NotRunningError, match="stopped"):
        client.prepare_workspace("a", str(repo))
    workspace_route(fake, "a", got, frame("x", b'{"code":2,"error":"tar: disk full"}'))
    with pytest.raises(banger.OperationFailedError, match="disk full"):
        client.prepare_workspace("a", str(repo))
    workspace_route(fake, "a", got, b"")  # the daemon hangs up without an answer
    with pytest.raises(banger.ProtocolError):
        client.prepare_workspace("a", str(repo))


def test_export_workspace(fake: FakeDaemon, client: banger.Client) -> None:
    patch = b"diff --git a/x b/x\n" + b"+" * 5000

    @fake.route("POST", "/vms/a/workspace/export")
    def _(r: Any) -> None:
        r.answer(200, raw=patch, ctype="text/x-diff")

    assert client.export_workspace("a") == patch
    assert json.loads(fake.requests[-1]["body"]) == {}
    import io
    buf = io.BytesIO()
    assert client.export_workspace("a", buf, base_commit="abc123") == b""
    assert buf.getvalue() == patch and json.loads(fake.requests[-1]["body"]) == {"base_commit": "abc123"}
    with pytest.raises(banger.LimitExceededError):
        client.export_workspace("a", max_bytes=100)

    @fake.route("POST", "/vms/b/workspace/export")
    def _(r: Any) -> None:
        r.answer(409, {"code": "not_running", "message": "vm \"b\" is stopped"})

    with pytest.raises(banger.NotRunningError):
        client.export_workspace("b")


# --- sessions ---

SESSION = {"name": "srv", "argv": ["sleep", "100"], "cwd": "/root", "tty": False, "pid": 42, "state": "running",
           "started_at": "2026-12-07T22:00:00Z", "output_bytes": 12, "attached": 0}


def test_sessions_start_list_get_stop(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("POST", "/vms/a/sessions")
    def _(r: Any) -> None:
        r.answer(200, SESSION)

    @fake.route("GET", "/vms/a/sessions")
    def _(r: Any) -> None:
        r.answer(200, [SESSION])

    @fake.route("GET", "/vms/a/sessions/srv")
    def _(r: Any) -> None:
        r.answer(200, SESSION)

    @fake.route("GET", "/vms/a/sessions/ghost")
    def _(r: Any) -> None:
        r.answer(404, {"code": "not_found", "message": "session \"ghost\" not found"})

    @fake.route("POST", "/vms/a/sessions/srv/stop")
    def _(r: Any) -> None:
        r.answer(200, dict(SESSION, state="exited", pid=0, exit={"code": -1, "signal": "TERM"}))

    s = client.start_session("a", ["sleep", "100"], session="srv", cwd="/root", env={"A": "1"})
    assert (s.name, s.state, s.pid, s.exit_code) == ("srv", "running", 42, None)
    assert json.loads(fake.requests[-1]["body"]) == {"argv": ["sleep", "100"], "name": "srv", "cwd": "/root", "env": ["A=1"]}
    client.start_session("a", "echo hi; sleep 1")
    assert json.loads(fake.requests[-1]["body"]) == {"argv": ["/bin/sh", "-c", "echo hi; sleep 1"]}
    assert [x.name for x in client.sessions("a")] == ["srv"]
    assert client.get_session("a", "srv").output_bytes == 12
    with pytest.raises(banger.NotFoundError):
        client.get_session("a", "ghost")
    st = client.stop_session("a", "srv")
    assert (st.state, st.exit_code, st.signal) == ("exited", -1, "TERM")
    assert json.loads(fake.requests[-1]["body"]) == {}
    client.stop_session("a", "srv", signal=9)
    assert json.loads(fake.requests[-1]["body"]) == {"signal": 9}
    with pytest.raises(banger.BadRequestError):
        client.start_session("a", [])
    with pytest.raises(banger.BadRequestError):
        client.get_session("a", "")

    @fake.route("GET", "/vms/b/sessions")
    def _(r: Any) -> None:
        r.answer(200, [{"no": "name"}])

    with pytest.raises(banger.ProtocolError):
        client.sessions("b")


def logs_route(fake: FakeDaemon, frames: List[bytes], got: Dict[str, Any]) -> None:
    @fake.route("POST", "/vms/a/sessions/srv/logs")
    def _(r: Any) -> None:
        got["params"] = json.loads(r.body)
        r.upgrade()
        for f in frames:
            r.wfile.write(f)
        r.wfile.flush()


def test_session_logs(fake: FakeDaemon, client: banger.Client) -> None:
    got: Dict[str, Any] = {}
    logs_route(fake, [frame("o", b"line 1\n"), frame("o", b"line 2\n")], got)
    lg = client.session_logs("a", "srv", tail=100)
    assert lg.output == b"line 1\nline 2\n" and lg.exit_code is None and not lg.truncated
    assert got["params"] == {"tail": 100}
    logs_route(fake, [frame("o", b"x" * 5000), frame("x", b'{"code":3}')], got)
    lg = client.session_logs("a", "srv", follow=True, max_output=1000)
    assert len(lg.output) == 1000 and lg.truncated and lg.exit_code == 3
    assert got["params"] == {"follow": True}
    logs_route(fake, [frame("o", b"partial")], got)
    with pytest.raises(banger.ProtocolError, match="before the session did"):
        client.session_logs("a", "srv", follow=True)
    logs_route(fake, [frame("E", json.dumps({"code": "not_found", "message": "no session"}).encode())], got)
    with pytest.raises(banger.NotFoundError):
        client.session_logs("a", "srv")


def test_sandbox_workspace_and_sessions(fake: FakeDaemon, tmp_path: Any) -> None:
    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        r.answer(200, raw=(json.dumps({"result": {"id": "1", "name": "sbx", "image": "debian", "state": "running"}}) + "\n").encode(),
                 ctype="application/x-ndjson")

    @fake.route("DELETE", "/vms/sbx")
    def _(r: Any) -> None:
        r.answer(200, {})

    @fake.route("POST", "/vms/sbx/sessions")
    def _(r: Any) -> None:
        r.answer(200, SESSION)

    got: Dict[str, Any] = {}
    workspace_route(fake, "sbx", got, frame("x", b'{"code":0}'))
    repo = _repo(tmp_path)
    with banger.Sandbox(name="sbx", client=banger.Client(socket=fake.socket)) as sb:
        assert sb.prepare_workspace(str(repo)).files == 4
        assert sb.start_session(["sleep", "100"]).name == "srv"


def test_create_sends_files(fake: FakeDaemon, client: banger.Client) -> None:
    @fake.route("POST", "/vms")
    def _(r: Any) -> None:
        r.answer(200, raw=(json.dumps({"result": {"id": "1", "name": "f", "image": "debian", "state": "running"}}) + "\n").encode(),
                 ctype="application/x-ndjson")

    client.create(name="f", files={"/root/.codex/auth.json": b'{"k":1}'})
    body = json.loads(fake.requests[-1]["body"])
    assert body["files"] == [{"path": "/root/.codex/auth.json", "data": "eyJrIjoxfQ=="}]
