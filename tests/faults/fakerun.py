"""The fault battery's entry point: ``python tests/faults/fakerun.py PLAN.json ARGS...`` is ``python -m mnnrepro
ARGS...`` with a few of the session's seams replaced as PLAN.json says, in a process of its own (so a real
signal, a real exit code and real leftovers can be observed from outside).

Modes ("mode" in the plan):
  fake     no MNN: ``prepare.build_ref`` resolves the source as usual (a bad --ref or an unreachable server is
           still the real code's to catch) and returns tests/faults/fake_driver.py as the driver on the host
           runner, with fake plugins; ``icd.resolve`` gives lavapipe and swiftshader fake manifests; no gdb;
           the preflight is skipped. Everything else (settings, matrix, fixtures, judge, reports, interrupts)
           is the suite's own.
  cached   the real MNN driver and plugins the Docker runner built earlier (paths in the plan), run on the host
           runner with the real preflight, gdb and ICDs: the host runner's behaviour without building MNN.
  build    the real ``build`` command on a fake MNN source tree (a tiny CMake project): the preflight is skipped
           and the native driver is not built (it needs MNN's headers); the core build is real.
  plain    nothing replaced but the module constants under "patch".

"patch" sets module constants first, e.g. {"mnnrepro.source.NETWORK_TIMEOUT_S": 2}: time limits a test shortens.

"signal_at" sends a signal at one of the session's own moments: {"call": "mnnrepro.report.summary", "when":
"before" or "after" (the call), "signum": 15, "group": false (the process) or true (its group, as a terminal's
Ctrl-C)}. The first such call sends it (to this process, so it lands there and then, not some time later), and
the moment is written to SIGNAL_SENT beside the plan (read by battery.phase_sent).

The process runs as `python -m mnnrepro` does: cli.console, its handlers and its exit.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
FAKE_DRIVER = HERE / "fake_driver.py"
SIGNAL_SENT = "signal-sent.json"  # beside the plan: the moment a planned signal was sent (fake_driver.py too)
FAKE_TOOLCHAIN = {"c++": "fake", "cc": "fake", "cmake": "fake", "ninja": "fake", "runner": "host"}


def _replace(owner: ModuleType | type, name: str, value: object) -> None:
    """Swap one of the suite's seams, by name (its signature stays the suite's business); a seam that was renamed
    stops the battery with a clear message instead of silently running the real thing."""
    if not hasattr(owner, name):
        raise SystemExit(f"fakerun: {owner.__name__} has no {name} to replace: update tests/faults/fakerun.py")
    setattr(owner, name, value)


def _replace_seam(owner: ModuleType, name: str, value: object) -> None:
    """``_replace``, and the same in every module of the suite that imported the original by name (``from
    .session import build_ref``), so no caller keeps the real one."""
    original = getattr(owner, name, None)
    _replace(owner, name, value)
    import mnnrepro.cli  # noqa: F401 - loads the modules that bind the seams by name

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("mnnrepro") and module is not owner and getattr(module, name, None) is original:
            setattr(module, name, value)


def _patch_constants(patches: dict[str, Any]) -> None:
    for dotted, value in patches.items():
        module_name, _, attr = dotted.rpartition(".")
        _replace(importlib.import_module(module_name), attr, value)


def _no_preflight() -> None:
    from mnnrepro import prepare
    from mnnrepro.settings import Settings

    def preflight_for(settings: Settings, variants: tuple[str, ...], say: Callable[[str], None], **_: Any) -> Any:
        say("preflight: skipped by the fault battery (fakerun.py)")
        return replace(settings, runner="host" if settings.runner == "auto" else settings.runner), []

    _replace_seam(prepare, "preflight_for", preflight_for)


def _resolve_tree(ref: str, settings: Any, matrix: Any) -> Any:
    from mnnrepro import prepare

    return prepare.resolve_tree(ref, settings, matrix)  # as the real preparation resolves it


def _fake(plan: dict[str, Any]) -> None:
    from mnnrepro import icd, prepare
    from mnnrepro.build import Builder, Core, CoreOptions
    from mnnrepro.runner import HostRunner

    root = Path(plan["fake_root"])
    root.mkdir(parents=True, exist_ok=True)
    driver_plan = root / "driver-plan.json"
    driver_plan.write_text(json.dumps(plan.get("driver_plan") or {}))
    wrapper = root / "mnist_driver"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_DRIVER}" --fake-plan "{driver_plan}" "$@"\n')
    wrapper.chmod(0o755)
    real_resolve = icd.resolve

    def fake_icd(name: str, cache_dir: Path, runner: str = "host") -> icd.Icd:
        if name not in ("lavapipe", "swiftshader"):
            return real_resolve(name, cache_dir, runner)
        manifest = root / "icd" / f"{name}.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"file_format_version": "1.0.0", "ICD": {"library_path": "/fake/lib.so"}}))
        return icd.Icd(name, manifest, {"VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest)})

    def build_ref(ref: str, variants: tuple[str, ...], settings: Any, matrix: Any, say: Callable[[str], None]) -> Any:
        tree = _resolve_tree(ref, settings, matrix)
        say(f"source: {tree.describe()}")
        say("build: the fault battery's fake driver (tests/faults/fake_driver.py); nothing is built")
        runner = HostRunner()
        builder = Builder(settings.cache_dir, runner, say=say)
        builder._toolchain = dict(FAKE_TOOLCHAIN)
        key = "fa" * 32
        core = Core(key, tree, root / "build", root / "variants", CoreOptions())
        plugins = {}
        for variant in variants:
            if variant != "cpu":
                lib = root / "plugins" / variant / "libMNN_Vulkan.so"
                lib.parent.mkdir(parents=True, exist_ok=True)
                lib.write_bytes(b"")
                plugins[variant] = lib
        return prepare.Built(ref, tree, matrix.ref_info(ref), runner, builder, core, wrapper, plugins, 0.0)

    def refuse(self: Builder, *args: object, **kwargs: object) -> Any:
        raise SystemExit("fakerun: the fake mode reached a real build: a seam of the session was renamed")

    for method in ("core", "plugin", "driver"):
        _replace(Builder, method, refuse)
    _replace_seam(icd, "resolve", fake_icd)
    _replace_seam(prepare, "build_ref", build_ref)
    _replace_seam(prepare, "usable_gdb", lambda runner, say: None)
    _no_preflight()


def _cached(plan: dict[str, Any]) -> None:
    from mnnrepro import prepare
    from mnnrepro.build import Builder, Core, CoreOptions
    from mnnrepro.runner import HostRunner

    cached = plan["cached"]

    def build_ref(ref: str, variants: tuple[str, ...], settings: Any, matrix: Any, say: Callable[[str], None]) -> Any:
        tree = _resolve_tree(ref, settings, matrix)
        say(f"source: {tree.describe()}")
        say(f"build: the Docker runner's cached core [{cached['core_key'][:12]}], run on the host runner")
        runner = HostRunner()
        builder = Builder(settings.cache_dir, runner, say=say)
        info = matrix.ref_info(ref)
        options = CoreOptions(compat_cxx_flags=info.compat_cxx_flags)
        core = Core(cached["core_key"], tree, Path(cached["build_dir"]), Path(cached["variant_dir"]), options)
        plugins = {v: Path(cached["plugins"][v]) for v in variants if v != "cpu"}
        return prepare.Built(ref, tree, info, runner, builder, core, Path(cached["driver"]), plugins, 0.0)

    _replace_seam(prepare, "build_ref", build_ref)


def _build(plan: dict[str, Any]) -> None:
    from mnnrepro.build import Builder, Core

    def driver(self: Builder, core: Core) -> Path:
        self.say("native driver: not built by the fault battery (a fake MNN tree has no headers for it)")
        return core.variant_dir / "no-driver"

    _replace(Builder, "driver", driver)
    _no_preflight()


def send_signal(signum: int, group: bool, phase: str, record: Path) -> None:
    """Send ``signum`` to this process (or its group) and note the moment first (the signal may end it)."""
    record.write_text(json.dumps({"signum": signum, "group": group, "phase": phase, "at": time.time()}))
    if group:
        os.killpg(os.getpgid(0), signum)
    else:
        os.kill(os.getpid(), signum)


def _signal_at(spec: dict[str, Any], record: Path) -> None:
    """Wrap the named callable so that its first call sends the planned signal before or after it runs."""
    owner_name, _, name = str(spec["call"]).rpartition(".")
    try:
        owner: Any = importlib.import_module(owner_name)
    except ModuleNotFoundError:  # a method: "module.Class.method"
        module_name, _, class_name = owner_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), class_name)
    original = getattr(owner, name, None)
    if original is None:
        raise SystemExit(f"fakerun: {spec['call']} does not exist: update the battery's phases")
    fired: list[bool] = []
    after = spec.get("when") == "after"

    def send() -> None:
        if not fired:
            fired.append(True)
            send_signal(int(spec["signum"]), bool(spec.get("group")), f"{spec['when']} {spec['call']}", record)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not after:
            send()
        result = original(*args, **kwargs)
        if after:
            send()
        return result

    if isinstance(owner, ModuleType):
        _replace_seam(owner, name, wrapper)
    else:
        _replace(owner, name, wrapper)


def main() -> None:
    plan_path = Path(sys.argv[1])
    plan = json.loads(plan_path.read_text())
    _patch_constants(plan.get("patch") or {})
    mode = plan.get("mode", "plain")
    if mode == "fake":
        _fake(plan)
    elif mode == "cached":
        _cached(plan)
    elif mode == "build":
        _build(plan)
    elif mode != "plain":
        raise SystemExit(f"fakerun: unknown mode {mode!r}")
    if plan.get("signal_at"):
        _signal_at(plan["signal_at"], plan_path.parent / SIGNAL_SENT)
    from mnnrepro import cli

    # As `python -m mnnrepro` runs: the process's handlers, the command and the exit (cli.console).
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    cli.console()


if __name__ == "__main__":
    main()
