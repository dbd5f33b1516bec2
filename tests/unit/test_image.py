"""Base image resolution and image keys, with a fake Docker client (no engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mnnrepro import image, swiftshader
from mnnrepro.errors import EnvironmentProblem

docker = pytest.importorskip("docker")


class FakeImages:
    def __init__(self, present: set[str], pull_ok: bool) -> None:
        self.present = present
        self.pull_ok = pull_ok
        self.pulled: list[str] = []

    def get(self, name: str) -> Any:
        if name not in self.present:
            raise docker.errors.ImageNotFound(name)
        return type("Img", (), {"id": "sha256:" + name})()

    def pull(self, name: str) -> None:
        self.pulled.append(name)
        if not self.pull_ok:
            raise docker.errors.APIError("registry unreachable")
        self.present.add(name)


class FakeClient:
    def __init__(self, present: set[str], pull_ok: bool) -> None:
        self.images = FakeImages(present, pull_ok)


def test_a_local_base_is_used_without_pulling() -> None:
    client = FakeClient({"debian:bookworm-slim"}, pull_ok=False)
    assert image.ensure_base(client, "debian:bookworm-slim", say=lambda _: None) == "debian:bookworm-slim"
    assert client.images.pulled == []


def test_default_base_falls_back_to_bootstrap_when_registry_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(set(), pull_ok=False)
    calls: list[str | None] = []

    def fake_bootstrap(c: Any, *, mirror: str | None = None, say: Any = None) -> str:
        calls.append(mirror)
        return image.BOOTSTRAP_IMAGE

    monkeypatch.setattr(image, "bootstrap_base", fake_bootstrap)
    assert (
        image.ensure_base(client, image.DEFAULT_BASE, mirror="http://mirror.example/debian", say=lambda _: None)
        == image.BOOTSTRAP_IMAGE
    )
    assert calls == ["http://mirror.example/debian"]


def test_an_existing_bootstrap_is_reused_without_network() -> None:
    client = FakeClient({image.BOOTSTRAP_IMAGE}, pull_ok=False)
    assert image.ensure_base(client, image.DEFAULT_BASE, say=lambda _: None) == image.BOOTSTRAP_IMAGE
    assert client.images.pulled == []


def test_a_custom_base_that_cannot_be_pulled_is_an_error_with_a_hint() -> None:
    client = FakeClient(set(), pull_ok=False)
    with pytest.raises(EnvironmentProblem, match="cannot be pulled") as info:
        image.ensure_base(client, "corp/base:7", say=lambda _: None)
    assert "bootstrap" in info.value.hint


def test_image_key_changes_with_base_and_ca() -> None:
    a = image.image_key("sha256:one", None)
    assert a == image.image_key("sha256:one", None)
    assert a != image.image_key("sha256:two", None)
    assert a != image.image_key("sha256:one", b"-----BEGIN CERTIFICATE-----")


def test_image_key_command_names_the_tag_ensure_image_would_use_and_builds_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = FakeClient({image.BOOTSTRAP_IMAGE}, pull_ok=False)
    tag = image.image_tag(client, image.DEFAULT_BASE, None)  # the default falls back to the bootstrapped base
    assert tag == f"{image.IMAGE_REPO}:{image.image_key('sha256:' + image.BOOTSTRAP_IMAGE, None)[:16]}"
    client.images.present.add(tag)  # present: ensure_image returns the same tag and builds nothing
    monkeypatch.setattr(swiftshader, "ensure", lambda *a, **k: pytest.fail("ensure_image built"))
    assert image.ensure_image(client, base=image.DEFAULT_BASE, cache_dir=tmp_path, say=lambda _: None) == tag
    with pytest.raises(EnvironmentProblem, match="not present"):
        image.image_tag(FakeClient(set(), pull_ok=False), image.DEFAULT_BASE, None)


def test_debian_mirror_is_read_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    assert image.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_is_read_from_a_classic_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert image.debian_mirror(tmp_path) == "http://old.example/debian"


def test_no_bookworm_mirror_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="no Debian bookworm mirror") as info:
        image.debian_mirror(tmp_path)
    assert "MNNREPRO_DEBIAN_MIRROR" in info.value.hint
