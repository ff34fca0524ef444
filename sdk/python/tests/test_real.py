"""Tests against a real daemon and one real VM.

They run when BANGER_TEST_PYTHON_SDK=1 (the end-to-end scenario
TestPythonSDK sets it, with the daemon's socket found through
BANGER_RUNTIME_DIR as the CLI finds it); every check shares one Sandbox.
The scenario checks afterwards that the sandbox was deleted.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

import banger

pytestmark = pytest.mark.skipif(os.environ.get("BANGER_TEST_PYTHON_SDK") != "1",
                                reason="needs a real daemon: run through `make e2e SCENARIO=TestPythonSDK`")

IMAGE = os.environ.get("BANGER_TEST_PYTHON_SDK_IMAGE", "debian")


@pytest.fixture(scope="module")
def sb() -> Iterator[banger.Sandbox]:
    with banger.Sandbox(image=IMAGE) as s:
        # The name of the VM is given back for the scenario's check.
        out = os.environ.get("BANGER_TEST_PYTHON_SDK_NAME_FILE")
        if out:
            with open(out, "w") as f:
                f.write(s.name)
        yield s


def test_sandbox_is_a_running_vm(sb: banger.Sandbox) -> None:
    c = banger.Client()
    assert c.ping()["pid"] > 0
    assert c.get(sb.name).state == "running"
    assert sb.name in [v.name for v in c.list()]


def test_exec_exit_code_and_streams(sb: banger.Sandbox) -> None:
    r = sb.exec(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    assert not r.stdout_truncated and not r.stderr_truncated


def test_exec_stdin_env_cwd(sb: banger.Sandbox) -> None:
    r = sb.exec(["sh", "-c", 'cat; echo "$FOO"; pwd'], cwd="/tmp", env={"FOO": "bar baz"}, stdin=b"from stdin\n")
    assert r.ok, r.stderr_text
    assert r.stdout == b"from stdin\nbar baz\n/tmp\n"
    big = os.urandom(3 << 20)
    r = sb.exec(["sha256sum"], stdin=big)
    import hashlib
    assert r.stdout_text.split()[0] == hashlib.sha256(big).hexdigest()
    assert sb.exec("echo $((6*7))").stdout == b"42\n"


def test_exec_output_bounded(sb: banger.Sandbox) -> None:
    r = sb.exec(["sh", "-c", "head -c 3000000 /dev/zero"], max_output=100000)
    assert r.ok and len(r.stdout) == 100000 and r.stdout_truncated


def test_exec_failures(sb: banger.Sandbox) -> None:
    r = sb.exec(["no-such-command-xyz"])
    assert r.exit_code == 127 and r.error
    with pytest.raises(banger.CommandError):
        sb.exec(["false"]).check()
    with pytest.raises(banger.ExecTimeoutError) as ei:
        sb.exec(["sh", "-c", "echo begun; sleep 60"], timeout=3)
    assert ei.value.partial is not None and ei.value.partial.stdout == b"begun\n"
    # The agent kills the command when the connection closes.
    count = "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -cx 60 || true"
    for _ in range(40):
        r = sb.exec(["sh", "-c", count])
        if r.stdout == b"0\n":
            break
        time.sleep(0.5)
    assert r.stdout == b"0\n", "sleep 60 still runs after the timeout"


def test_errors_carry_codes(sb: banger.Sandbox) -> None:
    c = banger.Client()
    with pytest.raises(banger.NotFoundError) as ei:
        c.get("no-such-vm-xyz")
    assert ei.value.code == "not_found" and ei.value.op_id
    with pytest.raises(banger.NotFoundError):
        c.exec("no-such-vm-xyz", ["true"])


def test_files(sb: banger.Sandbox) -> None:
    f = sb.files
    f.mkdir("/root/sdk/a/b", mode=0o750, parents=True)
    f.write("/root/sdk/a/b/x.txt", b"hello\n")
    assert f.read("/root/sdk/a/b/x.txt") == b"hello\n"
    st = f.stat("/root/sdk/a/b/x.txt")
    assert (st.type, st.size, st.mode) == ("file", 6, 0o644)
    f.write("/root/sdk/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert sb.exec(["/root/sdk/run.sh"]).stdout == b"ran\n"
    assert f.stat("/root/sdk/a/b").mode == 0o750
    names = {e.name: e for e in f.list("/root/sdk").entries}
    assert names["a"].type == "dir" and names["run.sh"].mode == 0o755
    # Files made by commands are seen, and large ones go both ways intact.
    sb.exec(["sh", "-c", "head -c 5000000 /dev/urandom > /root/sdk/big; ln -s /etc/hostname /root/sdk/link"]).check()
    data = f.read("/root/sdk/big")
    assert len(data) == 5000000
    f.write("/root/sdk/big2", data)
    assert sb.exec(["cmp", "/root/sdk/big", "/root/sdk/big2"]).ok
    assert f.stat("/root/sdk/link").type == "symlink" and f.stat("/root/sdk/link").target == "/etc/hostname"
    with pytest.raises(banger.LimitExceededError):
        f.read("/root/sdk/big", max_bytes=1000)
    with pytest.raises(banger.NotFoundError):
        f.read("/root/sdk/missing")
    f.remove("/root/sdk/a/b/x.txt")
    assert not f.exists("/root/sdk/a/b/x.txt")
    f.remove("/root/sdk", recursive=True)
    assert not f.exists("/root/sdk")


def test_workspace_prepare_and_export(sb: banger.Sandbox, tmp_path: Any) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    git("init", "-q")
    (tmp_path / "hello.txt").write_text("hello\n")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    ws = sb.prepare_workspace(str(tmp_path))
    assert ws.files == 1 and ws.head
    assert sb.files.read(banger.GUEST_REPO_DIR + "/hello.txt") == b"hello\n"
    assert sb.exec(["git", "status", "--porcelain"], cwd=banger.GUEST_REPO_DIR).check().stdout == b""
    sb.exec(["sh", "-c", "echo more >> hello.txt"], cwd=banger.GUEST_REPO_DIR).check()
    patch = sb.export_workspace()
    assert b"+more" in patch
    subprocess.run(["git", "-C", str(tmp_path), "apply", "-"], input=patch, check=True)
    assert (tmp_path / "hello.txt").read_text() == "hello\nmore\n"


def test_sessions(sb: banger.Sandbox) -> None:
    s = sb.start_session(["sh", "-c", "echo started; sleep 300"], session="pysdk")
    assert s.name == "pysdk" and s.state == "running"
    assert "pysdk" in [x.name for x in sb.sessions()]
    for _ in range(40):
        if sb.session_logs("pysdk").output == b"started\n":
            break
        time.sleep(0.5)
    assert sb.session_logs("pysdk").output == b"started\n"
    st = sb.stop_session("pysdk")
    assert st.state == "exited"
    assert sb.get_session("pysdk").state == "exited"
    done = sb.start_session("echo bye; exit 4", session="pysdk-done")
    lg = sb.session_logs(done.name, follow=True, timeout=120)
    assert lg.output == b"bye\n" and lg.exit_code == 4
