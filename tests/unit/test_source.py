"""source: ref validation, tree checks, content keys, import from a local git repository, resolution order."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import cache, runner, source
from mnnrepro.errors import ConfigError, HostCommandError, SourceError

MakeTree = Callable[[Path], Path]


def rev_parse(repo: Path, rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True, check=True
    ).stdout.strip()


# -- validate_ref --------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["3.3.0", "47027e10", "feature/x", "v1.2+b", "a", "release_3-x/y.z"])
def test_valid_refs_are_accepted(ref: str) -> None:
    assert source.validate_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=x",
        "-x",
        "a..b",
        "$(rm -rf /)",
        "a b",
        "ref;ls",
        "",
        "x.lock",
        "feature/",
        "v1.",
        "../etc",
        "/abs",
        "a//b",
        "a`b`",
        "x" * 101,
    ],
)
def test_invalid_refs_are_rejected(ref: str) -> None:
    with pytest.raises(ConfigError, match="not a valid git ref"):
        source.validate_ref(ref)


def test_ref_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(ConfigError):
        source.validate_ref("3.3.0\n")


# -- check_tree ----------------------------------------------------------------------------------


def test_check_tree_accepts_a_tree_with_every_required_file(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    source.check_tree(make_mnn_tree(tmp_path))  # no exception


@pytest.mark.parametrize("missing", source.REQUIRED)
def test_check_tree_names_the_missing_file(tmp_path: Path, make_mnn_tree: MakeTree, missing: str) -> None:
    (make_mnn_tree(tmp_path) / missing).unlink()
    with pytest.raises(SourceError, match="not a usable MNN source tree") as info:
        source.check_tree(tmp_path)
    assert missing in info.value.message
    assert "--source" in info.value.hint


def test_check_tree_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        source.check_tree(tmp_path / "nope")


def test_check_tree_rejects_a_directory_in_place_of_a_file(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    make_mnn_tree(tmp_path)
    (tmp_path / "CMakeLists.txt").unlink()
    (tmp_path / "CMakeLists.txt").mkdir()
    with pytest.raises(SourceError, match=r"CMakeLists\.txt"):
        source.check_tree(tmp_path)


# -- content_key ---------------------------------------------------------------------------------


def small_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(64)))
    return root


def test_content_key_is_stable_and_memoised(tmp_path: Path) -> None:
    tree, cache = small_tree(tmp_path / "tree"), tmp_path / "cache"
    first = source.content_key(tree, cache)
    assert len(first) == 64 and int(first, 16) >= 0
    memos = list((cache / "src-hashes").iterdir())
    assert len(memos) == 1 and memos[0].read_text().strip() == first
    assert source.content_key(tree, cache) == first
    assert source.content_key(tree, tmp_path / "other-cache") == first  # computed afresh: same bytes, same key


def test_a_memo_caught_half_written_is_not_a_key(tmp_path: Path) -> None:
    # Several builders of one tree hash it at once: one may read the memo while another writes it.
    tree, cache = small_tree(tmp_path / "tree"), tmp_path / "cache"
    key = source.content_key(tree, cache)
    memo = next((cache / "src-hashes").iterdir())
    for partial in ("", key[:20]):
        memo.write_text(partial)
        assert source.content_key(tree, cache) == key
        assert memo.read_text().strip() == key  # written again, whole
    assert [p.name for p in (cache / "src-hashes").iterdir()] == [memo.name]  # no temporary file left


def test_content_key_changes_when_one_byte_changes(tmp_path: Path) -> None:
    tree, cache = small_tree(tmp_path / "tree"), tmp_path / "cache"
    before = source.content_key(tree, cache)
    target = tree / "sub" / "b.bin"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))  # same size
    # An edit at a later time than the first write (the stat fingerprint keys the memo).
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    after = source.content_key(tree, cache)
    assert after != before
    assert source.content_key(tree, tmp_path / "fresh") == after  # not a memo artefact: the content differs
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert source.content_key(tree, cache) == before  # same bytes again -> the original key


def test_content_key_changes_when_a_file_is_renamed(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "tree")
    before = source.content_key(tree, tmp_path / "c1")
    (tree / "a.txt").rename(tree / "c.txt")
    assert source.content_key(tree, tmp_path / "c2") != before


def test_content_key_ignores_provenance_and_git_metadata(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "tree")
    before = source.content_key(tree, tmp_path / "c1")
    (tree / source.PROVENANCE).write_text('{"commit": "abc"}')
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert source.content_key(tree, tmp_path / "c2") == before


# -- import_from_git -----------------------------------------------------------------------------


def test_import_from_git_exports_the_tagged_commit(tmp_path: Path, mnn_git_repo: Path) -> None:
    cache = tmp_path / "cache"
    tree = source.import_from_git(mnn_git_repo, "1.0", cache)
    tagged = rev_parse(mnn_git_repo, "1.0^{commit}")
    assert tree.path == cache / "src" / "1.0"
    assert (tree.ref, tree.commit, tree.origin, tree.missing) == ("1.0", tagged, "import", ())
    assert tagged != rev_parse(mnn_git_repo, "HEAD")
    assert "v1.0" in (tree.path / "CMakeLists.txt").read_text()  # the tag's content, not HEAD's
    assert not (tree.path / ".git").exists()
    prov = json.loads((tree.path / source.PROVENANCE).read_text())
    assert prov["commit"] == tagged and prov["ref"] == "1.0" and prov["missing"] == []
    source.check_tree(tree.path)
    assert [p.name for p in (cache / "src").iterdir()] == ["1.0"]  # no staging directory left behind


def test_import_from_a_bare_repository(tmp_path: Path, mnn_git_repo: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(mnn_git_repo), str(bare)], check=True)
    tree = source.import_from_git(bare, "1.0", tmp_path / "cache")
    assert tree.commit == rev_parse(mnn_git_repo, "1.0^{commit}")


def test_import_of_an_unknown_ref_raises(tmp_path: Path, mnn_git_repo: Path) -> None:
    with pytest.raises(SourceError, match=r"'2\.0' is not in the repository"):
        source.import_from_git(mnn_git_repo, "2.0", tmp_path / "cache")
    assert not (tmp_path / "cache" / "src" / "2.0").exists()


def test_import_refuses_an_invalid_ref_before_running_git(tmp_path: Path, mnn_git_repo: Path) -> None:
    with pytest.raises(ConfigError):
        source.import_from_git(mnn_git_repo, "--output=/tmp/x", tmp_path / "cache")


def test_import_into_an_existing_destination_needs_force(tmp_path: Path, mnn_git_repo: Path) -> None:
    cache = tmp_path / "cache"
    dest = cache / "src" / "1.0"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    with pytest.raises(SourceError, match="already exists") as info:
        source.import_from_git(mnn_git_repo, "1.0", cache)
    assert "--force" in info.value.hint
    assert (dest / "stale.txt").exists()  # untouched without force
    tree = source.import_from_git(mnn_git_repo, "1.0", cache, force=True)
    assert not (tree.path / "stale.txt").exists()
    source.check_tree(tree.path)


def test_import_of_a_commit_that_is_not_an_mnn_tree_fails_cleanly(tmp_path: Path, mnn_git_repo: Path) -> None:
    subprocess.run(["git", "-C", str(mnn_git_repo), "rm", "-q", source.REQUIRED[-1]], check=True)
    subprocess.run(["git", "-C", str(mnn_git_repo), "commit", "-q", "-m", "drop"], check=True)
    subprocess.run(["git", "-C", str(mnn_git_repo), "tag", "broken"], check=True)
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match="not a usable MNN source tree"):
        source.import_from_git(mnn_git_repo, "broken", cache)
    assert list((cache / "src").iterdir()) == []  # neither the destination nor a staging directory


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_without_cache_and_without_cloning_points_at_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cloning is off") as info:
        source.resolve("3.3.0", source=None, cache_dir=tmp_path, git_url="file:///nowhere", allow_clone=False)
    assert "--source" in info.value.hint
    assert info.value.exit_code == 3


def test_resolve_prefers_an_explicit_source(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    explicit = make_mnn_tree(tmp_path / "explicit")
    make_mnn_tree(tmp_path / "cache" / "src" / "3.3.0")
    tree = source.resolve("3.3.0", source=explicit, cache_dir=tmp_path / "cache", git_url="x", allow_clone=False)
    assert (tree.origin, tree.path, tree.commit) == ("explicit", explicit.resolve(), None)
    assert "unknown commit" in tree.describe()


def test_resolve_uses_the_cached_tree_and_its_provenance(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    cached = make_mnn_tree(tmp_path / "src" / "3.3.0")
    (cached / source.PROVENANCE).write_text(json.dumps({"ref": "3.3.0", "commit": "5047919a1ae5" + "0" * 28}))
    tree = source.resolve("3.3.0", source=None, cache_dir=tmp_path, git_url="x", allow_clone=False)
    assert (tree.origin, tree.path) == ("cache", cached)
    assert tree.commit is not None and tree.commit.startswith("5047919a1ae5")
    assert "5047919a1ae5" in tree.describe()


def test_resolve_rejects_an_invalid_ref(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        source.resolve("a;b", source=None, cache_dir=tmp_path, git_url="x", allow_clone=False)


def test_resolve_rejects_an_explicit_source_that_is_not_mnn(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="missing"):
        source.resolve("3.3.0", source=tmp_path, cache_dir=tmp_path / "c", git_url="x", allow_clone=False)


def test_clone_from_a_local_repository(tmp_path: Path, mnn_git_repo: Path) -> None:
    dest = tmp_path / "cache" / "src" / "1.0"
    tree = source.clone("1.0", f"file://{mnn_git_repo}", dest)
    assert (tree.origin, tree.path, tree.commit) == ("clone", dest, rev_parse(mnn_git_repo, "1.0^{commit}"))
    assert not (dest / ".git").exists()


def test_clone_of_an_unknown_ref_raises_and_leaves_nothing(tmp_path: Path, mnn_git_repo: Path) -> None:
    dest = tmp_path / "cache" / "src" / "9.9"
    with pytest.raises(SourceError, match=r"could not fetch ref '9\.9'"):
        source.clone("9.9", f"file://{mnn_git_repo}", dest)
    assert list(dest.parent.iterdir()) == []


# -- replacing a cached tree: validated first, swapped atomically, safe under concurrency -------------------


def retag(repo: Path, tag: str) -> str:
    """Move ``tag`` to a new commit whose tree is not an MNN tree (a required file removed)."""
    subprocess.run(["git", "-C", str(repo), "rm", "-q", source.REQUIRED[-1]], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "drop"], check=True)
    subprocess.run(["git", "-C", str(repo), "tag", "-f", tag], check=True, capture_output=True)
    return rev_parse(repo, "HEAD")


def test_import_force_with_an_invalid_new_tree_keeps_the_old_one(tmp_path: Path, mnn_git_repo: Path) -> None:
    cache_dir = tmp_path / "cache"
    old = source.import_from_git(mnn_git_repo, "1.0", cache_dir)
    assert retag(mnn_git_repo, "1.0") != old.commit
    with pytest.raises(SourceError, match="not a usable MNN source tree") as info:
        source.import_from_git(mnn_git_repo, "1.0", cache_dir, force=True)
    assert "the cached tree is kept" in info.value.message
    kept = source.resolve("1.0", source=None, cache_dir=cache_dir, git_url="x", allow_clone=False)
    assert kept.commit == old.commit and "v1.0" in (kept.path / "CMakeLists.txt").read_text()
    source.check_tree(kept.path)
    assert [p.name for p in (cache_dir / "src").iterdir()] == ["1.0"]  # no staging or set-aside directory


def test_a_swap_that_fails_midway_puts_the_old_tree_back(
    tmp_path: Path, mnn_git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    old = source.import_from_git(mnn_git_repo, "1.0", cache_dir)
    real = os.rename
    moved: list[str] = []

    def rename(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.startswith(".import-"):  # the new tree moving in: the old one is already aside
            raise OSError(28, "No space left on device")
        moved.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    (mnn_git_repo / "CMakeLists.txt").write_text("# new\n")
    subprocess.run(["git", "-C", str(mnn_git_repo), "commit", "-q", "-am", "three"], check=True)
    subprocess.run(["git", "-C", str(mnn_git_repo), "tag", "-f", "1.0"], check=True, capture_output=True)
    with pytest.raises(SourceError, match="the old one is kept"):
        source.import_from_git(mnn_git_repo, "1.0", cache_dir, force=True)
    assert moved[0].startswith(".old-1.0-") and moved[1] == "1.0"  # set aside, then put back
    monkeypatch.undo()
    assert source.read_provenance(cache_dir / "src" / "1.0")["commit"] == old.commit
    assert [p.name for p in (cache_dir / "src").iterdir()] == ["1.0"]


def _import_force(repo: str, cache_dir: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=60)
    try:
        tree = source.import_from_git(Path(repo), "1.0", Path(cache_dir), force=True)
        results.put(f"ok {tree.commit}")
    except BaseException as exc:  # anything at all is a failure of the test, reported by the parent
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("n", [8])
def test_concurrent_import_force_all_succeed_and_leave_one_valid_tree(
    tmp_path: Path, mnn_git_repo: Path, n: int
) -> None:
    cache_dir = tmp_path / "cache"
    source.import_from_git(mnn_git_repo, "1.0", cache_dir)  # each import replaces an existing tree
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_import_force, args=(str(mnn_git_repo), str(cache_dir), barrier, results)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    tagged = rev_parse(mnn_git_repo, "1.0^{commit}")
    assert outcomes == [f"ok {tagged}"] * n
    assert [p.exitcode for p in procs] == [0] * n
    dest = cache_dir / "src" / "1.0"
    source.check_tree(dest)
    assert source.read_provenance(dest)["commit"] == tagged
    assert [p.name for p in (cache_dir / "src").iterdir()] == ["1.0"]


def test_an_import_waits_while_another_process_writes_the_same_ref(tmp_path: Path, mnn_git_repo: Path) -> None:
    cache_dir = tmp_path / "cache"
    lock = cache.source_lock(cache_dir, "1.0")
    lock.parent.mkdir(parents=True)
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    said: list[str] = []
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(source.import_from_git(mnn_git_repo, "1.0", cache_dir, say=said.append))
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive() and outcome == []  # waiting, not writing beside the other process
        assert said == ["waiting for another mnnrepro process writing the source tree of 1.0 ..."]
        assert not (cache_dir / "src" / "1.0").exists()
    finally:
        holder.kill()
        holder.wait()
    worker.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], source.SourceTree)
    source.check_tree(cache_dir / "src" / "1.0")


# -- clone: time limits, retries, nothing half-made in the cache ------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 (ephemeral port) that accepts connections and never answers; stopped and
    its connections closed at teardown."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    srv.close()


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_clone_from_a_server_that_never_answers_times_out_and_leaves_nothing(
    tmp_path: Path,
    isolated_git: None,
    monkeypatch: pytest.MonkeyPatch,
    silent_server: tuple[int, list[socket.socket]],
    scheme: str,
) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(source, "NETWORK_TIMEOUT_S", 1.0)
    monkeypatch.setattr(source, "NETWORK_RETRIES", 1)
    monkeypatch.setattr(runner, "BACKOFF_S", 0.05)
    port, accepted = silent_server
    dest = tmp_path / "cache" / "src" / "3.3.0"
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"could not fetch ref '3\.3\.0'") as info:
        source.clone("3.3.0", f"{scheme}://127.0.0.1:{port}/MNN.git", dest, say=said.append)
    elapsed = time.monotonic() - t0
    assert "timed out after 1 s (2 attempts)" in info.value.message
    assert isinstance(info.value.__cause__, HostCommandError) and info.value.__cause__.timed_out
    assert len(said) == 1 and "attempt 2 of 2" in said[0]
    assert len(accepted) >= 2  # it did reach the server, twice: a hang, not a refused connection
    assert elapsed < 2 * (1.0 + runner.REAP_S)
    assert list(dest.parent.iterdir()) == []  # neither the tree nor a half clone


def test_clone_does_not_retry_an_unknown_ref(
    tmp_path: Path, mnn_git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "BACKOFF_S", 30.0)  # a retry would be seen as a 30 s wait
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="couldn't find remote ref"):
        source.clone("9.9", f"file://{mnn_git_repo}", tmp_path / "cache" / "src" / "9.9", say=said.append)
    assert said == [] and time.monotonic() - t0 < 20


def test_clone_of_a_short_commit_fetches_the_pinned_full_commit(tmp_path: Path, mnn_git_repo: Path) -> None:
    full = rev_parse(mnn_git_repo, "1.0^{commit}")
    tree = source.clone(full[:8], f"file://{mnn_git_repo}", tmp_path / "src" / full[:8], fetch=full)
    assert tree.commit == full and tree.origin == "clone"


def test_clone_returns_a_tree_another_process_already_made(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    dest = make_mnn_tree(tmp_path / "cache" / "src" / "3.3.0")
    tree = source.clone("3.3.0", "file:///nowhere/at/all", dest)  # no fetch: it would fail
    assert (tree.origin, tree.path) == ("cache", dest)


def test_clone_force_replaces_only_with_a_valid_tree(tmp_path: Path, mnn_git_repo: Path) -> None:
    dest = tmp_path / "cache" / "src" / "1.0"
    first = source.clone("1.0", f"file://{mnn_git_repo}", dest)
    retag(mnn_git_repo, "1.0")
    with pytest.raises(SourceError, match="the cached tree is kept"):
        source.clone("1.0", f"file://{mnn_git_repo}", dest, force=True)
    assert source.read_provenance(dest)["commit"] == first.commit
    assert [p.name for p in dest.parent.iterdir()] == ["1.0"]


def test_resolve_marks_the_cached_tree_used_without_changing_its_key(tmp_path: Path, make_mnn_tree: MakeTree) -> None:
    cached = make_mnn_tree(tmp_path / "src" / "3.3.0")
    key = source.content_key(cached, tmp_path / "h1")
    source.resolve("3.3.0", source=None, cache_dir=tmp_path, git_url="x", allow_clone=False)
    assert (cached / cache.LAST_USED).is_file()
    assert source.content_key(cached, tmp_path / "h2") == key
    with cache.exclusive(cache.source_use(tmp_path, "3.3.0"), wait=False) as free:
        assert not free  # held by this process: a prune skips the tree


@pytest.mark.parametrize("with_filter", [True, False])
def test_safe_extractall_refuses_members_outside_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_filter: bool
) -> None:
    """Debian 12's Python 3.11.2 has no tar extraction filters: the same rules are then checked by hand."""
    import io
    import tarfile

    from mnnrepro.errors import SourceError

    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def archive(*members: tuple[str, bytes | None, str]) -> tarfile.TarFile:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data, link in members:
                info = tarfile.TarInfo(name)
                if link:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                    tar.addfile(info)
                else:
                    info.size = len(data or b"")
                    tar.addfile(info, io.BytesIO(data or b""))
        buf.seek(0)
        return tarfile.open(fileobj=buf)

    good = tmp_path / "good"
    good.mkdir()
    safe_extractall = source.safe_extractall
    safe_extractall(archive(("a/b.txt", b"hello", ""), ("a/link", None, "b.txt")), good)
    assert (good / "a" / "b.txt").read_text() == "hello" and (good / "a" / "link").is_symlink()
    for bad in (("../escape.txt", b"x", ""), ("a/out", None, "/etc/passwd"), ("a/up", None, "../../x")):
        dest = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        dest.mkdir()
        with pytest.raises((SourceError, tarfile.TarError)):
            safe_extractall(archive(bad), dest)
        assert not (tmp_path / "escape.txt").exists()


def test_an_explicit_tree_that_is_a_clean_git_checkout_records_its_commit(
    tmp_path: Path, mnn_git_repo: Path, make_mnn_tree: Any
) -> None:
    """--source DIR (the reusable action's `mnn-tree: .`): the checkout's HEAD is the tree's commit, so summaries,
    reports and --cpu-from know it; not with local changes (the content is no commit), not without git."""
    resolve = lambda path: source.resolve("fork", source=path, cache_dir=tmp_path / "c", git_url="")  # noqa: E731
    (mnn_git_repo / "build").mkdir()  # untracked files (a build directory) change nothing
    assert resolve(mnn_git_repo).commit == rev_parse(mnn_git_repo, "HEAD")
    (mnn_git_repo / "CMakeLists.txt").write_text("# a local change\n")
    assert resolve(mnn_git_repo).commit is None
    assert resolve(make_mnn_tree(tmp_path / "plain")).commit is None  # not a git checkout
