"""From a crash to a minimal graph that still crashes (issue 14): ``mnnrepro reduce``.

Capture: the MNIST driver saves the graph of the phase that crashes (``--save-graph``: the gradient graph that
``sgd->step`` computes first, alibaba/MNN#3129's phase) on the CPU backend of the same build, with the values of
its graph inputs; or the user hands one in (``--graph DIR``: an MNN graph file ``graph.mnn`` of Variable::save and
``inputs/``, a tensor store). ``mnn_graph values`` computes every op's outputs on the CPU once.

Reduce: a candidate is a set of the graph's ops (indices of ``mnn_graph info``). ``mnn_graph cut`` makes it a
graph of its own (an input of a kept op whose producer is gone becomes a graph input fed with the CPU's value,
never a constant: a constant can change which kernel MNN picks), and ``mnn_graph run`` runs it on the backend
under test, under gdb, in its own process, through the suite's runner, with a time limit (the batch runner of the
op sweep: ``jobs`` candidates at a time). A candidate is *interesting* when it fails the way the original did: the
same signal with the same crash signature (the top frames inside MNN); or, for a numerical bug, outputs that differ
from the CPU's beyond the tolerance. The search: the shortest prefix of the execution order that is interesting
(binary search: cuts the graph after the failing region), then delta debugging (ddmin) of that op set down to a
set where no single op can go. A VUID target (``--vuid``, issue 25): every candidate runs under the Khronos
validation layer (validation.py: the settings file, the FIFO relay, mnn_graph's ``--vk-canary``) and is interesting
when the layer reported the canary and the VUID; a candidate whose canary the layer did not report stops the
reduction (the layer did not run: counting that as "VUID absent" would reduce to a wrong op). Every trial is
recorded in ``reduce.json`` (by candidate): a second run resumes
from it; a time budget stops the search with the smallest interesting candidate found so far.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ... import judge, validation
from ... import signature as sig
from ...cells import GDB_SCRIPT
from ...errors import ConfigError, MnnReproError
from ...runner import Runner
from ..ops.optest import BATCH_SCRIPT, _signal_name

Say = Callable[[str], None]
FORMAT = 1


class ReduceError(MnnReproError):
    exit_code = 5


@dataclass(frozen=True)
class Op:
    index: int
    kind: str  # an MNN op type, or INPUT / CONST / TRAINABLE
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    detail: str = ""  # the operation of a family op (BinaryOp POW), from mnn_graph info's sixth column

    @property
    def leaf(self) -> bool:
        return self.kind in ("INPUT", "CONST", "TRAINABLE")


def parse_info(text: str) -> list[Op]:
    """``mnn_graph info``'s lines (MNN may print other lines on stdout: only ``index<TAB>...`` lines count)."""
    ops = []
    for line in text.splitlines():
        f = line.split("\t")
        if len(f) < 5 or not f[0].isdigit():
            continue
        detail = f[5].strip() if len(f) > 5 else ""
        ops.append(Op(int(f[0]), f[1], f[2], tuple(x for x in f[3].split("|") if x), tuple(f[4].split("|")), detail))
    if not ops or [o.index for o in ops] != list(range(len(ops))):
        raise ReduceError("mnn_graph info listed no ops (or not in order): is the graph file an MNN graph?")
    return ops


@dataclass(frozen=True)
class Target:
    """What makes a candidate interesting."""

    kind: str  # "crash" (signal + signature), "differs" (outputs beyond tolerance, no crash), or "vuid"
    signal: str = ""
    signature: tuple[str, ...] = ()
    vuid: str = ""  # kind "vuid": a VUID or an fnmatch pattern of one, as the validation layer names it

    def describe(self) -> str:
        if self.kind == "differs":
            return "outputs differ from the CPU's beyond the tolerance"
        if self.kind == "vuid":
            return f"{self.vuid} reported by the Khronos validation layer (its canary reported too)"
        return f"{self.signal} in {' < '.join(self.signature) or '(no MNN frame)'}"


FALLBACK = judge.FALLBACK  # a run that completed with the reduced op(s) on another backend than the one under test


def kinds_under_test(table: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The op types of a reduced graph (its summary's ``ops`` table): "BinaryOp POW" gives BinaryOp and POW (the
    type MNN's executor callbacks name a family op by where MNN is built with MNN_OP_SEPERATE)."""
    return tuple(dict.fromkeys(part for row in table for part in str(row.get("type", "")).split() if part))


def off_backend(by_backend: dict[str, dict[str, int]] | None, backend: str, kinds: Sequence[str] = ()) -> str:
    """ "" when the reduced op(s) ran on ``backend`` (the ``ops`` record of ``mnn_graph run``: backend -> op type ->
    count, from the executor's callbacks), else what did not: "Deconvolution x1 on cpu", "no op ran on vulkan",
    "no op placement recorded". A run like that is no pass: upstream's fix of alibaba/MNN#3129 (39be21c56) declines
    the Deconvolution on Vulkan, which then runs on the CPU. Ops of other types (the Raster and Convert MNN adds
    between backends) are not under test; without ``kinds`` every op is."""
    if by_backend is None:
        return "no op placement recorded"
    under = set(kinds)
    elsewhere = [
        f"{kind} x{n} on {where}"
        for where, types in sorted(by_backend.items())
        if where != backend
        for kind, n in sorted(types.items())
        if n and (not under or kind in under)
    ]
    if elsewhere:
        return "; ".join(elsewhere)
    if not any((by_backend.get(backend) or {}).values()):
        return f"no op ran on {backend}"
    return ""


@dataclass
class Trial:
    key: str
    ops: int
    interesting: bool
    outcome: str  # "SIGSEGV", "differs", "ok", "timeout", "exit N"
    signature: list[str] = field(default_factory=list)
    seconds: float = 0.0
    vuids: dict[str, int] = field(default_factory=dict)  # under the validation layer: message id -> count


def vuid_matches(pattern: str, vuids: dict[str, int]) -> dict[str, int]:
    """The message ids of ``vuids`` that a VUID target names (exactly, or as an fnmatch pattern)."""
    return {v: n for v, n in vuids.items() if fnmatch.fnmatchcase(v, pattern)}


def key_of(keep: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(keep))).encode()).hexdigest()[:16]


@dataclass
class Spec:
    """Where and how candidates run."""

    tool: Path  # mnn_graph
    graph: Path  # directory: graph.mnn, inputs/
    work: Path  # results: values/, candidates/, reduce.json
    runner: Runner
    backend: str
    plugin: Path | None
    env: dict[str, str]
    gdb: str | None
    jobs: int
    timeout_s: float
    precision: str = "high"
    # A difference from the CPU (a numerical bug): gradcheck's limits for this backend and precision.
    limits: tuple[float, float, float] = (1e-3, 0.999999, 1e-6)  # max_rel, min_cosine, max_nmse
    validation: str = "off"  # validation.MODES: every backend run under the Khronos layer (a VUID target)

    def limit_args(self) -> list[str]:
        max_rel, min_cosine, max_nmse = self.limits
        return ["--max-rel", repr(max_rel), "--min-cosine", repr(min_cosine), "--max-nmse", repr(max_nmse)]


class Reducer:
    def __init__(self, spec: Spec, *, budget_s: float, say: Say = print, meta: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.say = say
        self.meta = dict(meta or {})  # recorded in every reduce.json (e.g. the captured workload, issue 24)
        self.deadline = time.monotonic() + budget_s
        self.state_path = spec.work / "reduce.json"
        self.trials: dict[str, Trial] = {}
        self.ops: list[Op] = []
        self.target: Target | None = None
        self.runs = 0  # candidate processes started by this run (not the ones resumed from reduce.json)
        self.seconds = 0.0  # the search's wall time, over every run that worked on this reduce.json
        self.minimal = False  # the search ran to its end (no single op of the result can go)
        self.start: tuple[int, ...] = ()  # a VUID search's first set when not every op (see _vuid_start)
        self.graph_sha = hashlib.sha256((spec.graph / "graph.mnn").read_bytes()).hexdigest()
        self._load_state()

    # -- state ------------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        if not self.state_path.is_file():
            return
        try:
            data = json.loads(self.state_path.read_text())
        except ValueError as exc:
            raise ReduceError(
                f"{self.state_path} is not JSON ({exc}): start a new reduction (without --resume)"
            ) from exc
        if data.get("graph_sha256") != self.graph_sha:
            raise ReduceError(f"{self.state_path} records another graph: start a new reduction, without --resume")
        self.trials = {k: Trial(**v) for k, v in data.get("trials", {}).items()}
        self.seconds = float(data.get("seconds", 0.0))
        if data.get("target"):
            t = data["target"]
            self.target = Target(t["kind"], t.get("signal", ""), tuple(t.get("signature", ())), t.get("vuid", ""))
        self.say(f"resuming: {len(self.trials)} candidate(s) already judged ({self.state_path})")

    def save(self, **extra: Any) -> None:
        data = {
            "format": FORMAT,
            "graph_sha256": self.graph_sha,
            "target": asdict(self.target) if self.target else None,
            "seconds": round(self.seconds, 1),
            "trials": {k: asdict(v) for k, v in self.trials.items()},
            **self.meta,
            **extra,
        }
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_path)

    # -- the graph ---------------------------------------------------------------------------------------------
    def _tool(self, args: list[str], what: str, *, timeout_s: float = 600.0) -> str:
        out, err = self.spec.work / f"{args[0]}.log", self.spec.work / f"{args[0]}.err"
        res = self.spec.runner.run(
            [str(self.spec.tool), *args],
            timeout_s=timeout_s,
            stdout_path=out,
            stderr_path=err,
            writable=[self.spec.work],
        )
        if res.returncode != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-3:] if err.is_file() else []
            raise ReduceError(f"{what}: mnn_graph {args[0]} exited {res.returncode}: {' | '.join(tail)} (see {err})")
        return out.read_text(errors="replace")

    def prepare(self) -> None:
        g = self.spec.graph
        self.ops = parse_info(self._tool(["info", "--graph", str(g / "graph.mnn")], "listing the graph"))
        values = self.spec.work / "values"
        if not (values / "manifest.tsv").is_file():
            self.say(f"computing every op's outputs on the CPU ({len(self.op_indices())} ops)")
            self._tool(
                ["values", "--graph", str(g / "graph.mnn"), "--inputs", str(g / "inputs"), "--out", str(values)],
                "computing the graph on the CPU (if the CPU crashes too, the bug is not the GPU backend's)",
            )

    def op_indices(self) -> list[int]:
        return [o.index for o in self.ops if not o.leaf]

    # -- one batch of candidates -------------------------------------------------------------------------------
    def _argv(self, keep: Sequence[int], cdir: Path) -> list[str]:
        s = self.spec
        cut = [str(s.tool), "cut", "--graph", str(s.graph / "graph.mnn"), "--inputs", str(s.graph / "inputs")]
        cut += ["--values", str(s.work / "values"), "--keep", str(cdir / "keep.txt"), "--out", str(cdir)]
        run = [str(s.tool), "run", "--graph", str(cdir / "graph.mnn"), "--inputs", str(cdir / "inputs")]
        run += ["--out", str(cdir / "run"), "--backend", s.backend, "--precision", s.precision]
        run += ["--expect", str(s.work / "values"), *s.limit_args()]
        if s.plugin is not None:
            run += ["--plugin", str(s.plugin)]
        if s.validation != "off":
            run.append(validation.CANARY_ARG)
        if s.gdb:
            run = [s.gdb, "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args", *run]
        # The cut cannot crash the way the run does (it computes nothing); its failure is exit 99, not a verdict.
        return ["sh", "-c", f"{shlex.join(cut)} >/dev/null || exit 99; exec {shlex.join(run)}"]

    def judge(self, candidates: list[tuple[int, ...]]) -> list[Trial]:
        """Each candidate's trial (from reduce.json, or run now: the new ones in one runner call)."""
        fresh = [c for c in dict.fromkeys(candidates) if key_of(c) not in self.trials]
        if fresh:
            entries = [self._entry(keep) for keep in fresh]
            plan = self.spec.work / "plan.json"
            plan.write_text(json.dumps({"jobs": self.spec.jobs, "tests": entries}, indent=1))
            budget = self.spec.timeout_s * (len(entries) / self.spec.jobs + 1) + 60
            with ExitStack() as relays:
                if self.spec.validation != "off":  # each candidate's layer log, relayed from its own FIFO
                    for keep in fresh:
                        relays.enter_context(validation.relay(self._run_dir(keep)))
                res = self.spec.runner.run(
                    ["python3", str(BATCH_SCRIPT), str(plan)],
                    env=self.spec.env,
                    writable=[self.spec.work],
                    timeout_s=budget,
                    stdout_path=self.spec.work / "batch.log",
                    stderr_path=self.spec.work / "batch.err",
                )
            self.runs += len(fresh)
            unfinished = []
            for keep in fresh:
                trial = self._read(keep)
                if trial is None:  # no result.json: the batch was stopped before it; never recorded as a verdict
                    unfinished.append(key_of(keep))
                else:
                    self.trials[key_of(keep)] = trial
            self.save()
            if unfinished or res.returncode != 0:
                raise ReduceError(
                    f"the batch of candidates ended with exit {res.returncode}"
                    + (" (time limit)" if res.timed_out else "")
                    + f", {len(unfinished)} candidate(s) unfinished (see {self.spec.work}/batch.err); what finished is "
                    f"recorded: --resume {self.spec.work} goes on from there"
                )
        return [self.trials[key_of(c)] for c in candidates]

    def _run_dir(self, keep: Sequence[int]) -> Path:
        """Where a candidate's ``mnn_graph run`` writes (events.jsonl; under the layer its settings file and log)."""
        return self.spec.work / "candidates" / key_of(keep) / "run"

    def _entry(self, keep: Sequence[int]) -> dict[str, Any]:
        """One candidate of the batch plan, its directory cleared of an earlier attempt's results."""
        cdir = self.spec.work / "candidates" / key_of(keep)
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "keep.txt").write_text("\n".join(map(str, keep)) + "\n")
        for stale in ("result.json", "crash.json"):
            (cdir / stale).unlink(missing_ok=True)
        env = {"MNNREPRO_CRASH_DIR": str(cdir)}
        if self.spec.validation != "off":
            run_dir = self._run_dir(keep)
            run_dir.mkdir(exist_ok=True)
            # An earlier attempt's events would show its canary for a run that never got that far.
            (run_dir / "events.jsonl").unlink(missing_ok=True)
            env.update(validation.prepare_cell(run_dir, self.spec.validation))
        return {
            "name": key_of(keep),
            "dir": str(cdir),
            "argv": self._argv(keep, cdir),
            "env": env,
            "timeout_s": self.spec.timeout_s,
        }

    def _layer_said(self, keep: Sequence[int]) -> dict[str, int]:
        """Under the layer: every message id of the candidate's run with its count (the canary's taken out). A run
        whose canary the layer did not report is an error of the reduction, never "VUID absent"."""
        run_dir = self._run_dir(keep)
        record = validation.assess(
            run_dir, ref="", version=None, variant="", icd="", mode=self.spec.validation, known=[]
        )
        validation.write_record(run_dir, record)
        if record["status"] != validation.EXERCISED:
            raise ReduceError(
                f"validation {validation.NOT_EXERCISED} for candidate {key_of(keep)}: {record['reason']} (see "
                f"{run_dir}): the layer's silence proves nothing, so no candidate can be judged by a VUID"
            )
        return {v: int(info["count"]) for v, info in record["vuids"].items()}

    def _read(self, keep: Sequence[int]) -> Trial | None:
        cdir = self.spec.work / "candidates" / key_of(keep)
        try:
            res = json.loads((cdir / "result.json").read_text())
        except (OSError, ValueError):
            return None
        seconds = float(res.get("duration_s", 0.0))
        code = int(res.get("returncode", 0))
        if code == 99:
            raise ReduceError(f"mnn_graph cut failed for candidate {key_of(keep)} (see {cdir}/stderr.txt)")
        if code == 4 and not res.get("timed_out"):
            raise ReduceError(
                f"NOT-EXERCISED: the {self.spec.backend} backend was not active for candidate {key_of(keep)} "
                f"(see {cdir}/stderr.txt): no candidate can be judged"
            )
        if self.spec.validation != "off":
            vuids = self._layer_said(keep)
            outcome = "timeout" if res.get("timed_out") else _signal_name(code) or f"exit {code}"
            return Trial(key_of(keep), len(keep), self.interesting(outcome, (), vuids), outcome, [], seconds, vuids)
        if res.get("timed_out"):
            return Trial(key_of(keep), len(keep), False, "timeout", seconds=seconds)
        signal = _signal_name(code)
        frames: tuple[str, ...] = ()
        if signal and (cdir / "crash.json").is_file():
            try:
                frames = sig.of_cell_dir(cdir)
            except (ValueError, KeyError, TypeError):  # a capture cut short: judged by the signal alone
                frames = ()
        outcome = signal or ("differs" if code == 1 else "ok" if code == 0 else f"exit {code}")
        if code == 4:
            raise ReduceError(
                f"NOT-EXERCISED: the {self.spec.backend} backend was not active for candidate {key_of(keep)} "
                f"(see {cdir}/stderr.txt): no candidate can be judged"
            )
        return Trial(key_of(keep), len(keep), self.interesting(outcome, frames), outcome, list(frames), seconds)

    @property
    def signal_only(self) -> bool:
        """A crash judged by its signal alone: without gdb (--no-gdb, or none where the runner runs) no candidate
        has frames to hold to the target's signature. Every report says so."""
        return self.target is not None and self.target.kind == "crash" and not self.spec.gdb

    def interesting(self, outcome: str, frames: Sequence[str], vuids: dict[str, int] | None = None) -> bool:
        t = self.target
        if t is None:
            return False
        if t.kind == "vuid":  # only runs whose canary the layer reported get here (_layer_said)
            return bool(vuid_matches(t.vuid, vuids or {}))
        if t.kind == "differs":
            return outcome == "differs"
        if self.signal_only:
            return outcome == t.signal
        return outcome == t.signal and (not t.signature or sig.matches(tuple(frames), t.signature))

    # -- the search --------------------------------------------------------------------------------------------
    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def first_interesting(self, candidates: list[tuple[int, ...]]) -> tuple[int, ...] | None:
        """The first interesting candidate, judging ``jobs`` at a time in order (stops at the first batch with one)."""
        n = max(1, self.spec.jobs)
        for i in range(0, len(candidates), n):
            if self.out_of_time():
                return None
            batch = candidates[i : i + n]
            for c, t in zip(batch, self.judge(batch), strict=True):
                if t.interesting:
                    return c
        return None

    def establish(self, expected: Target | None, source: str = "") -> Target:
        """Run the whole graph: it must fail; how it fails is the target. ``expected`` (a known bug's row, named by
        ``source``), when given, is the target: a graph that fails otherwise is refused, never reduced as if it
        were that bug."""
        if expected is not None and self.target is not None and self.target != expected:
            raise ReduceError(
                f"{self.state_path} was reduced toward {self.target.describe()}, not {source or 'the expected'} "
                f"target ({expected.describe()}): start a new reduction, without --resume"
            )
        full = tuple(self.op_indices())
        probe = self.trials.get(key_of(full)) or self.judge([full])[0]
        if self.target is None:
            if expected is not None:
                self.target = expected
            elif probe.outcome.startswith("SIG"):
                self.target = Target("crash", probe.outcome, tuple(probe.signature))
            elif probe.outcome == "differs":
                self.target = Target("differs")
        probe.interesting = self.interesting(probe.outcome, probe.signature, probe.vuids)
        if not probe.interesting and expected is not None and expected.kind == "vuid":
            probe = self._vuid_start(full, probe, expected)
        if not probe.interesting and expected is not None:
            seen = " < ".join(probe.signature) or ("(no MNN frame)" if self.spec.gdb else "(no gdb: no frames)")
            seen = (
                f"{probe.outcome} in {seen}"
                if probe.outcome.startswith("SIG")
                else "it runs without failing"
                if probe.outcome == "ok"
                else probe.outcome
            )
            raise ReduceError(
                f"the captured graph fails otherwise than the known bug on {self.spec.backend}: {seen}; "
                f"{source or 'the expectation'} says {expected.describe()}. Not reduced: it is not that bug "
                "(reduce it as a graph of its own with --graph, or check the expectation row)"
            )
        if not probe.interesting:
            wanted = self.target.describe() if self.target else "a crash or outputs that differ from the CPU's"
            raise ReduceError(
                f"the whole graph does not fail the way wanted on {self.spec.backend}: {probe.outcome} "
                f"{' < '.join(probe.signature)} (wanted: {wanted}): nothing to reduce"
            )
        assert self.target is not None
        self.save()
        return self.target

    def _vuid_start(self, full: tuple[int, ...], probe: Trial, expected: Target) -> Trial:
        """Where a VUID search starts when the whole graph does not show the VUID. A graph that crashes first
        (3.3.0 image mode: alibaba/MNN#3129's Deconvolution, near the end of the step) may hide a VUID its earlier
        ops raise: the search starts from the longest prefix that does not crash (binary search), if that prefix
        shows it. Otherwise there is nothing to reduce."""
        start = None
        if probe.outcome.startswith("SIG"):
            lo, hi = 0, len(full)  # prefix lo runs without a crash (the empty one does), prefix hi crashes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self.judge([full[:mid]])[0].outcome.startswith("SIG"):
                    hi = mid
                else:
                    lo = mid
            if lo:
                start = self.judge([full[:lo]])[0]
                self.say(f"  the whole graph crashes ({probe.outcome}); the longest prefix that does not: {lo} ops")
                if start.interesting:
                    self.start = full[:lo]
                    return start
        where = f"the whole graph ({probe.outcome})" + (" nor its longest prefix without the crash" if start else "")
        said = (start or probe).vuids
        seen = ", ".join(f"{v} x{n}" for v, n in said.items()) or "no message besides the canary"
        raise ReduceError(
            f"{where} raises no {expected.vuid} under the validation layer on {self.spec.backend} (its canary was "
            f"reported; the layer said: {seen}): nothing to reduce"
        )

    def reduce(self) -> tuple[int, ...]:
        """The smallest interesting op set found; ``self.minimal`` says whether the search finished (1-minimal) or
        the budget stopped it first (the best so far)."""
        started = time.monotonic()
        try:
            return self._reduce()
        finally:
            self.seconds += time.monotonic() - started
            self.save()

    def _reduce(self) -> tuple[int, ...]:
        current = self.start or tuple(self.op_indices())
        # 1. The shortest interesting prefix of the execution order: everything after the failing region goes.
        lo, hi = 0, len(current)  # prefix `hi` is interesting; find the smallest
        while hi - lo > 1 and not self.out_of_time():
            mid = (lo + hi) // 2
            if self.judge([current[:mid]])[0].interesting:
                hi = mid
            else:
                lo = mid
        current = current[:hi]
        self.say(f"  prefix: {len(current)} of {len(self.op_indices())} ops")
        # 2. ddmin: subsets, then complements, at doubling granularity, down to 1-minimal.
        n = 2
        while len(current) >= 2 and not self.out_of_time():
            size = -(-len(current) // n)
            chunks = [current[i : i + size] for i in range(0, len(current), size)]
            subsets = [c for c in chunks if c]
            complements = [tuple(x for x in current if x not in set(c)) for c in subsets]
            found = self.first_interesting(subsets)
            if found is not None:
                current, n = found, 2
            else:
                found = self.first_interesting([c for c in complements if c])
                if found is not None:
                    current, n = found, max(n - 1, 2)
                elif n >= len(current):
                    self.minimal = True
                    break
                else:
                    n = min(len(current), 2 * n)
            self.say(f"  ddmin: {len(current)} ops ({self.runs} candidate runs so far)")
            self.save()
        if len(current) == 1 and not self.out_of_time():
            self.minimal = True
        return current


def ops_table(ops: list[Op], keep: Sequence[int]) -> list[dict[str, Any]]:
    """The reduced graph op by op: type, name, inputs (graph inputs where a producer was cut away)."""
    kept = set(keep)
    produced_by = {t: o for o in ops for t in o.outputs}
    rows = []
    for i in sorted(kept):
        o = ops[i]
        ins = []
        for t in o.inputs:
            p = produced_by.get(t)
            ins.append(
                f"{t} (trainable)"
                if p and p.kind == "TRAINABLE"
                else f"{t} (constant)"
                if p and p.kind == "CONST"
                else t
                if p and p.index in kept
                else f"{t} (input: CPU value)"
            )
        kind = f"{o.kind} {o.detail}" if o.detail else o.kind
        rows.append({"index": i, "type": kind, "name": o.name, "inputs": ins, "outputs": list(o.outputs)})
    return rows


def load_graph_dir(path: Path) -> Path:
    if not (path / "graph.mnn").is_file() or not (path / "inputs" / "manifest.tsv").is_file():
        raise ConfigError(
            f"{path} is not a graph directory (graph.mnn and inputs/manifest.tsv)",
            hint="a graph saved by the driver's --save-graph, or by mnn_graph cut",
        )
    return path
