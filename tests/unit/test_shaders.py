"""shaders.py: the generated shader sources a mirror leaves out, made with MNN's generator, checked, never half."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from mnnrepro import shaders
from mnnrepro.errors import SourceError

# A stand-in for MNN's makeshader.py with its habits: compiles each shader with glslangValidator from PATH,
# ignores the exit codes, writes AllShader.cpp, rewrites the committed map in its own order, leaves a cache.
FAKE_GENERATOR = textwrap.dedent(
    """
    import os, subprocess
    names = ["glsl_b_comp", "glsl_a_comp"]
    cpp = ""
    for n in names:
        subprocess.run(["glslangValidator", "-V", n + ".comp", "-o", "tempspv"])
        cpp += "const unsigned char " + n + "[] = {0x03};\\n"
    if os.environ.get("SKIP_WRITE") != "1":
        open("AllShader.cpp", "w").write(cpp)
    open("VulkanShaderMap.cpp", "w").write("rewritten")
    os.makedirs(".cache/shader", exist_ok=True)
    """
)
MAP = 'mMaps.insert(std::make_pair("glsl_a_comp", x));\nmMaps.insert(std::make_pair("glsl_b_comp", y));\n'


def _tree(tmp_path: Path, map_text: str = MAP) -> Path:
    tree = tmp_path / "mnn"
    compiler = tree / shaders.COMPILER
    compiler.mkdir(parents=True)
    (compiler.parent / "shaders").mkdir()
    (compiler / "makeshader.py").write_text(FAKE_GENERATOR)
    (compiler / "VulkanShaderMap.cpp").write_text(map_text)
    (compiler.parent / "shaders" / "AllShader.h").write_text("committed header")
    return tree


@pytest.fixture
def fake_glslang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "tool" / "glslangValidator"
    exe.parent.mkdir()
    exe.write_text('#!/bin/sh\ncase "$*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && exit 2;; esac\nexit 0\n')
    exe.chmod(0o755)
    monkeypatch.setattr(shaders, "glslang", lambda cache_dir, say: exe)
    return exe


def test_needed_only_when_the_generator_is_there_and_its_output_is_not(tmp_path: Path) -> None:
    assert not shaders.needed(tmp_path)  # 3.3.0 and older: no generator in the tree, nothing to make
    tree = _tree(tmp_path)
    assert shaders.needed(tree)
    (tree / shaders.GENERATED).write_text("x")
    assert not shaders.needed(tree)


def test_generate_makes_the_file_and_keeps_the_committed_sources(tmp_path: Path, fake_glslang: Path) -> None:
    tree = _tree(tmp_path)
    said: list[str] = []
    done = shaders.generate(tree, tmp_path / "cache", said.append)
    assert done["shaders"] == 2 and done["file"] == shaders.GENERATED
    assert "glsl_a_comp" in (tree / shaders.GENERATED).read_text()
    compiler = tree / shaders.COMPILER
    assert (compiler / "VulkanShaderMap.cpp").read_text() == MAP
    assert (compiler.parent / "shaders" / "AllShader.h").read_text() == "committed header"
    assert not (compiler / ".cache").exists()
    assert any("is missing: generating" in line for line in said)


def test_a_shader_that_fails_to_compile_fails_the_generation(
    tmp_path: Path, fake_glslang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # makeshader.py exits 0 whatever glslang said: the recording wrapper is what catches it.
    monkeypatch.setenv("FAIL_ON", "glsl_a_comp")
    tree = _tree(tmp_path)
    with pytest.raises(SourceError, match=r"1 shader\(s\) failed to compile, first: 2 -V glsl_a_comp.comp"):
        shaders.generate(tree, tmp_path / "cache", lambda _: None)
    assert not (tree / shaders.GENERATED).exists()  # nothing half-made
    assert (tree / shaders.COMPILER / "VulkanShaderMap.cpp").read_text() == MAP


def test_a_shader_of_the_committed_map_left_out_fails_the_generation(tmp_path: Path, fake_glslang: Path) -> None:
    tree = _tree(tmp_path, MAP + 'mMaps.insert(std::make_pair("glsl_c_comp", z));\n')
    with pytest.raises(SourceError, match=r"1 shader\(s\) of VulkanShaderMap.cpp not generated, first: glsl_c_comp"):
        shaders.generate(tree, tmp_path / "cache", lambda _: None)
    assert not (tree / shaders.GENERATED).exists()


def test_no_output_fails_the_generation(tmp_path: Path, fake_glslang: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIP_WRITE", "1")
    with pytest.raises(SourceError, match="could not generate"):
        shaders.generate(_tree(tmp_path), tmp_path / "cache", lambda _: None)


def test_no_xxd_is_a_clear_error_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(shaders, "glslang", lambda cache_dir, say: pytest.fail("installed glslang anyway"))
    with pytest.raises(SourceError, match="needs xxd"):
        shaders.generate(_tree(tmp_path), tmp_path / "cache", lambda _: None)


def _glsl(tree: Path, name: str, text: str) -> None:
    src = tree / shaders.SOURCES
    src.mkdir(parents=True, exist_ok=True)
    (src / name).write_text(text)


def _tree_with_source(path: Path) -> Path:
    """A tree with the generator and one shader source (the same in every tree made this way)."""
    tree = _tree(path)
    _glsl(tree, "relu.comp", "void main() {}")
    return tree


def test_the_same_inputs_are_generated_once_and_taken_from_the_cache(
    tmp_path: Path, fake_glslang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = _tree_with_source(tmp_path / "a")
    made = shaders.generate(first, cache_dir, lambda _: None)
    assert "cached" not in made
    # A later commit with the same generator and shader sources (other files differ): no glslang at all.
    second = _tree_with_source(tmp_path / "b")
    (second / "CMakeLists.txt").write_text("changed elsewhere")
    monkeypatch.setattr(shaders, "glslang", lambda cache_dir, say: pytest.fail("generated again"))
    said: list[str] = []
    hit = shaders.generate(second, cache_dir, said.append)
    assert hit["cached"] == shaders.input_key(first) and hit["shaders"] == 2
    assert (second / shaders.GENERATED).read_bytes() == (first / shaders.GENERATED).read_bytes()
    assert any("from the cache" in line for line in said)


def test_a_changed_shader_source_or_generator_is_generated_again(tmp_path: Path, fake_glslang: Path) -> None:
    tree = _tree_with_source(tmp_path)
    before = shaders.input_key(tree)
    _glsl(tree, "relu.comp", "void main() { }")
    assert shaders.input_key(tree) != before
    after = shaders.input_key(tree)
    (tree / shaders.COMPILER / "makeshader.py").write_text(FAKE_GENERATOR + "\n# changed\n")
    assert shaders.input_key(tree) != after
    # What the generator writes or leaves behind is not an input.
    keyed = shaders.input_key(tree)
    (tree / shaders.GENERATED).write_text("output")
    (tree / shaders.COMPILER / ".cache").mkdir()
    (tree / shaders.COMPILER / ".cache" / "x.spv").write_text("leftover")
    assert shaders.input_key(tree) == keyed


def test_an_incomplete_cache_entry_is_not_used(tmp_path: Path, fake_glslang: Path) -> None:
    cache_dir = tmp_path / "cache"
    tree = _tree_with_source(tmp_path / "a")
    shaders.generate(tree, cache_dir, lambda _: None)
    entry = shaders.store_dir(cache_dir) / shaders.input_key(tree)
    (entry / "AllShader.cpp").write_text("const unsigned char glsl_a_comp[] = {0x03};\n")  # glsl_b_comp lost
    again = _tree_with_source(tmp_path / "b")
    said: list[str] = []
    made = shaders.generate(again, cache_dir, said.append)
    assert "cached" not in made and made["shaders"] == 2
    assert any("incomplete: generating again" in line for line in said)
    assert "glsl_b_comp" in (entry / "AllShader.cpp").read_text()  # the entry made whole again


def test_a_failed_generation_publishes_nothing(
    tmp_path: Path, fake_glslang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_ON", "glsl_a_comp")
    tree = _tree(tmp_path)
    with pytest.raises(SourceError):
        shaders.generate(tree, tmp_path / "cache", lambda _: None)
    store = shaders.store_dir(tmp_path / "cache")
    assert not store.exists() or not any(store.iterdir())


def test_a_read_only_cache_still_serves_and_a_tree_without_shader_sources_is_not_shared(
    tmp_path: Path, fake_glslang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = _tree_with_source(tmp_path / "a")
    shaders.generate(first, cache_dir, lambda _: None)
    entry = shaders.store_dir(cache_dir) / shaders.input_key(first)

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "utime", read_only)
    second = _tree_with_source(tmp_path / "b")
    assert shaders.generate(second, cache_dir, lambda _: None)["cached"] == entry.name
    # No shader sources where the generator reads them: the key would not cover them, so nothing is stored or taken.
    bare = _tree(tmp_path / "c")
    made = shaders.generate(bare, tmp_path / "other-cache", lambda _: None)
    assert "cached" not in made and not shaders.store_dir(tmp_path / "other-cache").exists()
