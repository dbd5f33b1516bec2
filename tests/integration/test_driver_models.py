"""Issue 24: the driver's --model flag end to end at 3.3.0 on the CPU backend. An unknown name is a usage error
that names the known models; `--model mnistv2` (native/src/models/mnistv2.cpp) trains: its loss falls, every
parameter's gradient is dumped, and --save-init/--init-params round-trip the state step 0 starts from.

The driver is the one test_gradients.py builds (its session fixture `built`: same Builder, same cache, same
runner), skipped where the 3.3.0 source is absent, as every integration test is.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnnrepro import fixtures

from .test_gradients import Built
from .test_gradients import built as built  # the session fixture: the driver is built once, shared

pytestmark = pytest.mark.integration
EXIT_USAGE = 2  # native/README.md, "Exit codes"
# native/README.md, "MnistV2": names in model order with their shapes.
MNISTV2_PARAMETERS = {
    "conv1.weight": [8, 1, 5, 5],
    "conv1.bias": [8],
    "bn.scale": [1, 8, 1, 1],
    "bn.bias": [1, 8, 1, 1],
    "conv2.weight": [8, 1, 5, 5],
    "conv2.bias": [8],
    "ip1.weight": [100, 512, 1, 1],
    "ip1.bias": [100],
    "ip2.weight": [10, 100, 1, 1],
    "ip2.bias": [10],
}
STEPS = 10


def drive(built: Built, name: str, *args: str) -> tuple[int, str, Path]:
    """The driver on the CPU backend with `args`, its output under ROOT/models/name (rewritten each time)."""
    out = built.root / "models" / name
    shutil.rmtree(out, ignore_errors=True)  # a rerun must not read an earlier run's files
    out.mkdir(parents=True)
    argv = [str(built.driver), "--backend", "cpu", "--data", str(fixtures.MNIST), "--out", str(out / "run")]
    completed = built.runner.run([*argv, "--threads", "1", *args], writable=[out], timeout_s=300)
    return completed.returncode, completed.output, out


def events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "run" / "events.jsonl").read_text().splitlines()]


def test_an_unknown_model_is_a_usage_error_naming_the_known_ones(built: Built) -> None:
    code, output, out = drive(built, "bogus", "--model", "bogus")
    assert code == EXIT_USAGE, output[-3000:]
    assert "unknown model 'bogus' (known models: lenet, mnistv2)" in output, output[-3000:]
    assert not (out / "run" / "events.jsonl").exists()  # refused before anything ran, like every usage error


def test_mnistv2_trains_and_dumps_every_gradient(built: Built) -> None:
    dump = ["--dump-steps", "0", "--test-limit", "100"]
    code, output, out = drive(built, "mnistv2", "--model", "mnistv2", "--steps", str(STEPS), *dump)
    assert code == 0, output[-3000:]
    record = events(out)
    model = next(e for e in record if e["event"] == "model")
    assert model["name"] == "MnistV2"
    assert {p["name"]: p["shape"] for p in model["parameters"]} == MNISTV2_PARAMETERS
    assert [p["name"] for p in model["parameters"]] == list(MNISTV2_PARAMETERS)
    backend = next(e for e in record if e["event"] == "backend")
    assert backend["active"] == "cpu" and backend["exercised"] is True
    losses = [float(e["loss"]) for e in record if e["event"] == "step"]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    # 3.3.0, seed 1: 2.56 at step 0, 2.11 at step 9. A net that does not learn stays near ln(10) = 2.30.
    assert max(losses[-3:]) < losses[0] - 0.2, losses
    step0 = out / "run" / "grads" / "step0"
    for name, shape in MNISTV2_PARAMETERS.items():
        grad = np.load(step0 / "grad" / f"{name}.npy")
        assert list(grad.shape) == shape and np.isfinite(grad).all() and np.abs(grad).max() > 0, name
        assert np.load(step0 / "after" / f"{name}.npy").shape == grad.shape
    # BatchNorm's running statistics after step 0's forward: (1 - 0.999) x the batch's mean and variance.
    for stat in ("bn.running_mean", "bn.running_var"):
        assert np.load(step0 / f"{stat}.npy").shape == (1, 8, 1, 1), stat
    assert (np.load(step0 / "bn.running_var.npy") > 0).all()


def test_mnistv2_init_round_trips(built: Built) -> None:
    # What --save-init writes is all step 0 starts from: loading it gives the same step-0 gradients, bit for bit.
    init = built.root / "models" / "mnistv2-seeded" / "init"  # inside the seeded run's (writable) directory
    one_step = ("--model", "mnistv2", "--steps", "1", "--dump-steps", "0", "--test-limit", "100")
    code, output, seeded = drive(built, "mnistv2-seeded", *one_step, "--save-init", str(init))
    assert code == 0, output[-3000:]
    assert sorted(p.name for p in init.iterdir()) == sorted(f"{n}.npy" for n in MNISTV2_PARAMETERS)
    code, output, loaded = drive(built, "mnistv2-loaded", *one_step, "--init-params", str(init))
    assert code == 0, output[-3000:]
    for name in MNISTV2_PARAMETERS:
        a = (seeded / "run" / "grads" / "step0" / "grad" / f"{name}.npy").read_bytes()
        b = (loaded / "run" / "grads" / "step0" / "grad" / f"{name}.npy").read_bytes()
        assert a == b, name
