#!/usr/bin/env python3
"""Benchmark (a script, not a timed test): cold build cost and warm end-to-end time.

1. cold "plain": one ordinary Vulkan build as a user would make it (core + train + image plugin), ccache off.
2. cold "suite": the suite's shared core + vulkan-image + vulkan-buffer + opencl plugins, ccache off.
   Reported as a ratio to (1): building the core once and the plugins per mode should cost little extra.
3. warm: `python -m mnnrepro run vulkan_buffer` end to end, twice; the second must rebuild nothing.

Writes bench/results.json (compare runs by hand or with `jq`). Cold builds use a scratch cache directory;
the user's cache is only read (source tree) and used for the warm run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnnrepro import fixtures, source  # noqa: E402
from mnnrepro.build import Builder, CoreOptions, cmake_configure_args, ninja_args  # noqa: E402
from mnnrepro.runner import HostRunner  # noqa: E402
from mnnrepro.settings import load  # noqa: E402


def timed(argv: list[str], env: dict[str, str], log: Path) -> float:
    start = time.monotonic()
    with open(log, "w") as f:
        subprocess.run(argv, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=None)
    ap.add_argument("--skip-cold", action="store_true", help="only the warm end-to-end measurement")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--runner", default="host", choices=["host", "docker"], help="runner for the warm runs")
    args = ap.parse_args()
    settings = load({})
    ref = args.ref or fixtures.load_matrix().default_ref
    tree = source.resolve(
        ref, source=settings.source, cache_dir=settings.cache_dir, git_url=settings.git_url, allow_clone=False
    )
    info = fixtures.load_matrix().ref_info(ref)
    options = CoreOptions(compat_cxx_flags=info.compat_cxx_flags)
    out: dict[str, object] = {"ref": ref, "commit": tree.commit, "nproc": os.cpu_count(), "runner": args.runner}
    if not args.skip_cold:
        scratch = Path(tempfile.mkdtemp(prefix="mnnrepro-bench-"))
        env = dict(os.environ, CCACHE_DISABLE="1")
        try:
            plain = scratch / "plain"
            argv = cmake_configure_args(tree.path, plain, options, ccache=False)
            t = timed(argv, env, scratch / "plain-configure.log")
            t += timed(
                ninja_args(plain, ("MNN", "MNN_Express", "MNNTrain", "MNN_Vulkan"), None),
                env,
                scratch / "plain-build.log",
            )
            out["cold_plain_vulkan_s"] = round(t, 1)
            print(f"cold plain Vulkan build: {t:.0f}s", flush=True)
            os.environ["CCACHE_DISABLE"] = "1"
            builder = Builder(scratch / "cache", HostRunner(base_env=env))
            builder.ccache = False
            start = time.monotonic()
            core = builder.core(tree, options)
            builder.driver(core)
            for kind in ("vulkan-image", "vulkan-buffer", "opencl"):
                builder.plugin(core, kind)
            total = time.monotonic() - start
            out["cold_suite_s"] = round(total, 1)
            out["cold_suite_steps"] = builder.log.events
            out["cold_ratio"] = round(total / t, 2)
            print(
                f"cold suite build (core + image + buffer + opencl + driver): {total:.0f}s, ratio {total / t:.2f}",
                flush=True,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for label in ("warm_1", "warm_2"):
        start = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mnnrepro",
                "run",
                "vulkan_buffer",
                "--ref",
                ref,
                "--steps",
                str(args.steps),
                "--no-clone",
                "--runner",
                args.runner,
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - start
        rebuilt = [line for line in proc.stdout.splitlines() if line.startswith("building")]
        out[f"{label}_vulkan_buffer_s"] = round(took, 1)
        out[f"{label}_rebuilt"] = rebuilt
        out[f"{label}_exit"] = proc.returncode
        print(
            f"{label}: nox -s vulkan_buffer equivalent took {took:.1f}s, exit {proc.returncode}, "
            f"rebuilt: {rebuilt or 'nothing'}",
            flush=True,
        )
    (ROOT / "bench" / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
