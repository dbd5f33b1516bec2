"""Issue 11 (driver input hardening) end to end: the real driver, given a hostile IDX file in a copy of
fixtures/mnist or a hostile `.npy` for --init-params, exits 3 (data rejected, native/README.md) with a message
naming the file and the problem: never an abort (a bad_alloc from a huge .npy shape), a segfault, or a size
check that an IDX header's dims wrapped past 2^64.

The driver is the one test_gradients.py builds (its session fixture `built`: same Builder, same cache, same
runner); each case runs it through that runner for one CPU step, and stops before training when rejected.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from mnnrepro import fixtures
from mnnrepro.workloads.train.models.lenet import PARAM_NAMES, PARAM_SHAPES

from .test_gradients import Built
from .test_gradients import built as built  # the session fixture: the driver is built once, shared

pytestmark = pytest.mark.integration
EXIT_DATA = 3  # native/README.md, "Exit codes"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
VICTIM = "conv1.weight"  # the first parameter the driver loads
NPY_MAGIC = b"\x93NUMPY"


# Hostile inputs ----------------------------------------------------------------------------------------------


def idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def npy_bytes(header: str, data: bytes = b"", *, version: bytes = b"\x01\x00", hlen: int | None = None) -> bytes:
    """A .npy file with the given header dict text (padded as numpy pads it) and raw data."""
    text = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    raw = text.encode("latin1")
    return NPY_MAGIC + version + struct.pack("<H", len(raw) if hlen is None else hlen) + raw + data


def npy_header(descr: str = "<f4", fortran: str = "False", shape: str = "(20, 1, 5, 5)") -> str:
    return f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"


VALID_DATA = np.zeros(500, np.float32).tobytes()  # conv1.weight (20, 1, 5, 5)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "data": replaces fixtures/mnist/<file>; "init": replaces <init>/<file>
    file: str
    content: bytes | Literal["directory", "missing"]
    message: str  # a regex the error message must match (besides naming the file)


TRAIN = fixtures.MNIST / TRAIN_IMAGES
TRAIN_BODY = TRAIN.read_bytes()[16:] if TRAIN.is_file() else b""  # 2000 x 28 x 28

CASES = [
    # IDX: the fault review's header, dims as near 2^32 x 2^32 x 2^16 as 32-bit dims go: the product overflows.
    Case(
        "idx-dims-overflow",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (0xFFFFFFFF, 0xFFFFFFFF, 0x10000)),
        r"dims 4294967295 x 4294967295 x 65536 overflow 64 bits",
    ),
    # 2000 x 2^30 x 2^30 = 2000 * 2^60 wraps to exactly 0 elements: a 16-byte file passed the old size check.
    Case(
        "idx-dims-wrap-to-zero",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (2000, 1 << 30, 1 << 30)),
        r"dims 2000 x 1073741824 x 1073741824 overflow 64 bits",
    ),
    Case("idx-truncated-header", "data", TRAIN_IMAGES, idx_header(8, (2000, 28, 28))[:10], r"truncated IDX header"),
    Case("idx-empty", "data", TRAIN_IMAGES, b"", r"0 bytes, shorter than the 4-byte IDX magic"),
    Case(
        "idx-truncated-data",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (2000, 28, 28)) + TRAIN_BODY[:1000],
        r"file has 1016 bytes, header promises 1568016 \(IDX dims 2000 x 28 x 28: 16 \+ 1568000\)",
    ),
    Case(
        "idx-trailing-data",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (2000, 28, 28)) + TRAIN_BODY + b"\0",
        r"file has 1568017 bytes, header promises 1568016 \(IDX dims 2000 x 28 x 28: 16 \+ 1568000\)",
    ),
    Case(
        "idx-bad-magic",
        "data",
        TRAIN_IMAGES,
        b"\x01\x02" + idx_header(8, (2000, 28, 28))[2:] + TRAIN_BODY,
        r"bad IDX magic 0x01 0x02",
    ),
    Case(
        "idx-wrong-type",
        "data",
        TRAIN_IMAGES,
        idx_header(0x0D, (2000, 28, 28)) + TRAIN_BODY,
        r"element type 0x0d is not unsigned byte",
    ),
    Case("idx-rank-zero", "data", TRAIN_IMAGES, idx_header(8, ()), r"IDX rank 0 out of range 1\.\.4"),
    Case(
        "idx-images-rank-1",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (len(TRAIN_BODY),)) + TRAIN_BODY,
        r"IDX rank 1, images want rank 3",
    ),
    Case(
        "idx-count-mismatch",
        "data",
        TRAIN_LABELS,
        idx_header(8, (1999,)) + bytes(1999),
        r"2000 images but .*train-labels-idx1-ubyte has 1999 labels",
    ),
    Case(
        "idx-label-not-a-digit",
        "data",
        TRAIN_LABELS,
        idx_header(8, (2000,)) + bytes(1999) + b"\x0a",
        r"label 10 at index 1999 is not a digit",
    ),
    Case(
        "idx-not-28x28",
        "data",
        TRAIN_IMAGES,
        idx_header(8, (2000, 14, 56)) + TRAIN_BODY,
        r"images are 14x56, the model wants 28x28",
    ),
    Case("idx-directory", "data", TRAIN_IMAGES, "directory", r"not a regular file"),
    Case("idx-missing", "data", TRAIN_LABELS, "missing", r"cannot open .*: No such file or directory"),
    # .npy for --init-params. (2^40, 2^40): 2^80 elements; (2^20, 2^20): a 4 TiB allocation before any check.
    Case(
        "npy-shape-2^40x2^40",
        "init",
        VICTIM,
        npy_bytes(npy_header(shape=f"({1 << 40}, {1 << 40})")),
        r"dimension in shape \(1099511627776, 1099511627776\) exceeds 2147483647",
    ),
    Case(
        "npy-shape-2^20x2^20",
        "init",
        VICTIM,
        npy_bytes(npy_header(shape=f"({1 << 20}, {1 << 20})")),
        r"shape \(1048576, 1048576\) needs 4398046511104 bytes of data, the file has 0 \(truncated\)",
    ),
    Case(
        "npy-shape-overflow",
        "init",
        VICTIM,
        npy_bytes(npy_header(shape="(2147483647, 2147483647, 2147483647)")),
        r"shape \(2147483647, 2147483647, 2147483647\) overflows 64 bits",
    ),
    Case(
        "npy-negative-dim",
        "init",
        VICTIM,
        npy_bytes(npy_header(shape="(-1, 1, 5, 5)")),
        r"negative dimension in shape \(-1, 1, 5, 5\)",
    ),
    Case("npy-bad-shape", "init", VICTIM, npy_bytes(npy_header(shape="(20.5, 1)")), r"bad shape \(20\.5, 1\)"),
    Case("npy-no-shape", "init", VICTIM, npy_bytes("{'descr': '<f4', 'fortran_order': False, }"), r"no 'shape'"),
    Case(
        "npy-truncated-data",
        "init",
        VICTIM,
        npy_bytes(npy_header(), VALID_DATA[:1000]),
        r"shape \(20, 1, 5, 5\) needs 2000 bytes of data, the file has 1000 \(truncated\)",
    ),
    Case(
        "npy-trailing-data",
        "init",
        VICTIM,
        npy_bytes(npy_header(), VALID_DATA + b"\0\0\0\0"),
        r"needs 2000 bytes of data, the file has 2004 \(more values than the shape says\)",
    ),
    Case(
        "npy-wrong-dtype",
        "init",
        VICTIM,
        npy_bytes(npy_header(descr="<f8"), np.zeros(500).tobytes()),
        r"dtype '<f8', only '<f4'",
    ),
    Case(
        "npy-big-endian",
        "init",
        VICTIM,
        npy_bytes(npy_header(descr=">f4"), VALID_DATA),
        r"dtype '>f4', only '<f4'",
    ),
    Case(
        "npy-fortran-order",
        "init",
        VICTIM,
        npy_bytes(npy_header(fortran="True"), VALID_DATA),
        r"fortran_order is True, only C order",
    ),
    Case(
        "npy-header-past-end",
        "init",
        VICTIM,
        npy_bytes(npy_header(), hlen=0xFFFF),
        r"header length 65535 runs past the end of the file \(128 bytes\)",
    ),
    Case("npy-truncated-preamble", "init", VICTIM, NPY_MAGIC + b"\x01", r"7 bytes, shorter than the 10-byte"),
    Case("npy-bad-magic", "init", VICTIM, b"\x93NUMPX" + npy_bytes(npy_header(), VALID_DATA)[6:], r"bad magic"),
    Case(
        "npy-version-2",
        "init",
        VICTIM,
        npy_bytes(npy_header(), VALID_DATA, version=b"\x02\x00"),
        r"format version 2\.0, only 1\.0",
    ),
    Case(
        "npy-shape-mismatch",
        "init",
        VICTIM,
        npy_bytes(npy_header(shape="(20, 1, 25)"), VALID_DATA),
        r"shape \(20, 1, 25\), conv1\.weight wants \(20, 1, 5, 5\)",
    ),
    Case("npy-directory", "init", VICTIM, "directory", r"not a regular file"),
    Case("npy-missing", "init", VICTIM, "missing", r"cannot open .*: No such file or directory"),
]


def write_inputs(root: Path, case: Case | None) -> tuple[Path, Path]:
    """Under root: data/ (a copy of fixtures/mnist) and init/ (valid parameters), with case's file replaced."""
    data, init = root / "data", root / "init"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(fixtures.MNIST, data)
    init.mkdir()
    for name in PARAM_NAMES:
        np.save(init / f"{name}.npy", np.zeros(PARAM_SHAPES[name], np.float32))
    if case is not None:
        target = (data / case.file) if case.kind == "data" else (init / f"{case.file}.npy")
        target.unlink()
        if case.content == "directory":
            target.mkdir()
        elif case.content != "missing":
            target.write_bytes(case.content)
    return data, init


def driver_argv(driver: Path, data: Path, init: Path, out: Path) -> list[str]:
    run = ["--steps", "1", "--batch-size", "8", "--test-limit", "10", "--threads", "1", "--no-trace-ops"]
    return [str(driver), "--backend", "cpu", "--data", str(data), "--out", str(out), "--init-params", str(init), *run]


@dataclass
class Outcome:
    returncode: int
    output: str
    errors: list[dict[str, object]]  # the "error" events of events.jsonl


def run_driver(built: Built, name: str, case: Case | None) -> Outcome:
    # Under the runner's writable results_dir, so a Docker runner sees the inputs too.
    root = built.root / "driver-inputs" / name
    data, init = write_inputs(root, case)
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    # The Docker runner mounts results read-only but for the paths a command may write.
    completed = built.runner.run(driver_argv(built.driver, data, init, out), writable=[out], timeout_s=300)
    events = out / "events.jsonl"
    lines = events.read_text().splitlines() if events.is_file() else []
    errors = [e for e in map(json.loads, lines) if e.get("event") == "error"]
    return Outcome(completed.returncode, completed.output, errors)


# Tests -------------------------------------------------------------------------------------------------------


def test_untouched_inputs_train(built: Built) -> None:
    """The control: the copied fixture and written parameters are accepted, so every rejection below is the
    case's one file."""
    outcome = run_driver(built, "control", None)
    assert outcome.returncode == 0, outcome.output[-3000:]
    assert outcome.errors == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_a_data_error(built: Built, case: Case) -> None:
    outcome = run_driver(built, case.id, case)
    assert outcome.returncode == EXIT_DATA, f"exit {outcome.returncode}, want {EXIT_DATA}:\n{outcome.output[-3000:]}"
    assert len(outcome.errors) == 1, outcome.output[-3000:]
    error = outcome.errors[0]
    message = str(error["message"])
    assert error["exit_code"] == EXIT_DATA
    assert error["kind"] == ("data" if case.kind == "data" else "init_params")
    named = case.file if case.kind == "data" else f"{case.file}.npy"
    assert named in message, f"the message does not name {named}: {message}"
    assert re.search(case.message, message), f"{case.message!r} not in {message!r}"
    assert message in outcome.output  # the same line on stderr, for a human reading the run
