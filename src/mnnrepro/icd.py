"""ICDs (drivers), one table keyed by API: each run names its ICD explicitly through its loader's variables.

MNN always takes the first device (Vulkan: physical device 0; OpenCL: the first GPU-type device), so a run's
loader is told to load exactly one driver. A row is an ICD: its API, its name, how it is found (`Installed`: a
package's files, `Pinned`: fetched into the cache, `Machine`: the machine's own drivers, no override, `Planted`: a
deliberate fault), the loader variables it sets to what was found, and where docker/Dockerfile puts it in the
image. preflight checks a row and `resolve` gives a run its environment from the same row, so a new ICD (PoCL or
NVIDIA's OpenCL driver as a vendor file, another Vulkan driver as a manifest) is a row of TABLE:
- lavapipe: Mesa's software rasterizer (Debian mesa-vulkan-drivers), "llvmpipe (...)"
- swiftshader: Google SwiftShader from a pinned npm package (see swiftshader.py)
- host: whatever Vulkan driver the machine has installed (a real GPU), no override
- bogus: a manifest pointing at a library that does not exist; fault injection for NOT-EXERCISED tests
"""

from __future__ import annotations

import glob
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import swiftshader
from .errors import EnvironmentProblem

VULKAN, OPENCL = "vulkan", "opencl"
# The variables each API's loader reads for its drivers; a row sets the ones it names to the file it found.
# Vulkan: VK_ICD_FILENAMES for older loaders, VK_DRIVER_FILES for newer ones (which prefer it), each a manifest.
# OpenCL: OCL_ICD_VENDORS, a vendor .icd file (ocl-icd, Debian's loader, then reads only that one) or a directory
# of them (instead of /etc/OpenCL/vendors); OCL_ICD_FILENAMES, driver libraries (colon-separated).
LOADER_VARS = {
    VULKAN: ("VK_ICD_FILENAMES", "VK_DRIVER_FILES"),
    OPENCL: ("OCL_ICD_VENDORS", "OCL_ICD_FILENAMES"),
}

LAVAPIPE_GLOBS = ("/usr/share/vulkan/icd.d/lvp_icd*.json", "/usr/local/share/vulkan/icd.d/lvp_icd*.json")


@dataclass(frozen=True)
class Installed:
    """Installed by a package: the first file (in sorted order) that one of the globs matches."""

    globs: Callable[[], tuple[str, ...]]  # read at each look-up
    missing: str  # what is wrong when nothing matches
    fix: str
    packages: tuple[str, ...] = ()  # Debian packages whose installation fixes it

    def names(self) -> str:
        """The file names looked for ("lvp_icd*.json")."""
        return ", ".join(dict.fromkeys(Path(g).name for g in self.globs()))

    def locate(self, cache_dir: Path) -> Path | None:
        found = sorted(p for g in self.globs() for p in glob.glob(g))
        return Path(found[0]) if found else None

    def provide(self, cache_dir: Path) -> Path:
        found = self.locate(cache_dir)
        if found is None:
            raise EnvironmentProblem(f"{self.missing} (no {self.names()})", hint=self.fix)
        return found


@dataclass(frozen=True)
class Pinned:
    """SwiftShader's manifest in the cache, from the sha256-pinned package: a run fetches it, preflight never."""

    def locate(self, cache_dir: Path) -> Path | None:
        manifest = swiftshader.manifest_path(cache_dir)
        return manifest if manifest.is_file() else None

    def provide(self, cache_dir: Path) -> Path:
        return swiftshader.ensure(cache_dir)


@dataclass(frozen=True)
class Machine:
    """The machine's own drivers: no loader variable is set, the loader reads its own configuration."""

    def locate(self, cache_dir: Path) -> None:
        return None

    def provide(self, cache_dir: Path) -> None:
        return None


@dataclass(frozen=True)
class Planted:
    """A deliberate fault: a manifest, written into the cache, that names a library which does not exist."""

    library: str

    def locate(self, cache_dir: Path) -> None:
        return None  # nothing to look at before a run writes it

    def provide(self, cache_dir: Path) -> Path:
        manifest = cache_dir / "icd" / "bogus_icd.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps({"file_format_version": "1.0.0", "ICD": {"library_path": self.library, "api_version": "1.0.0"}})
        )
        return manifest


Finder = Installed | Pinned | Machine | Planted


@dataclass(frozen=True)
class Row:
    api: str  # VULKAN or OPENCL
    name: str  # what --icd names
    find: Finder  # how it is found
    loader_vars: tuple[str, ...]  # of LOADER_VARS[api]: each set to the file found
    image: Path | None = None  # where docker/Dockerfile puts it in the image; None: not there


def _by_name(*rows: Row) -> dict[str, Row]:
    return {r.name: r for r in rows}


TABLE: dict[str, dict[str, Row]] = {
    VULKAN: _by_name(
        Row(
            VULKAN,
            "lavapipe",
            Installed(
                lambda: LAVAPIPE_GLOBS,  # looked up when used (tests point it elsewhere)
                "Mesa lavapipe is not installed",
                "apt-get install mesa-vulkan-drivers (or use the docker runner)",
                ("mesa-vulkan-drivers",),
            ),
            LOADER_VARS[VULKAN],
            Path("/opt/mnnrepro/icd/lavapipe.json"),
        ),
        Row(VULKAN, "swiftshader", Pinned(), LOADER_VARS[VULKAN], Path("/opt/mnnrepro/icd/swiftshader.json")),
        Row(VULKAN, "host", Machine(), LOADER_VARS[VULKAN]),
        Row(VULKAN, "bogus", Planted("/nonexistent/libvk_bogus.so"), LOADER_VARS[VULKAN]),
    ),
    OPENCL: _by_name(),  # the opencl variant uses the machine's OpenCL drivers (preflight.opencl.check_opencl)
}


def rows() -> list[Row]:
    """Every row, API by API."""
    return [r for by_api in TABLE.values() for r in by_api.values()]


def names() -> tuple[str, ...]:
    return tuple(r.name for r in rows())


def row(name: str) -> Row | None:
    return next((r for r in rows() if r.name == name), None)


KNOWN = names()  # one list of names; settings validates them


@dataclass(frozen=True)
class Icd:
    name: str
    manifest: Path | None  # the file the loader variables name (a Vulkan manifest, an OpenCL vendor file)
    env: dict[str, str] = field(default_factory=dict)


def loader_env(r: Row, found: Path | None) -> dict[str, str]:
    """The row's loader variables, each naming what was found (nothing found: the loader's own choice)."""
    return {var: str(found) for var in r.loader_vars} if found is not None else {}


def resolve(name: str, cache_dir: Path, runner: str = "host") -> Icd:
    """The ICD a run of this runner uses, fetching (SwiftShader) or writing (bogus) what it needs."""
    r = row(name)
    if r is None:
        raise EnvironmentProblem(f"unknown ICD {name!r}", hint=f"choose from {', '.join(names())}")
    if runner == "docker" and r.image is not None:
        return Icd(name, r.image, loader_env(r, r.image))
    if runner == "docker" and isinstance(r.find, Installed | Pinned):
        raise EnvironmentProblem(f"ICD {name} is not in the image (docker/Dockerfile)", hint="use --runner host")
    found = r.find.provide(cache_dir)
    return Icd(name, found, loader_env(r, found))
