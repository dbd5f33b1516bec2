// The step loop of the dynamic graph (upstream's demo: the graph is built anew every step and SGD::step
// computes gradients and update), with the gradient dumps (--dump-steps) and the reducer's capture
// (--save-graph).
#include <MNN/expr/ExprCreator.hpp>
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "LearningRateScheduler.hpp"
#include "driver.hpp"
#include "npy.hpp"
#include "tensorstore.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace driver {
namespace {

// Stage grad_dump: the step's gradients and the inputs that let a reference implementation replay it: which
// training images (row numbers in the IDX file, in batch order) and the model's random inputs (the dropout mask).
int dumpGradients(Trainer& t, int step, VARP loss, const std::vector<int>& indices) {
    const Options& opt = t.run.opt;
    t.run.log.stage("grad_dump", step);
    maybePlant("grad_dump", step);
    const auto gradValues = t.gradientsOf(loss);
    for (size_t k = 0; k < t.named.size(); ++k) {
        if (gradValues[k].get() == nullptr) return t.run.fail(kMnnError, "mnn", "no gradient for " + t.named[k].first);
    }
    std::string error, dir = opt.dumpDir + "/step" + std::to_string(step);
    if (!writeParams(dir + "/grad", t.named, gradValues, error)) return t.run.fail(kOutputError, "output", error);
    return writeStepInputs(t, dir, indices);
}

// --save-graph: the graph sgd->step computes first (SGD::onGetNextParameter: OpGrad::grad of the loss over the
// trainable parameters, then prepareCompute and readMap of every gradient), saved before anything of it runs:
// the phase where alibaba/MNN#3129 crashes. Every leaf is a constant or a trainable parameter with its value in
// the file; the reducer turns what it cuts away into inputs. Ends the run (kOk).
int saveGraph(Trainer& t, int step, VARP loss) {
    const std::string& out = t.run.opt.saveGraph;
    t.run.log.stage("save_graph", step);
    const auto grads = t.gradientsOf(loss);
    std::vector<VARP> outputs;
    for (size_t k = 0; k < t.named.size(); ++k) {
        if (grads[k].get() == nullptr) continue;
        grads[k]->setName("grad/" + t.named[k].first);
        outputs.push_back(grads[k]);
    }
    if (outputs.empty()) return t.run.fail(kMnnError, "mnn", "no gradient to save");
    mkdir(out.c_str(), 0755);
    // Graph inputs that hold data (the dropout mask) go to the tensor store beside the graph, by name.
    std::vector<VARP> inputs;
    for (auto& expr : Variable::getExecuteOrder(outputs)) {
        if (expr->get() != nullptr || expr->inputType() != VARP::INPUT) continue;
        VARP v = Variable::create(expr, 0);
        if (expr->outputName(0).empty()) v->setName("input" + std::to_string(inputs.size()));
        inputs.push_back(v);
    }
    const std::string file = out + "/graph.mnn";
    Variable::save(outputs, file.c_str());
    Store store;
    std::string error;
    if (!store.open(out + "/inputs", true, error)) return t.run.fail(kOutputError, "output", error);
    for (auto& v : inputs) {
        if (!store.write(v->expr().first->outputName(0), v, error)) return t.run.fail(kOutputError, "output", error);
    }
    t.run.log.emit("graph_saved", Json().str("phase", "sgd_step:gradients").integer("step", step).str("path", file)
                                      .integer("outputs", (long long)outputs.size()));
    t.run.log.stage("done");
    return kOk;
}

// Stage sgd_step (upstream's SGD::step: gradients and update; `end`: when it returned), then the step's dumps
// of the new parameters.
int sgdStep(Trainer& t, int step, VARP loss, double& end) {
    t.run.log.stage("sgd_step", step);
    maybePlant("sgd_step", step);
    gTime.reset(monotonicSeconds());
    if (!t.sgd->step(loss)) return t.run.fail(kMnnError, "mnn", "SGD step failed at step " + std::to_string(step));
    end = monotonicSeconds();
    t.run.timing("sgd_step", step, end);
    t.run.ops("sgd_step", step);
    t.named = t.model.parameters();
    if (t.run.opt.dumpSteps.count(step)) {
        std::vector<VARP> values;
        for (auto& p : t.named) values.push_back(p.second);
        std::string error, dir = t.run.opt.dumpDir + "/step" + std::to_string(step);
        if (!writeParams(dir + "/after", t.named, values, error)) return t.run.fail(kOutputError, "output", error);
    }
    return kContinue;
}

int dynamicStep(Trainer& t, Batches& batches, const MnistSplit& train, int step) {
    const Options& opt = t.run.opt;
    const Batch batch = drawBatch(batches, train, opt.batchSize);
    t.run.log.stage("forward", step);
    maybePlant("forward", step);
    double t0 = monotonicSeconds();
    gTime.reset(t0);
    auto image = _Const(batch.images.data(), batchDims(opt.batchSize, t.model.inputShape()), NCHW,
                        halide_type_of<uint8_t>());
    auto label = _Const(batch.labels.data(), {opt.batchSize}, NCHW, halide_type_of<uint8_t>());
    auto input = imageInput(image);
    auto target = targetOf(label, t.model.classes());
    auto predict = t.net->forward(input);
    auto loss = t.model.loss(predict, target);
    const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
    t.sgd->setLearningRate(lr);
    auto lossPtr = loss->readMap<float>();
    if (!lossPtr) return t.run.fail(kMnnError, "mnn", "forward pass produced no loss at step " + std::to_string(step));
    const float lossValue = lossPtr[0];
    double t1 = monotonicSeconds();
    t.run.timing("forward", step, t1);
    const bool dump = opt.dumpSteps.count(step) > 0;
    if (dump) {
        t.run.ops("forward", step);
        if (int rc = dumpGradients(t, step, loss, batch.indices); rc != kContinue) return rc;
    }
    t.run.ops(dump ? "grad_dump" : "forward", step);
    if (!opt.saveGraph.empty()) return saveGraph(t, step, loss);
    double t2 = 0.0;
    if (int rc = sgdStep(t, step, loss, t2); rc != kContinue) return rc;
    return t.run.step(step, lossValue, lr, t1 - t0, t2 - t1, batch.indices[0]);
}

}  // namespace

Batch drawBatch(Batches& batches, const MnistSplit& train, int n) {
    const size_t pixels = size_t(train.rows) * train.cols;
    Batch b{std::vector<uint8_t>(size_t(n) * pixels), std::vector<uint8_t>(n), std::vector<int>(n)};
    for (int i = 0; i < n; ++i) {
        int idx = batches.next();
        b.indices[i] = idx;
        memcpy(b.images.data() + size_t(i) * pixels, train.images.data() + size_t(idx) * pixels, pixels);
        b.labels[i] = train.labels[idx];
    }
    return b;
}

int writeStepInputs(Trainer& t, const std::string& dir, const std::vector<int>& indices) {
    std::string error;
    std::vector<float> indexValues(indices.begin(), indices.end());
    if (!writeNpyF32(dir + "/batch_indices.npy", {int(indices.size())}, indexValues.data(), error)) {
        return t.run.fail(kOutputError, "output", error);
    }
    for (const StepTensor& s : t.model.stepTensors(int(indices.size()))) {
        if (!writeNpyF32(dir + "/" + s.name + ".npy", s.dims, s.values.data(), error)) {
            return t.run.fail(kOutputError, "output", error);
        }
    }
    return kContinue;
}

int trainDynamic(Trainer& t, const MnistSplit& train) {
    Batches batches(train.count, uint32_t(t.run.opt.seed) + 1u);
    t.net->setIsTraining(true);
    for (int step = 0; step < t.run.opt.steps; ++step) {
        if (int rc = dynamicStep(t, batches, train, step); rc != kContinue) return rc;
    }
    return kContinue;
}

}  // namespace driver
}  // namespace mnnrepro
