// A standalone reproducer written by mnnrepro's reducer (issue 14): runs one saved MNN graph (graph.mnn, from
// Variable::save) with its input values (inputs/manifest.tsv and one raw file per tensor) on a backend, and says
// whether the backend was really used. Needs nothing but MNN (libMNN, libMNN_Express); build with the
// CMakeLists.txt beside it:
//   cmake -S . -B build -DMNN_SOURCE_DIR=/path/to/MNN -DMNN_BUILD_DIR=/path/to/MNN/build && cmake --build build
//   ./build/repro vulkan [path/to/libMNN_Vulkan.so|-] [high|normal|low] [max_rel min_cosine max_nmse]
//   ./build/repro cpu          (a plugin only where MNN was built with MNN_SEP_BUILD; limits: see gLimits)
// Exit: 0 the graph ran on the backend (the bug did not show), a signal (the crash), 1 outputs differ from
// expected/ (when the directory is there), 3 bad input, 4 NOT-EXERCISED (MNN fell back to another backend: nothing
// was tested), 5 FALLBACK (the backend is active, but an op of the graph ran on another one: e.g. the CPU runs the
// Deconvolution that image mode declines from 39be21c56 on, alibaba/MNN#3129; not a pass), 7 an output could not
// be computed (nothing to compare: never "differs").
#include <MNN/MNNForwardType.h>
#include <MNN/expr/Executor.hpp>
#include <MNN/expr/ExecutorScope.hpp>
#include <MNN/expr/Expr.hpp>
#include <MNN/expr/ExprCreator.hpp>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "MNN_generated.h"
#include "RuntimeAttr.hpp"      // MNN-internal (express/): the backend the executor really chose
#include "core/Backend.hpp"     // MNN-internal (source/): the backend that owns an op's output
#include "core/TensorUtils.hpp"

using namespace MNN;
using namespace MNN::Express;

namespace {

// Outputs held against expected/ (the CPU's values): max|o-g| / max|g|, cosine and sum((o-g)^2) / sum(g^2), the
// metrics of mnnrepro's gradient check; the defaults are its fp32 first-step limits.
struct Limits {
    double maxRel = 1e-3, minCosine = 0.999999, maxNmse = 1e-6;
} gLimits;

struct Value {
    std::string dtype, format, file;
    std::vector<int> dims;
};

std::map<std::string, Value> readManifest(const std::string& dir) {
    std::map<std::string, Value> out;
    std::ifstream in(dir + "/manifest.tsv");
    std::string line;
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::stringstream ss(line);
        std::string part;
        while (std::getline(ss, part, '\t')) f.push_back(part);
        f.resize(5);
        Value v{f[1], f[2], f[4], {}};
        std::stringstream ds(f[3]);
        while (std::getline(ds, part, ',')) v.dims.push_back(atoi(part.c_str()));
        out[f[0]] = v;
    }
    return out;
}

halide_type_t typeOf(const std::string& s) {
    if (s == "i32") return halide_type_of<int32_t>();
    if (s == "u8") return halide_type_of<uint8_t>();
    if (s == "i8") return halide_type_of<int8_t>();
    return halide_type_of<float>();
}

VARP inputOf(const std::string& dir, const std::string& name, const Value& v) {
    const bool c4 = v.format == "NC4HW4";
    auto var = _Input(v.dims, c4 || v.format == "NCHW" ? NCHW : NHWC, typeOf(v.dtype));
    size_t n = 1;
    for (int d : v.dims) n *= size_t(d);
    std::ifstream in(dir + "/" + v.file, std::ios::binary);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.size() != n * (typeOf(v.dtype).bits / 8)) {
        fprintf(stderr, "repro: %s/%s has %zu bytes, %s needs %zu\n", dir.c_str(), v.file.c_str(), data.size(),
                name.c_str(), n * (typeOf(v.dtype).bits / 8));
        exit(3);
    }
    if (!data.empty()) memcpy(var->writeMap<void>(), data.data(), data.size());
    return c4 ? _Convert(var, NC4HW4) : var;
}

enum Exit { kRan = 0, kDiffer = 1, kBadInput = 3, kNotExercised = 4, kFallback = 5, kNotComputed = 7 };

const char* backendName(MNNForwardType t) {
    switch (t) {
        case MNN_FORWARD_CPU:
        case MNN_FORWARD_CPU_EXTENSION:  // x86's main CPU backend: host memory all the same
            return "cpu";
        case MNN_FORWARD_VULKAN: return "vulkan";
        case MNN_FORWARD_OPENCL: return "opencl";
        default: return "other";
    }
}

// Where each op ran (backend -> op type -> count), from the executor's callbacks: the backend that owns an op's
// first output is where it ran, as mnnrepro's driver decides (native/src/backend.cpp, traceOp). MNN moves an op
// its backend declines to the CPU without a word (alibaba/MNN#3129 at 3.6.x).
std::map<std::string, std::map<std::string, int>> gPlaced;

void watchPlacement(Executor& exe) {
    exe.setCallBack([](const std::vector<Tensor*>&, const OperatorInfo*) { return true; },
                    [](const std::vector<Tensor*>& outputs, const OperatorInfo* info) {
                        std::string where = "unknown";
                        if (!outputs.empty() && outputs[0] != nullptr) {
                            auto des = TensorUtils::getDescribeOrigin(outputs[0]);
                            Backend* bn = des ? des->getBackend() : nullptr;
                            if (bn) where = backendName(bn->type());
                        }
                        gPlaced[where][info ? info->type() : "?"] += 1;
                        return true;
                    });
}

// The op types of the graph (and the operation of a family op: MNN_OP_SEPERATE builds name BinaryOp by it).
void addKinds(const Op* op, std::set<std::string>& kinds) {
    kinds.insert(EnumNameOpType(op->type()));
    if (op->main_type() == OpParameter_BinaryOp) {
        kinds.insert(EnumNameBinaryOpOperation(BinaryOpOperation(op->main_as_BinaryOp()->opType())));
    } else if (op->main_type() == OpParameter_UnaryOp) {
        kinds.insert(EnumNameUnaryOpOperation(UnaryOpOperation(op->main_as_UnaryOp()->opType())));
    } else if (op->main_type() == OpParameter_ReductionParam) {
        kinds.insert(EnumNameReductionType(op->main_as_ReductionParam()->operation()));
    }
}

// "" when every op of the graph's types ran on `wanted` (and something did); else what did not. Ops of other
// types (the Raster and Convert MNN adds between backends) are not under test.
std::string offBackend(const std::set<std::string>& kinds, const std::string& wanted) {
    std::string off, all;
    for (auto& b : gPlaced) {
        for (auto& t : b.second) {
            const std::string item = t.first + " x" + std::to_string(t.second) + " on " + b.first;
            all += (all.empty() ? "" : "; ") + item;
            if (b.first != wanted && kinds.count(t.first)) off += (off.empty() ? "" : "; ") + item;
        }
    }
    fprintf(stderr, "repro: where the ops ran: %s\n", all.empty() ? "no op recorded" : all.c_str());
    if (!off.empty()) return off + ", not " + wanted;
    return gPlaced.count(wanted) ? "" : "no op ran on " + wanted;
}

}  // namespace

// One output against the CPU's values: prints max_rel, cosine, nmse and where the values differ; true when it is
// outside the limits (or not finite).
static bool differsFromCpu(const std::string& name, const float* ptr, const std::vector<float>& want) {
    double worst = 0, scale = 0, dd = 0, gg = 0, oo = 0, og = 0;
    bool finite = true;
    size_t nonFinite = 0;  // NaN or inf where the CPU's value is finite (max_rel skips them)
    for (size_t i = 0; i < want.size(); ++i) {
        const double o = ptr[i], g = want[i], d = std::fabs(o - g);
        finite = finite && std::isfinite(o);
        nonFinite += (!std::isfinite(o) && std::isfinite(g)) ? 1 : 0;
        if (std::isfinite(d)) worst = std::max(worst, d);
        scale = std::max(scale, std::fabs(g));
        dd += d * d, gg += g * g, oo += o * o, og += o * g;
    }
    const double rel = scale > 0 ? worst / scale : worst, nmse = gg > 0 ? dd / gg : dd;
    const double cosine = oo > 0 && gg > 0 ? og / std::sqrt(oo * gg) : (oo == gg ? 1.0 : 0.0);
    fprintf(stderr, "repro: %s: max_rel %g, cosine %.9f, nmse %g, %zu of %zu not finite, against the CPU's values\n",
            name.c_str(), rel, cosine, nmse, nonFinite, want.size());
    // Where the values differ (flat NCHW index; each off by more than max_rel x max|CPU|): a kernel that leaves
    // part of its output unwritten shows as a range, e.g. from 65536 on where a dispatch exceeded the device's
    // maxComputeWorkGroupCount.
    size_t wrong = 0, first = 0, last = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(double(ptr[i]) - double(want[i]));
        if (d <= gLimits.maxRel * scale) continue;  // NaN compares false: counted as differing
        if (wrong++ == 0) first = i;
        last = i;
    }
    if (wrong) {
        fprintf(stderr, "repro: %s: %zu of %zu values differ, flat indices %zu to %zu\n", name.c_str(), wrong,
                want.size(), first, last);
    }
    return !finite || rel > gLimits.maxRel || cosine < gLimits.minCosine || nmse > gLimits.maxNmse;
}

// The reduced graph in `dir`, op by op again from each op's description, its inputs fed, on whatever backend the
// executor in scope has (`wanted`): kRan ran on it without a difference, kDiffer an output differs from expected/,
// kNotComputed an output has no value, kFallback an op of the graph ran on another backend, kBadInput bad input.
// A crash is the bug showing.
static int runGraph(const std::string& dir, MNNForwardType wanted) {
    auto all = Variable::loadMap((dir + "/graph.mnn").c_str());
    if (all.empty()) return fprintf(stderr, "repro: cannot read graph.mnn\n"), kBadInput;
    std::vector<VARP> outputs;
    for (auto& kv : Variable::getInputAndOutput(all).second) outputs.push_back(kv.second);
    auto values = readManifest(dir + "/inputs");
    std::map<std::pair<const Expr*, int>, VARP> made;
    std::vector<VARP> results;
    std::set<std::string> kinds;
    gPlaced.clear();
    watchPlacement(*ExecutorScope::Current());
    for (auto& expr : Variable::getExecuteOrder(outputs)) {
        if (expr->get() == nullptr) {
            VARP v = Variable::create(expr, 0);
            if (expr->inputType() == VARP::INPUT) {
                auto it = values.find(expr->outputName(0));
                if (it == values.end()) {
                    return fprintf(stderr, "repro: no value for %s\n", expr->outputName(0).c_str()), kBadInput;
                }
                v = inputOf(dir + "/inputs", it->first, it->second);
            }
            made[{expr.get(), 0}] = v;
            continue;
        }
        std::vector<VARP> ins;
        for (auto& in : expr->inputs()) ins.push_back(in.get() ? made[{in->expr().first.get(), in->expr().second}] : nullptr);
        addKinds(expr->get(), kinds);
        std::unique_ptr<OpT> op(expr->get()->UnPack());
        auto copy = Expr::create(op.get(), ins, expr->outputSize());
        for (int k = 0; k < expr->outputSize(); ++k) {
            VARP v = Variable::create(copy, k);
            v->setName(expr->outputName(k));
            made[{expr.get(), k}] = v;
        }
    }
    for (auto& o : outputs) results.push_back(made[{o->expr().first.get(), o->expr().second}]);
    Variable::prepareCompute(results);
    auto expected = readManifest(dir + "/expected");
    int differ = 0;
    for (auto& r : results) {
        // No value to compare (no shape, or the compute failed): not a difference from the CPU's, and not a pass.
        // An NC4HW4 output is held as its NCHW copy, the layout expected/ holds: its info counts the values. The
        // NC4HW4 tensor's own info counts the channels padded to 4 (64x50x8x8 says 212992, not 204800), which once
        // made every graph with such an output "differ" on every backend, the CPU included.
        auto raw = r->getInfo();
        VARP plain = raw && raw->order == NC4HW4 ? _Convert(r, NCHW) : r;
        auto info = raw ? plain->getInfo() : nullptr;
        const auto* ptr = info && info->size > 0 ? plain->readMap<float>() : nullptr;
        if (info == nullptr || (info->size > 0 && ptr == nullptr)) {
            return fprintf(stderr, "repro: could not compute %s\n", r->name().c_str()), kNotComputed;
        }
        auto it = expected.find(r->name());
        if (it == expected.end() || it->second.dtype != "f32") continue;
        size_t count = 1;
        for (int d : it->second.dims) count *= size_t(d);
        std::ifstream in(dir + "/expected/" + it->second.file, std::ios::binary | std::ios::ate);
        if (!in || size_t(in.tellg()) != count * sizeof(float)) {
            return fprintf(stderr, "repro: expected/%s is not %zu floats\n", it->second.file.c_str(), count), kBadInput;
        }
        if (size_t(info->size) != count) {  // another shape than the CPU's: a difference
            fprintf(stderr, "repro: %s has %zu values, the CPU's %zu\n", r->name().c_str(), size_t(info->size), count);
            ++differ;
            continue;
        }
        if (count == 0) continue;
        in.seekg(0);
        std::vector<float> want(count);
        in.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * sizeof(float)));
        differ += differsFromCpu(r->name(), ptr, want) ? 1 : 0;
    }
    if (wanted != MNN_FORWARD_CPU) {
        const std::string off = offBackend(kinds, backendName(wanted));
        if (!off.empty()) return fprintf(stderr, "repro: FALLBACK: %s\n", off.c_str()), kFallback;
    }
    fprintf(stderr, "repro: %s\n", differ ? "outputs differ from the CPU's" : "ran, no difference: the bug did not show");
    return differ ? kDiffer : kRan;
}

#if __has_include("MNNTestSuite.h")
// Dropped into MNN's test/ (the file as it is): a test of upstream's own suite, on the backend run_test.out was
// given, failing when an op of the graph ran elsewhere; the graph directory is $MNN_REPRO_DIR (default: repro/):
//   MNN_REPRO_DIR=/path/to/repro ./run_test.out repro/reduced_graph 7 1     (7: Vulkan, 0: CPU; precision 1: high)
// Build MNN with -DMNN_BUILD_TEST=ON -DMNN_SEP_BUILD=OFF (with separate backend libraries run_test.out does not
// load Vulkan). run_test.out exits 0 without running any test when it cannot make the backend ("Can't create
// executor with type:7, exit!"): that is not a pass; the test says which backend it ran on.
#include "MNNTestSuite.h"

// The backend run_test.out was asked for (its second argument), where the suite records it (Status::forwardType;
// older suites do not, and then only the backend in use is printed).
template <typename S>
auto askedBackend(const S& status, int) -> decltype(status.forwardType, int()) {
    return status.forwardType;
}
template <typename S>
int askedBackend(const S&, long) {
    return -1;
}

class ReducedGraphTest : public MNNTestCase {
public:
    bool run(int precision) override {
        const int asked = askedBackend(MNNTestSuite::get()->pStaus, 0);
        const int used = int(ExecutorScope::Current()->getAttr()->firstType);
        if (asked >= 0 && asked != used) {  // MNN fell back: the backend under test was not used
            fprintf(stderr, "repro: NOT-EXERCISED: MNN runs on backend %d, not %d\n", used, asked);
            return false;
        }
        fprintf(stderr, "repro: running the reduced graph on backend %d\n", used);
        const char* dir = getenv("MNN_REPRO_DIR");
        return runGraph(dir ? dir : "repro", MNNForwardType(used)) == kRan;
    }
};
MNNTestSuiteRegister(ReducedGraphTest, "repro/reduced_graph");
#else
int main(int argc, char** argv) {
    const std::string backend = argc > 1 ? argv[1] : "vulkan";
    const MNNForwardType wanted = backend == "cpu" ? MNN_FORWARD_CPU
                                  : backend == "opencl" ? MNN_FORWARD_OPENCL
                                                        : MNN_FORWARD_VULKAN;
    const std::string precision = argc > 3 ? argv[3] : "high";
    if (argc > 6) gLimits = Limits{atof(argv[4]), atof(argv[5]), atof(argv[6])};
    if (argc > 2 && std::string(argv[2]) != "-" && dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
        fprintf(stderr, "repro: cannot load %s: %s\n", argv[2], dlerror());
        return kNotExercised;
    }
    // MNN falls back to the CPU silently when it cannot create the runtime: read back what it chose.
    auto exe = Executor::getGlobalExecutor();
    BackendConfig config;
    config.precision = precision == "low"      ? BackendConfig::Precision_Low
                       : precision == "normal" ? BackendConfig::Precision_Normal
                                               : BackendConfig::Precision_High;
    exe->setGlobalExecutorConfig(wanted, config, 1);
    if (exe->getAttr()->firstType != wanted) {
        fprintf(stderr, "repro: NOT-EXERCISED: MNN runs on backend %d, not %s\n", int(exe->getAttr()->firstType),
                backend.c_str());
        return kNotExercised;
    }
    fprintf(stderr, "repro: running graph.mnn on %s\n", backend.c_str());
    return runGraph(".", wanted);
}
#endif
