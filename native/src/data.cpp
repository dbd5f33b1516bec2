// The driver's data: MNIST's IDX splits checked against the model's input shape, batches drawn from a seeded
// permutation, and the demo's preprocessing (uint8 image -> float x 1/255, one-hot target).
#include <MNN/expr/ExprCreator.hpp>

#include <cstdint>
#include <string>
#include <utility>

#include "driver.hpp"

using namespace MNN;
using namespace MNN::Express;

namespace mnnrepro {
namespace driver {

int loadData(Run& run, const TrainModel& model, Data& data) {
    run.log.stage("load_data");
    std::string error;
    if (!loadMnistSplit(run.opt.data, "train", data.train, error) ||
        !loadMnistSplit(run.opt.data, "t10k", data.test, error)) {
        return run.fail(kDataError, "data", error);
    }
    // IDX images are one channel; the model says how large.
    const std::vector<int> shape = model.inputShape();
    for (const MnistSplit* split : {&data.train, &data.test}) {
        if (shape[0] != 1 || split->rows != shape[1] || split->cols != shape[2]) {
            return run.fail(kDataError, "data",
                            split->imagesPath + ": images are " + std::to_string(split->rows) + "x" +
                                std::to_string(split->cols) + ", the model wants " +
                                (shape[0] != 1 ? std::to_string(shape[0]) + " channels of " : "") +
                                std::to_string(shape[1]) + "x" + std::to_string(shape[2]));
        }
    }
    run.log.emit("data", Json().integer("train", data.train.count).integer("test", data.test.count));
    return kContinue;
}

int Batches::next() {
    if (mCursor >= mPerm.size()) {
        const int count = int(mPerm.size());
        for (int i = 0; i < count; ++i) mPerm[i] = i;
        for (int i = count - 1; i > 0; --i) std::swap(mPerm[i], mPerm[mGen() % uint32_t(i + 1)]);
        mCursor = 0;
    }
    return mPerm[mCursor++];
}

std::vector<int> batchDims(int n, const std::vector<int>& sample) {
    std::vector<int> dims{n};
    dims.insert(dims.end(), sample.begin(), sample.end());
    return dims;
}

VARP imageInput(VARP images) { return _Cast<float>(images) * _Const(1.0f / 255.0f); }

VARP targetOf(VARP labels, int classes) {
    return _OneHot(_Cast<int32_t>(labels), _Scalar<int>(classes), _Scalar<float>(1.0f), _Scalar<float>(0.0f));
}

}  // namespace driver
}  // namespace mnnrepro
