// Minimal .npy (format 1.0) reader and writer for little-endian float32 arrays in C order.
#pragma once
#include <string>
#include <vector>

namespace mnnrepro {

bool writeNpyF32(const std::string& path, const std::vector<int>& shape, const float* data, std::string& error);
bool readNpyF32(const std::string& path, std::vector<int>& shape, std::vector<float>& data, std::string& error);

}  // namespace mnnrepro
