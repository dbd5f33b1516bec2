"""The container runner: same verdicts as the host, and clear messages when Docker cannot do its part."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import image
from mnnrepro.errors import EnvironmentProblem

from .conftest import REFS, ROOT, need_source

pytestmark = [pytest.mark.integration]


def engine() -> Any:
    try:
        return image.connect()
    except EnvironmentProblem as exc:
        pytest.skip(f"no Docker engine: {exc.message}")


def mnnrepro(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "mnnrepro", *args], capture_output=True, text=True, env=full, timeout=1800
    )


@pytest.mark.slow
def test_docker_and_host_runners_give_the_same_verdicts(run_session: Any) -> None:
    engine()
    host = run_session("vulkan", REFS[0], "--runner", "host")
    if host["exit"] == EnvironmentProblem.exit_code and not host["summary"]:  # e.g. a fresh container with only Docker
        pytest.skip("the host runner cannot run here (its preflight stopped it): " + host["output"][-300:])
    docker = run_session("vulkan", REFS[0], "--runner", "docker")
    assert host["summary"]["header"]["runner"] == "host"
    assert docker["summary"]["header"]["runner"] == "docker"
    verdicts = {r: {c["cell"]: c["verdict"] for c in s["summary"]["cells"]} for r, s in (("h", host), ("d", docker))}
    assert verdicts["h"] == verdicts["d"], verdicts
    assert set(verdicts["d"].values()) == {"PASS", "REPRODUCED", "FIXED"}
    assert docker["exit"] == host["exit"] == 0


@pytest.mark.slow
def test_missing_libvulkan_in_the_container_is_not_exercised(run_session: Any) -> None:
    engine()
    result = run_session(
        "vulkan_buffer", REFS[0], "--runner", "docker", "--icd", "lavapipe", "--fault", "hide-libvulkan"
    )
    c = next(c for c in result["summary"]["cells"] if c["variant"] == "vulkan-buffer")
    assert c["verdict"] == "NOT-EXERCISED"
    assert "libvulkan.so" in c["reason"]
    assert result["exit"] == 1


def test_stopped_daemon_says_what_to_do(tmp_path: Path) -> None:
    need_source(REFS[0])
    proc = mnnrepro(
        "run",
        "cpu",
        "--runner",
        "docker",
        "--results-dir",
        str(tmp_path),
        "--no-clone",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-such-docker.sock"},
    )
    assert proc.returncode == 6, proc.stderr
    assert "no Docker engine answers" in proc.stderr
    assert "what to do:" in proc.stderr and "dockerd" in proc.stderr


def test_bad_base_image_fails_clearly_and_keeps_what_was_built(tmp_path: Path) -> None:
    client = engine()
    need_source(REFS[0])
    images_before = {t for i in client.images.list() for t in i.tags}
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnnrepro" / "variants"
    before = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    proc = mnnrepro(
        "run",
        "cpu",
        "--runner",
        "docker",
        "--base-image",
        "mnnrepro/no-such-base:0",
        "--results-dir",
        str(tmp_path),
        "--no-clone",
    )
    assert proc.returncode == 6, proc.stderr
    assert "mnnrepro/no-such-base:0" in proc.stderr and "cannot be pulled" in proc.stderr
    assert "what to do:" in proc.stderr
    after = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert after == before
    assert images_before <= {t for i in client.images.list() for t in i.tags}
