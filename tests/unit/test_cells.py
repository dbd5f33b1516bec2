"""cells: cell naming, driver arguments, session cell lists, and run_cell with a fake driver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import judge as J
from mnnrepro.cells import Cell, driver_argv, run_cell
from mnnrepro.fixtures import Expectation
from mnnrepro.icd import Icd
from mnnrepro.judge import judge
from mnnrepro.runner import Completed, HostRunner
from mnnrepro.workloads.train.session import cells_for
from mnnrepro.workloads.train.workload import Training

WORKLOAD = Training(steps=3, batch_size=8, seed=1, precision="high", test_limit=10)
REPRODUCE = Expectation(("3.3.0",), "vulkan-image", "*", "reproduce", "alibaba/MNN#3129", "SIGSEGV", "sgd_step", 0)

EVENTS = [
    {"v": 1, "event": "start", "t": 0.0},
    {"v": 1, "event": "backend", "t": 0.1, "requested": "vulkan", "active": "vulkan", "exercised": True},
    {"v": 1, "event": "stage", "t": 0.2, "name": "forward", "step": 0},
    {"v": 1, "event": "stage", "t": 0.3, "name": "sgd_step", "step": 0},
]
# Writes events up to sgd_step 0, records its arguments and environment, then dies of SIGSEGV.
FAKE_DRIVER = (
    """#!/bin/sh
out=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
printf '%s\\n' "$@" > "$out/args.txt"
echo "$VK_ICD_FILENAMES|$MNNREPRO_CRASH_DIR" > "$out/env.txt"
cat > "$out/events.jsonl" <<'JSON'
"""
    + "".join(json.dumps(e) + "\n" for e in EVENTS)
    + """JSON
echo "stderr line" >&2
kill -SEGV $$
"""
)


def test_cell_naming() -> None:
    cell = Cell("3.3.0", "vulkan-buffer", "lavapipe")
    assert cell.id == "3.3.0/vulkan-buffer/lavapipe"
    assert cell.dirname == "3.3.0__vulkan-buffer__lavapipe"
    assert cell.backend == "vulkan"
    assert Cell("feature/x", "cpu", "-").dirname == "feature__x__cpu__-"
    assert Cell("3.3.0", "opencl", "-").backend == "opencl"
    # Another workload's cell: its id names the workload; its directory has no colon, which the Docker engine's
    # "host:container:mode" volume spec cannot take.
    other = Cell("3.3.0", "cpu", "-", "mnistv2")
    assert other.id == "mnistv2:3.3.0/cpu/-"
    assert other.dirname == "mnistv2__3.3.0__cpu__-" and ":" not in other.dirname


def test_workload_driver_args() -> None:
    args = WORKLOAD.driver_args()
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs == {"--steps": "3", "--batch-size": "8", "--seed": "1", "--precision": "high", "--test-limit": "10"}


def test_gpu_sessions_get_a_cpu_baseline_first() -> None:
    cells = cells_for("3.3.0", ("vulkan-image", "vulkan-buffer"), ("lavapipe", "swiftshader"))
    assert [c.id for c in cells] == [
        "3.3.0/cpu/-",
        "3.3.0/vulkan-image/lavapipe",
        "3.3.0/vulkan-image/swiftshader",
        "3.3.0/vulkan-buffer/lavapipe",
        "3.3.0/vulkan-buffer/swiftshader",
    ]


def test_a_cpu_session_has_one_cell() -> None:
    assert [c.id for c in cells_for("3.3.0", ("cpu",), ("lavapipe",))] == ["3.3.0/cpu/-"]


@pytest.fixture
def fake_driver(tmp_path: Path) -> Path:
    path = tmp_path / "mnist_driver"
    path.write_text(FAKE_DRIVER)
    path.chmod(0o755)
    return path


def test_run_cell_collects_a_crash_and_the_judge_reproduces(tmp_path: Path, fake_driver: Path) -> None:
    result = tmp_path / "result"
    result.mkdir()
    (result / "crash.json").write_text("{}")  # stale, from an earlier run
    cell = Cell("3.3.0", "vulkan-image", "bogus")
    icd = Icd("bogus", tmp_path / "bogus.json", {"VK_ICD_FILENAMES": str(tmp_path / "bogus.json")})
    plugin = tmp_path / "libMNN_Vulkan.so"
    run = run_cell(
        cell,
        driver=fake_driver,
        plugin=plugin,
        icd=icd,
        workload=WORKLOAD,
        timeout_s=30,
        runner=HostRunner(),
        result_dir=result,
        use_gdb=False,
        data_dir=tmp_path / "data",
    )
    assert run.completed.signal_name == "SIGSEGV"
    assert run.crash is None  # the stale crash.json was removed, and no gdb wrote a new one
    assert run.gdb is False
    assert run.argv[0] == str(fake_driver)
    args = (result / "args.txt").read_text().split("\n")
    assert args[:6] == ["--backend", "vulkan", "--data", str(tmp_path / "data"), "--out", str(result)]
    assert args[args.index("--plugin") + 1] == str(plugin)
    assert (result / "env.txt").read_text().strip() == f"{tmp_path / 'bogus.json'}|{result}"
    assert (result / "stderr.txt").read_text() == "stderr line\n"
    assert run.record.last_stage is not None and run.record.last_stage.label() == "sgd_step[step 0]"
    meta = json.loads((result / "cell.json").read_text())
    assert (meta["cell"], meta["signal"], meta["timed_out"], meta["gdb"]) == (cell.id, "SIGSEGV", False, False)
    assert meta["env"]["MNNREPRO_CRASH_DIR"] == str(result)
    v = judge(run, REPRODUCE, steps=3, checks={}, baseline=None)
    assert (v.verdict, v.matched) == (J.REPRODUCED, True)


def test_run_cell_without_plugin_or_icd(tmp_path: Path, fake_driver: Path) -> None:
    run_cell(
        Cell("3.3.0", "cpu", "-"),
        driver=fake_driver,
        plugin=None,
        icd=None,
        workload=WORKLOAD,
        timeout_s=30,
        runner=HostRunner(),
        result_dir=tmp_path / "r",
        use_gdb=False,
    )
    args = (tmp_path / "r" / "args.txt").read_text().split("\n")
    assert "--plugin" not in args
    assert args[1] == "cpu"
    assert (tmp_path / "r" / "env.txt").read_text().startswith("|")  # no ICD variable set


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("gdb") is None, reason="needs gcc and gdb on PATH")
def test_run_cell_under_gdb_keeps_frames_as_evidence(tmp_path: Path) -> None:
    src = tmp_path / "driver.c"
    src.write_text(
        """
#include <stdio.h>
#include <string.h>
void crash_in_sgd_step(volatile int *p) { *p = 1; }
int main(int argc, char **argv) {
    const char *out = ".";
    for (int i = 1; i + 1 < argc; ++i) if (strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    char path[4096];
    snprintf(path, sizeof path, "%s/events.jsonl", out);
    FILE *f = fopen(path, "w");
    fputs("{\\"v\\": 1, \\"event\\": \\"backend\\", \\"exercised\\": true}\\n", f);
    fputs("{\\"v\\": 1, \\"event\\": \\"stage\\", \\"name\\": \\"sgd_step\\", \\"step\\": 0}\\n", f);
    fclose(f);
    crash_in_sgd_step(0);
    return 0;
}
"""
    )
    exe = tmp_path / "mnist_driver"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(exe), str(src)], check=True, capture_output=True)
    result = tmp_path / "result"
    run = run_cell(
        Cell("3.3.0", "vulkan-image", "lavapipe"),
        driver=exe,
        plugin=None,
        icd=None,
        workload=WORKLOAD,
        timeout_s=60,
        runner=HostRunner(base_env=dict(os.environ)),
        result_dir=result,
    )
    assert run.gdb is True
    assert run.completed.returncode == 139
    assert run.crash is not None and run.crash["frames"][0]["function"] == "crash_in_sgd_step"
    v = judge(run, REPRODUCE, steps=3, checks={}, baseline=None)
    assert (v.verdict, v.matched) == (J.REPRODUCED, True)
    assert v.evidence["top_frames"][0] == "crash_in_sgd_step"
    assert v.evidence["backtrace"] == str(result / "backtrace.txt")


# -- the environment and the writable paths of a driver run --------------------------------------------


@pytest.fixture
def caller_loader(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Loader (and other) variables left in the caller's shell."""
    loader = {"VK_ICD_FILENAMES": "/caller/icd.json", "VK_LOADER_DEBUG": "all", "OCL_ICD_VENDORS": "/caller/v"}
    for k, v in {**loader, "LD_LIBRARY_PATH": "/caller/lib", "MNNREPRO_PLANT": "crash@sgd_step:0"}.items():
        monkeypatch.setenv(k, v)
    return loader


def test_a_run_gets_only_the_cells_own_loader_variables(
    tmp_path: Path, fake_driver: Path, caller_loader: dict[str, str]
) -> None:
    icd = Icd("lavapipe", tmp_path / "lvp.json", {"VK_ICD_FILENAMES": str(tmp_path / "lvp.json")})
    result = tmp_path / "r"
    run_cell(
        Cell("3.3.0", "vulkan-image", "lavapipe"),
        driver=fake_driver,
        plugin=None,
        icd=icd,
        workload=WORKLOAD,
        timeout_s=30,
        runner=HostRunner(),
        result_dir=result,
        use_gdb=False,
    )
    assert (result / "env.txt").read_text().strip() == f"{tmp_path / 'lvp.json'}|{result}"
    meta = json.loads((result / "cell.json").read_text())
    assert meta["env_from_caller"] == {}
    assert meta["cell_env"] == {"VK_ICD_FILENAMES": str(tmp_path / "lvp.json"), "MNNREPRO_CRASH_DIR": str(result)}
    for name in ("VK_LOADER_DEBUG", "OCL_ICD_VENDORS", "LD_LIBRARY_PATH", "MNNREPRO_PLANT"):
        assert name not in meta["env"]
    assert meta["env"]["PATH"] == os.environ["PATH"]  # the whole environment, not only the cell's part


def test_icd_host_passes_the_callers_loader_variables_and_records_them(
    tmp_path: Path, fake_driver: Path, caller_loader: dict[str, str]
) -> None:
    result = tmp_path / "r"
    run_cell(
        Cell("3.3.0", "vulkan-image", "host"),
        driver=fake_driver,
        plugin=None,
        icd=Icd("host", None, {}),
        workload=WORKLOAD,
        timeout_s=30,
        runner=HostRunner(),
        result_dir=result,
        use_gdb=False,
    )
    assert (result / "env.txt").read_text().strip() == f"/caller/icd.json|{result}"
    meta = json.loads((result / "cell.json").read_text())
    assert meta["env_from_caller"] == caller_loader
    assert {k: meta["env"][k] for k in caller_loader} == caller_loader
    assert "LD_LIBRARY_PATH" not in meta["env"] and "MNNREPRO_PLANT" not in meta["env"]


def test_a_run_may_write_its_result_dir_and_the_directories_its_options_name(tmp_path: Path, fake_driver: Path) -> None:
    seen: list[list[Path]] = []

    class Recording(HostRunner):
        def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
            seen.append(list(kwargs["writable"]))
            return super().run(argv, **kwargs)

    result, init = tmp_path / "r", tmp_path / "golden" / "init"
    workload = Training(3, 8, 1, "high", 10, extra_args=("--dump-steps", "0,1", "--save-init", str(init)))
    run_cell(
        Cell("3.3.0", "cpu", "-"),
        driver=fake_driver,
        plugin=None,
        icd=None,
        workload=workload,
        timeout_s=30,
        runner=Recording(),
        result_dir=result,
        use_gdb=False,
    )
    assert seen == [[result, init]]
    assert json.loads((result / "cell.json").read_text())["writable"] == [str(result), str(init)]


def test_driver_argv_names_the_backend_data_result_dir_and_plugin(tmp_path: Path) -> None:
    cell = Cell("3.3.0", "vulkan-buffer", "lavapipe")
    argv = driver_argv(cell, Path("/d/mnist_driver"), Path("/v/libMNN_Vulkan.so"), WORKLOAD, tmp_path, Path("/m"))
    assert argv[:7] == ["/d/mnist_driver", "--backend", "vulkan", "--data", "/m", "--out", str(tmp_path)]
    assert argv[7:-2] == WORKLOAD.driver_args()
    assert argv[-2:] == ["--plugin", "/v/libMNN_Vulkan.so"]
    assert "--plugin" not in driver_argv(Cell("3.3.0", "cpu", "-"), Path("d"), None, WORKLOAD, tmp_path, Path("m"))
