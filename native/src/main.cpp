// mnist_driver: trains MNN's MNIST Lenet (or another model of models/: --model) on one backend and writes what
// happened as JSON lines.
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
//
// The parts (driver.hpp): options.cpp (command line), run.cpp (events), data.cpp, params.cpp (stage
// build_model), train.cpp, static_graph.cpp and saved_graph.cpp (the step loops), evaluate.cpp; the model
// behind model.hpp (models/lenet.cpp, models/mnistv2.cpp: by name from models/registry.cpp).
#include <MNN/expr/Executor.hpp>

#include <cstdio>
#include <string>

#include "RuntimeAttr.hpp"
#include "backend.hpp"
#include "driver.hpp"

using namespace MNN::Express;
using namespace mnnrepro;
using namespace mnnrepro::driver;

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
    Run run(opt);
    if (!run.log.open(opt.out + "/events.jsonl")) {
        fprintf(stderr, "mnist_driver: cannot write %s/events.jsonl\n", opt.out.c_str());
        return kOutputError;
    }
    run.start(argc, argv);
    // Plugin, device probe, executor (backend.cpp): the backend MNN really uses, read back, with the reason when
    // it is not the one requested (MNN_FACTS: silent CPU fallback otherwise).
    const BackendSetup setup =
        setupBackend(run.log, opt.backend, opt.plugin, opt.precision, opt.threads, opt.vkCanary);
    auto exe = Executor::getGlobalExecutor();
    if (opt.traceOps) traceExecutor(*exe);
    if (!setup.exercised) {
        fprintf(stderr, "mnist_driver: NOT-EXERCISED: %s\n", setup.reason.c_str());
        if (!opt.allowFallback) return kNotExercised;
    }
    auto model = makeModel(opt.model);  // a known name: parseArgs checked it
    Data data;
    if (int rc = loadData(run, *model, data); rc != kContinue) return rc;
    Trainer trainer(run, *model, opt.seed);
    if (int rc = buildModel(trainer); rc != kContinue) return rc;
    const int trained = opt.trainGraphFile ? trainSaved(trainer, data.train)
                        : opt.staticGraph  ? trainStatic(trainer, data.train)
                                           : trainDynamic(trainer, data.train);
    if (trained != kContinue) return trained;
    if (int rc = evaluate(trainer, data.test); rc != kContinue) return rc;
    run.log.emit("backend_after", Json().str("active", forwardName(exe->getAttr()->firstType)));
    run.log.stage("done");
    run.log.emit("done", Json().integer("exit_code", kOk));
    return kOk;
}
