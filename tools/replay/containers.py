"""Job containers through the docker CLI: the images that stand in for `container:` and `runs-on:`, the
registry mounts every job gets, and the commands run in a job (exec, streamed output, files in and out)."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ReplayError

LABEL = "mnnrepro.replay"
BASE_IMAGE = "mnnrepro/debian:bookworm-bootstrap"
# The Debian 12 images a `container:` may name; the bootstrapped one stands in for them (no registry here).
DEBIAN_12 = {"debian:12", "debian:bookworm", "debian:12-slim", "debian:bookworm-slim"}
# What GitHub's ubuntu runner images have and a Debian 12 container lacks, for `runs-on` jobs.
RUNNER_PACKAGES = ("docker.io", "git", "python3", "python3-venv", "ca-certificates", "sudo", "npm")
RUNS_ON_PREFIX = "ubuntu-"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_CONTAINER = "/usr/local/share/ca-certificates/mnnrepro-replay-host.crt"
MIRROR_IN_CONTAINER = "/mnt/mnn-mirror"


def _docker(*args: str, check: bool = True, capture: bool = True, stdin: bytes | None = None) -> str:
    res = subprocess.run(["docker", *args], input=stdin, capture_output=capture)
    if check and res.returncode != 0:
        err = (res.stderr or b"").decode(errors="replace").strip()
        raise ReplayError(f"docker {' '.join(args[:3])} ... failed ({res.returncode}): {err[-600:]}")
    return (res.stdout or b"").decode(errors="replace") if capture else ""


def registry_mounts() -> list[tuple[str, str, bool]]:
    """This machine's apt sources, pip configuration and CA bundle, for every job container (read-only). The CA
    bundle goes where update-ca-certificates adds it to the container's own (a job installing ca-certificates
    keeps it), and is copied to the bundle's usual path when the container starts."""
    mounts: list[tuple[str, str, bool]] = []
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        mounts.append((str(src), str(src), True))
    classic = Path("/etc/apt/sources.list")
    # The bootstrapped image's own sources.list names the same mirror; hide it unless this machine has one.
    mounts.append((str(classic) if classic.is_file() else "/dev/null", str(classic), True))
    for path in (Path("/etc/pip.conf"), Path("/etc/xdg/pip")):
        if path.exists():
            mounts.append((str(path), str(path), True))
    if HOST_CA.is_file():
        mounts.append((str(HOST_CA), CA_IN_CONTAINER, True))
    return mounts


PREPARE = (
    f'if [ -f {CA_IN_CONTAINER} ]; then mkdir -p /etc/ssl/certs && cp {CA_IN_CONTAINER} "{HOST_CA}"; fi; '
    'if [ "$#" -gt 0 ]; then mkdir -p "$@"; fi'
)


class Container:
    """One job's container: created with `sleep infinity`, commands run with `docker exec`, always removed."""

    def __init__(
        self,
        image: str,
        *,
        labels: Mapping[str, str],
        mounts: Sequence[tuple[str, str, bool]] = (),
        options: Sequence[str] = (),
    ) -> None:
        self.image, self.labels, self.mounts, self.options = image, dict(labels), list(mounts), list(options)
        self.id = ""

    def __enter__(self) -> Container:
        args = ["create", "--init", "--entrypoint", "sleep"]
        for k, v in self.labels.items():
            args += ["--label", f"{k}={v}"]
        for src, dst, ro in self.mounts:
            args += ["-v", f"{src}:{dst}" + (":ro" if ro else "")]
        args += [*self.options, self.image, "infinity"]
        self.id = _docker(*args).strip()
        _docker("start", self.id)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.id:
            _docker("rm", "-f", self.id, check=False)

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = ["docker", "exec", "-i"]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        if workdir:
            cmd += ["-w", workdir]
        res = subprocess.run([*cmd, self.id, *argv], input=stdin or b"", capture_output=True)
        if check and res.returncode != 0:
            raise ReplayError(
                f"in the job container: {shlex.join(argv)[:200]} exited {res.returncode}: "
                + res.stderr.decode(errors="replace").strip()[-600:]
            )
        return res

    def stream(
        self, argv: Sequence[str], *, env: Mapping[str, str], workdir: str | None, log: Callable[[str], None]
    ) -> int:
        """Run a command, passing its output through line by line; its exit code."""
        cmd = ["docker", "exec"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        if workdir:
            cmd += ["-w", workdir]
        with subprocess.Popen([*cmd, self.id, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                log(raw.decode(errors="replace").rstrip("\n"))
            return proc.wait()

    def write(self, path: str, data: bytes) -> None:
        self.exec(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path], stdin=data)

    def read(self, path: str) -> str:
        return self.exec(["cat", path]).stdout.decode(errors="replace")

    def put_tree(self, src: Path, dest: str) -> None:
        """Copy a host directory's content into dest (modes kept, as a checkout or an unpacked tar has them)."""
        with tempfile.TemporaryFile() as tmp:
            subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], stdout=tmp, check=True)
            tmp.seek(0)
            res = subprocess.run(
                ["docker", "exec", "-i", self.id, "sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf -', "sh", dest],
                stdin=tmp,
                capture_output=True,
            )
        if res.returncode != 0:
            raise ReplayError(f"copying {src} into the container failed: {res.stderr.decode(errors='replace')}")

    def get_tar(self, argv: Sequence[str], out: Path, stdin: bytes = b"") -> int:
        with open(out, "wb") as f:
            res = subprocess.run(
                ["docker", "exec", "-i", self.id, *argv], input=stdin, stdout=f, stderr=subprocess.PIPE
            )
        if res.returncode != 0:
            sys.stdout.write(res.stderr.decode(errors="replace"))
        return res.returncode


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


SELF_HOSTED = (
    "{name} runs on a self-hosted runner (runs-on: {runs_on}): the replay cannot run it. Its containers stand in "
    "for GitHub's ubuntu-* runners and have no GPU (nor the machine's own Vulkan or OpenCL driver)"
)
SELF_HOSTED_HINT = (
    "run the job's commands by hand on the GPU machine (README, Real GPUs): nox -s doctor, then the sessions with "
    "-- --icd host --runner host"
)


def self_hosted(job: Mapping[str, Any]) -> bool:
    """A job for a self-hosted runner (the GPU jobs): nothing here stands in for that machine."""
    runs_on = job.get("runs-on")
    labels = [runs_on] if isinstance(runs_on, str) else list(runs_on or [])
    return "self-hosted" in (str(label) for label in labels)


def job_image(job: Mapping[str, Any], say: Callable[[str], None]) -> tuple[str, list[str], bool]:
    """(image, docker create options, runs on the host) for a job."""
    container = job.get("container")
    if container is not None:
        spec = {"image": container} if isinstance(container, str) else dict(container)
        unknown = sorted(set(spec) - {"image", "options"})
        if unknown:
            raise ReplayError(f"container: {', '.join(unknown)} is not supported by the replay")
        image = str(spec["image"])
        options = shlex.split(str(spec.get("options", "")))
        if not image_exists(image):
            if image not in DEBIAN_12:
                raise ReplayError(f"container image {image} is not on this machine (no registry)")
            if not image_exists(BASE_IMAGE):
                raise ReplayError(
                    f"{BASE_IMAGE} (the stand-in for {image}) is missing",
                    hint="python -m mnnrepro image bootstrap (root), or wait for the suite to make it",
                )
            say(f"container {image}: using {BASE_IMAGE} (Debian 12 bootstrapped from this machine's mirror)")
            image = BASE_IMAGE
        return image, options, False
    runs_on = job.get("runs-on")
    labels = [runs_on] if isinstance(runs_on, str) else list(runs_on or [])
    if self_hosted(job):
        raise ReplayError(SELF_HOSTED.format(name=job.get("name", "this job"), runs_on=runs_on), hint=SELF_HOSTED_HINT)
    if not labels or not all(str(label).startswith(RUNS_ON_PREFIX) for label in labels):
        raise ReplayError(f"runs-on: {runs_on!r}: the replay stands in for {RUNS_ON_PREFIX}* runners only")
    return runner_image(say), [], True


def runner_image(say: Callable[[str], None]) -> str:
    """The stand-in for GitHub's ubuntu image: Debian 12 + RUNNER_PACKAGES, made once and kept (labelled)."""
    if not image_exists(BASE_IMAGE):
        raise ReplayError(f"{BASE_IMAGE} is missing", hint="python -m mnnrepro image bootstrap (root)")
    base_id = _docker("image", "inspect", "-f", "{{.Id}}", BASE_IMAGE).strip()
    key = hashlib.sha256(f"2:{base_id}:{' '.join(RUNNER_PACKAGES)}".encode()).hexdigest()[:16]
    tag = f"mnnrepro/replay-runner:{key}"
    if image_exists(tag):
        return tag
    say(
        f"making {tag}: {BASE_IMAGE} + apt-get install {' '.join(RUNNER_PACKAGES)} (GitHub's ubuntu runners have "
        "these preinstalled; this replay pre-installs them for runs-on jobs)"
    )
    with Container(BASE_IMAGE, labels={LABEL: "runner-image"}, mounts=registry_mounts()) as c:
        c.exec(["sh", "-c", PREPARE, "sh"])
        res = c.exec(
            [
                "sh",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                + " ".join(RUNNER_PACKAGES),
            ],
            check=False,
        )
        if res.returncode != 0:
            raise ReplayError("installing the runner packages failed: " + res.stdout.decode(errors="replace")[-800:])
        changes = [f"LABEL {LABEL}=runner-image", "ENTRYPOINT []", 'CMD ["bash"]']
        _docker("commit", *(x for change in changes for x in ("--change", change)), c.id, tag)
    return tag
