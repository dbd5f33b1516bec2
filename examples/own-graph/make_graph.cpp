// A graph of one's own for `mnnrepro reduce --graph DIR` (README, "The reducer"): a small regression head written
// with MNN's Express API the way an app would, saved with Variable::save. Its loss squares a residual with
// _Pow(r, 2), which is exact on the CPU for a negative residual; the inputs (inputs/) are written by
// make_inputs.py beside it. Build against an MNN build and run:
//   c++ -std=c++17 make_graph.cpp -I$MNN/include -L$MNN_LIBS -lMNN_Express -lMNN -o make_graph && ./make_graph DIR
#include <MNN/expr/Expr.hpp>
#include <MNN/expr/ExprCreator.hpp>

#include <cstdio>
#include <string>
#include <vector>

using namespace MNN::Express;

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_graph OUT_DIR (writes OUT_DIR/graph.mnn)\n");
        return 3;
    }
    auto x = _Input({8, 16}, NCHW, halide_type_of<float>());
    x->setName("x");
    auto target = _Input({8, 4}, NCHW, halide_type_of<float>());
    target->setName("target");
    auto w = _Input({16, 4}, NCHW, halide_type_of<float>());
    w->setName("w");
    auto b = _Input({4}, NCHW, halide_type_of<float>());
    b->setName("b");
    auto h = _Add(_MatMul(x, w), b);              // the head's output
    auto r = _Subtract(h, target);                // residual, negative about half the time
    auto sq = _Pow(r, _Const(2.0f));              // squared error
    auto mse = _ReduceMean(sq);
    auto p = _Softmax(h, -1);                     // a confidence term beside it
    auto ent = _Negative(_ReduceMean(_Multiply(p, _Log(p))));
    auto l2 = _ReduceSum(_Square(w));             // weight decay
    auto loss = _Add(_Add(mse, _Multiply(ent, _Const(0.1f))), _Multiply(l2, _Const(1e-4f)));
    loss->setName("loss");
    const std::string out = std::string(argv[1]) + "/graph.mnn";
    Variable::save({loss}, out.c_str());
    fprintf(stderr, "wrote %s\n", out.c_str());
    return 0;
}
