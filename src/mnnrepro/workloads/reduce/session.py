"""The reduce session (issue 14): ``mnnrepro reduce --variant V --icd I [--graph DIR | --workload W]``.

Same preparation as the other workloads (settings -> preflight_for -> prepare: core, driver and mnn_graph, the
variant's plugin, gdb, the ICD), then: capture (the driver on the CPU backend saves the crashing phase's graph of
the training workload W, default mnist (issue 24), unless --graph names one), the reducer (reduce.py), and the
reduced graph checked on its own: it must still fail on the backend under test and pass on the CPU. Writes
summary.json (session "reduce") and repro/ (graph.mnn, inputs/) into the results directory; a second run with the
same --results-dir resumes from reduce.json. ``--vuid VUID`` (issue 25): the target is a message of the Khronos
validation layer instead of a crash; every backend run is under the layer with its canary (search.py), and the
summary names the VUID's count and first message in the reduced graph.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ... import __version__, build, fixtures, gradcheck, prepare, source, validation, variants
from ...contract import read_events
from ...errors import ConfigError
from ...settings import Settings
from ...signature import SIGNAL_ONLY
from ..train import workload as train
from . import search as reduce

Say = Callable[[str], None]
DEFAULT_BUDGET_S = 900.0
CANDIDATE_TIMEOUT_S = 120.0


def check(settings: Settings) -> tuple[str, str]:
    """The one variant and the one ICD a reduction runs on, known before anything is built."""
    names = settings.variants or ("vulkan-image",)
    if len(names) != 1 or names[0] not in variants.VARIANTS or names[0] == variants.BASELINE:
        raise ConfigError(
            f"reduce runs on one GPU variant, not {','.join(names)}",
            hint=f"--variant one of {', '.join(n for n in variants.NAMES if n != variants.BASELINE)}",
        )
    icd = ""
    if variants.get(names[0]).per_icd:
        if len(settings.icds) != 1:
            raise ConfigError("reduce runs on one Vulkan ICD", hint="--icd lavapipe (or swiftshader, host)")
        icd = settings.icds[0]
    return names[0], icd


# The capture saves the graph of the first SGD step (sgd_step[0]): a known bug's row is a target for it only when
# it crashes in that phase.
CAPTURED_STAGE, CAPTURED_STEP = "sgd_step", 0


@dataclass(frozen=True)
class Aim:
    """What a reduction reduces toward. ``target`` None: the graph's own failure (whatever the whole graph does)."""

    target: reduce.Target | None
    source: str  # for every report: where the target comes from
    bug: str = ""
    stage: str = ""
    op: str = ""  # the row's op type (the one alibaba/MNN#3129 crashes in): the reduced graph must keep it


def aim_for(
    matrix: fixtures.Matrix,
    ref: str,
    variant: str,
    icd: str,
    version: str | None,
    *,
    given: bool,
    workload: str = train.NAME,
) -> Aim:
    """The known bug's row of fixtures/matrix.toml covering (workload, ref, variant, ICD), as the target of a captured
    graph:
    its signal and signature, so the capture's crash is held to the bug the workload knows (alibaba/MNN#3129),
    not taken for it. A given graph (--graph) is not the workload: its own failure is the target."""
    cell = f"{ref}/{variant}/{icd or '-'}"
    if given:
        return Aim(None, "the given graph's own failure (fixtures/matrix.toml's rows are about training workloads)")
    # The reduction's device is not probed before the capture: the row most likely to judge the cell (for --icd
    # host, the row naming the machine's GPU vendor), as the MNIST session plans a cell before it ran.
    row = matrix.likely_expectation(ref, variant, icd or "-", version, workload)
    if row is None or row.outcome != "reproduce":
        why = f"its row expects {row.outcome!r}" if row else "no row covers it"
        of = "" if workload == train.NAME else f" of workload {workload}"
        return Aim(
            None, f"the captured graph's own failure: no known bug in fixtures/matrix.toml for {cell}{of} ({why})"
        )
    name = row.bug or "the 'reproduce' row"
    if row.stage != CAPTURED_STAGE or row.step not in (None, CAPTURED_STEP):
        raise reduce.ReduceError(
            f"{name} (fixtures/matrix.toml) crashes at {row.stage}[{row.step}] for {cell}; the capture saves the graph "
            f"of {CAPTURED_STAGE}[{CAPTURED_STEP}], so it cannot be reduced from the capture",
            hint="save that phase's graph yourself and pass it with --graph",
        )
    stage = f"{row.stage}[{row.step if row.step is not None else CAPTURED_STEP}]"
    target = reduce.Target("crash", row.signal, row.signature)
    return Aim(target, f"{name} (fixtures/matrix.toml)", row.bug, stage, row.op)


def vuid_aim(settings: Settings, variant: str, vuid: str) -> tuple[Settings, Aim]:
    """``--vuid``: the settings with the validation layer on (``--vk-validation on`` unless sync was asked for) and
    the aim of a VUID reduction. Only a Vulkan variant has a layer to ask."""
    if variants.get(variant).backend != "vulkan":
        raise ConfigError(
            f"--vuid {vuid}: {variant} is no Vulkan variant", hint="--variant vulkan-image or vulkan-buffer"
        )
    mode = settings.vk_validation if settings.vk_validation != "off" else "on"
    target = reduce.Target("vuid", vuid=vuid)
    return replace(settings, vk_validation=mode), Aim(target, f"--vuid {vuid} (the Khronos validation layer, {mode})")


# Driver options under which the capture (--save-graph) saves nothing: it cuts the dynamic path's first SGD step,
# and a workload training through these never takes that path. The driver refuses --train-graph-file beside
# --save-graph (native/src/options.cpp); --static-graph it accepts, then trains through trainStatic, which never
# saves a graph: refused here so a reduction never starts from a capture that is not there.
NOT_CAPTURED = {
    "--train-graph-file": "it trains from a training graph the driver saves and loads back (train_graph.mnn): a "
    "crash there is in the loaded graph, while the capture (--save-graph) saves the dynamic path's first SGD step, "
    "and the driver refuses the two together",
    "--static-graph": "it trains through the in-memory static graph, which the capture (--save-graph) never builds",
}


def workload_for(
    matrix: fixtures.Matrix, settings: Settings, name: str, *, graph: Path | None, resume: Path | None
) -> train.Training:
    """The training workload whose first SGD step is captured, known before anything is built: an unknown name, a
    workload the capture cannot save, --graph beside another workload than MNIST's, or --resume of a reduction of
    another workload is a ConfigError."""
    workload = train.workload_of(matrix, settings, name)
    if graph is not None and name != train.NAME:
        raise ConfigError(f"--graph {graph} is not workload {name}'s graph", hint="pass --graph or --workload")
    for option, why in NOT_CAPTURED.items():
        if graph is None and option in workload.model_args:
            raise ConfigError(
                f"workload {name} cannot be reduced from the capture yet: {why}",
                hint="save the crashing graph with its inputs yourself and pass it with --graph",
            )
    state = resume / "reduce.json" if resume is not None else None
    if graph is None and state is not None and state.is_file():
        try:
            was = str(json.loads(state.read_text()).get("workload") or train.NAME)
        except ValueError:
            was = name  # not JSON: the reducer says so
        if was != name:
            raise ConfigError(
                f"--resume {resume}: its reduce.json reduces workload {was}'s graph, not {name}'s",
                hint=f"--workload {was} to go on with it, or a new reduction (without --resume)",
            )
    return workload


def capture(prepared: prepare.Prepared, workload: train.Training, results: Path, say: Say) -> Path:
    """The driver, on the CPU backend of the same build, saves the gradient graph of the workload's first SGD step
    (its model and driver options, one step)."""
    built = prepared.built
    out = results / "graph"
    if (out / "graph.mnn").is_file() and (out / "inputs" / "manifest.tsv").is_file():
        say(f"graph already captured: {out}")
        return out
    argv = [str(built.driver), "--backend", "cpu", "--data", str(fixtures.MNIST), "--out", str(results / "capture")]
    argv += capture_args(workload, out)
    of = "" if workload.name == train.NAME else f" of workload {workload.name} (model {workload.model})"
    say(f"capturing the first SGD step's gradient graph{of} on the CPU backend (mnist_driver --save-graph)")
    res = built.runner.run(
        argv,
        timeout_s=300,
        writable=[results],
        stdout_path=results / "capture.log",
        stderr_path=results / "capture.err",
    )
    if res.returncode != 0 or not (out / "graph.mnn").is_file():
        raise reduce.ReduceError(f"the capture failed (exit {res.returncode}; see {results}/capture.err)")
    return out


def capture_args(workload: train.Training, out: Path) -> list[str]:
    """The capture's driver options: the workload's (Training.driver_args) for one step, without the test stage's
    --test-limit, which the capture never reaches (MNIST's command line is the one before there were workloads)."""
    args = dataclasses.replace(workload, steps=1, extra_args=()).driver_args()
    cut = args.index("--test-limit")
    return [*args[:cut], *args[cut + 2 :], "--save-graph", str(out)]


def adopt(graph: Path, results: Path, say: Say) -> Path:
    """A user's graph directory, copied into the results (a container sees the results; --resume needs nothing
    else)."""
    out = results / "graph"
    if (out / "graph.mnn").is_file():
        if (out / "graph.mnn").read_bytes() != (graph / "graph.mnn").read_bytes():
            raise ConfigError(f"{results} holds another graph than {graph}", hint="start a new reduction")
        return out
    shutil.copytree(graph, out)
    say(f"graph: {graph} (copied to {out})")
    return out


def spec_for(
    prepared: prepare.Prepared, variant: str, icd: str, settings: Settings, graph: Path, work: Path
) -> reduce.Spec:
    """Where and how a graph runs for one (build, variant, ICD): mnn_graph beside the driver, the variant's plugin,
    the ICD's environment; one process at a time and no gdb until the caller says otherwise."""
    built = prepared.built
    return reduce.Spec(
        tool=built.driver.with_name("mnn_graph"),
        graph=graph,
        work=work,
        runner=built.runner,
        backend=variants.get(variant).backend,
        plugin=built.plugins.get(variant),
        env=dict(prepared.icds[icd].env) if icd else {},
        gdb=None,
        jobs=1,
        timeout_s=float(settings.timeout_s or CANDIDATE_TIMEOUT_S),
    )


def search_spec(
    prepared: prepare.Prepared,
    variant: str,
    icd: str,
    settings: Settings,
    graph: Path,
    results: Path,
    training: train.Training,
    matrix: fixtures.Matrix,
    *,
    vuid: bool,
) -> reduce.Spec:
    """The search's Spec: spec_for's, with gdb, the jobs, the precision and the backend's gradient limits."""
    spec = spec_for(prepared, variant, icd, settings, graph, results)
    # A VUID is judged by the layer's log, not by a crash: no gdb (a candidate that also crashes is no matter).
    spec.gdb = None if vuid else prepared.gdb_path
    spec.validation = settings.vk_validation if vuid else "off"
    spec.jobs = settings.test_jobs or len(os.sched_getaffinity(0))
    spec.precision = variants.get(variant).precision or training.precision
    limit = gradcheck.tolerance_for(spec.backend, spec.precision, 0, matrix)
    spec.limits = (limit.max_rel, limit.min_cosine, limit.max_nmse)
    return spec


def run_reduce(
    settings: Settings,
    *,
    graph: Path | None = None,
    budget_s: float | None = None,
    resume: Path | None = None,
    workload: str = train.NAME,
    vuid: str | None = None,
    say: Say = print,
) -> int:
    started = time.monotonic()
    variant, icd = check(settings)
    # --vuid: before preflight, so the layer is checked for like a validated run's.
    settings, vaim = vuid_aim(settings, variant, vuid) if vuid else (settings, None)
    if graph is not None:
        graph = reduce.load_graph_dir(graph)
    matrix = fixtures.load_matrix()
    training = workload_for(matrix, settings, workload, graph=graph, resume=resume)
    ref = settings.ref or matrix.default_ref
    source.validate_ref(ref)
    settings, _ = prepare.preflight_for(settings, (variants.BASELINE, variant), say)
    if resume is not None and not (resume / "reduce.json").is_file():
        raise ConfigError(f"--resume {resume}: no reduce.json there", hint="name the results directory of a reduce run")
    results = (resume or prepare.results_dir(settings, "reduce")).resolve()
    of = "" if graph is not None or workload == train.NAME else f" (workload {workload})"
    say(f"mnnrepro {__version__}: reduce {ref}/{variant}/{icd or '-'}{of}, results in {results}")
    prepared = prepare.prepare(ref, (variants.BASELINE, variant), settings, matrix, say)
    built = prepared.built
    graph_dir = capture(prepared, training, results, say) if graph is None else adopt(graph, results, say)
    spec = search_spec(prepared, variant, icd, settings, graph_dir, results, training, matrix, vuid=vaim is not None)
    budget = float(budget_s or DEFAULT_BUDGET_S)
    aim = vaim or aim_for(matrix, ref, variant, icd, built.tree.version, given=graph is not None, workload=workload)
    named = {} if graph is not None or workload == train.NAME else {"workload": workload}  # MNIST's: as before
    reducer = reduce.Reducer(spec, budget_s=budget, say=say, meta=named)
    reducer.prepare()
    ops_total = len(reducer.op_indices())
    target = reducer.establish(aim.target, aim.source)
    judged = judged_by(target, signal_only=reducer.signal_only)
    whole = f"the longest prefix without the crash, {len(reducer.start)} of" if reducer.start else "the whole graph,"
    say(f"{whole} {ops_total} ops, fails: {target.describe()} (target: {aim.source}; {judged})")
    say(f"reducing (budget {budget:.0f} s)")
    keep = reducer.reduce()
    seconds = round(reducer.seconds, 1)
    table = reduce.ops_table(reducer.ops, keep)
    kinds = reduce.kinds_under_test(table)
    repro = emit(results, keep, table)
    checks = verify(spec, target, repro, results, say, kinds=kinds)
    checks.update(verify_standalone(prepared, spec, target, repro, results, say))
    summary: dict[str, Any] = {
        **header(built, ref, variant, icd),
        "target": target_entry(target, aim),
        "judged_by": judged,
        "precision": spec.precision,
        "limits": {"max_rel": spec.limits[0], "min_cosine": spec.limits[1], "max_nmse": spec.limits[2]},
        "gdb": bool(spec.gdb),
        "original_ops": ops_total,
        "reduced_ops": len(keep),
        "keep": list(keep),
        "ops": table,
        "candidate_runs": len(reducer.trials),  # every candidate ran once, in this run or one it resumes
        "candidate_runs_this_time": reducer.runs,
        "reduce_seconds": seconds,
        "budget_s": budget,
        "budget_exhausted": not reducer.minimal,
        "total_seconds": round(time.monotonic() - started, 1),
        "checks": checks,
        "device": checks.get("device", ""),
        "graph": workload if graph is None else "given",  # the captured workload's name (MNIST's: "mnist")
        **named,
        **vuid_entry(target, spec.validation, reducer, keep, results, say),
        "results_dir": str(results),
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    say(f"reduced {ops_total} -> {len(keep)} op(s) in {seconds} s, {len(reducer.trials)} candidate run(s), {judged}")
    for row in table:
        say(f"  [{row['index']}] {row['type']} {row['name']}: {', '.join(row['inputs'])}")
    say(f"repro: {repro}; summary: {results / 'summary.json'}")
    return conclude(checks, aim, kinds, keep, results, budget, exhausted=not reducer.minimal, say=say)


def target_entry(target: reduce.Target, aim: Aim) -> dict[str, Any]:
    """summary.json's "target": what the candidates were held to, and where that came from."""
    return {
        "kind": target.kind,
        "signal": target.signal,
        "signature": list(target.signature),
        "source": aim.source,
        "bug": aim.bug,
        "stage": aim.stage,
        "op": aim.op,
        **({"vuid": target.vuid} if target.kind == "vuid" else {}),  # issue 25: what the layer must report
    }


def header(built: prepare.Built, ref: str, variant: str, icd: str) -> dict[str, Any]:
    """The first keys of a reduce summary.json: what ran, where, with what."""
    return {
        "format": 1,
        "session": "reduce",
        "suite": __version__,
        "ref": ref,
        "commit": built.tree.commit,
        "mnn_version": built.tree.version,
        "variant": variant,
        "icd": icd or "-",
        "runner": built.runner.name,
        "toolchain": built.builder.toolchain,
        "host": platform.platform(),
        "python": sys.version.split()[0],
    }


def conclude(
    checks: dict[str, str],
    aim: Aim,
    kinds: Sequence[str],
    keep: tuple[int, ...],
    results: Path,
    budget: float,
    *,
    exhausted: bool,
    say: Say,
) -> int:
    """A reduction's exit code: 0 when the reduced graph checked out on its own (fails on the backend the target's
    way, passes on the CPU, both with mnn_graph and the standalone reproducer), keeps the known bug's op, and the
    search finished; 1 otherwise, saying why."""
    ok = checks["backend"] == "fails" and checks["cpu"] == "passes"
    ok = ok and checks.get("standalone") == "fails" and checks.get("standalone_cpu") == "passes"
    if aim.op and aim.op not in kinds:
        ok = False
        say(f"the reduced graph has no {aim.op}, the op of {aim.source}: it crashes the row's way in other ops")
    if not ok:
        say(f"the reduced graph did not check out on its own: {checks}")
    if (
        checks.get("cpu") == "passes"
        and checks.get("standalone_build") == "ok"
        and checks.get("standalone_cpu") != "passes"
    ):
        # Same graph, same inputs, same MNN build: the two programs disagree, so the fault is the reproducer's until
        # shown otherwise, and its result on the backend is no evidence either (issue 22).
        say(
            "the standalone reproducer fails on the CPU where mnn_graph passes the same graph and inputs on the same "
            f"MNN build ({checks.get('standalone_cpu_numbers') or checks.get('standalone_cpu')}): look at repro.cpp "
            "before MNN; its result on the backend is no evidence"
        )
    if exhausted:
        say(
            f"the budget ({budget:.0f} s) ran out before the search finished: {len(keep)} op(s) is the best so far, "
            f"not minimal; --resume {results} --budget S goes on"
        )
    return 0 if ok and not exhausted else 1


def judged_by(target: reduce.Target, *, signal_only: bool) -> str:
    """How candidates were held to the target, in the words every report uses."""
    if target.kind == "differs":
        return "judged by outputs against the CPU's values"
    if target.kind == "vuid":
        return "judged by the Khronos validation layer's log (every candidate's canary reported)"
    if signal_only:
        return f"{SIGNAL_ONLY} (no gdb: the crash signature was not checked)"
    return "judged by signal and crash signature"


REPRO_SOURCES = build.NATIVE_DIR / "repro"


def emit(results: Path, keep: tuple[int, ...], table: list[dict[str, Any]]) -> Path:
    """results/repro/: the reduced graph and its inputs, the CPU's values of its outputs (expected/), and the
    standalone reproducer (repro.cpp, CMakeLists.txt: MNN only) with how to build and run it."""
    repro = results / "repro"
    shutil.rmtree(repro, ignore_errors=True)
    cdir = results / "candidates" / reduce.key_of(keep)
    repro.mkdir()
    shutil.copy2(cdir / "graph.mnn", repro / "graph.mnn")
    shutil.copytree(cdir / "inputs", repro / "inputs")
    for name in ("repro.cpp", "CMakeLists.txt"):
        shutil.copy2(REPRO_SOURCES / name, repro / name)
    outputs = {o for row in table for o in row["outputs"]}
    consumed = {i.split(" ", 1)[0] for row in table for i in row["inputs"]}
    (repro / "expected").mkdir()
    lines = []
    for line in (results / "values" / "manifest.tsv").read_text().splitlines():
        f = line.split("\t")
        if f[0] in outputs - consumed:
            shutil.copy2(results / "values" / f[4], repro / "expected" / f[4])
            lines.append(line)
    (repro / "expected" / "manifest.tsv").write_text("".join(f"{x}\n" for x in lines))
    return repro


# repro.cpp's exit codes (native/README.md) beside mnn_graph's: 1 outputs differ, 5 an op of the graph ran on
# another backend than the one under test (FALLBACK), 7 an output could not be computed (never "differs").
REPRO_FALLBACK = 5
_EXIT_WORDS = {1: "differs", 7: "could not compute"}


def _repro_says(err: Path, word: str) -> str:
    """What repro.cpp said after ``repro: WORD:`` on stderr (the detail of its exit code), or ""."""
    try:
        lines = err.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((x.split(f"{word}:", 1)[1].strip() for x in reversed(lines) if x.startswith(f"repro: {word}:")), "")


def verify_standalone(
    prepared: prepare.Prepared, spec: reduce.Spec, target: reduce.Target, repro: Path, results: Path, say: Say
) -> dict[str, str]:
    """Build repro/ against the same MNN build, the way its README says, and run it: on the backend it must fail
    the target's way (or say NOT-EXERCISED), on the CPU it must pass."""
    built = prepared.built
    bdir = results / "repro-build"
    shutil.rmtree(bdir, ignore_errors=True)
    configure = ["cmake", "-G", "Ninja", "-S", str(repro), "-B", str(bdir), f"-DMNN_SOURCE_DIR={built.tree.path}"]
    steps = [[*configure, f"-DMNN_BUILD_DIR={built.core.lib_dir}"], ["ninja", "-C", str(bdir)]]
    for i, argv in enumerate(steps):
        log, err = results / f"repro-build-{i}.log", results / f"repro-build-{i}.err"
        res = built.runner.run(argv, timeout_s=600, writable=[results], stdout_path=log, stderr_path=err)
        if res.returncode != 0:
            say(f"  the standalone reproducer did not build (see {log} and {err})")
            return {"standalone_build": "failed"}
    out = {"standalone_build": "ok"}
    for name, backend, plugin, env in (
        ("standalone", spec.backend, spec.plugin, spec.env),
        ("standalone_cpu", "cpu", None, {}),
    ):
        argv = [str(bdir / "repro"), backend, str(plugin) if plugin else "-", spec.precision, *map(repr, spec.limits)]
        layer = results / "standalone-validation"  # a VUID target: the reproducer under the layer (no canary)
        validated = name == "standalone" and spec.validation != "off"
        if validated:
            layer.mkdir(exist_ok=True)
            env = {**env, **validation.prepare_cell(layer, spec.validation)}
        with validation.relay(layer) if validated else nullcontext():
            res = built.runner.run(
                ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(repro), *argv],
                env=env,
                timeout_s=spec.timeout_s,
                writable=[results],
                stdout_path=results / f"{name}.log",
                stderr_path=results / f"{name}.err",
            )
        if validated and res.returncode != 4:
            out[name] = standalone_vuid(layer, target)
            say(f"  the standalone reproducer (repro.cpp) on {backend} under the layer: {out[name]}")
            continue
        how = res.signal_name or _EXIT_WORDS.get(res.returncode, f"exit {res.returncode}")
        wanted = target.signal if target.kind == "crash" else "differs"
        out[name] = (
            "NOT-EXERCISED"
            if res.returncode == 4
            else f"{reduce.FALLBACK} ({_repro_says(results / f'{name}.err', 'FALLBACK') or 'an op left the GPU'})"
            if res.returncode == REPRO_FALLBACK
            else "passes"
            if res.returncode == 0
            else "fails"
            if how == wanted
            else f"fails otherwise ({how})"
        )
        numbers = repro_numbers(results / f"{name}.err")
        if numbers:
            out[f"{name}_numbers"] = numbers
        say(f"  the standalone reproducer (repro.cpp) on {backend}: {out[name]}" + (f" ({numbers})" if numbers else ""))
    return out


def standalone_vuid(layer: Path, target: reduce.Target) -> str:
    """The standalone reproducer under the layer: "fails" when its log holds the VUID. repro.cpp makes no canary, so
    a log without it is no proof that the VUID is gone (the layer may not have loaded): never "passes"."""
    log = layer / validation.LOG
    counts = validation.parse_log(log.read_text(errors="replace")).counts if log.is_file() else {}
    if (layer / validation.RELAY_FAILED).is_file():
        return "NOT-EXERCISED (validation: the layer's log was not kept whole)"
    if reduce.vuid_matches(target.vuid, counts):
        return "fails"
    return f"no {target.vuid} in the layer's log (repro.cpp makes no canary: that proves nothing)"


def repro_numbers(err: Path) -> str:
    """repro.cpp's own account of each output against expected/ (stderr): "NAME: max_rel X, cosine Y, nmse Z, N of M
    not finite", "NAME: N of M values differ, flat indices I to J" (where), or "NAME has N values, the CPU's M";
    joined by "; ", "" when it compared none. A verdict alone hid
    that repro.cpp once counted an NC4HW4 output with its channels padded to 4 (issue 22: "differs" on the CPU too)."""
    try:
        lines = err.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    said = [x.removeprefix("repro: ") for x in lines if x.startswith("repro: ")]
    found = [
        x.removesuffix(", against the CPU's values")
        for x in said
        if ": max_rel " in x or " values, the CPU's " in x or " values differ, flat indices " in x
    ]
    return "; ".join(found)


def check_at(settings: Settings, results: Path, *, say: Say = print) -> int:
    """A reduction's reduced graph (``results``/repro) at another ref (a fix, a later release): built with that
    ref's MNN, run on the backend and on the CPU, with where each op ran (a fix that sends the op to the CPU is
    another answer than a fixed GPU kernel: FALLBACK, see at_verdict). Exit 0 when it passes on both, 1 when it
    still fails, 2 otherwise (FALLBACK or no answer)."""
    variant, icd = check(settings)
    results = results.resolve()
    repro = results / "repro"
    if not (repro / "graph.mnn").is_file() or not (results / "summary.json").is_file():
        raise ConfigError(f"{results} is not the results directory of a finished reduce run (no repro/graph.mnn)")
    before = json.loads((results / "summary.json").read_text())
    if (before.get("target") or {}).get("kind") == "vuid":  # its runs would need the layer and the canary (issue 25)
        raise ConfigError(
            f"{results} is a VUID reduction: --check runs a crash's or wrong values' reduced graph only",
            hint="run `reduce --vuid` at the other ref (its capture, its search)",
        )
    matrix = fixtures.load_matrix()
    ref = settings.ref or matrix.default_ref
    settings, _ = prepare.preflight_for(settings, (variants.BASELINE, variant), say)
    prepared = prepare.prepare(ref, (variants.BASELINE, variant), settings, matrix, say)
    built = prepared.built
    out_dir = results / f"at-{ref.replace('/', '_')}"
    out_dir.mkdir(exist_ok=True)
    spec = spec_for(prepared, variant, icd, settings, repro, out_dir)
    spec.precision = str(before.get("precision") or "high")
    lim = before.get("limits") or {}
    spec.limits = (
        float(lim.get("max_rel", 1e-3)),
        float(lim.get("min_cosine", 0.999999)),
        float(lim.get("max_nmse", 1e-6)),
    )
    (out_dir / "values").mkdir(exist_ok=True)
    shutil.copytree(results / "values", out_dir / "values", dirs_exist_ok=True)
    t = before.get("target") or {}
    target = reduce.Target(str(t.get("kind", "crash")), str(t.get("signal", "")), tuple(t.get("signature") or ()))
    say(f"the reduced graph of {before.get('ref')} ({before.get('reduced_ops')} op(s)) at {ref}:")
    checks = verify(spec, target, repro, out_dir, say, kinds=reduce.kinds_under_test(before.get("ops") or []))
    checks.update(verify_standalone(prepared, spec, target, repro, out_dir, say))
    where = {n: placement(read_events(out_dir / "verify" / n / "events.jsonl")) or {} for n in ("backend", "cpu")}
    say(f"  where its ops ran on the {variant} run: {where['backend'] or 'none completed'}")
    verdict, code = at_verdict(checks)
    data: dict[str, Any] = {"ref": ref, "commit": built.tree.commit, "variant": variant, "icd": icd or "-"}
    data.update(verdict=verdict, checks=checks, placement=where)
    (out_dir / "check.json").write_text(json.dumps(data, indent=1))
    if verdict == reduce.FALLBACK:
        say(
            f"  FALLBACK at {ref}: the reduced op(s) ran on the CPU, not on {variant}: it does not fail because it "
            "left the GPU, not because the GPU kernel was fixed"
        )
    elif verdict == "NO-ANSWER":
        say(f"  no answer at {ref}: {checks}")
    return code


def at_verdict(checks: dict[str, str]) -> tuple[str, int]:
    """A reduced graph at one ref, and check_at's exit code: PASS 0 (passes on the backend, on the CPU, and the
    standalone reproducer both ways); REPRODUCED 1 (fails the target's way); FALLBACK 2 (the reduced op ran on
    the CPU: neither a pass nor the bug); NO-ANSWER 2 (NOT-EXERCISED, a build or another failure)."""
    if checks.get("backend") == "fails" or checks.get("standalone") == "fails":
        return "REPRODUCED", 1
    if any(str(checks.get(k, "")).startswith(reduce.FALLBACK) for k in ("backend", "standalone")):
        return reduce.FALLBACK, 2
    if all(checks.get(k) == "passes" for k in ("backend", "cpu", "standalone", "standalone_cpu")):
        return "PASS", 0
    return "NO-ANSWER", 2


def verify(
    spec: reduce.Spec,
    target: reduce.Target,
    repro: Path,
    results: Path,
    say: Say,
    *,
    values: Path | None = None,
    cpu: bool = True,
    kinds: Sequence[str] = (),
) -> dict[str, str]:
    """The reduced graph on its own (not the reducer's run, no gdb): it fails the target's way on the backend
    ("fails"), and passes on the CPU ("passes"; ``cpu=False`` leaves that run out). ``values``: the CPU's values
    the outputs are held to (default: results/values). ``kinds``: the reduced op types (reduce.kinds_under_test);
    a backend run that completed with one of them elsewhere (or no placement) is "FALLBACK (...)", never
    "passes"."""
    out: dict[str, str] = {}
    runs = [("backend", spec.backend, spec.plugin, spec.env)] + ([("cpu", "cpu", None, {})] if cpu else [])
    for name, backend, plugin, env in runs:
        run_dir = results / "verify" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        argv = [str(spec.tool), "run", "--graph", str(repro / "graph.mnn"), "--inputs", str(repro / "inputs")]
        argv += ["--out", str(run_dir), "--backend", backend, "--expect", str(values or results / "values")]
        argv += [*spec.limit_args(), "--precision", spec.precision]
        if plugin is not None:
            argv += ["--plugin", str(plugin)]
        validated = name == "backend" and spec.validation != "off"  # a VUID target: the run under the layer
        if validated:
            env = {**env, **validation.prepare_cell(run_dir, spec.validation)}
            argv.append(validation.CANARY_ARG)
        with validation.relay(run_dir) if validated else nullcontext():
            res = spec.runner.run(
                argv,
                env=env,
                timeout_s=spec.timeout_s,
                writable=[results],
                stdout_path=run_dir / "stdout.txt",
                stderr_path=run_dir / "stderr.txt",
            )
        record = read_events(run_dir / "events.jsonl")
        if name == "backend" and record.backend:
            out["device"] = record.device_name or str(record.backend.get("active", ""))
        how = res.signal_name or _EXIT_WORDS.get(res.returncode, f"exit {res.returncode}")
        # A run that completed is held to where the reduced op(s) ran: on the CPU it is no pass (39be21c56 makes
        # alibaba/MNN#3129's Deconvolution run there), and no sign of the bug either.
        off = reduce.off_backend(placement(record), backend, kinds) if res.returncode in (0, 1) else ""
        if res.returncode == 4:
            out[name] = "NOT-EXERCISED"
        elif validated:
            out[name] = vuid_word(run_dir, spec.validation, target)
            if off:  # the VUID may be raised at the boundary (a copy into a Vulkan image): said, not a verdict
                out["off_backend"] = off
        elif off and backend != "cpu":
            out[name] = f"{reduce.FALLBACK} ({off})"
        elif res.returncode == 0:
            out[name] = "passes"
        elif name == "backend" and how == (target.signal if target.kind == "crash" else "differs"):
            out[name] = "fails"
        else:
            out[name] = f"fails otherwise ({how})"
        say(f"  the reduced graph alone on {backend}: {out[name]} (exit {res.returncode})")
    return out


def vuid_word(run_dir: Path, mode: str, target: reduce.Target) -> str:
    """A run under the layer (its validation.json written beside it), held to a VUID target: "fails" when the layer
    reported the canary and the VUID, "passes" when it reported the canary and not the VUID; without the canary
    "NOT-EXERCISED (validation: ...)", never "passes". Where the ops ran is no part of it: a message of the layer
    comes from a Vulkan call, also when an op of the reduced graph ran on the CPU and the VUID is raised copying its
    output into a Vulkan image (3.6.1 image mode: Cast on the CPU, then BinaryOp MUL); verify records that apart."""
    record = validation.assess(run_dir, ref="", version=None, variant="", icd="", mode=mode, known=[])
    validation.write_record(run_dir, record)
    if record["status"] != validation.EXERCISED:
        return f"NOT-EXERCISED (validation: {record['reason']})"
    seen = reduce.vuid_matches(target.vuid, {v: int(i["count"]) for v, i in record["vuids"].items()})
    return "fails" if seen else "passes"


def op_specific(reducer: reduce.Reducer, keep: tuple[int, ...], say: Say) -> bool | None:
    """Whether a VUID reduced to one op is that op's: the graph's first two other ops are run alone under the layer
    too. A VUID raised at setup (instance, device or pipeline creation) shows with any op, and delta debugging then
    lands on whichever op it tried first (3.4.0's 16-bit storage VUID landed on the first op on the GPU). None: not
    one op, or no other op to try."""
    others = [i for i in reducer.op_indices() if i not in keep][:2]
    if len(keep) != 1 or not others:
        return None
    also = [i for i, trial in zip(others, reducer.judge([(i,) for i in others]), strict=True) if trial.interesting]
    if also:
        say(
            f"  the VUID shows with op(s) {', '.join(f'#{i}' for i in also)} alone too: it comes from setup (instance, "
            "device or pipeline creation) or from every kernel, not from this op's alone"
        )
    return not also


def vuid_entry(
    target: reduce.Target, mode: str, reducer: reduce.Reducer, keep: tuple[int, ...], results: Path, say: Say
) -> dict[str, Any]:
    """summary.json's "vuid" of a VUID reduction: the pattern, the mode, the matching ids' counts in the whole graph
    (the search's first trial), and in the reduced graph run alone (verify/backend) with the first message of each
    and the other ids that run raised; whether the reduced op is the VUID's own (`op_specific`). {} for another
    target."""
    if target.kind != "vuid":
        return {}
    whole = reducer.trials.get(reduce.key_of(reducer.start or reducer.op_indices()))
    try:
        record = json.loads((results / "verify" / "backend" / validation.RECORD).read_text())
    except (OSError, ValueError):
        record = {}
    said = record.get("vuids") or {}
    seen = reduce.vuid_matches(target.vuid, {v: int(i["count"]) for v, i in said.items()})
    entry = {
        "pattern": target.vuid,
        "mode": mode,
        "layer": record.get("status", "no record"),
        # The search's first set: every op, or the longest prefix that does not crash (search.py _vuid_start).
        "searched_from_ops": whole.ops if whole else None,
        "searched_from": reduce.vuid_matches(target.vuid, whole.vuids) if whole else {},
        "reduced": {
            v: {"count": n, "severity": said[v]["severity"], "first": said[v]["first"]} for v, n in seen.items()
        },
        "reduced_other": {v: int(i["count"]) for v, i in said.items() if v not in seen},
        "op_specific": op_specific(reducer, keep, say),
    }
    return {"vuid": entry}


def placement(record: Any) -> dict[str, dict[str, int]] | None:
    """Where the ops of a ``mnn_graph run`` ran (its ``ops`` record: backend -> op type -> count); None when the
    run recorded none."""
    return dict(record.ops[-1].get("by_backend") or {}) if record.ops else None
