// mnn_graph: the graph side of the crash reducer (issue 14). One MNN graph file (Variable::save) and its tensor
// values, four commands:
//   info   --graph G                                  the ops in execution order, one TSV line each (stdout)
//   values --graph G --inputs DIR --out DIR           every op's outputs computed on the CPU backend
//   cut    --graph G --inputs DIR --values DIR --keep FILE --out DIR
//                                                     the ops of FILE (indices of `info`) as a graph of their own:
//                                                     an input of a kept op whose producer is not kept becomes a
//                                                     graph input (never a constant: that can change which kernel
//                                                     MNN picks) fed with the producer's CPU value
//   run    --graph G --inputs DIR --out DIR --backend B [--plugin P] [--precision p] [--expect DIR]
//                                                     the graph on a backend, proven active first (the driver's
//                                                     proof: NOT-EXERCISED exits 4), every output compared with
//                                                     --expect (the CPU's values) when given
// Tensor stores (DIR) hold manifest.tsv (name, dtype, format, dims, file) and one raw little-endian file each.
// Exit codes follow the driver's contract (native/README.md): 0 ok, 1 outputs differ, 2 usage, 3 data,
// 4 NOT-EXERCISED, 6 output, 7 MNN error.
#include <MNN/MNNDefine.h>
#include <MNN/expr/Executor.hpp>
#include <MNN/expr/Expr.hpp>
#include <MNN/expr/ExprCreator.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../src/backend.hpp"
#include "../src/events.hpp"
#include "../src/tensorstore.hpp"
#include "MNN_generated.h"

using namespace MNN;
using namespace MNN::Express;
using mnnrepro::Json;
using mnnrepro::Store;
using mnnrepro::Stored;
using mnnrepro::count;
using mnnrepro::dtypeName;
using mnnrepro::dtypeOf;
using mnnrepro::joinDims;

namespace {

enum Exit { kOk = 0, kDiffer = 1, kUsage = 2, kData = 3, kNotExercised = 4, kOutput = 6, kMnn = 7 };

// -- the graph -----------------------------------------------------------------------------------------------
struct Node {
    EXPRP expr;
    std::string kind;  // an op type, or INPUT / CONST / TRAINABLE for a leaf
    std::string detail;  // which operation an op of a family is (BinaryOp POW, UnaryOp EXP, Reduction MEAN)
    bool leaf = false;
};

struct Graph {
    std::map<std::string, VARP> all;
    std::vector<VARP> outputs;
    std::vector<Node> nodes;  // execution order: the index is the op's id for `cut --keep`
    std::map<const Expr*, int> index;
};

std::string tensorName(const VARP& v) {
    auto from = v->expr();
    const std::string& n = from.first->outputName(from.second);
    return n.empty() ? v->name() : n;
}

// The operation of an op that stands for a family (a report that says "BinaryOp" alone hides the bug's op).
std::string opDetail(const MNN::Op* op) {
    switch (op->main_type()) {
        case MNN::OpParameter_BinaryOp:
            return MNN::EnumNameBinaryOpOperation(MNN::BinaryOpOperation(op->main_as_BinaryOp()->opType()));
        case MNN::OpParameter_UnaryOp:
            return MNN::EnumNameUnaryOpOperation(MNN::UnaryOpOperation(op->main_as_UnaryOp()->opType()));
        case MNN::OpParameter_ReductionParam:
            return MNN::EnumNameReductionType(op->main_as_ReductionParam()->operation());
        case MNN::OpParameter_Eltwise:
            return MNN::EnumNameEltwiseType(op->main_as_Eltwise()->type());
        default:
            return "";
    }
}

bool loadGraph(const std::string& path, Graph& g, std::string& error) {
    g.all = Variable::loadMap(path.c_str());
    if (g.all.empty()) {
        error = path + ": not an MNN graph (or empty)";
        return false;
    }
    for (auto& kv : Variable::getInputAndOutput(g.all).second) g.outputs.push_back(kv.second);
    for (auto& expr : Variable::getExecuteOrder(g.outputs)) {
        Node n;
        n.expr = expr;
        n.leaf = expr->get() == nullptr;
        if (n.leaf) {
            auto t = expr->inputType();
            n.kind = t == VARP::INPUT ? "INPUT" : t == VARP::TRAINABLE ? "TRAINABLE" : "CONST";
        } else {
            n.kind = EnumNameOpType(expr->get()->type());
            n.detail = opDetail(expr->get());
        }
        g.index[expr.get()] = int(g.nodes.size());
        g.nodes.push_back(n);
    }
    return true;
}

// The graph again, op by op (Expr::create from each op's own description), keeping the ops of `keep`: a graph
// input is fed from `inputs`; the output of an op left out becomes a graph input fed with its CPU value from
// `values` (an input, never a constant: a constant can change which kernel MNN picks and hide the bug);
// constants and trainable parameters stay what they were. Ops are always rebuilt, also when all are kept: the
// variables of a loaded graph do not compute by themselves in every MNN release.
using Key = std::pair<const Expr*, int>;
struct Built {
    std::map<Key, VARP> made;
    std::vector<VARP> outputs;                         // outputs of kept ops that no kept op consumes
    std::vector<std::pair<std::string, VARP>> inputs;  // graph inputs of the result, with their values
};

bool rebuild(const Graph& g, const std::set<int>& keep, const Store& inputs, const Store* values, Built& b,
             std::string& error) {
    std::set<Key> consumed;
    for (int i : keep) {
        const Node& n = g.nodes[i];
        std::vector<VARP> ins;
        for (auto& v : n.expr->inputs()) {
            if (v.get() == nullptr) {
                ins.push_back(nullptr);
                continue;
            }
            auto from = v->expr();
            Key key(from.first.get(), from.second);
            consumed.insert(key);
            auto it = b.made.find(key);
            if (it != b.made.end()) {
                ins.push_back(it->second);
                continue;
            }
            const Node& p = g.nodes[g.index.at(from.first.get())];
            const std::string name = tensorName(v);
            VARP repl;
            if (p.kind == "CONST" || p.kind == "TRAINABLE") {
                repl = v;
            } else {
                const Store* store = p.kind == "INPUT" ? &inputs : values;
                if (store == nullptr || !store->has(name)) {
                    error = "no value for " + name + (p.kind == "INPUT" ? " (a graph input)" : " (an op's output)");
                    return false;
                }
                repl = store->input(name, error);
                if (repl.get() == nullptr) return false;
                const bool c4 = store->get(name).format == "NC4HW4";
                b.inputs.emplace_back(c4 ? name + "__nchw" : name, c4 ? repl->expr().first->inputs()[0] : repl);
            }
            b.made[key] = repl;
            ins.push_back(repl);
        }
        std::unique_ptr<OpT> op(n.expr->get()->UnPack());
        auto expr = Expr::create(op.get(), ins, n.expr->outputSize());
        expr->setName(n.expr->name());
        for (int k = 0; k < n.expr->outputSize(); ++k) {
            VARP nv = Variable::create(expr, k);
            nv->setName(n.expr->outputName(k));
            b.made[Key(n.expr.get(), k)] = nv;
        }
    }
    for (int i : keep) {
        for (int k = 0; k < g.nodes[i].expr->outputSize(); ++k) {
            Key key(g.nodes[i].expr.get(), k);
            if (!consumed.count(key)) b.outputs.push_back(b.made[key]);
        }
    }
    if (b.outputs.empty()) {
        error = "the kept ops have no output";
        return false;
    }
    return true;
}

std::set<int> allOps(const Graph& g) {
    std::set<int> all;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        if (!g.nodes[i].leaf) all.insert(int(i));
    }
    return all;
}

// -- commands ------------------------------------------------------------------------------------------------
struct Options {
    std::string command, graph, inputs, values, keep, out, backend = "cpu", plugin, precision = "high", expect;
    int threads = 1;
    // Limits of a difference from the CPU's values: the suite's fp32 first-step gradient tolerances by default
    // (fixtures/matrix.toml [gradcheck.tolerance.fp32].first); the reducer passes the backend's own.
    double maxRel = 1e-3, minCosine = 0.999999, maxNmse = 1e-6;
    // --vk-canary (issue 25): the validation canary of the driver's probe, so a reducer trial under the Khronos layer
    // proves the layer ran in its own process (a VUID's absence counts only then).
    bool vkCanary = false;
};

int info(const Options& o) {
    Graph g;
    std::string error;
    if (!loadGraph(o.graph, g, error)) return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kData;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Node& n = g.nodes[i];
        std::string ins, outs;
        for (auto& v : n.expr->inputs()) ins += (ins.empty() ? "" : "|") + (v.get() != nullptr ? tensorName(v) : std::string("-"));
        for (int k = 0; k < n.expr->outputSize(); ++k) outs += (k ? "|" : "") + n.expr->outputName(k);
        printf("%zu\t%s\t%s\t%s\t%s\t%s\n", i, n.kind.c_str(), n.expr->name().c_str(), ins.c_str(), outs.c_str(),
               n.detail.c_str());
    }
    return kOk;
}

int values(const Options& o) {
    Graph g;
    Store inputs, out;
    Built b;
    std::string error;
    if (!loadGraph(o.graph, g, error) || !inputs.open(o.inputs, false, error) ||
        !rebuild(g, allOps(g), inputs, nullptr, b, error)) {
        return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kData;
    }
    if (!out.open(o.out, true, error)) return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kOutput;
    for (int i : allOps(g)) {
        for (int k = 0; k < g.nodes[i].expr->outputSize(); ++k) {
            if (!out.write(g.nodes[i].expr->outputName(k), b.made[Key(g.nodes[i].expr.get(), k)], error)) {
                return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kMnn;
            }
        }
    }
    return kOk;
}

int cut(const Options& o) {
    Graph g;
    Store inputs, vals, out;
    Built b;
    std::string error;
    if (!loadGraph(o.graph, g, error) || !inputs.open(o.inputs, false, error) || !vals.open(o.values, false, error)) {
        return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kData;
    }
    std::set<int> keep;
    {
        std::ifstream in(o.keep);
        int i;
        while (in >> i) {
            if (i < 0 || i >= int(g.nodes.size()) || g.nodes[i].leaf) {
                return fprintf(stderr, "mnn_graph: --keep: %d is not an op of the graph\n", i), kData;
            }
            keep.insert(i);
        }
    }
    if (keep.empty()) return fprintf(stderr, "mnn_graph: --keep names no op\n"), kData;
    if (!rebuild(g, keep, inputs, &vals, b, error)) return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kData;
    mkdir(o.out.c_str(), 0755);
    if (!out.open(o.out + "/inputs", true, error)) return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kOutput;
    for (auto& in : b.inputs) {
        if (!out.write(in.first, in.second, error)) return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kOutput;
    }
    const std::string file = o.out + "/graph.mnn";
    Variable::save(b.outputs, file.c_str());
    struct stat st;
    if (stat(file.c_str(), &st) != 0 || st.st_size == 0) {
        return fprintf(stderr, "mnn_graph: %s was not written\n", file.c_str()), kOutput;
    }
    printf("%zu ops, %zu inputs, %zu outputs\n", keep.size(), b.inputs.size(), b.outputs.size());
    return kOk;
}

// One output against the expected values: the metrics into `out`; true when it differs.
bool compareOutput(const Options& o, const std::vector<double>& got, const std::vector<double>& want, Json& out) {
    // The metrics of src/mnnrepro/gradcheck.py: max_rel = max|o-g| / max|g|, cosine, nmse = sum((o-g)^2) /
    // sum(g^2); a non-finite value or a shape change is a difference.
    bool bad = got.size() != want.size();
    double maxAbs = 0, scale = 0, oo = 0, gg = 0, og = 0, dd = 0;
    long long nonFinite = 0;  // NaN or inf where the CPU's value is finite (max_abs skips them)
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        const double a = got[i], b = want[i], d = std::fabs(a - b);
        if (!std::isfinite(a) && std::isfinite(b)) ++nonFinite;
        if (!std::isfinite(a)) bad = true;
        if (std::isfinite(d)) maxAbs = std::max(maxAbs, d);
        scale = std::max(scale, std::fabs(b));
        oo += a * a, gg += b * b, og += a * b, dd += (a - b) * (a - b);
    }
    const double inf = std::numeric_limits<double>::infinity();
    const double rel = scale > 0 ? maxAbs / scale : (maxAbs == 0 ? 0 : inf);
    const double nmse = gg > 0 ? dd / gg : (maxAbs == 0 ? 0 : inf);
    const double cosine = oo > 0 && gg > 0 ? og / std::sqrt(oo * gg) : (oo == gg ? 1.0 : 0.0);
    bad = bad || rel > o.maxRel || cosine < o.minCosine || nmse > o.maxNmse;
    out.num("max_abs", maxAbs).num("max_rel", rel).num("cosine", cosine).num("nmse", nmse);
    out.integer("nonfinite", nonFinite).integer("count", (long long)want.size());
    out.boolean("differs", bad);
    return bad;
}

int run(const Options& o, int argc, char** argv) {
    mkdir(o.out.c_str(), 0755);
    mnnrepro::EventLog log;
    log.setProgram("mnn_graph");
    if (!log.open(o.out + "/events.jsonl")) return fprintf(stderr, "mnn_graph: cannot write %s\n", o.out.c_str()), kOutput;
    log.emit("start", Json()
                          .str("driver", "mnn_graph")
                          .str("mnn_version", MNN::getVersion())
                          .integer("pid", getpid())
                          .strs("argv", std::vector<std::string>(argv, argv + argc)));
    const auto setup = mnnrepro::setupBackend(log, o.backend, o.plugin, o.precision, o.threads, o.vkCanary);
    if (!setup.exercised) {
        fprintf(stderr, "mnn_graph: NOT-EXERCISED: %s\n", setup.reason.c_str());
        return kNotExercised;
    }
    Executor::getGlobalExecutor()->setCallBack(
        [](const std::vector<Tensor*>&, const OperatorInfo*) { return true; },
        [](const std::vector<Tensor*>& outputs, const OperatorInfo* info) {
            mnnrepro::traceOp(outputs, info);
            return true;
        });
    log.stage("load_graph");
    Graph g;
    Store inputs, expect;
    Built b;
    std::string error;
    if (!loadGraph(o.graph, g, error) || !inputs.open(o.inputs, false, error) ||
        !rebuild(g, allOps(g), inputs, nullptr, b, error) || (!o.expect.empty() && !expect.open(o.expect, false, error))) {
        log.emit("error", Json().str("stage", "load_graph").str("message", error));
        return fprintf(stderr, "mnn_graph: %s\n", error.c_str()), kData;
    }
    int ops = 0;
    for (auto& n : g.nodes) ops += n.leaf ? 0 : 1;
    log.emit("graph", Json().integer("ops", ops).integer("outputs", (long long)b.outputs.size()));
    log.stage("compute");
    Variable::prepareCompute(b.outputs);
    int differ = 0;
    for (auto& v : b.outputs) {
        const std::string name = tensorName(v);
        auto info = v->getInfo();
        VARP plain = info && info->order == NC4HW4 ? _Convert(v, NCHW) : v;
        const void* ptr = plain->readMap<void>();
        if (ptr == nullptr || info == nullptr) {
            log.emit("error", Json().str("stage", "compute").str("message", "no value for output " + name));
            return fprintf(stderr, "mnn_graph: %s: no value (compute failed)\n", name.c_str()), kMnn;
        }
        Json out;
        out.str("name", name).str("dims", joinDims(plain->getInfo()->dim));
        if (!o.expect.empty() && expect.has(name)) {
            std::string dtype;
            dtypeName(info->type, dtype);
            auto got = Store::toDoubles(ptr, plain->getInfo()->size, dtype);
            auto want = expect.floats(name);
            const bool bad = compareOutput(o, got, want, out);
            differ += bad ? 1 : 0;
        }
        log.emit("output", out);
    }
    log.emit("ops", Json().raw("by_backend", mnnrepro::gTrace.json()).integer("total", mnnrepro::gTrace.total));
    log.stage("done");
    return differ ? kDiffer : kOk;
}

void usage() {
    fprintf(stderr,
            "usage: mnn_graph info   --graph G.mnn\n"
            "       mnn_graph values --graph G.mnn --inputs DIR --out DIR\n"
            "       mnn_graph cut    --graph G.mnn --inputs DIR --values DIR --keep FILE --out DIR\n"
            "       mnn_graph run    --graph G.mnn --inputs DIR --out DIR [--backend cpu|vulkan|opencl]\n"
            "                        [--plugin PATH] [--precision high|normal|low] [--threads N]\n"
            "                        [--expect DIR] [--max-rel X] [--min-cosine X] [--max-nmse X] [--vk-canary]\n");
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (argc < 2) return usage(), kUsage;
    o.command = argv[1];
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--vk-canary") {
            o.vkCanary = true;
            continue;
        }
        if (i + 1 >= argc) return fprintf(stderr, "mnn_graph: %s needs a value\n", a.c_str()), usage(), kUsage;
        const std::string v = argv[++i];
        if (a == "--graph") o.graph = v;
        else if (a == "--inputs") o.inputs = v;
        else if (a == "--values") o.values = v;
        else if (a == "--keep") o.keep = v;
        else if (a == "--out") o.out = v;
        else if (a == "--backend") o.backend = v;
        else if (a == "--plugin") o.plugin = v;
        else if (a == "--precision") o.precision = v;
        else if (a == "--expect") o.expect = v;
        else if (a == "--threads") o.threads = atoi(v.c_str());
        else if (a == "--max-rel") o.maxRel = atof(v.c_str());
        else if (a == "--min-cosine") o.minCosine = atof(v.c_str());
        else if (a == "--max-nmse") o.maxNmse = atof(v.c_str());
        else return fprintf(stderr, "mnn_graph: unknown option %s\n", a.c_str()), usage(), kUsage;
    }
    if (o.graph.empty()) return fprintf(stderr, "mnn_graph: --graph is required\n"), usage(), kUsage;
    if (o.command == "info") return info(o);
    if (o.inputs.empty() || (o.command != "info" && o.out.empty())) {
        return fprintf(stderr, "mnn_graph: --inputs and --out are required\n"), usage(), kUsage;
    }
    if (o.command == "values") return values(o);
    if (o.command == "cut") {
        if (o.values.empty() || o.keep.empty()) return fprintf(stderr, "mnn_graph: cut needs --values and --keep\n"), kUsage;
        return cut(o);
    }
    if (o.command == "run") {
        const std::string bad = mnnrepro::checkBackendOptions(o.backend, o.precision);
        if (!bad.empty()) return fprintf(stderr, "mnn_graph: %s\n", bad.c_str()), usage(), kUsage;
        return run(o, argc, argv);
    }
    return fprintf(stderr, "mnn_graph: unknown command %s\n", o.command.c_str()), usage(), kUsage;
}
