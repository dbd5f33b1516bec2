// Tensor stores: a directory of named tensor values (manifest.tsv: name, dtype, format, dims, file; one raw
// little-endian file per tensor), written by the driver's --save-graph and by mnn_graph, read by mnn_graph and
// the reducer (src/mnnrepro/reduce.py). NC4HW4 values are stored as NCHW with the format column saying NC4HW4.
#pragma once
#include <MNN/expr/Expr.hpp>

#include <map>
#include <string>
#include <vector>

namespace mnnrepro {

struct Stored {
    std::string dtype;   // f32 i32 u8 i8
    std::string format;  // NCHW NHWC NC4HW4
    std::vector<int> dims;
    std::string file;
};

bool dtypeName(halide_type_t t, std::string& out);
halide_type_t dtypeOf(const std::string& s);
size_t count(const std::vector<int>& dims);
std::string joinDims(const std::vector<int>& d);

class Store {
public:
    // create: a new, empty store at dir (made if needed); else the store at dir, read.
    bool open(const std::string& dir, bool create, std::string& error);
    bool has(const std::string& name) const { return mItems.count(name) > 0; }
    const Stored& get(const std::string& name) const { return mItems.at(name); }
    // The value as a fresh graph input (an NC4HW4 value goes in as NCHW and is converted back).
    MNN::Express::VARP input(const std::string& name, std::string& error) const;
    bool write(const std::string& name, MNN::Express::VARP var, std::string& error);
    std::vector<double> floats(const std::string& name) const;
    static std::vector<double> toDoubles(const void* p, size_t n, const std::string& dtype);

private:
    std::string mDir;
    std::map<std::string, Stored> mItems;
    size_t mNext = 0;  // the next file's number (never reused: a file is never overwritten)
};

}  // namespace mnnrepro
