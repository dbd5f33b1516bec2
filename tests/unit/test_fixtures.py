"""fixtures: the MNIST subset against its manifest, and the variant matrix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mnnrepro import fixtures
from mnnrepro.contract import Device
from mnnrepro.errors import FixtureError
from mnnrepro.fixtures import FIXTURES, load_matrix, verify_mnist

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


def test_a_ref_that_is_no_version_and_has_no_row_has_no_expectation() -> None:
    assert load_matrix().expectation("some-branch", "vulkan-image", "lavapipe") is None


@pytest.mark.parametrize(
    ("ref", "version", "outcome", "covered_by"),
    [
        ("3.6.1", None, "fixed-by-fallback", ">=3.6.0"),  # after the upstream "fix", no row of its own
        ("9.9.9", None, "fixed-by-fallback", ">=3.6.0"),  # a future release: judged by the range
        ("3.5.0", None, "reproduce", ">=3.0.1,<3.6.0"),
        ("v3.4.1", None, "reproduce", ">=3.0.1,<3.6.0"),
        ("39be21c56", "3.6.0", "fixed-by-fallback", ">=3.6.0"),  # a commit: its tree's MNNDefine.h version
        ("47027e10", "3.0.1", "reproduce", "47027e10"),
    ],
)
def test_version_ranges_cover_releases_without_rows(
    ref: str, version: str | None, outcome: str, covered_by: str
) -> None:
    row = load_matrix().expectation(ref, "vulkan-image", "lavapipe", version)
    assert row is not None and row.outcome == outcome and row.bug == "alibaba/MNN#3129"
    assert row.covers(ref, version) == covered_by


@pytest.mark.parametrize(
    ("ref", "variant"), [("3.6.1", "vulkan-image"), ("3.3.0", "vulkan-image"), ("3.3.0", "vulkan-buffer")]
)
def test_every_row_of_the_known_bug_names_its_op_and_phase(ref: str, variant: str) -> None:
    """alibaba/MNN#3129's cells are judged on where its Deconvolution ran in sgd_step (issue 21, item 3): at 3.6.x
    image mode the row says it falls back to the CPU; buffer mode's 'fixed' says it runs on the GPU."""
    row = load_matrix().expectation(ref, variant, "lavapipe")
    assert row is not None and (row.op, row.phase) == ("Deconvolution", "sgd_step")
    want = {("3.6.1", "vulkan-image"): "fixed-by-fallback", ("3.3.0", "vulkan-image"): "reproduce"}
    assert row.outcome == want.get((ref, variant), "fixed")


def test_a_range_never_matches_a_ref_of_unknown_version() -> None:
    assert load_matrix().expectation("main", "vulkan-buffer", "lavapipe") is None


@pytest.mark.parametrize(
    ("version", "pattern", "inside"),
    [
        ((3, 6, 0), ">=3.6.0", True),
        ((3, 5, 9), ">=3.6.0", False),
        ((3, 5, 0), ">=3.0.1,<3.6.0", True),
        ((3, 6, 0), ">=3.0.1,<3.6.0", False),
        ((3, 10, 0), ">3.9.0", True),  # numeric, not lexical: 3.10 > 3.9
        ((3, 3, 0), "==3.3.0", True),
        ((3, 3, 0), "!=3.3.0", False),
    ],
)
def test_in_range(version: tuple[int, int, int], pattern: str, inside: bool) -> None:
    from mnnrepro.fixtures import in_range

    assert in_range(version, pattern) is inside


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('refs = ["*"]', 'refs = [">=3.x"]', "is not a version constraint"),
        ('refs = ["*"]', 'refs = "3.3.0"', "must be a list of non-empty strings"),
        ("[workloads.mnist]", '[workloads.mnist]\nmodel = "lenet"\nsteps = 0', "steps = 0: must be an integer in"),
        (
            "[workloads.mnist]",
            '[workloads.mnist]\nmodel = "lenet"\nprecision = "ultra"',
            "precision = 'ultra': must be one of high",
        ),
        (
            "[workloads.mnist]",
            '[workloads.mnist]\nmodel = "lenet"\nbatch_size = 2.5',
            "batch_size = 2.5: must be an integer",
        ),
        ("[timeouts]", "[timeouts]\ncpu = -1", "cpu = -1: must be a number in"),
        ("[timeouts]", "[timeouts]\ncpu = 0", "cpu = 0: must be a number in"),
        ("[timeouts]", "[timeouts]\ncpu = true", "cpu = True: must be a number"),
    ],
)
def test_values_are_type_and_range_checked_with_the_key_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = MINIMAL if "[timeouts]" in MINIMAL or old != "[timeouts]" else MINIMAL + "\n[timeouts]\n"
    if old not in text:
        text += f"\n{old}\n"
    with pytest.raises(FixtureError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_matrix(write_matrix(tmp_path, text.replace(old, new, 1)))


def test_a_commit_that_is_not_hex_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="commit = 5: must be a"):
        load_matrix(write_matrix(tmp_path, MINIMAL + '\n[refs."1.0"]\ncommit = 5\n'))


def test_an_unknown_tier_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="tier = 'nightly': must be one of ci, push, scheduled"):
        load_matrix(write_matrix(tmp_path, MINIMAL + '\n[refs."1.0"]\ncommit = "abcdef0"\ntier = "nightly"\n'))


def test_binary_garbage_is_a_fixture_error(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(FixtureError, match="cannot read"):
        load_matrix(path)


def test_ci_refs_come_from_their_tier() -> None:
    m = load_matrix()
    assert m.refs_for(("ci",)) == ["3.3.0", "47027e10"]
    assert "3.6.1" in m.refs_for(("scheduled",)) and "3.6.1" not in m.refs_for(("ci", "push"))


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
icd = "lavapipe"
outcome = "reproduce"
signal = "SIGSEGV"
stage = "sgd_step"
step = 0

[[expect]]
variant = "*"
icd = ["lavapipe", "-"]
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
        (MINIMAL + '[workloads.mnist]\nmodel = "lenet"\nsteps = 3\nepochs = 2\n', "epochs"),
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
    with pytest.raises(FixtureError, match="outcome = 'works': must be one of"):
        load_matrix(write_matrix(tmp_path, MINIMAL.replace('outcome = "pass"', 'outcome = "works"')))


FALLBACK_ROW = """
[[expect]]
refs = ["2.*"]
variant = "vulkan-image"
icd = "lavapipe"
bug = "x/y#1"
outcome = "fixed-by-fallback"
op = "Deconvolution"
phase = "sgd_step"
"""


def with_row(row: str) -> str:
    """MINIMAL with ``row`` before its catch-all row (the first matching row wins)."""
    head, catch_all = MINIMAL.rsplit("[[expect]]", 1)
    return head + row.lstrip("\n") + "\n[[expect]]" + catch_all


def test_a_fixed_by_fallback_row_loads_with_its_op_and_phase(tmp_path: Path) -> None:
    m = load_matrix(write_matrix(tmp_path, with_row(FALLBACK_ROW)))
    row = m.expectation("2.0", "vulkan-image", "lavapipe")
    assert row is not None
    assert (row.outcome, row.op, row.phase, row.bug) == ("fixed-by-fallback", "Deconvolution", "sgd_step", "x/y#1")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('op = "Deconvolution"\n', ""), "needs op and phase"),
        (('phase = "sgd_step"\n', ""), "needs op and phase"),
        (('phase = "sgd_step"', 'phase = "backward"'), "phase = 'backward': must be one of forward"),
        (('bug = "x/y#1"\n', ""), "give the row its bug"),
        (('outcome = "fixed-by-fallback"\nop = "Deconvolution"\n', 'outcome = "fixed"\n'), "op and phase go together"),
    ],
)
def test_a_row_with_a_bad_op_or_phase_is_rejected(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = FALLBACK_ROW.replace(*edit)
    assert text != FALLBACK_ROW
    with pytest.raises(FixtureError, match=message):
        load_matrix(write_matrix(tmp_path, with_row(text)))


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

    # The driver's parts (issue 23: main.cpp only puts them in order) write the stages.
    text = "".join(p.read_text() for p in sorted((NATIVE_DIR / "src").rglob("*.cpp")))
    stages = set(re.findall(r'log\.stage\("(\w+)"', text))
    rows = [r for r in load_matrix().expectations if r.outcome == "reproduce"]
    assert rows
    for row in rows:
        assert row.stage in stages
        assert row.signal.startswith("SIG")


# -- golden manifests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["3.3.0", "47027e10"])
def test_committed_goldens_match_their_manifests(ref: str) -> None:
    from mnnrepro.fixtures import verify_golden_manifest

    verify_golden_manifest(FIXTURES / "golden" / "mnist" / ref)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("truncate-npy", "does not match the golden's manifest"),
        ("bad-npy-header", "does not match the golden's manifest"),
        ("corrupt-provenance", "provenance.json does not match"),
        ("missing-file", "is missing from the golden"),
        ("extra-file", "not in the golden's manifest"),
        ("garbage-manifest", "missing or unreadable"),
    ],
)
def test_a_damaged_golden_is_rejected_naming_the_file(tmp_path: Path, fault: str, message: str) -> None:
    import shutil

    from mnnrepro.fixtures import verify_golden_manifest

    golden = tmp_path / "3.3.0"
    shutil.copytree(FIXTURES / "golden" / "mnist" / "3.3.0", golden)
    npy = golden / "step0" / "grad" / "conv1.weight.npy"
    if fault == "truncate-npy":
        npy.write_bytes(npy.read_bytes()[:100])
    elif fault == "bad-npy-header":
        data = bytearray(npy.read_bytes())
        data[10:20] = b"XXXXXXXXXX"
        npy.write_bytes(bytes(data))
    elif fault == "corrupt-provenance":
        (golden / "provenance.json").write_text("{ not json")
    elif fault == "missing-file":
        npy.unlink()
    elif fault == "extra-file":
        (golden / "step0" / "stray.npy").write_bytes(b"x")
    else:
        (golden / "MANIFEST.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(FixtureError, match=message):
        verify_golden_manifest(golden)


# -- rows per device (issue 22) ------------------------------------------------------------------

H100 = Device("NVIDIA H100 80GB HBM3", "NVIDIA", "580.159.04")
RADEON = Device("AMD Radeon RX 7900", "AMD", "2.0.300")
# The gradient check's failure as the H100 gave it at 3.6.1 (gradcheck.Report.summary, session's no-golden form).
NVIDIA_GRADIENTS = (
    "gradients: no committed golden for 3.6.1: vs the CPU run of this build: gradient check FAILED for 22/32 "
    "tensors; worst conv2.bias step 0 grad: max_rel 1.12e+00, nmse 1.5e+00, cosine 0.1490000 (limit first)"
)


@pytest.mark.parametrize("variant", ["vulkan-image", "vulkan-buffer", "vulkan-buffer-low"])
@pytest.mark.parametrize("ref", ["3.3.0", "3.6.1"])
def test_rows_learned_on_software_drivers_never_claim_the_host_gpu(ref: str, variant: str) -> None:
    """A host cell on a GPU no row names (or whose device is unknown) has no expectation: never lavapipe's."""
    m = load_matrix()
    assert m.expectation(ref, variant, "host") is None
    assert m.expectation(ref, variant, "host", device=RADEON) is None
    assert m.expectation(ref, variant, "lavapipe", device=RADEON) is not None  # the ICD names the driver


@pytest.mark.parametrize(
    ("ref", "variant", "outcome"),
    [
        ("3.3.0", "vulkan-image", "reproduce"),
        ("47027e10", "vulkan-image", "reproduce"),
        ("3.5.0", "vulkan-image", "reproduce"),
        ("3.6.1", "vulkan-image", "known-wrong"),
        ("9.9.9", "vulkan-image", "known-wrong"),
        ("3.3.0", "vulkan-buffer", "fixed"),
        ("3.6.1", "vulkan-buffer", "fixed"),
    ],
)
def test_nvidia_rows(ref: str, variant: str, outcome: str) -> None:
    row = load_matrix().expectation(ref, variant, "host", "3.0.1" if ref == "47027e10" else None, H100)
    assert row is not None and row.outcome == outcome and row.vendor == "NVIDIA" and row.icd == "host"
    assert outcome != "fixed" or (row.op, row.phase) == ("Deconvolution", "sgd_step")  # judged on placement
    if outcome == "reproduce":
        assert (row.signal, row.stage, row.step, row.bug) == ("SIGSEGV", "sgd_step", 0, "alibaba/MNN#3129")


def test_the_nvidia_known_wrong_row_matches_the_gradient_failure_and_nothing_else() -> None:
    row = load_matrix().expectation("3.6.1", "vulkan-image", "host", device=H100)
    assert row is not None and row.outcome == "known-wrong" and "0.384" in row.reason and "0.149" in row.reason
    pattern = re.compile(row.match)
    assert pattern.search(NVIDIA_GRADIENTS)
    assert pattern.search("accuracy_vs_cpu: |0.384 - cpu 0.727| = 0.3430 <= 0.03")
    for other in (
        "finite_loss: NaN/Inf loss",
        "completed: 12/30 steps, done=False",
        "gradients: gradient check: step0/grad/conv2.bias.npy is missing",
        "gradients: gradients match (32 tensors); worst conv2.bias step 0 grad: max_rel 1e-05",
        "op_placement: Deconvolution in sgd_step: no op placement recorded",
    ):
        assert not pattern.search(other), other


def test_an_icd_list_is_one_row_per_icd(tmp_path: Path) -> None:
    m = load_matrix(write_matrix(tmp_path, MINIMAL))
    assert [r.icd for r in m.expectations if r.variant == "*"] == ["lavapipe", "-"]


@pytest.mark.parametrize("icd", ['"*"', '"host"', '"h*"', '["lavapipe", "host"]'])
def test_a_vulkan_row_covering_the_host_icd_must_name_the_device(tmp_path: Path, icd: str) -> None:
    row = f'[[expect]]\nrefs = ["3.*"]\nvariant = "vulkan-buffer"\nicd = {icd}\noutcome = "pass"\n'
    with pytest.raises(FixtureError, match="covers the host ICD, and the row names no device or vendor"):
        load_matrix(write_matrix(tmp_path, with_row(row)))
    m = load_matrix(write_matrix(tmp_path, with_row(row + 'vendor = "NVIDIA"\n')))
    assert m.expectation("3.0", "vulkan-buffer", "host") is None  # the device not known: no row for it
    found = m.expectation("3.0", "vulkan-buffer", "host", device=H100)
    assert found is not None and found.vendor == "NVIDIA" and found.outcome == "pass"
    assert m.expectation("3.0", "vulkan-buffer", "host", device=RADEON) is None


def test_a_cpu_row_may_cover_every_icd(tmp_path: Path) -> None:
    row = '[[expect]]\nrefs = ["3.*"]\nvariant = "cpu"\nicd = "*"\noutcome = "pass"\n'
    assert load_matrix(write_matrix(tmp_path, with_row(row))).expectation("3.0", "cpu", "-") is not None


KNOWN_WRONG_ROW = """
[[expect]]
refs = ["3.*"]
variant = "vulkan-image"
icd = "host"
vendor = "NVIDIA"
driver = "580.*"
outcome = "known-wrong"
match = '^gradients: .*FAILED'
reason = "wrong gradients"
"""


def test_a_known_wrong_row_loads_with_its_device_match_and_reason(tmp_path: Path) -> None:
    m = load_matrix(write_matrix(tmp_path, with_row(KNOWN_WRONG_ROW)))
    row = m.expectation("3.1", "vulkan-image", "host", device=H100)
    assert row is not None
    assert (row.outcome, row.vendor, row.driver, row.match, row.reason) == (
        "known-wrong",
        "NVIDIA",
        "580.*",
        "^gradients: .*FAILED",
        "wrong gradients",
    )
    assert m.expectation("3.1", "vulkan-image", "host", device=Device("NVIDIA H100", "NVIDIA", "550.1")) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("match = '^gradients: .*FAILED'\n", ""), "needs match"),
        (('reason = "wrong gradients"\n', ""), "needs match"),
        (("match = '^gradients: .*FAILED'", "match = '(unclosed'"), "not a regular expression"),
        (('outcome = "known-wrong"', 'outcome = "pass"'), "match is for 'known-wrong' rows only"),
        (('vendor = "NVIDIA"', 'vendor = ""'), "vendor = '': must be a non-empty string"),
    ],
)
def test_a_bad_known_wrong_row_is_rejected(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = KNOWN_WRONG_ROW.replace(*edit)
    assert text != KNOWN_WRONG_ROW
    with pytest.raises(FixtureError, match=message):
        load_matrix(write_matrix(tmp_path, with_row(text)))


@pytest.mark.parametrize("key", ['vendor = "NVIDIA"', 'driver = "580.*"'])
def test_an_opencl_row_names_the_device_only(tmp_path: Path, key: str) -> None:
    """The OpenCL probe reads the device name only: a vendor or driver key would never match an OpenCL cell (the
    H100's OpenCL rows once named the vendor and so covered none of its cells)."""
    row = f'[[expect]]\nrefs = ["3.*"]\nvariant = "opencl"\nicd = "*"\noutcome = "pass"\n{key}\n'
    with pytest.raises(FixtureError, match="the OpenCL probe reads the device name only"):
        load_matrix(write_matrix(tmp_path, with_row(row)))
    named = '[[expect]]\nrefs = ["3.*"]\nvariant = "opencl"\nicd = "*"\noutcome = "pass"\ndevice = "NVIDIA *"\n'
    m = load_matrix(write_matrix(tmp_path, with_row(named)))
    on_h100 = Device("NVIDIA H100 80GB HBM3", "", "")  # what the OpenCL probe gives
    found = m.expectation("3.0", "opencl", "-", device=on_h100)
    assert found is not None and found.device == "NVIDIA *"
