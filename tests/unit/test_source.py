"""source: ref validation, tree checks, content keys, import from a local git repository, resolution order."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mnnrepro import source
from mnnrepro.errors import ConfigError, SourceError

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
