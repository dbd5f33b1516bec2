"""Vulkan ICD (driver) selection. Each run names its ICD explicitly through the loader's environment.

MNN always takes physical device 0, so the loader is told to load exactly one driver:
- lavapipe: Mesa's software rasterizer (Debian mesa-vulkan-drivers), "llvmpipe (...)"
- swiftshader: Google SwiftShader from a pinned npm package (see swiftshader.py)
- host: whatever Vulkan driver the machine has installed (a real GPU), no override
- bogus: a manifest pointing at a library that does not exist; fault injection for NOT-EXERCISED tests
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import swiftshader
from .errors import EnvironmentProblem
from .settings import ICD_NAMES

KNOWN = ICD_NAMES  # one list of names; settings validates them

LAVAPIPE_GLOBS = ("/usr/share/vulkan/icd.d/lvp_icd*.json", "/usr/local/share/vulkan/icd.d/lvp_icd*.json")


@dataclass(frozen=True)
class Icd:
    name: str
    manifest: Path | None
    env: dict[str, str] = field(default_factory=dict)


def _loader_env(manifest: Path) -> dict[str, str]:
    # VK_ICD_FILENAMES for older loaders, VK_DRIVER_FILES for newer ones (which prefer it).
    return {"VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest)}


# Where docker/Dockerfile puts the manifests inside the image.
IMAGE_MANIFESTS = {
    "lavapipe": Path("/opt/mnnrepro/icd/lavapipe.json"),
    "swiftshader": Path("/opt/mnnrepro/icd/swiftshader.json"),
}


def resolve(name: str, cache_dir: Path, runner: str = "host") -> Icd:
    if runner == "docker" and name in IMAGE_MANIFESTS:
        return Icd(name, IMAGE_MANIFESTS[name], _loader_env(IMAGE_MANIFESTS[name]))
    if name == "lavapipe":
        found = sorted(p for g in LAVAPIPE_GLOBS for p in glob.glob(g))
        if not found:
            raise EnvironmentProblem(
                "Mesa lavapipe is not installed (no lvp_icd*.json)",
                hint="apt-get install mesa-vulkan-drivers (or use the docker runner)",
            )
        manifest = Path(found[0])
        return Icd(name, manifest, _loader_env(manifest))
    if name == "swiftshader":
        manifest = swiftshader.ensure(cache_dir)
        return Icd(name, manifest, _loader_env(manifest))
    if name == "host":
        return Icd(name, None, {})
    if name == "bogus":
        manifest = cache_dir / "icd" / "bogus_icd.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps(
                {
                    "file_format_version": "1.0.0",
                    "ICD": {"library_path": "/nonexistent/libvk_bogus.so", "api_version": "1.0.0"},
                }
            )
        )
        return Icd(name, manifest, _loader_env(manifest))
    raise EnvironmentProblem(f"unknown ICD {name!r}", hint=f"choose from {', '.join(KNOWN)}")
