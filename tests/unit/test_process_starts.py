"""One process module (issue 23): only the runner starts or kills processes in the library.

An AST scan of src/mnnrepro: no module but the runner imports ``subprocess`` or calls os.kill, os.killpg, os.fork*,
os.exec*, os.spawn*, os.posix_spawn*, os.system or os.popen. The scripts that run inside a runner (optest_batch,
gdb_capture) are standalone and keep their own process code; they import nothing of the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mnnrepro

PACKAGE = Path(mnnrepro.__file__).parent
RUNNER_MODULES = {"runner.py"}
STANDALONE = {"workloads/ops/optest_batch.py", "gdb_capture.py"}  # paths in the package
PROCESS_MODULES = {"subprocess"}
OS_PREFIXES = ("kill", "fork", "exec", "spawn", "posix_spawn", "system", "popen")


def _os_call(node: ast.Call, os_names: dict[str, str]) -> str | None:
    """``os.X(...)`` (or ``X(...)`` after ``from os import X``) where X starts a process or signals one."""
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os":
        name = func.attr
    elif isinstance(func, ast.Name) and func.id in os_names:
        name = os_names[func.id]
    else:
        return None
    return f"os.{name}" if name.startswith(OS_PREFIXES) else None


def process_uses(source: str) -> list[str]:
    """What in ``source`` starts or kills a process: 'import subprocess' and 'os.killpg()' lines, with line numbers."""
    tree = ast.parse(source)
    os_names = {
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for alias in node.names
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in PROCESS_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROCESS_MODULES:
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and (call := _os_call(node, os_names)) is not None:
            found.append(f"{node.lineno}: {call}()")
    return found


def library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).as_posix() not in STANDALONE)


def test_the_scan_sees_every_way_of_starting_or_killing_a_process() -> None:
    code = (
        "import os, subprocess\nfrom os import execvp as ex\nfrom subprocess import run\n"
        "os.killpg(1, 9)\nos.kill(1, 9)\nos.system('x')\nos.popen('x')\nos.spawnv(0, 'x', [])\nos.fork()\n"
        "os.posix_spawn('x', [], {})\nex('x', [])\nos.getpid()\nos._exit(0)\n"
    )
    assert sorted(process_uses(code)) == sorted(
        [
            "1: import subprocess",
            "3: from subprocess import ...",
            "4: os.killpg()",
            "5: os.kill()",
            "6: os.system()",
            "7: os.popen()",
            "8: os.spawnv()",
            "9: os.fork()",
            "10: os.posix_spawn()",
            "11: os.execvp()",
        ]
    )


def test_only_the_runner_starts_or_kills_processes() -> None:
    offenders = {}
    for path in library_modules():
        if path.relative_to(PACKAGE).as_posix() in RUNNER_MODULES:
            continue
        uses = process_uses(path.read_text())
        if uses:
            offenders[path.relative_to(PACKAGE).as_posix()] = uses
    assert not offenders, "processes are started or killed outside mnnrepro.runner (use runner.host_command):\n" + (
        "\n".join(f"  {name}: {'; '.join(uses)}" for name, uses in sorted(offenders.items()))
    )


def test_the_runner_is_where_processes_start() -> None:
    # The scan is not vacuous: the runner module exists and does start processes.
    runner = PACKAGE / "runner.py"
    assert any("import subprocess" in use for use in process_uses(runner.read_text()))


def test_the_scripts_that_run_inside_a_runner_import_nothing_of_the_library() -> None:
    for name in sorted(STANDALONE):
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("mnnrepro"), (
                    f"{name}: {ast.unparse(node)}"
                )
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("mnnrepro") for a in node.names), f"{name}: {ast.unparse(node)}"
