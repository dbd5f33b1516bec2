"""Gradient check (issue 4): a backend's gradients and SGD updates at the first training steps against a CPU
golden, and the golden against an independent float64 numpy reference (one per model: workloads/train/models/).

Files
  run dumps     RESULT/grads/step<N>/{grad,after}/<param>.npy, batch_indices.npy, dropout_mask.npy
                (driver --dump-steps; native/README.md)
  golden        fixtures/golden/<workload>/<ref>/ (fixtures.golden_dir; MNIST's: fixtures/golden/mnist/<ref>/): the
                same tree (step<N>/...), init/<param>.npy (the initial parameters, which the driver reads with
                --init-params) and provenance.json. Made only on request: ``python -m mnnrepro golden --ref REF``
  on mismatch   RESULT/gradcheck/step<N>/<kind>/<param>.obtained.npy beside <param>.golden.npy (the arrays that
                were compared), plus RESULT/gradcheck/report.txt and report.json

What is compared, per tensor and step
  grad   the gradient of the loss
  after  the step's update, ``after - before`` (before: the initial parameters at step 0, else the previous
         step's after). The parameters themselves are about 1000x larger than one update and would hide a
         wrong learning rate or momentum under their own rounding.

Metrics (o: obtained, g: golden): max_abs = max|o-g|; max_rel = max|o-g| / max|g|, the error relative to the
tensor's scale (an element-wise relative error is meaningless for the many gradient elements near zero);
cosine(o, g); nmse = sum((o-g)^2) / sum(g^2). Limits per backend and precision live in fixtures/matrix.toml
[gradcheck]; NaN/Inf, a shape mismatch, a missing file or different inputs are failures of their own.

A golden's last bits belong to the machine that made it (issue 10, item 6): its provenance records that machine's
arithmetic fingerprint (mnnrepro.fingerprint: architecture, MNN's x86 kernel family, the CPU's RCPPS table).
``golden_comparison`` says whether a CPU run here can be held to the golden's bits (same fingerprint, same
thread count) or only to the stated fp32 tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import fingerprint, fixtures
from .contract import read_events
from .errors import ConfigError, FixtureError

F64 = NDArray[np.float64]
GOLDEN_ROOT = fixtures.GOLDEN_ROOT  # <root>/<workload>/<ref>/: fixtures.golden_dir
GOLDEN_FORMAT = 1
KINDS = ("grad", "after")


def regenerate_command(ref: str, workload: str = fixtures.DEFAULT_WORKLOAD) -> str:
    extra = "" if workload == fixtures.DEFAULT_WORKLOAD else f" --workload {workload}"
    return f"python -m mnnrepro golden --ref {ref}{extra}"


def regenerate_hint(golden_dir: Path) -> str:
    """The command that makes the golden at <root>/<workload>/<ref>/ (results/golden/<ref>/: MNIST's)."""
    workload = golden_dir.parent.name
    return regenerate_command(golden_dir.name, fixtures.DEFAULT_WORKLOAD if workload in ("", "golden") else workload)


# -- tolerances (fixtures/matrix.toml [gradcheck]) ---------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    max_rel: float
    min_cosine: float
    max_nmse: float
    name: str = ""  # where it came from, e.g. "fp32/first"

    @classmethod
    def from_table(cls, table: dict[str, float], name: str) -> Tolerance:
        return cls(float(table["max_rel"]), float(table["min_cosine"]), float(table["max_nmse"]), name)

    def __str__(self) -> str:
        return f"rel<={self.max_rel:g} cos>={self.min_cosine:g} nmse<={self.max_nmse:g}"


def _gradcheck_config(matrix: fixtures.Matrix | None) -> dict[str, Any]:
    config = (matrix or fixtures.load_matrix()).gradcheck
    if not config:
        raise FixtureError(f"{fixtures.MATRIX} has no [gradcheck] table: the gradient check has no limits")
    return config


def tolerance_for(backend: str, precision: str, step: int, matrix: fixtures.Matrix | None = None) -> Tolerance:
    """The limits for one backend/precision; step 0 ("first") starts from the golden's own parameters."""
    config = _gradcheck_config(matrix)
    arithmetic = config["arithmetic"].get(backend, {}).get(precision)
    if arithmetic is None:
        raise FixtureError(
            f"{fixtures.MATRIX} [gradcheck.arithmetic] says nothing about {backend} at precision {precision}",
            hint=f'add {backend} = {{ {precision} = "fp32" }} (or "fp16") to [gradcheck.arithmetic]',
        )
    phase = "first" if step == 0 else "later"
    return Tolerance.from_table(config["tolerance"][arithmetic][phase], f"{arithmetic}/{phase}")


def reference_tolerance(matrix: fixtures.Matrix | None = None) -> Tolerance:
    return Tolerance.from_table(_gradcheck_config(matrix)["reference"], "reference")


def golden_steps(matrix: fixtures.Matrix | None = None) -> list[int]:
    return list(_gradcheck_config(matrix)["steps"])


def steps_within(steps: Sequence[int], run_steps: int | None) -> tuple[list[int], list[int]]:
    """The golden's steps a run of ``run_steps`` training steps has (compared), and those it never reached (not
    run: n/a, neither a failure nor silently dropped). ``run_steps`` None: every step is compared."""
    wanted = [int(s) for s in steps]
    if run_steps is None:
        return wanted, []
    return [s for s in wanted if s < run_steps], [s for s in wanted if s >= run_steps]


# -- metrics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    max_rel: float
    cosine: float
    nmse: float
    worst_index: tuple[int, ...]
    worst_obtained: float
    worst_golden: float


def compare(obtained: NDArray[Any], golden: NDArray[Any]) -> Metrics:
    """Metrics of two finite arrays of the same shape (see the module docstring)."""
    o = np.asarray(obtained, dtype=np.float64)
    g = np.asarray(golden, dtype=np.float64)
    if o.shape != g.shape:
        raise ValueError(f"shapes differ: {o.shape} vs {g.shape}")
    if o.size == 0:
        return Metrics(0.0, 0.0, 1.0, 0.0, (), 0.0, 0.0)
    diff = np.abs(o - g)
    flat = int(np.argmax(diff))
    index = tuple(int(i) for i in np.unravel_index(flat, g.shape))
    max_abs = float(diff.flat[flat])
    scale = float(np.abs(g).max())
    norm_o, norm_g = float(np.sqrt(np.sum(o * o))), float(np.sqrt(np.sum(g * g)))
    if scale > 0:
        max_rel = max_abs / scale
        nmse = float(np.sum((o - g) ** 2)) / (norm_g * norm_g)
    else:
        max_rel = nmse = 0.0 if max_abs == 0 else math.inf
    if norm_o > 0 and norm_g > 0:
        cosine = float(np.sum(o * g)) / (norm_o * norm_g)
    else:
        cosine = 1.0 if norm_o == norm_g else 0.0
    return Metrics(max_abs, max_rel, cosine, nmse, index, float(o.flat[flat]), float(g.flat[flat]))


@dataclass
class Row:
    """One tensor at one step: the metrics, the limits they were held to and the worst element."""

    name: str
    step: int
    kind: str  # "grad" | "after" (the update after - before)
    max_abs: float
    max_rel: float
    cosine: float
    nmse: float
    limit: Tolerance
    passed: bool
    worst_index: tuple[int, ...] = ()
    worst_obtained: float = 0.0
    worst_golden: float = 0.0
    scale: float = 0.0  # max|g|
    # A tensor whose exact value is zero (ZeroRule): max_abs against this limit alone; None: the three metrics.
    abs_limit: float | None = None

    @property
    def score(self) -> float:
        """Worst metric as a fraction of its limit: <= 1 passes. Sorts the table, worst first."""
        if self.abs_limit is not None:
            return self.max_abs / self.abs_limit if self.abs_limit > 0 else math.inf

        def ratio(value: float, limit: float) -> float:
            if value <= limit:
                return value / limit if limit > 0 else 0.0
            return math.inf if limit <= 0 else value / limit

        return max(
            ratio(self.max_rel, self.limit.max_rel),
            ratio(self.nmse, self.limit.max_nmse),
            ratio(1.0 - self.cosine, 1.0 - self.limit.min_cosine),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": self.step,
            "kind": self.kind,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "cosine": self.cosine,
            "nmse": self.nmse,
            "limit": {
                "name": self.limit.name,
                "max_rel": self.limit.max_rel,
                "min_cosine": self.limit.min_cosine,
                "max_nmse": self.limit.max_nmse,
            },
            "passed": self.passed,
            "abs_limit": self.abs_limit,
            "worst_index": list(self.worst_index),
            "worst_obtained": self.worst_obtained,
            "worst_golden": self.worst_golden,
        }


def make_row(name: str, step: int, kind: str, obtained: NDArray[Any], golden: NDArray[Any], limit: Tolerance) -> Row:
    m = compare(obtained, golden)
    passed = m.max_rel <= limit.max_rel and m.cosine >= limit.min_cosine and m.nmse <= limit.max_nmse
    return Row(
        name,
        step,
        kind,
        m.max_abs,
        m.max_rel,
        m.cosine,
        m.nmse,
        limit,
        passed,
        m.worst_index,
        m.worst_obtained,
        m.worst_golden,
        float(np.abs(np.asarray(golden, dtype=np.float64)).max()) if np.size(golden) else 0.0,
    )


@dataclass(frozen=True)
class ZeroRule:
    """Tensors whose exact value is zero (a workload's [workloads.NAME.gradcheck] `zero`; MnistV2's conv1.bias,
    whose gradient BatchNorm's mean subtraction cancels): float32 leaves rounding noise there, against which
    max_rel, cosine and nmse are meaningless. Such a row passes when max|o - g| <= ``limit`` x the largest |g| of
    its layer's weight (``<layer>.weight``) at the same step and kind; without that row it fails."""

    names: tuple[str, ...]
    limit: float
    reason: str = ""

    def apply(self, report: GradReport) -> None:
        scales = {(r.name, r.step, r.kind): r.scale for r in report.rows}
        for row in report.rows:
            if row.name not in self.names:
                continue
            weight = row.name.rsplit(".", 1)[0] + ".weight"
            scale = scales.get((weight, row.step, row.kind))
            row.abs_limit = self.limit * scale if scale is not None else 0.0
            row.passed = scale is not None and row.max_abs <= row.abs_limit
            row.limit = Tolerance(
                row.limit.max_rel,
                row.limit.min_cosine,
                row.limit.max_nmse,
                f"zero: max_abs<={self.limit:g}*max|{weight}|",
            )


@dataclass
class Problem:
    """A failure that is not a tolerance: missing golden or file, shape mismatch, NaN/Inf, other inputs."""

    what: str  # "missing golden" | "missing file" | "shape mismatch" | "non-finite" | "inputs differ" | ...
    detail: str
    name: str = ""
    step: int | None = None
    kind: str = ""

    def __str__(self) -> str:
        where = " ".join(x for x in (f"step {self.step}" if self.step is not None else "", self.kind, self.name) if x)
        return f"{self.what.upper()}{f' [{where}]' if where else ''}: {self.detail}"


@dataclass
class GradReport:
    title: str
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    artifacts: Path | None = None  # where report.txt and the .obtained.npy files went
    # Golden steps the run never reached (a workload of fewer steps): n/a, said in every rendering.
    not_run: list[int] = field(default_factory=list)
    run_steps: int | None = None

    def not_run_note(self) -> str:
        if not self.not_run:
            return ""
        steps = ", ".join(str(s) for s in self.not_run)
        trained = f"{self.run_steps} step{'' if self.run_steps == 1 else 's'}"
        return f"step{'s' if len(self.not_run) > 1 else ''} {steps} n/a: not run (the workload has {trained})"

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.rows) and all(r.passed for r in self.rows)

    @property
    def failed_rows(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def worst(self) -> Row | None:
        return max(self.rows, key=lambda r: r.score) if self.rows else None

    def summary(self) -> str:
        """One line, for a verdict's reason."""
        note = f"; {self.not_run_note()}" if self.not_run else ""
        if self.problems:
            first = self.problems[0]
            more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"gradient check: {first}{more}{note}"
        worst = self.worst()
        if worst is None:
            return f"gradient check: nothing was compared{note}"
        failed = self.failed_rows
        head = (
            f"gradient check FAILED for {len(failed)}/{len(self.rows)} tensors"
            if failed
            else f"gradients match ({len(self.rows)} tensors)"
        )
        return (
            f"{head}; worst {worst.name} step {worst.step} {worst.kind}: max_rel {worst.max_rel:.2e}, "
            f"nmse {worst.nmse:.1e}, cosine {worst.cosine:.7f} (limit {_limit_text(worst)}){note}"
        )

    def table(self, limit: int | None = None) -> str:
        """Problems first, then the tensors, worst first, with the worst element of each."""
        lines = [f"{self.title}: {'PASS' if self.passed else 'FAIL'}"]
        if self.not_run:
            lines.append(self.not_run_note())
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s), each a failure of its own:")
            lines += [f"  {p}" for p in self.problems]
        rows = sorted(self.rows, key=lambda r: (r.passed, -r.score))
        shown = rows if limit is None else rows[:limit]
        if shown:
            header = (
                f"{'tensor':<13} {'step':>4} {'kind':<5} {'max_abs':>9} {'max_rel':>9} {'cosine':>12} {'nmse':>9}"
                f"  {'worst element':<14} {'obtained':>12} {'golden':>12}  {'limit':<36} result"
            )
            lines += [header, "-" * len(header)]
            for r in shown:
                index = "(" + ",".join(str(i) for i in r.worst_index) + ")"
                lines.append(
                    f"{r.name:<13} {r.step:>4} {r.kind:<5} {r.max_abs:>9.2e} {r.max_rel:>9.2e} {r.cosine:>12.9f} "
                    f"{r.nmse:>9.2e}  {index:<14} {r.worst_obtained:>12.5e} {r.worst_golden:>12.5e}  "
                    f"{_limit_text(r):<36} {'ok' if r.passed else 'FAIL'}"
                )
            if len(shown) < len(rows):
                lines.append(f"... {len(rows) - len(shown)} more tensor(s), all better than those above")
        if self.artifacts is not None and self.artifacts.is_dir() and any(self.artifacts.rglob("*.obtained.npy")):
            lines.append(f"obtained values beside the golden (<param>.obtained.npy, .golden.npy): {self.artifacts}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "summary": self.summary(),
            "problems": [
                {"what": p.what, "detail": p.detail, "name": p.name, "step": p.step, "kind": p.kind}
                for p in self.problems
            ],
            "rows": [r.to_dict() for r in sorted(self.rows, key=lambda r: (r.passed, -r.score))],
            "not_run": {"steps": self.not_run, "run_steps": self.run_steps, "status": "n/a"} if self.not_run else None,
            "artifacts": str(self.artifacts) if self.artifacts else None,
        }


def _limit_text(row: Row) -> str:
    if row.abs_limit is not None:
        return f"abs<={row.abs_limit:.2e} {row.limit.name}"
    return f"{row.limit} {row.limit.name}"


# -- dump trees ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dumps:
    """A tree of step<N>/{grad,after}/<param>.npy + step inputs, and the initial parameters (may be absent)."""

    root: Path
    init: Path | None

    def tensor(self, step: int, kind: str, name: str) -> Path:
        return self.root / f"step{step}" / kind / f"{name}.npy"

    def step_file(self, step: int, name: str) -> Path:
        return self.root / f"step{step}" / name

    def init_file(self, name: str) -> Path | None:
        return self.init / f"{name}.npy" if self.init else None


class MissingDump(Exception):
    pass


class UnreadableDump(MissingDump):
    """A dump that is there but is no array numpy can read (a file cut short, torn, not .npy): a problem of the
    check with numpy's reason, never a crash of the harness. A MissingDump, so every reader already handles it."""


def load_dump(path: Path | None) -> F64:
    if path is None or not path.is_file():
        raise MissingDump(str(path) if path else "no initial parameters")
    try:
        return np.asarray(np.load(path), dtype=np.float64)
    except (ValueError, OSError, EOFError) as exc:  # numpy's errors for a short or malformed .npy file
        raise UnreadableDump(f"{path} (unreadable: {type(exc).__name__}: {exc})") from exc


def dump_problem(exc: MissingDump, name: str = "", step: int | None = None, kind: str = "") -> Problem:
    """The problem a dump that could not be loaded makes: an unreadable file, or a missing one."""
    if isinstance(exc, UnreadableDump):
        return Problem("unreadable file", str(exc), name, step, kind)
    return Problem("missing file", f"no {exc}", name, step, kind)


def dump_defect(array: F64, shape: tuple[int, ...]) -> str | None:
    """Why a dump cannot stand for a tensor of ``shape`` (its shape, NaN/Inf: the guards add_row applies to a
    compared pair), or None."""
    if array.shape != shape:
        return f"shape {array.shape}, not {shape}"
    return nonfinite(array)


def nonfinite(array: F64) -> str | None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    return f"{int(np.isnan(array).sum())} NaN, {int(np.isinf(array).sum())} Inf of {array.size} (first at {first})"


def before_path(d: Dumps, step: int, name: str) -> Path | None:
    return d.init_file(name) if step == 0 else d.tensor(step - 1, "after", name)


def _quantity(d: Dumps, step: int, kind: str, name: str) -> F64:
    """The compared array: the gradient, or the update after - before."""
    if kind == "grad":
        return load_dump(d.tensor(step, "grad", name))
    after, before = load_dump(d.tensor(step, "after", name)), load_dump(before_path(d, step, name))
    if after.shape != before.shape:
        raise ValueError(f"after {after.shape} and before {before.shape} differ in shape")
    return after - before


def _compare_trees(
    report: GradReport,
    obtained: Dumps,
    golden: Dumps,
    steps: Sequence[int],
    limit_for: Callable[[int], Tolerance],
    artifacts: Path | None,
    shapes: dict[str, tuple[int, ...]],
) -> None:
    for step in steps:
        for kind in KINDS:
            for name in shapes:
                try:
                    g = _quantity(golden, step, kind, name)
                except MissingDump as exc:
                    report.problems.append(Problem("missing file", f"golden lacks {exc}", name, step, kind))
                    continue
                try:
                    o = _quantity(obtained, step, kind, name)
                except MissingDump as exc:
                    report.problems.append(Problem("missing file", f"the run wrote no {exc}", name, step, kind))
                    continue
                except ValueError as exc:  # after and before of different shapes
                    report.problems.append(Problem("shape mismatch", str(exc), name, step, kind))
                    continue
                add_row(report, name, step, kind, o, g, limit_for(step), artifacts)


def add_row(
    report: GradReport,
    name: str,
    step: int,
    kind: str,
    obtained: F64,
    golden: F64,
    limit: Tolerance,
    artifacts: Path | None,
) -> None:
    """A row, or the problem that prevents one (shape mismatch, NaN/Inf); failures leave their arrays behind."""
    if obtained.shape != golden.shape:
        report.problems.append(
            Problem("shape mismatch", f"obtained {obtained.shape}, golden {golden.shape}", name, step, kind)
        )
        return
    bad = nonfinite(golden)
    if bad:
        report.problems.append(Problem("non-finite golden", bad, name, step, kind))
        return
    bad = nonfinite(obtained)
    if bad:
        report.problems.append(Problem("non-finite", bad, name, step, kind))
        _write_pair(artifacts, step, kind, name, obtained, golden)
        return
    row = make_row(name, step, kind, obtained, golden, limit)
    report.rows.append(row)
    if not row.passed:
        _write_pair(artifacts, step, kind, name, obtained, golden)


def _write_pair(artifacts: Path | None, step: int, kind: str, name: str, obtained: F64, golden: F64) -> None:
    if artifacts is None:
        return
    where = artifacts / f"step{step}" / kind
    where.mkdir(parents=True, exist_ok=True)
    np.save(where / f"{name}.obtained.npy", obtained.astype(np.float32))
    np.save(where / f"{name}.golden.npy", golden.astype(np.float32))


StepInputs = tuple[tuple[str, str], ...]  # per step: (its file in step<N>/, what it is), e.g. the training images


@dataclass
class _StepInputRegistry:
    """The per-step inputs a run must share with its golden, per driver model, as the training room registers them
    (workloads.train.workload.MODELS, from each model's module): gradcheck knows no model (issue 23). ``default``:
    the model of a golden whose provenance names none (MNIST's goldens, made before there were models)."""

    inputs: dict[str, StepInputs] = field(default_factory=dict)
    default: str | None = None


_STEP_INPUTS = _StepInputRegistry()


def register_step_inputs(model: str, inputs: StepInputs, *, default: bool = False) -> None:
    """A driver model's per-step inputs (``default``: the model of a golden that names none)."""
    _STEP_INPUTS.inputs[model] = tuple(inputs)
    if default:
        _STEP_INPUTS.default = model


def golden_model(provenance: dict[str, Any]) -> str:
    """The golden's driver model: its provenance's, else the registered default ("" where none is registered)."""
    return str(provenance.get("model", _STEP_INPUTS.default or ""))


def _compare_inputs(report: GradReport, obtained: Dumps, golden: Dumps, steps: Sequence[int], model: str) -> None:
    """The run must have seen the golden's step inputs (its batches, a model's random masks), or nothing else is
    comparable; a model whose step inputs are not known is a problem, never a comparison of nothing."""
    known = _STEP_INPUTS.inputs.get(model)
    if known is None:
        report.problems.append(Problem("bad golden", f"model {model!r}: its step inputs are not known"))
        return
    for step in steps:
        for file, what in known:
            try:
                g = load_dump(golden.step_file(step, file))
                o = load_dump(obtained.step_file(step, file))
            except MissingDump as exc:
                report.problems.append(Problem("missing file", f"no {exc}", file, step))
                continue
            if o.shape != g.shape or not np.array_equal(o, g):
                where = ""
                if o.shape == g.shape:
                    first = tuple(int(i) for i in np.argwhere(o != g)[0])
                    where = f" (first difference at {first}: run {o[first]:g}, golden {g[first]:g})"
                report.problems.append(
                    Problem("inputs differ", f"the run's {what} are not the golden's{where}", file, step)
                )


def _compare_init(report: GradReport, obtained: Dumps, golden: Dumps, names: Sequence[str]) -> None:
    if obtained.init is None:
        return
    differ = []
    for name in names:
        try:
            o, g = load_dump(obtained.init_file(name)), load_dump(golden.init_file(name))
        except MissingDump as exc:
            report.problems.append(Problem("missing file", f"no {exc}", name))
            continue
        if o.shape != g.shape or not np.array_equal(o, g):
            differ.append(name)
    if differ:
        report.problems.append(
            Problem("initial parameters differ", f"{', '.join(differ)} not the golden's init/ (pass --init-params)")
        )


def read_provenance(golden_dir: Path) -> dict[str, Any] | None:
    """A golden's provenance.json (None: no golden there); a malformed one is a FixtureError."""
    return _read_provenance(golden_dir)


def _read_provenance(golden_dir: Path) -> dict[str, Any] | None:
    path = golden_dir / "provenance.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != GOLDEN_FORMAT:
        raise FixtureError(f"{path}: not a format-{GOLDEN_FORMAT} golden provenance")
    return data


def _shapes(provenance: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The golden's parameters, in model order (every golden lists them since its format had a manifest)."""
    return {p["name"]: tuple(int(d) for d in p["shape"]) for p in provenance.get("parameters", [])}


def missing_golden(golden_dir: Path) -> GradReport:
    """The report on a golden that is not there, with the command that makes it."""
    report = GradReport(f"numpy float64 reference vs {golden_dir}")
    report.problems.append(
        Problem("missing golden", f"no golden at {golden_dir}; make it with: {regenerate_hint(golden_dir)}")
    )
    return report


# -- checking a run against the golden ----------------------------------------------------------------------------


def check_run(
    result_dir: Path,
    golden_dir: Path,
    backend: str,
    precision: str,
    *,
    matrix: fixtures.Matrix | None = None,
    write_artifacts: bool = True,
    run_steps: int | None = None,
    zero: ZeroRule | None = None,
) -> GradReport:
    """Compare a driver run's dumps (RESULT/grads, from driver_args()) with the CPU golden. ``zero``: the
    workload's tensors of exact value zero, judged by an absolute limit (ZeroRule).

    Only the golden's steps below ``run_steps`` (default: the run's own `steps` from its start event) are
    compared; the others are n/a, not run (a `--steps 1` run has no step 1 to dump), said in the report.
    Writes RESULT/gradcheck/report.{txt,json}, and on a mismatch the compared arrays as
    RESULT/gradcheck/step<N>/<kind>/<param>.{obtained,golden}.npy. Never touches the golden.
    """
    result_dir, golden_dir = Path(result_dir), Path(golden_dir)
    artifacts = result_dir / "gradcheck" if write_artifacts else None
    if artifacts is not None and artifacts.is_dir():
        shutil.rmtree(artifacts)  # no stale .obtained.npy from an earlier check
    report = GradReport(f"gradient check of {result_dir.name} ({backend}, precision {precision}) vs {golden_dir}")
    report.artifacts = artifacts
    try:
        provenance = _read_provenance(golden_dir)
    except (ValueError, FixtureError) as exc:
        report.problems.append(Problem("bad golden", str(exc)))
        return finish(report)
    if provenance is None:
        report.problems.append(
            Problem(
                "missing golden",
                f"no CPU golden at {golden_dir} (provenance.json absent); make it with: {regenerate_hint(golden_dir)}",
            )
        )
        return finish(report)
    if run_steps is None:
        run_steps = _run_steps(result_dir)
    steps, report.not_run = steps_within(provenance["steps"], run_steps)
    report.run_steps = run_steps
    golden = Dumps(golden_dir, golden_dir / "init")
    run_init = result_dir / "init"
    obtained = Dumps(result_dir / "grads", run_init if run_init.is_dir() else golden.init)
    if not (result_dir / "grads").is_dir():
        report.problems.append(
            Problem(
                "missing file",
                f"the run wrote no dumps ({result_dir / 'grads'} absent); run the driver with "
                f"{' '.join(driver_args(golden_dir, run_steps=run_steps))}",
            )
        )
        return finish(report)
    _check_config(report, result_dir, steps, provenance, golden_dir, run_steps)
    _compare_inputs(report, obtained, golden, steps, golden_model(provenance))
    shapes = _shapes(provenance)
    if not shapes:  # nothing to compare is no pass: the golden's model is not known here (workloads.train.MODELS)
        report.problems.append(
            Problem(
                "bad golden", f"its provenance lists no parameters; make it again with: {regenerate_hint(golden_dir)}"
            )
        )
        return finish(report)
    if run_init.is_dir():
        _compare_init(report, obtained, golden, list(shapes))

    def limit_for(step: int) -> Tolerance:
        return tolerance_for(backend, precision, step, matrix)

    _compare_trees(report, obtained, golden, steps, limit_for, artifacts, shapes)
    if zero is not None:
        zero.apply(report)
    return finish(report)


def _run_steps(result_dir: Path) -> int | None:
    """The training steps the run was asked for (its start event's config), or None where it does not say."""
    events = result_dir / "events.jsonl"
    steps = (read_events(events).start.get("config") or {}).get("steps") if events.is_file() else None
    return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None


def _check_config(
    report: GradReport,
    result_dir: Path,
    steps: Sequence[int],
    provenance: dict[str, Any],
    golden_dir: Path,
    run_steps: int | None,
) -> None:
    events = result_dir / "events.jsonl"
    if not events.is_file():
        report.problems.append(Problem("missing file", f"{events}: no driver run here"))
        return
    config = read_events(events).start.get("config") or {}
    want = provenance.get("config", {})
    for key in ("batch_size", "seed", "dropout", "lr_base", "lr_gamma", "lr_power", "momentum", "weight_decay"):
        if key in want and key in config and not math.isclose(float(config[key]), float(want[key]), rel_tol=1e-6):
            report.problems.append(
                Problem("config differs", f"the run's {key} is {config[key]}, the golden's {want[key]}")
            )
    dumped = {int(s) for s in config.get("dump_steps", [])}
    missing = [s for s in steps if int(s) not in dumped]
    if missing:
        options = " ".join(driver_args(golden_dir, run_steps=run_steps))
        report.problems.append(
            Problem("missing file", f"the run did not dump steps {missing} (driver options: {options})")
        )


def finish(report: GradReport) -> GradReport:
    if report.artifacts is not None:
        report.artifacts.mkdir(parents=True, exist_ok=True)
        (report.artifacts / "report.txt").write_text(report.table() + "\n")
        (report.artifacts / "report.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


@dataclass(frozen=True)
class GoldenComparison:
    """Which comparison a CPU run against a golden can be held to, and why."""

    bit_level: bool  # same arithmetic as the golden's machine and run: the golden's own bits are expected
    reasons: tuple[str, ...]  # why not (empty when bit_level)
    golden_machine: str
    this_machine: str

    def __str__(self) -> str:
        if self.bit_level:
            return (
                f"bit-level comparison: this machine computes like the golden's ({self.this_machine}), "
                "same thread count"
            )
        return (
            "fp32-tolerance comparison ([gradcheck.tolerance.fp32] of fixtures/matrix.toml), not bit-level: "
            + "; ".join(self.reasons)
        )


def golden_comparison(
    golden_dir: Path, run_config: dict[str, Any], here: dict[str, Any] | None = None
) -> GoldenComparison:
    """Bit-level when this machine's arithmetic fingerprint (``here``, default: measured now) equals the one the
    golden's provenance records and the run used the golden's thread count (MNN's per-thread split changes the
    last bits); otherwise only the fp32 tolerance applies, with the reasons."""
    provenance = _read_provenance(golden_dir) or {}
    machine = provenance.get("machine")
    here = fingerprint.probe() if here is None else here
    reasons = fingerprint.differences(machine, here)
    want, got = provenance.get("config", {}).get("threads"), run_config.get("threads")
    if want is None or got is None or int(want) != int(got):
        reasons.append(f"threads {want} in the golden's run, {got} in this one")
    return GoldenComparison(
        not reasons,
        tuple(reasons),
        fingerprint.describe(machine) if machine else "unrecorded",
        fingerprint.describe(here),
    )


def driver_args(
    golden_dir: Path, steps: Sequence[int] | None = None, *, run_steps: int | None = None
) -> tuple[str, ...]:
    """Driver options for a run check_run can judge: dumps at the golden's steps (those a run of ``run_steps``
    steps reaches), from the golden's init."""
    if steps is None:
        provenance = _read_provenance(golden_dir) if golden_dir.is_dir() else None
        steps = [int(s) for s in provenance["steps"]] if provenance else golden_steps()
    steps = steps_within(steps, run_steps)[0]
    args: tuple[str, ...] = ("--dump-steps", ",".join(str(s) for s in steps))
    if (golden_dir / "init").is_dir():
        args += ("--init-params", str(golden_dir / "init"))
    return args


# -- command line: mnnrepro gradcheck check|verify (making a golden: workloads/train/golden.py) ------------------------


def add_arguments(sub: Any) -> None:
    """`mnnrepro gradcheck check|verify` (making a golden is `mnnrepro golden`)."""
    chk = sub.add_parser("check", help="compare a driver run's dumps with the golden")
    chk.add_argument("result_dir", type=Path)
    chk.add_argument("--golden", type=Path, required=True)
    chk.add_argument("--backend", required=True)
    chk.add_argument("--precision", default="high")
    ver = sub.add_parser(
        "verify", help="check a golden against its model's numpy reference (no MNN needed): GOLDEN or --workload"
    )
    ver.add_argument("golden", type=Path, nargs="?", help="a golden directory (default: --workload's at --ref)")
    ver.add_argument("--workload", help="the training workload whose golden is checked ([workloads.NAME])")
    ver.add_argument("--ref", help="with --workload: the golden's ref (default: fixtures/matrix.toml default_ref)")


def verify_target(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The golden ``gradcheck verify`` checks and the workload it must be the golden of (None: whatever its
    provenance says): GOLDEN, or --workload's golden at --ref (a workload checked against another's golden, such as
    static against mnist's: that one)."""
    if args.golden is None and not args.workload:
        raise ConfigError("gradcheck verify: name a golden", hint="GOLDEN_DIR, or --workload NAME [--ref REF]")
    if not args.workload:
        return Path(args.golden), None
    matrix = fixtures.load_matrix()
    workload = matrix.workload(args.workload).golden_workload
    if args.golden is not None:
        return Path(args.golden), workload
    return fixtures.golden_dir(workload, args.ref or matrix.default_ref), workload


Verify = Callable[..., GradReport]  # (golden_dir, *, workload: str | None) -> GradReport


def main(args: argparse.Namespace, verify: Verify) -> int:
    """``verify``: how a golden is checked against its own model's reference (workloads.train.workload.verify_golden,
    which knows every model)."""
    if args.action == "check":
        report = check_run(args.result_dir, args.golden, args.backend, args.precision)
    else:
        golden, workload = verify_target(args)
        report = verify(golden, workload=workload)
    print(report.table())
    return 0 if report.passed else 1
