#include "idx.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>

namespace mnnrepro {

namespace {

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

uint32_t be32(const uint8_t* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string hexByte(uint8_t b) {
    char s[8];
    snprintf(s, sizeof s, "0x%02x", unsigned(b));
    return s;
}

std::string joinDims(const std::vector<uint32_t>& dims) {
    std::string s;
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
    return s;
}

// Opens a regular file and reads its size from the file itself (fstat), the only size any header is
// trusted against. A directory or a FIFO would make fseek/ftell report nonsense.
bool openRegular(const std::string& path, File& f, uint64_t& size, std::string& error) {
    f.reset(fopen(path.c_str(), "rb"));
    if (!f) {
        error = "cannot open " + path + ": " + strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fileno(f.get()), &st) != 0) {
        error = "cannot stat " + path + ": " + strerror(errno);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        error = path + ": not a regular file";
        return false;
    }
    size = uint64_t(st.st_size);
    return true;
}

}  // namespace

bool readIdxU8(const std::string& path, IdxArray& out, std::string& error) {
    File f(nullptr, fclose);
    uint64_t size = 0;
    if (!openRegular(path, f, size, error)) return false;
    uint8_t head[4];
    if (size < 4 || fread(head, 1, 4, f.get()) != 4) {
        error = path + ": " + std::to_string(size) + " bytes, shorter than the 4-byte IDX magic";
        return false;
    }
    if (head[0] != 0 || head[1] != 0) {
        error = path + ": bad IDX magic " + hexByte(head[0]) + " " + hexByte(head[1]) +
                " (the first two bytes must be zero)";
        return false;
    }
    if (head[2] != 0x08) {
        error = path + ": IDX element type " + hexByte(head[2]) + " is not unsigned byte (0x08)";
        return false;
    }
    const int rank = head[3];
    if (rank < 1 || rank > 4) {
        error = path + ": IDX rank " + std::to_string(rank) + " out of range 1..4";
        return false;
    }
    const uint64_t headerBytes = 4 + 4 * uint64_t(rank);
    if (size < headerBytes) {
        error = path + ": truncated IDX header: rank " + std::to_string(rank) + " needs " +
                std::to_string(headerBytes) + " bytes, the file has " + std::to_string(size);
        return false;
    }
    out.dims.assign(rank, 0);
    for (int i = 0; i < rank; ++i) {
        uint8_t d[4];
        if (fread(d, 1, 4, f.get()) != 4) {
            error = path + ": truncated IDX header (read failed)";
            return false;
        }
        out.dims[i] = be32(d);
    }
    // Overflow-checked: dims of 2^31 x 2^31 x 4 would otherwise wrap to 0 and pass the size check.
    uint64_t elements = 1;
    for (uint32_t d : out.dims) {
        if (__builtin_mul_overflow(elements, uint64_t(d), &elements)) {
            error = path + ": IDX dims " + joinDims(out.dims) + " overflow 64 bits";
            return false;
        }
    }
    uint64_t expected = 0;
    if (__builtin_add_overflow(headerBytes, elements, &expected)) {
        error = path + ": IDX dims " + joinDims(out.dims) + " overflow 64 bits";
        return false;
    }
    // "header promises" is matched by tests/integration/test_evidence.py.
    if (expected != size) {
        error = path + ": file has " + std::to_string(size) + " bytes, header promises " + std::to_string(expected) +
                " (IDX dims " + joinDims(out.dims) + ": " + std::to_string(headerBytes) + " + " +
                std::to_string(elements) + ")";
        return false;
    }
    // From here the allocation is bounded by the bytes that really are in the file.
    try {
        out.data.resize(size_t(elements));
    } catch (const std::bad_alloc&) {
        error = path + ": cannot allocate " + std::to_string(elements) + " bytes";
        return false;
    }
    if (elements && fread(out.data.data(), 1, size_t(elements), f.get()) != elements) {
        error = path + ": short read";
        return false;
    }
    return true;
}

bool loadMnistSplit(const std::string& dir, const std::string& prefix, MnistSplit& out, std::string& error) {
    out.imagesPath = dir + "/" + prefix + "-images-idx3-ubyte";
    out.labelsPath = dir + "/" + prefix + "-labels-idx1-ubyte";
    const std::string& ip = out.imagesPath;
    const std::string& lp = out.labelsPath;
    IdxArray images, labels;
    if (!readIdxU8(ip, images, error)) return false;
    if (!readIdxU8(lp, labels, error)) return false;
    if (images.dims.size() != 3) {
        error = ip + ": IDX rank " + std::to_string(images.dims.size()) + ", images want rank 3 (N, rows, cols)";
        return false;
    }
    if (labels.dims.size() != 1) {
        error = lp + ": IDX rank " + std::to_string(labels.dims.size()) + ", labels want rank 1 (N)";
        return false;
    }
    for (uint32_t d : images.dims) {
        if (d > uint32_t(INT_MAX)) {
            error = ip + ": IDX dims " + joinDims(images.dims) + ": a dimension exceeds " + std::to_string(INT_MAX);
            return false;
        }
    }
    if (images.dims[0] != labels.dims[0]) {
        error = ip + ": " + std::to_string(images.dims[0]) + " images but " + lp + " has " +
                std::to_string(labels.dims[0]) + " labels";
        return false;
    }
    if (images.dims[0] == 0) {
        error = ip + ": no items";
        return false;
    }
    for (size_t i = 0; i < labels.data.size(); ++i) {
        if (labels.data[i] > 9) {
            error = lp + ": label " + std::to_string(labels.data[i]) + " at index " + std::to_string(i) +
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
