"""The build-and-run image (docker/Dockerfile): base image, bootstrap without a registry, content-keyed builds.

Base image resolution: present locally -> pulled -> (only for the default Debian base) bootstrapped with
debootstrap from the Debian mirror this machine's apt already uses, and imported. The toolchain image's tag
is a hash of docker/, the SwiftShader pin, the base image's id and the optional host CA bundle, so a second
run finds it and builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import swiftshader
from .errors import BuildError, EnvironmentProblem
from .fixtures import ROOT
from .progress import Progress
from .runner import host_command

DOCKER_DIR = ROOT / "docker"
DEFAULT_BASE = "debian:bookworm-slim"
BOOTSTRAP_REPO, BOOTSTRAP_TAG = "mnnrepro/debian", "bookworm-bootstrap"
BOOTSTRAP_IMAGE = f"{BOOTSTRAP_REPO}:{BOOTSTRAP_TAG}"
IMAGE_REPO = "mnnrepro/toolchain"
DEBOOTSTRAP_TIMEOUT_S = 1800.0  # a minimal bookworm: ~2-3 min here; generous for slow mirrors


def docker_sdk() -> Any:
    """The Docker SDK module, or EnvironmentProblem. Without the SDK, `import docker` run from the checkout
    finds the repository's docker/ folder (the image) as a namespace package: no __file__, no from_env."""
    try:
        import docker
    except ImportError as exc:
        raise EnvironmentProblem("the Docker SDK for Python is not installed", hint="pip install docker") from exc
    if getattr(docker, "__file__", None) is None or not hasattr(docker, "from_env"):
        where = ", ".join(str(p) for p in getattr(docker, "__path__", [])) or "a module without from_env"
        raise EnvironmentProblem(
            f"the Docker SDK for Python is not installed (`import docker` found {where}, not the SDK)",
            hint="pip install docker",
        )
    return docker


def connect(timeout: float = 30) -> Any:
    """A Docker SDK client that has answered a ping, or EnvironmentProblem saying what to do.

    timeout: seconds for each request to the engine (preflight asks with a short one)."""
    docker = docker_sdk()
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:
        text = str(exc)
        hint = "start it (systemctl start docker, or `dockerd &` as root), or use --runner host"
        if "Permission denied" in text:
            hint = "the engine's socket is not yours: join the docker group (or run as root), or use --runner host"
        raise EnvironmentProblem(f"no Docker engine answers ({type(exc).__name__}: {text[:160]})", hint=hint) from exc
    return client


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror URL this machine's apt uses (deb822 .sources or a classic sources.list)."""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        text = path.read_text(errors="replace")
        for block in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", block, re.M) and not re.search(r"^Enabled:\s*no", block, re.M):
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m and "security" not in m.group(1):
                    return m.group(1)
    classic = apt_dir / "sources.list"
    if classic.is_file():
        for line in classic.read_text(errors="replace").splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    raise EnvironmentProblem(
        "no Debian bookworm mirror found in /etc/apt/sources*",
        hint="set MNNREPRO_DEBIAN_MIRROR (the debian_mirror setting) to a Debian mirror URL",
    )


def _has_image(client: Any, name: str) -> bool:
    import docker

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def bootstrap_base(client: Any, *, mirror: str | None = None, say: Callable[[str], None] = print) -> str:
    """debootstrap a minimal bookworm root and import it as BOOTSTRAP_IMAGE. Needs root and debootstrap."""
    if shutil.which("debootstrap") is None:
        raise EnvironmentProblem("debootstrap is not installed", hint="apt-get install debootstrap")
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "bootstrapping the base image needs root (debootstrap)",
            hint="run `sudo python -m mnnrepro image bootstrap` once; it is cached afterwards",
        )
    url = mirror or debian_mirror()
    work = Path(tempfile.mkdtemp(prefix="mnnrepro-rootfs-"))
    try:
        say(f"bootstrapping Debian bookworm from {url} (one time, a few minutes)")
        host_command(
            ["debootstrap", "--variant=minbase", "bookworm", str(work / "root"), url],
            timeout_s=DEBOOTSTRAP_TIMEOUT_S,
            what=f"debootstrap bookworm from {url}",
            retries=1,
            say=say,
            hint="check the mirror is reachable over http, or set MNNREPRO_DEBIAN_MIRROR",
            error=EnvironmentProblem,
        )
        shutil.rmtree(work / "root" / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tar = work / "rootfs.tar"
        host_command(["tar", "-C", str(work / "root"), "-cf", str(tar), "."], timeout_s=600, what="pack the rootfs")
        with open(tar, "rb") as f:
            client.images.client.api.import_image_from_data(f.read(), repository=BOOTSTRAP_REPO, tag=BOOTSTRAP_TAG)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"imported {BOOTSTRAP_IMAGE}")
    return BOOTSTRAP_IMAGE


def ensure_base(client: Any, base: str, *, mirror: str | None = None, say: Callable[[str], None] = print) -> str:
    """Return a base image name that exists locally, pulling or bootstrapping when allowed."""
    import docker

    if _has_image(client, base):
        return base
    if base == DEFAULT_BASE and _has_image(client, BOOTSTRAP_IMAGE):
        return BOOTSTRAP_IMAGE  # made earlier because the registry was out of reach: no network round trip
    try:
        say(f"pulling base image {base} ...")
        client.images.pull(base)
        return base
    except docker.errors.DockerException as exc:
        reason = str(exc).splitlines()[0][:200]
    if base != DEFAULT_BASE:
        raise EnvironmentProblem(
            f"base image {base!r} is not present and cannot be pulled ({reason})",
            hint=f"pull or load it where a registry is reachable, or use the default {DEFAULT_BASE}, which the suite "
            "can bootstrap itself: python -m mnnrepro image bootstrap",
        )
    say(f"cannot pull {base} ({reason}); using a bootstrapped Debian instead")
    return BOOTSTRAP_IMAGE if _has_image(client, BOOTSTRAP_IMAGE) else bootstrap_base(client, mirror=mirror, say=say)


def _host_ca(path: Path | None) -> bytes | None:
    if path is None:
        return None
    if not path.is_file():
        raise EnvironmentProblem(f"host CA bundle {path} does not exist")
    return path.read_bytes()


def image_key(base_id: str, ca: bytes | None) -> str:
    h = hashlib.sha256()
    for p in sorted(DOCKER_DIR.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(DOCKER_DIR).as_posix().encode() + b"\0" + p.read_bytes())
    h.update(f"{swiftshader.VERSION}:{swiftshader.LIBRARY_SHA256}:{base_id}".encode())
    h.update(ca or b"")
    return h.hexdigest()


def image_tag(client: Any, base: str, host_ca: Path | None) -> str:
    """The tag the toolchain image has for these inputs (its content key), without building anything; the
    base must be present (``mnnrepro image key``: a CI cache key known before the image is)."""
    if not _has_image(client, base) and base == DEFAULT_BASE and _has_image(client, BOOTSTRAP_IMAGE):
        base = BOOTSTRAP_IMAGE  # what ensure_base uses where the default cannot be pulled
    if not _has_image(client, base):
        raise EnvironmentProblem(
            f"base image {base!r} is not present: the image key names its id",
            hint="python -m mnnrepro image bootstrap (or docker pull/load the base)",
        )
    return f"{IMAGE_REPO}:{image_key(client.images.get(base).id, _host_ca(host_ca))[:16]}"


def ensure_image(
    client: Any,
    *,
    base: str,
    cache_dir: Path,
    host_ca: Path | None = None,
    mirror: str | None = None,
    say: Callable[[str], None] = print,
) -> str:
    """The toolchain image's tag, building it only when docker/, the pins, the base or the CA changed."""
    base_name = ensure_base(client, base, mirror=mirror, say=say)
    tag = image_tag(client, base_name, host_ca)
    ca = _host_ca(host_ca)
    if _has_image(client, tag):
        return tag
    manifest = swiftshader.ensure(cache_dir)
    ctx = Path(tempfile.mkdtemp(prefix="mnnrepro-image-"))
    log = cache_dir / "logs" / f"image-{tag.split(':')[1]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(DOCKER_DIR / "Dockerfile", ctx / "Dockerfile")
        (ctx / "swiftshader").mkdir()
        shutil.copy2(manifest.parent / swiftshader.LIBRARY, ctx / "swiftshader" / swiftshader.LIBRARY)
        (ctx / "host-ca").mkdir()
        (ctx / "host-ca" / "README").write_text("optional host CA bundle goes here as *.crt\n")
        if ca is not None:
            (ctx / "host-ca" / "host.crt").write_bytes(ca)
        say(f"building image {tag} from {base_name} (log: {log})")
        args = {
            "BASE_IMAGE": base_name,
            "SWIFTSHADER_SHA256": swiftshader.LIBRARY_SHA256,
            "HOST_CA": "yes" if ca else "none",
        }
        # Minutes of apt and compiles: "step 3/9" every 10 s on the console, every line in the log.
        with open(log, "w") as out, Progress("image build", say=say) as progress:
            error = None
            for chunk in client.api.build(path=str(ctx), tag=tag, buildargs=args, rm=True, forcerm=True, decode=True):
                if "stream" in chunk:
                    out.write(chunk["stream"])
                    progress.feed(chunk["stream"])
                if "error" in chunk:
                    error = chunk["error"]
                    out.write(f"ERROR: {error}\n")
                    progress.outcome = "failed"
        if error or not _has_image(client, tag):
            tail = "\n    ".join(log.read_text(errors="replace").splitlines()[-15:])
            raise BuildError(
                f"image build failed: {error}\n    {tail}",
                hint=f"full log: {log}; check the base image {base_name!r} and the Debian mirror",
            )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag
