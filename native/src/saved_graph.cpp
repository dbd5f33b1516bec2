// --train-graph-file (issue 24, the `static` workload): training the way a user of static training does it, from
// a saved file. The training graph of --static-graph (buildTrainGraph: loss, gradients, SGD's update) is built
// once, with every parameter's gradient as an output too, saved with MNN's own Variable::save as
// OUT/train_graph.mnn (parameters, momentum, image, label, learning rate and the dropout mask as named inputs),
// and dropped. Training then loads that file with Module::load on a RuntimeManager made here for the backend
// under test, and per step feeds the inputs and feeds back the new parameters and momentum it outputs.
//
// Placement evidence: StaticModule::_execute runs its Session with the executor's callbacks (traceExecutor: op
// timing and traceOp) only when its RuntimeManager is in Session_Debug (express/module/StaticModule.cpp, 3.3.0
// and 3.6.1); the driver creates the RuntimeManager, so it sets that mode itself (mnn_optest must interpose
// createRuntimeManager for Modules its tests load, native/README.md): the `ops` events of phase `saved_step` are
// the loaded graph's ops, each on the backend owning its first output, the Vulkan ops and any the backend
// declined (run on its CPU backup) alike.
#include <MNN/Interpreter.hpp>
#include <MNN/expr/ExprCreator.hpp>
#include <MNN/expr/Module.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "LearningRateScheduler.hpp"
#include "RuntimeAttr.hpp"
#include "backend.hpp"
#include "driver.hpp"
#include "npy.hpp"

using namespace MNN;
using namespace MNN::Express;
using namespace MNN::Train;

namespace mnnrepro {
namespace driver {
namespace {

// The file's inputs (in Module::load's order, each with the host variable fed to it every step) and outputs:
// all the driver keeps of the training graph once the in-memory one is dropped.
struct SavedGraph {
    std::string path;
    // image, label, lr, the model's step inputs, then per parameter: value, momentum
    std::vector<std::string> inputNames;
    std::vector<VARP> feeds;
    size_t firstParam = 0;                 // index in `feeds` of the first parameter
    std::vector<std::string> outputNames;  // loss, then per parameter: next value, next momentum, gradient
    std::shared_ptr<Module> module;
};

// A name given for the save and the names it replaced (an expression's and its output's), put back after it.
struct Renamed {
    VARP var;
    std::string output, expr;
};

void nameAs(const VARP& v, const std::string& name, std::vector<Renamed>& undo) {
    undo.push_back({v, v->name(), v->expr().first->name()});
    v->expr().first->setName(name);
    v->setName(name);
}

// Names input `v` and adds its feed: a host input of the same shape, layout and type (holding v's value when
// `keep`: the parameters and their zero momentum; the others are written before every step).
void addInput(SavedGraph& s, const VARP& v, const std::string& name, bool keep, std::vector<Renamed>& undo) {
    nameAs(v, name, undo);
    auto info = v->getInfo();
    auto feed = _Input(info->dim, info->order, info->type);
    if (keep) memcpy(feed->writeMap<void>(), v->readMap<void>(), size_t(info->size) * info->type.bytes());
    s.inputNames.push_back(name);
    s.feeds.push_back(feed);
}

// Names the inputs (feeds made from their current values) and outputs; false with `error` when the graph has an
// input the driver would not feed.
bool nameGraph(Trainer& t, TrainGraph& g, SavedGraph& s, std::vector<VARP>& outputs, std::vector<Renamed>& undo,
               std::string& error) {
    addInput(s, g.image, "image", false, undo);
    addInput(s, g.label, "label", false, undo);
    addInput(s, g.lr, "lr", false, undo);
    for (const auto& in : t.model.stepInputs()) addInput(s, in.second, in.first, false, undo);
    s.firstParam = s.feeds.size();
    for (size_t k = 0; k < t.named.size(); ++k) {
        // VARP::fix turns only a leaf into an input in place (else it computes and replaces the variable).
        if (t.named[k].second->expr().first->get() != nullptr) {
            error = t.named[k].first + " is not a leaf of the graph";
            return false;
        }
        addInput(s, t.named[k].second, "param/" + t.named[k].first, true, undo);
        addInput(s, g.momentum[k], "momentum/" + t.named[k].first, true, undo);
    }
    outputs = {g.loss};
    nameAs(g.loss, "loss", undo);
    for (size_t k = 0; k < t.named.size(); ++k) {
        const std::string& p = t.named[k].first;
        for (auto out : {std::make_pair(g.next[k], "next/"), std::make_pair(g.nextMomentum[k], "next_momentum/"),
                         std::make_pair(g.grads[k], "grad/")}) {
            nameAs(out.first, out.second + p, undo);
            outputs.push_back(out.first);
        }
    }
    for (auto& o : outputs) s.outputNames.push_back(o->name());
    std::set<std::string> known(s.inputNames.begin(), s.inputNames.end());
    for (auto& expr : Variable::getExecuteOrder(outputs)) {
        if (expr->get() != nullptr || expr->inputType() != VARP::INPUT || known.count(expr->outputName(0))) continue;
        error = "the training graph has an input the driver does not feed: '" + expr->outputName(0) + "'";
        return false;
    }
    return true;
}

// Stage save_train_graph: the graph named and saved (parameters as inputs), every in-memory variable of it
// dropped; the net keeps its parameters (with their names and kind) for the test stage.
int saveTrainGraph(Trainer& t, SavedGraph& s) {
    t.run.log.stage("save_train_graph");
    gTime.reset(monotonicSeconds());
    TrainGraph g;
    if (int rc = buildTrainGraph(t, g); rc != kContinue) return rc;
    std::vector<VARP> outputs;
    std::vector<Renamed> undo;
    std::string error;
    const bool named = nameGraph(t, g, s, outputs, undo, error);
    s.path = t.run.opt.out + "/train_graph.mnn";
    const size_t nodes = Variable::getExecuteOrder(outputs).size();
    if (named) {
        for (auto& p : t.named) p.second.fix(VARP::INPUT);  // Variable::save writes an INPUT leaf as an Input op
        Variable::save(outputs, s.path.c_str());
        for (auto& p : t.named) p.second.fix(VARP::TRAINABLE);
    }
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
        it->var->setName(it->output);
        it->var->expr().first->setName(it->expr);
    }
    undo.clear();
    outputs.clear();
    g = TrainGraph();
    if (!named) return t.run.fail(kMnnError, "mnn", error);
    struct stat st {};
    if (stat(s.path.c_str(), &st) != 0 || st.st_size == 0) {
        return t.run.fail(kOutputError, "output", "Variable::save wrote no " + s.path);
    }
    t.run.log.emit("train_graph_saved", Json().str("path", s.path).integer("bytes", (long long)st.st_size)
                                            .integer("nodes", (long long)nodes).strs("inputs", s.inputNames)
                                            .strs("outputs", s.outputNames));
    // Expected empty: building and saving computes nothing, so every op of a saved_step is the file's.
    t.run.ops("save_train_graph", 0);
    return kContinue;
}

// Stage load_train_graph: Module::load of the file on a RuntimeManager for the backend under test, read back.
int loadTrainGraph(Trainer& t, SavedGraph& s) {
    const Options& opt = t.run.opt;
    t.run.log.stage("load_train_graph");
    ScheduleConfig schedule;
    schedule.type = forwardType(opt.backend);
    schedule.numThread = opt.threads;
    BackendConfig config;
    config.precision = precisionMode(opt.precision);
    schedule.backendConfig = &config;
    std::shared_ptr<Executor::RuntimeManager> rtm(Executor::RuntimeManager::createRuntimeManager(schedule),
                                                  Executor::RuntimeManager::destroy);
    if (rtm == nullptr) return t.run.fail(kMnnError, "mnn", "createRuntimeManager failed");
    if (opt.traceOps) rtm->setMode(Interpreter::Session_Debug);  // StaticModule's callbacks (file comment)
    // The runtime MNN made for the RuntimeManager: its type, when one was created (Schedule::getAppropriateType
    // falls back to the CPU when no runtime of the wanted type is registered).
    const RuntimeAttr* inside = rtm->getInside();
    const bool created = inside->mInfo != nullptr && !inside->mRuntime.first.empty();
    const MNNForwardType active = created ? inside->mRuntime.first.begin()->first : MNN_FORWARD_CPU;
    const bool exercised = created && active == schedule.type;
    Module::Config moduleConfig;  // Module::load's defaults: a static module, shapes mutable
    s.module.reset(Module::load(s.inputNames, s.outputNames, s.path.c_str(), rtm, &moduleConfig));
    t.run.log.emit("train_graph_loaded", Json().str("path", s.path).str("requested", forwardName(schedule.type))
                                             .str("active", created ? forwardName(active) : "none")
                                             .boolean("exercised", exercised).boolean("loaded", s.module != nullptr)
                                             .str("trace", opt.traceOps ? "session_debug" : "off"));
    if (s.module == nullptr) return t.run.fail(kMnnError, "mnn", "Module::load failed for " + s.path);
    if (!exercised) {
        const std::string reason = std::string("the RuntimeManager for the saved graph runs on ") +
                                   (created ? forwardName(active) : "no runtime") + ", not " +
                                   forwardName(schedule.type);
        t.run.log.emit("not_exercised", Json().str("reason", reason));
        fprintf(stderr, "mnist_driver: NOT-EXERCISED: %s\n", reason.c_str());
        if (!opt.allowFallback) return kNotExercised;
    }
    return kContinue;
}

// The step's image, label, learning rate and random inputs written into their feeds.
int feedStep(Trainer& t, SavedGraph& s, const Batch& batch, float lr) {
    std::copy(batch.images.begin(), batch.images.end(), s.feeds[0]->writeMap<uint8_t>());
    std::copy(batch.labels.begin(), batch.labels.end(), s.feeds[1]->writeMap<uint8_t>());
    s.feeds[2]->writeMap<float>()[0] = lr;
    const std::vector<StepTensor> tensors = t.model.stepTensors(t.run.opt.batchSize);
    for (size_t i = 3; i < s.firstParam; ++i) {
        auto it = std::find_if(tensors.begin(), tensors.end(),
                               [&](const StepTensor& x) { return x.name == s.inputNames[i]; });
        if (it == tensors.end() || it->values.size() != size_t(s.feeds[i]->getInfo()->size)) {
            return t.run.fail(kMnnError, "mnn", "the model has no step tensor for input " + s.inputNames[i]);
        }
        std::copy(it->values.begin(), it->values.end(), s.feeds[i]->writeMap<float>());
    }
    return kContinue;
}

// One output read back: its values and dims.
struct Output {
    std::vector<float> values;
    std::vector<int> dims;
};

// Stage grad_dump of the saved graph: the same files as the dynamic path's (native/README.md, "Dump files"),
// gradients and new parameters from the graph's outputs.
int dumpSaved(Trainer& t, const std::vector<Output>& out, int step, const std::vector<int>& indices) {
    t.run.log.stage("grad_dump", step);
    maybePlant("grad_dump", step);
    const std::string dir = t.run.opt.dumpDir + "/step" + std::to_string(step);
    std::string error;
    if (!makeDirs(dir + "/grad") || !makeDirs(dir + "/after")) {
        return t.run.fail(kOutputError, "output", "cannot create " + dir);
    }
    for (size_t k = 0; k < t.named.size(); ++k) {
        const std::string& name = t.named[k].first;
        const Output& grad = out[3 + 3 * k];
        const Output& after = out[1 + 3 * k];
        if (!writeNpyF32(dir + "/grad/" + name + ".npy", grad.dims, grad.values.data(), error) ||
            !writeNpyF32(dir + "/after/" + name + ".npy", after.dims, after.values.data(), error)) {
            return t.run.fail(kOutputError, "output", error);
        }
    }
    return writeStepInputs(t, dir, indices);
}

int savedStep(Trainer& t, SavedGraph& s, Batches& batches, const MnistSplit& train, int step,
              std::vector<Output>& out) {
    t.run.log.stage("saved_step", step);
    maybePlant("saved_step", step);
    const double t0 = monotonicSeconds();
    gTime.reset(t0);
    const Batch batch = drawBatch(batches, train, t.run.opt.batchSize);
    if (step > 0) t.model.redraw();
    const float lr = LrScheduler::inv(0.01f, step, 0.0001f, 0.75f);
    if (int rc = feedStep(t, s, batch, lr); rc != kContinue) return rc;
    const std::vector<VARP> results = s.module->onForward(s.feeds);
    if (results.size() != s.outputNames.size()) return t.run.fail(kMnnError, "mnn", "the saved graph gave no outputs");
    for (size_t i = 0; i < results.size(); ++i) {
        const float* ptr = results[i] == nullptr ? nullptr : results[i]->readMap<float>();
        if (ptr == nullptr) {
            return t.run.fail(kMnnError, "mnn", "no " + s.outputNames[i] + " at step " + std::to_string(step));
        }
        out[i].values.assign(ptr, ptr + results[i]->getInfo()->size);
        out[i].dims = results[i]->getInfo()->dim;
    }
    const double t1 = monotonicSeconds();
    t.run.timing("saved_step", step, t1);
    t.run.ops("saved_step", step);
    if (t.run.opt.dumpSteps.count(step)) {
        if (int rc = dumpSaved(t, out, step, batch.indices); rc != kContinue) return rc;
    }
    const double t2 = monotonicSeconds();
    for (size_t k = 0; k < t.named.size(); ++k) {  // next value and momentum fed back
        const std::vector<float>& next = out[1 + 3 * k].values;
        const std::vector<float>& momentum = out[2 + 3 * k].values;
        std::copy(next.begin(), next.end(), s.feeds[s.firstParam + 2 * k]->writeMap<float>());
        std::copy(momentum.begin(), momentum.end(), s.feeds[s.firstParam + 2 * k + 1]->writeMap<float>());
    }
    return t.run.step(step, out[0].values[0], lr, t1 - t0, monotonicSeconds() - t2, batch.indices[0]);
}

}  // namespace

int trainSaved(Trainer& t, const MnistSplit& train) {
    // A model's state outside the graph (MnistV2's BatchNorm running statistics, set by each forward) would
    // never be updated by a graph built once: refused rather than trained with stale statistics.
    if (!t.model.state().empty()) {
        return t.run.fail(kUsage, "usage", std::string("--train-graph-file: ") + t.model.name() +
                                               " has state outside its training graph (TrainModel::state)");
    }
    Batches batches(train.count, uint32_t(t.run.opt.seed) + 1u);
    t.net->setIsTraining(true);
    SavedGraph s;
    if (int rc = saveTrainGraph(t, s); rc != kContinue) return rc;
    if (int rc = loadTrainGraph(t, s); rc != kContinue) return rc;
    std::vector<Output> out(s.outputNames.size());
    for (int step = 0; step < t.run.opt.steps; ++step) {
        if (int rc = savedStep(t, s, batches, train, step, out); rc != kContinue) return rc;
    }
    for (size_t k = 0; k < t.named.size(); ++k) {  // the trained parameters, for the test stage
        const std::vector<float>& v = out[1 + 3 * k].values;
        std::copy(v.begin(), v.end(), t.named[k].second->writeMap<float>());
    }
    return kContinue;
}

}  // namespace driver
}  // namespace mnnrepro
