"""preflight and doctor: Khronos' validation layer (issue 25). With --vk-validation on|sync and a Vulkan cell, a
missing or unloadable layer stops the run before any build, with the apt line; the docker runner's image has no
layer yet; doctor always shows the layer's state, failing only when validation is asked for."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mnnrepro import preflight, prepare
from mnnrepro.errors import EnvironmentProblem
from mnnrepro.preflight import FAIL, OK, Finding, Load
from mnnrepro.settings import Settings

APT = "apt-get install vulkan-validationlayers"
# conftest.py's fixtures
FakeLoads = Callable[[dict[str, Load]], list[str]]
FakeDoctorChecks = Callable[[dict[str, list[Finding]]], None]
RunDoctor = Callable[[Settings], tuple[int, list[str]]]
LOADER_VARS = ("VK_LAYER_PATH", "VK_ADD_LAYER_PATH", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_DATA_HOME")


def validating(settings: Settings, mode: str) -> Settings:
    return replace(settings, vk_validation=mode)


def write_layer(folder: Path, library: str, *, name: str = "VK_LAYER_KHRONOS_validation", key: str = "layer") -> Path:
    """A layer manifest as vulkan-validationlayers installs it (file format 1.0.0 `layer`, or 1.2.0 `layers`)."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"name": name, "type": "GLOBAL", "library_path": library, "api_version": "1.3.239"}
    entry["implementation_version"] = "1"
    body = {"file_format_version": "1.2.0", key: entry if key == "layer" else [entry]}
    path = folder / "VkLayer_khronos_validation.json"
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def loader_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every folder the loader searches points into tmp_path (nothing of this machine's own layers is seen)."""
    for var in LOADER_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_DIRS", str(tmp_path / "local-share") + ":" + str(tmp_path / "share"))
    monkeypatch.setattr(preflight.vulkan, "SYSCONF_DIR", str(tmp_path / "etc"), raising=False)
    return tmp_path


# --- the layer on the host runner --------------------------------------------------------------------------------


def test_the_layer_is_found_where_the_loader_looks_and_its_library_loads(
    loader_env: Path, fake_loads: FakeLoads
) -> None:
    share = loader_env / "share" / "vulkan" / "explicit_layer.d"
    manifest = write_layer(share, "./libVkLayer_khronos_validation.so")  # relative: resolved against the manifest
    library = str(share / "libVkLayer_khronos_validation.so")
    asked = fake_loads({library: Load(library, True)})
    [found] = preflight.check_validation_layer()
    assert (found.status, found.what) == (OK, "Vulkan validation layer")
    assert found.detail == f"{manifest} -> {library} loads (api_version 1.3.239, implementation_version 1)"
    assert asked == [library]


def test_the_loaders_search_order(loader_env: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads) -> None:
    """Loader 1.3.239 (VK_LOADER_DEBUG=layer): VK_ADD_LAYER_PATH before the XDG folders; VK_LAYER_PATH alone."""
    fake_loads({})
    data_home = write_layer(loader_env / "home" / ".local" / "share" / "vulkan" / "explicit_layer.d", "libA.so")
    assert preflight.vulkan.find_validation_layer()[0] == preflight.vulkan.Layer(data_home, "libA.so", "1.3.239", "1")
    config = write_layer(loader_env / "xdg-config" / "vulkan" / "explicit_layer.d", "libB.so", key="layers")
    assert preflight.vulkan.find_validation_layer()[0] == preflight.vulkan.Layer(config, "libB.so", "1.3.239", "1")
    added = write_layer(loader_env / "added", "libC.so")
    monkeypatch.setenv("VK_ADD_LAYER_PATH", str(loader_env / "added"))
    assert preflight.vulkan.find_validation_layer()[0] == preflight.vulkan.Layer(added, "libC.so", "1.3.239", "1")
    monkeypatch.setenv("VK_LAYER_PATH", str(loader_env / "empty"))  # replaces every folder, VK_ADD_LAYER_PATH too
    assert preflight.vulkan.find_validation_layer() == (None, [])
    monkeypatch.setenv("VK_LAYER_PATH", str(config))  # a file is an entry too
    assert preflight.vulkan.find_validation_layer()[0] == preflight.vulkan.Layer(config, "libB.so", "1.3.239", "1")
    other = write_layer(loader_env / "other", "libD.so", name="VK_LAYER_MESA_overlay")
    monkeypatch.setenv("VK_LAYER_PATH", str(other))  # the loader goes by the layer's name, not the file's
    assert preflight.vulkan.find_validation_layer() == (None, [])


def test_a_missing_layer_fails_with_the_apt_line(
    loader_env: Path, monkeypatch: pytest.MonkeyPatch, fake_loads: FakeLoads
) -> None:
    fake_loads({})
    [missing] = preflight.check_validation_layer()
    assert missing.status == FAIL
    assert missing.detail.startswith("not found: no VkLayer_khronos_validation.json declaring VK_LAYER_KHRONOS_validat")
    assert str(loader_env / "share" / "vulkan" / "explicit_layer.d") in missing.detail
    assert (missing.fix, missing.packages) == (APT, ("vulkan-validationlayers",))
    monkeypatch.setenv("VK_LAYER_PATH", str(loader_env / "empty"))
    [hidden] = preflight.check_validation_layer()
    assert "(VK_LAYER_PATH replaces its own folders)" in hidden.detail
    assert hidden.fix == f"{APT} and unset VK_LAYER_PATH (or add /usr/share/vulkan/explicit_layer.d to it)"
    with pytest.raises(EnvironmentProblem) as exc:
        preflight.require([hidden])
    assert exc.value.hint.startswith(APT)
    manifest = write_layer(loader_env / "share" / "vulkan" / "explicit_layer.d", "libVkLayer_khronos_validation.so")
    [installed] = preflight.check_validation_layer()  # installed, and hidden by the override only: no apt line
    assert installed.detail.endswith(f"; without VK_LAYER_PATH the loader finds {manifest}")
    assert (installed.fix, installed.packages) == (f"unset VK_LAYER_PATH (or add {manifest.parent} to it)", ())


def test_a_manifest_naming_a_library_that_cannot_load(loader_env: Path, fake_loads: FakeLoads) -> None:
    share = loader_env / "share" / "vulkan" / "explicit_layer.d"
    manifest = write_layer(share, str(loader_env / "gone" / "libVkLayer_khronos_validation.so"))
    [gone] = preflight.check_validation_layer()  # the real dlopen in a child: the file is not there
    assert gone.status == FAIL
    assert f"{manifest} (api_version 1.3.239, implementation_version 1) names " in gone.detail
    assert "which does not exist: the loader cannot enable the layer" in gone.detail
    assert gone.fix.startswith(APT)
    write_layer(share, "libVkLayer_khronos_validation.so")
    fake_loads(
        {
            "libVkLayer_khronos_validation.so": Load(
                "libVkLayer_khronos_validation.so", False, "libstdc++.so.6: cannot open", ("libstdc++.so.6",)
            )
        },
    )
    [broken] = preflight.check_validation_layer()
    assert "which cannot be loaded: it needs libstdc++.so.6" in broken.detail
    assert broken.packages == ("vulkan-validationlayers", "libstdc++6")
    assert broken.fix.startswith("apt-get install vulkan-validationlayers libstdc++6")


def test_an_unreadable_manifest_is_named(loader_env: Path) -> None:
    share = loader_env / "share" / "vulkan" / "explicit_layer.d"
    share.mkdir(parents=True)
    (share / "VkLayer_khronos_validation.json").write_text("{not json")
    [found] = preflight.check_validation_layer()
    assert found.status == FAIL
    assert f"unreadable: {share / 'VkLayer_khronos_validation.json'} (JSONDecodeError" in found.detail


# --- which sessions check it -------------------------------------------------------------------------------------


def layer_checks(todo: list[Callable[[], list[Finding]]], check: object) -> int:
    return sum(c is check or getattr(c, "func", None) is check for c in todo)


def test_asked_for_and_a_vulkan_cell_on_the_host_runner_checks_the_layer(tmp_path: Path) -> None:
    check = preflight.check_validation_layer
    off = Settings(cache_dir=tmp_path, gdb=False)
    assert layer_checks(preflight.checks(off, icds=("lavapipe",), opencl=False, runner="host"), check) == 0
    for mode in ("on", "sync"):
        on = validating(Settings(cache_dir=tmp_path, gdb=False), mode)
        assert layer_checks(preflight.checks(on, icds=("lavapipe",), opencl=False, runner="host"), check) == 1
        assert layer_checks(preflight.checks(on, icds=(), opencl=True, runner="host"), check) == 0  # no Vulkan cell


def test_the_docker_runner_checks_that_its_image_has_the_layer(tmp_path: Path) -> None:
    on = validating(Settings(cache_dir=tmp_path), "sync")
    todo = preflight.checks(on, icds=("lavapipe",), opencl=False, runner="docker")
    assert layer_checks(todo, preflight.check_validation_in_docker) == 1
    assert layer_checks(todo, preflight.check_validation_layer) == 0  # the host's layer is not the container's
    off = Settings(cache_dir=tmp_path)
    assert layer_checks(preflight.checks(off, icds=("lavapipe",), opencl=False, runner="docker"), todo[-1]) == 0
    [ok] = todo[-1]()  # the repository's docker/Dockerfile, as it is: it installs the layer
    assert ok.status == OK, ok.detail
    older = tmp_path / "Dockerfile"  # an older checkout's image, without the layer
    older.write_text("# vulkan-validationlayers: a comment is not an install\nRUN apt-get install -y cmake\n")
    [refused] = preflight.check_validation_in_docker("sync", dockerfile=older)
    assert refused.status == FAIL
    assert refused.detail.startswith("--vk-validation sync: the suite's image (docker/Dockerfile) has no Khronos")
    assert refused.fix == f"--runner host (with {APT}), or --vk-validation off"
    older.write_text("RUN apt-get install -y \\\n      vulkan-validationlayers \\\n      cmake\n")
    assert preflight.check_validation_in_docker("on", dockerfile=older)[0].status == OK


def test_a_run_asking_for_validation_without_the_layer_stops_before_any_build(
    loader_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare.preflight_for is every session's first step: it raises before prepare builds anything."""
    for name in ("check_toolchain", "check_vulkan_loader"):
        monkeypatch.setattr(preflight, name, lambda **kw: [])
    monkeypatch.setattr(preflight, "check_disk", lambda cache_dir: [])
    monkeypatch.setattr(preflight, "check_icd", lambda name, settings, runner, severity=FAIL: [])
    monkeypatch.setenv("VK_LAYER_PATH", str(loader_env / "empty"))
    settings = validating(Settings(cache_dir=loader_env / "cache", gdb=False, runner="host", icds=("lavapipe",)), "on")
    lines: list[str] = []
    with pytest.raises(EnvironmentProblem) as exc:
        prepare.preflight_for(settings, ("cpu", "vulkan-buffer"), lines.append)
    assert "Vulkan validation layer: not found" in exc.value.message
    assert exc.value.hint == APT
    off = validating(Settings(cache_dir=loader_env / "cache", gdb=False, runner="host", icds=("lavapipe",)), "off")
    assert prepare.preflight_for(off, ("cpu", "vulkan-buffer"), lines.append)[0].runner == "host"


# --- doctor ------------------------------------------------------------------------------------------------------


def test_doctor_shows_the_layer_without_failing_unless_asked_for(
    loader_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_loads: FakeLoads,
    fake_doctor_checks: FakeDoctorChecks,
    run_doctor: RunDoctor,
) -> None:
    fake_doctor_checks({"host": [], "docker": []})  # nothing else fails
    monkeypatch.setenv("VK_LAYER_PATH", str(loader_env / "empty"))
    code, lines = run_doctor(Settings(cache_dir=loader_env, runner="host"))
    [line] = [x for x in lines if "Vulkan validation layer" in x]
    assert line.startswith("[  ok] Vulkan validation layer  not found (only --vk-validation on|sync needs it)")
    assert lines[lines.index(line) + 1].strip() == f"fix: {APT} and unset VK_LAYER_PATH (or add /usr/share/vul" + (
        "kan/explicit_layer.d to it)"
    )
    assert "real GPUs and devices (information):" in lines[: lines.index(line)]
    assert code == 0
    assert not any("every package" in x for x in lines)  # the layer is not asked for: no apt line for it

    code, lines = run_doctor(validating(Settings(cache_dir=loader_env, runner="host"), "on"))
    assert code == 6
    assert any(x.startswith("[FAIL] Vulkan validation layer") for x in lines)
    assert "runner host: cannot produce a verdict: Vulkan validation layer" in lines
    assert f"every package the host runner asks for: {APT}" in lines

    share = loader_env / "share" / "vulkan" / "explicit_layer.d"
    manifest = write_layer(share, "libVkLayer_khronos_validation.so")
    monkeypatch.delenv("VK_LAYER_PATH")
    fake_loads({"libVkLayer_khronos_validation.so": Load("libVkLayer_khronos_validation.so", True)})
    code, lines = run_doctor(Settings(cache_dir=loader_env, runner="host"))
    assert (
        f"[  ok] Vulkan validation layer  {manifest} -> libVkLayer_khronos_validation.so loads (api_version "
        + ("1.3.239, implementation_version 1)")
        in lines
    )


def test_validation_asked_by_the_environment_does_not_hold_back_a_command_that_does_not_validate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MNNREPRO_VK_VALIDATION=on: `ops` (not validating yet) runs without the layer and says so, instead of
    requiring it or refusing the Docker runner; `run` keeps the setting."""
    from mnnrepro import cli

    seen: dict[str, str] = {}

    def dispatch(args: argparse.Namespace, settings: Settings) -> int:
        seen[str(args.command)] = settings.vk_validation
        return 0

    monkeypatch.setenv("MNNREPRO_VK_VALIDATION", "on")
    monkeypatch.setattr(cli, "_dispatch", dispatch)
    assert cli.main(["ops", "list"]) == 0
    assert seen["ops"] == "off"
    assert "`ops` runs without the validation layer" in capsys.readouterr().err
    assert cli.main(["run", "vulkan_buffer"]) == 0
    assert seen["run"] == "on"
