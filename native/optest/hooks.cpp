// Interposition of Executor::newExecutor and Executor::RuntimeManager::createRuntimeManager (hooks.hpp says why).
//
// Why interposition and not a forced include into the test sources: a Module loaded without a RuntimeManager
// (op/reverse, op/BinaryBroadcastTest) gets one made inside libMNN_Express (Module.cpp's
// _createDefaultRuntimeManager), code we do not compile; only a definition that the dynamic linker prefers reaches
// that call. The executable comes first in the global lookup, so defining the two functions here (exported by
// hooks.list) takes every call, the tests' and the library's: MNN is built with -fvisibility=hidden and
// MNN_PUBLIC (default visibility), so calls between its own translation units go through the PLT. The real
// function is the next definition (dlsym RTLD_NEXT) under the name the compiler gave ours (dladdr), so no mangled
// name is written here, and a signature that differs from the tree's header does not compile. The two functions
// have the same signatures at 47027e10, 3.3.0 and 3.6.1 (include/MNN/expr/Executor.hpp).
//
// What each hook adds, and only when the trace is on:
// - newExecutor: the trace callbacks on the new executor. Executor::newExecutor makes an executor with no
//   callbacks, and a lazy computation under ExecutorScope(clone) reads the clone's (ExecutorScope::Current()).
// - createRuntimeManager: Session_Debug. StaticModule::_execute runs its Session with the current executor's
//   callbacks (getDebugTools) only when its RuntimeManager's callBackMode is Session_Debug; a RuntimeManager starts
//   as Session_Release. The executor's own lazy computations already use Session_Debug when callbacks are set
//   (Executor.cpp), so a Module is traced the way every other op here is.
#include "hooks.hpp"

#include <MNN/Interpreter.hpp>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "backend.hpp"

namespace mnnrepro {

HookCounts gHooks;

namespace {

using Executor = MNN::Express::Executor;
using NewExecutor = std::shared_ptr<Executor> (*)(MNNForwardType, const MNN::BackendConfig&, int);
// createRuntimeManager is overloaded (a vector of configs, which forwards to this one): name the one we define.
using CreateRuntimeManager = Executor::RuntimeManager* (*)(const MNN::ScheduleConfig&);
const NewExecutor kNewExecutor = &Executor::newExecutor;
const CreateRuntimeManager kCreateRuntimeManager = &Executor::RuntimeManager::createRuntimeManager;

// The definition after this executable's of the function `ours` (this executable's own), or null with why.
template <typename F>
F nextDefinition(F ours, std::string& error) {
    void* self = reinterpret_cast<void*>(ours);
    Dl_info info{};
    if (dladdr(self, &info) == 0 || info.dli_sname == nullptr || info.dli_saddr != self) {
        error = "an interposed MNN function is not exported by mnn_optest (native/optest/hooks.list)";
        return nullptr;
    }
    void* next = dlsym(RTLD_NEXT, info.dli_sname);
    if (next == nullptr || next == self) {
        error = std::string("no MNN library defines ") + info.dli_sname;
        return nullptr;
    }
    if (dlsym(RTLD_DEFAULT, info.dli_sname) != self) {
        error = std::string("the global lookup of ") + info.dli_sname + " does not find mnn_optest's definition";
    }
    return reinterpret_cast<F>(next);
}

template <typename F>
F realOrDie(F ours, const char* what) {
    std::string error;
    F real = nextDefinition(ours, error);
    if (real == nullptr) {
        // Nothing can run in place of MNN's function; a crash with the reason beats a silent wrong result.
        fprintf(stderr, "mnn_optest: cannot forward %s: %s\n", what, error.c_str());
        abort();
    }
    return real;
}

}  // namespace

void traceExecutor(MNN::Express::Executor& executor) {
    executor.setCallBack([](const std::vector<MNN::Tensor*>&, const MNN::OperatorInfo*) { return true; },
                         [](const std::vector<MNN::Tensor*>& outputs, const MNN::OperatorInfo* info) {
                             traceOp(outputs, info);
                             return true;
                         });
}

std::string checkHooks() {
    std::string error;
    nextDefinition(kNewExecutor, error);
    if (!error.empty()) return error;
    nextDefinition(kCreateRuntimeManager, error);
    return error;
}

std::string hooksJson(bool interposed) {
    return Json()
        .integer("cloned_executors", gHooks.clonedExecutors)
        .integer("runtime_managers", gHooks.runtimeManagers)
        .boolean("interposed", interposed)
        .done();
}

}  // namespace mnnrepro

namespace MNN {
namespace Express {

std::shared_ptr<Executor> Executor::newExecutor(MNNForwardType type, const BackendConfig& config, int numberThread) {
    static const auto real = mnnrepro::realOrDie(mnnrepro::kNewExecutor, "Executor::newExecutor");
    auto executor = real(type, config, numberThread);
    if (executor != nullptr && mnnrepro::gHooks.enabled) {
        mnnrepro::traceExecutor(*executor);
        mnnrepro::gHooks.clonedExecutors += 1;
    }
    return executor;
}

Executor::RuntimeManager* Executor::RuntimeManager::createRuntimeManager(const ScheduleConfig& config) {
    static const auto real =
        mnnrepro::realOrDie(mnnrepro::kCreateRuntimeManager, "Executor::RuntimeManager::createRuntimeManager");
    auto* manager = real(config);
    if (manager != nullptr && mnnrepro::gHooks.enabled) {
        manager->setMode(Interpreter::Session_Debug);
        mnnrepro::gHooks.runtimeManagers += 1;
    }
    return manager;
}

}  // namespace Express
}  // namespace MNN
