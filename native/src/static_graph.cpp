// --static-graph (for `nox -s bench`): one training graph built (and resized) once and rerun every step. Image,
// label, dropout mask, learning rate, parameters and momentum are inputs; loss, new parameters and new momentum
// are outputs. Each step writes the inputs, computes, reads the outputs back and writes them into the inputs.
// Same math as SGD::onGetNextParameter (L2 weight decay, momentum), without rebuilding the graph.
// --dump-steps is not supported here (the gradient check covers the dynamic path).
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
namespace {

struct StaticGraph {
    VARP imageIn, labelIn, lrIn;
    std::vector<VARP> history;  // momentum, one per parameter
    std::vector<VARP> outputs;  // loss, then per parameter: its new value and its new momentum
};

int buildStaticGraph(Trainer& t, StaticGraph& g) {
    const int batch = t.run.opt.batchSize;
    g.imageIn = _Input(batchDims(batch, t.model.inputShape()), NCHW, halide_type_of<uint8_t>());
    g.labelIn = _Input({batch}, NCHW, halide_type_of<uint8_t>());
    g.lrIn = _Input({}, NCHW, halide_type_of<float>());
    auto input = imageInput(g.imageIn);
    auto target = targetOf(g.labelIn, t.model.classes());
    auto loss = t.model.loss(t.net->forward(input), target);
    const auto grads = t.gradientsOf(loss);
    g.outputs = {loss};
    for (size_t k = 0; k < t.named.size(); ++k) {
        const auto& p = t.named[k];
        if (grads[k].get() == nullptr) return t.run.fail(kMnnError, "mnn", "no gradient for " + p.first);
        auto info = p.second->getInfo();
        auto h = _Input(info->dim, info->order, halide_type_of<float>());
        std::fill(h->writeMap<float>(), h->writeMap<float>() + info->size, 0.0f);
        auto hNew = g.lrIn * (grads[k] + _Const(0.0005f) * p.second) + _Const(0.9f) * h;
        g.history.push_back(h);
        g.outputs.push_back(p.second - hNew);
        g.outputs.push_back(hNew);
    }
    Variable::prepareCompute(g.outputs);
    return kContinue;
}

// Writes the next batch into the graph's inputs; returns its first row.
int feedBatch(StaticGraph& g, Batches& batches, const MnistSplit& train, int n) {
    const int pixels = train.rows * train.cols;
    uint8_t* img = g.imageIn->writeMap<uint8_t>();
    uint8_t* lab = g.labelIn->writeMap<uint8_t>();
    int first = -1;
    for (int b = 0; b < n; ++b) {
        int idx = batches.next();
        if (b == 0) first = idx;
        memcpy(img + size_t(b) * pixels, train.images.data() + size_t(idx) * pixels, pixels);
        lab[b] = train.labels[idx];
    }
    return first;
}

int staticStep(Trainer& t, StaticGraph& g, Batches& batches, const MnistSplit& train, int step,
               std::vector<std::vector<float>>& values) {
    t.run.log.stage("forward", step);
    double t0 = monotonicSeconds();
    gTime.reset(t0);
    const int first = feedBatch(g, batches, train, t.run.opt.batchSize);
    if (step > 0) t.model.redraw();
    const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
    g.lrIn->writeMap<float>()[0] = lr;
    for (size_t i = 0; i < g.outputs.size(); ++i) {
        auto ptr = g.outputs[i]->readMap<float>();
        if (!ptr) return t.run.fail(kMnnError, "mnn", "static graph produced no output at step " + std::to_string(step));
        values[i].assign(ptr, ptr + g.outputs[i]->getInfo()->size);
    }
    const float lossValue = values[0][0];
    double t1 = monotonicSeconds();
    t.run.timing("static_step", step, t1);
    t.run.ops("static_step", step);
    t.run.log.stage("sgd_step", step);
    for (size_t k = 0; k < t.named.size(); ++k) {
        std::copy(values[1 + 2 * k].begin(), values[1 + 2 * k].end(), t.named[k].second->writeMap<float>());
        std::copy(values[2 + 2 * k].begin(), values[2 + 2 * k].end(), g.history[k]->writeMap<float>());
    }
    double t2 = monotonicSeconds();
    return t.run.step(step, lossValue, lr, t1 - t0, t2 - t1, first);
}

}  // namespace

int trainStatic(Trainer& t, const MnistSplit& train) {
    Batches batches(train.count, uint32_t(t.run.opt.seed) + 1u);
    t.net->setIsTraining(true);
    StaticGraph g;
    if (int rc = buildStaticGraph(t, g); rc != kContinue) return rc;
    std::vector<std::vector<float>> values(g.outputs.size());
    for (int step = 0; step < t.run.opt.steps; ++step) {
        if (int rc = staticStep(t, g, batches, train, step, values); rc != kContinue) return rc;
    }
    return kContinue;
}

}  // namespace driver
}  // namespace mnnrepro
