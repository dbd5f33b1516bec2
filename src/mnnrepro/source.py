"""MNN source resolution: an explicit directory, a cached tree, or a shallow clone of a ref.

Order: ``--source DIR`` (or MNNREPRO_SOURCE) -> ``<cache>/src/<ref>`` -> shallow clone of ``ref`` from
the configured git URL into that cache directory. ``import_from_git`` fills the cache from any local git
repository (a bare mirror included), which is how machines without network access get a tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, SourceError

PROVENANCE = ".mnnrepro-source.json"
# Files whose absence means "this is not an MNN tree the suite can build".
REQUIRED = (
    "CMakeLists.txt",
    "include/MNN/MNNDefine.h",
    "express/RuntimeAttr.hpp",
    "tools/train/source/optimizer/SGD.cpp",
    "source/backend/vulkan/CMakeLists.txt",
)
# A ref is a tag, branch or commit; never an option, a path escape or shell syntax.
_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9][A-Za-z0-9._/+-]{0,99}(?<![./])")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


def validate_ref(ref: str) -> str:
    if not _REF.fullmatch(ref) or ref.endswith(".lock"):
        raise ConfigError(
            f"{ref!r} is not a valid git ref name",
            hint="use a tag (3.3.0), a branch, or a commit id (47027e10); letters, digits, '.', '_', '-', '/', '+'",
        )
    return ref


@dataclass(frozen=True)
class SourceTree:
    path: Path
    ref: str
    commit: str | None
    origin: str  # "explicit" | "cache" | "clone" | "import"
    missing: tuple[str, ...] = ()  # files the snapshot it came from did not have

    @property
    def version(self) -> str | None:
        """MNN's own version (include/MNN/MNNDefine.h), e.g. "3.3.0"; None when the header does not say."""
        return mnn_version(self.path)

    def describe(self) -> str:
        commit = self.commit[:12] if self.commit else "unknown commit"
        return f"MNN {self.ref} ({commit}) from {self.origin}: {self.path}"


def mnn_version(path: Path) -> str | None:
    try:
        text = (path / "include" / "MNN" / "MNNDefine.h").read_text(errors="replace")
    except OSError:
        return None
    parts = [re.search(rf"#define\s+MNN_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts if m) if all(parts) else None


def check_tree(path: Path) -> None:
    if not path.is_dir():
        raise SourceError(f"{path} is not a directory", hint="pass --source pointing at an MNN checkout")
    absent = [rel for rel in REQUIRED if not (path / rel).is_file()]
    if absent:
        raise SourceError(
            f"{path} is not a usable MNN source tree (missing: {', '.join(absent)})",
            hint="point --source at the top of an MNN checkout of 47027e10 or later",
        )


def read_provenance(path: Path) -> dict[str, object]:
    file = path / PROVENANCE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _tree(path: Path, ref: str, origin: str) -> SourceTree:
    check_tree(path)
    prov = read_provenance(path)
    commit = prov.get("commit")
    missing = prov.get("missing")
    listed = tuple(str(m) for m in missing) if isinstance(missing, list) else ()
    return SourceTree(path, str(prov.get("ref") or ref), str(commit) if commit else None, origin, listed)


def resolve(
    ref: str,
    *,
    source: Path | None,
    cache_dir: Path,
    git_url: str,
    allow_clone: bool = True,
    pinned_commit: str | None = None,
) -> SourceTree:
    """``pinned_commit``: the full commit fixtures/matrix.toml pins for ``ref``; a short id cannot be fetched
    shallowly, so a clone of ``47027e10`` fetches the pinned 40-digit commit and checks it matches."""
    validate_ref(ref)
    if source is not None:
        return _tree(source.expanduser().resolve(), ref, "explicit")
    cached = cache_dir / "src" / ref
    if cached.exists():
        return _tree(cached, ref, "cache")
    if not allow_clone:
        raise SourceError(
            f"no MNN source for {ref}: nothing at {cached} and cloning is off",
            hint=f"pass --source DIR, or run: python -m mnnrepro source fetch --ref {ref}",
        )
    return clone(ref, git_url, cached, fetch=pinned_commit if pinned_commit and _SHA.match(ref) else None)


def _git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None:
        raise SourceError("git is not installed", hint="install git, or pass --source DIR")
    return subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True)


def clone(ref: str, git_url: str, dest: Path, *, fetch: str | None = None) -> SourceTree:
    """Shallow-clone ``ref`` (tag, branch or full commit id) into ``dest``, atomically. ``fetch`` names what to
    fetch instead (the full commit a short ``ref`` abbreviates); the result must start with ``ref``."""
    validate_ref(ref)
    if fetch is not None:
        validate_ref(fetch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".clone-{ref.replace('/', '_')}-", dir=dest.parent))
    try:
        steps = [
            ["init", "-q", str(tmp)],
            ["-C", str(tmp), "fetch", "-q", "--depth", "1", "--", git_url, ref],
            ["-C", str(tmp), "checkout", "-q", "FETCH_HEAD"],
        ]
        for args in steps:
            res = _git(args)
            if res.returncode != 0:
                tail = "\n    ".join(res.stderr.strip().splitlines()[-5:])
                raise SourceError(
                    f"could not fetch ref {ref!r} from {git_url}:\n    {tail}",
                    hint="check the ref exists upstream (short commit ids cannot be fetched shallowly: give all "
                    "40 hex digits), set --git-url to a reachable mirror, or pass --source DIR",
                )
        commit = _git(["-C", str(tmp), "rev-parse", "HEAD"]).stdout.strip()
        if fetch is not None and not commit.startswith(ref):
            raise SourceError(
                f"fetched {fetch} for {ref!r} but got commit {commit}, which is not {ref}",
                hint="fix the pinned commit for this ref in fixtures/matrix.toml",
            )
        shutil.rmtree(tmp / ".git")
        (tmp / PROVENANCE).write_text(json.dumps({"ref": ref, "commit": commit, "origin": git_url}, indent=1))
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _tree(dest, ref, "clone")


def import_from_git(git_dir: Path, ref: str, cache_dir: Path, *, force: bool = False) -> SourceTree:
    """Export ``ref`` from a local git repository (bare or not) into the source cache.

    Blobs that the repository does not have (partial snapshots, LFS-less mirrors) are left out and listed
    in the provenance file, so a build that needs one can say so instead of failing obscurely.
    """
    validate_ref(ref)
    res = _git(["--git-dir", str(_git_dir(git_dir)), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"])
    if res.returncode != 0:
        raise SourceError(
            f"ref {ref!r} is not in the repository at {git_dir}",
            hint="git -C DIR tag / git -C DIR log show what it has",
        )
    commit = res.stdout.strip()
    gd = str(_git_dir(git_dir))
    listing = _git(["--git-dir", gd, "ls-tree", "-r", "-z", commit]).stdout.split("\0")
    blobs = [(entry.split("\t", 1)[1], entry.split()[2]) for entry in listing if "\t" in entry and " blob " in entry]
    check = subprocess.run(
        ["git", "--git-dir", gd, "cat-file", "--batch-check"],
        text=True,
        capture_output=True,
        input="".join(f"{sha}\n" for _, sha in blobs),
    )
    missing = [
        path for (path, _), line in zip(blobs, check.stdout.splitlines(), strict=True) if line.endswith(" missing")
    ]
    dest = cache_dir / "src" / ref
    if dest.exists():
        if not force:
            raise SourceError(f"{dest} already exists", hint="pass --force to replace it")
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".import-{ref.replace('/', '_')}-", dir=dest.parent))
    try:
        args = ["--git-dir", gd, "archive", "--format=tar", commit, "--", "."]
        args += [f":(exclude,literal){path}" for path in missing]
        archive = subprocess.run(["git", *args], capture_output=True)
        if archive.returncode != 0:
            raise SourceError(f"git archive of {ref} failed: {archive.stderr.decode(errors='replace')[-500:]}")
        tar_path = tmp / ".archive.tar"
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        tar_path.unlink()
        prov = {"ref": ref, "commit": commit, "origin": f"import:{git_dir}", "missing": missing}
        (tmp / PROVENANCE).write_text(json.dumps(prov, indent=1))
        check_tree(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _tree(dest, ref, "import")


def _git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").is_dir() else path


def content_key(tree: Path, cache_dir: Path) -> str:
    """sha256 of every file (path and bytes) in the tree; memoised by a cheap stat fingerprint."""
    entries = []
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            full = Path(root, name)
            rel = full.relative_to(tree).as_posix()
            if rel == PROVENANCE:
                continue
            st = full.lstat()
            entries.append((rel, st.st_size, st.st_mtime_ns, full))
    quick = hashlib.sha256(repr([(r, s, m) for r, s, m, _ in entries]).encode() + str(tree).encode()).hexdigest()
    memo = cache_dir / "src-hashes" / quick
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for rel, _, _, full in entries:
        digest.update(rel.encode() + b"\0")
        if full.is_symlink():
            digest.update(b"link:" + os.readlink(full).encode())
        else:
            with open(full, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    key = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(key + "\n")
    return key
