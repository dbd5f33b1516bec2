"""build: CMake/ninja command lines, plugin modes, content keys, and the artifact cache (with a fake runner)."""

from __future__ import annotations

import ast
import json
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mnnrepro import build
from mnnrepro.build import PLUGINS, Builder, CoreOptions, cmake_configure_args, ninja_args
from mnnrepro.errors import BuildError
from mnnrepro.runner import Completed
from mnnrepro.source import SourceTree
from mnnrepro.workloads.ops import optest

MakeTree = Callable[[Path], Path]


def define(args: Sequence[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"-D{name}=")]
    assert len(values) == 1, f"-D{name} appears {len(values)} times in {args}"
    return values[0]


# -- command lines -------------------------------------------------------------------------------


def test_core_defines_enable_separate_plugins_training_and_both_gpu_backends() -> None:
    defines = CoreOptions().cmake_defines()
    for flag in ("-DMNN_SEP_BUILD=ON", "-DMNN_BUILD_TRAIN=ON", "-DMNN_VULKAN=ON", "-DMNN_OPENCL=ON"):
        assert flag in defines
    assert define(defines, "CMAKE_BUILD_TYPE") == "Release"
    assert define(defines, "CMAKE_CXX_FLAGS") == "-g1"
    assert not any(d.startswith("-DMNN_VULKAN_IMAGE") for d in defines)  # a plugin mode, not a core option


def test_compat_flags_go_into_cxx_flags_only() -> None:
    defines = CoreOptions(compat_cxx_flags=("-include", "cstring")).cmake_defines()
    assert define(defines, "CMAKE_CXX_FLAGS") == "-g1 -include cstring"
    assert define(defines, "CMAKE_C_FLAGS") == "-g1"
    assert "-include" not in defines and "cstring" not in defines  # not loose arguments to cmake


def test_compat_flags_change_the_defines() -> None:
    assert CoreOptions().cmake_defines() != CoreOptions(compat_cxx_flags=("-include", "cstring")).cmake_defines()


def test_configure_args_with_ccache_add_compiler_launchers(tmp_path: Path) -> None:
    args = cmake_configure_args(tmp_path / "src", tmp_path / "b", CoreOptions(), ccache=True)
    assert define(args, "CMAKE_C_COMPILER_LAUNCHER") == "ccache"
    assert define(args, "CMAKE_CXX_COMPILER_LAUNCHER") == "ccache"


def test_configure_args_without_ccache_have_no_launchers(tmp_path: Path) -> None:
    args = cmake_configure_args(tmp_path / "src", tmp_path / "b", CoreOptions(), ccache=False)
    assert not any("LAUNCHER" in a for a in args)
    assert args[:8] == [
        "cmake",
        "-G",
        "Ninja",
        "-S",
        str(tmp_path / "src"),
        "-B",
        str(tmp_path / "b"),
        "-DCMAKE_BUILD_TYPE=Release",
    ]


def test_configure_args_put_extra_defines_last(tmp_path: Path) -> None:
    args = cmake_configure_args(tmp_path, tmp_path / "b", CoreOptions(), ccache=True, extra=("-DX=1", "-DY=2"))
    assert args[-2:] == ["-DX=1", "-DY=2"]


def test_ninja_args_with_jobs(tmp_path: Path) -> None:
    assert ninja_args(tmp_path, ("MNN", "MNNTrain"), 4) == ["ninja", "-C", str(tmp_path), "-j", "4", "MNN", "MNNTrain"]


@pytest.mark.parametrize("jobs", [None, 0])
def test_ninja_args_without_jobs_leave_parallelism_to_ninja(tmp_path: Path, jobs: int | None) -> None:
    assert ninja_args(tmp_path, ("MNN_Vulkan",), jobs) == ["ninja", "-C", str(tmp_path), "MNN_Vulkan"]


def test_vulkan_image_and_buffer_plugins_differ_only_in_the_image_switch() -> None:
    image, buffer = PLUGINS["vulkan-image"], PLUGINS["vulkan-buffer"]
    assert image[:2] == buffer[:2]  # same ninja target, same library
    assert image[2] == ("-DMNN_VULKAN_IMAGE=ON",)
    assert buffer[2] == ("-DMNN_VULKAN_IMAGE=OFF",)


def test_plugin_modes_change_exactly_one_configure_argument(tmp_path: Path) -> None:
    image = cmake_configure_args(
        tmp_path, tmp_path / "b", CoreOptions(), ccache=False, extra=PLUGINS["vulkan-image"][2]
    )
    buffer = cmake_configure_args(
        tmp_path, tmp_path / "b", CoreOptions(), ccache=False, extra=PLUGINS["vulkan-buffer"][2]
    )
    assert len(image) == len(buffer)
    assert [(a, b) for a, b in zip(image, buffer, strict=True) if a != b] == [
        ("-DMNN_VULKAN_IMAGE=ON", "-DMNN_VULKAN_IMAGE=OFF")
    ]


def test_driver_configure_args_point_at_the_core(tmp_path: Path) -> None:
    args = build.driver_configure_args(tmp_path / "mnn", tmp_path / "lib", tmp_path / "b")
    assert define(args, "MNN_SOURCE_DIR") == str(tmp_path / "mnn")
    assert define(args, "MNN_LIB_DIR") == str(tmp_path / "lib")
    assert args[args.index("-S") + 1] == str(build.NATIVE_DIR)


# -- native_key ----------------------------------------------------------------------------------


@pytest.fixture
def native_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "native"
    shutil.copytree(build.NATIVE_DIR, copy, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setattr(build, "NATIVE_DIR", copy)
    return copy


def test_native_key_is_stable(native_copy: Path) -> None:
    assert build.native_key() == build.native_key()


def test_native_key_changes_when_a_native_file_changes(native_copy: Path) -> None:
    before = build.native_key()
    main = native_copy / "src" / "main.cpp"
    main.write_text(main.read_text() + "\n// edited\n")
    assert build.native_key() != before


def test_the_shared_cmake_is_in_the_driver_and_the_optest_keys(native_copy: Path) -> None:
    driver, tool = build.native_key(), build.native_key(optest.OPTEST_PARTS)
    shared = native_copy / "cmake" / "mnn_libs.cmake"
    shared.write_text(shared.read_text() + "\n# edited\n")
    assert build.native_key() != driver and build.native_key(optest.OPTEST_PARTS) != tool


def test_native_key_changes_when_a_file_is_added(native_copy: Path) -> None:
    before = build.native_key()
    (native_copy / "src" / "extra.cpp").write_text("int x;\n")
    assert build.native_key() != before


def test_native_key_ignores_build_directories(native_copy: Path) -> None:
    before = build.native_key()
    (native_copy / "build").mkdir()
    (native_copy / "build" / "mnist_driver").write_bytes(b"\x7fELF")
    assert build.native_key() == before


# -- Builder with a fake runner ------------------------------------------------------------------


@dataclass
class FakeToolchain:
    """Stands in for cmake and ninja: records each command and creates the files a real build would."""

    name: str = "fake"
    calls: list[list[str]] = field(default_factory=list)
    fail: str = ""  # the tool (argv[0]) that fails

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        **kwargs: Any,
    ) -> Completed:
        args = list(argv)
        self.calls.append(args)
        if stdout_path is not None:
            stdout_path.write_text(f"{args[0]}: output line\n")
        if args[0] == self.fail:
            return Completed(tuple(args), 1, 0.0)
        if args[0] == "cmake":
            out = Path(args[args.index("-B") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "build.ninja").write_text("")
        elif args[0] == "ninja":
            out = Path(args[2])
            rels = [*build.CORE_LIBS, *(p[1] for p in PLUGINS.values()), *build.DRIVER_EXES]
            for rel in rels:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(b"built")
        return Completed(tuple(args), 0, 0.0)


@pytest.fixture
def builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Builder, FakeToolchain]:
    monkeypatch.setattr(
        build, "toolchain_fingerprint", lambda runner: {"c++": "fake 1.0", "cmake": "fake", "ninja": "1"}
    )
    fake = FakeToolchain()
    return Builder(tmp_path / "cache", fake, say=lambda _: None), fake


@pytest.fixture
def tree(tmp_path: Path, make_mnn_tree: MakeTree) -> SourceTree:
    return SourceTree(make_mnn_tree(tmp_path / "mnn"), "3.3.0", None, "explicit")


def tools(fake: FakeToolchain) -> list[str]:
    return [c[0] for c in fake.calls]


def test_core_key_depends_on_options_and_is_stable(builder: tuple[Builder, FakeToolchain], tree: SourceTree) -> None:
    b, _ = builder
    plain = b.core_key(tree, CoreOptions())
    assert b.core_key(tree, CoreOptions()) == plain
    assert b.core_key(tree, CoreOptions(compat_cxx_flags=("-include", "cstring"))) != plain


def test_core_key_depends_on_source_content(builder: tuple[Builder, FakeToolchain], tree: SourceTree) -> None:
    b, _ = builder
    before = b.core_key(tree, CoreOptions())
    (tree.path / "extra.cpp").write_text("int y;\n")
    assert b.core_key(tree, CoreOptions()) != before


def test_core_is_built_once_then_cached(builder: tuple[Builder, FakeToolchain], tree: SourceTree) -> None:
    b, fake = builder
    core = b.core(tree, CoreOptions())
    assert tools(fake) == ["cmake", "ninja"]
    assert fake.calls[1][-3:] == list(build.CORE_TARGETS)
    for rel in build.CORE_LIBS:
        assert (core.lib_dir / Path(rel).name).read_bytes() == b"built"
    stamp = json.loads((core.lib_dir / build.STAMP).read_text())
    assert stamp["key"] == core.key
    again = b.core(tree, CoreOptions())
    assert again.key == core.key
    assert len(fake.calls) == 2  # nothing re-run
    assert [e["cached"] for e in b.log.events] == [False, True]


def test_switching_plugin_mode_reconfigures_only_when_needed(
    builder: tuple[Builder, FakeToolchain], tree: SourceTree
) -> None:
    b, fake = builder
    shader = tree.path / "source/backend/vulkan/buffer/compiler/AllShader.cpp"
    shader.parent.mkdir(parents=True)
    shader.write_text("// shaders\n")
    core = b.core(tree, CoreOptions())
    fake.calls.clear()
    image = b.plugin(core, "vulkan-image")
    assert tools(fake) == ["ninja"]  # the core was configured in image mode already
    fake.calls.clear()
    buffer = b.plugin(core, "vulkan-buffer")
    assert tools(fake) == ["cmake", "ninja"]
    assert fake.calls[0][-1] == "-DMNN_VULKAN_IMAGE=OFF"
    assert image.parent.name == "vulkan-image" and buffer.parent.name == "vulkan-buffer"
    assert image.is_file() and buffer.is_file() and image != buffer
    fake.calls.clear()
    assert b.plugin(core, "vulkan-image") == image
    assert fake.calls == []
    # A variant that differs only at run time (precision low) runs the buffer plugin: nothing is built.
    assert b.plugin(core, "vulkan-buffer-low") == buffer
    assert fake.calls == []


def test_unknown_plugin_kind_is_a_build_error(builder: tuple[Builder, FakeToolchain], tree: SourceTree) -> None:
    b, _ = builder
    core = b.core(tree, CoreOptions())
    with pytest.raises(BuildError, match="unknown plugin kind 'metal'"):
        b.plugin(core, "metal")


def test_buffer_mode_without_generated_shaders_fails_before_building(
    builder: tuple[Builder, FakeToolchain], tree: SourceTree
) -> None:
    b, fake = builder
    core = b.core(tree, CoreOptions())
    fake.calls.clear()
    with pytest.raises(BuildError, match=r"AllShader\.cpp") as info:
        b.plugin(core, "vulkan-buffer")
    assert "makeshader.py" in info.value.hint
    assert fake.calls == []


def test_failed_core_build_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    b = Builder(tmp_path / "cache", FakeToolchain(fail="ninja"), say=lambda _: None)
    with pytest.raises(BuildError, match="core build failed") as info:
        b.core(tree, CoreOptions())
    assert "ninja: output line" in info.value.message  # the log's tail
    assert "core.log" in info.value.hint
    assert not (tmp_path / "cache" / "variants").exists()


def test_driver_is_keyed_by_native_sources(
    builder: tuple[Builder, FakeToolchain], tree: SourceTree, native_copy: Path
) -> None:
    b, fake = builder
    core = b.core(tree, CoreOptions())
    first = b.driver(core)
    assert first.is_file() and first.parent.name == f"driver-{build.native_key()[:16]}"
    fake.calls.clear()
    assert b.driver(core) == first
    assert fake.calls == []
    (native_copy / "src" / "main.cpp").write_text("// changed\n")
    second = b.driver(core)
    assert second != first and tools(fake) == ["cmake", "ninja"]


class InterruptedToolchain(FakeToolchain):
    """ninja is killed (Ctrl-C, OOM, power) halfway: some outputs exist, the run never returns."""

    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        if argv[0] == "ninja":
            out = Path(list(argv)[2])
            (out / "libMNN.so").parent.mkdir(parents=True, exist_ok=True)
            (out / "libMNN.so").write_bytes(b"half")
            raise KeyboardInterrupt
        return super().run(argv, **kwargs)


def test_killed_build_leaves_no_entry_and_the_next_run_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree
) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    killed = Builder(tmp_path / "cache", InterruptedToolchain(), say=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        killed.core(tree, CoreOptions())
    variants = tmp_path / "cache" / "variants"
    assert not any(p.name == "lib" and (p / build.STAMP).exists() for p in variants.rglob("lib"))
    # A half-written entry left by hand (or an older suite) is detected by its missing stamp and replaced.
    key = killed.core_key(tree, CoreOptions())[:24]
    half = variants / key / "lib"
    half.mkdir(parents=True, exist_ok=True)
    (half / "libMNN.so").write_bytes(b"half")
    fake = FakeToolchain()
    core = Builder(tmp_path / "cache", fake, say=lambda _: None).core(tree, CoreOptions())
    assert [c[0] for c in fake.calls] == ["ninja"]  # the configure survived the kill; ninja finishes the job
    assert (core.lib_dir / "libMNN.so").read_bytes() == b"built"
    assert (core.lib_dir / build.STAMP).is_file()


class SlowToolchain(FakeToolchain):
    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        if argv[0] == "ninja":
            time.sleep(0.5)
        return super().run(argv, **kwargs)


def test_concurrent_invocations_build_once_and_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree
) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    fakes = [SlowToolchain(), SlowToolchain()]
    results: list[Any] = [None, None]

    def worker(i: int) -> None:
        results[i] = Builder(tmp_path / "cache", fakes[i], say=lambda _: None).core(tree, CoreOptions())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # generous: a loaded 2-core machine
    assert results[0] is not None and results[1] is not None
    assert results[0].key == results[1].key
    ninja_runs = sum(1 for f in fakes for c in f.calls if c[0] == "ninja")
    assert ninja_runs == 1  # the second waited on the lock, then found the finished entry


def test_each_runner_has_its_own_ccache(tmp_path: Path) -> None:
    """The Docker runner's container user and a host build (another user) must not share ccache's directories."""
    host = Builder(tmp_path, SimpleNamespace(name="host"), say=lambda _: None)
    docker = Builder(tmp_path, SimpleNamespace(name="docker"), say=lambda _: None)
    assert host.ccache_dir == tmp_path / "ccache" and docker.ccache_dir == tmp_path / "ccache-docker"
    assert docker._env()["CCACHE_DIR"] == str(tmp_path / "ccache-docker")


def test_build_knows_no_workload() -> None:
    """Issue 23: build.py makes cores, plugins and the driver; a workload's own tool (mnn_optest) is built on the
    workload's side (optest.build_binary) with the Builder's public pieces, so build.py imports no workload."""
    tree = ast.parse(Path(build.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    workloads = {"optest", "opsession", "opjudge", "session", "golden", "reduce", "redsession", "workloads"}
    assert not {name.rsplit(".", 1)[-1] for name in imported} & workloads
    assert not hasattr(build.Builder, "optest")


# -- mnn_optest (issue 21, item 7: every op/ and grad/ registration, wherever its source is) -------------------


def test_optest_configure_passes_exactly_the_scanned_test_sources(tmp_path: Path) -> None:
    sources = ["grad/ReluGradTest.cpp", "op/ConvTest.cpp", "speed/HybridConvSpeedTest.cpp"]
    args = optest.configure_args(
        tmp_path / "mnn", tmp_path / "lib", tmp_path / "b", defines=[], exclude=[], ccache=False, sources=sources
    )
    assert define(args, "MNNREPRO_TEST_SOURCES") == ";".join(sources)
    assert args[args.index("-S") + 1] == str(build.NATIVE_DIR / "optest")


@dataclass
class OptestToolchain(FakeToolchain):
    """cmake and ninja as FakeToolchain, ninja also makes mnn_optest, whose --list prints `listing`."""

    listing: str = ""

    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        if argv[0] == "ninja":
            (Path(list(argv)[2]) / "mnn_optest").write_bytes(b"built")
        if list(argv)[1:] == ["--list"]:
            self.calls.append(list(argv))
            return Completed(tuple(argv), 0, 0.0, output=self.listing)
        return super().run(argv, **kwargs)


def test_optest_builds_registrations_outside_test_op_and_names_what_it_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree
) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    test_dir = tree.path / "test"
    (test_dir / "op").mkdir(parents=True)
    (test_dir / "speed").mkdir()
    (test_dir / "op" / "ConvTest.cpp").write_text('MNNTestSuiteRegister(A, "op/conv");\n')
    (test_dir / "speed" / "ConvSpeedTest.cpp").write_text('MNNTestSuiteRegister(S, "speed/conv");\n')
    (test_dir / "speed" / "HybridConvSpeedTest.cpp").write_text(
        '#ifdef MNN_LOW_MEMORY\nMNNTestSuiteRegister(P, "op/int4Ptq");\n#endif\n'
        'MNNTestSuiteRegister(D, "op/lowMemory/DenseConv");\n'
    )
    fake = OptestToolchain(listing="op/conv\nop/lowMemory/DenseConv\n")
    said: list[str] = []
    b = Builder(tmp_path / "cache", fake, say=said.append)
    binary = optest.build_binary(b, b.core(tree, CoreOptions()))
    configure = [c for c in fake.calls if c[0] == "cmake" and str(build.NATIVE_DIR / "optest") in c][-1]
    assert define(configure, "MNNREPRO_TEST_SOURCES") == "op/ConvTest.cpp;speed/HybridConvSpeedTest.cpp"
    assert binary.tests == ("op/conv", "op/lowMemory/DenseConv")
    assert binary.registered == ("op/conv", "op/int4Ptq", "op/lowMemory/DenseConv")
    assert binary.left_out["op/int4Ptq"].startswith("compiled out: needs MNN_LOW_MEMORY")
    assert any(line.startswith("mnn_optest: tests: 2 built of 3 registered") and "op/int4Ptq" in line for line in said)
    again = build.Builder(tmp_path / "cache", fake, say=said.append)
    assert optest.build_binary(again, b.core(tree, CoreOptions())) == binary
