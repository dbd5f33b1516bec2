// The list our registry keeps (registry.cpp): every test MNN's sources registered, in registration order.
#pragma once
#include <string>
#include <vector>

class MNNTestCase;

namespace mnnrepro {
struct RegisteredTest {
    std::string name;
    MNNTestCase* test;
};
std::vector<RegisteredTest>& registeredTests();
}  // namespace mnnrepro
