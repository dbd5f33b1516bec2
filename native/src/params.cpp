// Stage build_model: the model built, its parameters set from the driver's seed (or --init-params), reported
// (event `model`) and saved (--save-init), and the optimizer of upstream's MNIST demo.
#include <MNN/expr/ExprCreator.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "OpGrad.hpp"
#include "driver.hpp"
#include "npy.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace driver {
namespace {

std::vector<int> dimsOf(const VARP& v) { return v->getInfo()->dim; }

// Xavier-uniform weights, zero biases, from the driver's seed; a parameter the model keeps as its layer built it
// (TrainModel::keepsBuiltValue) is copied and draws nothing.
void seededInit(const TrainModel& model, const NamedVars& params, std::mt19937& gen, std::vector<VARP>& values) {
    for (auto& p : params) {
        auto dims = dimsOf(p.second);
        auto info = p.second->getInfo();
        auto v = _Input(dims, info->order, halide_type_of<float>());
        float* ptr = v->writeMap<float>();
        bool bias = p.first.size() > 5 && p.first.compare(p.first.size() - 5, 5, ".bias") == 0;
        if (model.keepsBuiltValue(p.first)) {
            const float* built = p.second->readMap<float>();
            std::copy(built, built + info->size, ptr);
        } else if (bias) {
            std::fill(ptr, ptr + info->size, 0.0f);
        } else {
            // conv: [out, in, kh, kw]; linear: [out, in]
            int receptive = 1;
            for (size_t i = 2; i < dims.size(); ++i) receptive *= dims[i];
            float fanIn = float(dims[1] * receptive), fanOut = float(dims[0] * receptive);
            float limit = std::sqrt(6.0f / (fanIn + fanOut));
            for (size_t i = 0; i < size_t(info->size); ++i) ptr[i] = (2.0f * uniform01(gen) - 1.0f) * limit;
        }
        values.push_back(v);
    }
}

std::string shapeText(const std::vector<int>& d) {  // as numpy writes a shape
    std::string s = "(";
    for (size_t k = 0; k < d.size(); ++k) s += (k ? ", " : "") + std::to_string(d[k]);
    return s + (d.size() == 1 ? ",)" : ")");
}

// --init-params DIR: DIR/<name>.npy for every parameter, shapes checked (exit 3 otherwise).
int readInit(Trainer& t, std::vector<VARP>& initial) {
    std::string error;
    for (auto& p : t.named) {
        std::vector<int> shape;
        std::vector<float> values;
        const std::string path = t.run.opt.initParams + "/" + p.first + ".npy";
        if (!readNpyF32(path, shape, values, error)) return t.run.fail(kDataError, "init_params", error);
        if (shape != dimsOf(p.second)) {
            return t.run.fail(kDataError, "init_params",
                              path + ": shape " + shapeText(shape) + ", " + p.first + " wants " +
                                  shapeText(dimsOf(p.second)));
        }
        initial.push_back(_Const(values.data(), shape, p.second->getInfo()->order, halide_type_of<float>()));
    }
    return kContinue;
}

// loadParameters wants net->parameters() order; map by identity. The model's state (TrainModel::state) goes
// back as a constant copy of itself.
int loadInitial(Trainer& t, const std::vector<VARP>& initial) {
    auto order = t.net->parameters();
    const NamedVars state = t.model.state();
    std::vector<VARP> load;
    for (auto& p : order) {
        for (size_t i = 0; i < t.named.size(); ++i) {
            if (t.named[i].second.get() != p.get()) continue;
            load.push_back(initial[i]);
            // Variable::replace takes the source's input type; SGD only updates TRAINABLE variables.
            load.back().fix(VARP::TRAINABLE);
        }
        for (auto& s : state) {
            if (s.second.get() != p.get()) continue;
            auto info = p->getInfo();
            const float* value = p->readMap<float>();
            if (value) load.push_back(_Const(value, info->dim, info->order, halide_type_of<float>()));
        }
    }
    if (load.size() != order.size() || !t.net->loadParameters(load)) {
        return t.run.fail(kMnnError, "mnn", "loadParameters failed");
    }
    t.named = t.model.parameters();
    return kContinue;
}

void emitModel(Trainer& t) {
    std::string list = "[";
    for (size_t i = 0; i < t.named.size(); ++i) {
        std::string shape = "[";
        auto d = dimsOf(t.named[i].second);
        for (size_t k = 0; k < d.size(); ++k) shape += (k ? "," : "") + std::to_string(d[k]);
        shape += "]";
        list += (i ? "," : "") + Json().str("name", t.named[i].first).raw("shape", shape).done();
    }
    t.run.log.emit("model", Json().str("name", t.model.name()).raw("parameters", list + "]"));
}

}  // namespace

Trainer::Trainer(Run& r, TrainModel& m, int seed)
    : run(r), model(m), initGen(uint32_t(seed)), dropGen(uint32_t(seed) + 2u) {}

int buildModel(Trainer& t) {
    const Options& opt = t.run.opt;
    t.run.log.stage("build_model");
    t.net = t.model.build(opt.dropout, &t.dropGen);
    if (t.net == nullptr) return t.run.fail(kMnnError, "mnn", std::string("cannot build ") + t.model.name());
    t.named = t.model.parameters();
    std::vector<VARP> initial;
    if (!opt.initParams.empty()) {
        if (int rc = readInit(t, initial); rc != kContinue) return rc;
    } else {
        seededInit(t.model, t.named, t.initGen, initial);
    }
    if (int rc = loadInitial(t, initial); rc != kContinue) return rc;
    emitModel(t);
    if (!opt.saveInit.empty()) {
        std::vector<VARP> values;
        for (auto& p : t.named) values.push_back(p.second);
        std::string error;
        if (!writeParams(opt.saveInit, t.named, values, error)) return t.run.fail(kOutputError, "output", error);
    }
    t.sgd.reset(new SGD(t.net));
    t.sgd->setMomentum(0.9f);
    t.sgd->setWeightDecay(0.0005f);
    return kContinue;
}

std::vector<VARP> Trainer::gradientsOf(VARP loss) const {
    std::set<VARP> trainable;
    for (auto& p : named) trainable.insert(p.second);
    auto grads = OpGrad::grad(loss, trainable);
    std::vector<VARP> out;
    for (auto& p : named) {
        auto it = grads.find(p.second);
        out.push_back(it == grads.end() ? nullptr : it->second);
    }
    return out;
}

bool makeDirs(const std::string& path) {
    std::string cur;
    for (size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return false;
        }
        if (i < path.size()) cur += path[i];
    }
    return true;
}

bool writeParams(const std::string& dir, const NamedVars& named, const std::vector<VARP>& values,
                 std::string& error) {
    if (!makeDirs(dir)) {
        error = "cannot create " + dir;
        return false;
    }
    for (size_t i = 0; i < named.size(); ++i) {
        auto ptr = values[i]->readMap<float>();
        if (!ptr) {
            error = "cannot read " + named[i].first;
            return false;
        }
        if (!writeNpyF32(dir + "/" + named[i].first + ".npy", dimsOf(values[i]), ptr, error)) return false;
    }
    return true;
}

}  // namespace driver
}  // namespace mnnrepro
