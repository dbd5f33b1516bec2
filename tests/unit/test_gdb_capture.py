"""gdb_capture.py under a real gdb, on tiny C programs (no MNN): crash.json, backtrace.txt, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mnnrepro import cells
from mnnrepro.runner import Completed, HostRunner

GCC = shutil.which("gcc")
GDB = shutil.which("gdb")
pytestmark = pytest.mark.skipif(
    GCC is None or GDB is None, reason="needs gcc and gdb on PATH (apt-get install gcc gdb)"
)

CRASH_C = """
#include <stddef.h>
#include <stdio.h>

void crash_here(volatile int *p) {
    *p = 42;
}

int main(void) {
    puts("about to crash");
    fflush(stdout);
    crash_here(NULL);
    return 0;
}
"""

EXIT_C = "int main(void) { return 7; }\n"


def compile_c(directory: Path, name: str, text: str) -> Path:
    src = directory / f"{name}.c"
    src.write_text(text)
    exe = directory / name
    assert GCC is not None
    subprocess.run([GCC, "-g", "-O0", "-o", str(exe), str(src)], check=True, capture_output=True)
    return exe


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("gdb-programs")
    return {"crash": compile_c(directory, "crash", CRASH_C), "exit7": compile_c(directory, "exit7", EXIT_C)}


def under_gdb(program: Path, crash_dir: Path) -> Completed:
    assert GDB is not None
    argv = [GDB, "-q", "-nx", "-batch", "-x", str(cells.GDB_SCRIPT), "--args", str(program)]
    return HostRunner().run(
        argv,
        env={"MNNREPRO_CRASH_DIR": str(crash_dir)},
        timeout_s=60,
        stdout_path=crash_dir / "stdout.txt",
        stderr_path=crash_dir / "stderr.txt",
    )


def test_a_segfault_is_captured(tmp_path: Path, programs: dict[str, Path]) -> None:
    res = under_gdb(programs["crash"], tmp_path)
    assert res.returncode == 139, (tmp_path / "stderr.txt").read_text()
    assert res.signal_name == "SIGSEGV"
    crash = json.loads((tmp_path / "crash.json").read_text())
    assert crash["format"] == 1
    assert (crash["signal"], crash["signal_number"]) == ("SIGSEGV", 11)
    assert crash["fault_address"] == "0x0"
    functions = [f["function"] for f in crash["frames"]]
    assert functions[0] == "crash_here"
    assert "main" in functions
    top = crash["frames"][0]
    assert isinstance(top["line"], int) and top["line"] > 0
    assert top["file"].endswith("crash.c")
    backtrace = (tmp_path / "backtrace.txt").read_text()
    assert "crash_here" in backtrace and "SIGSEGV" in backtrace
    assert "about to crash" in (tmp_path / "stdout.txt").read_text()


def test_a_normal_exit_passes_its_code_through(tmp_path: Path, programs: dict[str, Path]) -> None:
    res = under_gdb(programs["exit7"], tmp_path)
    assert res.returncode == 7
    assert res.signal is None
    assert not (tmp_path / "crash.json").exists()
    assert not (tmp_path / "backtrace.txt").exists()
