#include "idx.hpp"

#include <cstdio>
#include <memory>

namespace mnnrepro {

static uint32_t be32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

bool readIdxU8(const std::string& path, IdxArray& out, std::string& error) {
    std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(path.c_str(), "rb"), fclose);
    if (!f) {
        error = "cannot open " + path;
        return false;
    }
    if (fseek(f.get(), 0, SEEK_END) != 0) {
        error = "cannot seek " + path;
        return false;
    }
    long size = ftell(f.get());
    rewind(f.get());
    uint8_t head[4];
    if (size < 4 || fread(head, 1, 4, f.get()) != 4) {
        error = path + ": shorter than an IDX header";
        return false;
    }
    if (head[0] != 0 || head[1] != 0) {
        error = path + ": bad IDX magic (first two bytes must be zero)";
        return false;
    }
    if (head[2] != 0x08) {
        error = path + ": IDX element type is not unsigned byte (0x08)";
        return false;
    }
    int rank = head[3];
    if (rank < 1 || rank > 4) {
        error = path + ": IDX rank " + std::to_string(rank) + " out of range 1..4";
        return false;
    }
    out.dims.assign(rank, 0);
    uint64_t elements = 1;
    for (int i = 0; i < rank; ++i) {
        uint8_t d[4];
        if (fread(d, 1, 4, f.get()) != 4) {
            error = path + ": truncated IDX header";
            return false;
        }
        out.dims[i] = be32(d);
        elements *= out.dims[i];
    }
    uint64_t expected = 4 + 4ull * rank + elements;
    if (uint64_t(size) != expected) {
        error = path + ": file has " + std::to_string(size) + " bytes, header promises " + std::to_string(expected);
        return false;
    }
    out.data.resize(elements);
    if (elements && fread(out.data.data(), 1, elements, f.get()) != elements) {
        error = path + ": short read";
        return false;
    }
    return true;
}

bool loadMnistSplit(const std::string& dir, const std::string& prefix, MnistSplit& out, std::string& error) {
    IdxArray images, labels;
    if (!readIdxU8(dir + "/" + prefix + "-images-idx3-ubyte", images, error)) return false;
    if (!readIdxU8(dir + "/" + prefix + "-labels-idx1-ubyte", labels, error)) return false;
    if (images.dims.size() != 3) {
        error = prefix + " images: expected rank 3 (N, rows, cols)";
        return false;
    }
    if (labels.dims.size() != 1) {
        error = prefix + " labels: expected rank 1 (N)";
        return false;
    }
    if (images.dims[0] != labels.dims[0]) {
        error = prefix + ": " + std::to_string(images.dims[0]) + " images but " + std::to_string(labels.dims[0]) +
                " labels";
        return false;
    }
    if (images.dims[0] == 0) {
        error = prefix + ": no items";
        return false;
    }
    for (size_t i = 0; i < labels.data.size(); ++i) {
        if (labels.data[i] > 9) {
            error = prefix + ": label " + std::to_string(labels.data[i]) + " at index " + std::to_string(i) +
                    " is not a digit";
            return false;
        }
    }
    out.count = int(images.dims[0]);
    out.rows = int(images.dims[1]);
    out.cols = int(images.dims[2]);
    out.images = std::move(images.data);
    out.labels = std::move(labels.data);
    return true;
}

}  // namespace mnnrepro
