"""Data the suite reads from fixtures/: the MNIST subset (checked against its manifest before every run)
and the variant matrix with the expected outcome of each cell."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import variants
from .contract import Device, device_fits
from .errors import ConfigError, FixtureError
from .icd import KNOWN as KNOWN_ICDS

CHECKOUT_ENV = "MNNREPRO_CHECKOUT"


def suite_digest(package: Path | None = None, fixtures_dir: Path | None = None) -> str:
    """What decides this suite's verdicts, as content: its Python source and the expectation files, hashed (sha256,
    first 16 hex digits). Shards judged by different suite code or rows must not merge into one verdict (issue 26);
    a version string does not change between commits, a git commit is not there in an installed package."""
    pkg = package or Path(__file__).resolve().parent
    fx = fixtures_dir or (find_checkout() or pkg.parents[1]) / "fixtures"
    h = hashlib.sha256()
    files = [*sorted(pkg.rglob("*.py")), fx / "ops" / "expectations.toml", fx / "validation.toml", fx / "matrix.toml"]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _is_checkout(path: Path) -> bool:
    return (path / "fixtures" / "matrix.toml").is_file() and (path / "native" / "CMakeLists.txt").is_file()


def find_checkout(start: Path | None = None) -> Path | None:
    """The mnnrepro checkout whose fixtures/, native/ and docker/ the suite reads: $MNNREPRO_CHECKOUT, else the
    one this package was imported from (source tree or editable install), else the working directory or one of
    its parents (a `pip install .` used from inside a clone). None outside any checkout."""
    explicit = os.environ.get(CHECKOUT_ENV)
    if explicit:
        path = Path(explicit).expanduser().resolve()
        return path if _is_checkout(path) else None
    here = Path(__file__).resolve().parents[2]
    if _is_checkout(here):
        return here
    cwd = (start or Path.cwd()).resolve()
    for candidate in (cwd, *cwd.parents):
        if _is_checkout(candidate):
            return candidate
    return None


def require_checkout() -> Path:
    """ROOT, or FixtureError saying how to point the suite at a checkout."""
    if not _is_checkout(ROOT):
        raise FixtureError(
            "no mnnrepro checkout found: the suite reads its fixtures/, native/ and docker/ from a clone of the "
            f"mnnrepro repository (looked at ${CHECKOUT_ENV}, {Path(__file__).resolve().parents[2]} and the "
            "working directory and its parents)",
            hint=f"run mnnrepro from inside a clone, or set {CHECKOUT_ENV}=/path/to/mnnrepro",
        )
    return ROOT


ROOT = find_checkout() or Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
MNIST = FIXTURES / "mnist"
MATRIX = FIXTURES / "matrix.toml"

VARIANTS = variants.NAMES
# "fixed-by-fallback": a known-bug cell that trains because the backend declines the crashing op (row's `op`),
# which then runs on the CPU in the row's `phase`; not a fixed kernel (alibaba/MNN#3129 at 3.6.x: 39be21c56).
# "known-wrong": the cell trains but computes known wrong values (issue 22: 3.6.x image mode on NVIDIA): its failing
# checks are the row's `match`; expected, never a pass.
OUTCOMES = ("reproduce", "fixed", "fixed-by-fallback", "pass", "known-wrong")
# The machine's own Vulkan driver (settings.ICD_NAMES): a different GPU on every machine, so a row for it names the
# device or vendor it was learned on.
HOST_ICD = "host"
DEVICE_KEYS = ("device", "vendor", "driver")
# The driver's `ops` event phases (native/README.md) an expectation's `phase` may name.
OP_PHASES = ("forward", "grad_dump", "sgd_step", "static_step", "saved_step")  # saved_step: --train-graph-file
# Where a ref runs: "ci" in .ci/run and on every push, "push" on every push, "scheduled" in the scheduled
# workflow only (so adding refs never pushes a cold .ci/run past its budget).
TIERS = ("ci", "push", "scheduled")

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_CONSTRAINT = re.compile(r"(>=|<=|==|!=|>|<)\s*(v?\d+\.\d+\.\d+)")


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """ "3.6.1" or "v3.6.1" -> (3, 6, 1); anything else (a branch, a commit) -> None."""
    m = _VERSION.fullmatch(text.strip()) if text else None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def is_version_range(pattern: str) -> bool:
    return pattern.strip()[:1] in "<>=!"


def parse_range(pattern: str) -> list[tuple[str, tuple[int, int, int]]]:
    """ ">=3.3.0,<3.6.0" -> [(">=", (3, 3, 0)), ("<", (3, 6, 0))]; ValueError when malformed."""
    out = []
    for part in pattern.split(","):
        m = _CONSTRAINT.fullmatch(part.strip())
        if not m:
            raise ValueError(f"{part.strip()!r} is not a version constraint like >=3.6.0")
        version = parse_version(m.group(2))
        assert version is not None
        out.append((m.group(1), version))
    return out


def in_range(version: tuple[int, int, int], pattern: str) -> bool:
    ops = {
        ">=": version.__ge__,
        "<=": version.__le__,
        "==": version.__eq__,
        "!=": version.__ne__,
        ">": version.__gt__,
        "<": version.__lt__,
    }
    return all(ops[op](bound) for op, bound in parse_range(pattern))


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


GOLDEN_MANIFEST = "MANIFEST.json"
# Goldens are keyed by (workload, ref) (issue 23): <root>/<workload>/<ref>/, e.g. fixtures/golden/mnist/3.3.0/.
GOLDEN_ROOT = FIXTURES / "golden"


def golden_dir(workload: str, ref: str, root: Path = GOLDEN_ROOT) -> Path:
    """Where the golden of ``workload`` at ``ref`` lives (it may not exist): ``<root>/<workload>/<ref>/``. A
    golden still at ``<root>/<ref>/`` (the layout before issue 23) is an error that says where it moved, never
    read or written over."""
    old = root / ref
    if (old / GOLDEN_MANIFEST).is_file() or (old / "provenance.json").is_file():
        raise FixtureError(
            f"{old} is a golden in the old layout (<root>/<ref>/): goldens are keyed by workload and ref, "
            f"this one lives in {root / workload / ref}",
            hint=f"move it: mv {old} {root / workload / ref}",
        )
    return root / workload / ref


def _digest_tree(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        p.relative_to(directory).as_posix(): {
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != GOLDEN_MANIFEST
    }


def write_manifest(directory: Path) -> Path:
    """MANIFEST.json of every file under a golden directory (sha256 and size), checked before each run."""
    path = directory / GOLDEN_MANIFEST
    path.write_text(json.dumps({"format": 1, "files": _digest_tree(directory)}, indent=1) + "\n")
    return path


def verify_golden_manifest(directory: Path) -> None:
    """A golden must match its manifest exactly (no file missing, changed or extra): a truncated .npy, a bad
    header or a corrupt provenance.json is caught before anything runs, naming the file."""
    manifest_path = directory / GOLDEN_MANIFEST
    hint = f"restore it: git checkout {directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory}"
    try:
        files: dict[str, dict[str, Any]] = json.loads(manifest_path.read_bytes().decode("utf-8"))["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a table")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FixtureError(f"{manifest_path} is missing or unreadable ({exc})", hint=hint) from exc
    present = _digest_tree(directory)
    for name in sorted(set(files) | set(present)):
        want, got = files.get(name), present.get(name)
        if want is None:
            raise FixtureError(f"{directory / name}: not in the golden's manifest (an extra file)", hint=hint)
        if got is None:
            raise FixtureError(f"{directory / name} is missing from the golden", hint=hint)
        if got != {"bytes": want.get("bytes"), "sha256": want.get("sha256")}:
            raise FixtureError(
                f"{directory / name} does not match the golden's manifest ({got['bytes']} bytes, sha256 "
                f"{got['sha256'][:12]}...): corrupt or truncated",
                hint=hint,
            )


def ref_pattern(refs: tuple[str, ...], ref: str, version: str | None = None) -> str | None:
    """The entry of ``refs`` that covers this ref ("3.3.0", "*", ">=3.6.0"), or None. A version range matches the
    ref's MNN version: the ref itself when it is X.Y.Z, else the version given (the matrix's or the source tree's
    include/MNN/MNNDefine.h). One rule for the rows of matrix.toml and of fixtures/ops/expectations.toml."""
    parsed = parse_version(ref) or parse_version(version)
    for pattern in refs:
        if is_version_range(pattern):
            if parsed is not None and in_range(parsed, pattern):
                return pattern
        elif fnmatch.fnmatchcase(ref, pattern):
            return pattern
    return None


def covers_cell(
    refs: tuple[str, ...], variant_pattern: str, icd_pattern: str, ref: str, version: str | None, variant: str, icd: str
) -> bool:
    """Whether a row's refs, variant and ICD patterns cover the cell (ref, variant, ICD), whatever its device."""
    return (
        ref_pattern(refs, ref, version) is not None
        and fnmatch.fnmatchcase(variant, variant_pattern)
        and fnmatch.fnmatchcase(icd, icd_pattern)
    )


class OnDevice:
    """The device keys of a row (issue 22), for a dataclass that has them as fields: "" is any device; a row that
    names one never holds on a device that is not known."""

    device: str
    vendor: str
    driver: str

    @property
    def names_device(self) -> bool:
        return bool(self.device or self.vendor or self.driver)

    def on(self, device: Device | None) -> bool:
        """Whether the row holds on this device: always without device keys; never on an unknown device."""
        return device_fits(device, self.device, self.vendor, self.driver)


DEFAULT_WORKLOAD = "mnist"  # what a session without --workload trains, and what a row without `workload` covers


@dataclass(frozen=True)
class Fit:
    """A workload's step count for the cells of one variant on one ICD (``[[workloads.NAME.fit]]``): what fits
    a software driver's time limit, measured, with why."""

    variant: str
    icd: str
    steps: int
    reason: str

    def covers(self, variant: str, icd: str) -> bool:
        return fnmatch.fnmatchcase(variant, self.variant) and fnmatch.fnmatchcase(icd, self.icd)


@dataclass(frozen=True)
class WorkloadSpec:
    """One [workloads.NAME] table (issue 24): the model the driver trains (--model) and how (training: steps,
    batch_size, seed, precision, test_limit), extra driver options, the workload's own check numbers and the
    checks its runs were never measured for (name -> why: n/a, never a failure), step counts fitted per
    variant and ICD, the workload whose golden its step-0 gradients are checked against, and the tensors whose
    exact gradient is zero (judged by an absolute limit: [workloads.NAME.gradcheck])."""

    name: str
    model: str
    training: dict[str, Any]
    driver_args: tuple[str, ...] = ()
    checks: dict[str, float] = field(default_factory=dict)
    unmeasured: dict[str, str] = field(default_factory=dict)
    fit: tuple[Fit, ...] = ()
    golden: str = ""  # "" -> its own name
    zero: tuple[str, ...] = ()
    zero_limit: float = 0.0
    zero_reason: str = ""

    @property
    def golden_workload(self) -> str:
        return self.golden or self.name

    def fitted(self, variant: str, icd: str) -> Fit | None:
        return next((f for f in self.fit if f.covers(variant, icd)), None)


@dataclass(frozen=True)
class Expectation(OnDevice):
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
    # The known bug's op and the driver phase where its placement is read (judge.py): on a row that trains, the
    # op must have run on the GPU there ("fixed") or on the CPU ("fixed-by-fallback").
    op: str = ""
    phase: str = ""
    # fnmatch patterns on the device the cell ran on (contract.Device, from its `backend` event), as the ops rows
    # have (issue 22): "" is any device; a row that names one never matches a cell whose device is not known.
    device: str = ""
    vendor: str = ""
    driver: str = ""
    # "known-wrong": a regular expression found in the failing checks' text ("name: detail"), and why.
    match: str = ""
    reason: str = ""
    # The training workloads it covers ([workloads.NAME], issue 24): a row without `workload` is MNIST's only, so
    # every row written before there were other workloads keeps its meaning.
    workloads: tuple[str, ...] = (DEFAULT_WORKLOAD,)

    def covers(self, ref: str, version: str | None = None) -> str | None:
        """The entry of `refs` that covers this ref (ref_pattern), or None."""
        return ref_pattern(self.refs, ref, version)

    def matches(
        self,
        ref: str,
        variant: str,
        icd: str,
        version: str | None = None,
        device: Device | None = None,
        workload: str = DEFAULT_WORKLOAD,
    ) -> bool:
        return self.covers_cell(ref, variant, icd, version, workload) and self.on(device)

    def covers_cell(
        self, ref: str, variant: str, icd: str, version: str | None = None, workload: str = DEFAULT_WORKLOAD
    ) -> bool:
        """(workload, ref, variant, ICD) only, whatever the device."""
        return workload in self.workloads and covers_cell(self.refs, self.variant, self.icd, ref, version, variant, icd)

    def describe(self) -> str:
        on = "".join(f" {k}={getattr(self, k)!r}" for k in DEVICE_KEYS if getattr(self, k))
        wl = "" if self.workloads == (DEFAULT_WORKLOAD,) else f" workload={','.join(self.workloads)}"
        return f"[[expect]] ({', '.join(self.refs)} {self.variant} {self.icd}{on}{wl} {self.outcome})"


@dataclass(frozen=True)
class RefInfo:
    name: str
    commit: str
    compat_cxx_flags: tuple[str, ...] = ()
    compat_reason: str = ""
    tier: str = "scheduled"


@dataclass(frozen=True)
class Matrix:
    default_ref: str
    training: dict[str, Any]
    checks: dict[str, float]
    timeouts: dict[str, float]
    refs: dict[str, RefInfo]
    expectations: tuple[Expectation, ...]
    gradcheck: dict[str, Any] = field(default_factory=dict)  # [gradcheck], validated by _gradcheck_table
    # [workloads.NAME] (issue 24): every training workload, by name; ``training`` above is MNIST's table.
    workloads: dict[str, WorkloadSpec] = field(default_factory=dict)

    def expectation(
        self,
        ref: str,
        variant: str,
        icd: str,
        version: str | None = None,
        device: Device | None = None,
        workload: str = DEFAULT_WORKLOAD,
    ) -> Expectation | None:
        """The first row that matches the cell on ``device`` (None: not known; rows that name a device are then
        passed over, so a cell of the host ICD whose device no row names has no expectation)."""
        for row in self.expectations:
            if row.matches(ref, variant, icd, version, device, workload):
                return row
        return None

    def likely_expectation(
        self, ref: str, variant: str, icd: str, version: str | None = None, workload: str = DEFAULT_WORKLOAD
    ) -> Expectation | None:
        """Before a cell ran, its device is not known: the first row that covers the cell on some device, so a
        cell can be planned (dumps, gdb) as the row it will most likely be judged by. Never a verdict's row: the
        judge takes ``expectation`` with the device the run probed."""
        return next((row for row in self.expectations if row.covers_cell(ref, variant, icd, version, workload)), None)

    def workload(self, name: str) -> WorkloadSpec:
        """The [workloads.NAME] table; ConfigError listing the known ones for any other name."""
        if name not in self.workloads:
            known = ", ".join(self.workloads) or "none"
            raise ConfigError(
                f"unknown workload {name!r}: fixtures/matrix.toml has [workloads.X] for {known}",
                hint=f"--workload {','.join(self.workloads) or 'mnist'}",
            )
        return self.workloads[name]

    def checks_for(self, name: str) -> dict[str, float]:
        """[checks], with the workload's own [workloads.NAME.checks] numbers over it."""
        spec = self.workloads.get(name)
        return {**self.checks, **(spec.checks if spec else {})}

    def refs_for(self, tiers: tuple[str, ...]) -> list[str]:
        """Refs whose tier is one of `tiers`, in matrix order."""
        return [name for name, info in self.refs.items() if info.tier in tiers]

    def ref_info(self, ref: str) -> RefInfo:
        """The matrix's entry of a ref: by name, or (a bisect step) by the commit it pins; else a bare entry."""
        if ref in self.refs:
            return self.refs[ref]
        if len(ref) >= 7 and all(c in "0123456789abcdef" for c in ref):
            for info in self.refs.values():
                if info.commit and (ref.startswith(info.commit) or info.commit.startswith(ref)):
                    return info
        return RefInfo(ref, "")


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


def _number(where: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> float:
    """A number within [lo, hi] (an int when asked), else FixtureError naming the key."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise FixtureError(f"{where} = {value!r}: must be {kind} in [{lo:g}, {hi:g}]")
    return float(value)


def _string(where: str, value: Any, *, allowed: tuple[str, ...] = (), empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise FixtureError(f"{where} = {value!r}: must be a{'' if empty else ' non-empty'} string")
    if allowed and value not in allowed:
        raise FixtureError(f"{where} = {value!r}: must be one of {', '.join(allowed)}")
    return value


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FixtureError(f'{where} = {value!r}: must be a list of non-empty strings, e.g. ["3.3.0"]')
    return tuple(value)


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FixtureError(f"{where}: must be a table")
    return value


TRAINING_LIMITS: dict[str, tuple[float, float]] = {
    "steps": (1, 100_000),
    "batch_size": (1, 60_000),
    "seed": (0, 2**31 - 1),
    "test_limit": (0, 10**7),
}
CHECK_LIMITS: dict[str, tuple[float, float, bool]] = {
    "min_accuracy": (0.0, 1.0, False),
    "loss_fall_window": (1, 10_000, True),
    "loss_abs_tolerance": (0.0, 100.0, False),
    "loss_rel_tolerance": (0.0, 100.0, False),
    "max_accuracy_gap": (0.0, 1.0, False),
    "absolute_min_steps": (1, 100_000, True),
}
PRECISIONS = ("high", "normal", "low")


# A fork's own fixture files in place of ours (the reusable action's `matrix` and `expectations` inputs, README
# "Use it in MNN's own CI"): read and checked exactly as ours are.
MATRIX_ENV = "MNNREPRO_MATRIX"
OPS_EXPECTATIONS_ENV = "MNNREPRO_OPS_EXPECTATIONS"


def fixture_path(default: Path, env: str) -> Path:
    """The file named by the environment variable ``env`` when it is set and not empty, else ``default``."""
    value = os.environ.get(env, "")
    return Path(value).expanduser() if value else default


def load_matrix(path: Path | None = None) -> Matrix:
    """Read and check fixtures/matrix.toml (or $MNNREPRO_MATRIX): every key known, every value of the right type
    and range."""
    path = path or fixture_path(MATRIX, MATRIX_ENV)
    data = _read_toml(path)
    if "training" in data:  # moved by issue 24: say where, never read it as the old table
        raise FixtureError(
            f"{path}: [training] moved to [workloads.mnist] (issue 24: every training workload is a "
            '[workloads.NAME] table; MNIST\'s takes model = "lenet" and the same steps, batch_size, seed, precision, '
            "test_limit)",
            hint='rename the table: [training] -> [workloads.mnist], and add model = "lenet"',
        )
    _reject_unknown(
        str(path), data, {"format", "default_ref", "workloads", "checks", "timeouts", "refs", "expect", "gradcheck"}
    )
    if data.get("format") != 1:
        raise FixtureError(f"{path}: format {data.get('format')!r} is not 1")
    checks = _checks_table(path, data.get("checks", {}))
    workloads = _workloads_table(path, data.get("workloads", {}))
    timeouts = _timeouts_table(path, data.get("timeouts", {}))
    refs = _refs_table(path, data.get("refs", {}))
    default_ref = _string(f"{path} default_ref", data.get("default_ref", "3.3.0"))
    rows = tuple(
        r for i, row in enumerate(data.get("expect", [])) for r in _expectation(f"{path} [[expect]] #{i + 1}", row)
    )
    for row in rows:
        unknown = [w for w in row.workloads if w not in workloads and w != DEFAULT_WORKLOAD]
        if unknown:
            raise FixtureError(f"{path} [[expect]] {row.describe()}: workload {unknown[0]!r} has no [workloads.X]")
    gradcheck = _gradcheck_table(path, data["gradcheck"]) if "gradcheck" in data else {}
    training = dict(workloads[DEFAULT_WORKLOAD].training) if DEFAULT_WORKLOAD in workloads else {}
    return Matrix(default_ref, training, checks, timeouts, refs, rows, gradcheck, workloads)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"cannot read {path}: {exc}", hint="git checkout fixtures/matrix.toml") from exc


TRAINING_KEYS = {"steps", "batch_size", "seed", "precision", "test_limit"}
# The ICDs a fit row may name: every Vulkan ICD (icd.TABLE's rows), and "-", the ICD of a cell that takes none.
FIT_ICDS = (*KNOWN_ICDS, "-")
WORKLOAD_KEYS = {"model", "driver_args", "checks", "fit", "golden", "gradcheck", *TRAINING_KEYS}
# Checks whose thresholds are absolute (measured on one workload): a workload may declare them unmeasured, and the
# judge does not fail a GPU cell on one its CPU baseline fails too (judge.py).
ABSOLUTE_CHECKS = ("loss_fell", "accuracy")


def _training_table(where: str, training: dict[str, Any]) -> dict[str, Any]:
    """A workload's steps, batch size, seed, precision and test limit of a driver run."""
    for key, (lo, hi) in TRAINING_LIMITS.items():
        if key in training:
            _number(f"{where} {key}", training[key], lo, hi, integer=True)
    if "precision" in training:
        _string(f"{where} precision", training["precision"], allowed=PRECISIONS)
    return {k: v for k, v in training.items() if k in TRAINING_KEYS}


def _workloads_table(path: Path, value: Any) -> dict[str, WorkloadSpec]:
    """[workloads.NAME]: each training workload (WorkloadSpec)."""
    out: dict[str, WorkloadSpec] = {}
    for name, table in _table(f"{path} [workloads]", value).items():
        where = f"{path} [workloads.{name}]"
        table = _table(where, table)
        _reject_unknown(where, table, WORKLOAD_KEYS)
        checks = dict(_table(f"{where}.checks", table.get("checks", {})))
        unmeasured = _table(f"{where}.checks.unmeasured", checks.pop("unmeasured", {}))
        for check, why in unmeasured.items():
            _string(f"{where}.checks.unmeasured.{check}", check, allowed=ABSOLUTE_CHECKS)
            _string(f"{where}.checks.unmeasured.{check}", why)
        zero, zero_limit, zero_reason = _zero_table(f"{where}.gradcheck", table.get("gradcheck", {}))
        out[name] = WorkloadSpec(
            name,
            _string(f"{where} model", table.get("model")),
            _training_table(where, table),
            _strings(f"{where} driver_args", table.get("driver_args", [])) if table.get("driver_args") else (),
            _checks_table(path, checks, f"[workloads.{name}.checks]"),
            dict(unmeasured),
            tuple(_fit_row(f"{where}.fit #{i + 1}", row) for i, row in enumerate(table.get("fit", []))),
            _string(f"{where} golden", table.get("golden", ""), empty=True),
            zero,
            zero_limit,
            zero_reason,
        )
    for spec in out.values():
        if spec.golden and spec.golden not in out:
            raise FixtureError(f"{path} [workloads.{spec.name}] golden = {spec.golden!r}: no such workload")
    return out


def _fit_row(where: str, value: Any) -> Fit:
    row = _table(where, value)
    _reject_unknown(where, row, {"variant", "icd", "steps", "reason"})
    steps = int(_number(f"{where} steps", row.get("steps"), *TRAINING_LIMITS["steps"], integer=True))
    variant, icd = _string(f"{where} variant", row.get("variant", "*")), _string(f"{where} icd", row.get("icd", "*"))
    # A pattern no cell can match (a typo) would leave the workload's full steps, and the cell past its time limit.
    if not any(fnmatch.fnmatchcase(v, variant) for v in VARIANTS):
        raise FixtureError(f"{where} variant = {variant!r}: matches none of {', '.join(VARIANTS)}")
    if not any(fnmatch.fnmatchcase(i, icd) for i in FIT_ICDS):
        raise FixtureError(f"{where} icd = {icd!r}: matches none of {', '.join(FIT_ICDS)} (- where no ICD applies)")
    return Fit(variant, icd, steps, _string(f"{where} reason", row.get("reason")))


def _zero_table(where: str, value: Any) -> tuple[tuple[str, ...], float, str]:
    """[workloads.NAME.gradcheck]: tensors whose exact gradient is zero (`zero`), judged by max|o - g| within
    `zero_limit` x the largest |value| of their layer's weight at the same step and kind; `reason` says why."""
    table = _table(where, value)
    _reject_unknown(where, table, {"zero", "zero_limit", "reason"})
    if not table:
        return (), 0.0, ""
    zero = _strings(f"{where} zero", table.get("zero"))
    if not zero:  # a rule for no tensor: a table that says nothing, or a list emptied by mistake
        raise FixtureError(f'{where} zero = []: name the tensors, e.g. zero = ["conv1.bias"], or drop the table')
    if any("." not in name for name in zero):
        raise FixtureError(f"{where} zero = {list(zero)!r}: names like conv1.bias (its layer's weight is the scale)")
    limit = _number(f"{where} zero_limit", table.get("zero_limit"), 0.0, 1.0)
    return zero, limit, _string(f"{where} reason", table.get("reason"))


def _checks_table(path: Path, value: Any, table: str = "[checks]") -> dict[str, Any]:
    """[checks] (or a workload's own): the judge's limits (CHECK_LIMITS)."""
    checks = _table(f"{path} {table}", value)
    _reject_unknown(f"{path} {table}", checks, set(CHECK_LIMITS))
    for key, number in checks.items():
        lo, hi, integer = CHECK_LIMITS[key]
        _number(f"{path} {table} {key}", number, lo, hi, integer=integer)
    return checks


def _timeouts_table(path: Path, value: Any) -> dict[str, Any]:
    """[timeouts]: seconds per driver run, per backend."""
    timeouts = _table(f"{path} [timeouts]", value)
    _reject_unknown(f"{path} [timeouts]", timeouts, {"cpu", "vulkan", "opencl"})
    for key, seconds in timeouts.items():
        _number(f"{path} [timeouts] {key}", seconds, 1, 86_400)
    return timeouts


def _refs_table(path: Path, value: Any) -> dict[str, RefInfo]:
    """[refs.NAME]: each ref's pinned commit, compatibility flags and CI tier."""
    refs = {}
    for name, table in _table(f"{path} [refs]", value).items():
        where = f"{path} [refs.{name}]"
        table = _table(where, table)
        _reject_unknown(where, table, {"commit", "compat_cxx_flags", "compat_reason", "tier"})
        commit = _string(f"{where} commit", table.get("commit", ""), empty=True)
        if commit and not re.fullmatch(r"[0-9a-f]{7,40}", commit):
            raise FixtureError(f"{where} commit = {commit!r}: must be a hex commit id (7 to 40 digits)")
        refs[name] = RefInfo(
            name,
            commit,
            _strings(f"{where} compat_cxx_flags", table.get("compat_cxx_flags", [])),
            _string(f"{where} compat_reason", table.get("compat_reason", ""), empty=True),
            _string(f"{where} tier", table.get("tier", "scheduled"), allowed=TIERS),
        )
    return refs


ROW_KEYS = {
    "refs", "variant", "icd", "outcome", "bug", "signal", "stage", "step", "signature", "evidence", "op", "phase",
    "match", "reason", "workload", *DEVICE_KEYS,
}  # fmt: skip


def _expectation(where: str, value: Any) -> tuple[Expectation, ...]:
    """One [[expect]] row: which cells it covers and the outcome (for a crash: its signal and stage) expected. A
    list of ICDs is one row per ICD, in the list's order."""
    row = _table(where, value)
    _reject_unknown(where, row, ROW_KEYS)
    row_refs = _strings(f"{where} refs", row.get("refs", ["*"]))
    for pattern in row_refs:
        if is_version_range(pattern):
            try:
                parse_range(pattern)
            except ValueError as exc:
                raise FixtureError(f"{where} refs: {exc}") from None
    outcome = _string(f"{where} outcome", row.get("outcome"), allowed=OUTCOMES)
    variant = _string(f"{where} variant", row.get("variant", "*"))
    if variant not in (*VARIANTS, "*"):
        raise FixtureError(f"{where} variant = {variant!r}: must be one of {', '.join(VARIANTS)} or *")
    if outcome == "reproduce" and not (row.get("signal") and row.get("stage")):
        raise FixtureError(f"{where}: a 'reproduce' row needs signal and stage")
    step = row.get("step")
    if step is not None:
        _number(f"{where} step", step, 0, 100_000, integer=True)
    op, phase = _op_of(where, row, outcome)
    icd = row.get("icd", "*")
    icds = _strings(f"{where} icd", icd) if isinstance(icd, list) else (_string(f"{where} icd", icd),)
    on = {k: _string(f"{where} {k}", row[k]) for k in DEVICE_KEYS if k in row}
    for pattern in icds:
        host_names_device(where, variant, pattern, on)
    _opencl_names_device_only(where, variant, on)
    match, reason = _known_wrong(where, row, outcome)
    wl = row.get("workload", DEFAULT_WORKLOAD)
    workloads = _strings(f"{where} workload", wl) if isinstance(wl, list) else (_string(f"{where} workload", wl),)
    return tuple(
        Expectation(
            row_refs,
            variant,
            pattern,
            outcome,
            _string(f"{where} bug", row.get("bug", ""), empty=True),
            _string(f"{where} signal", row.get("signal", ""), empty=True),
            _string(f"{where} stage", row.get("stage", ""), empty=True),
            step,
            _strings(f"{where} signature", row.get("signature", [])),
            _strings(f"{where} evidence", row.get("evidence", [])),
            op,
            phase,
            match=match,
            reason=reason,
            workloads=workloads,
            **on,
        )
        for pattern in icds
    )


def host_names_device(where: str, variant: str, icd: str, on: dict[str, str]) -> None:
    """A row that can cover a cell of the host ICD (a Vulkan variant, an ICD pattern matching "host", "*"
    included) must name the device or the vendor it was learned on: the machine's own driver is a different GPU
    on every machine, and a row learned on lavapipe says nothing of an NVIDIA GPU (issue 22)."""
    vulkan = any(variants.get(v).per_icd for v in VARIANTS if fnmatch.fnmatchcase(v, variant))
    if vulkan and fnmatch.fnmatchcase(HOST_ICD, icd) and not ("device" in on or "vendor" in on):
        raise FixtureError(
            f'{where}: icd = "{icd}" covers the host ICD, and the row names no device or vendor: a row for the '
            "machine's own driver must name the device it was learned on (host is a different GPU on every "
            'machine): add e.g. vendor = "NVIDIA", or name the ICDs it holds for (icd = ["lavapipe", "swiftshader"])'
        )


def _opencl_names_device_only(where: str, variant: str, on: dict[str, str]) -> None:
    """The OpenCL probe reads the device's name only (contract.Device): a row of an OpenCL variant that names a
    vendor or a driver would never match any cell, and its cells would silently have no expectation."""
    opencl = any(variants.get(v).backend == "opencl" for v in VARIANTS if fnmatch.fnmatchcase(v, variant))
    named = sorted(k for k in ("vendor", "driver") if k in on)
    if opencl and variant != "*" and named:
        raise FixtureError(
            f"{where}: {', '.join(named)} on an OpenCL row: the OpenCL probe reads the device name only, so the row "
            'would never match; name the device instead (device = "NVIDIA *")'
        )


def _known_wrong(where: str, row: dict[str, Any], outcome: str) -> tuple[str, str]:
    """A 'known-wrong' row's `match` (a regular expression on the failing checks' text) and `reason`: both
    required there; `match` only there."""
    match = _string(f"{where} match", row.get("match", ""), empty=True)
    reason = _string(f"{where} reason", row.get("reason", ""), empty=True)
    if outcome == "known-wrong" and not (match and reason):
        raise FixtureError(f"{where}: a 'known-wrong' row needs match (the failing checks' text) and reason")
    if match and outcome != "known-wrong":
        raise FixtureError(f"{where}: match is for 'known-wrong' rows only, not {outcome!r}")
    if match:
        try:
            re.compile(match)
        except re.error as exc:
            raise FixtureError(f"{where} match = {match!r}: not a regular expression ({exc})") from None
    return match, reason


def _op_of(where: str, row: dict[str, Any], outcome: str) -> tuple[str, str]:
    """A row's `op` and `phase`: both or neither, only on a known bug's row; a 'fixed-by-fallback' row needs
    them (the verdict says which op fell back, and where)."""
    op = _string(f"{where} op", row.get("op", ""), empty=True)
    phase = _string(f"{where} phase", row.get("phase", ""), empty=True)
    if phase and phase not in OP_PHASES:
        raise FixtureError(f"{where} phase = {phase!r}: must be one of {', '.join(OP_PHASES)}")
    if outcome == "fixed-by-fallback" and not (op and phase):
        raise FixtureError(f"{where}: a 'fixed-by-fallback' row needs op and phase (which op runs on the CPU, where)")
    if bool(op) != bool(phase):
        raise FixtureError(f"{where}: op and phase go together (the op's placement is read in that phase)")
    if op and not row.get("bug"):
        raise FixtureError(f"{where}: op names a known bug's op; give the row its bug")
    return op, phase
