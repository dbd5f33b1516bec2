#include "npy.hpp"

#include <cstdio>
#include <cstring>
#include <memory>

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

bool readNpyF32(const std::string& path, std::vector<int>& shape, std::vector<float>& data, std::string& error) {
    File f(fopen(path.c_str(), "rb"), fclose);
    if (!f) {
        error = "cannot open " + path;
        return false;
    }
    unsigned char head[10];
    if (fread(head, 1, 10, f.get()) != 10 || memcmp(head, "\x93NUMPY", 6) != 0 || head[6] != 1) {
        error = path + ": not a version-1 .npy file";
        return false;
    }
    size_t hlen = head[8] | (size_t(head[9]) << 8);
    std::string dict(hlen, '\0');
    if (fread(&dict[0], 1, hlen, f.get()) != hlen) {
        error = path + ": truncated header";
        return false;
    }
    if (dict.find("'descr': '<f4'") == std::string::npos || dict.find("'fortran_order': False") == std::string::npos) {
        error = path + ": only little-endian float32 in C order is accepted";
        return false;
    }
    auto open = dict.find("'shape': (");
    auto close = dict.find(')', open);
    if (open == std::string::npos || close == std::string::npos) {
        error = path + ": no shape in header";
        return false;
    }
    shape.clear();
    size_t count = 1;
    std::string dims = dict.substr(open + 10, close - open - 10);
    size_t pos = 0;
    while (pos < dims.size()) {
        while (pos < dims.size() && (dims[pos] == ' ' || dims[pos] == ',')) ++pos;
        if (pos >= dims.size()) break;
        char* end = nullptr;
        long v = strtol(dims.c_str() + pos, &end, 10);
        if (end == dims.c_str() + pos || v < 0) {
            error = path + ": bad shape";
            return false;
        }
        shape.push_back(int(v));
        count *= size_t(v);
        pos = size_t(end - dims.c_str());
    }
    data.resize(count);
    if (count && fread(data.data(), sizeof(float), count, f.get()) != count) {
        error = path + ": fewer values than the shape says";
        return false;
    }
    if (fgetc(f.get()) != EOF) {
        error = path + ": more values than the shape says";
        return false;
    }
    return true;
}

}  // namespace mnnrepro
