#include "tensorstore.hpp"

#include <MNN/expr/ExprCreator.hpp>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

using namespace MNN::Express;

namespace mnnrepro {

namespace {
const char* formatName(Dimensionformat f) { return f == NHWC ? "NHWC" : f == NC4HW4 ? "NC4HW4" : "NCHW"; }
Dimensionformat formatOf(const std::string& s) { return s == "NHWC" ? NHWC : s == "NC4HW4" ? NC4HW4 : NCHW; }
}  // namespace

bool dtypeName(halide_type_t t, std::string& out) {
    if (t.code == halide_type_float && t.bits == 32) out = "f32";
    else if (t.code == halide_type_int && t.bits == 32) out = "i32";
    else if (t.code == halide_type_uint && t.bits == 8) out = "u8";
    else if (t.code == halide_type_int && t.bits == 8) out = "i8";
    else return false;
    return true;
}

halide_type_t dtypeOf(const std::string& s) {
    if (s == "i32") return halide_type_of<int32_t>();
    if (s == "u8") return halide_type_of<uint8_t>();
    if (s == "i8") return halide_type_of<int8_t>();
    return halide_type_of<float>();
}


size_t count(const std::vector<int>& dims) {
    size_t n = 1;
    for (int d : dims) n *= size_t(d);
    return n;
}

std::string joinDims(const std::vector<int>& d) {
    std::string s;
    for (size_t i = 0; i < d.size(); ++i) s += (i ? "," : "") + std::to_string(d[i]);
    return s;
}

bool Store::open(const std::string& dir, bool create, std::string& error) {
    mDir = dir;
    if (create) {
        mkdir(dir.c_str(), 0755);
        std::ofstream out(dir + "/manifest.tsv", std::ios::trunc);
        if (!out) error = dir + "/manifest.tsv: cannot write";
        return bool(out);
    }
    std::ifstream in(dir + "/manifest.tsv");
    if (!in) {
        error = dir + "/manifest.tsv: cannot read";
        return false;
    }
    std::string line;
    while (std::getline(in, line)) {
        std::vector<std::string> f;
        std::stringstream ss(line);
        std::string part;
        while (std::getline(ss, part, '\t')) f.push_back(part);
        if (f.size() < 5) f.resize(5);  // a scalar has no dims
        Stored s{f[1], f[2], {}, f[4]};
        std::stringstream ds(f[3]);
        while (std::getline(ds, part, ',')) s.dims.push_back(atoi(part.c_str()));
        mItems[f[0]] = s;
        mNext++;
    }
    return true;
}

VARP Store::input(const std::string& name, std::string& error) const {
    const Stored& s = mItems.at(name);
    const bool c4 = s.format == "NC4HW4";
    auto var = _Input(s.dims, c4 ? NCHW : formatOf(s.format), dtypeOf(s.dtype));
    var->setName(c4 ? name + "__nchw" : name);
    const size_t bytes = count(s.dims) * (dtypeOf(s.dtype).bits / 8);
    std::ifstream in(mDir + "/" + s.file, std::ios::binary);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.size() != bytes) {
        error = mDir + "/" + s.file + ": " + std::to_string(data.size()) + " bytes, " + name + " needs " +
                std::to_string(bytes);
        return nullptr;
    }
    if (bytes) memcpy(var->writeMap<void>(), data.data(), bytes);
    if (!c4) return var;
    auto back = _Convert(var, NC4HW4);
    back->setName(name);
    return back;
}

bool Store::write(const std::string& name, VARP var, std::string& error) {
    auto info = var->getInfo();
    if (info == nullptr) {
        error = name + ": no shape";
        return false;
    }
    std::string dtype;
    if (!dtypeName(info->type, dtype)) {
        error = name + ": unsupported type";
        return false;
    }
    const std::string format = formatName(info->order);
    VARP plain = info->order == NC4HW4 ? _Convert(var, NCHW) : var;
    auto pinfo = plain->getInfo();
    const void* ptr = plain->readMap<void>();
    if (ptr == nullptr && pinfo->size > 0) {
        error = name + ": could not compute";
        return false;
    }
    if (mItems.count(name)) {
        error = mDir + ": " + name + " is already in the store (two tensors of one name)";
        return false;
    }
    const std::string file = "t" + std::to_string(mNext++) + ".bin";
    std::ofstream out(mDir + "/" + file, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(ptr), std::streamsize(pinfo->size * (info->type.bits / 8)));
    std::ofstream man(mDir + "/manifest.tsv", std::ios::app);
    man << name << '\t' << dtype << '\t' << format << '\t' << joinDims(pinfo->dim) << '\t' << file << '\n';
    if (!out || !man) {
        error = mDir + ": cannot write";
        return false;
    }
    mItems[name] = Stored{dtype, format, pinfo->dim, file};
    return true;
}

std::vector<double> Store::floats(const std::string& name) const {
    // An empty result when the file does not hold the whole tensor (the caller reports a difference in size).
    const Stored& s = mItems.at(name);
    std::ifstream in(mDir + "/" + s.file, std::ios::binary);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.size() != count(s.dims) * (dtypeOf(s.dtype).bits / 8)) return {};
    return toDoubles(data.data(), count(s.dims), s.dtype);
}

std::vector<double> Store::toDoubles(const void* p, size_t n, const std::string& dtype) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) {
        if (dtype == "f32") v[i] = static_cast<const float*>(p)[i];
        else if (dtype == "i32") v[i] = static_cast<const int32_t*>(p)[i];
        else if (dtype == "u8") v[i] = static_cast<const uint8_t*>(p)[i];
        else v[i] = static_cast<const int8_t*>(p)[i];
    }
    return v;
}

}  // namespace mnnrepro
