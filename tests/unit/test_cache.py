"""cache: what the cache holds, pruning by last use, and never an entry another process holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import mnnrepro
from mnnrepro import build, cache, cli
from mnnrepro.build import Builder, CoreOptions
from mnnrepro.errors import ConfigError
from mnnrepro.runner import Completed
from mnnrepro.source import PROVENANCE, SourceTree

MakeTree = Callable[[Path], Path]
MiB = 1 << 20
NOW = time.time()
KEYS = ("a" * 24, "b" * 24, "c" * 24)


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def used(entry: Path, ago_s: float) -> None:
    mark = entry / cache.LAST_USED
    mark.touch()
    os.utime(mark, (NOW - ago_s, NOW - ago_s))


def make_build(cache_dir: Path, key: str, ref: str, *, ago_s: float, size: int = MiB) -> int:
    """A core key's entry: its build dir, a driver build dir, and variants (core + one plugin). Returns bytes."""
    write(cache_dir / "build" / key / "obj.o", size)
    write(cache_dir / "build" / f"{key}-driver-{'0' * 16}" / "d.o", 10)
    variant = cache_dir / "variants" / key
    write(variant / "lib" / "libMNN.so", 100)
    stamp = json.dumps({"key": key, "ref": ref, "commit": "5047919a1ae5" + "0" * 28})
    (variant / "lib" / build.STAMP).write_text(stamp)
    write(variant / "plugins" / "vulkan-image" / "libMNN_Vulkan.so", 50)
    (variant / "plugins" / "vulkan-image" / build.STAMP).write_text("{}")
    used(variant, ago_s)
    return size + 10 + 100 + len(stamp) + 50 + 2


def make_source(cache_dir: Path, ref: str, *, ago_s: float, size: int = MiB) -> int:
    tree = cache_dir / "src" / ref
    write(tree / "CMakeLists.txt", size)
    prov = json.dumps({"ref": ref, "commit": "d407447ed56c" + "0" * 28, "origin": "import:/mirror"})
    (tree / PROVENANCE).write_text(prov)
    used(tree, ago_s)
    return size + len(prov)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def quiet() -> Iterator[list[str]]:
    said: list[str] = []
    yield said


def by_name(entries: list[cache.Entry]) -> dict[str, cache.Entry]:
    return {e.name: e for e in entries}


# -- sizes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("20G", 20 << 30), ("512M", 512 << 20), ("1.5T", 3 << 39), ("100k", 102400), ("4096", 4096), ("30GiB", 30 << 30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "20X", "1,5G", "twenty"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size"):
        cache.parse_size(text)


def test_human_sizes() -> None:
    assert [cache.human(n) for n in (0, 1023, 1024, 5 * MiB + MiB // 2, 30 << 30)] == [
        "0B",
        "1023B",
        "1.0K",
        "5.5M",
        "30.0G",
    ]


# -- show ---------------------------------------------------------------------------------------------------


def test_inventory_sizes_kinds_and_details(cache_dir: Path) -> None:
    b = make_build(cache_dir, KEYS[0], "3.3.0", ago_s=100)
    s = make_source(cache_dir, "3.3.0", ago_s=200)
    nested = make_source(cache_dir, "feature/x", ago_s=300, size=1000)
    export = make_source(cache_dir, "1" * 40, ago_s=400, size=10)
    write(cache_dir / "ccache" / "0" / "a.o", 2000)
    (cache_dir / "bisect").mkdir()
    (cache_dir / "bisect" / "k.json").write_text(
        json.dumps({"old": "a" * 40, "new": "b" * 40, "cell": "c", "steps": {}})
    )
    write(cache_dir / "swiftshader" / "143.0.4" / "libvk_swiftshader.so", 3000)
    write(cache_dir / "logs" / "image-x.log", 40)
    write(cache_dir / "src-hashes" / "h", 65)
    write(cache_dir / "shaders" / "ab12" / "AllShader.cpp", 500)
    entries = by_name(cache.inventory(cache_dir, pinned={"3.3.0"}))
    assert entries["ab12"].kind == "generated-shaders" and entries["ab12"].size == 500 and entries["ab12"].prunable
    assert entries[KEYS[0]].kind == "build" and entries[KEYS[0]].size == b
    assert entries[KEYS[0]].detail == "3.3.0 (5047919a1ae5): core, vulkan-image"
    assert len(entries[KEYS[0]].paths) == 3  # build dir, driver build dir, variants: one entry
    assert entries["3.3.0"].size == s and entries["3.3.0"].pinned and not entries["3.3.0"].prunable
    assert entries["feature/x"].size == nested and entries["feature/x"].prunable  # a ref with '/' is one entry
    assert entries["1" * 40].kind == "bisect-export" and entries["1" * 40].size == export
    assert entries["ccache"].size == 2000 and not entries["ccache"].prunable
    assert entries["k"].kind == "bisect-state" and "0 step(s)" in entries["k"].detail
    assert entries["143.0.4"].size == 3000 and entries["logs"].size == 40 and entries["src-hashes"].kind == "other"
    assert abs((entries["3.3.0"].last_used or 0) - (NOW - 200)) < 1


def test_show_lists_each_kind_with_sizes_and_the_budget(cache_dir: Path) -> None:
    make_build(cache_dir, KEYS[0], "3.6.1", ago_s=100)
    make_source(cache_dir, "3.6.1", ago_s=100, size=3 * MiB)
    text = cache.show(cache_dir, {"3.6.1"}, budget=cache.parse_size("2M"))
    assert "source trees: 3.0M" in text
    assert "builds (per core key: build dirs + variants): 1.0M" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("3.6.1"))
    assert "3.0M" in line and "(pinned)" in line and "d407447ed56c" in line
    assert text.splitlines()[-1].startswith("budget 2.0M: OVER (1.0M prunable")


def test_an_empty_cache_shows_zero(cache_dir: Path) -> None:
    assert cache.show(cache_dir).splitlines() == [f"cache {cache_dir}: 0B in 0 entries"]


# -- prune --------------------------------------------------------------------------------------------------


def test_prune_removes_least_recently_used_first_until_under_budget(cache_dir: Path, quiet: list[str]) -> None:
    sizes = [make_build(cache_dir, k, "3.3.0", ago_s=ago) for k, ago in zip(KEYS, (3000, 1000, 10), strict=True)]
    dev = make_source(cache_dir, "dev", ago_s=2000)
    total = sum(sizes) + dev
    result = cache.prune(cache_dir, total - sizes[0] - dev, dry_run=False, say=quiet.append)
    assert [e.name for e in result.removed] == [KEYS[0], "dev"]  # oldest first; kinds mixed by last use
    assert result.after == total - sizes[0] - dev <= result.budget
    assert not (cache_dir / "variants" / KEYS[0]).exists() and not (cache_dir / "build" / KEYS[0]).exists()
    assert not (cache_dir / "build" / f"{KEYS[0]}-driver-{'0' * 16}").exists()  # the driver dir goes with it
    assert not (cache_dir / "src" / "dev").exists()
    for k in KEYS[1:]:
        assert (cache_dir / "variants" / k / "lib" / build.STAMP).is_file()
    leftovers = [p for d in ("build", "variants", "src") for p in (cache_dir / d).iterdir() if p.name.startswith(".")]
    assert leftovers == []  # set aside, then deleted
    assert sum(e.size for e in cache.inventory(cache_dir)) == result.after


def test_prune_under_budget_removes_nothing(cache_dir: Path, quiet: list[str]) -> None:
    make_build(cache_dir, KEYS[0], "3.3.0", ago_s=10)
    result = cache.prune(cache_dir, cache.parse_size(cache.DEFAULT_BUDGET), say=quiet.append)
    assert result.removed == [] and "nothing to remove" in quiet[0]


def test_dry_run_removes_nothing_but_says_what(cache_dir: Path, quiet: list[str]) -> None:
    make_build(cache_dir, KEYS[0], "3.3.0", ago_s=10)

    def listing() -> list[Path]:  # lock files aside: a dry run tries the locks too, to say what it would skip
        return sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*") if "locks" not in p.parts)

    before = listing()
    result = cache.prune(cache_dir, 0, dry_run=True, say=quiet.append)
    assert [e.name for e in result.removed] == [KEYS[0]]
    assert any(line.strip().startswith(f"would remove build {KEYS[0]}") for line in quiet)
    assert listing() == before and len(before) > 5


def test_pinned_refs_sources_are_kept_and_the_rest_go(cache_dir: Path, quiet: list[str]) -> None:
    pinned = make_source(cache_dir, "3.3.0", ago_s=9000)  # the oldest of all
    make_source(cache_dir, "feature/x", ago_s=10)
    make_source(cache_dir, "2" * 40, ago_s=20)  # a bisect export
    result = cache.prune(cache_dir, 0, {"3.3.0"}, say=quiet.append)
    assert sorted(e.name for e in result.removed) == ["2" * 40, "feature/x"]
    assert (cache_dir / "src" / "3.3.0" / "CMakeLists.txt").is_file()
    assert result.after == pinned
    assert "still over" in quiet[-1]


def hold(lock: Path, mode: str = "SH") -> subprocess.Popen[str]:
    """Another process holding ``lock`` (as a running session or build does) until it is killed."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
        f"fcntl.flock(f, fcntl.LOCK_{mode}); print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize(
    ("lock", "mode"),
    [
        (lambda c: cache.build_use(c, KEYS[0]), "SH"),  # a session that used the build is running
        (lambda c: cache.build_lock(c, KEYS[0]), "EX"),  # Builder is building that core right now
    ],
    ids=["in-use", "building"],
)
def test_a_locked_build_is_skipped_and_the_next_oldest_goes(
    cache_dir: Path, quiet: list[str], lock: Callable[[Path], Path], mode: str
) -> None:
    sizes = [make_build(cache_dir, k, "3.3.0", ago_s=ago) for k, ago in zip(KEYS, (3000, 2000, 10), strict=True)]
    holder = hold(lock(cache_dir), mode)
    try:
        result = cache.prune(cache_dir, sum(sizes) - sizes[0], say=quiet.append)
    finally:
        holder.kill()
        holder.wait()
    assert [e.name for e in result.skipped] == [KEYS[0]]
    assert [e.name for e in result.removed] == [KEYS[1]]
    assert (cache_dir / "variants" / KEYS[0] / "lib" / build.STAMP).is_file()
    assert (cache_dir / "build" / KEYS[0] / "obj.o").is_file()
    assert f"skipped build {KEYS[0]}: in use by a running mnnrepro process" in "\n".join(quiet)


def test_a_source_tree_a_session_resolved_is_skipped(cache_dir: Path, quiet: list[str]) -> None:
    make_source(cache_dir, "dev", ago_s=100)
    holder = hold(cache.source_use(cache_dir, "dev"))
    try:
        result = cache.prune(cache_dir, 0, say=quiet.append)
    finally:
        holder.kill()
        holder.wait()
    assert [e.name for e in result.skipped] == ["dev"] and result.removed == []
    assert (cache_dir / "src" / "dev" / "CMakeLists.txt").is_file()
    assert [e.name for e in cache.prune(cache_dir, 0, say=quiet.append).removed] == ["dev"]  # once it exited


def test_leftovers_go_first_unless_their_import_is_still_running(cache_dir: Path, quiet: list[str]) -> None:
    size = make_build(cache_dir, KEYS[0], "3.3.0", ago_s=5000)
    stale = write(cache_dir / "src" / ".import-3.3.0-abcd1234" / "half.cpp", 100).parent
    running = write(cache_dir / "src" / ".clone-3.6.1-efgh5678" / "half.cpp", 100).parent
    holder = hold(cache.source_lock(cache_dir, "3.6.1"), "EX")  # that clone's process holds the ref's lock
    try:
        result = cache.prune(cache_dir, size + 50, say=quiet.append)  # both leftovers would have to go
    finally:
        holder.kill()
        holder.wait()
    assert [e.name for e in result.removed] == ["src/.import-3.3.0-abcd1234", KEYS[0]]  # leftovers first
    assert [e.name for e in result.skipped] == ["src/.clone-3.6.1-efgh5678"]
    assert not stale.exists() and running.is_dir()


# -- Builder and the CLI ------------------------------------------------------------------------------------


class FakeToolchain:
    """cmake and ninja stand-ins that create the files a real build would."""

    name = "fake"

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        **kwargs: Any,
    ) -> Completed:
        args = list(argv)
        if stdout_path is not None:
            stdout_path.write_text("ok\n")
        if args[0] == "cmake":
            out = Path(args[args.index("-B") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "build.ninja").write_text("")
        elif args[0] == "ninja":
            for rel in [*build.CORE_LIBS, *(p[1] for p in build.PLUGINS.values()), *build.DRIVER_EXES]:
                write(Path(args[2]) / rel, 5)
        return Completed(tuple(args), 0, 0.0)


def test_builder_marks_its_core_used_and_a_prune_elsewhere_skips_it(
    tmp_path: Path, cache_dir: Path, make_mnn_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake", "cmake": "f", "ninja": "1"})
    builder = Builder(cache_dir, FakeToolchain(), say=lambda _: None)
    tree = SourceTree(make_mnn_tree(tmp_path / "mnn"), "3.3.0", "5047919a1ae5" + "0" * 28, "explicit")
    core = builder.core(tree, CoreOptions())
    builder.plugin(core, "vulkan-image")
    builder.driver(core)
    mark = core.variant_dir / cache.LAST_USED
    os.utime(mark, (NOW - 3600, NOW - 3600))
    builder.core(tree, CoreOptions())  # cached: the mark is touched again
    assert mark.stat().st_mtime > NOW - 60
    entry = by_name(cache.inventory(cache_dir))[core.key[:24]]
    assert entry.detail.startswith("3.3.0 (5047919a1ae5): core, vulkan-image, driver-")
    env = {**os.environ, "PYTHONPATH": str(Path(mnnrepro.__file__).parents[1])}
    argv = [sys.executable, "-m", "mnnrepro", "cache", "prune", "--budget", "0", "--cache-dir", str(cache_dir)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"skipped build {core.key[:24]}: in use" in proc.stdout  # this process still holds it
    assert (core.lib_dir / build.STAMP).is_file()


def test_cli_cache_show_and_prune(cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_build(cache_dir, KEYS[0], "3.3.0", ago_s=10)
    make_source(cache_dir, "3.3.0", ago_s=10)  # pinned by fixtures/matrix.toml
    assert cli.main(["cache", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "source trees:" in out and "(pinned)" in out and KEYS[0] in out and "budget 30.0G: under" in out
    assert cli.main(["cache", "prune", "--budget", "1K", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert f"removed build {KEYS[0]}" in out and "3.3.0" in out
    assert (cache_dir / "src" / "3.3.0").is_dir() and not (cache_dir / "variants" / KEYS[0]).exists()
    assert cli.main(["cache", "prune", "--budget", "lots", "--cache-dir", str(cache_dir)]) == 2
    assert "is not a size" in capsys.readouterr().err
