// The model a training driver trains, behind one small interface (issue 23): the data shape it takes, how to
// build its net, its loss, and its parameters by stable name (what --dump-steps, --save-init and --init-params
// write and read). The driver owns everything else: data, optimizer, step loop, evaluation and events.
// A new model is one file under models/ and one line in models/registry.cpp.
#pragma once
#include <MNN/expr/Module.hpp>

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace mnnrepro {

// Stable parameter names in model order ("conv1.weight", ...), each with its variable.
using NamedVars = std::vector<std::pair<std::string, MNN::Express::VARP>>;

// Uniform float in [0, 1) from 24 random bits: the same on every standard library, unlike
// std::uniform_real_distribution, so goldens do not depend on the C++ runtime.
inline float uniform01(std::mt19937& g) { return float(g() >> 8) * (1.0f / 16777216.0f); }

// A tensor a reference implementation needs to replay one step exactly, written beside the step's dumps as
// <name>.npy (Lenet: the dropout mask).
struct StepTensor {
    std::string name;
    std::vector<int> dims;
    std::vector<float> values;
};

class TrainModel {
public:
    virtual ~TrainModel() = default;
    virtual const char* name() const = 0;  // the `model` event's name
    // One sample as the net takes it, CHW (images arrive as uint8 and are scaled to [0, 1] by the driver).
    virtual std::vector<int> inputShape() const = 0;
    virtual int classes() const = 0;  // width of the prediction (probabilities) and of the one-hot target
    // Builds the net (null when it cannot, with the reason on stderr). Randomness the net draws while training
    // (a dropout mask) comes from `gen`, the driver's seeded generator, so runs are reproducible across backends.
    virtual std::shared_ptr<MNN::Express::Module> build(float dropout, std::mt19937* gen) = 0;
    virtual MNN::Express::VARP loss(MNN::Express::VARP predict, MNN::Express::VARP target) const = 0;
    virtual NamedVars parameters() const = 0;  // of the built net, in model order
    // Values the net holds that are not trained and do not enter a training step's loss (MnistV2: BatchNorm's
    // running mean and variance, read only in inference mode): kept as the net built them when parameters are
    // loaded, never given gradients, never in --save-init/--init-params.
    virtual NamedVars state() const { return {}; }
    // A parameter whose starting value is the one MNN's layer gives it, not drawn from the seed (MnistV2:
    // BatchNorm's scale 1 and bias 0).
    virtual bool keepsBuiltValue(const std::string& name) const { return false; }
    // The last training forward's random inputs, for the step dumps (`batch`: the step's batch size).
    virtual std::vector<StepTensor> stepTensors(int batch) const { return {}; }
    // --static-graph: the graph is built once; draw the next step's random inputs into it.
    virtual void redraw() {}
    // The graph inputs the last training forward drew its random inputs into, named as stepTensors names them
    // (Lenet: the dropout mask's input): --train-graph-file saves them as named inputs and feeds stepTensors.
    virtual NamedVars stepInputs() const { return {}; }
};

// The registry (models/registry.cpp): a model by name, unbuilt; null for an unknown name.
std::unique_ptr<TrainModel> makeModel(const std::string& name);
std::vector<std::string> modelNames();  // every name makeModel knows, in registry order (--model)

}  // namespace mnnrepro
