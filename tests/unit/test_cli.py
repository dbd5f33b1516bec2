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
    # The same commit again (a re-run of a set-up script): nothing to do, and said so.
    assert main(["source", "import", "--git-dir", str(mnn_git_repo), "--ref", "1.0", "--cache-dir", str(cache)]) == 0
    assert "already in the source cache" in capsys.readouterr().out
    # Another commit under the same name: refused without --force, the cached tree kept.
    prov = cache / "src" / "1.0" / ".mnnrepro-source.json"
    prov.write_text(prov.read_text().replace('"commit": "', '"commit": "0000'))
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


@pytest.mark.parametrize(
    ("icds", "message"),
    [
        (",", "no Vulkan ICD was given"),
        ("", "no Vulkan ICD was given"),
        ("lavapipe,lavapipe", "ICD(s) named twice: lavapipe"),
        ("lavapipe,,swiftshader", "is not a valid"),
        ("lavapipe,nvidia", "unknown ICD(s): 'nvidia'"),
    ],
)
def test_bad_icd_lists_are_configuration_errors_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], icds: str, message: str
) -> None:
    results = tmp_path / "results"
    code = main(["run", "vulkan_buffer", "--icd", icds, "--results-dir", str(results), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "configuration error" in err and message in err
    assert not results.exists()  # no empty results dir, no `latest` pointing at it


def test_a_bad_ref_makes_no_results_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    code = main(["run", "cpu", "--ref", "a..b", "--results-dir", str(results), "--cache-dir", str(tmp_path)])
    assert code == 2 and "not a valid git ref name" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.parametrize(("flag", "value"), [("--steps", "4294967297"), ("--timeout", "3000000000"), ("--repeat", "0")])
def test_numbers_out_of_range_are_configuration_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code = main(["run", "cpu", flag, value, "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path)])
    assert code == 2 and "configuration error" in capsys.readouterr().err


def test_matrix_json_lists_refs_with_their_tiers(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["matrix", "--json", "--tier", "ci"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ref_names"] == ["3.3.0", "47027e10"]
    assert all(r["tier"] == "ci" and len(r["commit"]) == 40 for r in data["refs"])
    assert main(["matrix", "--tier", "nightly"]) == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mnnrepro import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mnnrepro {__version__}"


def test_outside_a_checkout_the_message_says_how_to_point_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnnrepro import fixtures

    monkeypatch.setattr(fixtures, "ROOT", tmp_path)
    code = main(["run", "cpu", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 5 and "no mnnrepro checkout found" in err and "MNNREPRO_CHECKOUT" in err
