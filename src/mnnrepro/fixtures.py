"""Data the suite reads from fixtures/: the MNIST subset (checked against its manifest before every run)
and the variant matrix with the expected outcome of each cell."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FixtureError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MNIST = FIXTURES / "mnist"
MATRIX = FIXTURES / "matrix.toml"

VARIANTS = ("cpu", "vulkan-image", "vulkan-buffer", "opencl")
OUTCOMES = ("reproduce", "fixed", "pass")


def verify_mnist(directory: Path = MNIST) -> dict[str, Any]:
    """Check every IDX file against MANIFEST.json (sha256 and size); no file may be missing or extra."""
    manifest_path = directory / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FixtureError(
            f"{manifest_path} is missing or unreadable ({exc})", hint="restore it with git checkout fixtures/mnist"
        ) from exc
    present = {p.name for p in directory.iterdir() if p.name != "MANIFEST.json" and not p.name.startswith(".")}
    extra = present - set(files)
    if extra:
        raise FixtureError(f"unexpected files in {directory}: {', '.join(sorted(extra))}")
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            raise FixtureError(f"{path} is missing", hint="git checkout fixtures/mnist")
        data = path.read_bytes()
        if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise FixtureError(
                f"{path} does not match its manifest (sha256/size differ): corrupt or truncated",
                hint="git checkout fixtures/mnist, or rebuild with python fixtures/make_mnist_subset.py",
            )
    return dict(manifest)


@dataclass(frozen=True)
class Expectation:
    refs: tuple[str, ...]
    variant: str
    icd: str
    outcome: str
    bug: str = ""
    signal: str = ""
    stage: str = ""
    step: int | None = None
    signature: tuple[str, ...] = ()  # top MNN frames of the known crash (signature.py)
    evidence: tuple[str, ...] = ()  # crash.json files under fixtures/ the signature was derived from

    def matches(self, ref: str, variant: str, icd: str) -> bool:
        return (
            any(fnmatch.fnmatchcase(ref, r) for r in self.refs)
            and fnmatch.fnmatchcase(variant, self.variant)
            and fnmatch.fnmatchcase(icd, self.icd)
        )


@dataclass(frozen=True)
class RefInfo:
    name: str
    commit: str
    compat_cxx_flags: tuple[str, ...] = ()
    compat_reason: str = ""


@dataclass(frozen=True)
class Matrix:
    default_ref: str
    training: dict[str, Any]
    checks: dict[str, float]
    timeouts: dict[str, float]
    refs: dict[str, RefInfo]
    expectations: tuple[Expectation, ...]
    gradcheck: dict[str, Any] = field(default_factory=dict)  # [gradcheck], validated by _gradcheck_table

    def expectation(self, ref: str, variant: str, icd: str) -> Expectation | None:
        for row in self.expectations:
            if row.matches(ref, variant, icd):
                return row
        return None

    def ref_info(self, ref: str) -> RefInfo:
        return self.refs.get(ref) or RefInfo(ref, "")


def _reject_unknown(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


TOLERANCE_KEYS = {"max_rel", "min_cosine", "max_nmse"}


def _tolerance(where: str, table: Any) -> dict[str, float]:
    if not isinstance(table, dict):
        raise FixtureError(f"{where}: wants a table with {', '.join(sorted(TOLERANCE_KEYS))}")
    _reject_unknown(where, table, TOLERANCE_KEYS)
    missing = TOLERANCE_KEYS - set(table)
    if missing:
        raise FixtureError(f"{where}: missing {', '.join(sorted(missing))}")
    if not all(isinstance(v, (int, float)) and v >= 0 for v in table.values()):
        raise FixtureError(f"{where}: limits must be non-negative numbers")
    return {k: float(v) for k, v in table.items()}


def _gradcheck_table(path: Path, data: Any) -> dict[str, Any]:
    """[gradcheck]: the gradient check's steps and tolerances (read by mnnrepro.gradcheck)."""
    if not isinstance(data, dict):
        raise FixtureError(f"{path} [gradcheck]: not a table")
    where = f"{path} [gradcheck]"
    _reject_unknown(where, data, {"steps", "reference", "tolerance", "arithmetic"})
    steps = data.get("steps", [0, 1])
    if not isinstance(steps, list) or not steps or steps != list(range(len(steps))):
        raise FixtureError(f"{where}: steps must be consecutive step numbers from 0, e.g. [0, 1]")
    classes: dict[str, dict[str, dict[str, float]]] = {}
    for name, table in data.get("tolerance", {}).items():
        if not isinstance(table, dict):
            raise FixtureError(f"{where} tolerance.{name}: not a table")
        _reject_unknown(f"{where} tolerance.{name}", table, {"first", "later"})
        classes[name] = {k: _tolerance(f"{where} tolerance.{name}.{k}", table.get(k)) for k in ("first", "later")}
    arithmetic: dict[str, dict[str, str]] = {}
    for backend, table in data.get("arithmetic", {}).items():
        if not isinstance(table, dict):
            raise FixtureError(f"{where} arithmetic.{backend}: not a table")
        _reject_unknown(f"{where} arithmetic.{backend}", table, {"high", "normal", "low"})
        for precision, cls in table.items():
            if cls not in classes:
                raise FixtureError(f"{where} arithmetic.{backend}.{precision}: {cls!r} is not a tolerance class")
        arithmetic[backend] = {k: str(v) for k, v in table.items()}
    return {
        "steps": [int(s) for s in steps],
        "reference": _tolerance(f"{where} reference", data.get("reference")),
        "tolerance": classes,
        "arithmetic": arithmetic,
    }


def load_matrix(path: Path = MATRIX) -> Matrix:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"cannot read {path}: {exc}") from exc
    _reject_unknown(
        str(path), data, {"format", "default_ref", "training", "checks", "timeouts", "refs", "expect", "gradcheck"}
    )
    if data.get("format") != 1:
        raise FixtureError(f"{path}: format {data.get('format')!r} is not 1")
    training = data.get("training", {})
    _reject_unknown(f"{path} [training]", training, {"steps", "batch_size", "seed", "precision", "test_limit"})
    checks = data.get("checks", {})
    _reject_unknown(
        f"{path} [checks]",
        checks,
        {"min_accuracy", "loss_fall_window", "loss_abs_tolerance", "loss_rel_tolerance", "max_accuracy_gap"},
    )
    timeouts = data.get("timeouts", {})
    _reject_unknown(f"{path} [timeouts]", timeouts, {"cpu", "vulkan", "opencl"})
    refs = {}
    for name, table in data.get("refs", {}).items():
        _reject_unknown(f"{path} [refs.{name}]", table, {"commit", "compat_cxx_flags", "compat_reason"})
        refs[name] = RefInfo(
            name, table.get("commit", ""), tuple(table.get("compat_cxx_flags", ())), table.get("compat_reason", "")
        )
    rows = []
    for i, row in enumerate(data.get("expect", [])):
        where = f"{path} [[expect]] #{i + 1}"
        _reject_unknown(
            where, row, {"refs", "variant", "icd", "outcome", "bug", "signal", "stage", "step", "signature", "evidence"}
        )
        refs_value = row.get("refs", ["*"])
        if not isinstance(refs_value, list) or not all(isinstance(r, str) for r in refs_value):
            raise FixtureError(f'{where}: refs must be a list of strings, e.g. refs = ["3.3.0"]')
        if row.get("outcome") not in OUTCOMES:
            raise FixtureError(f"{where}: outcome must be one of {', '.join(OUTCOMES)}")
        if row["outcome"] == "reproduce" and not (row.get("signal") and row.get("stage")):
            raise FixtureError(f"{where}: a 'reproduce' row needs signal and stage")
        rows.append(
            Expectation(
                tuple(row.get("refs", ["*"])),
                row.get("variant", "*"),
                row.get("icd", "*"),
                row["outcome"],
                row.get("bug", ""),
                row.get("signal", ""),
                row.get("stage", ""),
                row.get("step"),
                tuple(row.get("signature", ())),
                tuple(row.get("evidence", ())),
            )
        )
    gradcheck = _gradcheck_table(path, data["gradcheck"]) if "gradcheck" in data else {}
    return Matrix(str(data.get("default_ref", "3.3.0")), training, checks, timeouts, refs, tuple(rows), gradcheck)
