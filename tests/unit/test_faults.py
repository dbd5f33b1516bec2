"""Planted faults: names are validated and driver plants become the driver's environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnnrepro import faults
from mnnrepro.errors import ConfigError, EnvironmentProblem


def test_driver_plants_become_environment() -> None:
    assert faults.driver_env(("plant-crash",)) == {"MNNREPRO_PLANT": "crash@sgd_step:0"}
    assert faults.driver_env(("plant-hang",)) == {"MNNREPRO_PLANT": "hang@forward:1"}
    assert faults.driver_env(("hide-libvulkan",)) == {}


def test_unknown_fault_is_rejected() -> None:
    with pytest.raises(ConfigError, match="segfault-please"):
        faults.validate(("segfault-please",))


def test_docker_hide_libvulkan_runs_as_root_and_removes_the_unversioned_name(tmp_path: object) -> None:
    argv, env = faults.hide_libvulkan(["drv", "--x"], tmp_path, "docker")  # type: ignore[arg-type]
    assert env == {"MNNREPRO_CONTAINER_AS_ROOT": "1"}
    assert argv[-2:] == ["drv", "--x"] and "libvulkan.so " in argv[2] + " " and "libvulkan.so.1" not in argv[2]


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


def test_a_machine_without_private_mount_namespaces_cannot_plant_hide_libvulkan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe (unshare --mount true, through runner.host_command) fails: an environment problem quoting its stderr.
    fake_tool(tmp_path / "bin", "unshare", 'echo "unshare: unshare failed: Operation not permitted" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(EnvironmentProblem) as caught:
        faults.check_can_plant(("hide-libvulkan",), "host")
    assert caught.value.exit_code == 6
    assert caught.value.message == (
        "the hide-libvulkan fault needs a private mount namespace, which this machine does not allow "
        "(unshare --mount: unshare: unshare failed: Operation not permitted); a container without CAP_SYS_ADMIN "
        "cannot plant it"
    )
    assert "--runner docker" in caught.value.hint


def test_a_machine_with_private_mount_namespaces_can_plant_hide_libvulkan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "argv"
    fake_tool(tmp_path / "bin", "unshare", f'echo "$@" > {seen}')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    faults.check_can_plant(("hide-libvulkan",), "host")
    assert seen.read_text() == "--mount true\n"
    faults.check_can_plant(("plant-crash",), "host")  # nothing to probe: no process either way
