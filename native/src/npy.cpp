#include "npy.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>

namespace mnnrepro {

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

bool writeNpyF32(const std::string& path, const std::vector<int>& shape, const float* data, std::string& error) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    size_t count = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        dict += std::to_string(shape[i]);
        if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
        if (i + 1 < shape.size()) dict += " ";
        count *= size_t(shape[i]);
    }
    dict += "), }";
    // Header length (magic 6 + version 2 + len 2 + dict + '\n') padded to a multiple of 64.
    size_t total = 10 + dict.size() + 1;
    size_t pad = (64 - total % 64) % 64;
    dict.append(pad, ' ');
    dict += '\n';
    File f(fopen(path.c_str(), "wb"), fclose);
    if (!f) {
        error = "cannot write " + path;
        return false;
    }
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    unsigned short hlen = static_cast<unsigned short>(dict.size());
    unsigned char len[2] = {static_cast<unsigned char>(hlen & 0xff), static_cast<unsigned char>(hlen >> 8)};
    bool ok = fwrite(magic, 1, 8, f.get()) == 8 && fwrite(len, 1, 2, f.get()) == 2 &&
              fwrite(dict.data(), 1, dict.size(), f.get()) == dict.size() &&
              fwrite(data, sizeof(float), count, f.get()) == count;
    if (!ok) error = "short write to " + path;
    return ok;
}

namespace {

std::string joinShape(const std::vector<uint64_t>& dims) {
    std::string s = "(";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + (dims.size() == 1 ? ",)" : ")");
}

// The value after `'key':` in the header dict, from its first non-blank character; npos when the key is absent.
size_t valueOf(const std::string& dict, const std::string& key) {
    size_t k = dict.find("'" + key + "'");
    if (k == std::string::npos) return k;
    size_t pos = k + key.size() + 2;
    while (pos < dict.size() && dict[pos] == ' ') ++pos;
    if (pos >= dict.size() || dict[pos] != ':') return std::string::npos;
    ++pos;
    while (pos < dict.size() && dict[pos] == ' ') ++pos;
    return pos < dict.size() ? pos : std::string::npos;
}

// Parses "(a, b, ...)" at dict[pos]: non-negative decimal integers, each at most INT_MAX (the driver's shapes
// are int), separated by commas, an optional trailing comma.
bool parseShape(const std::string& dict, size_t pos, std::vector<uint64_t>& dims, std::string& problem) {
    if (pos == std::string::npos || dict[pos] != '(') {
        problem = "no 'shape': (...) in header";
        return false;
    }
    size_t close = dict.find(')', pos);
    if (close == std::string::npos) {
        problem = "unterminated shape in header";
        return false;
    }
    const std::string text = dict.substr(pos, close - pos + 1);
    dims.clear();
    size_t i = pos + 1;
    for (;;) {
        while (i < close && dict[i] == ' ') ++i;
        if (i == close) break;
        if (dict[i] == '-') {
            problem = "negative dimension in shape " + text;
            return false;
        }
        if (dict[i] < '0' || dict[i] > '9') {
            problem = "bad shape " + text;
            return false;
        }
        uint64_t v = 0;
        while (i < close && dict[i] >= '0' && dict[i] <= '9') {
            if (v > uint64_t(INT_MAX)) break;  // keep going only to find the end; reported below
            v = v * 10 + uint64_t(dict[i] - '0');
            ++i;
        }
        while (i < close && dict[i] >= '0' && dict[i] <= '9') ++i;
        if (v > uint64_t(INT_MAX)) {
            problem = "dimension in shape " + text + " exceeds " + std::to_string(INT_MAX);
            return false;
        }
        dims.push_back(v);
        while (i < close && dict[i] == ' ') ++i;
        if (i == close) break;
        if (dict[i] != ',') {
            problem = "bad shape " + text;
            return false;
        }
        ++i;
    }
    return true;
}

// Opens a regular file and reads its size from the file itself (fstat), the only size the header is trusted
// against.
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

// The header's dtype and order: '<f4' in C order is read; else false with the problem (without the path).
bool checkDtypeAndOrder(const std::string& dict, std::string& problem) {
    size_t descr = valueOf(dict, "descr");
    if (descr == std::string::npos || (dict[descr] != '\'' && dict[descr] != '"')) {
        problem = "no 'descr' in header";
        return false;
    }
    size_t descrEnd = dict.find(dict[descr], descr + 1);
    if (descrEnd == std::string::npos) {
        problem = "unterminated 'descr' in header";
        return false;
    }
    std::string dtype = dict.substr(descr + 1, descrEnd - descr - 1);
    if (dtype != "<f4") {
        problem = "dtype '" + dtype + "', only '<f4' (little-endian float32) is read";
        return false;
    }
    size_t fortran = valueOf(dict, "fortran_order");
    if (fortran == std::string::npos) {
        problem = "no 'fortran_order' in header";
        return false;
    }
    if (dict.compare(fortran, 4, "True") == 0) {
        problem = "fortran_order is True, only C order is read";
        return false;
    }
    if (dict.compare(fortran, 5, "False") != 0) {
        problem = "bad 'fortran_order' in header";
        return false;
    }
    return true;
}

}  // namespace

// Issue 11: every size is overflow-checked and compared with the file's real size before anything is
// allocated, so a hostile header is an error (exit 3 in the driver), never a bad_alloc abort.
bool readNpyF32(const std::string& path, std::vector<int>& shape, std::vector<float>& data, std::string& error) {
    File f(nullptr, fclose);
    uint64_t size = 0;
    if (!openRegular(path, f, size, error)) return false;
    unsigned char head[10];
    if (size < 10 || fread(head, 1, 10, f.get()) != 10) {
        error = path + ": " + std::to_string(size) + " bytes, shorter than the 10-byte .npy preamble";
        return false;
    }
    if (memcmp(head, "\x93NUMPY", 6) != 0) {
        error = path + ": not a .npy file (bad magic)";
        return false;
    }
    if (head[6] != 1) {
        error = path + ": .npy format version " + std::to_string(head[6]) + "." + std::to_string(head[7]) +
                ", only 1.0 is read";
        return false;
    }
    const uint64_t hlen = head[8] | (uint64_t(head[9]) << 8);
    if (10 + hlen > size) {
        error = path + ": header length " + std::to_string(hlen) + " runs past the end of the file (" +
                std::to_string(size) + " bytes)";
        return false;
    }
    std::string dict(size_t(hlen), '\0');
    if (hlen && fread(&dict[0], 1, size_t(hlen), f.get()) != hlen) {
        error = path + ": truncated header (read failed)";
        return false;
    }
    std::string problem;
    if (!checkDtypeAndOrder(dict, problem)) {
        error = path + ": " + problem;
        return false;
    }
    std::vector<uint64_t> dims;
    if (!parseShape(dict, valueOf(dict, "shape"), dims, problem)) {
        error = path + ": " + problem;
        return false;
    }
    uint64_t count = 1;
    uint64_t bytes = 0;
    for (uint64_t d : dims) {
        if (__builtin_mul_overflow(count, d, &count)) {
            error = path + ": shape " + joinShape(dims) + " overflows 64 bits";
            return false;
        }
    }
    if (__builtin_mul_overflow(count, uint64_t(sizeof(float)), &bytes)) {
        error = path + ": shape " + joinShape(dims) + " overflows 64 bits";
        return false;
    }
    const uint64_t have = size - 10 - hlen;
    if (bytes != have) {
        error = path + ": shape " + joinShape(dims) + " needs " + std::to_string(bytes) +
                " bytes of data, the file has " + std::to_string(have) +
                (bytes > have ? " (truncated)" : " (more values than the shape says)");
        return false;
    }
    // From here the allocation is bounded by the bytes that really are in the file.
    try {
        data.resize(size_t(count));
    } catch (const std::bad_alloc&) {
        error = path + ": cannot allocate " + std::to_string(bytes) + " bytes";
        return false;
    }
    if (count && fread(data.data(), sizeof(float), size_t(count), f.get()) != count) {
        error = path + ": short read";
        return false;
    }
    shape.clear();
    for (uint64_t d : dims) shape.push_back(int(d));  // each <= INT_MAX (parseShape)
    return true;
}

}  // namespace mnnrepro
