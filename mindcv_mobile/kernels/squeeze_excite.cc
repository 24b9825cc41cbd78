// The whole squeeze-and-excite block of MobileNetV3 as one MindSpore "aot" op and its gradient
// (kernels/ops.py wraps them), float32 NCHW:
//   m = mean over H, W of x            (N, C)
//   h = relu(m W1^T + b1)              (N, R)   W1: the reduce 1x1 conv's weight (R, C, 1, 1)
//   t = h W2^T + b2                    (N, C)   W2: the expand 1x1 conv's weight (C, R, 1, 1)
//   s = relu6(t + 3) / 6               the hard-sigmoid gate
//   y = x * s                          broadcast over H, W
// MindSpore runs this as some twenty small ops forward and backward per block (mean, two convs
// with bias, ReLU, add, ReLU6, divide, multiply, their gradients and the AddN joining the two
// gradients of x); here it is two passes over the activation each way.
//
// Outputs y and, for the gradient, m, h and t. Gradient: ds = sum over H, W of dy * x, back
// through the gate and the two small layers (MindSpore's conventions: ReluGrad passes where h > 0,
// ReLU6Grad where 0 < t + 3 <= 6), then dx = dy * s + dm / (H * W) in one pass.
// Planes and the rows of every small product are split over threads, each value summed by one
// thread in a fixed order: results do not depend on the number of threads. cfg (int32[1]): threads.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace mindcv_kernels {
void parallel_blocks(int64_t count, int threads, int64_t work, const std::function<void(int64_t, int64_t)>& fn);
float sum_floats(const float* x, int64_t n);
float dot_floats(const float* x, const float* y, int64_t n);
}  // namespace mindcv_kernels

namespace {

using mindcv_kernels::parallel_blocks;

struct Shape {
  int64_t n, c, hw, r;
  int threads;
};

Shape make_shape(const int64_t* x, const int64_t* w1, const int* cfg) {
  return Shape{x[0], x[1], x[2] * x[3], w1[0], std::max(1, cfg[0])};
}

inline float gate(float t) { return std::min(std::max(t + 3.f, 0.f), 6.f) / 6.f; }

// Weight and bias gradients of a 1x1 conv on the pooled (N, ins) vectors, summed over the batch in a
// fixed order: dw[o, k] = sum_i d[i, o] input[i, k], db[o] = sum_i d[i, o].
void pooled_conv_grads(const float* d, const float* input, int64_t n, int64_t outs, int64_t ins, int threads,
                       float* dw, float* db) {
  parallel_blocks(outs, threads, n * outs * ins, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      float bias = 0.f;
      float* row = dw + o * ins;
      std::fill(row, row + ins, 0.f);
      for (int64_t i = 0; i < n; ++i) {
        const float g = d[i * outs + o];
        bias += g;
        for (int64_t k = 0; k < ins; ++k) row[k] += g * input[i * ins + k];
      }
      db[o] = bias;
    }
  });
}

}  // namespace

// x (N,C,H,W), w1 (R,C,1,1), b1 (R), w2 (C,R,1,1), b2 (C), cfg -> y (N,C,H,W), m (N,C), h (N,R), t (N,C)
extern "C" int SqueezeExcite(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  if (nparam != 10 || ndims[0] != 4) return 1;
  const Shape s = make_shape(shapes[0], shapes[1], static_cast<const int*>(params[5]));
  const float* x = static_cast<const float*>(params[0]);
  const float* w1 = static_cast<const float*>(params[1]);
  const float* b1 = static_cast<const float*>(params[2]);
  const float* w2 = static_cast<const float*>(params[3]);
  const float* b2 = static_cast<const float*>(params[4]);
  float* y = static_cast<float*>(params[6]);
  float* m = static_cast<float*>(params[7]);
  float* h = static_cast<float*>(params[8]);
  float* t = static_cast<float*>(params[9]);
  const int64_t planes = s.n * s.c;
  parallel_blocks(planes, s.threads, planes * s.hw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) m[p] = mindcv_kernels::sum_floats(x + p * s.hw, s.hw) / static_cast<float>(s.hw);
  });
  parallel_blocks(s.n, s.threads, 2 * s.n * s.c * s.r, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t k = 0; k < s.r; ++k)
        h[i * s.r + k] = std::max(mindcv_kernels::dot_floats(w1 + k * s.c, m + i * s.c, s.c) + b1[k], 0.f);
      for (int64_t ch = 0; ch < s.c; ++ch)
        t[i * s.c + ch] = mindcv_kernels::dot_floats(w2 + ch * s.r, h + i * s.r, s.r) + b2[ch];
    }
  });
  parallel_blocks(planes, s.threads, planes * s.hw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float v = gate(t[p]);
      const float* src = x + p * s.hw;
      float* dst = y + p * s.hw;
      for (int64_t j = 0; j < s.hw; ++j) dst[j] = src[j] * v;
    }
  });
  return 0;
}

// dy, x, w1, w2, m, h, t (the forward's), cfg -> dx, dw1, db1, dw2, db2
extern "C" int SqueezeExciteBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                     void* stream, void* extra) {
  if (nparam != 13 || ndims[0] != 4) return 1;
  const Shape s = make_shape(shapes[0], shapes[2], static_cast<const int*>(params[7]));
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* w1 = static_cast<const float*>(params[2]);
  const float* w2 = static_cast<const float*>(params[3]);
  const float* m = static_cast<const float*>(params[4]);
  const float* h = static_cast<const float*>(params[5]);
  const float* t = static_cast<const float*>(params[6]);
  float* dx = static_cast<float*>(params[8]);
  float* dw1 = static_cast<float*>(params[9]);
  float* db1 = static_cast<float*>(params[10]);
  float* dw2 = static_cast<float*>(params[11]);
  float* db2 = static_cast<float*>(params[12]);
  const int64_t planes = s.n * s.c;
  std::vector<float> dt(planes), dh(s.n * s.r, 0.f), dm(planes, 0.f);
  // d(gate input): ds / 6 where 0 < t + 3 <= 6 (the divide's gradient, then ReLU6's).
  parallel_blocks(planes, s.threads, 2 * planes * s.hw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float ds = mindcv_kernels::dot_floats(dy + p * s.hw, x + p * s.hw, s.hw);
      const float v = t[p] + 3.f;
      dt[p] = (v > 0.f && v <= 6.f) ? ds / 6.f : 0.f;
    }
  });
  // The small products run along contiguous rows (vectorised), every sum in index order.
  // Expand layer: dh[n, r] = sum_c dt[n, c] w2[c, r], through the ReLU (h > 0).
  parallel_blocks(s.n, s.threads, s.n * s.c * s.r, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = dh.data() + i * s.r;
      for (int64_t ch = 0; ch < s.c; ++ch) {
        const float d = dt[i * s.c + ch];
        for (int64_t k = 0; k < s.r; ++k) row[k] += d * w2[ch * s.r + k];
      }
      for (int64_t k = 0; k < s.r; ++k) row[k] = h[i * s.r + k] > 0.f ? row[k] : 0.f;
    }
  });
  // Weight and bias gradients of the expand (on h) and reduce (on m) convs.
  pooled_conv_grads(dt.data(), h, s.n, s.c, s.r, s.threads, dw2, db2);
  pooled_conv_grads(dh.data(), m, s.n, s.r, s.c, s.threads, dw1, db1);
  // Reduce layer back to the mean: dm[n, c] = sum_r dh[n, r] w1[r, c].
  parallel_blocks(s.n, s.threads, s.n * s.c * s.r, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = dm.data() + i * s.c;
      for (int64_t k = 0; k < s.r; ++k) {
        const float d = dh[i * s.r + k];
        for (int64_t ch = 0; ch < s.c; ++ch) row[ch] += d * w1[k * s.c + ch];
      }
    }
  });
  // dx = dy * s + dm / (H * W): the scale's gradient and the mean's, in one pass.
  parallel_blocks(planes, s.threads, planes * s.hw, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const float v = gate(t[p]);
      const float spread = dm[p] / static_cast<float>(s.hw);
      const float* g = dy + p * s.hw;
      float* dst = dx + p * s.hw;
      for (int64_t j = 0; j < s.hw; ++j) dst[j] = g[j] * v + spread;
    }
  });
  return 0;
}
