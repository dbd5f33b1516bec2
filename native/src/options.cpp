// mnist_driver's command line: options by table (the value kinds: text, integer with a minimum, flag), and the
// two that parse their own value (--dump-steps, --dropout).
#include "options.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend.hpp"
#include "model.hpp"

namespace mnnrepro {
namespace driver {
namespace {

struct TextOption {
    const char* name;
    std::string Options::*field;
};
const TextOption kTextOptions[] = {
    {"--backend", &Options::backend},      {"--plugin", &Options::plugin},         {"--data", &Options::data},
    {"--out", &Options::out},              {"--init-params", &Options::initParams}, {"--save-init", &Options::saveInit},
    {"--save-graph", &Options::saveGraph}, {"--dump-dir", &Options::dumpDir},       {"--precision", &Options::precision},
    {"--model", &Options::model},
};

struct IntOption {
    const char* name;
    int Options::*field;
    int minimum;
};
const IntOption kIntOptions[] = {
    {"--steps", &Options::steps, 1}, {"--batch-size", &Options::batchSize, 1},
    {"--test-batch-size", &Options::testBatchSize, 1}, {"--test-limit", &Options::testLimit, 0},
    {"--seed", &Options::seed, 0},   {"--threads", &Options::threads, 1},
};

struct FlagOption {
    const char* name;
    bool Options::*field;
    bool value;
};
const FlagOption kFlagOptions[] = {
    {"--static-graph", &Options::staticGraph, true},
    {"--train-graph-file", &Options::trainGraphFile, true},
    {"--no-trace-ops", &Options::traceOps, false},
    {"--allow-fallback", &Options::allowFallback, true},
    {"--vk-canary", &Options::vkCanary, true},
};

bool parseInt(const char* s, int& v) {
    char* end = nullptr;
    long x = strtol(s, &end, 10);
    if (!s[0] || *end) return false;
    v = int(x);
    return true;
}

bool parseDumpSteps(const std::string& list, std::set<int>& steps, std::string& error) {
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        int v = 0;
        if (!parseInt(item.c_str(), v) || v < 0) {
            error = "--dump-steps wants comma-separated step numbers, got '" + list + "'";
            return false;
        }
        steps.insert(v);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return true;
}

// --model NAME: one of the registry's names (a typo must not train another model).
bool checkModel(const std::string& name, std::string& error) {
    std::string known;
    for (const std::string& n : modelNames()) {
        if (n == name) return true;
        known += (known.empty() ? "" : ", ") + n;
    }
    error = "--model: unknown model '" + name + "' (known models: " + known + ")";
    return false;
}

bool parseDropout(const char* s, float& ratio, std::string& error) {
    char* end = nullptr;
    ratio = strtof(s, &end);
    if (*end || !(ratio >= 0.0f && ratio < 1.0f)) {
        error = "--dropout wants a ratio in [0, 1)";
        return false;
    }
    return true;
}

// The option at argv[i] (and its value, moving i past it): false with `error` set when it is bad.
bool parseOne(int argc, char** argv, int& i, Options& o, std::string& error) {
    const std::string a = argv[i];
    auto need = [&]() -> const char* {
        if (i + 1 >= argc) {
            error = a + " needs a value";
            return nullptr;
        }
        return argv[++i];
    };
    for (const TextOption& t : kTextOptions) {
        if (a != t.name) continue;
        const char* s = need();
        if (s) o.*t.field = s;
        return s != nullptr;
    }
    for (const IntOption& t : kIntOptions) {
        if (a != t.name) continue;
        const char* s = need();
        if (!s) return false;
        if (!parseInt(s, o.*t.field) || o.*t.field < t.minimum) {
            error = a + " wants an integer >= " + std::to_string(t.minimum) + ", got '" + s + "'";
            return false;
        }
        return true;
    }
    for (const FlagOption& t : kFlagOptions) {
        if (a != t.name) continue;
        o.*t.field = t.value;
        return true;
    }
    const char* s = nullptr;
    if (a == "--dump-steps") return (s = need()) && parseDumpSteps(s, o.dumpSteps, error);
    if (a == "--dropout") return (s = need()) && parseDropout(s, o.dropout, error);
    error = "unknown argument '" + a + "'";
    return false;
}

}  // namespace

void usage() {
    fprintf(stderr,
            "usage: mnist_driver --backend cpu|vulkan|opencl --data DIR --out DIR [options]\n"
            "  --model NAME          the model to train: lenet (default) or mnistv2\n"
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
            "  --vk-canary           one deliberate invalid Vulkan call, proof a validation layer is loaded\n"
            "  --no-trace-ops        do not record where each op ran (events \"ops\")\n"
            "  --static-graph        build the training graph (loss, gradients, SGD update) once and rerun it\n"
            "  --train-graph-file    save that graph (with every gradient) as OUT/train_graph.mnn, then train by\n"
            "                        loading the file (Module::load on the backend under test), parameters fed back\n");
}

bool parseArgs(int argc, char** argv, Options& o, std::string& error) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            usage();
            exit(kOk);
        }
        if (!parseOne(argc, argv, i, o, error)) return false;
    }
    if (!checkModel(o.model, error)) return false;
    // One step loop per run: the saved graph's is neither the in-memory one nor the dynamic one --save-graph cuts.
    if (o.trainGraphFile && (o.staticGraph || !o.saveGraph.empty())) {
        error = "--train-graph-file cannot be combined with --static-graph or --save-graph";
        return false;
    }
    if (!(error = checkBackendOptions(o.backend, o.precision)).empty()) return false;
    if (o.data.empty() || o.out.empty()) {
        error = "--data and --out are required";
        return false;
    }
    if (o.dumpDir.empty()) o.dumpDir = o.out + "/grads";
    return true;
}

}  // namespace driver
}  // namespace mnnrepro
