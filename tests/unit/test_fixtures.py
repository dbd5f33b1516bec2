"""fixtures: the MNIST subset against its manifest, and the variant matrix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mnnrepro import fixtures
from mnnrepro.errors import FixtureError
from mnnrepro.fixtures import load_matrix, verify_mnist

TRAIN_IMAGES = "train-images-idx3-ubyte"


@pytest.fixture
def mnist(tmp_path: Path) -> Path:
    copy = tmp_path / "mnist"
    shutil.copytree(fixtures.MNIST, copy)
    return copy


# -- verify_mnist --------------------------------------------------------------------------------


def test_the_checked_in_subset_verifies(mnist: Path) -> None:
    manifest = verify_mnist(mnist)
    assert set(manifest["files"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }


def test_one_flipped_byte_is_rejected(mnist: Path) -> None:
    path = mnist / TRAIN_IMAGES
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FixtureError, match=TRAIN_IMAGES) as info:
        verify_mnist(mnist)
    assert info.value.exit_code == 5


def test_a_truncated_file_is_rejected(mnist: Path) -> None:
    path = mnist / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(FixtureError, match="t10k-labels-idx1-ubyte"):
        verify_mnist(mnist)


def test_an_extra_file_is_rejected(mnist: Path) -> None:
    (mnist / "extra-idx1-ubyte").write_bytes(b"\0")
    with pytest.raises(FixtureError, match="extra-idx1-ubyte"):
        verify_mnist(mnist)


def test_hidden_files_are_ignored(mnist: Path) -> None:
    (mnist / ".DS_Store").write_bytes(b"\0")
    verify_mnist(mnist)


def test_a_missing_data_file_is_rejected(mnist: Path) -> None:
    (mnist / TRAIN_IMAGES).unlink()
    with pytest.raises(FixtureError, match="missing"):
        verify_mnist(mnist)


def test_a_missing_manifest_is_rejected(mnist: Path) -> None:
    (mnist / "MANIFEST.json").unlink()
    with pytest.raises(FixtureError, match=r"MANIFEST\.json"):
        verify_mnist(mnist)


def test_an_unreadable_manifest_is_rejected(mnist: Path) -> None:
    (mnist / "MANIFEST.json").write_text('{"files": ')
    with pytest.raises(FixtureError, match="unreadable"):
        verify_mnist(mnist)


# -- the real matrix -----------------------------------------------------------------------------


@pytest.mark.parametrize("icd", ["lavapipe", "swiftshader"])
@pytest.mark.parametrize("ref", ["3.3.0", "47027e10"])
def test_image_mode_is_expected_to_reproduce_the_segfault(ref: str, icd: str) -> None:
    row = load_matrix().expectation(ref, "vulkan-image", icd)
    assert row is not None
    assert (row.outcome, row.signal, row.stage, row.step) == ("reproduce", "SIGSEGV", "sgd_step", 0)
    assert row.bug == "alibaba/MNN#3129"


@pytest.mark.parametrize("icd", ["lavapipe", "swiftshader"])
def test_buffer_mode_is_expected_fixed(icd: str) -> None:
    row = load_matrix().expectation("3.3.0", "vulkan-buffer", icd)
    assert row is not None
    assert row.outcome == "fixed"
    assert row.bug == "alibaba/MNN#3129"


@pytest.mark.parametrize("ref", ["3.3.0", "47027e10", "9.9.9"])
def test_cpu_is_expected_to_pass_for_every_ref(ref: str) -> None:
    row = load_matrix().expectation(ref, "cpu", "-")
    assert row is not None and row.outcome == "pass" and row.bug == ""


def test_unknown_ref_on_vulkan_has_no_expectation() -> None:
    assert load_matrix().expectation("9.9.9", "vulkan-image", "lavapipe") is None


def test_matrix_settings() -> None:
    m = load_matrix()
    assert m.default_ref == "3.3.0"
    assert m.training["steps"] > 0
    assert 0.1 < m.checks["min_accuracy"] <= 1.0
    assert set(m.timeouts) == {"cpu", "vulkan", "opencl"}
    assert m.ref_info("47027e10").compat_cxx_flags == ("-include", "cstring")
    assert m.ref_info("3.3.0").commit.startswith("5047919a")
    assert m.ref_info("unknown").commit == ""


# -- matrix validation on temporary files --------------------------------------------------------

MINIMAL = """
format = 1
default_ref = "1.0"

[[expect]]
refs = ["1.*"]
variant = "vulkan-image"
icd = "*"
outcome = "reproduce"
signal = "SIGSEGV"
stage = "sgd_step"
step = 0

[[expect]]
variant = "*"
outcome = "pass"
"""


def write_matrix(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_a_minimal_matrix_loads_with_defaults_and_first_match_wins(tmp_path: Path) -> None:
    m = load_matrix(write_matrix(tmp_path, MINIMAL))
    assert m.default_ref == "1.0"
    assert (m.training, m.checks, m.refs) == ({}, {}, {})
    image = m.expectation("1.2", "vulkan-image", "lavapipe")
    assert image is not None and image.outcome == "reproduce"
    other = m.expectation("2.0", "vulkan-image", "lavapipe")
    assert other is not None and other.outcome == "pass" and other.refs == ("*",)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("surprise = 1\n" + MINIMAL, "surprise"),
        (MINIMAL + "[training]\nsteps = 3\nepochs = 2\n", "epochs"),
        (MINIMAL + "[checks]\nmin_acc = 0.5\n", "min_acc"),
        (MINIMAL + "[timeouts]\nmetal = 5\n", "metal"),
        (MINIMAL + '[refs."1.0"]\ncommit = "abc"\nbranch = "x"\n', "branch"),
        (MINIMAL + '[[expect]]\nvariant = "cpu"\noutcome = "pass"\nnote = "x"\n', "note"),
    ],
)
def test_unknown_keys_are_rejected(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(FixtureError, match=f"unknown key.*{key}"):
        load_matrix(write_matrix(tmp_path, text))


def test_a_reproduce_row_without_signal_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL.replace('signal = "SIGSEGV"\n', "")
    with pytest.raises(FixtureError, match="needs signal and stage"):
        load_matrix(write_matrix(tmp_path, text))


def test_a_reproduce_row_without_stage_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL.replace('stage = "sgd_step"\n', "")
    with pytest.raises(FixtureError, match="needs signal and stage"):
        load_matrix(write_matrix(tmp_path, text))


def test_an_unknown_outcome_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="outcome must be one of"):
        load_matrix(write_matrix(tmp_path, MINIMAL.replace('outcome = "pass"', 'outcome = "works"')))


def test_another_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="format 2"):
        load_matrix(write_matrix(tmp_path, MINIMAL.replace("format = 1", "format = 2")))


def test_invalid_toml_and_missing_file_are_fixture_errors(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="cannot read"):
        load_matrix(write_matrix(tmp_path, "format = \n"))
    with pytest.raises(FixtureError, match="cannot read"):
        load_matrix(tmp_path / "absent.toml")


def test_refs_given_as_a_string_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FixtureError):
        load_matrix(write_matrix(tmp_path, MINIMAL.replace('refs = ["1.*"]', 'refs = "1.*"')))


def test_every_expected_crash_stage_is_one_the_driver_writes() -> None:
    import re

    from mnnrepro.build import NATIVE_DIR

    stages = set(re.findall(r'log\.stage\("(\w+)"', (NATIVE_DIR / "src" / "main.cpp").read_text()))
    rows = [r for r in load_matrix().expectations if r.outcome == "reproduce"]
    assert rows
    for row in rows:
        assert row.stage in stages
        assert row.signal.startswith("SIG")
