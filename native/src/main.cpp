// mnist_driver: trains MNN's MNIST Lenet on one backend and writes what happened as JSON lines.
//
// It builds the same training graph as upstream's MNIST demo (tools/train/source/demo/MnistUtils.cpp):
// uint8 image cast to float and scaled by 1/255, one-hot target, Lenet, cross-entropy, SGD with momentum
// 0.9, weight decay 5e-4 and LrScheduler::inv(0.01, step, 1e-4, 0.75). It exists to reproduce
// alibaba/MNN#3129 (Vulkan image mode segfaults in the first SGD step) with evidence.
//
// Deliberate differences from the demo, each for determinism across backends and runs:
// - initial parameters come from this driver's seeded generator (or --init-params), because MNN is built
//   with -fvisibility=hidden and its RandomGenerator inside libMNNTrain cannot be seeded from outside;
// - the dropout mask is drawn from this driver's seeded generator for the same reason (same op: x * mask);
// - batches come from a seeded permutation of an IDX file of any length.
// The output contract (events, stages, exit codes) is documented in native/README.md.

#include <MNN/Interpreter.hpp>
#include <MNN/expr/Executor.hpp>
#include <MNN/expr/ExprCreator.hpp>
#include <MNN/expr/Module.hpp>
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "LearningRateScheduler.hpp"
#include "Loss.hpp"
#include "NN.hpp"
#include "OpGrad.hpp"
#include "SGD.hpp"
#include "core/Backend.hpp"
#include "core/TensorUtils.hpp"
#include "RuntimeAttr.hpp"
#include "backend.hpp"
#include "events.hpp"
#include "idx.hpp"
#include "npy.hpp"
#include "tensorstore.hpp"
#include "probe.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;
using mnnrepro::Json;
using mnnrepro::forwardName;
using mnnrepro::gTrace;
using mnnrepro::traceOp;

namespace {

// Exit codes: keep in sync with native/README.md and mnnrepro/contract.py.
enum ExitCode {
    kOk = 0,
    kUsage = 2,
    kDataError = 3,
    kNotExercised = 4,  // the backend under test was not the one MNN used
    kNonFinite = 5,     // loss or prediction became NaN/Inf
    kOutputError = 6,
    kMnnError = 7,  // an MNN call reported failure (e.g. "Compute error in SGD")
};

struct Options {
    std::string backend = "cpu";
    std::string plugin;
    std::string data;
    std::string out;
    std::string initParams;
    std::string saveInit;
    std::string saveGraph;
    std::string dumpDir;
    std::set<int> dumpSteps;
    int steps = 30;
    int batchSize = 64;
    int testBatchSize = 100;
    int testLimit = 0;  // 0: the whole test split
    int seed = 1;
    int threads = 4;
    std::string precision = "high";
    float dropout = 0.5f;
    bool allowFallback = false;
    bool traceOps = true;
    bool staticGraph = false;
};

void usage() {
    fprintf(stderr,
            "usage: mnist_driver --backend cpu|vulkan|opencl --data DIR --out DIR [options]\n"
            "  --plugin PATH         backend library to dlopen first (libMNN_Vulkan.so, libMNN_CL.so)\n"
            "  --steps N             training steps (default 30)\n"
            "  --batch-size N        training batch (default 64)\n"
            "  --test-batch-size N   evaluation batch (default 100)\n"
            "  --test-limit N        evaluate on the first N test images (default: all)\n"
            "  --seed N              parameter init, batch order and dropout seed (default 1)\n"
            "  --precision high|normal|low   BackendConfig precision (default high)\n"
            "  --threads N           number passed to setGlobalExecutorConfig (default 4)\n"
            "  --dropout P           dropout ratio (default 0.5, as upstream's Lenet)\n"
            "  --init-params DIR     start from DIR/<param>.npy instead of the seeded init\n"
            "  --save-init DIR       write the initial parameters as DIR/<param>.npy\n"
            "  --save-graph DIR      save the first SGD step's gradient graph (what sgd->step computes first) as\n"
            "                        DIR/graph.mnn with its inputs (DIR/inputs), then stop (the reducer's input)\n"
            "  --dump-steps A,B,..   steps whose gradients and updated parameters are written\n"
            "  --dump-dir DIR        where dumps go (default OUT/grads)\n"
            "  --allow-fallback      keep going when MNN fell back to the CPU (diagnosis only)\n"
            "  --no-trace-ops        do not record where each op ran (events \"ops\")\n"
            "  --static-graph        build the training graph (loss, gradients, SGD update) once and rerun it\n");
}

bool parseInt(const char* s, int& v) {
    char* end = nullptr;
    long x = strtol(s, &end, 10);
    if (!s[0] || *end) return false;
    v = int(x);
    return true;
}

bool parseArgs(int argc, char** argv, Options& o, std::string& error) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto need = [&](const char* name) -> const char* {
            if (i + 1 >= argc) {
                error = std::string(name) + " needs a value";
                return nullptr;
            }
            return argv[++i];
        };
        auto intArg = [&](const char* name, int& v, int minimum) -> bool {
            const char* s = need(name);
            if (!s) return false;
            if (!parseInt(s, v) || v < minimum) {
                error = std::string(name) + " wants an integer >= " + std::to_string(minimum) + ", got '" + s + "'";
                return false;
            }
            return true;
        };
        const char* s = nullptr;
        if (a == "--help" || a == "-h") {
            usage();
            exit(kOk);
        } else if (a == "--backend") {
            if (!(s = need("--backend"))) return false;
            o.backend = s;
        } else if (a == "--plugin") {
            if (!(s = need("--plugin"))) return false;
            o.plugin = s;
        } else if (a == "--data") {
            if (!(s = need("--data"))) return false;
            o.data = s;
        } else if (a == "--out") {
            if (!(s = need("--out"))) return false;
            o.out = s;
        } else if (a == "--init-params") {
            if (!(s = need("--init-params"))) return false;
            o.initParams = s;
        } else if (a == "--save-init") {
            if (!(s = need("--save-init"))) return false;
            o.saveInit = s;
        } else if (a == "--save-graph") {
            if (!(s = need("--save-graph"))) return false;
            o.saveGraph = s;
        } else if (a == "--dump-dir") {
            if (!(s = need("--dump-dir"))) return false;
            o.dumpDir = s;
        } else if (a == "--dump-steps") {
            if (!(s = need("--dump-steps"))) return false;
            std::string list = s;
            size_t pos = 0;
            while (pos <= list.size()) {
                size_t comma = list.find(',', pos);
                std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
                int v = 0;
                if (!parseInt(item.c_str(), v) || v < 0) {
                    error = "--dump-steps wants comma-separated step numbers, got '" + list + "'";
                    return false;
                }
                o.dumpSteps.insert(v);
                if (comma == std::string::npos) break;
                pos = comma + 1;
            }
        } else if (a == "--steps") {
            if (!intArg("--steps", o.steps, 1)) return false;
        } else if (a == "--batch-size") {
            if (!intArg("--batch-size", o.batchSize, 1)) return false;
        } else if (a == "--test-batch-size") {
            if (!intArg("--test-batch-size", o.testBatchSize, 1)) return false;
        } else if (a == "--test-limit") {
            if (!intArg("--test-limit", o.testLimit, 0)) return false;
        } else if (a == "--seed") {
            if (!intArg("--seed", o.seed, 0)) return false;
        } else if (a == "--threads") {
            if (!intArg("--threads", o.threads, 1)) return false;
        } else if (a == "--precision") {
            if (!(s = need("--precision"))) return false;
            o.precision = s;
        } else if (a == "--dropout") {
            if (!(s = need("--dropout"))) return false;
            char* end = nullptr;
            o.dropout = strtof(s, &end);
            if (*end || !(o.dropout >= 0.0f && o.dropout < 1.0f)) {
                error = "--dropout wants a ratio in [0, 1)";
                return false;
            }
        } else if (a == "--static-graph") {
            o.staticGraph = true;
        } else if (a == "--no-trace-ops") {
            o.traceOps = false;
        } else if (a == "--allow-fallback") {
            o.allowFallback = true;
        } else {
            error = "unknown argument '" + a + "'";
            return false;
        }
    }
    if (!(error = mnnrepro::checkBackendOptions(o.backend, o.precision)).empty()) return false;
    if (o.data.empty() || o.out.empty()) {
        error = "--data and --out are required";
        return false;
    }
    if (o.dumpDir.empty()) o.dumpDir = o.out + "/grads";
    return true;
}

bool makeDirs(const std::string& path) {
    std::string cur;
    for (size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return false;
        }
        if (i < path.size()) cur += path[i];
    }
    return true;
}

// Uniform float in [0, 1) from 24 random bits: the same on every standard library, unlike
// std::uniform_real_distribution, so goldens do not depend on the C++ runtime.
float uniform01(std::mt19937& g) { return float(g() >> 8) * (1.0f / 16777216.0f); }

// Upstream's Lenet with the dropout mask drawn from the driver's generator (see the header comment).
class DriverDropout : public Module {
public:
    DriverDropout(float ratio, std::mt19937* gen) : mRatio(ratio), mGen(gen) { setType("Dropout"); }
    std::vector<VARP> onForward(const std::vector<VARP>& inputs) override {
        VARP x = inputs[0];
        if (!getIsTraining() || mRatio <= 0.0f) return {x};
        const float scale = 1.0f / (1.0f - mRatio);
        auto info = x->getInfo();
        auto mask = _Input(info->dim, info->order, info->type);
        auto ptr = mask->writeMap<float>();
        for (size_t i = 0; i < size_t(info->size); ++i) ptr[i] = uniform01(*mGen) < mRatio ? 0.0f : scale;
        // Kept for --dump-steps: an independent reference (src/mnnrepro/reference.py) replays the same mask.
        lastMaskDims = info->dim;
        lastMask.assign(ptr, ptr + info->size);
        lastMaskVar = mask;
        return {x * mask};
    }
    // --static-graph: the graph is built once, so each step draws a new mask into the same input.
    void redraw() {
        if (lastMaskVar.get() == nullptr) return;
        const float scale = 1.0f / (1.0f - mRatio);
        auto ptr = lastMaskVar->writeMap<float>();
        for (size_t i = 0; i < lastMask.size(); ++i) ptr[i] = lastMask[i] = uniform01(*mGen) < mRatio ? 0.0f : scale;
    }
    VARP lastMaskVar;
    std::vector<int> lastMaskDims;  // empty until a training forward drew a mask
    std::vector<float> lastMask;

private:
    float mRatio;
    std::mt19937* mGen;
};

class Lenet : public Module {
public:
    Lenet(float dropout, std::mt19937* gen) {
        NN::ConvOption conv;
        conv.kernelSize = {5, 5};
        conv.channel = {1, 20};
        conv1.reset(NN::Conv(conv));
        conv.reset();
        conv.kernelSize = {5, 5};
        conv.channel = {20, 50};
        conv2.reset(NN::Conv(conv));
        ip1.reset(NN::Linear(800, 500));
        ip2.reset(NN::Linear(500, 10));
        drop.reset(new DriverDropout(dropout, gen));
        registerModel({conv1, conv2, ip1, ip2, drop});
    }
    const DriverDropout& dropout() const { return *static_cast<const DriverDropout*>(drop.get()); }
    DriverDropout& mutableDropout() { return *static_cast<DriverDropout*>(drop.get()); }
    std::vector<VARP> onForward(const std::vector<VARP>& inputs) override {
        VARP x = inputs[0];
        x = conv1->forward(x);
        x = _MaxPool(x, {2, 2}, {2, 2});
        x = conv2->forward(x);
        x = _MaxPool(x, {2, 2}, {2, 2});
        x = _Reshape(x, {0, -1});
        x = _Convert(x, NCHW);
        x = ip1->forward(x);
        x = _Relu(x);
        x = drop->forward(x);
        x = ip2->forward(x);
        x = _Softmax(x, 1);
        return {x};
    }
    // Stable names in model order; within a layer the larger tensor is the weight.
    std::vector<std::pair<std::string, VARP>> namedParameters() const {
        std::vector<std::pair<std::string, VARP>> out;
        const std::pair<const char*, std::shared_ptr<Module>> layers[] = {
            {"conv1", conv1}, {"conv2", conv2}, {"ip1", ip1}, {"ip2", ip2}};
        for (auto& layer : layers) {
            auto ps = layer.second->parameters();
            std::vector<VARP> sorted(ps.begin(), ps.end());
            std::stable_sort(sorted.begin(), sorted.end(),
                             [](const VARP& a, const VARP& b) { return a->getInfo()->size > b->getInfo()->size; });
            for (size_t i = 0; i < sorted.size(); ++i) {
                out.emplace_back(std::string(layer.first) + (i == 0 ? ".weight" : ".bias"), sorted[i]);
            }
        }
        return out;
    }
    std::shared_ptr<Module> conv1, conv2, ip1, ip2, drop;
};

std::vector<int> dimsOf(const VARP& v) { return v->getInfo()->dim; }

// Xavier-uniform weights, zero biases, from the driver's seed.
void seededInit(const std::vector<std::pair<std::string, VARP>>& params, std::mt19937& gen,
                std::vector<VARP>& values) {
    for (auto& p : params) {
        auto dims = dimsOf(p.second);
        auto info = p.second->getInfo();
        auto v = _Input(dims, info->order, halide_type_of<float>());
        float* ptr = v->writeMap<float>();
        bool bias = p.first.size() > 5 && p.first.compare(p.first.size() - 5, 5, ".bias") == 0;
        if (bias) {
            std::fill(ptr, ptr + info->size, 0.0f);
        } else {
            // conv: [out, in, kh, kw]; linear: [out, in]
            int receptive = 1;
            for (size_t i = 2; i < dims.size(); ++i) receptive *= dims[i];
            float fanIn = float(dims[1] * receptive), fanOut = float(dims[0] * receptive);
            float limit = std::sqrt(6.0f / (fanIn + fanOut));
            for (size_t i = 0; i < size_t(info->size); ++i) ptr[i] = (2.0f * uniform01(gen) - 1.0f) * limit;
        }
        values.push_back(v);
    }
}

bool writeParams(const std::string& dir, const std::vector<std::pair<std::string, VARP>>& named,
                 const std::vector<VARP>& values, std::string& error) {
    if (!makeDirs(dir)) {
        error = "cannot create " + dir;
        return false;
    }
    for (size_t i = 0; i < named.size(); ++i) {
        auto ptr = values[i]->readMap<float>();
        if (!ptr) {
            error = "cannot read " + named[i].first;
            return false;
        }
        if (!mnnrepro::writeNpyF32(dir + "/" + named[i].first + ".npy", dimsOf(values[i]), ptr, error)) return false;
    }
    return true;
}

// Per-phase timing for `nox -s bench` (event "timing"), from the same executor callbacks: the phase's start,
// the first op's "before", the last op's "after" and the time spent between each op's "before" and "after".
// Preparation (graph building, shape inference, resize: allocation, pipeline creation) happens before the
// first op of a compute; execution is from there to the end of the phase (ops, the backend's submit and wait,
// readback). On an asynchronous GPU backend an op's onExecute only records commands: the device's work shows
// up in the tail after the last op (the submit/wait and the copy back), which is still counted as execution.
struct PhaseTiming {
    double start = 0.0, firstBefore = -1.0, lastAfter = -1.0, opBefore = 0.0, inOps = 0.0;
    int ops = 0;
    void reset(double now) {
        start = now;
        firstBefore = lastAfter = -1.0;
        opBefore = inOps = 0.0;
        ops = 0;
    }
};
PhaseTiming gTime;

void timeBefore() {
    const double now = mnnrepro::monotonicSeconds();
    if (gTime.firstBefore < 0.0) gTime.firstBefore = now;
    gTime.opBefore = now;
}

void timeAfter() {
    const double now = mnnrepro::monotonicSeconds();
    gTime.inOps += now - gTime.opBefore;
    gTime.lastAfter = now;
    gTime.ops += 1;
}

// Planted faults, for proving the harness tells crashes apart and kills hangs: MNNREPRO_PLANT=KIND@STAGE:STEP
// with KIND crash (a null write in this driver, not in MNN) or hang (never returns).
__attribute__((noinline)) void plantedCrash() {
    // The address comes from a volatile so the optimizer cannot see (and delete) the null store.
    volatile uintptr_t address = 0;
    *reinterpret_cast<volatile int*>(uintptr_t(address)) = 3129;
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

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    std::string error;
    if (!parseArgs(argc, argv, opt, error)) {
        fprintf(stderr, "mnist_driver: %s\n", error.c_str());
        usage();
        return kUsage;
    }
    if (!makeDirs(opt.out)) {
        fprintf(stderr, "mnist_driver: cannot create output directory %s\n", opt.out.c_str());
        return kOutputError;
    }
    mnnrepro::EventLog log;
    if (!log.open(opt.out + "/events.jsonl")) {
        fprintf(stderr, "mnist_driver: cannot write %s/events.jsonl\n", opt.out.c_str());
        return kOutputError;
    }
    auto fail = [&](int code, const std::string& kind, const std::string& message) {
        log.emit("error", Json().str("kind", kind).str("message", message).integer("exit_code", code));
        fprintf(stderr, "mnist_driver: %s: %s\n", kind.c_str(), message.c_str());
        return code;
    };
    // One "step" event per training step (both graph kinds); a non-finite loss ends the run.
    auto emitStep = [&](int step, float loss, float lr, double forwardS, double stepS, int firstIndex) -> int {
        log.emit("step", Json()
                             .integer("step", step)
                             .num("loss", loss)
                             .num("lr", lr)
                             .num("forward_ms", forwardS * 1e3)
                             .num("step_ms", stepS * 1e3)
                             .integer("first_index", firstIndex));
        if (!std::isfinite(loss)) return fail(kNonFinite, "numeric", "loss is not finite at step " + std::to_string(step));
        return int(kOk);
    };
    {
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

    // 1-3. Plugin, device probe, executor (backend.cpp): the backend MNN really uses, read back, with the
    //      reason when it is not the one requested (MNN_FACTS: silent CPU fallback otherwise).
    const mnnrepro::BackendSetup setup = mnnrepro::setupBackend(log, opt.backend, opt.plugin, opt.precision, opt.threads);
    auto exe = Executor::getGlobalExecutor();
    if (opt.traceOps) {
        exe->setCallBack(
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
    auto emitOps = [&](const char* phase, int step) {
        if (!opt.traceOps) return;
        log.emit("ops", Json()
                            .str("phase", phase)
                            .integer("step", step)
                            .integer("total", gTrace.total)
                            .integer("backend_switches", gTrace.switches)
                            .raw("by_backend", gTrace.json()));
        gTrace.reset();
    };
    auto emitTiming = [&](const char* phase, int step, double end) {
        if (!opt.traceOps) return;
        Json j;
        j.str("phase", phase).integer("step", step).num("ms", (end - gTime.start) * 1e3).integer("ops", gTime.ops);
        if (gTime.ops > 0) {
            j.num("first_op_ms", (gTime.firstBefore - gTime.start) * 1e3)
                .num("last_op_ms", (gTime.lastAfter - gTime.start) * 1e3)
                .num("in_ops_ms", gTime.inOps * 1e3);
        }
        log.emit("timing", j);
    };
    if (!setup.exercised) {
        fprintf(stderr, "mnist_driver: NOT-EXERCISED: %s\n", setup.reason.c_str());
        if (!opt.allowFallback) return kNotExercised;
    }

    // 4. Data.
    log.stage("load_data");
    mnnrepro::MnistSplit train, test;
    if (!mnnrepro::loadMnistSplit(opt.data, "train", train, error) ||
        !mnnrepro::loadMnistSplit(opt.data, "t10k", test, error)) {
        return fail(kDataError, "data", error);
    }
    for (const mnnrepro::MnistSplit* split : {&train, &test}) {
        if (split->rows != 28 || split->cols != 28) {
            return fail(kDataError, "data",
                        split->imagesPath + ": images are " + std::to_string(split->rows) + "x" +
                            std::to_string(split->cols) + ", the model wants 28x28");
        }
    }
    log.emit("data", Json().integer("train", train.count).integer("test", test.count));

    // 5. Model and optimizer.
    log.stage("build_model");
    std::mt19937 initGen(uint32_t(opt.seed));
    std::mt19937 orderGen(uint32_t(opt.seed) + 1u);
    std::mt19937 dropGen(uint32_t(opt.seed) + 2u);
    std::shared_ptr<Lenet> model(new Lenet(opt.dropout, &dropGen));
    auto named = model->namedParameters();
    std::vector<VARP> initial;
    if (!opt.initParams.empty()) {
        for (auto& p : named) {
            std::vector<int> shape;
            std::vector<float> values;
            const std::string path = opt.initParams + "/" + p.first + ".npy";
            if (!mnnrepro::readNpyF32(path, shape, values, error)) return fail(kDataError, "init_params", error);
            if (shape != dimsOf(p.second)) {
                auto str = [](const std::vector<int>& d) {
                    std::string s = "(";
                    for (size_t k = 0; k < d.size(); ++k) s += (k ? ", " : "") + std::to_string(d[k]);
                    return s + (d.size() == 1 ? ",)" : ")");
                };
                return fail(kDataError, "init_params",
                            path + ": shape " + str(shape) + ", " + p.first + " wants " + str(dimsOf(p.second)));
            }
            initial.push_back(_Const(values.data(), shape, p.second->getInfo()->order, halide_type_of<float>()));
        }
    } else {
        seededInit(named, initGen, initial);
    }
    // loadParameters wants model->parameters() order; map by identity.
    {
        auto order = model->parameters();
        std::vector<VARP> load;
        for (auto& p : order) {
            for (size_t i = 0; i < named.size(); ++i) {
                if (named[i].second.get() == p.get()) load.push_back(initial[i]);
            }
        }
        // Variable::replace takes the source's input type; SGD only updates TRAINABLE variables.
        for (auto& v : load) v.fix(VARP::TRAINABLE);
        if (load.size() != order.size() || !model->loadParameters(load)) {
            return fail(kMnnError, "mnn", "loadParameters failed");
        }
        named = model->namedParameters();
    }
    {
        std::string list = "[";
        for (size_t i = 0; i < named.size(); ++i) {
            std::string shape = "[";
            auto d = dimsOf(named[i].second);
            for (size_t k = 0; k < d.size(); ++k) shape += (k ? "," : "") + std::to_string(d[k]);
            shape += "]";
            list += (i ? "," : "") + Json().str("name", named[i].first).raw("shape", shape).done();
        }
        log.emit("model", Json().str("name", "Lenet").raw("parameters", list + "]"));
    }
    if (!opt.saveInit.empty()) {
        std::vector<VARP> values;
        for (auto& p : named) values.push_back(p.second);
        if (!writeParams(opt.saveInit, named, values, error)) return fail(kOutputError, "output", error);
    }
    // OpGrad::grad of a loss over the trainable parameters, aligned with `named` (a null VARP where a parameter
    // got no gradient): the static graph, the gradient dumps and --save-graph take their gradients from here.
    auto gradientsOf = [&](VARP loss) {
        std::set<VARP> trainable;
        for (auto& p : named) trainable.insert(p.second);
        auto grads = OpGrad::grad(loss, trainable);
        std::vector<VARP> out;
        for (auto& p : named) {
            auto it = grads.find(p.second);
            out.push_back(it == grads.end() ? nullptr : it->second);
        }
        return out;
    };
    std::shared_ptr<SGD> sgd(new SGD(model));
    sgd->setMomentum(0.9f);
    sgd->setWeightDecay(0.0005f);

    // 6. Training.
    std::vector<int> perm(train.count);
    size_t cursor = size_t(train.count);  // forces a shuffle before the first batch
    auto nextIndex = [&]() {
        if (cursor >= perm.size()) {
            for (int i = 0; i < train.count; ++i) perm[i] = i;
            for (int i = train.count - 1; i > 0; --i) std::swap(perm[i], perm[orderGen() % uint32_t(i + 1)]);
            cursor = 0;
        }
        return perm[cursor++];
    };
    const int pixels = train.rows * train.cols;
    model->setIsTraining(true);
    if (opt.staticGraph) {
        // A static training graph: image, label, dropout mask, learning rate, parameters and momentum are
        // inputs; loss, new parameters and new momentum are outputs of one graph built (and resized) once.
        // Each step writes the inputs, computes, reads the outputs back and writes them into the inputs.
        // Same math as SGD::onGetNextParameter (L2 weight decay, momentum), without rebuilding the graph.
        // --dump-steps is not supported here (the gradient check covers the dynamic path).
        auto imageIn = _Input({opt.batchSize, 1, train.rows, train.cols}, NCHW, halide_type_of<uint8_t>());
        auto labelIn = _Input({opt.batchSize}, NCHW, halide_type_of<uint8_t>());
        auto lrIn = _Input({}, NCHW, halide_type_of<float>());
        auto input = _Cast<float>(imageIn) * _Const(1.0f / 255.0f);
        auto target = _OneHot(_Cast<int32_t>(labelIn), _Scalar<int>(10), _Scalar<float>(1.0f), _Scalar<float>(0.0f));
        auto loss = _CrossEntropy(model->forward(input), target);
        const auto grads = gradientsOf(loss);
        std::vector<VARP> history, outputs{loss};
        for (size_t k = 0; k < named.size(); ++k) {
            const auto& p = named[k];
            if (grads[k].get() == nullptr) return fail(kMnnError, "mnn", "no gradient for " + p.first);
            auto info = p.second->getInfo();
            auto h = _Input(info->dim, info->order, halide_type_of<float>());
            std::fill(h->writeMap<float>(), h->writeMap<float>() + info->size, 0.0f);
            auto hNew = lrIn * (grads[k] + _Const(0.0005f) * p.second) + _Const(0.9f) * h;
            history.push_back(h);
            outputs.push_back(p.second - hNew);
            outputs.push_back(hNew);
        }
        Variable::prepareCompute(outputs);
        std::vector<std::vector<float>> values(outputs.size());
        for (int step = 0; step < opt.steps; ++step) {
            log.stage("forward", step);
            double t0 = mnnrepro::monotonicSeconds();
            gTime.reset(t0);
            uint8_t* img = imageIn->writeMap<uint8_t>();
            uint8_t* lab = labelIn->writeMap<uint8_t>();
            int first = -1;
            for (int b = 0; b < opt.batchSize; ++b) {
                int idx = nextIndex();
                if (b == 0) first = idx;
                memcpy(img + size_t(b) * pixels, train.images.data() + size_t(idx) * pixels, pixels);
                lab[b] = train.labels[idx];
            }
            if (step > 0) model->mutableDropout().redraw();
            const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
            lrIn->writeMap<float>()[0] = lr;
            for (size_t i = 0; i < outputs.size(); ++i) {
                auto ptr = outputs[i]->readMap<float>();
                if (!ptr) return fail(kMnnError, "mnn", "static graph produced no output at step " + std::to_string(step));
                values[i].assign(ptr, ptr + outputs[i]->getInfo()->size);
            }
            const float lossValue = values[0][0];
            double t1 = mnnrepro::monotonicSeconds();
            emitTiming("static_step", step, t1);
            emitOps("static_step", step);
            log.stage("sgd_step", step);
            for (size_t k = 0; k < named.size(); ++k) {
                std::copy(values[1 + 2 * k].begin(), values[1 + 2 * k].end(), named[k].second->writeMap<float>());
                std::copy(values[2 + 2 * k].begin(), values[2 + 2 * k].end(), history[k]->writeMap<float>());
            }
            double t2 = mnnrepro::monotonicSeconds();
            if (int rc = emitStep(step, lossValue, lr, t1 - t0, t2 - t1, first)) return rc;
        }
    }
    for (int step = 0; step < (opt.staticGraph ? 0 : opt.steps); ++step) {
        std::vector<uint8_t> images(size_t(opt.batchSize) * pixels);
        std::vector<uint8_t> labels(opt.batchSize);
        std::vector<int> indices(opt.batchSize);
        for (int b = 0; b < opt.batchSize; ++b) {
            int idx = nextIndex();
            indices[b] = idx;
            memcpy(images.data() + size_t(b) * pixels, train.images.data() + size_t(idx) * pixels, pixels);
            labels[b] = train.labels[idx];
        }
        log.stage("forward", step);
        maybePlant("forward", step);
        double t0 = mnnrepro::monotonicSeconds();
        gTime.reset(t0);
        auto image = _Const(images.data(), {opt.batchSize, 1, train.rows, train.cols}, NCHW, halide_type_of<uint8_t>());
        auto label = _Const(labels.data(), {opt.batchSize}, NCHW, halide_type_of<uint8_t>());
        auto input = _Cast<float>(image) * _Const(1.0f / 255.0f);
        auto target = _OneHot(_Cast<int32_t>(label), _Scalar<int>(10), _Scalar<float>(1.0f), _Scalar<float>(0.0f));
        auto predict = model->forward(input);
        auto loss = _CrossEntropy(predict, target);
        const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
        sgd->setLearningRate(lr);
        auto lossPtr = loss->readMap<float>();
        if (!lossPtr) return fail(kMnnError, "mnn", "forward pass produced no loss at step " + std::to_string(step));
        const float lossValue = lossPtr[0];
        double t1 = mnnrepro::monotonicSeconds();
        emitTiming("forward", step, t1);
        if (opt.dumpSteps.count(step)) {
            emitOps("forward", step);
            log.stage("grad_dump", step);
            maybePlant("grad_dump", step);
            const auto gradValues = gradientsOf(loss);
            for (size_t k = 0; k < named.size(); ++k) {
                if (gradValues[k].get() == nullptr) return fail(kMnnError, "mnn", "no gradient for " + named[k].first);
            }
            std::string dir = opt.dumpDir + "/step" + std::to_string(step);
            if (!writeParams(dir + "/grad", named, gradValues, error)) return fail(kOutputError, "output", error);
            // The step's inputs, so a reference implementation can replay it: which training images (row
            // numbers in the IDX file, in batch order) and the dropout mask (0 or 1/(1-p), [batch, 500]).
            std::vector<float> indexValues(indices.begin(), indices.end());
            if (!mnnrepro::writeNpyF32(dir + "/batch_indices.npy", {opt.batchSize}, indexValues.data(), error)) {
                return fail(kOutputError, "output", error);
            }
            const DriverDropout& dropMod = model->dropout();
            std::vector<int> maskDims = dropMod.lastMaskDims;
            std::vector<float> maskValues = dropMod.lastMask;
            if (maskDims.empty()) {  // --dropout 0: no mask was drawn; the identity mask says so explicitly
                maskDims = {opt.batchSize, 500};
                maskValues.assign(size_t(opt.batchSize) * 500, 1.0f);
            }
            if (!mnnrepro::writeNpyF32(dir + "/dropout_mask.npy", maskDims, maskValues.data(), error)) {
                return fail(kOutputError, "output", error);
            }
        }
        emitOps(opt.dumpSteps.count(step) ? "grad_dump" : "forward", step);
        if (!opt.saveGraph.empty()) {
            // The graph sgd->step computes first (SGD::onGetNextParameter: OpGrad::grad of the loss over the
            // trainable parameters, then prepareCompute and readMap of every gradient), saved before anything of
            // it runs: the phase where alibaba/MNN#3129 crashes. Every leaf is a constant or a trainable
            // parameter with its value in the file; the reducer turns what it cuts away into inputs.
            log.stage("save_graph", step);
            const auto grads = gradientsOf(loss);
            std::vector<VARP> outputs;
            for (size_t k = 0; k < named.size(); ++k) {
                if (grads[k].get() == nullptr) continue;
                grads[k]->setName("grad/" + named[k].first);
                outputs.push_back(grads[k]);
            }
            if (outputs.empty()) return fail(kMnnError, "mnn", "no gradient to save");
            mkdir(opt.saveGraph.c_str(), 0755);
            // Graph inputs that hold data (the dropout mask) go to the tensor store beside the graph, by name.
            std::vector<VARP> inputs;
            for (auto& expr : Variable::getExecuteOrder(outputs)) {
                if (expr->get() != nullptr || expr->inputType() != VARP::INPUT) continue;
                VARP v = Variable::create(expr, 0);
                if (expr->outputName(0).empty()) v->setName("input" + std::to_string(inputs.size()));
                inputs.push_back(v);
            }
            const std::string file = opt.saveGraph + "/graph.mnn";
            Variable::save(outputs, file.c_str());
            mnnrepro::Store store;
            if (!store.open(opt.saveGraph + "/inputs", true, error)) return fail(kOutputError, "output", error);
            for (auto& v : inputs) {
                if (!store.write(v->expr().first->outputName(0), v, error)) return fail(kOutputError, "output", error);
            }
            log.emit("graph_saved", Json().str("phase", "sgd_step:gradients").integer("step", step).str("path", file)
                                        .integer("outputs", (long long)outputs.size()));
            log.stage("done");
            return kOk;
        }
        log.stage("sgd_step", step);
        maybePlant("sgd_step", step);
        gTime.reset(mnnrepro::monotonicSeconds());
        if (!sgd->step(loss)) return fail(kMnnError, "mnn", "SGD step failed at step " + std::to_string(step));
        double t2 = mnnrepro::monotonicSeconds();
        emitTiming("sgd_step", step, t2);
        emitOps("sgd_step", step);
        named = model->namedParameters();
        if (opt.dumpSteps.count(step)) {
            std::vector<VARP> values;
            for (auto& p : named) values.push_back(p.second);
            std::string dir = opt.dumpDir + "/step" + std::to_string(step);
            if (!writeParams(dir + "/after", named, values, error)) return fail(kOutputError, "output", error);
        }
        if (int rc = emitStep(step, lossValue, lr, t1 - t0, t2 - t1, indices[0])) return rc;
    }

    // 7. Evaluation on the test split.
    log.stage("test");
    model->setIsTraining(false);
    const int total = opt.testLimit > 0 ? std::min(opt.testLimit, test.count) : test.count;
    int correct = 0;
    double t0 = mnnrepro::monotonicSeconds();
    for (int start = 0; start < total; start += opt.testBatchSize) {
        const int n = std::min(opt.testBatchSize, total - start);
        auto image = _Const(test.images.data() + size_t(start) * pixels, {n, 1, test.rows, test.cols}, NCHW,
                            halide_type_of<uint8_t>());
        auto input = _Cast<float>(image) * _Const(1.0f / 255.0f);
        auto predict = model->forward(input);
        auto probs = predict->readMap<float>();
        if (!probs) return fail(kMnnError, "mnn", "evaluation produced no output");
        for (int i = 0; i < n; ++i) {
            const float* row = probs + size_t(i) * 10;
            int best = 0;
            for (int k = 0; k < 10; ++k) {
                if (!std::isfinite(row[k])) return fail(kNonFinite, "numeric", "non-finite prediction in evaluation");
                if (row[k] > row[best]) best = k;
            }
            correct += best == test.labels[start + i];
        }
    }
    log.emit("test", Json()
                         .integer("correct", correct)
                         .integer("total", total)
                         .num("accuracy", total ? double(correct) / total : 0.0)
                         .num("ms", (mnnrepro::monotonicSeconds() - t0) * 1e3));
    log.emit("backend_after", Json().str("active", forwardName(exe->getAttr()->firstType)));
    log.stage("done");
    log.emit("done", Json().integer("exit_code", kOk));
    return kOk;
}
