// The op trace for every executor and Module a test runs, not only the global executor main() configures.
// Some of MNN's tests run their ops through a cloned executor (TestUtils' cloneCurrentExecutor ->
// Executor::newExecutor, then ExecutorScope) or a Module (Module::load -> StaticModule, a Session of its own):
// op/reverse, op/BinaryBroadcastTest (3.3.0, 3.6.1), op/attention and the other MNN_SUPPORT_TRANSFORMER_FUSE
// tests. A callback set on the global executor sees none of their ops. hooks.cpp interposes the two MNN entry
// points every such executor and RuntimeManager is made by (see there why interposition, and native/README.md).
#pragma once
#include <MNN/expr/Executor.hpp>

#include <string>

namespace mnnrepro {

struct HookCounts {
    bool enabled = false;      // --no-trace-ops leaves every executor and RuntimeManager as MNN made it
    int clonedExecutors = 0;   // Executor::newExecutor results given the trace callbacks
    int runtimeManagers = 0;   // RuntimeManagers set to Session_Debug (StaticModule then runs with the callbacks)
};
extern HookCounts gHooks;

// The trace callbacks (traceOp) on one executor: the global one (main) and each cloned one (the hook).
void traceExecutor(MNN::Express::Executor& executor);

// "" when both interposed functions are this executable's, exported, and the global lookup (what a call from
// inside libMNN_Express binds to) finds them first; else what is wrong. Resolves the real functions too.
std::string checkHooks();

// {"cloned_executors": N, "runtime_managers": N, "interposed": bool} for the `test` event.
std::string hooksJson(bool interposed);

}  // namespace mnnrepro
