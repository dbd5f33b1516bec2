"""The container runner: the same small interface as HostRunner, one container per command.

Host paths are mounted at the same paths inside the container, so command lines, build trees and result
directories mean the same on both runners: the checkout read-only, the cache and results read-write, an
explicit MNN source read-only. Containers have no network, run with the invoking user's uid:gid, are killed
at their time limit, and are always removed unless MNNREPRO_KEEP_CONTAINERS=1 (kept on failure, for debugging).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import Completed, OnLine

# An environment entry that asks for this one command to run as root inside its throwaway container
# (planted faults that remove files from the image). It is removed before the command sees its environment.
AS_ROOT = "MNNREPRO_CONTAINER_AS_ROOT"


@dataclass
class DockerRunner:
    client: Any
    image: str
    read_only: tuple[Path, ...] = ()
    read_write: tuple[Path, ...] = ()
    name: str = "docker"
    streams_lines: bool = field(default=True, init=False, repr=False)
    keep_on_failure: bool = field(default_factory=lambda: os.environ.get("MNNREPRO_KEEP_CONTAINERS") == "1")

    @property
    def image_id(self) -> str:
        """The image's content digest (its tag names the inputs; this names the result)."""
        return str(self.client.images.get(self.image).id)

    def _volumes(self) -> dict[str, dict[str, str]]:
        vols: dict[str, dict[str, str]] = {}
        for path in self.read_write:
            path.mkdir(parents=True, exist_ok=True)
            vols[str(path)] = {"bind": str(path), "mode": "rw"}
        for path in self.read_only:
            if str(path) not in vols:
                vols[str(path)] = {"bind": str(path), "mode": "ro"}
        return vols

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        on_line: OnLine | None = None,
    ) -> Completed:
        import requests

        import docker

        environment = dict(env or {})
        as_root = environment.pop(AS_ROOT, "") == "1"
        environment.setdefault("HOME", "/tmp")
        user = "0:0" if as_root else f"{os.getuid()}:{os.getgid()}"
        start = time.monotonic()
        container = self.client.containers.create(
            self.image,
            list(argv),
            environment=environment,
            working_dir=str(cwd) if cwd else None,
            volumes=self._volumes(),
            user=user,
            network_mode="none",
            init=True,
            detach=True,
        )
        timed_out = False
        code: int | None = None
        follower: threading.Thread | None = None
        try:
            container.start()
            if on_line is not None:
                # Only for progress: the files below are still written from the container's full logs.
                follower = threading.Thread(
                    target=_follow, args=(container, on_line), name="container output", daemon=True
                )
                follower.start()
            try:
                status = container.wait(timeout=timeout_s)
                code = int(status.get("StatusCode", 1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True
                container.kill()
                code = int(container.wait(timeout=30).get("StatusCode", 137))
            except BaseException:
                # Ctrl-C / SIGTERM (mnnrepro.interrupts): the container would run on without us; kill it, and
                # the `finally` below removes it.
                with contextlib.suppress(Exception):
                    container.kill()
                raise
            out = container.logs(stdout=True, stderr=stdout_path is None and stderr_path is None)
            err = container.logs(stdout=False, stderr=True) if (stdout_path or stderr_path) else b""
            if follower is not None:
                follower.join(timeout=10)  # the stream ends with the container; never wait on it for long
        finally:
            failed = timed_out or code != 0
            if not (self.keep_on_failure and failed):
                try:
                    container.remove(force=True)
                except docker.errors.APIError:
                    pass
        if stdout_path:
            stdout_path.write_bytes(out)
        if stderr_path:
            stderr_path.write_bytes(err)
        elif stdout_path and err:
            with open(stdout_path, "ab") as f:
                f.write(err)
        text = "" if stdout_path else out.decode(errors="replace")
        return Completed(
            argv=tuple(argv),
            returncode=code,
            duration_s=time.monotonic() - start,
            timed_out=timed_out,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            output=text,
        )


def _follow(container: Any, on_line: OnLine) -> None:
    """Pass the container's output (stdout and stderr, as they come) to on_line a line at a time."""
    pending = b""
    try:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                on_line(raw.decode(errors="replace").rstrip("\r"))
        if pending:
            on_line(pending.decode(errors="replace").rstrip("\r"))
    except Exception:
        pass  # progress only: a dropped stream or a failing display costs the display, never the run
