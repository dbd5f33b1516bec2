// mnn_optest: runs exactly one of MNN's own tests (test/op, test/grad of the MNN tree it was built from) on one
// backend, after proving that backend is the one MNN uses, and writes what happened as JSON lines
// (native/README.md, "mnn_optest output contract"). Upstream's run_test.out returns 0 when it cannot create the
// executor and runs on the CPU silently; here that is exit 4 (NOT-EXERCISED) before any test runs.
#include <MNN/MNNDefine.h>
#include <MNN/expr/Executor.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "MNNTestSuite.h"
#include "RuntimeAttr.hpp"
#include "backend.hpp"
#include "events.hpp"
#include "hooks.hpp"
#include "registry.hpp"

using namespace MNN;
using namespace MNN::Express;
using mnnrepro::Json;

namespace {

// MNNTestSuite::Status has a forwardType (read by some tests) from 3.x on, not at 47027e10: set it where it exists.
template <typename S>
auto setForwardType(S& status, int type, int) -> decltype(status.forwardType = type, void()) {
    status.forwardType = type;
}
template <typename S>
void setForwardType(S&, int, long) {}

// Keep in sync with native/README.md and mnnrepro/optest.py.
enum ExitCode { kPassed = 0, kFailed = 1, kUsage = 2, kNotExercised = 4, kOutputError = 6, kNoSuchTest = 8 };

struct Options {
    bool list = false;
    std::string test;
    std::string backend = "cpu";
    std::string plugin;
    std::string precision = "high";
    int threads = 1;
    std::string out;
    bool traceOps = true;
};

void usage() {
    fprintf(stderr,
            "usage: mnn_optest --list\n"
            "       mnn_optest --test NAME --out DIR [--backend cpu|vulkan|opencl] [--plugin PATH]\n"
            "                  [--precision high|normal|low] [--threads N] [--no-trace-ops]\n"
            "  --list        print every registered test name, one per line\n"
            "  --test NAME   run exactly the test of that full name (no prefix matching)\n"
            "  exit: 0 passed, 1 failed, 2 usage, 4 NOT-EXERCISED, 6 cannot write DIR, 8 no such test\n");
}

bool parseArgs(int argc, char** argv, Options& o, std::string& error) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](std::string& into) {
            if (i + 1 >= argc) {
                error = a + " needs a value";
                return false;
            }
            into = argv[++i];
            return true;
        };
        std::string threads;
        if (a == "--list") {
            o.list = true;
        } else if (a == "--test") {
            if (!value(o.test)) return false;
        } else if (a == "--backend") {
            if (!value(o.backend)) return false;
        } else if (a == "--plugin") {
            if (!value(o.plugin)) return false;
        } else if (a == "--precision") {
            if (!value(o.precision)) return false;
        } else if (a == "--out") {
            if (!value(o.out)) return false;
        } else if (a == "--threads") {
            if (!value(threads)) return false;
            o.threads = atoi(threads.c_str());
            if (o.threads < 1) {
                error = "--threads wants a positive number";
                return false;
            }
        } else if (a == "--no-trace-ops") {
            o.traceOps = false;
        } else {
            error = "unknown argument '" + a + "'";
            return false;
        }
    }
    if (!(error = mnnrepro::checkBackendOptions(o.backend, o.precision)).empty()) return false;
    if (!o.list && (o.test.empty() || o.out.empty())) {
        error = "--test NAME and --out DIR are required (or --list)";
        return false;
    }
    return true;
}

// MNNREPRO_PLANT=crash@NAME or hang@NAME: a fault of this program's own when test NAME starts, for proving
// the harness records a crash as CRASH and kills a hang as TIMEOUT while the sweep goes on.
__attribute__((noinline)) void plantedCrash() {
    volatile uintptr_t address = 0;
    *reinterpret_cast<volatile int*>(uintptr_t(address)) = 3129;
}

void maybePlant(const std::string& test) {
    const char* plant = getenv("MNNREPRO_PLANT");
    if (!plant || !*plant) return;
    const std::string spec = plant;
    const auto at = spec.find('@');
    if (at == std::string::npos || spec.substr(at + 1) != test) return;
    const std::string kind = spec.substr(0, at);
    fprintf(stderr, "[mnn_optest] planted fault: %s at %s\n", kind.c_str(), test.c_str());
    if (kind == "crash") plantedCrash();
    if (kind == "hang") {
        for (;;) pause();
    }
}

int precisionCode(const std::string& p) {
    // BackendConfig::PrecisionMode, which is also what MNN's tests take in run(precision).
    return p == "normal" ? int(BackendConfig::Precision_Normal)
           : p == "low"  ? int(BackendConfig::Precision_Low)
                         : int(BackendConfig::Precision_High);
}

void emitStart(mnnrepro::EventLog& log, const Options& opt, int argc, char** argv) {
    std::vector<std::string> args(argv, argv + argc);
    Json cfg;
    cfg.str("test", opt.test).str("backend", opt.backend).str("plugin", opt.plugin);
    cfg.str("precision", opt.precision).integer("threads", opt.threads).boolean("trace_ops", opt.traceOps);
    log.emit("start", Json()
                          .str("driver", "mnn_optest")
                          .str("mnn_version", MNN::getVersion())
                          .integer("pid", getpid())
                          .strs("argv", args)
                          .raw("config", cfg.done()));
}

MNNTestCase* findTest(const std::string& name) {
    MNNTestCase* test = nullptr;
    for (auto& t : mnnrepro::registeredTests()) {
        if (t.name == name) test = t.test;
    }
    return test;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    std::string error;
    if (!parseArgs(argc, argv, opt, error)) {
        fprintf(stderr, "mnn_optest: %s\n", error.c_str());
        usage();
        return kUsage;
    }
    if (opt.list) {
        for (auto& t : mnnrepro::registeredTests()) printf("%s\n", t.name.c_str());
        return kPassed;
    }
    MNNTestCase* test = findTest(opt.test);
    if (test == nullptr) {
        fprintf(stderr, "mnn_optest: no test named '%s' (--list lists them)\n", opt.test.c_str());
        return kNoSuchTest;
    }
    mkdir(opt.out.c_str(), 0755);
    mnnrepro::EventLog log;
    log.setProgram("mnn_optest");
    if (!log.open(opt.out + "/events.jsonl")) {
        fprintf(stderr, "mnn_optest: cannot write %s/events.jsonl\n", opt.out.c_str());
        return kOutputError;
    }
    emitStart(log, opt, argc, argv);
    const mnnrepro::BackendSetup setup =
        mnnrepro::setupBackend(log, opt.backend, opt.plugin, opt.precision, opt.threads);
    if (!setup.exercised) {
        fprintf(stderr, "mnn_optest: NOT-EXERCISED: %s\n", setup.reason.c_str());
        return kNotExercised;
    }
    auto exe = Executor::getGlobalExecutor();
    // The trace sees the global executor, every executor a test clones and every Module it loads (hooks.hpp).
    std::string hookError;
    if (opt.traceOps) {
        mnnrepro::traceExecutor(*exe);
        mnnrepro::gHooks.enabled = true;
        hookError = mnnrepro::checkHooks();
        if (!hookError.empty()) fprintf(stderr, "[mnn_optest] trace hooks: %s\n", hookError.c_str());
    }
    auto* suite = MNNTestSuite::get();
    suite->pStaus.precision = precisionCode(opt.precision);
    suite->pStaus.memory = 0;
    setForwardType(suite->pStaus, int(setup.wanted), 0);

    log.emit("stage", Json().str("name", "test").str("test", opt.test));
    fprintf(stderr, "[mnn_optest] running %s on %s\n", opt.test.c_str(), opt.backend.c_str());
    maybePlant(opt.test);
    const double t0 = mnnrepro::monotonicSeconds();
    const bool passed = test->run(precisionCode(opt.precision));
    const double t1 = mnnrepro::monotonicSeconds();
    log.emit("test", Json()
                         .str("name", opt.test)
                         .boolean("passed", passed)
                         .num("ms", (t1 - t0) * 1e3)
                         .integer("ops_total", mnnrepro::gTrace.total)
                         .integer("backend_switches", mnnrepro::gTrace.switches)
                         .raw("by_backend", mnnrepro::gTrace.json())
                         .raw("trace", mnnrepro::hooksJson(opt.traceOps && hookError.empty())));
    log.emit("backend_after", Json().str("active", mnnrepro::forwardName(exe->getAttr()->firstType)));
    log.stage("done");
    const int code = passed ? kPassed : kFailed;
    log.emit("done", Json().integer("exit_code", code));
    // Quick exit: some tests leave threads or GPU objects whose teardown at exit is not what is under test.
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}
