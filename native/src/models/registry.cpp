// Models by name (model.hpp). A new model: its file under models/, one line here, and its source in
// native/CMakeLists.txt. The driver's --model NAME picks one (default "lenet").
#include <cstring>

#include "../model.hpp"

namespace mnnrepro {

std::unique_ptr<TrainModel> makeLenet();
std::unique_ptr<TrainModel> makeMnistV2();

namespace {
struct Entry {
    const char* name;
    std::unique_ptr<TrainModel> (*make)();
};
const Entry kModels[] = {
    {"lenet", makeLenet},
    {"mnistv2", makeMnistV2},
};
}  // namespace

std::unique_ptr<TrainModel> makeModel(const std::string& name) {
    for (const Entry& e : kModels) {
        if (name == e.name) return e.make();
    }
    return nullptr;
}

std::vector<std::string> modelNames() {
    std::vector<std::string> names;
    for (const Entry& e : kModels) names.push_back(e.name);
    return names;
}

}  // namespace mnnrepro
