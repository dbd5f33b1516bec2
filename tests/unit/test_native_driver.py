"""The native driver's shape (issue 23, "Native"): the model behind model.hpp, main split into parts, no native
function over 80 lines (the brace count of tools/structure.py). Text only; nothing is built."""

from __future__ import annotations

import re

from mnnrepro.build import NATIVE_DIR
from tools import structure

SRC = NATIVE_DIR / "src"


def _driver_sources() -> list[str]:
    """The mnist_driver sources native/CMakeLists.txt compiles, relative to native/."""
    cmake = (NATIVE_DIR / "CMakeLists.txt").read_text()
    call = re.search(r"add_executable\(mnist_driver\s+([^)]*)\)", cmake)
    assert call is not None
    return call.group(1).split()


def test_no_native_function_is_over_80_lines() -> None:
    long = structure.long_native_functions(NATIVE_DIR, 80)
    assert [f"{f.path}:{f.line} {f.name} ({f.length} lines)" for f in long] == []


def test_every_driver_source_is_compiled() -> None:
    # A part left out of CMakeLists.txt would not link; a model file left out would be silently absent.
    compiled = set(_driver_sources())
    present = {p.relative_to(NATIVE_DIR).as_posix() for p in SRC.rglob("*.cpp")}
    driver_only = present - {"src/" + name for name in ("probe.cpp", "tensorstore.cpp")}
    assert driver_only <= compiled
    assert {"src/main.cpp", "src/models/lenet.cpp", "src/models/registry.cpp"} <= compiled


def test_the_model_is_behind_its_interface() -> None:
    # Only the model's own file knows its layers; the driver's parts know the interface (model.hpp).
    interface = (SRC / "model.hpp").read_text()
    for member in ("inputShape", "classes", "build", "loss", "parameters"):
        assert re.search(rf"virtual [^;]*\b{member}\(", interface), member
    for name in _driver_sources():
        if name.startswith("src/models/"):
            continue
        text = structure.blank_cpp((NATIVE_DIR / name).read_text())  # code only: comments may name the model
        assert not re.search(r"\bLenet\b|NN::Conv|NN::Linear|_CrossEntropy", text), name
    lenet = (SRC / "models" / "lenet.cpp").read_text()
    assert "class LenetModel : public TrainModel" in lenet and "makeLenet()" in lenet
    assert re.search(r'\{"lenet", makeLenet\}', (SRC / "models" / "registry.cpp").read_text())
    assert "makeModel(opt.model)" in (SRC / "main.cpp").read_text()  # --model (issue 24)


def test_model_flag_picks_a_registered_model() -> None:
    # Issue 24: --model NAME (default lenet, so every existing command line trains Lenet as before), checked
    # against the registry's names; MnistV2 is registered and compiled.
    options = (SRC / "options.cpp").read_text()
    assert re.search(r'\{"--model", &Options::model\}', options)
    assert re.search(r'std::string model = "lenet";', (SRC / "options.hpp").read_text())
    assert "modelNames()" in options and "known models: " in options
    assert re.search(r'\{"mnistv2", makeMnistV2\}', (SRC / "models" / "registry.cpp").read_text())
    assert "src/models/mnistv2.cpp" in _driver_sources()
    mnistv2 = (SRC / "models" / "mnistv2.cpp").read_text()
    assert "class MnistV2Model : public TrainModel" in mnistv2 and "makeMnistV2()" in mnistv2


def test_main_only_puts_the_parts_in_order() -> None:
    functions = structure.native_functions((SRC / "main.cpp").read_text(), "main.cpp")
    assert [f.name for f in functions] == ["main"] and functions[0].length <= 80
