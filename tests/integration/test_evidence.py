"""Evidence a verdict stands on: op placement measured per mode, and crashes/hangs told apart by signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import REFS, cell

pytestmark = [pytest.mark.integration]


@pytest.mark.slow
def test_op_placement_image_vs_buffer(run_session: Any) -> None:
    summary = run_session("vulkan", REFS[0])["summary"]
    image = cell(summary, f"{REFS[0]}/vulkan-image/lavapipe")["placement"]
    buffer = cell(summary, f"{REFS[0]}/vulkan-buffer/lavapipe")["placement"]
    # Image mode: only the forward pass ran before the crash; its convolutions fell back to the CPU.
    assert set(image) == {"forward"}
    assert image["forward"]["cpu_ops"].get("Convolution") == 2
    # Buffer mode keeps the convolutions (and the whole SGD step but the uint8 casts) on the Vulkan device.
    assert "Convolution" not in buffer["forward"]["cpu_ops"]
    assert set(buffer["sgd_step"]["cpu_ops"]) <= {"Cast"}
    assert buffer["sgd_step"]["ops"]["vulkan"] > 100
    assert image["forward"]["backend_switches"] > buffer["forward"]["backend_switches"]


def test_planted_crash_with_the_bugs_signal_and_stage_is_an_unexpected_crash(run_session: Any) -> None:
    result = run_session("vulkan_image", REFS[0], "--icd", "lavapipe", "--fault", "plant-crash")
    c = cell(result["summary"], f"{REFS[0]}/vulkan-image/lavapipe")
    assert c["evidence"]["signal"] == "SIGSEGV"
    assert c["evidence"]["stage"] == "sgd_step[step 0]"
    assert c["verdict"] == "UNEXPECTED-CRASH", c["reason"]
    assert "plantedCrash" in " ".join(c["evidence"]["top_frames"]) or c["evidence"]["signature"] == []
    assert result["exit"] == 1


def test_planted_hang_is_killed_and_reported_with_its_stage(run_session: Any) -> None:
    result = run_session("vulkan_buffer", REFS[0], "--icd", "lavapipe", "--fault", "plant-hang", "--timeout", "25")
    c = cell(result["summary"], f"{REFS[0]}/vulkan-buffer/lavapipe")
    assert c["verdict"] == "HANG", c["reason"]
    assert c["evidence"]["stage"] == "forward[step 1]"
    assert c["evidence"]["duration_s"] < 60
    assert result["exit"] == 1


def test_truncated_idx_is_rejected_by_the_driver(run_session: Any, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from mnnrepro.fixtures import MNIST

    summary = run_session("vulkan", REFS[0])["summary"]
    command = cell(summary, f"{REFS[0]}/cpu/-")["evidence"]["command"]
    driver = next(a for a in command if a.endswith("mnist_driver"))
    if not Path(driver).exists():
        pytest.skip(f"driver {driver} is inside a container image layer, not on this host")
    data = tmp_path / "mnist"
    shutil.copytree(MNIST, data)
    images = data / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    proc = subprocess.run(
        [driver, "--backend", "cpu", "--data", str(data), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "header promises" in proc.stderr
