// Our own implementation of MNN's test registry (test/MNNTestSuite.h, compiled from the MNN tree under test):
// the test sources register through MNNTestSuiteRegister as upstream, but the suite keeps its own list so the
// entry point (main.cpp) can list every test and run exactly one by its full name. Upstream's MNNTestSuite::run
// matches by prefix (`op/Deconvolution` also runs `op/DeconvolutionInt8`); ours never does.
// Only members every release of the header declares are defined here (3.6.0 added fields to Status, no methods).
#include "registry.hpp"

#include <cstdio>

#include "MNNTestSuite.h"

MNNTestSuite* MNNTestSuite::gInstance = nullptr;

namespace mnnrepro {
std::vector<RegisteredTest>& registeredTests() {
    static std::vector<RegisteredTest> tests;
    return tests;
}
}  // namespace mnnrepro

MNNTestSuite* MNNTestSuite::get() {
    if (gInstance == nullptr) gInstance = new MNNTestSuite;
    return gInstance;
}

MNNTestSuite::~MNNTestSuite() {
    for (auto* test : mTests) delete test;
    mTests.clear();
    mnnrepro::registeredTests().clear();
}

void MNNTestSuite::add(MNNTestCase* test, const char* name) {
    test->name = name;  // MNNTestSuite is MNNTestCase's friend
    mTests.push_back(test);
    mnnrepro::registeredTests().push_back({name, test});
}

// Exact name, one test: what a test of upstream's calling `run` by name means here.
int MNNTestSuite::run(const char* name, int precision, const char* /*flag*/) {
    for (auto& t : mnnrepro::registeredTests()) {
        if (t.name == name) return t.test->run(precision) ? 0 : 1;
    }
    fprintf(stderr, "mnn_optest: no test named %s\n", name ? name : "(null)");
    return 1;
}

int MNNTestSuite::runAll(int precision, const char* /*flag*/) {
    int wrong = 0;
    for (auto& t : mnnrepro::registeredTests()) wrong += t.test->run(precision) ? 0 : 1;
    return wrong;
}
