// MnistV2 (issue 24): the architecture of upstream's MNIST demo "MnistV2" (tools/train/source/demo/mnistTrain.cpp),
// written here with MNN's NN API: Conv, BatchNorm in training mode, depthwise ConvTranspose and a ReLU6 fused into
// a 1x1 conv. The exact math (what an independent reference must compute) is in native/README.md, "MnistV2".
//
// Parameters are named by what each MNN module holds, never by size (BatchNorm's scale and bias tie):
// - NN::Conv's module adds its bias, then its weight; NN::ConvTranspose is a PipelineModule whose Deconvolution
//   expression holds (weight, bias) as inputs 1 and 2. Both are told apart by rank: weight 4-D, bias 1-D.
// - NN::BatchNorm's module adds mScale, mBias, mRunningVariance, mRunningMean, in this order (NN.cpp at 3.3.0,
//   47027e10 and 3.6.1 alike); build() checks that the first two are trainable with MNN's starting values 1 and
//   0 and the last two are not trainable, and refuses to build otherwise.
#include <MNN/expr/ExprCreator.hpp>

#include <cstdio>
#include <string>

#include "../model.hpp"
#include "Loss.hpp"
#include "NN.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace {

constexpr int kChannels = 8;  // conv1's and the depthwise ConvTranspose's channels
// BatchNorm's arguments, given explicitly (NN.hpp's defaults, the ones upstream's demo runs with): 4-D input,
// running-statistics momentum 0.999, epsilon 1e-5.
constexpr float kBnMomentum = 0.999f, kBnEpsilon = 1e-5f;

bool trainable(const VARP& v) {
    auto expr = v->expr().first;
    return expr->get() == nullptr && expr->inputType() == VARP::TRAINABLE;
}

bool allEqual(const VARP& v, float value) {
    auto info = v->getInfo();
    auto ptr = v->readMap<float>();
    if (info == nullptr || ptr == nullptr) return false;
    for (size_t i = 0; i < size_t(info->size); ++i) {
        if (ptr[i] != value) return false;
    }
    return true;
}

class MnistV2 : public Module {
public:
    MnistV2() {
        NN::ConvOption conv;
        conv.kernelSize = {5, 5};
        conv.channel = {1, kChannels};
        conv1.reset(NN::Conv(conv));
        bn.reset(NN::BatchNorm(kChannels, 4, kBnMomentum, kBnEpsilon));
        conv.reset();
        conv.kernelSize = {5, 5};
        conv.channel = {kChannels, kChannels};
        conv.depthwise = true;
        conv2.reset(NN::ConvTranspose(conv));
        conv.reset();
        conv.channel = {512, 100};
        conv.fusedActivationFunction = NN::Relu6;
        ip1.reset(NN::Conv(conv));
        conv.channel = {100, 10};
        conv.fusedActivationFunction = NN::None;
        ip2.reset(NN::Conv(conv));
        registerModel({conv1, bn, conv2, ip1, ip2});
    }
    std::vector<VARP> onForward(const std::vector<VARP>& inputs) override {
        VARP x = inputs[0];                   // [N, 1, 28, 28]
        x = conv1->forward(x);                // [N, 8, 24, 24], VALID
        x = bn->forward(x);                   // batch statistics in training mode
        x = _MaxPool(x, {2, 2}, {2, 2});      // [N, 8, 12, 12]
        x = conv2->forward(x);                // [N, 8, 16, 16]: transposed, VALID, stride 1
        x = _MaxPool(x, {2, 2}, {2, 2});      // [N, 8, 8, 8]
        x = _Reshape(x, {0, -1, 1, 1});       // [N, 512, 1, 1], flattened in NCHW order
        x = ip1->forward(x);                  // 1x1 conv 512 -> 100, ReLU6
        x = ip2->forward(x);                  // 1x1 conv 100 -> 10
        x = _Convert(x, NCHW);
        x = _Reshape(x, {0, -1});             // [N, 10]
        x = _Softmax(x, 1);
        return {x};
    }
    // Empty with a message on stderr when a module does not hold what the names above assume.
    NamedVars namedParameters() const {
        NamedVars out;
        if (!addConv(out, "conv1", conv1)) return {};
        auto b = bn->parameters();
        out.emplace_back("bn.scale", b[0]);
        out.emplace_back("bn.bias", b[1]);
        for (auto& layer : {std::make_pair("conv2", conv2), std::make_pair("ip1", ip1), std::make_pair("ip2", ip2)}) {
            if (!addConv(out, layer.first, layer.second)) return {};
        }
        return out;
    }
    NamedVars runningStatistics() const {
        auto b = bn->parameters();
        return {{"bn.running_var", b[2]}, {"bn.running_mean", b[3]}};
    }
    // What namedParameters assumes of BatchNorm, checked on the module as built (before any forward).
    bool checkBatchNorm() const {
        auto b = bn->parameters();
        if (b.size() == 4 && trainable(b[0]) && trainable(b[1]) && !trainable(b[2]) && !trainable(b[3]) &&
            allEqual(b[0], 1.0f) && allEqual(b[1], 0.0f)) {
            return true;
        }
        fprintf(stderr, "MnistV2: NN::BatchNorm's parameters are not (scale = 1, bias = 0, running variance, running "
                        "mean) as NN.cpp 3.3.0 holds them\n");
        return false;
    }
    std::shared_ptr<Module> conv1, bn, conv2, ip1, ip2;

private:
    static bool addConv(NamedVars& out, const char* layer, const std::shared_ptr<Module>& m) {
        VARP weight, bias;
        auto ps = m->parameters();
        for (auto& p : ps) {
            const size_t rank = p->getInfo()->dim.size();
            (rank == 4 ? weight : bias) = p;
        }
        if (ps.size() != 2 || weight.get() == nullptr || bias.get() == nullptr || bias->getInfo()->dim.size() != 1) {
            fprintf(stderr, "MnistV2: %s holds %d parameters, want a 4-D weight and a 1-D bias\n", layer,
                    int(ps.size()));
            return false;
        }
        out.emplace_back(std::string(layer) + ".weight", weight);
        out.emplace_back(std::string(layer) + ".bias", bias);
        return true;
    }
};

class MnistV2Model : public TrainModel {
public:
    const char* name() const override { return "MnistV2"; }
    std::vector<int> inputShape() const override { return {1, 28, 28}; }
    int classes() const override { return 10; }
    // No dropout in this net: `dropout` and `gen` are unused.
    std::shared_ptr<Module> build(float dropout, std::mt19937* gen) override {
        mNet.reset(new MnistV2());
        if (!mNet->checkBatchNorm() || mNet->namedParameters().empty()) mNet.reset();
        return mNet;
    }
    VARP loss(VARP predict, VARP target) const override { return _CrossEntropy(predict, target); }
    NamedVars parameters() const override { return mNet->namedParameters(); }
    NamedVars state() const override { return mNet->runningStatistics(); }
    // BatchNorm starts from MNN's own constants (scale 1, bias 0), as upstream's demo does: nothing to draw.
    bool keepsBuiltValue(const std::string& name) const override { return name == "bn.scale" || name == "bn.bias"; }
    // The running statistics after this step's training forward (momentum update of the batch's mean and
    // biased variance): not needed to replay the step, dumped so a reference can check BatchNorm's statistics.
    std::vector<StepTensor> stepTensors(int batch) const override {
        std::vector<StepTensor> out;
        for (auto& s : mNet->runningStatistics()) {
            auto info = s.second->getInfo();
            auto ptr = s.second->readMap<float>();
            if (info == nullptr || ptr == nullptr) {
                fprintf(stderr, "MnistV2: %s could not be read; not dumped\n", s.first.c_str());
                continue;
            }
            out.push_back({s.first, info->dim, std::vector<float>(ptr, ptr + info->size)});
        }
        return out;
    }

private:
    std::shared_ptr<MnistV2> mNet;
};

}  // namespace

std::unique_ptr<TrainModel> makeMnistV2() { return std::unique_ptr<TrainModel>(new MnistV2Model()); }

}  // namespace mnnrepro
