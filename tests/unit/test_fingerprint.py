"""fingerprint: the machine properties that change MNN's CPU arithmetic (issue 10, item 6), and the committed
goldens' record of theirs."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from mnnrepro import fingerprint
from mnnrepro.fingerprint import UNKNOWN, differences, mnn_x86_kernels

INTEL = {"format": 1, "arch": "x86_64", "mnn_x86_kernels": "avx2+fma", "rcpps": "sha256:86b782acf9498985"}
AMD = {**INTEL, "rcpps": "sha256:315610cdc419d6a7"}
GOLDENS = Path(__file__).resolve().parents[2] / "fixtures" / "golden"

x86_linux = pytest.mark.skipif(
    platform.machine() != "x86_64" or platform.system() != "Linux", reason="the RCPPS probe is x86-64 Linux only"
)


def test_kernel_family_follows_mnns_dispatch() -> None:
    # AVX-512 flags change nothing: the suite's builds have no AVX-512 kernels (MNN_AVX512 OFF)
    assert mnn_x86_kernels({"sse", "ssse3", "avx", "avx2", "fma", "avx512f", "avx512bw"}) == "avx2+fma"
    assert mnn_x86_kernels({"sse", "ssse3", "avx", "avx2", "fma"}) == "avx2+fma"
    assert mnn_x86_kernels({"ssse3", "avx", "avx2"}) == "avx2"
    assert mnn_x86_kernels({"ssse3", "sse4_1", "avx", "fma"}) == "sse"  # AVX without AVX2: MNN stays on SSE
    assert mnn_x86_kernels({"sse", "sse2"}) == "scalar"
    assert mnn_x86_kernels(set()) == UNKNOWN  # no flags to read: never taken for a match


def test_cpu_info_reads_the_first_processor(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nvendor_id\t: Other\n"
    )
    info = fingerprint.cpu_info(path)
    assert info["vendor_id"] == "AuthenticAMD" and info["model name"] == "AMD EPYC"
    assert info["flags"].split() == ["fpu", "avx2", "fma"]
    assert fingerprint.cpu_info(tmp_path / "absent") == {}


def test_same_arithmetic_has_no_differences_whatever_the_cpu_name() -> None:
    assert differences(INTEL, {**INTEL, "cpu": "another Xeon", "cpu_id": "GenuineIntel/6/143/8"}) == []


def test_each_differing_or_unknown_field_is_a_reason() -> None:
    assert differences(INTEL, AMD) == [
        "rcpps sha256:86b782acf9498985 on the golden's machine, sha256:315610cdc419d6a7 here"
    ]
    assert len(differences(INTEL, {**AMD, "mnn_x86_kernels": "avx2"})) == 2
    assert differences({**INTEL, "rcpps": UNKNOWN}, INTEL) == [
        f"rcpps {UNKNOWN} on the golden's machine, sha256:86b782acf9498985 here"
    ]
    assert differences(INTEL, {**INTEL, "rcpps": UNKNOWN}) != []  # unknown here: no match either
    assert differences(None, INTEL) == ["the golden records no machine fingerprint"]
    assert differences({"format": 1}, INTEL) != []


def test_other_architectures_never_match() -> None:
    arm = {"format": 1, "arch": "aarch64", "mnn_x86_kernels": "none", "rcpps": UNKNOWN}
    assert differences(arm, arm) != []


@x86_linux
def test_rcpps_probe_returns_reciprocals_within_the_documented_error() -> None:
    for kernels in ("sse", "avx2+fma"):
        table = fingerprint.rcpps_table(kernels, 0, 1 << 16).astype(np.float64)
        x = (np.arange(1 << 16, dtype=np.uint32) | np.uint32(0x3F800000)).view(np.float32).astype(np.float64)
        assert np.all(np.abs(table * x - 1.0) <= fingerprint.RCPPS_MAX_REL_ERROR)
        assert not np.array_equal(table, 1.0 / x)  # approximate, not a division: the probe ran the instruction


@x86_linux
def test_the_ymm_and_xmm_forms_use_one_table_here() -> None:
    # MNN's SSE kernels use the xmm form, its AVX2 kernels the ymm form; both CPUs measured agree with themselves
    start, stop = 3 << 20, (3 << 20) + 4096
    assert np.array_equal(
        fingerprint.rcpps_table("sse", start, stop).view(np.uint32),
        fingerprint.rcpps_table("avx2", start, stop).view(np.uint32),
    )


def test_rcpps_digest_names_an_xmm_table_only_where_it_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(kernels: str, start: int = 0, stop: int = 1 << 23) -> np.ndarray:
        return np.full(stop - start, 0.5 if kernels == "sse" else 0.25, np.float32)

    monkeypatch.setattr(fingerprint, "rcpps_table", fake)
    both = fingerprint.rcpps_digest("avx2+fma")
    assert both.startswith("sha256:") and "+xmm:" in both
    sse = fingerprint.rcpps_digest("sse")
    assert both.endswith("+xmm:" + sse.removeprefix("sha256:"))
    monkeypatch.setattr(fingerprint, "rcpps_table", lambda kernels, start=0, stop=1 << 23: fake("sse", start, stop))
    assert fingerprint.rcpps_digest("avx2+fma") == sse  # one table: one name
    assert fingerprint.rcpps_digest("scalar") == UNKNOWN

    def refused(kernels: str, start: int = 0, stop: int = 1 << 23) -> np.ndarray:
        raise OSError("no executable memory")

    monkeypatch.setattr(fingerprint, "rcpps_table", refused)
    assert fingerprint.rcpps_digest("avx2+fma") == UNKNOWN  # never a match, never a crash


def test_rcpps_table_refuses_a_ragged_range() -> None:
    with pytest.raises((ValueError, OSError)):
        fingerprint.rcpps_table("sse", 0, 12)


@x86_linux
def test_probe_names_this_machine() -> None:
    here = fingerprint.probe()
    assert here["arch"] == "x86_64" and here["format"] == fingerprint.FORMAT
    assert here["mnn_x86_kernels"] in ("avx2+fma", "avx2", "sse", "scalar")
    if here["mnn_x86_kernels"] != "scalar":
        assert here["rcpps"].startswith("sha256:") and len(here["rcpps"]) == len("sha256:") + 16
    assert differences(here, here) == []
    assert json.loads(json.dumps(here)) == here  # goes into provenance.json as is


@pytest.mark.parametrize("ref", ["3.3.0", "47027e10"])
def test_committed_goldens_record_their_machine_and_what_was_inferred(ref: str) -> None:
    machine = json.loads((GOLDENS / "mnist" / ref / "provenance.json").read_text())["machine"]
    assert machine["format"] == fingerprint.FORMAT
    assert set(fingerprint.ARITHMETIC_FIELDS) <= set(machine)
    # not measured when the golden was made: every arithmetic field is marked inferred, with the evidence
    assert set(machine["inferred"]) == set(fingerprint.ARITHMETIC_FIELDS)
    assert "bit for bit" in machine["evidence"]
    assert machine["cpu"] == UNKNOWN
    assert differences(machine, INTEL) == []
    assert differences(machine, AMD) != []
