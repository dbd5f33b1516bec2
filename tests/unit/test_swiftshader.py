"""swiftshader: npm's registry setting and the brotli CLI, both run through the runner (issue 23)."""

from __future__ import annotations

import builtins
import os
import subprocess
from pathlib import Path

import pytest

from mnnrepro import swiftshader


def on_path(monkeypatch: pytest.MonkeyPatch, bin_dir: Path, **tools: str) -> None:
    """Put shell-script stand-ins for ``tools`` (name -> body) first on PATH."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in tools.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def without_brotli_module(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_brotli(name: str, *args: object, **kwargs: object) -> object:
        if name == "brotli":
            raise ImportError("no brotli module here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_brotli)


def test_without_the_module_the_brotli_cli_decompresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in brotli that shows its arguments and passes its input through: bytes in, bytes out, unchanged.
    on_path(monkeypatch, tmp_path / "bin", brotli='printf "%s|" "$@"; cat')
    without_brotli_module(monkeypatch)
    data = bytes(range(256))
    assert swiftshader._brotli_decompress(data) == b"-d|-c|" + data


def test_a_failing_brotli_cli_raises_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path(monkeypatch, tmp_path / "bin", brotli="cat >/dev/null; echo corrupt input >&2; exit 1")
    without_brotli_module(monkeypatch)
    with pytest.raises(subprocess.CalledProcessError) as caught:
        swiftshader._brotli_decompress(b"not brotli")
    assert caught.value.returncode == 1 and caught.value.stderr == b"corrupt input\n"


def test_the_registry_is_npms_configured_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NPM_CONFIG_REGISTRY", raising=False)
    monkeypatch.delenv("npm_config_registry", raising=False)
    on_path(monkeypatch, tmp_path / "bin", npm='[ "$*" = "config get registry" ] && echo https://npm.example/r')
    assert swiftshader.registry() == "https://npm.example/r/"
    on_path(monkeypatch, tmp_path / "bin", npm="exit 1")  # npm broken: the public registry
    assert swiftshader.registry() == swiftshader.DEFAULT_REGISTRY
