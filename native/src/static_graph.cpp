// The training graph (buildTrainGraph, shared with --train-graph-file: saved_graph.cpp) and --static-graph (for
// `nox -s bench`): that graph built (and resized) once and rerun every step in memory. Image, label, dropout mask,
// learning rate, parameters and momentum are inputs; loss, new parameters and new momentum are outputs. Each step
// writes the inputs, computes, reads the outputs back and writes them into the inputs. Same math as
// SGD::onGetNextParameter (L2 weight decay, momentum), without rebuilding the graph.
// --dump-steps is not supported here (the gradient check covers the dynamic path and --train-graph-file).
#include <MNN/expr/ExprCreator.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "LearningRateScheduler.hpp"
#include "driver.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace driver {

std::vector<VARP> TrainGraph::updateOutputs() const {
    std::vector<VARP> outputs{loss};
    for (size_t k = 0; k < next.size(); ++k) {
        outputs.push_back(next[k]);
        outputs.push_back(nextMomentum[k]);
    }
    return outputs;
}

int buildTrainGraph(Trainer& t, TrainGraph& g) {
    const int batch = t.run.opt.batchSize;
    g.image = _Input(batchDims(batch, t.model.inputShape()), NCHW, halide_type_of<uint8_t>());
    g.label = _Input({batch}, NCHW, halide_type_of<uint8_t>());
    g.lr = _Input({}, NCHW, halide_type_of<float>());
    auto input = imageInput(g.image);
    auto target = targetOf(g.label, t.model.classes());
    g.loss = t.model.loss(t.net->forward(input), target);
    g.grads = t.gradientsOf(g.loss);
    for (size_t k = 0; k < t.named.size(); ++k) {
        const auto& p = t.named[k];
        if (g.grads[k].get() == nullptr) return t.run.fail(kMnnError, "mnn", "no gradient for " + p.first);
        auto info = p.second->getInfo();
        auto h = _Input(info->dim, info->order, halide_type_of<float>());
        std::fill(h->writeMap<float>(), h->writeMap<float>() + info->size, 0.0f);
        auto hNew = g.lr * (g.grads[k] + _Const(0.0005f) * p.second) + _Const(0.9f) * h;
        g.momentum.push_back(h);
        g.next.push_back(p.second - hNew);
        g.nextMomentum.push_back(hNew);
    }
    return kContinue;
}

namespace {

int staticStep(Trainer& t, TrainGraph& g, const std::vector<VARP>& outputs, Batches& batches,
               const MnistSplit& train, int step, std::vector<std::vector<float>>& values) {
    t.run.log.stage("forward", step);
    double t0 = monotonicSeconds();
    gTime.reset(t0);
    const Batch batch = drawBatch(batches, train, t.run.opt.batchSize);
    std::copy(batch.images.begin(), batch.images.end(), g.image->writeMap<uint8_t>());
    std::copy(batch.labels.begin(), batch.labels.end(), g.label->writeMap<uint8_t>());
    if (step > 0) t.model.redraw();
    const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
    g.lr->writeMap<float>()[0] = lr;
    for (size_t i = 0; i < outputs.size(); ++i) {
        auto ptr = outputs[i]->readMap<float>();
        if (!ptr) return t.run.fail(kMnnError, "mnn", "static graph produced no output at step " + std::to_string(step));
        values[i].assign(ptr, ptr + outputs[i]->getInfo()->size);
    }
    const float lossValue = values[0][0];
    double t1 = monotonicSeconds();
    t.run.timing("static_step", step, t1);
    t.run.ops("static_step", step);
    t.run.log.stage("sgd_step", step);
    for (size_t k = 0; k < t.named.size(); ++k) {
        std::copy(values[1 + 2 * k].begin(), values[1 + 2 * k].end(), t.named[k].second->writeMap<float>());
        std::copy(values[2 + 2 * k].begin(), values[2 + 2 * k].end(), g.momentum[k]->writeMap<float>());
    }
    double t2 = monotonicSeconds();
    return t.run.step(step, lossValue, lr, t1 - t0, t2 - t1, batch.indices[0]);
}

}  // namespace

int trainStatic(Trainer& t, const MnistSplit& train) {
    Batches batches(train.count, uint32_t(t.run.opt.seed) + 1u);
    t.net->setIsTraining(true);
    TrainGraph g;
    if (int rc = buildTrainGraph(t, g); rc != kContinue) return rc;
    const std::vector<VARP> outputs = g.updateOutputs();
    Variable::prepareCompute(outputs);
    std::vector<std::vector<float>> values(outputs.size());
    for (int step = 0; step < t.run.opt.steps; ++step) {
        if (int rc = staticStep(t, g, outputs, batches, train, step, values); rc != kContinue) return rc;
    }
    return kContinue;
}

}  // namespace driver
}  // namespace mnnrepro
