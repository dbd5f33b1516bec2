"""The docker runner: the SDK, the engine, the toolchain image (or a base to build it from), same-path mounts
when the suite itself runs in a container, and what containers offer instead of this machine's drivers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .. import fixtures, icd, image, swiftshader
from ..docker_runner import AS_ROOT, DockerRunner
from ..errors import EnvironmentProblem, MnnReproError
from ..image import docker_sdk as docker_sdk  # re-exported: checks call it through this module
from ..settings import Settings
from .base import FAIL, OK, WARN, Finding, _swiftshader_fetchable


def check_docker(settings: Settings, *, timeout_s: float = 3.0) -> list[Finding]:
    """The SDK, the engine, and whether the toolchain image or a base to build it from is there."""

    try:
        sdk = docker_sdk()
    except EnvironmentProblem as exc:
        return [Finding(FAIL, "docker SDK", exc.message, exc.hint)]
    findings = [Finding(OK, "docker SDK", f"{getattr(sdk, '__version__', '?')} ({Path(sdk.__file__).parent})")]
    try:
        client = image.connect(timeout=timeout_s)
    except EnvironmentProblem as exc:
        return [*findings, Finding(FAIL, "docker engine", exc.message, exc.hint)]
    try:
        version = client.version().get("Version", "?")
        findings.append(Finding(OK, "docker engine", f"answers (server {version})"))
        return findings + _check_image(client, settings) + check_same_paths(client, settings)
    except MnnReproError as exc:
        return [*findings, Finding(FAIL, "docker image", exc.message, exc.hint)]
    except Exception as exc:  # the SDK raises requests' and its own errors alike
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        return [*findings, Finding(FAIL, "docker engine", problem, "check the engine's logs")]


def _exists(client: Any, name: str) -> Any:
    try:
        return client.images.get(name)
    except Exception:  # docker.errors.ImageNotFound, or a malformed name
        return None


def _check_image(client: Any, settings: Settings) -> list[Finding]:

    if settings.host_ca is not None and not settings.host_ca.is_file():
        return [Finding(FAIL, "docker image", f"host CA bundle {settings.host_ca} does not exist", "fix --host-ca")]
    base = settings.base_image
    found = _exists(client, base)
    if found is None and base == image.DEFAULT_BASE:
        base, found = image.BOOTSTRAP_IMAGE, _exists(client, image.BOOTSTRAP_IMAGE)
    if found is None:
        can_bootstrap = shutil.which("debootstrap") is not None and os.geteuid() == 0
        detail = f"neither the toolchain image nor its base {settings.base_image} is here: the base will be pulled"
        if settings.base_image != image.DEFAULT_BASE:
            return [
                Finding(WARN, "docker image", detail, f"docker pull {settings.base_image} where a registry answers")
            ]
        return [
            Finding(
                WARN,
                "docker image",
                detail + ("; without a registry it is bootstrapped with debootstrap" if can_bootstrap else ""),
                ""
                if can_bootstrap
                else "without a registry: apt-get install debootstrap, then (root) python -m mnnrepro image bootstrap",
                () if can_bootstrap else ("debootstrap",),
            )
        ]
    ca = settings.host_ca.read_bytes() if settings.host_ca else None
    tag = f"{image.IMAGE_REPO}:{image.image_key(found.id, ca)[:16]}"
    if _exists(client, tag) is not None:
        return [Finding(OK, "docker image", f"{tag} (up to date with docker/, the pins and {base})")]
    building = f"{tag} not built yet: will be built from {base} (a few minutes; apt needs the Debian mirror)"
    if swiftshader.manifest_path(settings.cache_dir).is_file():
        return [Finding(OK, "docker image", building)]
    fetch = _swiftshader_fetchable("docker image", FAIL)
    if fetch.status != OK:
        return [
            Finding(
                FAIL, "docker image", f"{building}, which needs SwiftShader: {fetch.detail}", fetch.fix, fetch.packages
            )
        ]
    return [Finding(OK, "docker image", f"{building}; SwiftShader will be fetched first")]


CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def in_container() -> bool:
    return any(m.exists() for m in CONTAINER_MARKERS)


def check_same_paths(client: Any, settings: Settings, *, force: bool = False) -> list[Finding]:
    """Inside a container that drives the host's engine (a mounted Docker socket), the paths the suite mounts must
    be the same paths on the host: each directory (the checkout, the cache, the results) gets a marker file, and a
    container of a local image must read the same markers at the same paths. Outside a container: nothing to do."""
    if not (force or in_container()):
        return []
    img = next((n for n in (settings.base_image, image.BOOTSTRAP_IMAGE) if _exists(client, n) is not None), None)
    if img is None:
        return [Finding(WARN, "same-path mounts", "no local image to probe them with yet (checked on the next run)")]
    dirs = [fixtures.ROOT, settings.cache_dir, settings.results_dir]
    token = os.urandom(8).hex()
    markers: list[Path] = []
    try:  # through the Docker runner: its labels, least privilege, time limit and cleanup
        for d in dirs:  # a read-only checkout cannot take a marker: said below, never a crash of the preflight
            d.mkdir(parents=True, exist_ok=True)
            markers.append(d / f".mnnrepro-same-path-{token}")
            markers[-1].write_text(token + "\n")  # one line each: the probe's output is split on whitespace
        runner = DockerRunner(client, img, read_only=tuple(dirs), home_dir=settings.cache_dir / "container-home")
        script = " ; ".join(f"cat '{m}' 2>/dev/null || echo missing" for m in markers)
        # As root in the container (AS_ROOT): the probe reads what the invoking user owns, whatever its mode (a
        # 0700 results directory, as pytest makes them, is handed over only when a cell writes it).
        seen = runner.run(["sh", "-c", script], env={AS_ROOT: "1"}, timeout_s=60).output.split()
    except Exception as exc:  # the SDK raises requests' and its own errors alike
        return [Finding(WARN, "same-path mounts", f"could not probe them: {type(exc).__name__}: {str(exc)[:160]}")]
    finally:
        for m in markers:
            m.unlink(missing_ok=True)
    seen += ["missing"] * (len(dirs) - len(seen))
    differ = [str(d) for d, got in zip(dirs, seen, strict=False) if got != token]
    if differ:
        return [
            Finding(
                FAIL,
                "same-path mounts",
                "this suite runs in a container, and the Docker engine sees other files at "
                + ", ".join(differ)
                + " (the runner mounts the suite's paths into its containers by name)",
                "mount each of them into this container at its host path (docker run -v P:P), and set TMPDIR to "
                "such a directory for the tests",
            )
        ]
    return [Finding(OK, "same-path mounts", "the checkout, the cache and the results are the same paths on the host")]


def check_icd_in_image(row: icd.Row) -> Finding:
    """An ICD row on the docker runner: docker/Dockerfile puts it into the image (and checks its manifest there), or
    the containers have none of it."""
    label = f"ICD {row.name}"
    if isinstance(row.find, icd.Machine):
        return Finding(
            WARN,
            label,
            f"containers get no GPU: '{row.name}' means the image's own drivers (lavapipe), not this machine's",
            "use --runner host for a real GPU",
        )
    if row.image is None:
        return Finding(FAIL, label, "not in the image (docker/Dockerfile does not install it)", "use --runner host")
    return Finding(OK, label, "in the image (docker/Dockerfile installs it and checks its manifest)")
