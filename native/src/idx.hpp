// IDX (the MNIST file format) reader that trusts nothing: magic, rank, dims and file size are checked,
// and any number of items is accepted (upstream's MnistDataset hard-codes 60000/10000).
//
// Issue 11 (driver input hardening): every size is computed overflow-checked and compared with the file's
// actual size before anything is allocated, so a hostile header gives an error (exit 3 in the driver), never
// a wrapped size check, a bad_alloc or a short read into a too-small buffer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mnnrepro {

struct IdxArray {
    std::vector<uint32_t> dims;
    std::vector<uint8_t> data;
};

// Reads an unsigned-byte IDX file (type code 0x08). Returns false and sets `error` (which names the file and
// the problem) on any problem.
bool readIdxU8(const std::string& path, IdxArray& out, std::string& error);

struct MnistSplit {
    std::string imagesPath;  // for messages
    std::string labelsPath;
    int count = 0;
    int rows = 0;
    int cols = 0;
    std::vector<uint8_t> images;  // count * rows * cols
    std::vector<uint8_t> labels;  // count, each < 10
};

// Loads <dir>/<prefix>-images-idx3-ubyte and <dir>/<prefix>-labels-idx1-ubyte and cross-checks them.
bool loadMnistSplit(const std::string& dir, const std::string& prefix, MnistSplit& out, std::string& error);

}  // namespace mnnrepro
