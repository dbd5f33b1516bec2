"""MNN source resolution: an explicit directory, a cached tree, or a shallow clone of a ref.

Order: ``--source DIR`` (or MNNREPRO_SOURCE) -> ``<cache>/src/<ref>`` -> shallow clone of ``ref`` from
the configured git URL into that cache directory. ``import_from_git`` fills the cache from any local git
repository (a bare mirror included), which is how machines without network access get a tree.

The cache is shared by concurrent sessions: each ref has a lock (``cache.source_lock``); a new tree is made
aside in a temporary directory beside the entry, validated (check_tree and provenance), then swapped in
(old aside, new in, old deleted), so a failed or interrupted replacement keeps the old tree and a half
clone never appears under ``src/``. Every git call has a time limit; network steps are retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import cache, shaders
from .errors import ConfigError, SourceError
from .runner import CommandResult, host_command

PROVENANCE = cache.PROVENANCE
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

# Time limits (seconds) of git calls. A fetch of one MNN commit is ~100 MB: generous on a slow link, but a
# server that accepts and never answers is given up on instead of waited out. Tests shorten them.
NETWORK_TIMEOUT_S = 600.0
NETWORK_RETRIES = 2  # further attempts of a failed or timed-out fetch (runner.BACKOFF_S apart, doubling)
LOCAL_TIMEOUT_S = 60.0  # rev-parse, ls-tree, cat-file, init
BULK_TIMEOUT_S = 600.0  # git archive / checkout: local, but they write the whole tree (~600 MB for MNN)
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # never wait on a password prompt; English messages
# Fetch failures another attempt cannot fix.
_PERMANENT = re.compile(
    r"couldn't find remote ref|not our ref|unadvertised object|repository not found|"
    r"does not appear to be a git repository|authentication failed|invalid refspec",
    re.IGNORECASE,
)


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


def safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract a `git archive` tar: regular files, directories and links that stay inside ``dest``. The
    "data" filter where Python has it (3.11.4+); on older ones (Debian 12 ships 3.11.2) the same rules checked
    here, member by member."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not target.is_relative_to(root) or not (member.isfile() or member.isdir() or member.issym()):
            raise SourceError(f"refusing archive member {member.name!r} (outside the tree or not a file)")
        if member.issym():
            link = (target.parent / member.linkname).resolve()
            if os.path.isabs(member.linkname) or not link.is_relative_to(root):
                raise SourceError(f"refusing symlink {member.name!r} -> {member.linkname!r} (outside the tree)")
        if member.isfile():
            member.mode &= 0o755  # no setuid, no group/world write
    tar.extractall(dest)  # every member checked above


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


def generated_files(path: Path) -> list[str]:
    """The files of a cached tree that the suite generated when it entered the cache (shaders.py)."""
    made = read_provenance(path).get("generated")
    return [str(g.get("file")) for g in made if isinstance(g, dict)] if isinstance(made, list) else []


def _tree(path: Path, ref: str, origin: str) -> SourceTree:
    check_tree(path)
    prov = read_provenance(path)
    commit = prov.get("commit") or (checkout_commit(path) if origin == "explicit" else None)
    missing = prov.get("missing")
    listed = tuple(str(m) for m in missing) if isinstance(missing, list) else ()
    return SourceTree(path, str(prov.get("ref") or ref), str(commit) if commit else None, origin, listed)


def checkout_commit(path: Path) -> str | None:
    """The commit of an explicit tree (``--source``) that is the top of a git checkout with no tracked file changed
    (the reusable action's ``mnn-tree: .``); None for a directory inside another repository (that HEAD is not the
    tree's), a tree with local changes (its content is no commit), or no git at all."""
    if not (path / ".git").exists() or shutil.which("git") is None:
        return None
    where = ["-c", f"safe.directory={path}", "-C", str(path)]
    head = _git([*where, "rev-parse", "--verify", "HEAD"], what=f"git rev-parse HEAD in {path}", check=False)
    if head.returncode != 0:
        return None
    changed = _git([*where, "status", "--porcelain", "--untracked-files=no"], what=f"git status in {path}", check=False)
    return head.stdout.strip() if changed.returncode == 0 and not changed.stdout.strip() else None


def resolve(
    ref: str,
    *,
    source: Path | None,
    cache_dir: Path,
    git_url: str,
    allow_clone: bool = True,
    pinned_commit: str | None = None,
    say: Callable[[str], None] | None = None,
) -> SourceTree:
    """``pinned_commit``: the full commit fixtures/matrix.toml pins for ``ref``; a short id cannot be fetched
    shallowly, so a clone of ``47027e10`` fetches the pinned 40-digit commit and checks it matches."""
    validate_ref(ref)
    if source is not None:
        return _tree(source.expanduser().resolve(), ref, "explicit")
    cached = cache_dir / "src" / ref
    cache.use_source(cache_dir, ref)  # .last-used, and `cache prune` leaves it alone while this process runs
    if cached.exists():
        return _tree(cached, ref, "cache")
    if not allow_clone:
        raise SourceError(
            f"no MNN source for {ref}: nothing at {cached} and cloning is off",
            hint=f"pass --source DIR, or run: python -m mnnrepro source fetch --ref {ref}",
        )
    return clone(ref, git_url, cached, fetch=pinned_commit if pinned_commit and _SHA.match(ref) else None, say=say)


Say = Callable[[str], None]


def _git(
    args: list[str],
    *,
    what: str,
    timeout_s: float | None = None,
    retries: int = 0,
    check: bool = True,
    input: str | None = None,
    hint: str = "",
    say: Say | None = None,
) -> CommandResult:
    if shutil.which("git") is None:
        raise SourceError("git is not installed", hint="install git, or pass --source DIR")
    return host_command(
        ["git", *args],
        timeout_s=LOCAL_TIMEOUT_S if timeout_s is None else timeout_s,
        what=what,
        env=_GIT_ENV,
        retries=retries,
        say=say,
        check=check,
        input=input,
        hint=hint,
        error=SourceError,
        retry_if=lambda _rc, output: not _PERMANENT.search(output),
    )


def _cache_root(dest: Path, ref: str) -> Path | None:
    """The cache directory of ``dest`` when it is ``<cache>/src/<ref>`` (always, from the CLI and resolve)."""
    parts = ("src", *ref.split("/"))
    return dest.parents[len(parts) - 1] if dest.parts[-len(parts) :] == parts else None


@contextmanager
def _entry_lock(dest: Path, ref: str, say: Say | None) -> Iterator[None]:
    """Exclusive hold on one source-cache entry: concurrent imports and clones of a ref take turns."""
    root = _cache_root(dest, ref)
    lock = cache.source_lock(root, ref) if root is not None else dest.parent / f".{dest.name}.lock"
    with cache.exclusive(lock, say=say, what=f"writing the source tree of {ref}"):
        yield


def _staging(dest: Path, kind: str) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{kind}-{dest.name}-", dir=dest.parent))


def _install(new: Path, dest: Path, ref: str) -> None:
    """Swap the validated tree ``new`` in at ``dest``: the old one aside, the new one in, the old one deleted.
    On any failure before the new one is in place, the old one is put back."""
    kept = "; the cached tree is kept" if dest.exists() else ""
    absent = [rel for rel in REQUIRED if not (new / rel).is_file()]
    if absent:
        raise SourceError(
            f"{ref} is not a usable MNN source tree (missing: {', '.join(absent)}){kept}",
            hint="pick a commit of 47027e10 or later, or pass --source pointing at an MNN checkout",
        )
    prov = read_provenance(new)
    if prov.get("ref") != ref or not isinstance(prov.get("commit"), str) or not prov.get("commit"):
        raise SourceError(f"the new tree of {ref} has no valid provenance ({PROVENANCE}){kept}")
    old: Path | None = None
    try:
        if dest.exists() or dest.is_symlink():
            old = dest.with_name(f".old-{dest.name}-{uuid.uuid4().hex[:8]}")
            os.rename(dest, old)
        try:
            os.rename(new, dest)
        except BaseException:
            if old is not None:
                os.rename(old, dest)
            raise
    except OSError as exc:
        raise SourceError(
            f"could not put the new tree of {ref} in place at {dest} ({exc}); the old one is kept",
            hint="check the cache directory's permissions and free space, then run the command again",
        ) from exc
    if old is not None:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


def clone(
    ref: str, git_url: str, dest: Path, *, fetch: str | None = None, force: bool = False, say: Say | None = None
) -> SourceTree:
    """Shallow-clone ``ref`` (tag, branch or full commit id) into ``dest``, atomically. ``fetch`` names what to
    fetch instead (the full commit a short ``ref`` abbreviates); the result must start with ``ref``.

    Under the ref's lock: when another process put a tree there meanwhile, that tree is returned (``force``
    replaces it). The fetch has NETWORK_TIMEOUT_S and NETWORK_RETRIES; a failure leaves ``dest`` as it was."""
    validate_ref(ref)
    if fetch is not None:
        validate_ref(fetch)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(dest, ref, say):
        if dest.exists() and not force:
            return _tree(dest, ref, "cache")
        tmp = _staging(dest, "clone")
        try:
            _git(["init", "-q", str(tmp)], what=f"git init of a staging directory for {ref}")
            _git(
                ["-C", str(tmp), "fetch", "-q", "--depth", "1", "--", git_url, fetch or ref],
                what=f"could not fetch ref {ref!r} from {git_url}",
                timeout_s=NETWORK_TIMEOUT_S,
                retries=NETWORK_RETRIES,
                say=say,
                hint="check the ref exists upstream (short commit ids cannot be fetched shallowly: give all "
                "40 hex digits) and the server answers, set --git-url to a reachable mirror, or pass --source DIR",
            )
            _git(
                ["-C", str(tmp), "checkout", "-q", "FETCH_HEAD"],
                what=f"could not check out {ref!r}",
                timeout_s=BULK_TIMEOUT_S,
            )
            commit = _git(["-C", str(tmp), "rev-parse", "HEAD"], what=f"git rev-parse of {ref}").stdout.strip()
            if fetch is not None and not commit.startswith(ref):
                raise SourceError(
                    f"fetched {fetch} for {ref!r} but got commit {commit}, which is not {ref}",
                    hint="fix the pinned commit for this ref in fixtures/matrix.toml",
                )
            shutil.rmtree(tmp / ".git")
            prov: dict[str, object] = {"ref": ref, "commit": commit, "origin": git_url}
            prov.update(_generate(tmp, _cache_root(dest, ref) or dest.parent, say))
            (tmp / PROVENANCE).write_text(json.dumps(prov, indent=1))
            _install(tmp, dest, ref)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _tree(dest, ref, "clone")


def import_from_git(
    git_dir: Path, ref: str, cache_dir: Path, *, force: bool = False, say: Say | None = None
) -> SourceTree:
    """Export ``ref`` from a local git repository (bare or not) into the source cache.

    Blobs that the repository does not have (partial snapshots, LFS-less mirrors) are left out and listed
    in the provenance file, so a build that needs one can say so instead of failing obscurely. ``force``
    replaces a cached tree, but only with a valid one: until the new tree is in place the old one stays.
    """
    validate_ref(ref)
    gd = str(_git_dir(git_dir))
    res = _git(
        ["--git-dir", gd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        what=f"git rev-parse of {ref} in {git_dir}",
        check=False,
    )
    if res.returncode != 0:
        raise SourceError(
            f"ref {ref!r} is not in the repository at {git_dir}",
            hint="git -C DIR tag / git -C DIR log show what it has",
        )
    commit = res.stdout.strip()
    dest = cache_dir / "src" / ref
    if dest.exists() and not force:
        same = read_provenance(dest).get("commit") == commit
        if same and shaders.needed(dest):
            if say:
                say(f"{ref} ({commit[:12]}) is in the source cache without {shaders.GENERATED}: importing it again")
            force = True
        elif same:  # the same commit again: nothing to do
            if say:
                say(f"{ref} ({commit[:12]}) is already in the source cache: {dest}")
            return _tree(dest, ref, "import")
        else:
            raise SourceError(
                f"{dest} already exists and is not {ref} = {commit[:12]} of {git_dir}",
                hint="pass --force to replace it",
            )
    listing = _git(["--git-dir", gd, "ls-tree", "-r", "-z", commit], what=f"git ls-tree of {ref}").stdout
    blobs = [(e.split("\t", 1)[1], e.split()[2]) for e in listing.split("\0") if "\t" in e and " blob " in e]
    check = _git(
        ["--git-dir", gd, "cat-file", "--batch-check"],
        what=f"git cat-file of {ref}'s blobs",
        input="".join(f"{sha}\n" for _, sha in blobs),
    )
    missing = [
        path for (path, _), line in zip(blobs, check.stdout.splitlines(), strict=True) if line.endswith(" missing")
    ]
    with _entry_lock(dest, ref, say):
        if dest.exists() and not force:  # another process imported it meanwhile
            if read_provenance(dest).get("commit") == commit:
                return _tree(dest, ref, "import")
            raise SourceError(f"{dest} already exists", hint="pass --force to replace it")
        tmp = _staging(dest, "import")
        try:
            tar_path = tmp / ".archive.tar"
            args = ["--git-dir", gd, "archive", "--format=tar", f"--output={tar_path}", commit, "--", "."]
            args += [f":(exclude,literal){path}" for path in missing]
            _git(args, what=f"git archive of {ref}", timeout_s=BULK_TIMEOUT_S)
            with tarfile.open(tar_path) as tar:
                safe_extractall(tar, tmp)
            tar_path.unlink()
            prov: dict[str, object] = {"ref": ref, "commit": commit, "origin": f"import:{git_dir}", "missing": missing}
            prov.update(_generate(tmp, cache_dir, say))
            (tmp / PROVENANCE).write_text(json.dumps(prov, indent=1))
            _install(tmp, dest, ref)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _tree(dest, ref, "import")


def _generate(tree: Path, cache_dir: Path, say: Say | None) -> dict[str, object]:
    """Generated sources the tree lacks (shaders.py), made before the tree enters the cache: for provenance."""
    if not shaders.needed(tree):
        return {}
    return {"generated": [shaders.generate(tree, cache_dir, say or print)]}


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
            if rel in (PROVENANCE, cache.LAST_USED):
                continue
            st = full.lstat()
            entries.append((rel, st.st_size, st.st_mtime_ns, full))
    quick = hashlib.sha256(repr([(r, s, m) for r, s, m, _ in entries]).encode() + str(tree).encode()).hexdigest()
    memo = cache_dir / "src-hashes" / quick
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if re.fullmatch(r"[0-9a-f]{64}", known):
        return known
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
    # Written aside and renamed: a concurrent reader (several builders of one tree) never sees half a memo.
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(key + "\n")
    os.replace(tmp, memo)
    return key
