"""Planted faults: names are validated and driver plants become the driver's environment."""

from __future__ import annotations

import pytest

from mnnrepro import faults
from mnnrepro.errors import ConfigError


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
