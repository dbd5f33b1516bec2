"""Command line: ``python -m mnnrepro run SESSION``, ``bench``, ``source import|fetch``, ``swiftshader fetch``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import NoReturn, TypeAlias

from . import (
    __version__,
    bench,
    bisect,
    cache,
    doctor,
    fixtures,
    gradcheck,
    image,
    interrupts,
    issue,
    merge,
    prepare,
    signature,
    source,
    swiftshader,
)
from .errors import ConfigError, MnnReproError
from .settings import Settings, load
from .triage import add_arguments as triage_arguments
from .triage import run as triage_run
from .workloads.ops import judge as opjudge
from .workloads.ops import optest
from .workloads.ops import report as opreport
from .workloads.ops import session as opsession
from .workloads.reduce import session as redsession
from .workloads.train import golden
from .workloads.train import workload as train
from .workloads.train.session import SESSIONS, run_session


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref", help="MNN tag, branch or commit (default: fixtures/matrix.toml default_ref)")
    p.add_argument("--source", help="use this MNN tree as is (no clone, no cache)")
    p.add_argument("--git-url", dest="git_url", help="where to clone a missing ref from (default: upstream)")
    p.add_argument("--cache-dir", dest="cache_dir", help="source/build/ccache cache (default ~/.cache/mnnrepro)")


REPLAY_MOVED = "python tools/ci_replay.py --job JOB (or --list), from the checkout"

# What add_subparsers returns (argparse has no public name for it).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mnnrepro", description="Reproduce and guard MNN GPU training bugs.")
    ap.add_argument("--version", action="version", version=f"mnnrepro {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (
        _add_run,
        _add_ops,
        _add_build,
        _add_matrix,
        _add_golden,
        _add_gradcheck,
        _add_source,
        _add_doctor,
        _add_signature,
        _add_image,
        _add_bisect,
        _add_bench,
        _add_cache,
        _add_swiftshader,
        _add_ci,
        _add_report,
        _add_reduce,
        _add_merge,
        _add_triage,
    ):
        add(sub)
    return ap


def _add_run(sub: Subcommands) -> None:
    run = sub.add_parser("run", help="build what a session needs, run its cells, print the verdict table")
    run.add_argument("session", choices=sorted(SESSIONS))
    _common(run)
    run.add_argument("--icd", dest="icds", help="comma-separated Vulkan ICDs: lavapipe,swiftshader,host,bogus")
    run.add_argument(
        "--workload",
        help="comma-separated training workloads of fixtures/matrix.toml [workloads.NAME] (default: mnist; "
        "session workloads: all)",
    )
    run.add_argument(
        "--variants",
        help="session workloads only (another session refuses it): comma-separated variants "
        "(default: cpu,vulkan-image,vulkan-buffer)",
    )
    run.add_argument("--steps", type=int, help="training steps per cell (default: the workload's steps)")
    run.add_argument("--results-dir", dest="results_dir")
    run.add_argument("--timeout", dest="timeout_s", type=int, help="seconds per driver run (default: matrix)")
    run.add_argument("--repeat", type=int, help="run every cell N times; report the rate and determinism")
    run.add_argument("--runner", choices=["auto", "host", "docker"], help="default auto: docker if an engine answers")
    run.add_argument("--base-image", dest="base_image", help="BASE_IMAGE for docker/Dockerfile")
    run.add_argument("--host-ca", dest="host_ca", help="CA bundle to bake into the image (TLS interception)")
    run.add_argument(
        "--keep-containers",
        dest="keep_containers",
        action="store_const",
        const=True,
        help="keep a failed command's container for debugging",
    )
    run.add_argument("--jobs", type=int, help="parallel compile jobs (default: ninja's)")
    run.add_argument(
        "--no-gdb",
        dest="gdb",
        action="store_const",
        const=False,
        help="run the driver without gdb (no backtrace on a crash)",
    )
    run.add_argument(
        "--fault",
        dest="faults",
        help="plant a fault to check the suite notices it: hide-libvulkan, plant-crash, plant-hang",
    )
    run.add_argument(
        "--no-clone", dest="clone", action="store_const", const=False, help="fail instead of cloning a missing source"
    )
    run.add_argument(
        "--vk-validation",
        dest="vk_validation",
        choices=["off", "on", "sync"],
        help="the Khronos validation layer on every Vulkan cell: its VUIDs per cell (sync: with synchronization "
        "validation; session vulkan_validation: on, a VUID without a row of fixtures/validation.toml fails)",
    )
    run.add_argument(
        "--vk-attribution",
        dest="vk_attribution",
        choices=["off", "on"],
        help="with --vk-validation: where MNN issued each VUID, by one rerun under gdb per VUID with the layer's "
        "break action (default on where gdb is found; off saves those reruns)",
    )
    run.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_const",
        const=False,
        help="run the CPU baseline again instead of taking the stored run of the same build and workload",
    )
    run.add_argument(
        "--shard",
        help="only shard K of N of the session's GPU cells (K/N, 1-based; a stride over a fixed-seed shuffle, "
        "shard.py), with the CPU baselines they need, or auto (GitLab's CI_NODE_INDEX/CI_NODE_TOTAL); a shard's "
        "reports are partial (mnnrepro merge gives the shards one verdict)",
    )


def _add_ops(sub: Subcommands) -> None:
    ops = sub.add_parser(
        "ops",
        help="MNN's own op and gradient tests on every backend, judged against fixtures/ops/expectations.toml",
    )
    ops.add_argument("action", nargs="?", default="run", choices=["run", "list", "compare"])
    ops.add_argument("summaries", nargs="*", type=Path, help="compare: two summary.json files (or result dirs)")
    _common(ops)
    ops.add_argument("--variants", help="comma-separated (default: cpu,vulkan-image,vulkan-buffer; cpu always runs)")
    ops.add_argument(
        "--select",
        help="comma-separated: `op/` every test under op/, `op/conv*` a glob, else one exact name (default: op/,grad/)",
    )
    ops.add_argument("--precision", choices=["high", "normal", "low"], help="BackendConfig precision (default high)")
    ops.add_argument(
        "--test-jobs", dest="test_jobs", type=int, help="test processes at once (default: CPUs; a real GPU: at most 4)"
    )
    ops.add_argument(
        "--cpu-from",
        dest="cpu_from",
        type=Path,
        help="an earlier ops results directory of the same MNN commit: its CPU cell is the reference, not run again",
    )
    ops.add_argument("--icd", dest="icds", help="comma-separated Vulkan ICDs: lavapipe,swiftshader,host,bogus")
    ops.add_argument("--timeout", dest="timeout_s", type=int, help="seconds per test (default: the expectations')")
    ops.add_argument("--results-dir", dest="results_dir")
    ops.add_argument("--runner", choices=["auto", "host", "docker"])
    ops.add_argument("--jobs", type=int, help="parallel compile jobs (default: ninja's)")
    ops.add_argument("--fault", dest="faults", help="hide-libvulkan, plant-crash, plant-hang")
    ops.add_argument("--no-gdb", dest="gdb", action="store_const", const=False, help="no gdb rerun of a crash")
    ops.add_argument("--no-clone", dest="clone", action="store_const", const=False)
    ops.add_argument(
        "--vk-validation",
        dest="vk_validation",
        choices=["off", "on", "sync"],
        help="run: each Vulkan test process under the Khronos validation layer, its VUIDs per test and per cell "
        "(sync: with synchronization validation); the op verdicts stay what they are",
    )
    ops.add_argument(
        "--shard",
        help="run: only shard K of N of the selected tests (K/N, 1-based; a stride over a fixed-seed shuffle, "
        "shard.py), or auto (GitLab's CI_NODE_INDEX/CI_NODE_TOTAL); a shard's reports are partial",
    )
    ops.add_argument("--out", type=Path, help="compare: write the Markdown here too")


def _ops(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "run":
        if args.summaries:
            raise ConfigError("ops run takes no positional arguments", hint="ops compare A B")
        return opsession.run_ops(settings)
    if args.action == "list":
        return opsession.list_tests(settings)
    if len(args.summaries) != 2:
        raise ConfigError("ops compare needs two summary.json files (or results directories)")
    loaded = []
    for path in args.summaries:
        file = path / "summary.json" if path.is_dir() else path
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}") from exc
        if data.get("session") != "ops":
            raise ConfigError(f"{file} is not the summary of an ops session")
        loaded.append(data)
    rows = opjudge.compare(loaded[0], loaded[1])
    text = opreport.comparison(loaded[0], loaded[1], rows)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def _add_build(sub: Subcommands) -> None:
    bld = sub.add_parser("build", help="build (or find in the cache) the core, driver and plugins of a ref")
    _common(bld)
    bld.add_argument(
        "--variants", default="cpu,vulkan-image,vulkan-buffer,opencl", help="comma-separated (default: all)"
    )
    bld.add_argument("--runner", choices=["auto", "host", "docker"])
    bld.add_argument("--jobs", type=int)
    bld.add_argument(
        "--optest",
        action="store_true",
        help="also MNN's own tests (mnn_optest) against the core: CI's build job packs it, so op shards build nothing",
    )
    bld.add_argument(
        "--no-clone", dest="clone", action="store_const", const=False, help="fail instead of cloning a missing source"
    )


def _add_matrix(sub: Subcommands) -> None:
    mx = sub.add_parser("matrix", help="print the refs of fixtures/matrix.toml (for CI: --json)")
    mx.add_argument("--json", action="store_true", help="machine-readable: default_ref and refs with commit and tier")
    mx.add_argument("--tier", help="comma-separated tiers to list (ci, push, scheduled); default all")


def _add_golden(sub: Subcommands) -> None:
    gold = sub.add_parser("golden", help="(re)write fixtures/golden/mnist/<ref>/ from a CPU run checked against numpy")
    _common(gold)
    gold.add_argument("--runner", choices=["auto", "host", "docker"])
    golden.add_arguments(gold)


def _add_gradcheck(sub: Subcommands) -> None:
    gc = sub.add_parser("gradcheck", help="compare a run's gradient dumps with a golden, or a golden with numpy")
    gradcheck.add_arguments(gc.add_subparsers(dest="action", required=True))


def _add_source(sub: Subcommands) -> None:
    src = sub.add_parser("source", help="manage MNN source trees in the cache")
    ssub = src.add_subparsers(dest="action", required=True)
    imp = ssub.add_parser("import", help="export REF from a local git repository (bare ok) into the cache")
    imp.add_argument("--git-dir", required=True, type=Path)
    imp.add_argument("--force", action="store_true", help="replace an existing cached tree")
    _common(imp)
    fetch = ssub.add_parser("fetch", help="shallow-clone REF from --git-url into the cache")
    _common(fetch)
    show = ssub.add_parser("show", help="print which tree a run would use")
    _common(show)


def _add_doctor(sub: Subcommands) -> None:
    doc = sub.add_parser("doctor", help="check the environment and say how to fix each problem")
    doc.add_argument("--cache-dir", dest="cache_dir")


def _add_signature(sub: Subcommands) -> None:
    sg = sub.add_parser("signature", help="print the crash signature of a cell's result directory (for matrix.toml)")
    sg.add_argument("cell_dir", type=Path)


def _add_image(sub: Subcommands) -> None:
    img = sub.add_parser("image", help="the docker build-and-run image")
    img.add_argument(
        "action",
        choices=["bootstrap", "build", "key"],
        help="bootstrap: make the Debian base with debootstrap; build: build the image if needed; key: the tag "
        "(content key) the image has for today's inputs, building nothing",
    )
    img.add_argument("--base-image", dest="base_image")
    img.add_argument("--host-ca", dest="host_ca")
    img.add_argument("--debian-mirror", dest="debian_mirror")
    img.add_argument("--cache-dir", dest="cache_dir")


def _add_bisect(sub: Subcommands) -> None:

    bisect.add_arguments(sub.add_parser("bisect", help="find the first commit where a cell's verdict changes"))


def _add_bench(sub: Subcommands) -> None:

    bench.add_arguments(
        sub.add_parser(
            "bench",
            help="training cost per backend: time per step split into preparation and execution (nox -s bench)",
            description=(bench.__doc__ or "").split("\n\n")[0],
        )
    )


def _add_cache(sub: Subcommands) -> None:

    cc = sub.add_parser("cache", help="show what the cache holds (sizes, last use), or prune it to a budget")
    cc.add_argument(
        "action",
        nargs="?",
        choices=["show", "prune"],
        default="show",
        help="show (default); prune: remove least recently used entries (never pinned refs' sources, never one "
        "in use by a running session) until the cache is under --budget",
    )
    cc.add_argument("--budget", default=cache.DEFAULT_BUDGET, help="size to keep under, e.g. 20G (default 30G)")
    cc.add_argument("--dry-run", dest="dry_run", action="store_true", help="say what prune would remove; remove none")
    cc.add_argument("--cache-dir", dest="cache_dir")


def _add_swiftshader(sub: Subcommands) -> None:
    ss = sub.add_parser("swiftshader", help="fetch and verify the pinned SwiftShader ICD")
    ss.add_argument("action", choices=["fetch"])
    ss.add_argument("--tarball", type=Path, help=f"a local {swiftshader.PACKAGE}@{swiftshader.VERSION} .tgz")
    ss.add_argument("--cache-dir", dest="cache_dir")


def _add_ci(sub: Subcommands) -> None:
    # The workflow replay is a developer tool outside the library now (tools/replay/, issue 23): the old
    # subcommand stays only to say where it went.
    ci = sub.add_parser("ci", help=f"moved: {REPLAY_MOVED}", description=f"moved: {REPLAY_MOVED}")
    ci.add_argument("ci_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _matrix(args: argparse.Namespace) -> int:
    """Refs from one place: the workflow, .ci/run and the integration tests read them here."""
    matrix = fixtures.load_matrix()
    tiers = tuple(t.strip() for t in args.tier.split(",")) if args.tier else fixtures.TIERS
    bad = [t for t in tiers if t not in fixtures.TIERS]
    if bad:
        raise ConfigError(f"unknown tier(s) {', '.join(bad)}", hint=f"choose from {', '.join(fixtures.TIERS)}")
    refs = [matrix.refs[name] for name in matrix.refs_for(tiers)]
    if args.json:
        print(
            json.dumps(
                {
                    "default_ref": matrix.default_ref,
                    "refs": [{"ref": r.name, "commit": r.commit, "tier": r.tier} for r in refs],
                    "ref_names": [r.name for r in refs],
                }
            )
        )
    else:
        for r in refs:
            print(f"{r.name}\t{r.commit or '-'}\t{r.tier}")
    return 0


def _build(args: argparse.Namespace, settings: Settings) -> int:

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    bad = [v for v in variants if v not in fixtures.VARIANTS]
    if bad:
        raise ConfigError(f"unknown variant(s) {', '.join(bad)}", hint=f"choose from {', '.join(fixtures.VARIANTS)}")
    matrix = fixtures.load_matrix()
    ref = settings.ref or matrix.default_ref
    source.validate_ref(ref)
    settings, _ = prepare.preflight_for(settings, variants, print, build_only=True)
    built = prepare.build_ref(ref, variants, settings, matrix, print)
    print(f"core [{built.core.key[:12]}]: {built.core.lib_dir}")
    print(f"driver: {built.driver}")
    for variant, lib in built.plugins.items():
        print(f"{variant}: {lib}")
    if args.optest:
        binary = optest.build_binary(built.builder, built.core)
        print(f"mnn_optest: {binary.path}")
    print(f"variants dir: {built.core.variant_dir} ({built.build_s:.0f} s)")
    return 0


def console() -> NoReturn:
    """The process entry point (`python -m mnnrepro`, the `mnnrepro` script): signal handlers for the whole
    process, not only while main runs (see interrupts.install_for_process), and the exit itself, so that no
    moment is left between the handlers and the exit where a signal would end in a traceback."""
    code = 1
    try:
        interrupts.install_for_process()
        code = main(keep_handlers=True)
        late = interrupts.last_word()  # signals blocked from here; one that came after the command still counts
        if late is not None and code < 128:
            code = 128 + late
    except KeyboardInterrupt as exc:  # a signal after the command had finished: the exit still says so
        code = interrupts.exit_code(exc)
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter finalization, which restores the default signal handlers: a SIGTERM in that
    last moment would otherwise kill the process outright after its work and reports were complete."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None, *, keep_handlers: bool = False) -> int:
    # Progress lines must show as they happen, also when the output is a pipe (nox, CI logs, tee).
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    args = parser().parse_args(argv)
    if keep_handlers:  # the process's own handlers (python -m mnnrepro) stay installed
        return _main(args)
    with interrupts.installed():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    if args.command == "signature":
        return _signature(args)

    def body() -> int:
        if args.command not in ("source", "signature"):
            fixtures.require_checkout()
        # Every Settings field that this subcommand has a flag for (so a new flag cannot be silently dropped).
        keys = [f.name for f in fields(Settings)]
        settings = load({k: getattr(args, k) for k in keys if hasattr(args, k)})
        # reduce --vuid validates its candidates (issue 25): it keeps the mode (and turns the layer on itself).
        validates = args.command in ("run", "doctor") or (args.command == "reduce" and getattr(args, "vuid", None))
        validates = validates or (args.command == "ops" and args.action == "run")  # MNN's own tests: per test
        if settings.vk_validation != "off" and not validates:
            # Only training cells validate yet (issue 25): MNNREPRO_VK_VALIDATION must not make another command
            # require the layer, or refuse the Docker runner, for a validation it would not do (doctor keeps it: it
            # says whether `run` can validate).
            print(
                f"mnnrepro: vk_validation = {settings.vk_validation} applies to `run`, `ops run` and `reduce --vuid` "
                f"only; `{args.command}` runs without the validation layer",
                file=sys.stderr,
            )
            settings = replace(settings, vk_validation="off")
        if settings.shard and not (args.command == "run" or (args.command == "ops" and args.action == "run")):
            # Only `ops run` and the training sessions shard (issue 26): elsewhere MNNREPRO_SHARD would be ignored.
            what = f"{args.command} {getattr(args, 'action', '')}".strip()
            print(
                f"mnnrepro: shard = {settings.shard} applies to `run` and `ops run` only; `{what}` ignores it",
                file=sys.stderr,
            )
            settings = replace(settings, shard="")
        return _dispatch(args, settings)

    return guarded(body)


def guarded(body: Callable[[], int]) -> int:
    """``body()``'s exit code, with the suite's conventions for what ends it early: a MnnReproError's message and
    exit code, 128 + N on signal N (also for the developer tools outside the library, tools/)."""
    try:
        return body()
    except MnnReproError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(
            f"mnnrepro: interrupted ({interrupts.signal_name(exc)}); finished artifacts are kept, partial ones "
            "are discarded",
            file=sys.stderr,
        )
        return interrupts.exit_code(exc)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """`run SESSION`; --workload only where given (a run without it is the MNIST run it always was)."""
    if args.workload:
        return run_session(args.session, settings, workloads=train.names(args.workload))
    return run_session(args.session, settings)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """The subcommand's handler, with the resolved settings (`source` where no other one matches)."""
    handlers: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "run": _run,
        "ops": _ops,
        "matrix": lambda a, s: _matrix(a),
        "golden": golden.main,
        "gradcheck": lambda a, s: gradcheck.main(a, verify=train.verify_golden),
        "ci": _ci,
        "build": _build,
        "bisect": _bisect,
        "bench": _bench,
        "doctor": _doctor,
        "image": _image,
        "cache": _cache,
        "swiftshader": _swiftshader,
        "report": _report,
        "merge": lambda a, s: merge.run(a.inputs, s, out=a.out),
        "triage": _triage,
        "reduce": lambda a, s: (
            redsession.check_at(s, a.check)
            if a.check
            else redsession.run_reduce(
                s, graph=a.graph, budget_s=a.budget, resume=a.resume, workload=a.workload, vuid=a.vuid
            )
        ),
    }
    return handlers.get(args.command, _source)(args, settings)


def _add_merge(sub: Subcommands) -> None:
    mg = sub.add_parser(
        "merge", help="one verdict from the shards of an op sweep or a training session (`--shard K/N`)"
    )
    mg.add_argument("inputs", nargs="+", type=Path, help="every shard's results directory (or summary.json)")
    mg.add_argument("--out", type=Path, help="where the merged reports go (default: a new results directory)")
    mg.add_argument("--results-dir", dest="results_dir", help="where results/<time>-merge-<pid>/ goes")


def _add_triage(sub: Subcommands) -> None:
    triage_arguments(
        sub.add_parser("triage", help="what passes at ref A and fails at ref B: each reduced, bisected, written up")
    )


def _triage(args: argparse.Namespace, settings: Settings) -> int:
    return triage_run.main(args, settings)


def _add_report(sub: Subcommands) -> None:
    rep = sub.add_parser("report", help="an issue-ready Markdown report of a crash (or a VUID) a session found")
    rep.add_argument("--issue", dest="results", type=Path, required=True, help="a session's results directory")
    rep.add_argument("--cell", help="the crashed cell (default: the first crash), e.g. 3.3.0/vulkan-image/lavapipe")
    rep.add_argument("--test", help="ops results: the crashed MNN test (default: the first)")
    rep.add_argument("--bisect", type=Path, help="a bisect's results directory (or bisect.json) to add")
    rep.add_argument(
        "--vuid",
        help="a validation finding instead of a crash: this VUID (or fnmatch pattern) of a validated run's cell "
        "(--cell; default the first, new findings first); a `reduce --vuid` run's results need no --vuid",
    )
    rep.add_argument("--out", type=Path, help="write it here (default: ISSUE.md in the results directory)")


def _add_reduce(sub: Subcommands) -> None:
    red = sub.add_parser(
        "reduce",
        help="reduce a crash to a minimal graph: capture the crashing phase's graph, delta-debug it, check it alone",
    )
    _common(red)
    red.add_argument(
        "--variant", dest="variants", default="vulkan-image", help="the GPU variant (default vulkan-image)"
    )
    red.add_argument("--icd", dest="icds", help="the one Vulkan ICD: lavapipe, swiftshader, host")
    red.add_argument("--graph", type=Path, help="reduce this graph (DIR/graph.mnn + DIR/inputs/) instead of MNIST's")
    red.add_argument(
        "--workload",
        default=train.NAME,
        help="the training workload whose first SGD step is captured ([workloads.NAME]; default mnist)",
    )
    red.add_argument("--budget", type=float, help="seconds the search may take (default 900); then the best so far")
    red.add_argument("--resume", type=Path, help="a reduce run's results directory: go on from its reduce.json")
    red.add_argument("--results-dir", dest="results_dir", help="where results/<time>-reduce-<pid>/ goes")
    red.add_argument(
        "--check", type=Path, help="a finished reduce run's results: run its reduced graph at --ref (e.g. the fix)"
    )
    red.add_argument(
        "--test-jobs", dest="test_jobs", type=int, help="candidates at once (default: CPUs; a real GPU: at most 4)"
    )
    red.add_argument("--timeout", dest="timeout_s", type=int, help="seconds per candidate (default 120)")
    red.add_argument("--runner", choices=["auto", "host", "docker"])
    red.add_argument("--jobs", type=int, help="parallel compile jobs (default: ninja's)")
    red.add_argument("--no-gdb", dest="gdb", action="store_const", const=False, help="judge by signal only")
    red.add_argument(
        "--vuid",
        help="reduce to the op(s) whose kernel makes the Khronos validation layer report this VUID (exact, or an "
        "fnmatch pattern such as 'VUID-VkImageMemoryBarrier-oldLayout-*'); turns --vk-validation on",
    )
    red.add_argument(
        "--vk-validation",
        dest="vk_validation",
        choices=["on", "sync"],
        help="with --vuid: the layer's mode (default on; sync adds synchronization validation)",
    )
    red.add_argument("--no-clone", dest="clone", action="store_const", const=False)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    where = args.results if args.results.is_dir() else args.results.parent
    data = issue.load(args.results)
    if args.vuid or (data.get("target") or {}).get("kind") == "vuid":  # a validation finding (issue 25)
        text = issue.render_vuid(issue.pick_vuid(issue.vuid_findings(data), vuid=args.vuid, cell=args.cell))
    else:
        text = issue.render(issue.pick(issue.crashes(data, where), cell=args.cell, test=args.test), bisect=args.bisect)
    out = args.out or (args.results / "ISSUE.md" if args.results.is_dir() else args.results.with_name("ISSUE.md"))
    out.write_text(text)
    print(text, end="")
    print(f"(written to {out}: {text.count(chr(10))} lines)", file=sys.stderr)
    return 0


def _signature(args: argparse.Namespace) -> int:

    if not (args.cell_dir / "crash.json").is_file():
        print(f"mnnrepro: no crash.json in {args.cell_dir}", file=sys.stderr)
        return 2
    print(signature.toml_line(signature.of_cell_dir(args.cell_dir)))
    return 0


def _ci(args: argparse.Namespace, settings: Settings) -> int:
    print(f"mnnrepro: `ci replay` left the library; run {REPLAY_MOVED}", file=sys.stderr)
    return 2


def _bisect(args: argparse.Namespace, settings: Settings) -> int:

    return bisect.main(args, settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:

    return bench.main(args, settings)


def _doctor(args: argparse.Namespace, settings: Settings) -> int:

    return doctor.report(doctor.check(settings))


def _image(args: argparse.Namespace, settings: Settings) -> int:

    client = image.connect()
    if args.action == "bootstrap":
        print(image.bootstrap_base(client, mirror=settings.debian_mirror or None))
    elif args.action == "key":
        print(image.image_tag(client, settings.base_image, settings.host_ca))
    else:
        print(
            image.ensure_image(
                client,
                base=settings.base_image,
                cache_dir=settings.cache_dir,
                host_ca=settings.host_ca,
                mirror=settings.debian_mirror or None,
            )
        )
    return 0


def _cache(args: argparse.Namespace, settings: Settings) -> int:

    return cache.main(args, settings)


def _swiftshader(args: argparse.Namespace, settings: Settings) -> int:
    print(swiftshader.ensure(settings.cache_dir, tarball=args.tarball))
    return 0


def _source(args: argparse.Namespace, settings: Settings) -> int:

    ref = settings.ref or fixtures.load_matrix().default_ref
    if args.action == "import":
        tree = source.import_from_git(args.git_dir, ref, settings.cache_dir, force=args.force, say=print)
        made = source.generated_files(tree.path)
        if left_out := [m for m in tree.missing if m not in made]:
            print(
                f"note: {len(left_out)} file(s) absent from the repository were left out: "
                + ", ".join(left_out[:5])
                + (" ..." if len(left_out) > 5 else "")
            )
        for rel in made:
            print(f"note: {rel} is absent from the repository: generated (see {source.PROVENANCE})")
    elif args.action == "fetch":
        tree = source.clone(ref, settings.git_url, settings.cache_dir / "src" / ref)
    else:
        tree = source.resolve(
            ref, source=settings.source, cache_dir=settings.cache_dir, git_url=settings.git_url, allow_clone=False
        )
    print(tree.describe())
    return 0
