"""bisect.py on a tiny synthetic git history with a fake verdict oracle: no MNN, no build, no docker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import bisect, cli, fixtures, judge
from mnnrepro.bisect import BisectError, Outcome
from mnnrepro.errors import ConfigError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


N = 12  # commits c0..c11 on main


@pytest.fixture
def repo(tmp_path: Path, isolated_git: None) -> Path:
    """main: c0 (tag old) .. c11 (tag new), one file changed per commit; a side branch off c3 (tag side)."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for i in range(N):
        (path / "f.txt").write_text(f"{i}\n")
        git(path, "add", "f.txt")
        git(path, "commit", "-q", "-m", f"c{i}")
        git(path, "tag", f"c{i}")
    git(path, "tag", "old", "c0")
    git(path, "tag", "new", f"c{N - 1}")
    git(path, "checkout", "-q", "-b", "side", "c3")
    (path / "g.txt").write_text("side\n")
    git(path, "add", "g.txt")
    git(path, "commit", "-q", "-m", "side")
    git(path, "tag", "side")
    git(path, "checkout", "-q", "main")
    return path


def sha(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref)


class FakeOracle:
    """Verdict per commit index: ``before`` below ``change``, ``after`` from it on; ``skip`` indices do not build."""

    def __init__(
        self, repo: Path, change: int, before: str = "REPRODUCED", after: str = "FIXED", skip: tuple[int, ...] = ()
    ) -> None:
        self.index = {sha(repo, f"c{i}"): i for i in range(N)}
        self.change, self.before, self.after, self.skip = change, before, after, set(skip)
        self.calls: list[int] = []

    def __call__(self, commit: str) -> Outcome:
        i = self.index[commit]
        self.calls.append(i)
        if i in self.skip:
            return Outcome(None, "does not build")
        return Outcome(self.after if i >= self.change else self.before, f"c{i}")


def run(repo: Path, tmp_path: Path, oracle: Callable[[str], Outcome], good: str, bad: str) -> bisect.Result:
    rng = bisect.plan(repo / ".git", good, bad)
    state = bisect.state_path(tmp_path / "cache", rng, "cell")
    return bisect.bisect(rng, oracle, state_file=state, cell="cell", say=lambda _: None)


@pytest.mark.parametrize("change", [1, 5, 7, N - 1])
def test_finds_first_changed_commit(repo: Path, tmp_path: Path, change: int) -> None:
    oracle = FakeOracle(repo, change)
    result = run(repo, tmp_path, oracle, "old", "new")
    assert result.first == sha(repo, f"c{change}")
    assert result.parent == sha(repo, f"c{change - 1}")
    assert (result.old_verdict, result.new_verdict) == ("REPRODUCED", "FIXED")
    assert result.range.kind == "regression"
    assert len(oracle.calls) <= 2 + 4  # both ends + ceil(log2(11)) steps, not a linear scan
    assert sorted(set(oracle.calls)) == sorted(oracle.calls)  # no commit built twice


def test_reverse_direction_finds_the_fix(repo: Path, tmp_path: Path) -> None:
    # good = the newer end (fixed), bad = the older one (crashes): the first commit that is fixed.
    oracle = FakeOracle(repo, 6, before="REPRODUCED", after="FIXED")
    result = run(repo, tmp_path, oracle, "new", "old")
    assert result.range.kind == "fix"
    assert result.range.old == sha(repo, "old")
    assert result.first == sha(repo, "c6")
    assert result.new_verdict == "FIXED"


def test_unbuildable_commits_are_skipped(repo: Path, tmp_path: Path) -> None:
    # The middle commits do not build: bisect tries their neighbours and still names c7.
    oracle = FakeOracle(repo, 7, skip=(4, 5, 8))
    result = run(repo, tmp_path, oracle, "old", "new")
    assert result.first == sha(repo, "c7")
    assert {4, 5} & set(oracle.calls)
    assert any(s.verdict is None and s.label == "SKIPPED" for s in result.steps)


def test_skips_that_hide_the_change_are_all_reported(repo: Path, tmp_path: Path) -> None:
    oracle = FakeOracle(repo, 7, skip=(6,))
    result = run(repo, tmp_path, oracle, "old", "new")
    assert result.first is None
    assert result.candidates == (sha(repo, "c6"), sha(repo, "c7"))
    lines: list[str] = []
    assert bisect.report(result, lines.append) != 0
    assert any("c6" in line for line in lines) and any("c7" in line for line in lines)


def test_resume_from_state_file(repo: Path, tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    first = FakeOracle(repo, 7)

    def dies_after_three(commit: str) -> Outcome:
        if len(first.calls) == 3:
            raise Interrupted
        return first(commit)

    with pytest.raises(Interrupted):
        run(repo, tmp_path, dies_after_three, "old", "new")
    files = list((tmp_path / "cache" / "bisect").glob("*.json"))
    assert len(files) == 1
    assert len(json.loads(files[0].read_text())["steps"]) == 3
    second = FakeOracle(repo, 7)
    result = run(repo, tmp_path, second, "old", "new")
    assert result.first == sha(repo, "c7")
    assert not set(second.calls) & set(first.calls)  # recorded steps were not built again
    assert len(result.steps) == len(first.calls) + len(second.calls)


def test_state_is_keyed_by_cell_and_range(repo: Path, tmp_path: Path) -> None:
    rng = bisect.plan(repo / ".git", "old", "new")
    other = bisect.plan(repo / ".git", "c2", "new")
    cache = tmp_path / "cache"
    assert bisect.state_path(cache, rng, "a") != bisect.state_path(cache, rng, "b")
    assert bisect.state_path(cache, rng, "a") != bisect.state_path(cache, other, "a")
    # A state file of another cell at the same path is not trusted.
    path = bisect.state_path(cache, rng, "a")
    bisect.save_state(path, rng, "a", {rng.new: bisect.Step(rng.new, "FIXED", "", 1.0, "t")})
    assert bisect.load_state(path, rng, "a")
    assert bisect.load_state(path, rng, "b") == {}
    path.write_text("{not json")
    assert bisect.load_state(path, rng, "a") == {}


def test_works_from_a_bare_repository(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    rng = bisect.plan(bisect.repo_git_dir(bare), "old", "new")
    assert rng.commits[-1] == sha(repo, "new")
    assert len(rng.commits) == N - 1


def test_candidates_are_the_first_parent_mainline(repo: Path, tmp_path: Path) -> None:
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    rng = bisect.plan(repo / ".git", "old", "main")
    assert sha(repo, "side") not in rng.commits
    assert rng.commits[-1] == sha(repo, "main")
    assert len(rng.commits) == N  # c1..c11 and the merge


def test_unknown_ref(repo: Path) -> None:
    with pytest.raises(BisectError, match="nope"):
        bisect.plan(repo / ".git", "old", "nope")


def test_ends_not_on_one_line(repo: Path) -> None:
    with pytest.raises(BisectError, match="not an ancestor"):
        bisect.plan(repo / ".git", "side", "new")
    with pytest.raises(BisectError, match="same commit"):
        bisect.plan(repo / ".git", "old", "c0")


def test_same_verdict_at_both_ends(repo: Path, tmp_path: Path) -> None:
    oracle = FakeOracle(repo, N + 5)  # never changes
    with pytest.raises(BisectError, match="REPRODUCED at both ends") as info:
        run(repo, tmp_path, oracle, "old", "new")
    assert info.value.exit_code != 0
    assert oracle.calls == [0, N - 1]  # nothing built between the ends


def test_unbuildable_end_is_an_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(BisectError, match="could not be built"):
        run(repo, tmp_path, FakeOracle(repo, 5, skip=(N - 1,)), "old", "new")


def test_cli_exits_non_zero_on_bad_input(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--git-dir", str(repo), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r")]
    assert cli.main(["bisect", *common, "--good", "old", "--bad", "nope"]) == BisectError.exit_code != 0
    assert "'nope' is not a commit" in capsys.readouterr().err
    assert cli.main(["bisect", *common, "--good", "side", "--bad", "new"]) != 0
    assert cli.main(["bisect", *common, "--good", "old", "--bad", "new", "--icd", "lavapipe,swiftshader"]) != 0


def test_report_names_commit_subject_and_date(repo: Path, tmp_path: Path) -> None:
    result = run(repo, tmp_path, FakeOracle(repo, 4), "old", "new")
    lines: list[str] = []
    assert bisect.report(result, lines.append) == 0
    text = "\n".join(lines)
    assert sha(repo, "c4") in text
    assert "subject: c4" in text
    assert "2024-01-01" in text
    assert f"its parent {sha(repo, 'c3')[:12]}: REPRODUCED" in text


def test_image_cell_is_judged_against_the_known_bug_row() -> None:
    matrix = fixtures.load_matrix()
    image = bisect.expectation_for(matrix, "vulkan-image", "lavapipe")
    assert image.outcome == "reproduce" and image.bug == "alibaba/MNN#3129" and image.step == 0
    buffer = bisect.expectation_for(matrix, "vulkan-buffer", "swiftshader")
    assert buffer.outcome == "fixed"


def test_compat_flags_follow_the_pinned_commit() -> None:
    """A bisect step names a full commit: the matrix entry that pins it (with its compatibility measures) is
    found by the commit, so the one preparation step builds it as the named ref is built."""
    matrix = fixtures.load_matrix()
    assert matrix.ref_info("47027e10992473eb4da4c536542fbefd6e5fcc1c").compat_cxx_flags == ("-include", "cstring")
    assert matrix.ref_info("47027e10992473eb4da4c536542fbefd6e5fcc1c").name == "47027e10"
    assert matrix.ref_info("5047919a1ae594d090ee54c7ea3403a9dee8cad4").compat_cxx_flags == ()
    assert matrix.ref_info("0" * 40).compat_cxx_flags == ()
    assert matrix.ref_info("0" * 40).name == "0" * 40


CRASHING_DRIVER = """#!/bin/sh
out=""; backend=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; [ "$prev" = "--backend" ] && backend="$a"; prev="$a"; done
printf '{"v": 1, "event": "start", "t": 0}\\n' > "$out/events.jsonl"
printf '{"v": 1, "event": "backend", "t": 0.1, "requested": "%s", "active": "%s", "exercised": true}\\n' \
  "$backend" "$backend" >> "$out/events.jsonl"
printf '{"v": 1, "event": "stage", "t": 0.2, "name": "sgd_step", "step": 0}\\n' >> "$out/events.jsonl"
kill -SEGV $$
"""


def test_the_mnn_oracle_runs_the_prepared_commit_and_judges_its_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MnnOracle on the one preparation step (prepare.prepare), faked: the commit's cell runs the prepared driver
    with the prepared ICD and time limit, and a crash at #3129's stage is judged against its row."""
    from mnnrepro import prepare
    from mnnrepro.icd import Icd
    from mnnrepro.runner import HostRunner
    from mnnrepro.settings import Settings

    driver = tmp_path / "mnist_driver"
    driver.write_text(CRASHING_DRIVER)
    driver.chmod(0o755)
    asked: list[tuple[str, tuple[str, ...]]] = []

    def fake_prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: object, say: object) -> object:
        asked.append((ref, names))
        unused: Any = None  # the oracle reads only the runner, driver, plugins and build time of the build
        built = prepare.Built(
            ref, unused, unused, HostRunner(), unused, unused, driver, {"vulkan-image": tmp_path / "p.so"}, 1.0
        )
        icd = Icd("lavapipe", tmp_path / "lvp.json", {"VK_ICD_FILENAMES": str(tmp_path / "lvp.json")})
        return prepare.Prepared(built, None, {"lavapipe": icd}, {"vulkan": 30.0})

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",), gdb=False)
    oracle = bisect.MnnOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None)
    monkeypatch.setattr(oracle, "_tree", lambda commit: None)
    outcome = oracle("ab" * 20)
    assert asked == [("ab" * 20, ("vulkan-image",))]
    assert outcome.verdict == "REPRODUCED", outcome.detail
    assert oracle.settings.clone is False  # commits come from the source cache, never cloned
    cell_json = json.loads(
        (tmp_path / "results" / "steps" / ("ab" * 6) / "abababababab__vulkan-image__lavapipe" / "cell.json").read_text()
    )
    assert cell_json["timeout_s"] == 30.0 and cell_json["cell_env"]["VK_ICD_FILENAMES"] == str(tmp_path / "lvp.json")


FAKE_GRAPH_TOOL = """#!/bin/sh
# mnn_graph: info lists one input and one op; cut copies; run crashes on vulkan at the "broken" and the "other"
# commits' builds (their plugin paths say which), passes elsewhere, recording where its ops ran (the `ops` event):
# the Deconvolution on the backend, except at the "declined" build, where Vulkan declines it and the CPU runs it
# (upstream's 39be21c56 at 3.6.0), and the "untraced" build, which records no placement.
cmd="$1"; out=""; backend=""; plugin=""
while [ $# -gt 0 ]; do
  case "$1" in --out) out="$2";; --backend) backend="$2";; --plugin) plugin="$2";; esac; shift
done
case "$cmd" in
  info) printf '0\\tINPUT\\tx\\t\\tx\\n1\\tDeconvolution\\td\\tx\\td\\n'; exit 0;;
  cut) mkdir -p "$out/inputs"; : > "$out/graph.mnn"; exit 0;;
esac
mkdir -p "$out"
case "$backend:$plugin" in vulkan:*broken*|vulkan:*other*) kill -SEGV $$;; vulkan:*dead*) exit 4;; esac
case "$plugin" in
  *declined*) by='{"cpu":{"Deconvolution":1},"vulkan":{"Raster":2}}';;
  *untraced*) exit 0;;
  *) by="{\\"$backend\\":{\\"Deconvolution\\":1}}";;
esac
printf '{"v":1,"event":"ops","by_backend":%s,"total":1}\\n' "$by" > "$out/events.jsonl"
exit 0
"""
# gdb -q -nx -batch -x SCRIPT --args PROGRAM...: runs it; on SIGSEGV writes crash.json with MNN frames (the #3129
# ones for the "broken" build, others for the "other" one) and exits 139, as gdb_capture.py does.
FAKE_GDB = """#!{python}
import json, os, subprocess, sys
argv = sys.argv[sys.argv.index("--args") + 1 :]
rc = subprocess.run(argv).returncode
if rc == -11:
    names = ["A::other", "B::elsewhere"] if any("other" in a for a in argv) else ["C::get", "D::Deconv", "E::create"]
    frames = [{{"function": n, "library": "/x/libMNN.so"}} for n in names]
    with open(os.path.join(os.environ["MNNREPRO_CRASH_DIR"], "crash.json"), "w") as f:
        json.dump({{"signal": "SIGSEGV", "frames": frames}}, f)
    sys.exit(139)
sys.exit(rc)
"""


def test_the_repro_oracle_bisects_with_the_reduced_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bisect --repro: each commit's build runs the reduced graph (mnn_graph beside the driver); the reduction's
    target (SIGSEGV) is REPRODUCED, a clean run PASS."""
    from mnnrepro import prepare
    from mnnrepro.icd import Icd
    from mnnrepro.runner import HostRunner
    from mnnrepro.settings import Settings

    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "mnn_graph"
    tool.write_text(FAKE_GRAPH_TOOL)
    tool.chmod(0o755)
    red = tmp_path / "reduced"
    (red / "repro").mkdir(parents=True)
    (red / "repro" / "graph.mnn").write_text("g")
    summary = {"variant": "vulkan-image", "target": {"kind": "crash", "signal": "SIGSEGV", "signature": []}}
    (red / "summary.json").write_text(json.dumps({**summary, "precision": "high"}))

    def fake_prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: object, say: object) -> object:
        unused: Any = None
        plugin = tmp_path / {"bb": "broken.so", "dd": "dead.so"}.get(ref[:2], "fixed.so")
        built = prepare.Built(
            ref,
            unused,
            unused,
            HostRunner(),
            unused,
            unused,
            tmp_path / "bin" / "mnist_driver",
            {names[0]: plugin},
            2.0,
        )
        icd = Icd("lavapipe", tmp_path / "lvp.json", {})
        return prepare.Prepared(built, None, {"lavapipe": icd}, {"vulkan": 30.0})

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",), gdb=False)
    oracle = bisect.ReproOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None, red)
    monkeypatch.setattr(oracle, "_tree", lambda commit: None)
    assert oracle("bb" * 20).verdict == "REPRODUCED"
    fixed = oracle("cc" * 20)
    assert fixed.verdict == "PASS" and "matches the CPU" in fixed.detail
    # The backend not really active at a commit: no verdict (skipped), never a PASS.
    dead = oracle("dd" * 20)
    assert dead.verdict is None and "NOT-EXERCISED" in dead.detail


def test_the_repro_oracle_holds_a_crash_to_the_reductions_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With gdb, a commit where the reduced graph crashes with the same signal but other frames is not the bug
    the reduction found: no verdict (skipped), never REPRODUCED."""
    from mnnrepro import prepare
    from mnnrepro.icd import Icd
    from mnnrepro.runner import HostRunner
    from mnnrepro.settings import Settings

    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "mnn_graph"
    tool.write_text(FAKE_GRAPH_TOOL)
    tool.chmod(0o755)
    gdb = tmp_path / "bin" / "gdb"
    gdb.write_text(FAKE_GDB.format(python=sys.executable))
    gdb.chmod(0o755)
    red = tmp_path / "reduced"
    (red / "repro" / "inputs").mkdir(parents=True)
    (red / "repro" / "graph.mnn").write_text("g")
    (red / "values").mkdir()
    (red / "values" / "manifest.tsv").write_text("")
    target = {"kind": "crash", "signal": "SIGSEGV", "signature": ["C::get", "D::Deconv", "E::create"]}
    (red / "summary.json").write_text(json.dumps({"variant": "vulkan-image", "target": target, "precision": "high"}))

    def fake_prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: object, say: object) -> object:
        unused: Any = None
        plugin = tmp_path / {"bb": "broken.so", "ee": "other.so"}.get(ref[:2], "fixed.so")
        built = prepare.Built(
            ref, unused, unused, HostRunner(), unused, unused, tmp_path / "bin" / "mnist_driver", {names[0]: plugin}, 2
        )
        icd = Icd("lavapipe", tmp_path / "lvp.json", {})
        return prepare.Prepared(built, str(gdb), {"lavapipe": icd}, {"vulkan": 30.0})

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",))
    oracle = bisect.ReproOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None, red)
    monkeypatch.setattr(oracle, "_tree", lambda commit: None)
    same = oracle("bb" * 20)
    assert same.verdict == "REPRODUCED" and "signal only" not in same.detail
    other = oracle("ee" * 20)
    assert other.verdict is None and "crashes otherwise: SIGSEGV in A::other < B::elsewhere" in other.detail
    assert oracle("cc" * 20).verdict == "PASS"


def _repro_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: dict[str, Any]) -> bisect.ReproOracle:
    """A ReproOracle over FAKE_GRAPH_TOOL, no gdb; the commit's first two hex digits pick its plugin (its build)."""
    from mnnrepro import prepare
    from mnnrepro.icd import Icd
    from mnnrepro.runner import HostRunner
    from mnnrepro.settings import Settings

    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "mnn_graph"
    tool.write_text(FAKE_GRAPH_TOOL)
    tool.chmod(0o755)
    red = tmp_path / "reduced"
    (red / "repro").mkdir(parents=True)
    (red / "repro" / "graph.mnn").write_text("g")
    ops = [{"index": 1, "type": "Deconvolution", "name": "d", "inputs": ["x"], "outputs": ["d"]}]
    summary = {"variant": "vulkan-image", "target": target, "precision": "high", "ops": ops}
    (red / "summary.json").write_text(json.dumps(summary))
    plugins = {"bb": "broken.so", "de": "declined.so", "ad": "untraced.so"}

    def fake_prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: object, say: object) -> object:
        unused: Any = None
        plugin = tmp_path / plugins.get(ref[:2], "fixed.so")
        built = prepare.Built(
            ref, unused, unused, HostRunner(), unused, unused, tmp_path / "bin" / "mnist_driver", {names[0]: plugin}, 2
        )
        icd = Icd("lavapipe", tmp_path / "lvp.json", {})
        return prepare.Prepared(built, None, {"lavapipe": icd}, {"vulkan": 30.0})

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",), gdb=False)
    oracle = bisect.ReproOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None, red)
    monkeypatch.setattr(oracle, "_tree", lambda commit: None)
    return oracle


def test_the_repro_oracle_calls_a_commit_where_the_op_runs_on_the_cpu_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """39be21c56 (3.6.0) declines #3129's Deconvolution on Vulkan: the reduced graph then runs, on the CPU. That is
    FALLBACK, a verdict of its own, never PASS; a run that recorded no placement proves nothing either."""
    oracle = _repro_oracle(tmp_path, monkeypatch, {"kind": "crash", "signal": "SIGSEGV", "signature": []})
    declined = oracle("de" * 20)
    assert declined.verdict == "FALLBACK" and "left the GPU (Deconvolution x1 on cpu)" in declined.detail
    untraced = oracle("ad" * 20)
    assert untraced.verdict == "FALLBACK" and "no op placement recorded" in untraced.detail
    assert oracle("cc" * 20).verdict == "PASS"  # the op ran on Vulkan and matched the CPU's values


def test_a_repro_bisect_without_gdb_says_it_judged_by_signal_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = {"kind": "crash", "signal": "SIGSEGV", "signature": ["C::get", "D::Deconv"]}
    oracle = _repro_oracle(tmp_path, monkeypatch, target)
    got = oracle("bb" * 20)
    assert got.verdict == "REPRODUCED" and "judged by signal only" in got.detail and oracle.signal_only


def test_the_report_names_the_commit_where_the_op_leaves_the_gpu_not_a_fix(repo: Path, tmp_path: Path) -> None:
    """REPRODUCED at 3.5.0, FALLBACK from 39be21c56 on: the bisect finds that commit (FALLBACK is on the side of the
    change) and names it for what it is, whichever end was given as --good."""
    for good, bad in (("new", "old"), ("old", "new")):
        oracle = FakeOracle(repo, change=6, before="REPRODUCED", after="FALLBACK")
        rng = bisect.plan(repo / ".git", good, bad)
        state = bisect.state_path(tmp_path / f"cache-{good}", rng, "cell")
        result = bisect.bisect(rng, oracle, state_file=state, cell="cell", say=lambda _: None)
        assert result.first == sha(repo, "c6")
        lines: list[str] = []
        assert bisect.report(result, lines.append, signal_only=True) == 0
        text = "\n".join(lines)
        assert f"first commit where the op leaves the GPU: {sha(repo, 'c6')}" in text
        assert "fixed verdict" not in text and "the GPU kernel is not fixed" in text
        assert "judged by signal only (no gdb)" in text
    assert judge.change_words("REPRODUCED", "PASS", False) == "first commit with the fixed verdict"
    assert judge.change_words("FALLBACK", "REPRODUCED", True) == "first commit where the op runs on the GPU again"


def test_the_mnist_bisect_names_a_fixed_by_fallback_commit_as_the_op_leaving_the_gpu(
    repo: Path, tmp_path: Path
) -> None:
    """MnnOracle judges the MNIST workload (judge.py): from 39be21c56 on, image mode's cell is FIXED-BY-FALLBACK
    (the Deconvolution runs on the CPU). That commit is where the op leaves the GPU, never "the fixed verdict"."""
    oracle = FakeOracle(repo, change=6, before="REPRODUCED", after="FIXED-BY-FALLBACK")
    rng = bisect.plan(repo / ".git", "new", "old")
    state = bisect.state_path(tmp_path / "cache", rng, "cell")
    result = bisect.bisect(rng, oracle, state_file=state, cell="cell", say=lambda _: None)
    lines: list[str] = []
    assert bisect.report(result, lines.append) == 0
    text = "\n".join(lines)
    assert f"first commit where the op leaves the GPU: {sha(repo, 'c6')}" in text
    assert "fixed verdict" not in text and "the GPU kernel is not fixed" in text
    again = judge.change_words("FIXED-BY-FALLBACK", "REPRODUCED", True)
    assert again == "first commit where the op runs on the GPU again"


def test_a_vuid_reduction_is_refused_as_a_bisect_repro(tmp_path: Path) -> None:
    """Its target needs the validation layer, which bisect's trials do not load: every commit would read as fixed."""
    from mnnrepro.settings import Settings

    red = tmp_path / "red"
    red.mkdir()
    (red / "summary.json").write_text(json.dumps({"target": {"kind": "vuid", "vuid": "VUID-X"}, "ops": []}))
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",), gdb=False)
    with pytest.raises(ConfigError, match="cannot be bisected yet"):
        bisect.ReproOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None, red)


def _optest_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status_of: Callable[[str], str]
) -> bisect.OptestOracle:
    """An OptestOracle whose build and test run are faked: the cell's status at a commit is status_of(commit)."""
    from types import SimpleNamespace

    from mnnrepro import prepare
    from mnnrepro.settings import Settings
    from mnnrepro.workloads.ops import optest
    from mnnrepro.workloads.ops import session as opsession

    def fake_prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: object, say: object) -> object:
        return SimpleNamespace(built=SimpleNamespace(builder=None, core=None, build_s=1.0))

    def fake_cell(cell: Any, prepared: Any, binary: Any, tests: list[str], *rest: Any) -> Any:
        status = "PASS" if cell.variant == "cpu" else status_of(cell.ref)
        return [SimpleNamespace(status=status, reason="why")], {"op/x": object()}, None

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    monkeypatch.setattr(optest, "build_binary", lambda builder, core: SimpleNamespace(tests=["op/x"]))
    monkeypatch.setattr(opsession, "_cell", fake_cell)
    settings = Settings(cache_dir=tmp_path / "cache", icds=("lavapipe",), gdb=False)
    oracle = bisect.OptestOracle(tmp_path, "vulkan-image", settings, tmp_path / "results", lambda _: None, "op/x")
    monkeypatch.setattr(oracle, "_tree", lambda commit: None)
    return oracle


@pytest.mark.parametrize("status", ["FALLBACK", "NO-GPU-WORK", "NOT-EXERCISED", "CPU-FAIL", "FLAKE", ""])
def test_the_optest_oracle_skips_a_commit_without_a_gpu_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """bisect --test: FALLBACK (the op under test ran on the CPU) and the other statuses that are no GPU verdict
    skip the commit, as an unbuildable one is skipped; PASS and FAIL/CRASH/TIMEOUT stay the verdicts."""
    oracle = _optest_oracle(tmp_path, monkeypatch, lambda ref: status)
    got = oracle("ab" * 20)
    assert got.verdict is None and (status or "no result") in got.detail


@pytest.mark.parametrize(
    ("status", "verdict"),
    [("PASS", "PASS"), ("UNEXPECTED-PASS", "PASS"), ("FAIL", "FAIL"), ("CRASH", "CRASH"), ("TIMEOUT", "TIMEOUT")],
)
def test_the_optest_oracle_keeps_pass_and_failures_as_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str, verdict: str
) -> None:
    assert _optest_oracle(tmp_path, monkeypatch, lambda ref: status)("ab" * 20).verdict == verdict


@pytest.mark.parametrize(
    ("fallback", "first", "candidates"),
    [((4, 5), 7, (7,)), ((5, 6), None, (5, 6, 7))],
)
def test_a_test_bisect_never_takes_a_fallback_commit_as_unchanged_or_changed(
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fallback: tuple[int, ...],
    first: int | None,
    candidates: tuple[int, ...],
) -> None:
    """PASS up to c6 but FALLBACK (the op left the GPU) at the `fallback` commits, CRASH from c7 on: the FALLBACK
    commits are skipped, never read as PASS or as the change; when they sit right before c7 they hide it."""
    index = {sha(repo, f"c{i}")[:12]: i for i in range(N)}

    def status_of(ref: str) -> str:
        i = index[ref]
        return "FALLBACK" if i in fallback else "PASS" if i < 7 else "CRASH"

    result = run(repo, tmp_path, _optest_oracle(tmp_path, monkeypatch, status_of), "old", "new")
    assert result.first == (None if first is None else sha(repo, f"c{first}"))
    assert result.candidates == tuple(sha(repo, f"c{i}") for i in candidates)
    assert (result.old_verdict, result.new_verdict) == ("PASS", "CRASH")
    assert all(s.verdict is None for s in result.steps if index[s.commit[:12]] in fallback)


def test_a_test_bisects_state_is_not_shared_with_steps_that_counted_fallback_as_a_verdict() -> None:
    from mnnrepro.settings import Settings

    cell = bisect._test_cell("vulkan-image", Settings(icds=("lavapipe",), gdb=False), "op/x", None)
    assert cell == "vulkan-image/lavapipe/optest=op/x/signal/gpu-verdicts"
