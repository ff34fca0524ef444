"""Workspace prepare on the host side, as internal/workspace does it: the
git repository's tracked files (optionally untracked, never ignored ones)
and a minimal ``.git`` at the same HEAD, written as one tar stream."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO, List, Optional

from . import errors

MODE_COPY = "copy"
MODE_FULL_COPY = "full_copy"

#: A git command's answer is capped (a listing of a huge repository is far below).
_GIT_MAX = 256 << 20


def _git(cwd: str, *args: str, stdin: Optional[bytes] = None) -> bytes:
    try:
        p = subprocess.run(["git", "-C", cwd, *args], input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise errors.BadRequestError("git is not installed on this host") from None
    if p.returncode != 0:
        raise errors.BadRequestError(f"git {' '.join(args)}: {p.stderr.decode('utf-8', 'replace').strip()}")
    if len(p.stdout) > _GIT_MAX:
        raise errors.LimitExceededError(f"git {args[0]}: answer over {_GIT_MAX} bytes")
    return p.stdout


@dataclass
class Plan:
    """What a prepare sends (see internal/workspace.Plan)."""

    root: str
    mode: str
    include_untracked: bool
    head: str = ""
    branch: str = ""
    files: List[str] = field(default_factory=list)
    submodules: List[str] = field(default_factory=list)
    total_bytes: int = 0

    def params(self) -> dict:
        """The WorkspaceParams body of the API call."""
        p = {"path": self.root, "mode": self.mode, "files": len(self.files), "bytes": self.total_bytes}
        if self.include_untracked:
            p["include_untracked"] = True
        if self.head:
            p["head"] = self.head
        return p


def inspect(path: str, include_untracked: bool = False, full_copy: bool = False) -> Plan:
    """The plan for the git repository containing path."""
    ab = os.path.abspath(path)
    if not os.path.isdir(ab):
        raise errors.BadRequestError(f"{path} is not a directory")
    try:
        top = _git(ab, "rev-parse", "--show-toplevel").decode().strip()
    except errors.BadRequestError:
        raise errors.BadRequestError(f"{path} is not inside a git repository") from None
    plan = Plan(root=top, mode=MODE_FULL_COPY if full_copy else MODE_COPY, include_untracked=include_untracked)
    try:
        plan.head = _git(top, "rev-parse", "--verify", "--quiet", "HEAD").decode().strip()
    except errors.BadRequestError:
        pass
    try:
        plan.branch = _git(top, "symbolic-ref", "--quiet", "--short", "HEAD").decode().strip()
    except errors.BadRequestError:
        pass
    args = ["ls-files", "-z", "--cached", "--stage"]
    if full_copy:
        args.append("--recurse-submodules")
    seen = set()
    names: List[str] = []
    for rec in _git(top, *args).split(b"\0"):
        meta, sep, raw = rec.partition(b"\t")
        if not sep:
            continue
        name = os.fsdecode(raw)
        if meta.startswith(b"160000 "):
            plan.submodules.append(name)
        elif name not in seen:
            seen.add(name)
            names.append(name)
    if include_untracked:
        for raw in _git(top, "ls-files", "-z", "--others", "--exclude-standard").split(b"\0"):
            name = os.fsdecode(raw)
            if name and name not in seen:
                seen.add(name)
                names.append(name)
    for name in sorted(names):
        try:
            st = os.lstat(os.path.join(top, name))
        except FileNotFoundError:
            continue  # tracked but deleted in the work tree: not sent
        if stat.S_ISREG(st.st_mode):
            plan.total_bytes += st.st_size
        elif not stat.S_ISLNK(st.st_mode):
            continue
        plan.files.append(name)
    return plan


def write_tar(plan: Plan, w: BinaryIO) -> None:
    """The plan's files, then a minimal .git (a shallow, uncompressed pack
    of HEAD's objects, HEAD on the host's branch, an index of HEAD's tree),
    as a tar stream into w."""
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tw:
        for d in plan.submodules:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tw.addfile(ti)
        for name in plan.files:
            _add(tw, os.path.join(plan.root, name), name)
        tmp = tempfile.mkdtemp(prefix="banger-ws-")
        try:
            git_dir = _minimal_git_dir(plan, tmp)
            for dirpath, dirnames, filenames in os.walk(git_dir):
                dirnames.sort()
                rel = os.path.relpath(dirpath, git_dir)
                arc = ".git" if rel == "." else ".git/" + rel.replace(os.sep, "/")
                ti = tarfile.TarInfo(arc)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tw.addfile(ti)
                for fn in sorted(filenames):
                    _add(tw, os.path.join(dirpath, fn), arc + "/" + fn)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _add(tw: tarfile.TarFile, path: str, arcname: str) -> None:
    ti = tw.gettarinfo(path, arcname)  # lstat: a symlink is kept as one
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mode &= 0o7777
    if ti.issym():
        tw.addfile(ti)
    elif ti.isreg():
        with open(path, "rb") as f:
            tw.addfile(ti, f)  # a file that shrinks mid-copy is an error


def _minimal_git_dir(plan: Plan, tmp: str) -> str:
    repo = os.path.join(tmp, "repo")
    _git(tmp, "init", "--quiet", "--initial-branch=" + (plan.branch or "main"), repo)
    git_dir = os.path.join(repo, ".git")
    shutil.rmtree(os.path.join(git_dir, "hooks"), ignore_errors=True)
    if not plan.head:
        return git_dir
    objects = _git(plan.root, "rev-list", "--objects", "--no-walk", plan.head)
    _git(plan.root, "-c", "pack.compression=0", "pack-objects", "--quiet", "--window=0", "--depth=0",
         os.path.join(git_dir, "objects", "pack", "pack"), stdin=objects)
    with open(os.path.join(git_dir, "shallow"), "w") as f:
        f.write(plan.head + "\n")
    if plan.branch:
        _git(repo, "update-ref", "refs/heads/" + plan.branch, plan.head)
    else:
        _git(repo, "update-ref", "--no-deref", "HEAD", plan.head)
    _git(repo, "read-tree", "HEAD")
    return git_dir
