"""Builds MNN variants: the core once per (source, options, toolchain), plugins per mode against it.

Layout under the cache directory (every key is a content hash):

    build/<core>/                      MNN's CMake binary dir, shared by all modes of one core
    variants/<core>/lib/               libMNN, libMNN_Express, libMNNTrain (+ .complete.json)
    variants/<core>/plugins/<kind>/    libMNN_Vulkan.so (vulkan-image, vulkan-buffer) or libMNN_CL.so
    variants/<core>/driver-<native>/   mnist_driver, linked against ../lib
    variants/<core>/<tool>-<native>/   a workload's own tool, built by that workload with this Builder's public
                                       pieces (lock, run_logged, staging, publish), e.g. optest.build: mnn_optest

MNN_VULKAN_IMAGE is local to source/backend/vulkan/CMakeLists.txt, so switching it in the shared build dir
recompiles only the plugin; the core objects keep their command lines and ninja leaves them alone.
An artifact directory appears (atomic rename) only when complete; a killed build leaves no half entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import cache, variants
from .errors import BuildError, EnvironmentProblem
from .progress import Progress
from .runner import Runner
from .source import SourceTree, content_key

KEY_FORMAT = 1
NATIVE_DIR = Path(__file__).resolve().parents[2] / "native"
DRIVER_EXES = ("mnist_driver", "mnn_graph")  # native/CMakeLists.txt: the MNIST driver and the reducer's graph tool
CORE_TARGETS = ("MNN", "MNN_Express", "MNNTrain")
CORE_LIBS = ("libMNN.so", "express/libMNN_Express.so", "tools/train/libMNNTrain.so")
# kind: (ninja target, library inside the build dir, cmake -D for the mode), from the variants table.
PLUGINS = {v.name: (v.plugin_target, v.plugin_lib, v.cmake) for v in variants.TABLE if v.has_plugin}
STAMP = cache.STAMP


@dataclass(frozen=True)
class CoreOptions:
    """Top-level options of the shared core. Every plugin kind is enabled so one configure serves all."""

    build_type: str = "Release"
    debug_flags: str = "-g1"  # line tables: symbolized backtraces with file:line at little cost
    compat_cxx_flags: tuple[str, ...] = ()

    def cmake_defines(self) -> list[str]:
        cxx = " ".join([self.debug_flags, *self.compat_cxx_flags]).strip()
        return [
            f"-DCMAKE_BUILD_TYPE={self.build_type}",
            f"-DCMAKE_C_FLAGS={self.debug_flags}",
            f"-DCMAKE_CXX_FLAGS={cxx}",
            "-DMNN_BUILD_TRAIN=ON",
            "-DMNN_BUILD_TOOLS=OFF",
            "-DMNN_BUILD_DEMO=OFF",
            "-DMNN_BUILD_TEST=OFF",
            "-DMNN_BUILD_BENCHMARK=OFF",
            "-DMNN_BUILD_CONVERTER=OFF",
            "-DMNN_SEP_BUILD=ON",  # plugins as separate libraries, swappable under one libMNN.so
            "-DMNN_VULKAN=ON",
            "-DMNN_OPENCL=ON",
        ]


def cmake_configure_args(
    source: Path, build_dir: Path, options: CoreOptions, *, ccache: bool, extra: tuple[str, ...] = ()
) -> list[str]:
    args = ["cmake", "-G", "Ninja", "-S", str(source), "-B", str(build_dir), *options.cmake_defines()]
    if ccache:
        args += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    return args + list(extra)


def ninja_args(build_dir: Path, targets: tuple[str, ...], jobs: int | None) -> list[str]:
    args = ["ninja", "-C", str(build_dir)]
    if jobs:
        args += ["-j", str(jobs)]
    return args + list(targets)


def driver_configure_args(source: Path, lib_dir: Path, build_dir: Path) -> list[str]:
    return [
        "cmake",
        "-G",
        "Ninja",
        "-S",
        str(NATIVE_DIR),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        f"-DMNN_SOURCE_DIR={source}",
        f"-DMNN_LIB_DIR={lib_dir}",
        "-DMNNREPRO_DRIVER_RPATH=$ORIGIN/../lib",
    ]


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def native_key(parts: tuple[str, ...] = ("CMakeLists.txt", "cmake", "src", "graph")) -> str:
    """Hash of the build inputs under native/ (the driver's by default; a workload's own tool names its parts)."""
    h = hashlib.sha256()
    # Build inputs only: a README edit must not rebuild the driver.
    files = [
        p
        for part in parts
        for p in ([NATIVE_DIR / part] if (NATIVE_DIR / part).is_file() else (NATIVE_DIR / part).rglob("*"))
    ]
    for path in sorted(files):
        if path.is_file():
            h.update(path.relative_to(NATIVE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def toolchain_fingerprint(runner: Runner) -> dict[str, str]:
    """Versions of the tools whose output lands in a build, as the runner sees them; part of every key."""
    probe = (
        "for t in c++ cc cmake ninja ccache; do printf '%s=' $t; "
        "if command -v $t >/dev/null 2>&1; then $t --version 2>&1 | head -n 1; else echo MISSING; fi; done"
    )
    lines = runner.run(["sh", "-c", probe], timeout_s=120).output.splitlines()
    out = dict(line.split("=", 1) for line in lines if "=" in line)
    missing = [
        t
        for t in ("c++", "cc", "cmake", "ninja")
        if out.get(t, "MISSING").startswith("MISSING") or "not found" in out.get(t, "")
    ]
    if missing:
        raise EnvironmentProblem(
            f"{', '.join(missing)} not available to the {runner.name} runner",
            hint="apt-get install build-essential cmake ninja-build (or use the docker runner)",
        )
    out["runner"] = runner.name
    image = getattr(runner, "image", None)
    if image:
        out["image"] = str(image)
    return out


@dataclass
class Core:
    key: str
    source: SourceTree
    build_dir: Path
    variant_dir: Path
    options: CoreOptions

    @property
    def lib_dir(self) -> Path:
        return self.variant_dir / "lib"


@dataclass
class BuildLog:
    """What was built and how long it took (read by the benchmark)."""

    events: list[dict[str, object]] = field(default_factory=list)

    def add(self, what: str, key: str, seconds: float, cached: bool) -> None:
        self.events.append({"what": what, "key": key[:16], "seconds": round(seconds, 2), "cached": cached})


class Builder:
    def __init__(
        self, cache_dir: Path, runner: Runner, *, jobs: int | None = None, say: Callable[[str], None] = print
    ) -> None:
        self.cache_dir = cache_dir
        self.runner = runner
        self.jobs = jobs
        self.say = say
        self.log = BuildLog()
        self._ccache: bool | None = None
        self._toolchain: dict[str, str] | None = None

    # -- keys ------------------------------------------------------------------------------------
    @property
    def toolchain(self) -> dict[str, str]:
        if self._toolchain is None:
            self._toolchain = toolchain_fingerprint(self.runner)
        return self._toolchain

    def core_key(self, source: SourceTree, options: CoreOptions) -> str:
        return digest(
            {
                "format": KEY_FORMAT,
                "source": content_key(source.path, self.cache_dir),
                "defines": options.cmake_defines(),
                "toolchain": self.toolchain,
            }
        )

    @property
    def ccache(self) -> bool:
        if self._ccache is None:
            self._ccache = not self.toolchain.get("ccache", "MISSING").startswith("MISSING")
        return self._ccache

    @ccache.setter
    def ccache(self, value: bool) -> None:
        self._ccache = value

    # -- environment -----------------------------------------------------------------------------
    @property
    def ccache_dir(self) -> Path:
        """One ccache per runner: the Docker runner's container user and a host build running as another user
        at the same time must never share ccache's directories (seen: EACCES on the other's tmp files)."""
        return self.cache_dir / ("ccache" if self.runner.name == "host" else f"ccache-{self.runner.name}")

    def _env(self) -> dict[str, str]:
        # ccache: hash_dir off and paths made relative to the cache root, so a second build dir hits.
        return {
            "CCACHE_DIR": str(self.ccache_dir),
            "CCACHE_BASEDIR": str(self.cache_dir),
            "CCACHE_NOHASHDIR": "1",
            "CCACHE_COMPILERCHECK": "content",
            "CCACHE_MAXSIZE": "5G",
        }

    def run_logged(self, argv: list[str], log: Path, what: str, *, check: bool = True) -> int:
        """One cmake or ninja step through the runner, its output to ``log`` with a status line every 10 s; a
        failure raises BuildError with the log's tail (``check=False``: the exit status is returned instead)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        # What the command may write (all else is read-only in a container): its build dir (cmake -B, ninja -C)
        # and the ccache dir. The log is written by the runner, outside the command.
        build_dir = Path(argv[argv.index("-B" if "-B" in argv else "-C") + 1])
        writable = (build_dir, self.ccache_dir)
        # Minutes of cmake and ninja: a status line every 10 s ([n/m] from ninja); each line goes to the log only.
        with Progress(what, say=self.say) as progress:
            res = self.runner.run(
                argv,
                on_line=progress.feed,
                env=self._env(),
                stdout_path=log,
                timeout_s=3600,
                writable=writable,
            )
            if res.returncode != 0:
                progress.outcome = "timed out" if res.timed_out else f"failed (exit {res.returncode})"
        if res.returncode != 0 and check:
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
            body = "\n    ".join(tail)
            raise BuildError(
                f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n    {body}",
                hint=f"full log: {log}; nothing built earlier was removed",
            )
        return res.returncode

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        path = self.cache_dir / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another mnnrepro process building {name[:16]} ...")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, staging: Path, dest: Path, stamp: dict[str, object]) -> None:
        (staging / STAMP).write_text(json.dumps(stamp, indent=1))
        if dest.exists():  # an incomplete leftover (no stamp): replace it
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, dest)

    @staticmethod
    def complete(path: Path) -> bool:
        return (path / STAMP).is_file()

    def staging(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))

    def _configure(self, core: Core, extra: tuple[str, ...]) -> None:
        argv = cmake_configure_args(core.source.path, core.build_dir, core.options, ccache=self.ccache, extra=extra)
        marker = core.build_dir / ".mnnrepro-configured.json"
        previous = json.loads(marker.read_text()) if marker.exists() else None
        if (core.build_dir / "build.ninja").exists() and previous == argv:
            return
        if previous is not None and previous[previous.index("-S") + 1] != str(core.source.path):
            # Same content at another path: CMake refuses a cache made for another source dir. Objects stay.
            (core.build_dir / "CMakeCache.txt").unlink(missing_ok=True)
        self.run_logged(argv, core.build_dir / "logs" / "configure.log", f"{core.source.ref} cmake configure")
        marker.write_text(json.dumps(argv))

    # -- artifacts -------------------------------------------------------------------------------
    def core(self, source: SourceTree, options: CoreOptions) -> Core:
        key = self.core_key(source, options)
        core = Core(key, source, self.cache_dir / "build" / key[:24], self.cache_dir / "variants" / key[:24], options)
        cache.use_build(self.cache_dir, key)  # .last-used; `cache prune` skips it while this process runs
        if self.complete(core.lib_dir):
            self.log.add("core", key, 0.0, cached=True)
            return core
        with self.lock(key[:24]):
            if self.complete(core.lib_dir):
                self.log.add("core", key, 0.0, cached=True)
                return core
            if options.compat_cxx_flags:
                self.say(f"compatibility measure for {source.ref}: CXX flags {' '.join(options.compat_cxx_flags)}")
            self.say(f"building MNN core {source.ref} [{key[:12]}] in {core.build_dir} (first time: minutes)")
            start = time.monotonic()
            core.build_dir.mkdir(parents=True, exist_ok=True)
            self._configure(core, PLUGINS["vulkan-image"][2])
            self.run_logged(
                ninja_args(core.build_dir, CORE_TARGETS, self.jobs),
                core.build_dir / "logs" / "core.log",
                f"{source.ref} core build",
            )
            staging = self.staging(core.lib_dir)
            for rel in CORE_LIBS:
                shutil.copy2(core.build_dir / rel, staging / Path(rel).name)
            self.publish(
                staging,
                core.lib_dir,
                {
                    "key": key,
                    "ref": source.ref,
                    "commit": source.commit,
                    "defines": options.cmake_defines(),
                    "toolchain": self.toolchain,
                },
            )
            self.log.add("core", key, time.monotonic() - start, cached=False)
        return core

    def plugin(self, core: Core, kind: str) -> Path:
        if kind in variants.VARIANTS and variants.get(kind).build_as:  # runs another variant's plugin
            kind = variants.get(kind).build_as
        if kind not in PLUGINS:
            raise BuildError(f"unknown plugin kind {kind!r}; known: {', '.join(PLUGINS)}")
        target, rel, mode_args = PLUGINS[kind]
        dest = core.variant_dir / "plugins" / kind
        lib = dest / Path(rel).name
        cache.use_build(self.cache_dir, core.key)  # .last-used; `cache prune` skips it while this process runs
        if self.complete(dest):
            self.log.add(kind, core.key, 0.0, cached=True)
            return lib
        for needed in variants.get(kind).requires:
            if not (core.source.path / needed).is_file():
                raise BuildError(
                    f"{needed} is missing from the MNN tree at {core.source.path}: {kind} cannot link",
                    hint="import the ref again (python -m mnnrepro source import --git-dir DIR --ref REF): an "
                    "import generates it with MNN's own makeshader.py and a pinned glslang (shaders.py)",
                )
        with self.lock(core.key[:24]):
            if self.complete(dest):
                return lib
            self.say(f"building {kind} plugin against core [{core.key[:12]}]")
            start = time.monotonic()
            self._configure(core, mode_args)
            self.run_logged(
                ninja_args(core.build_dir, (target,), self.jobs),
                core.build_dir / "logs" / f"{kind}.log",
                f"{core.source.ref} {kind} plugin build",
            )
            staging = self.staging(dest)
            shutil.copy2(core.build_dir / rel, staging / Path(rel).name)
            self.publish(staging, dest, {"core": core.key, "kind": kind, "cmake": list(mode_args)})
            self.log.add(kind, core.key, time.monotonic() - start, cached=False)
        return lib

    def driver(self, core: Core) -> Path:
        nkey = native_key()
        dest = core.variant_dir / f"driver-{nkey[:16]}"
        exe = dest / "mnist_driver"
        cache.use_build(self.cache_dir, core.key)  # .last-used; `cache prune` skips it while this process runs
        if self.complete(dest):
            self.log.add("driver", nkey, 0.0, cached=True)
            return exe
        with self.lock(core.key[:24] + "-driver"):
            if self.complete(dest):
                return exe
            self.say(f"building native/ driver against core [{core.key[:12]}]")
            start = time.monotonic()
            build_dir = self.cache_dir / "build" / f"{core.key[:24]}-driver-{nkey[:16]}"
            shutil.rmtree(build_dir, ignore_errors=True)  # small; and its CMake cache names a checkout path
            self.run_logged(
                driver_configure_args(core.source.path, core.lib_dir, build_dir),
                build_dir / "configure.log",
                f"{core.source.ref} driver configure",
            )
            self.run_logged(["ninja", "-C", str(build_dir)], build_dir / "build.log", f"{core.source.ref} driver build")
            staging = self.staging(dest)
            for name in DRIVER_EXES:
                shutil.copy2(build_dir / name, staging / name)
            self.publish(staging, dest, {"core": core.key, "native": nkey})
            self.log.add("driver", nkey, time.monotonic() - start, cached=False)
        return exe
