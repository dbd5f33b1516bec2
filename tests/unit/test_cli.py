"""cli.main: exit codes and messages (nothing is built or run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mnnrepro import cli
from mnnrepro.cli import main


def test_an_invalid_ref_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["source", "show", "--ref", "bad;ref", "--cache-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "configuration error" in captured.err
    assert "'bad;ref' is not a valid git ref name" in captured.err
    assert "what to do:" in captured.err
    assert captured.out == ""


def test_an_empty_cache_without_cloning_is_a_source_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["source", "show", "--ref", "1.0", "--cache-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 3
    assert "MNN source unavailable" in captured.err
    assert "--source" in captured.err


def test_show_an_explicit_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_mnn_tree: Callable[[Path], Path]
) -> None:
    tree = make_mnn_tree(tmp_path / "mnn")
    code = main(["source", "show", "--ref", "1.0", "--source", str(tree), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    assert f"from explicit: {tree}" in capsys.readouterr().out


def test_import_then_show(tmp_path: Path, mnn_git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    assert main(["source", "import", "--git-dir", str(mnn_git_repo), "--ref", "1.0", "--cache-dir", str(cache)]) == 0
    assert "from import" in capsys.readouterr().out
    assert main(["source", "show", "--ref", "1.0", "--cache-dir", str(cache)]) == 0
    assert "from cache" in capsys.readouterr().out
    assert main(["source", "import", "--git-dir", str(mnn_git_repo), "--ref", "1.0", "--cache-dir", str(cache)]) == 3
    assert "already exists" in capsys.readouterr().err


def test_an_unknown_setting_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MNNREPRO_BOGUS", "1")
    assert main(["source", "show", "--ref", "1.0", "--cache-dir", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_a_swiftshader_tarball_with_the_wrong_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"not the package")
    assert main(["swiftshader", "fetch", "--tarball", str(fake), "--cache-dir", str(tmp_path / "c")]) == 6
    assert "pinned" in capsys.readouterr().err


def test_an_unknown_session_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "metal"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_run_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def fake_run(name: str, settings: object) -> int:
        seen["settings"] = settings
        return 0

    monkeypatch.setattr(cli, "run_session", fake_run)
    argv = [
        "run",
        "cpu",
        "--cache-dir",
        str(tmp_path),
        "--base-image",
        "corp/base:1",
        "--host-ca",
        str(tmp_path),
        "--keep-containers",
        "--repeat",
        "3",
        "--steps",
        "2",
        "--runner",
        "host",
        "--icd",
        "lavapipe",
        "--fault",
        "hide-libvulkan",
        "--no-gdb",
        "--no-clone",
        "--jobs",
        "1",
    ]
    assert cli.main(argv) == 0
    s = seen["settings"]
    assert (s.base_image, s.host_ca, s.keep_containers, s.repeat, s.steps) == (  # type: ignore[attr-defined]
        "corp/base:1",
        tmp_path,
        True,
        3,
        2,
    )
    assert (s.runner, s.icds, s.faults, s.gdb, s.clone, s.jobs) == (  # type: ignore[attr-defined]
        "host",
        ("lavapipe",),
        ("hide-libvulkan",),
        False,
        False,
        1,
    )
