"""Making a CPU gradient golden (`mnnrepro golden --ref REF`), on request only: tests never regenerate one.

The CPU driver runs with dumps through the same preflight and builds as every session; its gradients are
checked against its model's independent float64 numpy reference (models/) first, and only then is
``fixtures/golden/mnist/<ref>/`` written (goldens are keyed by workload and ref: fixtures.golden_dir), with its
provenance, the machine fingerprint that makes its last bits, and a sha256 manifest that every run checks before
it starts (fixtures.verify_golden_manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ... import fingerprint, fixtures, gradcheck, prepare
from ...build import native_key
from ...cells import Cell, CellRun, run_cell
from ...errors import ConfigError, FixtureError
from ...settings import Settings
from . import workload as train
from .models.lenet import sgd_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Beside the common --ref/--source/--cache-dir options (cli._common)."""
    p.add_argument("--steps", help="comma-separated dump steps, consecutive from 0 (default: matrix [gradcheck])")
    p.add_argument("--workload", default=train.NAME, help="the training workload ([workloads.NAME]; default mnist)")
    p.add_argument(
        "--out",
        type=Path,
        default=fixtures.GOLDEN_ROOT,
        help="golden root (default fixtures/golden; written to <root>/<workload>/<ref>/)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.ref:
        raise ConfigError("mnnrepro golden needs --ref (the golden of which MNN ref to write)")
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    generate_golden(settings.ref, steps=steps, settings=settings, out_root=args.out, workload=args.workload)
    return 0


def _cpu_run(
    prepared: prepare.Prepared,
    matrix_workload: train.Training,
    steps: list[int],
    work: Path,
    say: Callable[[str], None],
) -> CellRun:
    built = prepared.built
    # The matrix's workload (batch, seed) for the golden's steps, at high precision, with dumps.
    workload = replace(
        matrix_workload,
        steps=len(steps),
        precision="high",
        test_limit=100,
        extra_args=("--dump-steps", ",".join(map(str, steps)), "--save-init", str(work / "golden" / "init")),
    )
    say(f"running the CPU driver for {len(steps)} step(s) with dumps ...")
    run = run_cell(
        Cell(built.ref, "cpu", "-", matrix_workload.name),
        driver=built.driver,
        plugin=None,
        icd=None,
        workload=workload,
        timeout_s=prepared.timeout_for("cpu"),
        runner=built.runner,
        result_dir=work / "run",
        use_gdb=False,
        say=say,
    )
    if run.completed.returncode != 0 or run.record.backend.get("active") != "cpu":
        raise FixtureError(
            f"the CPU driver run failed (exit {run.completed.returncode}); nothing written",
            hint=f"see {work / 'run'}/stderr.txt (kept only while this runs: rerun with the same command)",
        )
    return run


def _provenance(
    built: prepare.Built,
    run: CellRun,
    steps: list[int],
    check: gradcheck.GradReport,
    manifest: dict[str, Any],
    workload: train.Training,
) -> dict[str, Any]:
    return {
        "format": gradcheck.GOLDEN_FORMAT,
        "ref": built.ref,
        "commit": built.tree.commit or built.info.commit,
        "mnn_version": run.record.start.get("mnn_version"),
        "source": built.tree.describe(),
        "compiler": built.builder.toolchain,
        "cmake_options": built.core.options.cmake_defines(),
        "core_key": built.core.key,
        "driver_native_key": native_key(),
        "driver_argv": run.argv,
        "config": dict(run.record.start.get("config") or {}),
        # what makes this golden's last bits: a run elsewhere is held to the fp32 tolerance only
        "machine": fingerprint.probe(),
        "steps": steps,
        "losses": run.record.losses[: len(steps)],
        "parameters": [{"name": n, "shape": list(s)} for n, s in train.MODELS[workload.model].shapes.items()],
        # another workload's golden names its workload and model (gradcheck: its step inputs); MNIST's as before
        **train.golden_identity(workload),
        "data": {
            "dir": "fixtures/mnist",
            "manifest_sha256": {name: meta["sha256"] for name, meta in manifest["files"].items()},
        },
        "reference_check": check.to_dict()["summary"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": gradcheck.regenerate_command(built.ref, workload.name) + f" --steps {','.join(map(str, steps))}",
        "layout": "init/<param>.npy; step<N>/{grad,after}/<param>.npy, batch_indices.npy, dropout_mask.npy "
        "(float32, as the driver dumps them; native/README.md)",
    }


def _publish(staging: Path, dest: Path) -> Path:
    """Swap the new golden in whole at ``dest`` (<root>/<workload>/<ref>): a failure leaves the old one."""
    fixtures.write_manifest(staging)
    parent, ref = dest.parent, dest.name
    parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{ref}-new-", dir=parent))
    shutil.copytree(staging, fresh, dirs_exist_ok=True)
    old = parent / f".{ref}-old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(fresh, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def generate_golden(
    ref: str,
    *,
    steps: Sequence[int] | None = None,
    settings: Settings,
    out_root: Path = fixtures.GOLDEN_ROOT,
    say: Callable[[str], None] = print,
    workload: str = train.NAME,
) -> Path:
    """Run the CPU driver with dumps, check it against the numpy reference, and only then write
    ``out_root/mnist/<ref>/`` (replacing what was there; a golden at ``out_root/<ref>/``, the old layout, is an
    error that says where it moved, before anything is built)."""
    matrix = fixtures.load_matrix()
    wl = train.workload_of(matrix, settings, workload)  # an unknown workload: ConfigError before anything runs
    spec = matrix.workloads.get(workload)
    if spec is not None and spec.golden_workload != workload:
        raise ConfigError(
            f"workload {workload} is checked against the {spec.golden_workload} golden ([workloads.{workload}] "
            f"golden): it has none of its own",
            hint=f"python -m mnnrepro golden --ref {ref} --workload {spec.golden_workload}",
        )
    dest = fixtures.golden_dir(workload, ref, out_root)
    steps = list(steps) if steps is not None else gradcheck.golden_steps(matrix)
    if steps != list(range(len(steps))):
        raise FixtureError(f"golden steps must be consecutive from 0, got {steps}")
    manifest = fixtures.verify_mnist()
    settings, _ = prepare.preflight_for(settings, ("cpu",), say)
    prepared = prepare.prepare(ref, ("cpu",), replace(settings, gdb=False), matrix, say)
    built = prepared.built
    # The driver writes under results_dir (writable in every runner); fixtures/ is read-only in a container.
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"golden-{ref}-", dir=settings.results_dir) as tmp:
        work = Path(tmp)
        run = _cpu_run(prepared, wl, steps, work, say)
        check = train.check_against_reference(
            spec,
            gradcheck.Dumps(work / "run" / "grads", work / "golden" / "init"),
            steps,
            sgd=sgd_config(dict(run.record.start.get("config") or {})),
            losses=run.record.losses,
        )
        say(check.table())
        if not check.passed:
            raise FixtureError(
                "MNN's CPU gradients disagree with the numpy reference: no golden written",
                hint="read the table above; a real disagreement is a finding, not something to regenerate away",
            )
        for step in steps:
            shutil.copytree(work / "run" / "grads" / f"step{step}", work / "golden" / f"step{step}")
        provenance = _provenance(built, run, steps, check, manifest, wl)
        (work / "golden" / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
        _publish(work / "golden", dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    say(f"golden written: {dest} ({size} bytes); review and commit it")
    return dest
