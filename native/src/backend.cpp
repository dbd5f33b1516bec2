// See backend.hpp. Moved from main.cpp (issue 13: the op-test binary proves its backend the same way).
#include "backend.hpp"

#include <dlfcn.h>

#include "MNN_generated.h"
#include "core/Backend.hpp"
#include "core/TensorUtils.hpp"
#include "RuntimeAttr.hpp"
#include "probe.hpp"

using namespace MNN;
using namespace MNN::Express;

namespace mnnrepro {

MNNForwardType forwardType(const std::string& backend) {
    if (backend == "vulkan") return MNN_FORWARD_VULKAN;
    if (backend == "opencl") return MNN_FORWARD_OPENCL;
    return MNN_FORWARD_CPU;
}

std::string checkBackendOptions(const std::string& backend, const std::string& precision) {
    if (backend != "cpu" && backend != "vulkan" && backend != "opencl") return "--backend must be cpu, vulkan or opencl";
    if (precision != "high" && precision != "normal" && precision != "low") {
        return "--precision must be high, normal or low";
    }
    return "";
}

const char* forwardName(MNNForwardType t) {
    switch (t) {
        case MNN_FORWARD_CPU: return "cpu";
        case MNN_FORWARD_VULKAN: return "vulkan";
        case MNN_FORWARD_OPENCL: return "opencl";
        case MNN_FORWARD_CUDA: return "cuda";
        case MNN_FORWARD_METAL: return "metal";
        case MNN_FORWARD_OPENGL: return "opengl";
        default: return "other";
    }
}

BackendConfig::PrecisionMode precisionMode(const std::string& precision) {
    return precision == "high"  ? BackendConfig::Precision_High
           : precision == "low" ? BackendConfig::Precision_Low
                                : BackendConfig::Precision_Normal;
}

namespace {

// 1. Backend plugin. MNN's Vulkan/OpenCL plugins register themselves in a static initializer; nothing references
//    their symbols, so they are loaded explicitly (MNN_FACTS: silent CPU fallback otherwise).
//    False with `error` set when it cannot be loaded; false and no error when there is none to load.
bool loadPlugin(const std::string& plugin, std::string& error) {
    if (plugin.empty()) return false;
    void* handle = dlopen(plugin.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
        const char* e = dlerror();
        error = e ? e : "dlopen failed";
    }
    return handle != nullptr;
}

// 2. Independent device probes, so the verdict can name the device and the reason for a fallback.
std::string probeVulkanDevice(EventLog& log, Json& device, bool canary) {
    auto vk = mnnrepro::probeVulkan(canary);
    if (canary) {
        log.emit("vk_canary",
                 Json().str("call", kCanaryCall).str("vuid", kCanaryVuid).boolean("made", vk.canaryMade).integer(
                     "count", vk.canaryMade ? 1 : 0));
    }
    device.str("api", "vulkan").boolean("libvulkan_so", vk.libraryLoaded).str("libvulkan_error", vk.libraryError);
    device.boolean("instance", vk.instanceCreated).str("instance_error", vk.instanceError);
    device.integer("device_count", vk.deviceCount).str("name", vk.deviceName).str("type", vk.deviceType);
    device.str("driver_name", vk.driverName).str("driver_info", vk.driverInfo).str("api_version", vk.apiVersion);
    device.integer("vendor_id", vk.vendorId).integer("device_id", vk.deviceId);
    if (!vk.libraryLoaded) {
        return "the unversioned libvulkan.so cannot be loaded (" + vk.libraryError +
               "); MNN dlopens exactly that name (install the Vulkan loader's dev package)";
    } else if (!vk.instanceCreated) {
        return "no Vulkan instance: " + vk.instanceError + " (check VK_ICD_FILENAMES / the ICD)";
    } else if (vk.deviceCount == 0) {
        return "the Vulkan loader found no physical device (check VK_ICD_FILENAMES / the ICD)";
    }
    return "";
}

std::string probeOpenCLDevice(Json& device) {
    auto cl = mnnrepro::probeOpenCL();
    device.str("api", "opencl").boolean("libopencl_so", cl.libraryLoaded).str("libopencl_error", cl.libraryError);
    std::string list = "[";
    int gpus = 0;
    for (size_t i = 0; i < cl.devices.size(); ++i) {
        auto& d = cl.devices[i];
        if (i) list += ",";
        list += Json().str("platform", d.platform).str("name", d.name).str("type", d.type).str("version", d.version).done();
        if (d.type == "GPU") {
            if (gpus == 0) device.str("name", d.name).str("driver_name", d.platform).str("api_version", d.version);
            ++gpus;
        }
    }
    list += "]";
    device.raw("devices", list).integer("gpu_count", gpus);
    if (!cl.libraryLoaded) {
        return "libOpenCL.so cannot be loaded (" + cl.libraryError + ")";
    } else if (gpus == 0) {
        return "no OpenCL device of type GPU (MNN accepts only GPU devices; " + std::to_string(cl.devices.size()) +
               " other device(s) present)";
    }
    return "";
}

// Whether a runtime creator of `wanted` is registered (the plugin's static initializer ran).
bool runtimeRegistered(MNNForwardType wanted) {
    if (wanted == MNN_FORWARD_CPU) return true;
    // MNNGetExtraRuntimeCreator returns null both for "never registered" and "registered, but no runtime";
    // a second registration attempt is refused only when the plugin did register.
    (void)MNNGetExtraRuntimeCreator(wanted);
    struct NullCreator : public RuntimeCreator {
        Runtime* onCreate(const Backend::Info&) const override { return nullptr; }
    };
    static NullCreator probeCreator;
    return !MNNInsertExtraRuntimeCreator(wanted, &probeCreator, true);
}

}  // namespace

BackendSetup setupBackend(EventLog& log, const std::string& backend, const std::string& plugin,
                          const std::string& precision, int threads, bool vkCanary) {
    const MNNForwardType wanted = forwardType(backend);
    log.stage("load_plugin");
    Json pluginInfo;
    pluginInfo.str("path", plugin);
    std::string pluginError;
    const bool pluginLoaded = loadPlugin(plugin, pluginError);
    pluginInfo.boolean("loaded", pluginLoaded).str("error", pluginError);

    log.stage("probe_device");
    Json device;
    std::string probeReason;
    if (wanted == MNN_FORWARD_VULKAN) {
        probeReason = probeVulkanDevice(log, device, vkCanary);
    } else if (wanted == MNN_FORWARD_OPENCL) {
        probeReason = probeOpenCLDevice(device);
    } else {
        device.str("api", "cpu").str("name", "MNN CPU backend");
    }

    // 3. Executor. setGlobalExecutorConfig falls back to the CPU silently when the runtime cannot be
    //    created; the type actually chosen is read back from the executor's attributes.
    log.stage("configure_executor");
    const bool registered = runtimeRegistered(wanted);
    pluginInfo.boolean("registered", registered);
    auto exe = Executor::getGlobalExecutor();
    BackendConfig config;
    config.precision = precisionMode(precision);
    exe->setGlobalExecutorConfig(wanted, config, threads);
    const MNNForwardType active = exe->getAttr()->firstType;
    const bool exercised = active == wanted;
    std::string reason;
    if (!exercised) {
        if (!plugin.empty() && !pluginLoaded) {
            reason = "the backend plugin could not be loaded: " + pluginError;
        } else if (!plugin.empty() && !registered) {
            reason = "the backend plugin " + plugin + " did not register a " + forwardName(wanted) + " runtime";
        } else if (!probeReason.empty()) {
            reason = probeReason;
        } else {
            reason = std::string("MNN could not create a ") + forwardName(wanted) + " runtime and fell back to " +
                     forwardName(active);
        }
    }
    log.emit("backend", Json()
                            .str("requested", forwardName(wanted))
                            .str("active", forwardName(active))
                            .integer("active_type", int(active))
                            .boolean("exercised", exercised)
                            .str("reason", reason)
                            .raw("plugin", pluginInfo.done())
                            .raw("device", device.done()));
    if (!exercised) log.emit("not_exercised", Json().str("reason", reason));
    BackendSetup setup;
    setup.wanted = wanted;
    setup.active = active;
    setup.exercised = exercised;
    setup.reason = reason;
    return setup;
}

void OpTrace::reset() {
    byBackend.clear();
    lastBackend.clear();
    switches = 0;
    total = 0;
}

std::string OpTrace::json() const {
    std::string out = "{";
    bool firstBackend = true;
    for (auto& b : byBackend) {
        out += (firstBackend ? "\"" : ",\"") + jsonEscape(b.first) + "\":{";
        firstBackend = false;
        bool firstType = true;
        for (auto& t : b.second) {
            out += (firstType ? "\"" : ",\"") + jsonEscape(t.first) + "\":" + std::to_string(t.second);
            firstType = false;
        }
        out += "}";
    }
    return out + "}";
}

OpTrace gTrace;

void traceOp(const std::vector<Tensor*>& outputs, const OperatorInfo* info) {
    std::string backend = "unknown";
    if (!outputs.empty() && outputs[0] != nullptr) {
        auto des = TensorUtils::getDescribeOrigin(outputs[0]);
        Backend* bn = des ? des->getBackend() : nullptr;
        // On x86 the main CPU backend reports MNN_FORWARD_CPU_EXTENSION; both live in host memory.
        if (bn) backend = bn->type() == MNN_FORWARD_CPU_EXTENSION ? "cpu" : forwardName(bn->type());
    }
    gTrace.byBackend[backend][info ? info->type() : "?"] += 1;
    if (!gTrace.lastBackend.empty() && gTrace.lastBackend != backend) gTrace.switches += 1;
    gTrace.lastBackend = backend;
    gTrace.total += 1;
}
}  // namespace mnnrepro
