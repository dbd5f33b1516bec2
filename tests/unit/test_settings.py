"""settings.load: defaults -> pyproject [tool.mnnrepro] -> MNNREPRO_* -> command line; unknown keys rejected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnnrepro import settings
from mnnrepro.errors import ConfigError
from mnnrepro.settings import Settings, load


def pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[project]\nname = "x"\n\n[tool.mnnrepro]\n{body}\n')
    return path


def test_defaults_without_pyproject_or_environment(tmp_path: Path) -> None:
    s = load({}, environ={}, pyproject=tmp_path / "absent.toml")
    assert s == Settings()
    assert s.ref == ""
    assert s.source is None
    assert s.git_url == settings.UPSTREAM_GIT_URL
    assert s.icds == ("lavapipe", "swiftshader")
    assert (s.steps, s.jobs, s.runner, s.gdb, s.clone) == (0, 0, "auto", True, True)


def test_empty_tool_table_keeps_defaults(tmp_path: Path) -> None:
    assert load({}, environ={}, pyproject=pyproject(tmp_path, "")) == Settings()


def test_pyproject_values_are_applied_and_coerced(tmp_path: Path) -> None:
    path = pyproject(tmp_path, 'steps = 12\nicds = ["host"]\ngdb = "off"\ncache_dir = "/tmp/c"')
    s = load({}, environ={}, pyproject=path)
    assert s.steps == 12
    assert s.icds == ("host",)
    assert s.gdb is False
    assert s.cache_dir == Path("/tmp/c")


def test_environment_overrides_pyproject(tmp_path: Path) -> None:
    path = pyproject(tmp_path, 'steps = 12\nref = "3.3.0"')
    s = load({}, environ={"MNNREPRO_STEPS": "5", "MNNREPRO_ICDS": "lavapipe, host"}, pyproject=path)
    assert s.steps == 5
    assert s.icds == ("lavapipe", "host")
    assert s.ref == "3.3.0"  # not overridden: the pyproject value stays


def test_command_line_overrides_environment(tmp_path: Path) -> None:
    path = pyproject(tmp_path, "steps = 12")
    s = load({"steps": 7, "ref": "47027e10"}, environ={"MNNREPRO_STEPS": "5", "MNNREPRO_REF": "3.3.0"}, pyproject=path)
    assert (s.steps, s.ref) == (7, "47027e10")


def test_command_line_none_means_not_given(tmp_path: Path) -> None:
    s = load({"steps": None, "gdb": None}, environ={"MNNREPRO_STEPS": "5"}, pyproject=tmp_path / "absent.toml")
    assert s.steps == 5
    assert s.gdb is True


def test_environment_variables_without_prefix_are_ignored(tmp_path: Path) -> None:
    s = load({}, environ={"STEPS": "9", "HOME": "/root", "MNNREPRO": "x"}, pyproject=tmp_path / "absent.toml")
    assert s.steps == 0


def test_crash_dir_variable_is_not_a_setting(tmp_path: Path) -> None:
    s = load({}, environ={"MNNREPRO_CRASH_DIR": "/tmp/x"}, pyproject=tmp_path / "absent.toml")
    assert s == Settings()


def test_environ_none_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNNREPRO_JOBS", "3")
    assert load({}, pyproject=tmp_path / "absent.toml").jobs == 3


def test_unknown_key_in_pyproject_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus") as info:
        load({}, environ={}, pyproject=pyproject(tmp_path, "bogus = 1"))
    assert "[tool.mnnrepro]" in info.value.message
    assert "steps" in info.value.hint  # the hint lists the known settings


def test_unknown_key_in_environment_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus") as info:
        load({}, environ={"MNNREPRO_BOGUS": "1"}, pyproject=tmp_path / "absent.toml")
    assert "MNNREPRO_" in info.value.message


def test_unknown_key_on_command_line_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="command line"):
        load({"bogus": 1}, environ={}, pyproject=tmp_path / "absent.toml")


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_bad_integer_is_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="steps"):
        load({}, environ={"MNNREPRO_STEPS": value}, pyproject=tmp_path / "absent.toml")


def test_bad_integer_in_pyproject_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobs"):
        load({}, environ={}, pyproject=pyproject(tmp_path, 'jobs = "many"'))


@pytest.mark.parametrize("value", ["maybe", "2", "", "tru"])
def test_bad_boolean_is_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="gdb"):
        load({}, environ={"MNNREPRO_GDB": value}, pyproject=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("false", False), ("No", False)],
)
def test_boolean_spellings(tmp_path: Path, value: str, expected: bool) -> None:
    assert load({}, environ={"MNNREPRO_CLONE": value}, pyproject=tmp_path / "absent.toml").clone is expected


def test_empty_cache_dir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be empty"):
        load({}, environ={"MNNREPRO_CACHE_DIR": ""}, pyproject=tmp_path / "absent.toml")


def test_empty_source_means_none(tmp_path: Path) -> None:
    s = load({"source": str(tmp_path)}, environ={"MNNREPRO_SOURCE": ""}, pyproject=tmp_path / "absent.toml")
    assert s.source == tmp_path
    assert load({}, environ={"MNNREPRO_SOURCE": ""}, pyproject=tmp_path / "absent.toml").source is None


def test_unknown_runner_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="podman"):
        load({"runner": "podman"}, environ={}, pyproject=tmp_path / "absent.toml")


@pytest.mark.parametrize("runner", ["auto", "host", "docker"])
def test_known_runners_are_accepted(tmp_path: Path, runner: str) -> None:
    assert load({"runner": runner}, environ={}, pyproject=tmp_path / "absent.toml").runner == runner


def test_describe_lists_every_setting() -> None:
    lines = Settings(steps=4).describe()
    assert "steps = 4" in lines
    assert len(lines) == len(Settings.__dataclass_fields__)


def test_faults_are_a_list_and_validated(tmp_path: Path) -> None:
    s = load({}, environ={"MNNREPRO_FAULTS": "hide-libvulkan"}, pyproject=tmp_path / "absent.toml")
    assert s.faults == ("hide-libvulkan",)
    with pytest.raises(ConfigError, match="unknown fault"):
        load({"faults": "melt-gpu"}, environ={}, pyproject=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"icds": "host"}, 4),  # the machine's own Vulkan driver: one GPU shared by every test process
        ({"variants": "cpu,opencl", "icds": "lavapipe"}, 4),  # OpenCL runs on the GPU whatever the ICD
        ({"icds": "host", "runner": "docker"}, 0),  # containers get no GPU: `host` is the image's lavapipe there
        ({"icds": "lavapipe,swiftshader"}, 0),  # software drivers: every CPU (opsession's default)
        ({"icds": "host", "test_jobs": 16}, 16),  # --test-jobs wins
    ],
)
def test_gpu_test_jobs_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, object], expected: int
) -> None:
    """Issue 22: 16 test processes on one H100 turned passing tests into timeouts: on a real GPU the default
    number of test processes is min(GPU_TEST_JOBS, CPUs), resolved with the settings (and printed with them)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    s = load(given, environ={}, pyproject=tmp_path / "absent.toml")
    assert s.test_jobs == expected
    assert settings.default_test_jobs(s, cpus=2) == 2  # never more processes than CPUs
    assert settings.default_test_jobs(s, cpus=16) == (4 if settings.real_gpu(s) else 16)


def test_require_gdb_from_the_environment(tmp_path: Path) -> None:
    """CI sets MNNREPRO_REQUIRE_GDB=1 (its image has gdb): a missing gdb is then an error, not a warning."""
    assert load({}, environ={}, pyproject=tmp_path / "absent.toml").require_gdb is False
    assert load({}, environ={"MNNREPRO_REQUIRE_GDB": "1"}, pyproject=tmp_path / "absent.toml").require_gdb is True
    with pytest.raises(ConfigError):
        load({}, environ={"MNNREPRO_REQUIRE_GDB": "maybe"}, pyproject=tmp_path / "absent.toml")
