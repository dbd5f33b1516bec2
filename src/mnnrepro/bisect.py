"""``mnnrepro bisect``: the first commit between two refs where the verdict of one cell changes.

The candidates are ``git rev-list --first-parent old..new``: the mainline states between the two ends, oldest
first. MNN lands its work as single (squashed) commits on the mainline, so every candidate is a state that
really was a tip; side-branch commits of merges are never tested (they are often states nobody built). On that
linear list the search is a binary search, so about log2(n) builds instead of n: ~7 for the ~100 commits
of a minor release. The verdict is a string (REPRODUCED, FIXED, FAIL, ...); a candidate is "changed" when its
verdict differs from the verdict at the older end. Which end is older is read from the history, so
``--good``/``--bad`` may be given either way round: a regression (good older) or a fix (good newer).

A candidate that cannot be exported, configured or built is skipped (``git bisect skip``): the next candidate
nearest to the middle is tried instead; when only skipped candidates separate the last unchanged commit from
the first changed one, all of them are reported. Every step is written to a state file in the cache, keyed
by repository, range and cell, and read back on start: an interrupted bisect resumes where it stopped.

Each step exports its commit with ``git archive`` into the source cache (source.import_from_git; a bare
repository is enough, no checkout) and builds only the core, the driver and the plugin of the mode under
test, through the same content-keyed builder and ccache as every session, so nearby commits hit the cache.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fixtures, prepare, source
from .cells import Cell, run_cell
from .errors import EXIT_MISMATCH, BuildError, ConfigError, MnnReproError, SourceError
from .judge import OFF_GPU, change_words, judge
from .runner import CommandResult, host_command
from .settings import Settings
from .signature import SIGNAL_ONLY
from .workloads.ops import judge as opjudge
from .workloads.ops import optest
from .workloads.ops import session as opsession
from .workloads.reduce import search as reduce
from .workloads.reduce import session as redsession
from .workloads.train import workload as train

STATE_FORMAT = 1
MODES = {"image": "vulkan-image", "buffer": "vulkan-buffer"}
DEFAULT_STEPS = 3


class BisectError(MnnReproError):
    exit_code = 2
    title = "bisect"


@dataclass(frozen=True)
class Outcome:
    """What the oracle says about one commit. ``verdict`` None: it could not be built or run (skip it)."""

    verdict: str | None
    detail: str = ""


Oracle = Callable[[str], Outcome]


@dataclass
class Step:
    commit: str
    verdict: str | None  # None: skipped
    detail: str
    seconds: float
    at: str  # UTC time the step finished

    @property
    def label(self) -> str:
        return self.verdict or "SKIPPED"


@dataclass(frozen=True)
class Range:
    git_dir: Path
    old: str  # the older end (full commit id)
    new: str  # the newer end
    commits: tuple[str, ...]  # first-parent mainline old..new, oldest first, ``new`` last
    good_is_old: bool  # True: looking for a regression; False: looking for a fix

    @property
    def kind(self) -> str:
        return "regression" if self.good_is_old else "fix"


@dataclass
class Result:
    range: Range
    old_verdict: str
    new_verdict: str
    first: str | None  # the first changed commit, when one could be named
    candidates: tuple[str, ...]  # one commit, or the run of skipped ones that hide it (first changed last)
    steps: list[Step] = field(default_factory=list)

    @property
    def parent(self) -> str | None:
        if self.first is None:
            return None
        i = self.range.commits.index(self.first)
        return self.range.commits[i - 1] if i > 0 else self.range.old


# -- git --------------------------------------------------------------------------------------------------
GIT_LOCAL_TIMEOUT_S = 600.0  # rev-list/archive of a whole tree: local, but hundreds of MB
GIT_NETWORK_TIMEOUT_S = 1800.0  # a full-history clone of MNN


def git(git_dir: Path, *args: str, check: bool = True) -> CommandResult:
    return host_command(
        ["git", "--git-dir", str(git_dir), *args],
        timeout_s=GIT_LOCAL_TIMEOUT_S,
        what=f"git {' '.join(args)} in {git_dir}",
        check=check,
        error=SourceError,
    )


def repo_git_dir(path: Path) -> Path:
    """A worktree's .git, or the repository itself when it is bare."""
    path = path.expanduser().resolve()
    if (path / ".git").exists():
        return path / ".git"
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    raise BisectError(f"{path} is not a git repository", hint="--git-dir takes a clone of MNN (bare or not)")


def resolve_commit(git_dir: Path, ref: str) -> str:
    res = git(git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
    if res.returncode != 0 or not res.stdout.strip():
        raise BisectError(
            f"{ref!r} is not a commit in {git_dir}",
            hint="check the spelling: git --git-dir DIR tag -l / git --git-dir DIR log --oneline",
        )
    return res.stdout.strip()


def is_ancestor(git_dir: Path, a: str, b: str) -> bool:
    return git(git_dir, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0


def plan(git_dir: Path, good: str, bad: str) -> Range:
    """The candidates between ``good`` and ``bad``, whichever of them is older."""
    g, b = resolve_commit(git_dir, good), resolve_commit(git_dir, bad)
    if g == b:
        raise BisectError(f"--good {good} and --bad {bad} are the same commit {g[:12]}")
    if is_ancestor(git_dir, g, b):
        old, new, good_is_old = g, b, True
    elif is_ancestor(git_dir, b, g):
        old, new, good_is_old = b, g, False
    else:
        raise BisectError(
            f"--good {good} ({g[:12]}) is not an ancestor of --bad {bad} ({b[:12]}), nor the reverse",
            hint="bisect needs two commits on one line of history (e.g. two release tags of the same branch)",
        )
    commits = tuple(git(git_dir, "rev-list", "--first-parent", "--reverse", f"{old}..{new}").stdout.split())
    first_parent = git(git_dir, "rev-parse", f"{commits[0]}^1", check=False).stdout.strip() if commits else ""
    if first_parent != old:
        raise BisectError(
            f"{old[:12]} is an ancestor of {new[:12]} but not on its first-parent (mainline) history",
            hint="pick the older end on the mainline, e.g. the merge commit that brought it in",
        )
    return Range(git_dir, old, new, commits, good_is_old)


def describe(git_dir: Path, commit: str) -> tuple[str, str]:
    """(subject, committer date) of a commit."""
    out = git(git_dir, "log", "-1", "--format=%s%x00%cd", "--date=iso-strict", commit).stdout.strip()
    subject, _, date = out.partition("\0")
    return subject, date


# -- state ------------------------------------------------------------------------------------------------
def state_path(cache_dir: Path, rng: Range, cell: str) -> Path:
    key = json.dumps([str(rng.git_dir.resolve()), rng.old, rng.new, cell])
    return cache_dir / "bisect" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def load_state(path: Path, rng: Range, cell: str) -> dict[str, Step]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != STATE_FORMAT or [data["old"], data["new"], data["cell"]] != [rng.old, rng.new, cell]:
            return {}
        return {c: Step(**s) for c, s in data["steps"].items()}
    except (ValueError, KeyError, TypeError):
        return {}  # unreadable (e.g. written by a newer suite): start over; it is rewritten at the first step


def save_state(path: Path, rng: Range, cell: str, steps: dict[str, Step]) -> None:
    data = {
        "format": STATE_FORMAT,
        "repo": str(rng.git_dir),
        "old": rng.old,
        "new": rng.new,
        "cell": cell,
        "steps": {c: asdict(s) for c, s in steps.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # an interrupt never leaves half a state file


# -- the search -------------------------------------------------------------------------------------------
def bisect(rng: Range, oracle: Oracle, *, state_file: Path, cell: str, say: Callable[[str], None] = print) -> Result:
    steps = load_state(state_file, rng, cell)
    if steps:
        say(f"resuming from {state_file}: {len(steps)} step(s) already recorded")
    done: list[Step] = []

    def test(commit: str, what: str) -> Step:
        step = steps.get(commit)
        if step is not None:
            say(f"  {what} {commit[:12]}: {step.label} (recorded {step.at}, {step.seconds:.0f}s) {step.detail}")
        else:
            say(f"  {what} {commit[:12]}: testing ...")
            t0 = time.monotonic()
            outcome = oracle(commit)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            step = Step(commit, outcome.verdict, outcome.detail, round(time.monotonic() - t0, 1), stamp)
            steps[commit] = step
            save_state(state_file, rng, cell, steps)
            say(f"  {what} {commit[:12]}: {step.label} ({step.seconds:.0f}s) {step.detail}")
        done.append(step)
        return step

    n = len(rng.commits)
    say(f"bisect ({rng.kind}) {rng.old[:12]}..{rng.new[:12]}: {n} first-parent commit(s), cell {cell}")
    ends = {}
    for commit, name in ((rng.old, "older end"), (rng.new, "newer end")):
        step = test(commit, name)
        if step.verdict is None:
            raise BisectError(
                f"the {name} {commit[:12]} could not be built or run, or gave no GPU verdict: {step.detail}",
                hint="both ends need a verdict; pick ends that build (or delete the state file to retry: "
                f"{state_file})",
            )
        ends[name] = step.verdict
    old_v, new_v = ends["older end"], ends["newer end"]
    if old_v == new_v:
        raise BisectError(
            f"the verdict is {old_v} at both ends ({rng.old[:12]} and {rng.new[:12]}): nothing to bisect",
            hint="pick ends whose verdicts differ (check each with one bisect step, or `run --ref`)",
        )
    # Invariant: index lo (-1 = the older end) has the older end's verdict; index hi has another one.
    lo, hi = -1, n - 1
    skipped: set[int] = set()
    count = 0
    while hi - lo > 1:
        mid = _pick(lo, hi, skipped)
        if mid is None:
            break
        count += 1
        step = test(rng.commits[mid], f"step {count} [{hi - lo - 1} left]")
        if step.verdict is None:
            skipped.add(mid)
        elif step.verdict == old_v:
            lo = mid
        else:
            hi = mid
    candidates = rng.commits[lo + 1 : hi + 1]
    first = rng.commits[hi] if hi - lo == 1 else None
    return Result(rng, old_v, steps[rng.commits[hi]].verdict or "", first, candidates, done)


def _pick(lo: int, hi: int, skipped: set[int]) -> int | None:
    """The untested, unskipped index strictly between lo and hi nearest to the middle."""
    mid = (lo + hi) // 2
    for d in range(hi - lo):
        for i in (mid - d, mid + d):
            if lo < i < hi and i not in skipped:
                return i
    return None


FALLBACK = reduce.FALLBACK  # a commit where the reduced op ran on the CPU: neither REPRODUCED nor a fix


def report(result: Result, say: Callable[[str], None] = print, *, signal_only: bool = False) -> int:
    rng = result.range
    say("")
    say(f"steps ({len(result.steps)}): commit, verdict, seconds")
    for s in result.steps:
        say(f"  {s.commit[:12]}  {s.label:<16} {s.seconds:>7.1f}s  {s.detail}")
    say("")
    if result.first is None:
        say(
            f"could not name one commit: only skipped commits separate {result.old_verdict} from "
            f"{result.new_verdict}; the first changed commit is one of:"
        )
        for c in result.candidates:
            subject, date = describe(rng.git_dir, c)
            say(f"  {c}  {date}  {subject}")
        return EXIT_MISMATCH
    subject, date = describe(rng.git_dir, result.first)
    parent = result.parent or ""
    say(f"{change_words(result.old_verdict, result.new_verdict, rng.good_is_old)}: {result.first}")
    say(f"  subject: {subject}")
    say(f"  date:    {date}")
    say(f"  verdict: {result.new_verdict}; its parent {parent[:12]}: {result.old_verdict}")
    if result.new_verdict in OFF_GPU:
        say(f"  {result.new_verdict}: the op runs on the CPU from this commit on; the GPU kernel is not fixed")
    if signal_only:
        say(f"  {SIGNAL_ONLY} (no gdb): crashes were not held to the crash signature")
    return 0


# -- the MNN oracle ---------------------------------------------------------------------------------------
def expectation_for(matrix: Any, variant: str, icd_name: str) -> Any:
    """The row a bisected cell is judged against, whatever the commit: the known bug's row for this variant
    (image: the 'reproduce' row of alibaba/MNN#3129, so REPRODUCED means that crash and that signature;
    buffer: its 'fixed' row), else the first row for the variant."""
    rows = [
        r
        for r in matrix.expectations
        if fnmatch.fnmatchcase(variant, r.variant) and fnmatch.fnmatchcase(icd_name, r.icd)
    ]
    for r in rows:
        if r.bug:
            return r
    return rows[0] if rows else None


class MnnOracle:
    """Builds one commit (core, driver, the mode's plugin) and runs its cell; the CPU cell only when the GPU
    cell trained (it is then the baseline the GPU losses are compared with)."""

    def __init__(
        self, git_dir: Path, variant: str, settings: Settings, results: Path, say: Callable[[str], None]
    ) -> None:

        self.git_dir = git_dir
        self.variant = variant
        self.icd_name = settings.icds[0]
        # Commits come from the source cache (imported by _tree), never cloned by the preparation.
        self.settings = replace(settings, clone=False)
        self.results = results
        self.say = say
        self.matrix = fixtures.load_matrix()
        # A crash judged without gdb (none where the runner runs, or --no-gdb): every report says so.
        self.signal_only = not settings.gdb

    def _tree(self, commit: str) -> Any:

        cached = self.settings.cache_dir / "src" / commit
        if (cached / source.PROVENANCE).is_file():
            return source.resolve(commit, source=None, cache_dir=self.settings.cache_dir, git_url="", allow_clone=False)
        if cached.exists():  # a leftover without provenance: not ours to trust
            shutil.rmtree(cached)
        return source.import_from_git(self.git_dir, commit, self.settings.cache_dir)

    def _prepare(self, commit: str) -> prepare.Prepared | Outcome:
        """The commit's tree and build (the one preparation step: a commit the matrix pins gets its compatibility
        measures there), or the Outcome that skips the commit when it cannot be exported or built."""
        try:
            self._tree(commit)
        except SourceError as exc:
            return Outcome(None, f"source: {exc.message}")
        try:
            return prepare.prepare(commit, (self.variant,), self.settings, self.matrix, self.say)
        except BuildError as exc:
            return Outcome(None, "does not build: " + exc.message.splitlines()[0][:200])

    def __call__(self, commit: str) -> Outcome:
        prepared = self._prepare(commit)
        if isinstance(prepared, Outcome):
            return prepared
        self.signal_only = self.signal_only or prepared.gdb_path is None
        built = prepared.built.build_s
        checks = dict(self.matrix.checks)
        expectation = expectation_for(self.matrix, self.variant, self.icd_name)
        known = tuple(r for r in self.matrix.expectations if r.outcome == "reproduce")
        step_dir = self.results / "steps" / commit[:12]
        workload = train.workload_of(self.matrix, self.settings)
        steps = workload.steps

        def run(variant: str, icd_name: str) -> Any:
            cell = Cell(commit[:12], variant, icd_name)
            return run_cell(
                cell,
                driver=prepared.built.driver,
                plugin=prepared.built.plugins.get(variant),
                icd=prepared.icds.get(icd_name),
                workload=workload,
                timeout_s=prepared.timeout_for(cell.backend),
                runner=prepared.built.runner,
                result_dir=step_dir / cell.dirname,
                use_gdb=prepared.gdb_path is not None,
                gdb_path=prepared.gdb_path,
            )

        t_run = time.monotonic()
        gpu = run(self.variant, self.icd_name)
        if gpu.completed.returncode != 0 or gpu.completed.timed_out:
            v = judge(gpu, expectation, steps=steps, checks=checks, baseline=None, known_bugs=known)
            return Outcome(v.verdict, f"build {built:.0f}s, run {time.monotonic() - t_run:.0f}s; {v.reason}")
        cpu = run("cpu", "-")
        # The judge holds a short run to the CPU run of the same commit and workload (baseline_checks).
        cpu_v = judge(cpu, None, steps=steps, checks=checks, baseline=None)
        v = judge(
            gpu,
            expectation,
            steps=steps,
            checks=checks,
            baseline=cpu.record,
            known_bugs=known,
            baseline_checks=cpu_v.checks,
        )
        return Outcome(v.verdict, f"build {built:.0f}s, run {time.monotonic() - t_run:.0f}s; {v.reason}")


class ReproOracle(MnnOracle):
    """A reduced reproducer as the workload (``bisect --repro DIR``, DIR a reduce run's results): at each commit the
    same preparation (core, driver with mnn_graph, the mode's plugin), then the reduced graph on the backend,
    held to the reduction's target. REPRODUCED: it fails that way (the same signal, or outputs beyond the same
    limits); PASS: it runs on the backend and matches the CPU's values; FALLBACK: it ran, but the reduced op(s)
    ran on the CPU (a distinct verdict, so the change is found and named "the op leaves the GPU", never "fixed");
    anything else (NOT-EXERCISED, another failure) is no verdict, and the commit is skipped, never counted on
    either side."""

    def __init__(
        self, git_dir: Path, variant: str, settings: Settings, results: Path, say: Callable[[str], None], repro: Path
    ) -> None:
        super().__init__(git_dir, variant, settings, results, say)
        self.repro = repro
        self.summary = json.loads((repro / "summary.json").read_text())
        t = self.summary.get("target") or {}
        if t.get("kind") == "vuid":
            # Its trials ran under the validation layer; a bisect trial runs without it, so a VUID would read as
            # "fixed" at every commit (issue 25): refused before any build.
            raise ConfigError(
                f"{repro}: a `reduce --vuid` result ({t.get('vuid', 'a VUID')}) cannot be bisected yet: "
                "bisect's trials run without the validation layer",
                hint="bisect --repro takes a crash or wrong-value reduction",
            )
        self.target = reduce.Target(
            str(t.get("kind", "crash")), str(t.get("signal", "")), tuple(t.get("signature") or ())
        )
        self.kinds = reduce.kinds_under_test(self.summary.get("ops") or [])
        # A reduction judged by its signal alone has no signature to hold a commit's crash to.
        self.signal_only = self.target.kind == "crash" and (not settings.gdb or not self.target.signature)

    def __call__(self, commit: str) -> Outcome:
        prepared = self._prepare(commit)
        if isinstance(prepared, Outcome):
            return prepared
        step_dir = self.results / "steps" / commit[:12]
        step_dir.mkdir(parents=True, exist_ok=True)
        spec = redsession.spec_for(prepared, self.variant, self.icd_name, self.settings, self.repro / "repro", step_dir)
        spec.precision = str(self.summary.get("precision") or "high")
        lim = self.summary.get("limits") or {}
        spec.limits = (
            float(lim.get("max_rel", spec.limits[0])),
            float(lim.get("min_cosine", spec.limits[1])),
            float(lim.get("max_nmse", spec.limits[2])),
        )
        t_run = time.monotonic()
        got = redsession.verify(
            spec,
            self.target,
            self.repro / "repro",
            step_dir,
            self.say,
            values=self.repro / "values",
            cpu=False,
            kinds=self.kinds,
        )["backend"]
        if self.target.kind == "crash" and not prepared.gdb_path:
            self.signal_only = True
        crash: reduce.Trial | None = None
        if got == "fails" and self.target.kind == "crash" and self.target.signature and prepared.gdb_path:
            try:
                crash = self._under_gdb(spec, str(prepared.gdb_path), step_dir)
            except reduce.ReduceError as exc:
                return Outcome(None, f"the crash under gdb could not be judged: {exc.message}")
        built = f"build {prepared.built.build_s:.0f}s, run {time.monotonic() - t_run:.0f}s"
        if crash is not None and not crash.interesting:  # the same signal elsewhere: another bug, no verdict
            if not crash.outcome.startswith("SIG"):
                return Outcome(None, f"{built}; the reduced graph did not crash again under gdb ({crash.outcome})")
            frames = " < ".join(crash.signature) or "(no MNN frame)"
            return Outcome(None, f"{built}; the reduced graph crashes otherwise: {crash.outcome} in {frames}")
        if got == "fails":
            how = "" if crash is not None or self.target.kind != "crash" else f" ({SIGNAL_ONLY}: no gdb)"
            return Outcome("REPRODUCED", f"{built}; the reduced graph: {self.target.describe()}{how}")
        if got.startswith(FALLBACK):
            where = got[len(FALLBACK) :].strip(" ()")
            return Outcome(FALLBACK, f"{built}; the reduced op left the GPU ({where}): it runs on the CPU, not fixed")
        if got == "passes":
            return Outcome("PASS", f"{built}; the reduced graph runs on the backend and matches the CPU's values")
        return Outcome(None, f"{built}; the reduced graph: {got}")

    def _under_gdb(self, spec: reduce.Spec, gdb: str, step_dir: Path) -> reduce.Trial:
        """The crash once more under gdb, judged the way the reducer judged its candidates (the same signal and
        the same top frames inside MNN): a commit that crashes elsewhere is not the bug the reduction found."""
        work = step_dir / "signature"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copytree(self.repro / "values", work / "values")  # the outputs are held to the CPU's values
        checker = reduce.Reducer(replace(spec, work=work, gdb=gdb), budget_s=spec.timeout_s + 60, say=self.say)
        checker.prepare()
        checker.target = self.target
        return checker.judge([tuple(checker.op_indices())])[0]


class OptestOracle(MnnOracle):
    """One of MNN's own tests as the workload (``bisect --test NAME``, issue 27): at each commit the same
    preparation, ``mnn_optest`` built as the ops session builds it, then the test on the CPU and on the cell, judged
    as the ops session judges it (opsession._cell: beside the CPU result, device rows). PASS/UNEXPECTED-PASS -> PASS;
    FAIL, CRASH, TIMEOUT are verdicts; any status that is no GPU verdict (FALLBACK: the op ran on the CPU;
    NO-GPU-WORK, NOT-EXERCISED, CPU-FAIL, FLAKE, a SKIP row, not built, interrupted) skips the commit, as one that
    does not build is skipped: it is never counted as unchanged or changed."""

    def __init__(
        self, git_dir: Path, variant: str, settings: Settings, results: Path, say: Callable[[str], None], test: str
    ) -> None:
        super().__init__(git_dir, variant, settings, results, say)
        self.test = test
        self.expectations = opjudge.load_expectations()

    def __call__(self, commit: str) -> Outcome:
        prepared = self._prepare(commit)
        if isinstance(prepared, Outcome):
            return prepared
        try:
            binary = optest.build_binary(prepared.built.builder, prepared.built.core)
        except BuildError as exc:
            return Outcome(None, "mnn_optest does not build: " + exc.message.splitlines()[0][:200])
        if self.test not in binary.tests:
            return Outcome(None, f"{self.test} is not built at this commit")
        t_run = time.monotonic()
        step_dir = self.results / "steps" / commit[:12]
        cpu_outcomes: dict[str, optest.Outcome] = {}
        status, reason = "", ""
        for variant, icd_name in (("cpu", "-"), (self.variant, self.icd_name)):
            cell = Cell(commit[:12], variant, icd_name)
            judged, ran, _ = opsession._cell(
                cell, prepared, binary, [self.test], {}, self.expectations, cpu_outcomes, self.settings, step_dir,
                self.say,
            )  # fmt: skip
            cpu_outcomes = cpu_outcomes or ran
            status, reason = (judged[0].status, judged[0].reason) if judged else ("", "not run")
        built = f"build {prepared.built.build_s:.0f}s, run {time.monotonic() - t_run:.0f}s"
        if status in ("PASS", "UNEXPECTED-PASS"):
            return Outcome("PASS", f"{built}; {self.test} passes on the backend")
        if status in opjudge.FAILING:
            return Outcome(status, f"{built}; {self.test}: {status} {reason}".rstrip())
        # No GPU verdict (FALLBACK: the op under test ran on the CPU, NO-GPU-WORK, NOT-EXERCISED, CPU-FAIL, ...).
        return Outcome(None, f"{built}; {self.test}: {status or 'no result'}, no GPU verdict {reason}".rstrip())


def default_git_dir(settings: Settings, say: Callable[[str], None]) -> Path:
    """--git-dir, else settings.git_url when it is a local repository (MNNREPRO_GIT_URL=/path/to/mirror),
    else a bare clone of git_url in the cache (fetched again on every bisect, so new refs are known)."""
    url = settings.git_url
    local = Path(url[len("file://") :] if url.startswith("file://") else url).expanduser()
    if local.is_dir():
        return repo_git_dir(local)
    dest = settings.cache_dir / "git" / (hashlib.sha256(url.encode()).hexdigest()[:12] + ".git")
    hint = "pass --git-dir with a local clone of MNN"
    if (dest / "HEAD").is_file():
        say(f"updating {dest} from {url}")
        argv = ["git", "--git-dir", str(dest), "fetch", "-q", "--tags", url, "+refs/heads/*:refs/heads/*"]
        host_command(
            argv, timeout_s=GIT_NETWORK_TIMEOUT_S, what=f"fetch {url}", retries=2, say=say, hint=hint, error=SourceError
        )
        return dest
    say(f"cloning {url} (bare, full history) into {dest}; pass --git-dir to use an existing clone")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:  # cloned aside, then moved in: an interrupted clone leaves nothing that looks like a repository
        host_command(
            ["git", "clone", "-q", "--bare", url, str(staging / "repo")],
            timeout_s=GIT_NETWORK_TIMEOUT_S,
            what=f"clone {url}",
            retries=2,
            say=say,
            hint=hint,
            error=SourceError,
        )
        os.replace(staging / "repo", dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--good", required=True, help="a ref where the cell behaves as wanted (older: find a regression)")
    p.add_argument("--bad", required=True, help="a ref where it does not (older: find the fix)")
    p.add_argument("--mode", choices=sorted(MODES), default="image", help="Vulkan mode of the cell (default image)")
    p.add_argument("--git-dir", dest="git_dir", type=Path, help="git repository of MNN, bare ok (default: git_url)")
    p.add_argument("--git-url", dest="git_url", help="repository to clone when there is no --git-dir (or a path)")
    p.add_argument("--icd", dest="icds", default="lavapipe", help="Vulkan ICD of the cell (default lavapipe)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    p.add_argument("--runner", choices=["auto", "host", "docker"], help="default auto: docker if an engine answers")
    p.add_argument("--cache-dir", dest="cache_dir", help="source/build/ccache cache, and the state files")
    p.add_argument("--results-dir", dest="results_dir")
    p.add_argument("--timeout", dest="timeout_s", type=int, help="seconds per driver run (default: matrix)")
    p.add_argument("--jobs", type=int, help="parallel compile jobs (default: ninja's)")
    p.add_argument("--no-gdb", dest="gdb", action="store_const", const=False, help="no backtrace on a crash")
    p.add_argument("--fresh", action="store_true", help="ignore (and replace) the recorded steps of this bisect")
    p.add_argument(
        "--repro",
        type=Path,
        help="a reduce run's results directory: bisect with its reduced graph instead of MNIST training",
    )
    p.add_argument("--test", help="one of MNN's own tests (mnn_optest NAME) as the workload instead of MNIST training")


def _test_cell(variant: str, settings: Settings, test: str | None, repro: Path | None) -> str:
    """The state file's cell of ``--test NAME`` (how a crash is judged is part of it, as for --repro), or ""."""
    if test and repro is not None:
        raise BisectError("--test and --repro are two workloads: give one")
    # "gpu-verdicts": steps recorded when FALLBACK still counted as a verdict are not reused.
    judged = f"{'signature' if settings.gdb else 'signal'}/gpu-verdicts"
    return f"{variant}/{settings.icds[0]}/optest={test}/{judged}" if test else ""


def main(args: argparse.Namespace, settings: Settings, *, say: Callable[[str], None] = print) -> int:
    """The ``bisect`` subcommand, with the MNN build-and-run oracle."""

    if len(settings.icds) != 1:
        raise BisectError(f"bisect judges one cell: give one --icd, not {','.join(settings.icds)}")
    git_dir = repo_git_dir(args.git_dir) if args.git_dir else default_git_dir(settings, say)
    rng = plan(git_dir, args.good, args.bad)
    variant = MODES[args.mode]
    repro = getattr(args, "repro", None)
    if repro is not None:
        if not (repro / "summary.json").is_file() or not (repro / "repro" / "graph.mnn").is_file():
            raise BisectError(f"--repro {repro}: not the results directory of a finished reduce run")
        variant = str(json.loads((repro / "summary.json").read_text()).get("variant") or variant)
    settings, _ = prepare.preflight_for(settings, (variant,), say)  # before any commit is built
    test = getattr(args, "test", None)
    cell = _test_cell(variant, settings, test, repro) or f"{variant}/{settings.icds[0]}/steps={settings.steps}"
    if repro is not None:
        digest = hashlib.sha256((repro / "repro" / "graph.mnn").read_bytes()).hexdigest()[:12]
        # How a crash is judged is part of the cell: steps judged by the signal alone (no gdb) are not reused by
        # a run that holds them to the signature, nor the other way round.
        # And steps recorded before a run's op placement was judged (a fallback to the CPU recorded as PASS) are not
        # reused: the cell names that too.
        judged = f"{'signature' if settings.gdb else 'signal'}/placement"
        cell = f"{variant}/{settings.icds[0]}/repro={digest}/{judged}"
    results = prepare.results_dir(settings, "bisect")
    log = results / "bisect.log"

    def tee(line: str) -> None:
        say(line)
        with open(log, "a") as handle:
            handle.write(line + "\n")

    state = state_path(settings.cache_dir, rng, cell)
    if args.fresh:
        state.unlink(missing_ok=True)
    tee(f"mnnrepro bisect: {git_dir}, good {args.good}, bad {args.bad}, results in {results}, state {state}")
    t0 = time.monotonic()
    oracle = (
        ReproOracle(git_dir, variant, settings, results, tee, repro)
        if repro is not None
        else OptestOracle(git_dir, variant, settings, results, tee, test)
        if test
        else MnnOracle(git_dir, variant, settings, results, tee)
    )
    result = bisect(rng, oracle, state_file=state, cell=cell, say=tee)
    code = report(result, tee, signal_only=oracle.signal_only)
    change = change_words(result.old_verdict, result.new_verdict, rng.good_is_old) if result.first else ""
    tee(f"total {time.monotonic() - t0:.0f}s (steps recorded earlier are not counted again)")
    subject, date = describe(git_dir, result.first) if result.first else ("", "")
    older, newer = (args.good, args.bad) if rng.good_is_old else (args.bad, args.good)
    (results / "bisect.json").write_text(
        json.dumps(
            {
                "range": {
                    "git_dir": str(git_dir),
                    "old": rng.old,
                    "new": rng.new,
                    "kind": rng.kind,
                    "old_ref": older,
                    "new_ref": newer,
                    "commits": len(rng.commits),
                },
                "subject": subject,
                "date": date,
                "seconds": round(time.monotonic() - t0, 1),
                "cell": cell,
                "old_verdict": result.old_verdict,
                "new_verdict": result.new_verdict,
                "first": result.first,
                "change": change,
                "judged_by": f"{SIGNAL_ONLY} (no gdb)" if oracle.signal_only else "signal and crash signature",
                "parent": result.parent,
                "candidates": list(result.candidates),
                "steps": [asdict(s) for s in result.steps],
            },
            indent=1,
        )
    )
    return code
