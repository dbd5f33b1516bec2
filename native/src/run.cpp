// The events a run writes besides the backend's (backend.cpp): start, error, step, ops, timing; the executor
// callbacks they read; and the planted faults that prove the harness tells crashes and hangs apart.
#include <MNN/Interpreter.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend.hpp"
#include "driver.hpp"

using namespace MNN;
using namespace MNN::Express;

namespace mnnrepro {
namespace driver {

PhaseTiming gTime;

namespace {

void timeBefore() {
    const double now = monotonicSeconds();
    if (gTime.firstBefore < 0.0) gTime.firstBefore = now;
    gTime.opBefore = now;
}

void timeAfter() {
    const double now = monotonicSeconds();
    gTime.inOps += now - gTime.opBefore;
    gTime.lastAfter = now;
    gTime.ops += 1;
}

// A null write in this driver, not in MNN. The address comes from a volatile so the optimizer cannot see (and
// delete) the null store.
__attribute__((noinline)) void plantedCrash() {
    volatile uintptr_t address = 0;
    *reinterpret_cast<volatile int*>(uintptr_t(address)) = 3129;
}

}  // namespace

void Run::start(int argc, char** argv) {
    std::vector<std::string> args(argv, argv + argc);
    std::vector<std::string> steps;
    for (int s : opt.dumpSteps) steps.push_back(std::to_string(s));
    Json cfg;
    cfg.str("backend", opt.backend).str("plugin", opt.plugin).str("data", opt.data);
    cfg.integer("steps", opt.steps).integer("batch_size", opt.batchSize);
    cfg.integer("test_batch_size", opt.testBatchSize).integer("test_limit", opt.testLimit);
    cfg.integer("seed", opt.seed).integer("threads", opt.threads).str("precision", opt.precision);
    cfg.num("dropout", opt.dropout).str("init_params", opt.initParams).strs("dump_steps", steps);
    cfg.boolean("trace_ops", opt.traceOps);
    cfg.num("lr_base", 0.01).num("lr_gamma", 1e-4).num("lr_power", 0.75);
    cfg.num("momentum", 0.9).num("weight_decay", 5e-4);
    log.emit("start", Json()
                          .str("driver", "mnist_driver")
                          .str("mnn_version", MNN::getVersion())
                          .integer("pid", getpid())
                          .strs("argv", args)
                          .raw("config", cfg.done()));
}

int Run::fail(int code, const std::string& kind, const std::string& message) {
    log.emit("error", Json().str("kind", kind).str("message", message).integer("exit_code", code));
    fprintf(stderr, "mnist_driver: %s: %s\n", kind.c_str(), message.c_str());
    return code;
}

int Run::step(int step, float loss, float lr, double forwardS, double stepS, int firstIndex) {
    log.emit("step", Json()
                         .integer("step", step)
                         .num("loss", loss)
                         .num("lr", lr)
                         .num("forward_ms", forwardS * 1e3)
                         .num("step_ms", stepS * 1e3)
                         .integer("first_index", firstIndex));
    if (!std::isfinite(loss)) return fail(kNonFinite, "numeric", "loss is not finite at step " + std::to_string(step));
    return kContinue;
}

void Run::ops(const char* phase, int step) {
    if (!opt.traceOps) return;
    log.emit("ops", Json()
                        .str("phase", phase)
                        .integer("step", step)
                        .integer("total", gTrace.total)
                        .integer("backend_switches", gTrace.switches)
                        .raw("by_backend", gTrace.json()));
    gTrace.reset();
}

void Run::timing(const char* phase, int step, double end) {
    if (!opt.traceOps) return;
    Json j;
    j.str("phase", phase).integer("step", step).num("ms", (end - gTime.start) * 1e3).integer("ops", gTime.ops);
    if (gTime.ops > 0) {
        j.num("first_op_ms", (gTime.firstBefore - gTime.start) * 1e3)
            .num("last_op_ms", (gTime.lastAfter - gTime.start) * 1e3)
            .num("in_ops_ms", gTime.inOps * 1e3);
    }
    log.emit("timing", j);
}

void traceExecutor(Executor& exe) {
    exe.setCallBack(
        [](const std::vector<Tensor*>&, const OperatorInfo*) {
            timeBefore();
            return true;
        },
        [](const std::vector<Tensor*>& outputs, const OperatorInfo* info) {
            timeAfter();
            traceOp(outputs, info);
            return true;
        });
}

void maybePlant(const char* stage, int step) {
    static const char* plant = getenv("MNNREPRO_PLANT");
    if (!plant || !*plant) return;
    std::string spec = plant;
    auto at = spec.find('@'), colon = spec.rfind(':');
    if (at == std::string::npos || colon == std::string::npos || colon < at) return;
    if (spec.substr(at + 1, colon - at - 1) != stage || atoi(spec.c_str() + colon + 1) != step) return;
    const std::string kind = spec.substr(0, at);
    fprintf(stderr, "[mnist_driver] planted fault: %s at %s step %d\n", kind.c_str(), stage, step);
    if (kind == "crash") plantedCrash();
    if (kind == "hang") {
        for (;;) pause();
    }
}

}  // namespace driver
}  // namespace mnnrepro
