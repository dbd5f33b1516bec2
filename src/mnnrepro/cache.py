"""The cache directory: what it holds (``python -m mnnrepro cache``), pruning it to a budget
(``cache prune``), and the locks and last-used marks that keep a prune away from entries in use.

Entries (``<cache>`` is ~/.cache/mnnrepro unless --cache-dir says otherwise):

    src/<ref>/                   a source tree (pinned when fixtures/matrix.toml names the ref)
    src/<40-hex commit>/         a bisect export
    build/<core>*, variants/<core>/   one core key: build dirs (core, drivers) and its variants, as one entry
    ccache/, bisect/*.json, git/*.git, swiftshader/, shaders/<key>/, logs/   shown; ccache bounds itself
                                 (CCACHE_MAXSIZE); shaders/ holds generated AllShader.cpp by input content

Locks, all under ``<cache>/locks/`` (fcntl.flock, so a killed process never leaves one held):

    <core>.lock, <core>-driver.lock  exclusive while build.Builder builds that core, its plugins, its driver
    <core>.use, src-<ref>.use        shared, taken by each process that uses the entry (Builder.core/plugin/
                                     driver, source.resolve) and held until that process exits
    src-<ref>.lock                   exclusive while source imports, clones or replaces the tree of <ref>

A prune takes an entry's locks exclusively without waiting and skips the entry when one is held, so an
entry a running session uses is never removed. Removal renames the entry aside first (under the locks), so
a reader never sees half of one; a session that asks for it afterwards rebuilds or re-imports it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import fixtures
from .errors import ConfigError

# The cache's layout markers, defined here (the lowest layer) and used by build.py and source.py.
STAMP = ".complete.json"  # a published build artifact is complete (build.Builder.publish)
PROVENANCE = ".mnnrepro-source.json"  # where a cached source tree came from (source.py)

if TYPE_CHECKING:
    from .settings import Settings

LAST_USED = ".last-used"
DEFAULT_BUDGET = "30G"
KINDS = {
    # kind: heading in `cache` (in this order)
    "source": "source trees",
    "bisect-export": "bisect exports",
    "build": "builds (per core key: build dirs + variants)",
    "ccache": "ccache",
    "bisect-state": "bisect state files",
    "git-mirror": "git mirrors",
    "swiftshader": "swiftshader",
    "generated-shaders": "generated shader sources (by their inputs' content, shaders.py)",
    "logs": "logs",
    "leftover": "leftovers (interrupted imports, clones, prunes)",
    "other": "other",
}
_CORE = re.compile(r"^(?P<key>[0-9a-f]{24})(?:-driver-[0-9a-f]{16})?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Staging directories of source.py (mkdtemp: 8 random characters) and prune's own trash.
_STAGING = re.compile(r"^\.(?P<kind>import|clone|old|prune)-(?P<name>.+)-[a-z0-9_]{8}$")
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_held: dict[Path, IO[str]] = {}  # shared "in use" locks this process holds until it exits


# -- locks and marks ------------------------------------------------------------------------------
def build_lock(cache_dir: Path, key: str) -> Path:
    return cache_dir / "locks" / f"{key[:24]}.lock"  # the name build.Builder.lock uses


def build_use(cache_dir: Path, key: str) -> Path:
    return cache_dir / "locks" / f"{key[:24]}.use"


def _src_name(ref: str) -> str:
    return "src-" + ref.replace("/", "%2F")  # refs have no '%': the name maps back to one ref


def source_lock(cache_dir: Path, ref: str) -> Path:
    return cache_dir / "locks" / f"{_src_name(ref)}.lock"


def source_use(cache_dir: Path, ref: str) -> Path:
    return cache_dir / "locks" / f"{_src_name(ref)}.use"


@contextmanager
def exclusive(
    path: Path, *, wait: bool = True, say: Callable[[str], None] | None = None, what: str = ""
) -> Iterator[bool]:
    """Hold the lock file ``path`` exclusively; yields True. ``wait=False``: yields False at once instead of
    waiting when another process (or another handle of this one) holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if say is not None:
                say(f"waiting for another mnnrepro process {what or 'holding ' + path.name} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mark_used(entry: Path, use_lock: Path) -> None:
    """Touch ``entry/.last-used`` (when the entry exists) and hold ``use_lock`` shared until this process
    exits, so `cache prune` skips the entry while this session may still read it. Waits only while a prune
    is removing that very entry (then the caller finds it gone and makes it again)."""
    if use_lock not in _held:
        try:
            use_lock.parent.mkdir(parents=True, exist_ok=True)
            handle = open(use_lock, "a+")  # held on purpose until the process exits
        except OSError:
            handle = None  # a read-only cache: nothing can prune it either
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_SH)
            _held[use_lock] = handle
    if entry.is_dir():
        try:
            (entry / LAST_USED).touch()
        except OSError:
            pass  # advisory: a read-only cache keeps its directory times


def use_build(cache_dir: Path, key: str) -> None:
    """Builder: the core ``key`` (its build dirs and variants) is in use by this process."""
    mark_used(cache_dir / "variants" / key[:24], build_use(cache_dir, key))


def use_source(cache_dir: Path, ref: str) -> None:
    """source.resolve: the cached tree of ``ref`` is in use by this process."""
    mark_used(cache_dir / "src" / ref, source_use(cache_dir, ref))


# -- sizes ----------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """ "20G", "512M", "1.5T", "100K", "4096" -> bytes (binary units: G = 2**30)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"{text!r} is not a size", hint="write it like 20G, 512M or 1.5T (G = 2**30 bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def _size(path: Path) -> int:
    """Apparent size in bytes of a file or a directory tree (symlinks not followed; vanishing files skipped)."""
    if not path.is_dir() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for root, dirs, files in os.walk(path):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]  # listed, not descended into
        for name in [*files, *links]:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _last_used(paths: Collection[Path]) -> float | None:
    """The newest .last-used mark among ``paths``; for an entry never marked (made by an older suite, or
    never used since), the newest of the paths' own times."""
    marks = [t for p in paths if (t := _mtime(p / LAST_USED)) is not None]
    times = marks or [t for p in paths if (t := _mtime(p)) is not None]
    return max(times) if times else None


def _children(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


# -- inventory ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    paths: tuple[Path, ...]
    size: int
    last_used: float | None
    detail: str = ""
    locks: tuple[Path, ...] = ()  # taken exclusively (without waiting) before removal
    prunable: bool = False
    pinned: bool = False


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _source_entries(cache_dir: Path, pinned: Collection[str]) -> Iterator[Entry]:

    def walk(d: Path, prefix: str) -> Iterator[Entry]:
        for child in _children(d):
            name = prefix + child.name
            staged = _STAGING.match(child.name)
            if staged and child.is_dir():
                ref = prefix + staged.group("name")
                locks = () if staged.group("kind") == "prune" else (source_lock(cache_dir, ref),)
                yield Entry("leftover", f"src/{name}", (child,), _size(child), _mtime(child), "", locks, True)
                continue
            if child.name.startswith(".") or not child.is_dir():
                continue
            if not ((child / PROVENANCE).is_file() or (child / "CMakeLists.txt").is_file()):
                nested = list(walk(child, name + "/"))  # a ref with '/' (feature/x): src/feature/x
                if nested:
                    yield from nested
                    continue
            prov = _read_json(child / PROVENANCE)
            commit = str(prov.get("commit") or "")
            origin = str(prov.get("origin") or "no provenance")
            export = bool(_COMMIT.match(name)) and origin.startswith("import:")
            is_pinned = name in pinned
            detail = f"{commit[:12] or 'unknown commit'} from {origin}" + (" (pinned)" if is_pinned else "")
            yield Entry(
                "bisect-export" if export else "source",
                name,
                (child,),
                _size(child),
                _last_used([child]),
                detail,
                (source_lock(cache_dir, name), source_use(cache_dir, name)),
                prunable=not is_pinned,
                pinned=is_pinned,
            )

    yield from walk(cache_dir / "src", "")


def _build_entries(cache_dir: Path) -> Iterator[Entry]:

    groups: dict[str, list[Path]] = {}
    for base in ("build", "variants"):
        for child in _children(cache_dir / base):
            m = _CORE.match(child.name)
            if m and child.is_dir():
                groups.setdefault(m.group("key"), []).append(child)
            elif child.name.startswith(".prune-") and child.is_dir():
                yield Entry("leftover", f"{base}/{child.name}", (child,), _size(child), _mtime(child), prunable=True)
            else:
                yield Entry("other", f"{base}/{child.name}", (child,), _size(child), _mtime(child))
    for key, paths in sorted(groups.items()):
        variant = cache_dir / "variants" / key
        lib = _read_json(variant / "lib" / STAMP)
        ref, commit = str(lib.get("ref") or ""), str(lib.get("commit") or "")
        if not ref:  # never finished: the source dir it was configured with names the tree
            ref = _configured_source(cache_dir / "build" / key) or "?"
        made = ["core"] if lib else []
        made += [p.name for p in _children(variant / "plugins") if (p / STAMP).is_file()]
        made += [p.name[:15] for p in _children(variant) if p.name.startswith("driver-") and (p / STAMP).is_file()]
        detail = f"{ref}" + (f" ({commit[:12]})" if commit else "") + ": " + (", ".join(made) or "incomplete")
        locks = (build_lock(cache_dir, key), cache_dir / "locks" / f"{key}-driver.lock", build_use(cache_dir, key))
        yield Entry("build", key, tuple(paths), sum(map(_size, paths)), _last_used(paths), detail, locks, True)


def _configured_source(build_dir: Path) -> str | None:
    try:
        argv = json.loads((build_dir / ".mnnrepro-configured.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(argv, list) and "-S" in argv[:-1]:
        return Path(str(argv[argv.index("-S") + 1])).name
    return None


def _plain(kind: str, name: str, path: Path, detail: str = "") -> Entry:
    return Entry(kind, name, (path,), _size(path), _last_used([path]), detail)


def inventory(cache_dir: Path, pinned: Collection[str] = ()) -> list[Entry]:
    """Everything under ``cache_dir``, one Entry per thing `cache prune` would remove (or could not)."""
    entries = [*_source_entries(cache_dir, pinned), *_build_entries(cache_dir)]
    ccaches = sorted(p.name for p in _children(cache_dir) if p.name == "ccache" or p.name.startswith("ccache-"))
    known = {"src", "build", "variants", "bisect", "git", "swiftshader", "shaders", "logs", *ccaches}
    for name in ccaches:  # one per runner (build.Builder.ccache_dir)
        entries.append(_plain("ccache", name, cache_dir / name, "bounded by CCACHE_MAXSIZE (build.py)"))
    for f in _children(cache_dir / "bisect"):
        if f.suffix == ".json" and not f.name.startswith("."):
            state = _read_json(f)
            steps = state.get("steps")
            rng = f"{str(state.get('old', '?'))[:12]}..{str(state.get('new', '?'))[:12]}"
            n = len(steps) if isinstance(steps, dict) else 0
            entries.append(_plain("bisect-state", f.stem, f, f"{rng} {state.get('cell', '?')}: {n} step(s)"))
        else:
            entries.append(_plain("other", f"bisect/{f.name}", f))
    for sub, kind in (("git", "git-mirror"), ("swiftshader", "swiftshader")):
        for child in _children(cache_dir / sub):
            entries.append(_plain(kind, child.name, child))
    for child in _children(cache_dir / "shaders"):  # made again by the next import that needs one: prunable
        entries.append(replace(_plain("generated-shaders", child.name, child, "AllShader.cpp"), prunable=True))
    if (cache_dir / "logs").exists():
        logs = cache_dir / "logs"
        entries.append(_plain("logs", "logs", logs, f"{len(_children(logs))} file(s)"))
    for child in _children(cache_dir):
        if child.name not in known:
            entries.append(_plain("other", child.name, child))
    return entries


# -- show -----------------------------------------------------------------------------------------
def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t is not None else "-"


def show(cache_dir: Path, pinned: Collection[str] = (), *, budget: int | None = None) -> str:
    entries = inventory(cache_dir, pinned)
    total = sum(e.size for e in entries)
    lines = [f"cache {cache_dir}: {human(total)} in {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"]
    for kind, heading in KINDS.items():
        group = [e for e in entries if e.kind == kind]
        if not group:
            continue
        lines.append(f"{heading}: {human(sum(e.size for e in group))}")
        for e in sorted(group, key=lambda e: e.last_used or 0.0, reverse=True):
            lines.append(f"  {e.name:<40} {human(e.size):>7}  used {_when(e.last_used)}  {e.detail}".rstrip())
    if budget is not None:
        prunable = sum(e.size for e in entries if e.prunable)
        state = "under" if total <= budget else "OVER"
        lines.append(
            f"budget {human(budget)}: {state} ({human(prunable)} prunable: "
            "python -m mnnrepro cache prune [--budget SIZE] [--dry-run])"
        )
    return "\n".join(lines)


# -- prune ----------------------------------------------------------------------------------------
@dataclass
class PruneResult:
    before: int
    after: int
    budget: int
    removed: list[Entry] = field(default_factory=list)
    skipped: list[Entry] = field(default_factory=list)  # in use: a lock was held


@contextmanager
def _claim(locks: Collection[Path]) -> Iterator[bool]:
    """All of ``locks`` exclusively, without waiting: True, or False (holding none) when one is taken."""
    with ExitStack() as stack:
        for lock in locks:
            if not stack.enter_context(exclusive(lock, wait=False)):
                yield False
                return
        yield True


def _remove(entry: Entry) -> list[Path]:
    """Rename each path of ``entry`` aside (a reader never sees half an entry); return the trash to delete."""
    trash = []
    for path in entry.paths:
        if entry.kind == "leftover":
            trash.append(path)
            continue
        aside = path.with_name(f".prune-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue
        trash.append(aside)
    return trash


def prune(
    cache_dir: Path,
    budget: int,
    pinned: Collection[str] = (),
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> PruneResult:
    """Remove least-recently-used prunable entries until the cache is under ``budget`` bytes. Leftovers go
    first; source trees of pinned refs, ccache, SwiftShader, logs and bisect state are never removed; an
    entry whose lock another process holds is skipped (and said so)."""
    entries = inventory(cache_dir, pinned)
    total = sum(e.size for e in entries)
    result = PruneResult(total, total, budget)
    candidates = sorted(
        (e for e in entries if e.prunable),
        key=lambda e: (e.kind != "leftover", e.last_used if e.last_used is not None else 0.0),
    )
    verb = "would remove" if dry_run else "removed"
    if total <= budget:
        say(f"cache {cache_dir}: {human(total)}, under the budget of {human(budget)}: nothing to remove")
        return result
    say(f"cache {cache_dir}: {human(total)}, over the budget of {human(budget)}; least recently used first:")
    for e in candidates:
        if result.after <= budget:
            break
        with _claim(e.locks) as free:
            if not free:
                result.skipped.append(e)
                say(f"  skipped {e.kind} {e.name}: in use by a running mnnrepro process (its lock is held)")
                continue
            trash = [] if dry_run else _remove(e)
        for path in trash:  # after the locks: the entry is already gone from where sessions look
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        result.removed.append(e)
        result.after -= e.size
        say(f"  {verb} {e.kind} {e.name} ({human(e.size)}, used {_when(e.last_used)}) {e.detail}".rstrip())
    state = "under" if result.after <= budget else "still over"
    rest = "" if result.after <= budget else " (what is left is pinned, in use, or not pruned: ccache, logs, ...)"
    say(f"{'would be' if dry_run else 'now'} {human(result.after)}: {state} the budget of {human(budget)}{rest}")
    return result


def main(args: argparse.Namespace, settings: Settings, *, say: Callable[[str], None] = print) -> int:
    """``python -m mnnrepro cache [show|prune] [--budget SIZE] [--dry-run]``."""

    budget = parse_size(args.budget)
    pinned = set(fixtures.load_matrix().refs)
    if args.action == "prune":
        prune(settings.cache_dir, budget, pinned, dry_run=args.dry_run, say=say)
    else:
        say(show(settings.cache_dir, pinned, budget=budget))
    return 0
