// Upstream's MNIST Lenet (tools/train/source/models/Lenet.cpp) with the dropout mask drawn from the driver's
// seeded generator: MNN is built with -fvisibility=hidden, so its RandomGenerator inside libMNNTrain cannot be
// seeded from outside (same op as upstream's dropout: x * mask).
#include <MNN/expr/ExprCreator.hpp>

#include <algorithm>

#include "../model.hpp"
#include "Loss.hpp"
#include "NN.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace {

class DriverDropout : public Module {
public:
    DriverDropout(float ratio, std::mt19937* gen) : mRatio(ratio), mGen(gen) { setType("Dropout"); }
    std::vector<VARP> onForward(const std::vector<VARP>& inputs) override {
        VARP x = inputs[0];
        if (!getIsTraining() || mRatio <= 0.0f) return {x};
        const float scale = 1.0f / (1.0f - mRatio);
        auto info = x->getInfo();
        auto mask = _Input(info->dim, info->order, info->type);
        auto ptr = mask->writeMap<float>();
        for (size_t i = 0; i < size_t(info->size); ++i) ptr[i] = uniform01(*mGen) < mRatio ? 0.0f : scale;
        // Kept for --dump-steps: an independent reference (src/mnnrepro/reference.py) replays the same mask.
        lastMaskDims = info->dim;
        lastMask.assign(ptr, ptr + info->size);
        lastMaskVar = mask;
        return {x * mask};
    }
    // --static-graph: the graph is built once, so each step draws a new mask into the same input.
    void redraw() {
        if (lastMaskVar.get() == nullptr) return;
        const float scale = 1.0f / (1.0f - mRatio);
        auto ptr = lastMaskVar->writeMap<float>();
        for (size_t i = 0; i < lastMask.size(); ++i) ptr[i] = lastMask[i] = uniform01(*mGen) < mRatio ? 0.0f : scale;
    }
    VARP lastMaskVar;
    std::vector<int> lastMaskDims;  // empty until a training forward drew a mask
    std::vector<float> lastMask;

private:
    float mRatio;
    std::mt19937* mGen;
};

constexpr int kHidden = 500;  // ip1's width: the dropout mask is [batch, 500]

class Lenet : public Module {
public:
    Lenet(float dropout, std::mt19937* gen) {
        NN::ConvOption conv;
        conv.kernelSize = {5, 5};
        conv.channel = {1, 20};
        conv1.reset(NN::Conv(conv));
        conv.reset();
        conv.kernelSize = {5, 5};
        conv.channel = {20, 50};
        conv2.reset(NN::Conv(conv));
        ip1.reset(NN::Linear(800, kHidden));
        ip2.reset(NN::Linear(kHidden, 10));
        drop.reset(new DriverDropout(dropout, gen));
        registerModel({conv1, conv2, ip1, ip2, drop});
    }
    DriverDropout& dropout() const { return *static_cast<DriverDropout*>(drop.get()); }
    std::vector<VARP> onForward(const std::vector<VARP>& inputs) override {
        VARP x = inputs[0];
        x = conv1->forward(x);
        x = _MaxPool(x, {2, 2}, {2, 2});
        x = conv2->forward(x);
        x = _MaxPool(x, {2, 2}, {2, 2});
        x = _Reshape(x, {0, -1});
        x = _Convert(x, NCHW);
        x = ip1->forward(x);
        x = _Relu(x);
        x = drop->forward(x);
        x = ip2->forward(x);
        x = _Softmax(x, 1);
        return {x};
    }
    // Stable names in model order; within a layer the larger tensor is the weight.
    NamedVars namedParameters() const {
        NamedVars out;
        const std::pair<const char*, std::shared_ptr<Module>> layers[] = {
            {"conv1", conv1}, {"conv2", conv2}, {"ip1", ip1}, {"ip2", ip2}};
        for (auto& layer : layers) {
            auto ps = layer.second->parameters();
            std::vector<VARP> sorted(ps.begin(), ps.end());
            std::stable_sort(sorted.begin(), sorted.end(),
                             [](const VARP& a, const VARP& b) { return a->getInfo()->size > b->getInfo()->size; });
            for (size_t i = 0; i < sorted.size(); ++i) {
                out.emplace_back(std::string(layer.first) + (i == 0 ? ".weight" : ".bias"), sorted[i]);
            }
        }
        return out;
    }
    std::shared_ptr<Module> conv1, conv2, ip1, ip2, drop;
};

class LenetModel : public TrainModel {
public:
    const char* name() const override { return "Lenet"; }
    std::vector<int> inputShape() const override { return {1, 28, 28}; }
    int classes() const override { return 10; }
    std::shared_ptr<Module> build(float dropout, std::mt19937* gen) override {
        mNet.reset(new Lenet(dropout, gen));
        return mNet;
    }
    VARP loss(VARP predict, VARP target) const override { return _CrossEntropy(predict, target); }
    NamedVars parameters() const override { return mNet->namedParameters(); }
    // The mask multiplied into the ReLU output, 0 or 1/(1-p); with --dropout 0 none was drawn, and the identity
    // mask says so explicitly.
    std::vector<StepTensor> stepTensors(int batch) const override {
        const DriverDropout& drop = mNet->dropout();
        StepTensor mask{"dropout_mask", drop.lastMaskDims, drop.lastMask};
        if (mask.dims.empty()) {
            mask.dims = {batch, kHidden};
            mask.values.assign(size_t(batch) * kHidden, 1.0f);
        }
        return {mask};
    }
    void redraw() override { mNet->dropout().redraw(); }
    NamedVars stepInputs() const override {
        const DriverDropout& drop = mNet->dropout();
        if (drop.lastMaskVar.get() == nullptr) return {};  // --dropout 0: no mask in the graph
        return {{"dropout_mask", drop.lastMaskVar}};
    }

private:
    std::shared_ptr<Lenet> mNet;
};

}  // namespace

std::unique_ptr<TrainModel> makeLenet() { return std::unique_ptr<TrainModel>(new LenetModel()); }

}  // namespace mnnrepro
