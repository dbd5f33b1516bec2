// What the driver and the op-test binary share: which backend MNN really uses (plugin, device probe, executor
// read back), and where each op ran (executor callbacks). Events go to the output contract (native/README.md).
#pragma once
#include <MNN/MNNForwardType.h>
#include <MNN/Tensor.hpp>
#include <MNN/expr/Executor.hpp>

#include <map>
#include <string>
#include <vector>

#include "events.hpp"

namespace mnnrepro {

MNNForwardType forwardType(const std::string& backend);
// The --backend and --precision values every program here takes: "" when both are valid, else the message.
std::string checkBackendOptions(const std::string& backend, const std::string& precision);
const char* forwardName(MNNForwardType t);
// --precision (high, normal, low) as MNN's BackendConfig says it.
MNN::BackendConfig::PrecisionMode precisionMode(const std::string& precision);

struct BackendSetup {
    MNNForwardType wanted = MNN_FORWARD_CPU;
    MNNForwardType active = MNN_FORWARD_CPU;
    bool exercised = false;
    std::string reason;  // why the active backend is not the one requested ("" when exercised)
};

// Loads the plugin (dlopen, RTLD_GLOBAL: it registers its runtime in a static initializer), probes the device
// independently, configures the global executor and reads back the backend MNN chose. Writes the stages
// load_plugin, probe_device, configure_executor and the events `backend` and, when not exercised, `not_exercised`.
// vkCanary (--vk-canary): the Vulkan probe makes the validation canary and writes the event `vk_canary`.
BackendSetup setupBackend(EventLog& log, const std::string& backend, const std::string& plugin,
                          const std::string& precision, int threads, bool vkCanary = false);

// Op placement (issue: "some ops fall back to CPU" must be measured). Executor callbacks see every op with
// its outputs; the backend that owns an op's first output is where the op ran. "switches" counts changes of
// backend between consecutive ops in execution order: each one implies at least one host<->device copy.
struct OpTrace {
    std::map<std::string, std::map<std::string, int>> byBackend;  // backend -> op type -> count
    std::string lastBackend;
    int switches = 0;
    int total = 0;
    void reset();
    std::string json() const;
};
extern OpTrace gTrace;
void traceOp(const std::vector<MNN::Tensor*>& outputs, const MNN::OperatorInfo* info);

}  // namespace mnnrepro
