"""icd.resolve and the SwiftShader pin (no Vulkan, no network)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from mnnrepro import icd, settings, swiftshader
from mnnrepro.errors import EnvironmentProblem
from mnnrepro.runner import LOADER_ENV_PREFIXES, HostRunner


def test_bogus_icd_points_at_a_library_that_does_not_exist(tmp_path: Path) -> None:
    resolved = icd.resolve("bogus", tmp_path)
    assert resolved.manifest is not None and resolved.manifest.is_file()
    assert resolved.manifest.is_relative_to(tmp_path)
    library = json.loads(resolved.manifest.read_text())["ICD"]["library_path"]
    assert not Path(library).exists()
    assert resolved.env["VK_ICD_FILENAMES"] == str(resolved.manifest)
    assert resolved.env["VK_DRIVER_FILES"] == str(resolved.manifest)


def test_host_icd_sets_nothing(tmp_path: Path) -> None:
    resolved = icd.resolve("host", tmp_path)
    assert (resolved.manifest, resolved.env) == (None, {})


def test_unknown_icd_is_an_environment_problem(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="unknown ICD 'nope'") as info:
        icd.resolve("nope", tmp_path)
    assert "lavapipe" in info.value.hint
    assert info.value.exit_code == 6


def test_lavapipe_manifest_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lvp_icd.x86_64.json").write_text("{}")
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "lvp_icd*.json"),))
    resolved = icd.resolve("lavapipe", tmp_path)
    assert resolved.manifest == tmp_path / "lvp_icd.x86_64.json"
    assert resolved.env["VK_ICD_FILENAMES"] == str(resolved.manifest)


def test_missing_lavapipe_is_an_environment_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icd, "LAVAPIPE_GLOBS", (str(tmp_path / "lvp_icd*.json"),))
    with pytest.raises(EnvironmentProblem, match="lavapipe") as info:
        icd.resolve("lavapipe", tmp_path)
    assert "mesa-vulkan-drivers" in info.value.hint


def test_cached_swiftshader_is_used_without_fetching(tmp_path: Path) -> None:
    manifest = swiftshader.manifest_path(tmp_path)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    resolved = icd.resolve("swiftshader", tmp_path)
    assert resolved.manifest == manifest
    assert resolved.env["VK_ICD_FILENAMES"] == str(manifest)


# -- swiftshader.ensure --------------------------------------------------------------------------


def tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tarball_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    fake = tgz(tmp_path / "sparticuz-chromium-143.0.4.tgz", {"package/package.json": b"{}"})
    with pytest.raises(EnvironmentProblem, match="is not the pinned") as info:
        swiftshader.ensure(tmp_path / "cache", tarball=fake)
    assert swiftshader.TARBALL_SHA256 in info.value.message
    assert hashlib.sha256(fake.read_bytes()).hexdigest() in info.value.message
    assert "refusing" in info.value.hint
    assert not swiftshader.install_dir(tmp_path / "cache").exists()


def test_a_member_with_the_wrong_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tgz(tmp_path / "pkg.tgz", {swiftshader.MEMBER: b"not brotli"})
    monkeypatch.setattr(swiftshader, "TARBALL_SHA256", hashlib.sha256(fake.read_bytes()).hexdigest())
    with pytest.raises(EnvironmentProblem, match="does not match the pin"):
        swiftshader.ensure(tmp_path / "cache", tarball=fake)
    assert not swiftshader.install_dir(tmp_path / "cache").exists()


@pytest.mark.skipif(shutil.which("brotli") is None, reason="needs the brotli CLI (apt-get install brotli)")
def test_a_pinned_package_installs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        info = tarfile.TarInfo(swiftshader.LIBRARY)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
    br = subprocess.run(["brotli", "-c"], input=inner.getvalue(), capture_output=True, check=True).stdout
    fake = tgz(tmp_path / "pkg.tgz", {swiftshader.MEMBER: br})
    monkeypatch.setattr(swiftshader, "TARBALL_SHA256", hashlib.sha256(fake.read_bytes()).hexdigest())
    monkeypatch.setattr(swiftshader, "MEMBER_SHA256", hashlib.sha256(br).hexdigest())
    monkeypatch.setattr(swiftshader, "LIBRARY_SHA256", hashlib.sha256(b"\x7fELF").hexdigest())
    cache = tmp_path / "cache"
    manifest = swiftshader.ensure(cache, tarball=fake)
    assert manifest == swiftshader.manifest_path(cache)
    library = Path(json.loads(manifest.read_text())["ICD"]["library_path"])
    assert library == swiftshader.install_dir(cache) / swiftshader.LIBRARY
    assert library.read_bytes() == b"\x7fELF"
    pin = json.loads((swiftshader.install_dir(cache) / "PIN.json").read_text())
    assert pin["library_sha256"] == hashlib.sha256(b"\x7fELF").hexdigest()
    fake.unlink()
    assert swiftshader.ensure(cache, tarball=fake) == manifest  # cached: the tarball is not read again


# -- the ICD table: a new ICD is a row ------------------------------------------------------------------------


def add_row(monkeypatch: pytest.MonkeyPatch, api: str, name: str, where: Path, loader_vars: tuple[str, ...]) -> Path:
    """A test-only row of icd.TABLE: an ICD installed by a (pretend) package at `where`."""
    found = icd.Installed(lambda: (str(where),), f"{name} is not installed", f"apt-get install {name}", (name,))
    monkeypatch.setitem(icd.TABLE[api], name, icd.Row(api, name, found, loader_vars))
    return where


def test_the_table_is_keyed_by_api_with_each_apis_loader_variables() -> None:
    assert set(icd.TABLE) == {icd.VULKAN, icd.OPENCL}
    assert settings.ICD_NAMES == icd.KNOWN == icd.names() == ("lavapipe", "swiftshader", "host", "bogus")
    for api, rows in icd.TABLE.items():
        for name, row in rows.items():
            assert (row.api, row.name) == (api, name)
            assert row.loader_vars and set(row.loader_vars) <= set(icd.LOADER_VARS[api]), row
    # `--icd host` passes the caller's loader variables through the runner: every API's are among them.
    every = [v for names in icd.LOADER_VARS.values() for v in names]
    assert every and all(v.startswith(LOADER_ENV_PREFIXES) for v in every)


@pytest.mark.parametrize(
    ("api", "file", "loader_vars"),
    [
        (icd.OPENCL, "fakecl.icd", ("OCL_ICD_VENDORS",)),  # as PoCL's or NVIDIA's vendor file would be
        (icd.OPENCL, "libfakecl.so", ("OCL_ICD_FILENAMES",)),
        (icd.VULKAN, "fakevk_icd.json", ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")),
    ],
)
def test_a_new_row_reaches_the_runners_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str, file: str, loader_vars: tuple[str, ...]
) -> None:
    where = add_row(monkeypatch, api, "fake", tmp_path / "vendors" / file, loader_vars)
    with pytest.raises(EnvironmentProblem, match=f"fake is not installed \\(no {file}\\)") as info:
        icd.resolve("fake", tmp_path)
    assert info.value.hint == "apt-get install fake"
    where.parent.mkdir()
    where.write_text("libfakecl.so\n")
    resolved = icd.resolve("fake", tmp_path)
    assert (resolved.name, resolved.manifest, resolved.env) == ("fake", where, {v: str(where) for v in loader_vars})
    # What a cell's process gets from the runner: the row's variables (no other loader variable passes).
    done = HostRunner().run(
        ["sh", "-c", 'echo "${OCL_ICD_VENDORS}|${OCL_ICD_FILENAMES}|${VK_DRIVER_FILES}"'], env=resolved.env
    )
    got = dict(
        zip(("OCL_ICD_VENDORS", "OCL_ICD_FILENAMES", "VK_DRIVER_FILES"), done.output.strip().split("|"), strict=True)
    )
    assert got == {k: resolved.env.get(k, "") for k in got}
    with pytest.raises(EnvironmentProblem, match="not in the image"):
        icd.resolve("fake", tmp_path, "docker")  # docker/Dockerfile does not install it
