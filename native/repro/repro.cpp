// A standalone reproducer written by mnnrepro's reducer (issue 14): runs one saved MNN graph (graph.mnn, from
// Variable::save) with its input values (inputs/manifest.tsv and one raw file per tensor) on a backend, and says
// whether the backend was really used. Needs nothing but MNN (libMNN, libMNN_Express); build with the
// CMakeLists.txt beside it:
//   cmake -S . -B build -DMNN_SOURCE_DIR=/path/to/MNN -DMNN_BUILD_DIR=/path/to/MNN/build && cmake --build build
//   ./build/repro vulkan [path/to/libMNN_Vulkan.so|-] [high|normal|low] [max_rel min_cosine max_nmse]
//   ./build/repro cpu          (a plugin only where MNN was built with MNN_SEP_BUILD; limits: see gLimits)
// Exit: 0 the graph ran (the bug did not show), a signal (the crash), 1 outputs differ from expected/ (when the
// directory is there), 3 bad input, 4 NOT-EXERCISED (MNN fell back to another backend: nothing was tested).
#include <MNN/MNNForwardType.h>
#include <MNN/expr/Executor.hpp>
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
#include "RuntimeAttr.hpp"  // MNN-internal (express/): the backend the executor really chose

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

}  // namespace

// The reduced graph in `dir`, op by op again from each op's description, its inputs fed, on whatever backend the
// global executor has: 0 ran without a difference, 1 an output was not computed or differs from expected/, 3 bad
// input. A crash is the bug showing.
static int runGraph(const std::string& dir) {
    auto all = Variable::loadMap((dir + "/graph.mnn").c_str());
    if (all.empty()) return fprintf(stderr, "repro: cannot read graph.mnn\n"), 3;
    std::vector<VARP> outputs;
    for (auto& kv : Variable::getInputAndOutput(all).second) outputs.push_back(kv.second);
    auto values = readManifest(dir + "/inputs");
    std::map<std::pair<const Expr*, int>, VARP> made;
    std::vector<VARP> results;
    for (auto& expr : Variable::getExecuteOrder(outputs)) {
        if (expr->get() == nullptr) {
            VARP v = Variable::create(expr, 0);
            if (expr->inputType() == VARP::INPUT) {
                auto it = values.find(expr->outputName(0));
                if (it == values.end()) return fprintf(stderr, "repro: no value for %s\n", expr->outputName(0).c_str()), 3;
                v = inputOf(dir + "/inputs", it->first, it->second);
            }
            made[{expr.get(), 0}] = v;
            continue;
        }
        std::vector<VARP> ins;
        for (auto& in : expr->inputs()) ins.push_back(in.get() ? made[{in->expr().first.get(), in->expr().second}] : nullptr);
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
        VARP plain = r->getInfo() && r->getInfo()->order == NC4HW4 ? _Convert(r, NCHW) : r;
        const auto* ptr = plain->readMap<float>();
        if (ptr == nullptr) return fprintf(stderr, "repro: %s was not computed\n", r->name().c_str()), 1;
        auto it = expected.find(r->name());
        if (it == expected.end() || it->second.dtype != "f32") continue;
        std::ifstream in(dir + "/expected/" + it->second.file, std::ios::binary);
        std::vector<float> want(size_t(r->getInfo()->size));
        in.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * sizeof(float)));
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
                r->name().c_str(), rel, cosine, nmse, nonFinite, want.size());
        differ += (!finite || rel > gLimits.maxRel || cosine < gLimits.minCosine || nmse > gLimits.maxNmse) ? 1 : 0;
    }
    fprintf(stderr, "repro: %s\n", differ ? "outputs differ from the CPU's" : "ran, no difference: the bug did not show");
    return differ ? 1 : 0;
}

#if __has_include("MNNTestSuite.h")
// Dropped into MNN's test/ (the file as it is): a test of upstream's own suite, on the backend run_test.out was
// given; the graph directory is $MNN_REPRO_DIR (default: repro/ in the working directory):
//   MNN_REPRO_DIR=/path/to/repro ./run_test.out repro/reduced_graph 7 1     (7: Vulkan, 0: CPU; precision 1: high)
// Build MNN with -DMNN_BUILD_TEST=ON -DMNN_SEP_BUILD=OFF (with separate backend libraries run_test.out does not
// load Vulkan). run_test.out exits 0 without running any test when it cannot make the backend ("Can't create
// executor with type:7, exit!"): that is not a pass; the test says which backend it ran on.
#include <MNN/expr/ExecutorScope.hpp>

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
        return runGraph(dir ? dir : "repro") == 0;
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
        return 4;
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
        return 4;
    }
    fprintf(stderr, "repro: running graph.mnn on %s\n", backend.c_str());
    return runGraph(".");
}
#endif
