"""The heavy half of ``triage``: the sessions at both refs (when no finished results are given), and each finding's
reduce, bisect and report, through the existing entry points (no runner code of its own)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import bisect, issue, prepare
from ..errors import ConfigError, MnnReproError
from ..settings import Settings
from ..workloads.ops import session as opsession
from ..workloads.reduce import session as redsession
from ..workloads.train import session as trainsession
from ..workloads.train import workload as train
from . import Side, compare, keep, load_side, side_of, triage

Say = Callable[[str], None]


def newest(parent: Path) -> Path | None:
    """The results directory a session just made under ``parent`` (prepare.results_dir: <time>-<name>-<pid>)."""
    dirs = sorted(p for p in parent.glob("*-*") if p.is_dir() and not p.is_symlink())
    return dirs[-1] if dirs else None


class RealHeavy:
    """reduce, bisect and report as their subcommands run them, each into the finding's directory."""

    def __init__(self, settings: Settings, git_dir: Path | None, say: Say) -> None:
        self.settings, self.git_dir, self.say = settings, git_dir, say

    def _guard(self, step: str, body: Callable[[], Path | None]) -> Path | None:
        try:
            return body()
        except MnnReproError as exc:  # one finding's failed step is recorded; the others still run
            self.say(f"  {step}: {exc.message}")
            return None

    def reduce(self, args: dict[str, str], out: Path) -> Path | None:
        s = replace(
            self.settings, ref=args["ref"], variants=(args["variant"],), icds=(args["icd"],), results_dir=out / "reduce"
        )

        def body() -> Path | None:
            redsession.run_reduce(s, workload=args["workload"], say=self.say)
            return newest(out / "reduce")

        return self._guard("reduce", body)

    def bisect(self, args: dict[str, str], out: Path) -> Path | None:
        ns = argparse.Namespace(
            good=args["good"],
            bad=args["bad"],
            mode=args["mode"],
            git_dir=self.git_dir,
            fresh=False,
            repro=Path(args["repro"]) if "repro" in args else None,
            test=args.get("test"),
        )
        s = replace(self.settings, icds=(args["icd"],), results_dir=out / "bisect")

        def body() -> Path | None:
            bisect.main(ns, s, say=self.say)
            return newest(out / "bisect")

        return self._guard("bisect", body)

    def report(self, args: dict[str, str], out: Path) -> Path | None:
        def body() -> Path:
            where = Path(args["issue"])
            found = issue.pick(
                issue.crashes(issue.load(where), where), cell=args.get("cell") or None, test=args.get("test")
            )
            text = issue.render(found, bisect=Path(args["bisect"]) if "bisect" in args else None)
            (out / "ISSUE.md").write_text(text)
            return out / "ISSUE.md"

        return self._guard("report", body)


def run_sessions(ref: str, settings: Settings, top: Path, workloads: tuple[str, ...], say: Say) -> list[Path]:
    """MNN's own tests and a training session at one ref, through their session entry points; a session that ends
    with mismatched cells still wrote its summary (that is what is compared)."""
    base = top / f"at-{ref.replace('/', '-')}"
    s = replace(settings, ref=ref)
    opsession.run_ops(replace(s, results_dir=base / "ops"), say=say)
    trainsession.run_session("workloads", replace(s, results_dir=base / "training"), say=say, workloads=workloads)
    found = [newest(base / "ops"), newest(base / "training")]
    return [p for p in found if p is not None and (p / "summary.json").is_file()]


def main(args: argparse.Namespace, settings: Settings, *, say: Say = print) -> int:
    if bool(args.a_results) != bool(args.b_results):
        raise ConfigError("give both --a-results and --b-results (or neither: triage runs both refs)")
    top = prepare.results_dir(settings, "triage")
    if args.a_results:
        a_paths, b_paths = list(args.a_results), list(args.b_results)
    else:
        workloads = tuple(args.workload.split(",")) if args.workload else (train.NAME,)
        a_paths = run_sessions(args.a, settings, top, workloads, say)
        b_paths = run_sessions(args.b, settings, top, workloads, say)
    a_data, b_data = load_side(a_paths), load_side(b_paths)
    a, b = side_of(args.a, a_data), side_of(args.b, b_data)
    rows = keep(compare(a_data, b_data), settings.icds if args.icds else (), settings.variants)
    heavy = None if args.plan_only else RealHeavy(settings, args.git_dir, say)
    return triage(rows, a, b, top, heavy, say, max_findings=args.max_findings)


__all__: list[Any] = ["RealHeavy", "Side", "main", "run_sessions"]
