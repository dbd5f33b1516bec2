"""What a variant is, in one table (data, not `if`s): adding a backend or a mode is a row here, plus what is truly
new (its plugin's CMake target and flags, its support in native/).

A variant is one way of building and running MNN for the driver: the backend the driver asks for, the plugin
library (built from the shared core's build directory, MNN_SEP_BUILD), the CMake -D that selects its mode, and
whether its cells run once per Vulkan ICD. The CPU variant is the baseline every other cell is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str  # the driver's --backend; also the key of [timeouts] and [gradcheck.arithmetic] in matrix.toml
    plugin_target: str = ""  # ninja target of the plugin library; "" for the CPU (in libMNN itself)
    plugin_lib: str = ""  # the library inside MNN's build directory
    cmake: tuple[str, ...] = ()  # -D options of this mode (local to the plugin's CMakeLists: the core is shared)
    per_icd: bool = False  # one cell per Vulkan ICD (lavapipe, swiftshader, host, ...)
    requires: tuple[str, ...] = ()  # source files the plugin build needs (size-limited mirrors omit some)
    build_as: str = ""  # a variant whose plugin this one runs (a mode that differs only at run time): no new build
    precision: str = ""  # the driver's --precision for this variant ("" -> the workload's, [workloads.NAME])

    @property
    def has_plugin(self) -> bool:
        return bool(self.plugin_target)


_BUFFER = Variant(
    "vulkan-buffer",
    "vulkan",
    "MNN_Vulkan",
    "source/backend/vulkan/libMNN_Vulkan.so",
    ("-DMNN_VULKAN_IMAGE=OFF",),
    per_icd=True,
    requires=("source/backend/vulkan/buffer/compiler/AllShader.cpp",),
)
TABLE: tuple[Variant, ...] = (
    Variant("cpu", "cpu"),
    # MNN_VULKAN_IMAGE is local to source/backend/vulkan/CMakeLists.txt: switching it rebuilds only the plugin.
    Variant(
        "vulkan-image",
        "vulkan",
        "MNN_Vulkan",
        "source/backend/vulkan/libMNN_Vulkan.so",
        ("-DMNN_VULKAN_IMAGE=ON",),
        per_icd=True,
    ),
    _BUFFER,
    Variant("opencl", "opencl", "MNN_CL", "source/backend/opencl/libMNN_CL.so"),
    # Buffer mode at BackendConfig precision low (fp16 where the device has it): the buffer plugin, judged with
    # the fp16 gradient tolerances of [gradcheck.arithmetic]. Added as the worked example of a new variant.
    replace(_BUFFER, name="vulkan-buffer-low", build_as=_BUFFER.name, precision="low"),
)
VARIANTS: dict[str, Variant] = {v.name: v for v in TABLE}
NAMES: tuple[str, ...] = tuple(VARIANTS)
BASELINE = "cpu"


def get(name: str) -> Variant:
    return VARIANTS[name]


def takes_icds(names: tuple[str, ...] | list[str]) -> bool:
    """Do any of these variants run once per Vulkan ICD?"""
    return any(VARIANTS[n].per_icd for n in names)
