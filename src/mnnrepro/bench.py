"""`nox -s bench` (issue 6): the cost of training per backend, per step, split into preparation and execution.

``python -m mnnrepro bench [--repeat 3] [--steps 20] [--icd lavapipe,swiftshader,host] [--compare OLD.json]``

Backends: the CPU, Vulkan buffer mode on every ICD asked for (``host`` counts only when its device is not a
CPU-type device, read from the driver's ``backend.device.type``), and OpenCL (needs a GPU-type OpenCL device;
otherwise the row is NOT-EXERCISED and carries no number). Vulkan image mode is not timed: it crashes in the
first SGD step (MNN#3129), so it has no training cost to measure.

Method. Each repetition is one driver process training ``--steps`` steps of the demo's dynamic graph (the graph
is rebuilt every step, so every step pays shape inference and resize). Step 0 is warm-up (first resize,
pipeline compilation) and left out of every statistic. The driver's ``timing`` events come from MNN's executor
callbacks: per phase (``forward``: loss graph and its compute; ``sgd_step``: gradient graph, compute and
update) the time from the phase's start to the first op's "before" callback is *preparation* (graph build,
shape inference, resize: allocation and pipeline creation), the rest of the phase is *execution* (the ops,
the backend's submit and wait, readback). Limits: on an asynchronous GPU backend (Vulkan) an op's
``onExecute`` only records commands, so the device's work lands in the tail after the last op (still counted
as execution, never as preparation); work a backend defers from resize into its first execute is counted as
execution; and a phase with several computes (SGD reads parameters back one by one after a single
``prepareCompute``) counts only the time before the first op as preparation. The callbacks put MNN into its
debug mode (ops are encoded one by one), which can change the cost; so every repetition also runs with
``--no-trace-ops`` and the total per step without callbacks is reported, with the overhead of tracing.

Statistics pool the steps 1..N-1 of all repetitions of a cell: median and interquartile range; the ratio to
the CPU is of the medians of the total per step without tracing, CPU of the same run.

Static graph (rows ``... static``): the driver's ``--static-graph`` builds one express graph with image, label,
dropout mask, learning rate, parameters and momentum as inputs and loss, new parameters and new momentum as
outputs (``OpGrad::grad`` plus SGD's update written out: L2 weight decay, momentum, as
``SGD::onGetNextParameter``), prepares it once and reruns it each step, writing the outputs back into the
inputs. It reproduces the dynamic path's losses (same seed, same batches and masks). It is MNN's express-level
static graph, not ``ParameterOptimizer::makeLoopModel`` + ``Module::load`` of an exported ``.mnn`` (not
measured: that needs an exported file per backend and its own check). Its single phase is ``static_step``.
The difference between the dynamic and the static total per step is what rebuilding and resizing the graph
every step costs; it is the most direct measure of "resize" cost, since the callback split cannot see work
MNN does inside the execution of a freshly built graph (see the printed note).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fixtures, prepare
from .cells import Cell, CellRun, run_cell
from .contract import EVENTS_VERSION, RunRecord
from .errors import ConfigError
from .icd import Icd
from .runner import Runner
from .settings import Settings
from .workloads.train import workload as train
from .workloads.train.workload import Training

SCHEMA = "mnnrepro-bench/1"
WARMUP_STEPS = 1  # step 0: first resize and pipeline compilation
MEASURED = "measured"
NOT_EXERCISED = "NOT-EXERCISED"
NOT_MEASURED = "NOT-MEASURED"
FAILED = "FAILED"
STATIC_GRAPH = (
    "static graph: rows '... static' run the driver's --static-graph (one express graph: loss, gradients and the "
    "SGD update, prepared once, inputs rewritten each step; same losses as the dynamic graph). Not measured: "
    "ParameterOptimizer::makeLoopModel + Module::load of an exported training .mnn (no such path in the driver). "
    "dynamic - static = the cost of rebuilding and resizing the graph every step."
)
STATIC = " static"
PHASES = ("forward", "sgd_step")
STATIC_PHASES = ("static_step",)
IMAGE_MODE_NOTE = "vulkan-image: crashes in sgd_step at step 0 (MNN#3129), no training cost to measure"
METHOD = (
    "prep = phase start -> first op's 'before' callback (graph build, shape inference, resize); "
    "exec = the rest of the phase (ops, submit/wait, readback; on async GPU backends the device's work "
    "lands after the last op). 'outside ops' = phase time not between an op's before and after callbacks "
    "(graph build, resize between computes, readback): an upper bound on preparation, since MNN's lazy "
    "evaluation runs small computes while the graph is still being built, so the first op can fire before "
    "most of the preparation. Step 0 is warm-up and excluded; statistics pool steps 1.. of all repetitions; "
    "[q1-q3] is the interquartile range. x CPU: untraced median / the CPU's of the same graph kind."
)


@dataclass(frozen=True)
class Stats:
    """Median and spread of a sample (never empty: a cell with no samples has no Stats at all)."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @staticmethod
    def of(values: Iterable[float]) -> Stats:
        xs = sorted(float(v) for v in values if math.isfinite(float(v)))
        if not xs:
            raise ValueError("no finite samples")
        if len(xs) == 1:
            q1 = q3 = xs[0]
        else:
            q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
        return Stats(statistics.median(xs), q1, q3, xs[0], xs[-1], len(xs))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.lo, "max": self.hi, "n": self.n}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Stats:
        return Stats(
            float(data["median"]),
            float(data["q1"]),
            float(data["q3"]),
            float(data["min"]),
            float(data["max"]),
            int(data["n"]),
        )

    def text(self) -> str:
        return f"{self.median:.1f} [{self.q1:.1f}-{self.q3:.1f}]"


@dataclass(frozen=True)
class StepSplit:
    step: int
    prep_ms: float
    exec_ms: float
    total_ms: float
    outside_ms: float = math.nan  # phase time outside any op's before..after: an upper bound on preparation


def split_steps(timing: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]) -> list[StepSplit]:
    """Per step: preparation = each phase's time before its first op; execution = the rest of the phase.
    A step is left out when a phase has no timing event or ran no op (no split can be made)."""
    by_step: dict[int, dict[str, dict[str, Any]]] = {}
    for event in timing:
        by_step.setdefault(int(event["step"]), {})[str(event["phase"])] = event
    out = []
    for step_event in steps:
        step = int(step_event["step"])
        phases = by_step.get(step, {})
        names = STATIC_PHASES if "static_step" in phases else PHASES
        if any(p not in phases or int(phases[p].get("ops", 0)) <= 0 or "first_op_ms" not in phases[p] for p in names):
            continue
        prep = sum(float(phases[p]["first_op_ms"]) for p in names)
        total = sum(float(phases[p]["ms"]) for p in names)
        inside = sum(float(phases[p].get("in_ops_ms", math.nan)) for p in names)
        out.append(StepSplit(step, prep, total - prep, total, total - inside))
    return out


def step_totals(steps: Sequence[dict[str, Any]]) -> dict[int, float]:
    """forward_ms + step_ms per step, as the driver's `step` events report them."""
    return {int(s["step"]): float(s["forward_ms"]) + float(s["step_ms"]) for s in steps}


def cpu_fallback_ops(record: RunRecord, step: int = WARMUP_STEPS) -> int | None:
    """Ops that ran on the CPU in the forward and sgd_step phases of one steady-state step (None: not traced)."""
    placement = record.placement(step) or record.placement(0)
    if not placement:
        return None
    return sum(int(v["ops"].get("cpu", 0)) for phase, v in placement.items() if phase in (*PHASES, *STATIC_PHASES))


def read_timing(events: Path) -> list[dict[str, Any]]:
    """The driver's `timing` events (native/README.md), of the contract's version."""
    out: list[dict[str, Any]] = []
    if not events.is_file():
        return out
    for line in events.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "timing" and event.get("v") == EVENTS_VERSION:
            out.append(event)
    return out


@dataclass
class Row:
    """One backend. Numbers exist only when status is `measured`; other rows carry a reason instead."""

    backend: str
    status: str
    reason: str = ""
    device: str = ""
    prep: Stats | None = None
    exec: Stats | None = None
    total: Stats | None = None  # traced runs, prep + exec
    outside: Stats | None = None  # traced runs, time outside op callbacks (upper bound on preparation)
    untraced: Stats | None = None  # --no-trace-ops runs, forward_ms + step_ms
    cpu_ops: int | None = None
    repeats: int = 0
    ratio: float | None = None  # untraced (else traced) median total / the CPU's, same run
    loss_diff: float | None = None  # static rows: max |loss - the dynamic graph's loss| over the steps, same seed

    def __post_init__(self) -> None:
        if self.status != MEASURED and any(
            v is not None
            for v in (
                self.prep,
                self.exec,
                self.total,
                self.outside,
                self.untraced,
                self.ratio,
                self.cpu_ops,
                self.loss_diff,
            )
        ):
            raise ValueError(f"{self.backend}: a {self.status} row carries no numbers")

    @property
    def per_step(self) -> Stats | None:
        return self.untraced or self.total

    @property
    def trace_overhead(self) -> float | None:
        if self.total is None or self.untraced is None or self.untraced.median <= 0:
            return None
        return self.total.median / self.untraced.median - 1.0

    def as_dict(self) -> dict[str, Any]:
        stats = {k: (v.as_dict() if v else None) for k, v in self._stats().items()}
        return {
            "backend": self.backend,
            "status": self.status,
            "reason": self.reason,
            "device": self.device,
            **stats,
            "cpu_fallback_ops": self.cpu_ops,
            "repeats": self.repeats,
            "ratio_to_cpu": self.ratio,
            "trace_overhead": self.trace_overhead,
            "loss_diff_vs_dynamic": self.loss_diff,
        }

    def _stats(self) -> dict[str, Stats | None]:
        return {
            "prep_ms": self.prep,
            "exec_ms": self.exec,
            "total_ms": self.total,
            "outside_ops_ms": self.outside,
            "untraced_ms": self.untraced,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Row:
        def stat(key: str) -> Stats | None:
            value = data.get(key)
            return Stats.from_dict(value) if value else None

        return Row(
            backend=str(data["backend"]),
            status=str(data["status"]),
            reason=str(data.get("reason", "")),
            device=str(data.get("device", "")),
            prep=stat("prep_ms"),
            exec=stat("exec_ms"),
            total=stat("total_ms"),
            outside=stat("outside_ops_ms"),
            untraced=stat("untraced_ms"),
            cpu_ops=data.get("cpu_fallback_ops"),
            repeats=int(data.get("repeats", 0)),
            ratio=data.get("ratio_to_cpu"),
            loss_diff=data.get("loss_diff_vs_dynamic"),
        )


@dataclass
class Samples:
    """Per-step samples of one backend over its repetitions (step 0 already dropped)."""

    prep: list[float] = field(default_factory=list)
    exec: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    untraced: list[float] = field(default_factory=list)
    cpu_ops: int | None = None
    repeats: int = 0

    def add_traced(self, timing: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]) -> None:
        for split in split_steps(timing, steps):
            if split.step >= WARMUP_STEPS:
                self.prep.append(split.prep_ms)
                self.exec.append(split.exec_ms)
                self.total.append(split.total_ms)
                self.outside.append(split.outside_ms)

    def add_untraced(self, steps: Sequence[dict[str, Any]]) -> None:
        self.untraced += [v for s, v in sorted(step_totals(steps).items()) if s >= WARMUP_STEPS]

    def add_run(self, run: CellRun, traced: bool) -> None:
        """A traced run's prep/exec split (and its CPU-fallback ops, from the first), or an untraced run's totals."""
        if traced:
            self.add_traced(read_timing(run.result_dir / "events.jsonl"), run.record.steps)
            if self.cpu_ops is None:
                self.cpu_ops = cpu_fallback_ops(run.record)
        else:
            self.add_untraced(run.record.steps)

    def row(self, backend: str, device: str) -> Row:
        if not self.total and not self.untraced:
            return Row(backend, FAILED, "no step after warm-up was measured", device)
        return Row(
            backend,
            MEASURED,
            device=device,
            prep=Stats.of(self.prep) if self.prep else None,
            exec=Stats.of(self.exec) if self.exec else None,
            total=Stats.of(self.total) if self.total else None,
            outside=Stats.of(self.outside) if any(math.isfinite(v) for v in self.outside) else None,
            untraced=Stats.of(self.untraced) if self.untraced else None,
            cpu_ops=self.cpu_ops,
            repeats=self.repeats,
        )


def add_ratios(rows: list[Row]) -> None:
    """Ratio of each measured row's median total per step to the CPU row's of the same graph kind, same run."""
    for row in rows:
        kind = STATIC if row.backend.endswith(STATIC) else ""
        cpu = next((r for r in rows if r.backend == "cpu" + kind and r.status == MEASURED), None)
        base = cpu.per_step if cpu else None
        own = row.per_step
        if row.status == MEASURED and own is not None and base is not None and base.median > 0:
            # the same kind of total on both sides: untraced when both have it
            if row.untraced is not None and cpu is not None and cpu.untraced is not None:
                row.ratio = row.untraced.median / cpu.untraced.median
            elif row.total is not None and cpu is not None and cpu.total is not None:
                row.ratio = row.total.median / cpu.total.median


def _fmt(stats: Stats | None) -> str:
    return stats.text() if stats else "-"


def loss_diff(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Largest absolute difference of two loss curves over their common steps (None: nothing to compare)."""
    pairs = list(zip(a, b, strict=False))
    return max(abs(x - y) for x, y in pairs) if pairs else None


def rebuild_cost(rows: Sequence[Row]) -> list[str]:
    """Per backend: dynamic minus static median total per step (untraced where both have it)."""
    by = {r.backend: r for r in rows}
    out = []
    for row in rows:
        static = by.get(row.backend + STATIC)
        if row.backend.endswith(STATIC) or static is None or row.status != MEASURED or static.status != MEASURED:
            continue
        a, b = (row.untraced, static.untraced) if row.untraced and static.untraced else (row.total, static.total)
        if a is not None and b is not None:
            out.append(
                f"graph rebuild + resize per step, {row.backend}: {a.median - b.median:.1f} ms "
                f"(dynamic {a.median:.1f} vs static {b.median:.1f}, {(1 - b.median / a.median) * 100:.0f}% of the step)"
            )
    return out


def table(rows: Sequence[Row]) -> str:
    head = (
        "backend",
        "status",
        "prep ms",
        "exec ms",
        "outside ops ms",
        "total/step (traced)",
        "total/step (no trace)",
        "x CPU",
        "CPU-fallback ops",
        "device / reason",
    )
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.backend,
                r.status,
                _fmt(r.prep),
                _fmt(r.exec),
                _fmt(r.outside),
                _fmt(r.total),
                _fmt(r.untraced),
                f"{r.ratio:.2f}" if r.ratio is not None else "-",
                str(r.cpu_ops) if r.cpu_ops is not None else "-",
                r.device if r.status == MEASURED else r.reason,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1] for line in lines
    )


def compare(new: dict[str, Any], old: dict[str, Any]) -> str:
    """Change of the median total per step (and prep/exec) per backend from an older bench JSON."""
    old_rows = {r["backend"]: Row.from_dict(r) for r in old.get("rows", [])}
    lines = [f"compared with {old.get('created', '?')} (MNN {old.get('ref', '?')}, load {old.get('load', '?')}):"]
    for data in new.get("rows", []):
        row = Row.from_dict(data)
        before = old_rows.get(row.backend)
        if before is None:
            lines.append(f"  {row.backend}: new backend")
            continue
        if row.status != MEASURED or before.status != MEASURED:
            lines.append(f"  {row.backend}: n/a ({before.status} -> {row.status})")
            continue
        parts = []
        for label, a, b in (
            ("total", before.per_step, row.per_step),
            ("prep", before.prep, row.prep),
            ("exec", before.exec, row.exec),
        ):
            if a is not None and b is not None and a.median > 0:
                parts.append(f"{label} {a.median:.1f} -> {b.median:.1f} ms ({(b.median / a.median - 1) * 100:+.0f}%)")
        lines.append(f"  {row.backend}: " + ("; ".join(parts) if parts else "no comparable numbers"))
    return "\n".join(lines)


def to_json(rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, **meta, "rows": [r.as_dict() for r in rows]}


def rows_from_json(data: dict[str, Any]) -> list[Row]:
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} file (schema {data.get('schema')!r})")
    return [Row.from_dict(r) for r in data["rows"]]


def plot(rows: Sequence[Row], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.status == MEASURED]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 0.7 * max(3, len(measured)) + 1.8))
    names = [r.backend for r in measured]
    series = (
        ("preparation (before first op)", "prep", "tab:orange"),
        ("outside op callbacks", "outside", "tab:red"),
        ("execution", "exec", "tab:blue"),
        ("total, no tracing", "untraced", "tab:gray"),
    )
    height = 0.8 / len(series)
    for k, (label, attr, color) in enumerate(series):
        ys, xs, lo, hi = [], [], [], []
        for i, r in enumerate(measured):
            st: Stats | None = getattr(r, attr)
            if st is not None:
                ys.append(i + (k - (len(series) - 1) / 2) * height)
                xs.append(st.median)
                lo.append(st.median - st.q1)
                hi.append(st.q3 - st.median)
        ax.barh(ys, xs, height=height, xerr=[lo, hi], label=label, color=color, capsize=2)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("ms per training step (median, IQR; step 0 excluded)")
    ax.set_xscale("log")
    ax.legend(loc="lower right", fontsize=8)
    ratio_rows = [r for r in rows if r.status == MEASURED and r.ratio is not None]
    ax2.barh([r.backend for r in ratio_rows], [r.ratio or 0.0 for r in ratio_rows], color="tab:green")
    ax2.axvline(1.0, color="k", lw=0.8)
    ax2.set_xlabel("time per step / CPU (no tracing)")
    skipped = [f"{r.backend}: {r.status}" for r in rows if r.status != MEASURED]
    fig.suptitle(title + ("\n" + "; ".join(skipped) if skipped else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- running


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _device_type(record: RunRecord) -> str:
    device = record.backend.get("device") or {}
    return str(device.get("type") or "")


def _out_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.out:
        return Path(args.out)
    return settings.results_dir / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-bench")


@dataclass(frozen=True)
class _Rig:
    """What every run of one bench shares: the prepared ref (source, runner, core, driver, plugins, ICDs,
    time limits) and the bench's workload."""

    args: argparse.Namespace
    prepared: prepare.Prepared
    out_dir: Path
    workload: Training
    say: Callable[[str], None]

    @property
    def ref(self) -> str:
        return self.prepared.built.ref

    @property
    def runner(self) -> Runner:
        return self.prepared.built.runner


BENCH_VARIANTS = ("cpu", "vulkan-buffer", "opencl")


def _prepare(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> _Rig:
    """The one preparation step (no gdb: timings are of the driver alone), and the bench's workload: the
    matrix's, with --steps and 100 test images."""
    matrix = fixtures.load_matrix()
    # The OpenCL row is measured where a GPU-type OpenCL device answers and NOT-EXERCISED elsewhere (stop_row):
    # its absence is a result of the bench, not a problem that stops it.
    timed = tuple(v for v in BENCH_VARIANTS if v != "opencl")
    settings, _ = prepare.preflight_for(replace(settings, gdb=False), timed, say)
    prepared = prepare.prepare(settings.ref or matrix.default_ref, BENCH_VARIANTS, settings, matrix, say)
    out_dir = _out_dir(args, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    workload = replace(train.workload_of(matrix, settings), steps=args.steps, test_limit=100)
    return _Rig(args, prepared, out_dir, workload, say)


@dataclass(frozen=True)
class _Target:
    """The runs of one row: a cell with the dynamic or the static graph, and the plugin and ICD it loads."""

    cell: Cell
    static: bool
    plugin: Path | None = None
    icd: Icd | None = None

    @property
    def base_name(self) -> str:
        return self.cell.variant if self.cell.icd == "-" else f"{self.cell.variant}/{self.cell.icd}"

    @property
    def backend(self) -> str:
        return self.base_name + (STATIC if self.static else "")


def plan(ref: str, icds: Sequence[str], with_static: bool) -> list[_Target]:
    """The rows to measure, in table order: CPU, Vulkan buffer mode per ICD, OpenCL; then the same with the
    static graph."""
    cells: list[Cell] = [Cell(ref, "cpu", "-")]
    cells += [Cell(ref, "vulkan-buffer", name) for name in icds]
    cells.append(Cell(ref, "opencl", "-"))
    return [_Target(c, False) for c in cells] + ([_Target(c, True) for c in cells] if with_static else [])


def measure(
    args: argparse.Namespace, settings: Settings, say: Callable[[str], None]
) -> tuple[list[Row], dict[str, Any]]:
    rig = _prepare(args, settings, say)
    load_before = _loadavg()
    say(
        f"bench: MNN {rig.ref} ({(rig.prepared.built.tree.commit or '?')[:10]}), runner {rig.runner.name}, "
        f"{args.steps} steps x "
        f"batch {rig.workload.batch_size}, {args.repeat} repetition(s) traced + untraced, load {load_before}"
    )
    rows = _measure_rows(rig, plan(rig.ref, settings.icds, not args.no_static))
    rows.insert(2 + len(settings.icds), Row("vulkan-image", NOT_MEASURED, IMAGE_MODE_NOTE))
    add_ratios(rows)
    return rows, _meta(rig, load_before)


def _measure_rows(rig: _Rig, targets: Sequence[_Target]) -> list[Row]:
    """One row per target. A backend the dynamic graph found not exercised (or failing) is not tried again."""
    rows: list[Row] = []
    skip: dict[str, Row] = {}
    losses: dict[tuple[str, bool], list[float]] = {}  # (base name, static): the first traced run's losses
    for target in targets:
        name = target.base_name
        if name in skip:  # not exercised / failed with the dynamic graph: the static one is not tried
            rows.append(Row(target.backend, skip[name].status, skip[name].reason, skip[name].device))
            continue
        samples, device, stopped = _repetitions(rig, target, losses)
        row = stopped or samples.row(target.backend, device)
        if stopped is not None:
            skip[name] = stopped
        if target.static and row.status == MEASURED:
            row.loss_diff = loss_diff(losses.get((name, False), []), losses.get((name, True), []))
        if target.cell.variant == "cpu" and row.status == MEASURED:
            row.cpu_ops = None  # the CPU backend has nothing to fall back from
        rows.append(row)
        rig.say(f"  {target.backend}: {row.status} {row.reason}".rstrip())
    return rows


def _repetitions(
    rig: _Rig, target: _Target, losses: dict[tuple[str, bool], list[float]]
) -> tuple[Samples, str, Row | None]:
    """Run a target --repeat times (traced, then untraced), pooling the samples; the device's name; and the row
    of the run that stopped the repetitions (not exercised, failed), if one did."""
    cell = target.cell
    built = rig.prepared.built
    target = replace(target, plugin=built.plugins.get(cell.variant), icd=rig.prepared.icds.get(cell.icd))
    samples = Samples()
    device = ""
    for rep in range(rig.args.repeat):
        for traced in (True, False) if not rig.args.no_untraced else (True,):
            run = _run_once(rig, target, traced, rep)
            device = run.record.device_name or device
            stopped = stop_row(target.backend, run, device)
            if stopped is not None:
                return samples, device, stopped
            if traced and rep == 0:
                losses[target.base_name, target.static] = run.record.losses
            samples.add_run(run, traced)
        samples.repeats += 1
    return samples, device, None


def _run_once(rig: _Rig, target: _Target, traced: bool, rep: int) -> CellRun:
    """One driver process: --steps steps of the target, with op callbacks (traced) or without."""
    label = "traced" if traced else "untraced"
    rig.say(f"  {target.backend} repetition {rep + 1}/{rig.args.repeat} ({label}) ...")
    extra: tuple[str, ...] = ("--static-graph",) if target.static else ()
    extra += () if traced else ("--no-trace-ops",)
    run_name = f"{'static-' if target.static else ''}{label}-{rep + 1}"
    return run_cell(
        target.cell,
        driver=rig.prepared.built.driver,
        plugin=target.plugin,
        icd=target.icd,
        workload=Training(**{**rig.workload.__dict__, "extra_args": extra}),
        timeout_s=rig.prepared.timeout_for(target.cell.backend),
        runner=rig.runner,
        result_dir=rig.out_dir / "cells" / target.cell.dirname / run_name,
        use_gdb=False,
    )


def stop_row(backend: str, run: CellRun, device: str) -> Row | None:
    """The row of a run that ends the measurement of its backend: the backend was not active, the host ICD's
    device is a CPU-type device, or the driver failed. None: the run counts."""
    record = run.record
    if record.exercised is False:
        reason = str(record.backend.get("reason") or "backend not active")
        return Row(backend, NOT_EXERCISED, reason, device)
    if run.cell.icd == "host" and _device_type(record).upper().endswith("CPU"):
        return Row(
            backend,
            NOT_EXERCISED,
            f"host ICD's device is a CPU-type device ({device}), not a real GPU",
            device,
        )
    if run.completed.returncode != 0 or not record.done:
        return Row(backend, FAILED, f"driver exit {run.completed.returncode}: {record.error}", device)
    return None


def _meta(rig: _Rig, load_before: list[float]) -> dict[str, Any]:
    """The result's header (bench.json): what was measured, where, how, and the load around it."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "ref": rig.ref,
        "commit": rig.prepared.built.tree.commit,
        "runner": rig.runner.name,
        "steps": rig.args.steps,
        "warmup_steps": WARMUP_STEPS,
        "batch_size": rig.workload.batch_size,
        "repeats": rig.args.repeat,
        "load": {"before": load_before, "after": _loadavg(), "cpus": os.cpu_count()},
        "method": METHOD,
        "static_graph": STATIC_GRAPH,
        "out_dir": str(rig.out_dir),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`mnnrepro bench` (the ``nox -s bench`` session)."""
    p.add_argument("--ref", default=None)
    p.add_argument(
        "--icd",
        dest="icds",
        metavar="ICD",
        default="lavapipe,swiftshader,host",
        help="Vulkan ICDs (buffer mode) to time",
    )
    p.add_argument("--steps", type=int, default=20, help="steps per run (step 0 is warm-up, excluded)")
    p.add_argument("--repeat", type=int, default=3, help="driver runs per backend (each traced and untraced)")
    p.add_argument("--runner", default="host", choices=["host", "docker", "auto"])
    p.add_argument(
        "--timeout", dest="timeout_s", metavar="TIMEOUT", type=int, default=600, help="seconds per driver run"
    )
    p.add_argument("--no-untraced", action="store_true", help="skip the --no-trace-ops runs")
    p.add_argument("--no-static", action="store_true", help="skip the --static-graph runs")
    p.add_argument("--out", default=None, help="directory for the runs (default results/<time>-bench)")
    p.add_argument("--json", default=None, help="write the result here too (default OUT/bench.json)")
    p.add_argument("--compare", default=None, metavar="OLD.json", help="print the change from an older result")
    p.add_argument("--from-json", default=None, help="no runs: print (and --compare) an existing result")


def main(args: argparse.Namespace, settings: Settings, *, say: Callable[[str], None] = print) -> int:
    """The ``bench`` subcommand: measure and write the result (or read one with --from-json), print it, and
    with --compare the change from an older one."""
    if args.steps <= WARMUP_STEPS or args.repeat < 1:
        raise ConfigError(f"--steps must be > {WARMUP_STEPS} and --repeat >= 1")
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        say(table(rows_from_json(data)))
    else:
        data = _measure_and_write(args, settings, say)
    if args.compare:
        say(compare(data, json.loads(Path(args.compare).read_text())))
    return 0


def _measure_and_write(args: argparse.Namespace, settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """Measure; write bench.json (and --json) and bench.png into the run's directory; print the result."""
    started = time.monotonic()
    rows, meta = measure(args, settings, say)
    meta["seconds"] = round(time.monotonic() - started, 1)
    data = to_json(rows, meta)
    out_dir = Path(meta["out_dir"])
    paths = [out_dir / "bench.json"] + ([Path(args.json)] if args.json else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    png = plot(rows, out_dir / "bench.png", f"MNN {meta['ref']}: time per training step, load {meta['load']}")
    say_result(rows, meta, [*paths, png], say)
    return data


def say_result(rows: Sequence[Row], meta: dict[str, Any], written: Sequence[Path], say: Callable[[str], None]) -> None:
    """The table, the method, the static-vs-dynamic and tracing notes, the load, and the files written."""
    say("")
    say(table(rows))
    say("")
    say(f"method: {METHOD}")
    for row in rows:
        if row.loss_diff is not None:
            say(f"static graph vs dynamic, {row.backend}: max |loss difference| {row.loss_diff:.2e} over the steps")
        if row.trace_overhead is not None:
            say(f"trace overhead {row.backend}: {row.trace_overhead * 100:+.0f}% per step (callbacks on vs off)")
    say(STATIC_GRAPH)
    for line in rebuild_cost(rows):
        say(line)
    say(
        f"load average (1, 5, 15 min) before {meta['load']['before']}, after {meta['load']['after']}, "
        f"{meta['load']['cpus']} CPUs"
    )
    say("written: " + ", ".join(str(p) for p in written))
