"""tools/structure.py (issue 23, "Must show: Structure") on small synthetic trees: each problem it must find."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tools import structure  # tools/ is a package beside src/: developer tools, not part of mnnrepro

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "structure.py"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


LAYERS = """
[[layers]]
name = "low"
modules = ["__init__", "a", "b"]

[[layers]]
name = "high"
modules = ["top", "sub", "sub.*"]
"""


def analyse(tmp_path: Path, files: dict[str, str], layers: str = LAYERS, native: dict[str, str] | None = None) -> Any:
    write(tmp_path / "src" / "pkg", {"__init__.py": "", **files})
    (tmp_path / "layers.toml").write_text(layers)
    native_dir = write(tmp_path / "native", native) if native is not None else None
    return structure.analyse(tmp_path / "src" / "pkg", tmp_path / "layers.toml", native_dir, 80)


def edges(report: Any) -> set[tuple[str, str, str]]:
    return {(e.importer, e.imported, e.kind) for e in report.edges}


def test_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    report = analyse(
        tmp_path,
        {
            "a.py": "from . import b\n",
            "b.py": "def f() -> None:\n    from .a import thing\n",
            "top.py": "from pkg import a\n",
        },
    )
    assert ("b", "a", "function") in edges(report)
    assert report.cycles == [["a", "b"]]
    assert "- a, b: a -> b (line 1, module); b -> a (line 2, function)" in structure.render(report)
    assert "1 import cycles" in report.failures()


def test_no_cycle_when_imports_run_one_way(tmp_path: Path) -> None:
    report = analyse(tmp_path, {"a.py": "", "b.py": "from . import a\n", "top.py": "from . import a, b\n"})
    assert report.cycles == [] and report.back_imports == [] and report.failures() == []


def test_finds_an_import_that_runs_back_up_a_layer(tmp_path: Path) -> None:
    report = analyse(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import Thing\n",
            "b.py": "",
            "top.py": "from .b import x\n",
        },
    )
    assert [(e.importer, e.imported, e.kind) for e in report.back_imports] == [("a", "top", "type-checking")]
    assert ("top", "b", "module") in edges(report)  # down a layer: allowed
    assert "| `a` (line 3) | `top` | low -> high | type-checking |" in structure.render(report)
    assert "1 imports that run back up a layer" in report.failures()


def test_resolves_every_kind_of_intra_package_import(tmp_path: Path) -> None:
    report = analyse(
        tmp_path,
        {
            "a.py": "import os\nimport pkg.b\nfrom pkg import VERSION\n",
            "b.py": "from os import path\n",
            "top.py": "from pkg.sub import mod as m\nfrom . import sub\n",
            "sub/__init__.py": "from .mod import name\n",
            "sub/mod.py": "from .. import a\nfrom ..b import thing\nfrom . import other\n",
            "sub/other.py": "import pkg\n",
        },
    )
    assert edges(report) == {
        ("a", "b", "module"),
        ("a", "__init__", "module"),  # a name of the package itself
        ("top", "sub.mod", "module"),
        ("top", "sub", "module"),
        ("sub", "sub.mod", "module"),
        ("sub.mod", "a", "module"),
        ("sub.mod", "b", "module"),
        ("sub.mod", "sub.other", "module"),
        ("sub.other", "__init__", "module"),
    }
    assert report.layer_of["sub.mod"] == "high"


def test_a_module_in_no_layer_or_in_two_is_an_error(tmp_path: Path) -> None:
    layers = LAYERS + '\n[[layers]]\nname = "also"\nmodules = ["b"]\n'
    report = analyse(tmp_path, {"a.py": "", "b.py": "", "top.py": "", "stray.py": ""}, layers)
    assert report.unlayered == ["stray"]
    assert report.ambiguous == {"b": ["low", "also"]}
    assert set(report.failures()) == {"1 modules in no layer", "1 modules in more than one layer"}


def _python_function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x = {i}\n" for i in range(lines - 2))
    return f"{indent}@decorator\n{indent}def {name}() -> int:\n{body}{indent}    return 0\n"


def test_finds_python_functions_over_the_limit(tmp_path: Path) -> None:
    method = "class C:\n" + _python_function("long_method", 90, "    ")
    files = {
        "a.py": "import x\n\n" + _python_function("short", 80) + _python_function("long", 81),
        "b.py": method,
        "top.py": "",
    }
    report = analyse(tmp_path, files)
    found = {(f.path, f.line, f.name, f.length) for f in report.long_python}
    assert found == {("src/pkg/a.py", 85, "long", 81), ("src/pkg/b.py", 3, "C.long_method", 90)}
    assert "| src/pkg/a.py:85 | `long` | 81 |" in structure.render(report)


CPP_LONG = """\
#include <string>
#define BRACE {
// a comment with a brace {
namespace demo {
class Widget : public Base {
public:
    Widget(int a) : a_{a}, b_(a) {
        s_ = "}}}";
    }
    int small() const override { return a_; }
    int a_, b_;
    std::string s_;
};
static const int kTable[] = {1, 2, 3};
template <typename T>
auto twice(T t) -> decltype(t + t) {
    return t + t;
}
int longOne(int n) {
    auto f = [](int v) {
        return v + '{';
    };
    int total = 1'000;
LINES    return f(total);
}
}  // namespace demo
"""


def test_finds_native_functions_over_the_limit(tmp_path: Path) -> None:
    body = "".join(f"    if (n > {i}) {{ total += {i}; }}  /* }} */\n" for i in range(77))
    native = {"src/main.cpp": CPP_LONG.replace("LINES", body), "src/short.hpp": CPP_LONG.replace("LINES", "")}
    report = analyse(tmp_path, {"a.py": "", "b.py": "", "top.py": ""}, native=native)
    assert [(f.path, f.line, f.name, f.length) for f in report.long_native] == [
        ("native/src/main.cpp", 19, "longOne", 84)
    ]
    every = structure.native_functions(native["src/short.hpp"], "short.hpp")
    assert [(f.name, f.line, f.length) for f in every] == [
        ("Widget", 7, 3),
        ("small", 10, 1),
        ("twice", 16, 3),
        ("longOne", 19, 7),
    ]
    assert "1 native functions over 80 lines" in report.failures()


def test_cli_check_fails_on_a_problem_and_passes_a_clean_tree(tmp_path: Path) -> None:
    write(tmp_path / "clean" / "pkg", {"__init__.py": "", "a.py": "", "b.py": "from . import a\n", "top.py": ""})
    write(tmp_path / "bad" / "pkg", {"__init__.py": "", "a.py": "from . import top\n", "b.py": "", "top.py": ""})
    (tmp_path / "layers.toml").write_text(LAYERS)
    for tree, want in (("clean", 0), ("bad", 1)):
        args = ["--src", str(tmp_path / tree / "pkg"), "--layers", str(tmp_path / "layers.toml"), "--native", ""]
        res = subprocess.run([sys.executable, str(TOOL), *args, "--check"], capture_output=True, text=True)
        assert res.returncode == want, res.stderr
        assert "| modules | 4 (" in res.stdout
        plain = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)
        assert plain.returncode == 0  # without --check the report never fails


def test_reads_the_real_tree_and_its_layers() -> None:
    report = structure.analyse(ROOT / "src" / "mnnrepro", ROOT / "tools" / "layers.toml", ROOT / "native")
    assert len(report.modules) > 10 and len(report.layers) > 3 and len(report.edges) > 10
    assert any(f.name == "main" for f in structure.native_functions((ROOT / "native/src/main.cpp").read_text(), "m"))


@pytest.mark.parametrize("text", ["", "[[layers]]\nname = 1\nmodules = []\n"])
def test_rejects_a_malformed_layers_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "layers.toml").write_text(text)
    with pytest.raises(ValueError, match="layers"):
        structure.load_layers(tmp_path / "layers.toml")


def test_the_tree_holds_the_line() -> None:
    """Issue 23: no cycle, no import back up a layer, every module in one layer, no function over 80 lines in
    src/ or native/. A change that breaks one of them fails here (and `python3 tools/structure.py --check`)."""
    report = structure.analyse(ROOT / "src" / "mnnrepro", ROOT / "tools" / "layers.toml", ROOT / "native")
    assert report.failures() == []
