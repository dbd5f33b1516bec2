"""What every session needs on any runner: the shared vocabulary (Finding, OK/WARN/FAIL), libraries loaded in a child
process, the machine's NVIDIA driver, free disk, the host toolchain, gdb, and whether SwiftShader can be fetched.

Libraries are dlopened in a child process with a time limit: loading a driver runs its constructors, which can
hang or crash.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import swiftshader
from ..runner import HostRunner

OK, WARN, FAIL = "ok", "warn", "FAIL"
RUNNERS = ("host", "docker")
PROBE_TIMEOUT_S = 8.0
DISK_FAIL_GIB, DISK_WARN_GIB = 3.0, 10.0
NVIDIA_PROC = Path("/proc/driver/nvidia/version")

# Debian 12 package of each shared library a driver commonly needs (checked with dpkg -S on bookworm).
SONAME_PACKAGES = {
    "libGLdispatch.so.0": "libglvnd0",
    "libGLX.so.0": "libglx0",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libGL.so.1": "libgl1",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libxcb-dri3.so.0": "libxcb-dri3-0",
    "libxcb-present.so.0": "libxcb-present0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxshmfence.so.1": "libxshmfence1",
    "libwayland-client.so.0": "libwayland-client0",
    "libdrm.so.2": "libdrm2",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
    "libexpat.so.1": "libexpat1",
    "libelf.so.1": "libelf1",
    "libsensors.so.5": "libsensors5",
    "libstdc++.so.6": "libstdc++6",
    "libLLVM-15.so.1": "libllvm15",
    "libvulkan.so.1": "libvulkan1",
    "libvulkan.so": "libvulkan-dev",
    "libOpenCL.so.1": "ocl-icd-libopencl1",
    "libOpenCL.so": "ocl-icd-opencl-dev",
}


@dataclass(frozen=True)
class Finding:
    status: str  # OK, WARN or FAIL
    what: str
    detail: str
    fix: str = ""
    packages: tuple[str, ...] = ()  # Debian packages whose installation fixes it


def apt_install(packages: Iterable[str]) -> str:
    return "apt-get install " + " ".join(dict.fromkeys(packages))


# --- loading libraries in a child process ------------------------------------------------------------------

_DLOPEN = """import ctypes, os, sys
try:
    ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
except OSError as e:
    print(e)
    sys.exit(3)
"""


@dataclass(frozen=True)
class Load:
    name: str
    ok: bool
    error: str = ""  # the dynamic linker's message, or why the probe ended
    missing: tuple[str, ...] = ()  # libraries that could not be found: the library itself or its dependencies

    @property
    def itself_missing(self) -> bool:
        return Path(self.name).name in self.missing


def probe(
    script: str, *args: str, timeout_s: float = PROBE_TIMEOUT_S, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Run a short Python script in a child; (exit status or None when it timed out or died, output)."""
    argv = [sys.executable, "-I", "-S", "-c", script, *args]
    done = HostRunner(kill_grace_s=1.0).run(argv, env=env, timeout_s=timeout_s)
    if done.timed_out:
        return None, f"did not finish in {timeout_s:.0f} s (a driver constructor hanging?)"
    if done.signal_name:
        return None, f"the process loading it died with {done.signal_name}"
    return done.returncode, done.output.strip()


_NOT_FOUND = re.compile(r"([^\s:]+): cannot open shared object file")


def _ld_cache() -> dict[str, str]:
    """soname -> path, from `ldconfig -p`."""
    exe = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not Path(exe).exists():
        return {}
    out = HostRunner().run([exe, "-p"], timeout_s=5).output
    found: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and ("64" in m.group(2)) == (sys.maxsize > 2**32):  # this process's word size only
            found.setdefault(m.group(1), m.group(3))
    return found


def _locate(name: str) -> str | None:
    if "/" in name:
        return name if Path(name).exists() else None
    for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    return _ld_cache().get(name)


def _missing_dependencies(path: str) -> list[str]:
    """Every dependency of `path` the dynamic linker cannot find (ldd), not only the first one dlopen names."""
    exe = shutil.which("ldd")
    if exe is None:
        return []
    out = HostRunner(kill_grace_s=1.0).run([exe, path], timeout_s=5).output
    return [m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", out, re.M)]


def load_library(name: str, timeout_s: float = PROBE_TIMEOUT_S) -> Load:
    """dlopen `name` (RTLD_NOW, as MNN and the loaders do) in a child process."""
    code, out = probe(_DLOPEN, name, timeout_s=timeout_s)
    if code == 0:
        return Load(name, True)
    if code is None:
        return Load(name, False, out)
    error = out.splitlines()[-1] if out else f"exit status {code}"
    missing = list(dict.fromkeys(_NOT_FOUND.findall(error)))
    if missing and Path(missing[0]).name != Path(name).name:
        path = _locate(name)
        if path:
            missing += [m for m in _missing_dependencies(path) if m not in missing]
    return Load(name, False, error, tuple(Path(m).name if m.startswith("/") else m for m in missing))


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (from /proc), or None."""
    try:
        text = NVIDIA_PROC.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else text.splitlines()[0][:80] if text else "?"


def _swiftshader_fetchable(label: str, severity: str) -> Finding:
    """Fetching needs no npm (one HTTPS GET from the npm registry), only a brotli decoder: the brotli module
    (a dependency of the suite) or the brotli CLI."""
    pin = f"{swiftshader.PACKAGE}@{swiftshader.VERSION}"
    if importlib.util.find_spec("brotli") is None and shutil.which("brotli") is None:
        return Finding(
            severity,
            label,
            "SwiftShader is not cached and cannot be unpacked: no brotli decoder (module or CLI)",
            "pip install brotli (a dependency of mnnrepro), or apt-get install brotli",
            ("brotli",),
        )
    return Finding(
        OK, label, f"not cached yet: will be fetched ({pin}, sha256-pinned, from {swiftshader.registry()}) first"
    )


# --- the machine: disk, host toolchain, gdb ---------------------------------------------------------------------


def check_toolchain() -> list[Finding]:
    need = {"c++": "build-essential", "cmake": "cmake", "ninja": "ninja-build"}
    missing = [t for t in need if shutil.which(t) is None]
    findings = [
        Finding(
            FAIL,
            "host toolchain",
            f"missing {', '.join(missing)}: MNN cannot be built on this machine",
            apt_install(need[t] for t in missing) + " (or use the docker runner)",
            tuple(need[t] for t in missing),
        )
        if missing
        else Finding(OK, "host toolchain", ", ".join(f"{t} {shutil.which(t)}" for t in need))
    ]
    if shutil.which("ccache") is None:
        findings.append(
            Finding(
                WARN, "ccache", "missing: every build of MNN starts from scratch", "apt-get install ccache", ("ccache",)
            )
        )
    return findings


# gdb first; then cuda-gdb, NVIDIA's gdb (GPU servers often have only it), which runs gdb_capture.py the same way
# when it embeds Python: the same probe decides for both.
GDB_CANDIDATES = ("gdb", "cuda-gdb")
GDB_PROBE = "python print('mnnrepro-gdb-ok')"
NO_GDB = "no gdb: crash signatures will be judged by signal only"


def find_gdb() -> tuple[str | None, list[str]]:
    """The first of GDB_CANDIDATES on PATH that runs Python, and why each one tried before it was not taken."""
    why: list[str] = []
    for name in GDB_CANDIDATES:
        exe = shutil.which(name)
        if exe is None:
            why.append(f"{name}: not installed")
            continue
        done = HostRunner(kill_grace_s=1.0).run([exe, "-nx", "-batch", "-ex", GDB_PROBE], timeout_s=PROBE_TIMEOUT_S)
        if "mnnrepro-gdb-ok" in done.output:
            return exe, why
        last = (done.output.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:120]
        why.append(f"{exe} does not run Python ({last})")
    return None, why


def check_gdb(severity: str = WARN) -> list[Finding]:
    """gdb with Python (or cuda-gdb with Python) runs gdb_capture.py; without either, a crash still has its signal
    and stage, not its frames, and the run goes on as with --no-gdb (a warning: verdicts are still possible).
    FAIL where gdb is required (require_gdb, MNNREPRO_REQUIRE_GDB=1: CI, whose image has gdb)."""
    exe, why = find_gdb()
    if exe is not None:
        other = f" ({'; '.join(why)})" if why else ""
        return [Finding(OK, "gdb", f"{exe} runs Python{other}")]
    fix = "apt-get install gdb (Debian's gdb embeds Python)"
    if severity == FAIL:
        detail = f"{'; '.join(why)}: required here (require_gdb, MNNREPRO_REQUIRE_GDB=1), and without it {NO_GDB}"
    else:
        detail = f"{NO_GDB} ({'; '.join(why)}); the run goes on as with --no-gdb"
        fix += "; --no-gdb silences this"
    return [Finding(severity, "gdb", detail, fix, ("gdb",))]


def check_disk(cache_dir: Path) -> list[Finding]:
    where = cache_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    status = OK if free >= DISK_WARN_GIB else WARN if free >= DISK_FAIL_GIB else FAIL
    fix = "" if status == OK else f"free space at {where} (one ref's builds take about {DISK_FAIL_GIB:.0f} GiB)"
    return [Finding(status, "free disk", f"{free:.1f} GiB at {cache_dir}", fix)]
