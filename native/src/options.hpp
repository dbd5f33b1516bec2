// mnist_driver's command line (`mnist_driver --help`) and exit codes.
#pragma once
#include <set>
#include <string>

namespace mnnrepro {
namespace driver {

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
    std::string model = "lenet";  // a name of models/registry.cpp
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
    bool trainGraphFile = false;  // --train-graph-file: train from the saved OUT/train_graph.mnn (saved_graph.cpp)
    bool vkCanary = false;        // --vk-canary: the validation canary (issue 25; probe.hpp)
};

void usage();
// False with `error` set on a bad command line; --help prints the usage and exits 0.
bool parseArgs(int argc, char** argv, Options& o, std::string& error);

}  // namespace driver
}  // namespace mnnrepro
