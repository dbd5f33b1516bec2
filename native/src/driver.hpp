// mnist_driver's parts (issue 23): the run's events (run.cpp), data (data.cpp), model and parameters
// (params.cpp), the step loops (train.cpp, static_graph.cpp, saved_graph.cpp) and evaluation (evaluate.cpp);
// main.cpp puts them in order. The model itself is behind model.hpp. The output contract is native/README.md's.
#pragma once
#include <MNN/expr/Executor.hpp>
#include <MNN/expr/Module.hpp>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "SGD.hpp"
#include "events.hpp"
#include "idx.hpp"
#include "model.hpp"
#include "options.hpp"

namespace mnnrepro {
namespace driver {

constexpr int kContinue = -1;  // a step's result when the run goes on (else the exit code)

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
extern PhaseTiming gTime;

// The run's event log and the events every part writes (run.cpp).
struct Run {
    explicit Run(const Options& options) : opt(options) {}
    const Options& opt;
    EventLog log;
    void start(int argc, char** argv);
    // Writes `error`, says it on stderr and returns `code`.
    int fail(int code, const std::string& kind, const std::string& message);
    // One "step" event per training step (both graph kinds); a non-finite loss ends the run (kNonFinite).
    int step(int step, float loss, float lr, double forwardS, double stepS, int firstIndex);
    void ops(const char* phase, int step);                  // where the phase's ops ran (traceOp); then reset
    void timing(const char* phase, int step, double end);  // gTime of the phase ending at `end`
};
// Executor callbacks: gTime and traceOp see every op.
void traceExecutor(MNN::Express::Executor& exe);
// MNNREPRO_PLANT=KIND@STAGE:STEP (native/README.md, "Planted faults").
void maybePlant(const char* stage, int step);

// Data (data.cpp).
struct Data {
    MnistSplit train, test;
};
int loadData(Run& run, const TrainModel& model, Data& data);  // kContinue or the exit code
// A seeded permutation of a split's rows, drawn afresh each time it is used up.
class Batches {
public:
    Batches(int count, uint32_t seed) : mGen(seed), mPerm(size_t(count)), mCursor(size_t(count)) {}
    int next();

private:
    std::mt19937 mGen;
    std::vector<int> mPerm;
    size_t mCursor;  // at the end: shuffle before the next row
};
// One training batch drawn from `batches` (train.cpp): the images and labels in batch order, and their rows.
struct Batch {
    std::vector<uint8_t> images, labels;
    std::vector<int> indices;  // rows of the training split, in batch order
};
Batch drawBatch(Batches& batches, const MnistSplit& train, int n);
std::vector<int> batchDims(int n, const std::vector<int>& sample);  // {n, C, H, W}
MNN::Express::VARP imageInput(MNN::Express::VARP images);               // uint8 -> float x 1/255
MNN::Express::VARP targetOf(MNN::Express::VARP labels, int classes);   // uint8 labels -> one-hot float

// The model being trained and its optimizer (params.cpp builds it).
struct Trainer {
    Trainer(Run& r, TrainModel& m, int seed);
    Run& run;
    TrainModel& model;
    std::mt19937 initGen, dropGen;  // the batch order's generator is Batches' (seed + 1)
    std::shared_ptr<MNN::Express::Module> net;
    NamedVars named;  // model.parameters(), refreshed where MNN replaces the variables
    std::shared_ptr<MNN::Train::SGD> sgd;
    // OpGrad::grad of a loss over the trainable parameters, aligned with `named` (a null VARP where a parameter
    // got no gradient): the static graph, the gradient dumps and --save-graph take their gradients from here.
    std::vector<MNN::Express::VARP> gradientsOf(MNN::Express::VARP loss) const;
};
int buildModel(Trainer& t);  // stage build_model: kContinue or the exit code
bool writeParams(const std::string& dir, const NamedVars& named, const std::vector<MNN::Express::VARP>& values,
                 std::string& error);
// A dump step's inputs beside its gradients (train.cpp): DIR/batch_indices.npy and the model's stepTensors.
int writeStepInputs(Trainer& t, const std::string& dir, const std::vector<int>& indices);
bool makeDirs(const std::string& path);

// The training graph of --static-graph and --train-graph-file (static_graph.cpp), built once from the net:
// image, label, learning rate, the parameters (`t.named`) and their momentum are its inputs (with the model's
// random inputs, TrainModel::stepInputs); per parameter it computes OpGrad::grad of the loss and SGD's update
// (SGD::onGetNextParameter: L2 weight decay 5e-4, momentum 0.9).
struct TrainGraph {
    MNN::Express::VARP image, label, lr, loss;
    std::vector<MNN::Express::VARP> momentum;                   // inputs, one per parameter, zero
    std::vector<MNN::Express::VARP> grads, next, nextMomentum;  // outputs, one per parameter
    // loss, then per parameter its new value and its new momentum (what a step feeds back).
    std::vector<MNN::Express::VARP> updateOutputs() const;
};
int buildTrainGraph(Trainer& t, TrainGraph& g);  // kContinue or the exit code

// The step loops and evaluation: kContinue, or the exit code (kOk after --save-graph).
int trainDynamic(Trainer& t, const MnistSplit& train);
int trainStatic(Trainer& t, const MnistSplit& train);
int trainSaved(Trainer& t, const MnistSplit& train);  // --train-graph-file (saved_graph.cpp)
int evaluate(Trainer& t, const MnistSplit& test);

}  // namespace driver
}  // namespace mnnrepro
