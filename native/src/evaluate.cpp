// Stage test: accuracy on the test split (the first --test-limit images), the net in inference mode.
#include <MNN/expr/ExprCreator.hpp>

#include <algorithm>
#include <cmath>

#include "driver.hpp"

using namespace MNN;
using namespace MNN::Express;

namespace mnnrepro {
namespace driver {

int evaluate(Trainer& t, const MnistSplit& test) {
    const Options& opt = t.run.opt;
    t.run.log.stage("test");
    t.net->setIsTraining(false);
    const int classes = t.model.classes();
    const size_t pixels = size_t(test.rows) * test.cols;
    const int total = opt.testLimit > 0 ? std::min(opt.testLimit, test.count) : test.count;
    int correct = 0;
    double t0 = monotonicSeconds();
    for (int start = 0; start < total; start += opt.testBatchSize) {
        const int n = std::min(opt.testBatchSize, total - start);
        auto image = _Const(test.images.data() + size_t(start) * pixels, batchDims(n, t.model.inputShape()), NCHW,
                            halide_type_of<uint8_t>());
        auto predict = t.net->forward(imageInput(image));
        auto probs = predict->readMap<float>();
        if (!probs) return t.run.fail(kMnnError, "mnn", "evaluation produced no output");
        for (int i = 0; i < n; ++i) {
            const float* row = probs + size_t(i) * classes;
            int best = 0;
            for (int k = 0; k < classes; ++k) {
                if (!std::isfinite(row[k])) return t.run.fail(kNonFinite, "numeric", "non-finite prediction in evaluation");
                if (row[k] > row[best]) best = k;
            }
            correct += best == test.labels[start + i];
        }
    }
    t.run.log.emit("test", Json()
                               .integer("correct", correct)
                               .integer("total", total)
                               .num("accuracy", total ? double(correct) / total : 0.0)
                               .num("ms", (monotonicSeconds() - t0) * 1e3));
    return kContinue;
}

}  // namespace driver
}  // namespace mnnrepro
