// Models by name (model.hpp). A new model: its file under models/, one line here, and its source in
// native/CMakeLists.txt. The driver trains "lenet" (no flag picks another yet).
#include <cstring>

#include "../model.hpp"

namespace mnnrepro {

std::unique_ptr<TrainModel> makeLenet();

namespace {
struct Entry {
    const char* name;
    std::unique_ptr<TrainModel> (*make)();
};
const Entry kModels[] = {
    {"lenet", makeLenet},
};
}  // namespace

std::unique_ptr<TrainModel> makeModel(const std::string& name) {
    for (const Entry& e : kModels) {
        if (name == e.name) return e.make();
    }
    return nullptr;
}

}  // namespace mnnrepro
