// BatchNorm over (N, C, spatial...) float32 with the activation that follows it (none, ReLU, ReLU6,
// hard-swish) in one op, as MindSpore "aot" custom-op functions (kernels/ops.py wraps them):
//   - training: batch statistics, normalised output, the saved mean and 1/std for the gradient,
//     and the updated moving mean and variance (nn.BatchNorm2d's rule: the batch's weight is
//     MindSpore's op momentum, 1 - the cell's; the moving variance takes the unbiased batch
//     variance, the normalisation the biased one);
//   - inference with the moving statistics;
//   - the gradient of either w.r.t. x, gamma and beta, in two passes over (dy, x); the
//     pre-activation value is recomputed from x rather than stored.
//
// Work is split by channel: every sum of a channel runs on one thread in a fixed order, so results
// do not depend on the number of threads (bitwise reproducible runs). Sums are accumulated in
// double, the batch statistics around the channel's first value (no cancellation in the variance).
//
// cfg (int32[5]): threads, activation (0 none, 1 ReLU, 2 ReLU6, 3 hard-swish), the bits of two
// float32 values: epsilon and the batch's weight in the moving averages, then the statistics the
// gradient is for (0: the batch's, which depend on x; 1: the moving ones, constants).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace mindcv_kernels {
void parallel_blocks(int64_t count, int threads, int64_t work, const std::function<void(int64_t, int64_t)>& fn);
}

namespace {

enum Activation { kNone = 0, kRelu = 1, kRelu6 = 2, kHardSwish = 3 };

struct Layout {
  int64_t n, c, hw;  // planes of hw values; plane (i, ch) starts at (i * c + ch) * hw
};

struct Config {
  int threads, act;
  float eps, batch_weight;
  bool fixed_statistics;
};

Layout make_layout(const int64_t* shape, int ndim) {
  Layout l{shape[0], ndim > 1 ? shape[1] : 1, 1};
  for (int i = 2; i < ndim; ++i) l.hw *= shape[i];
  return l;
}

Config make_config(const int* cfg) {
  Config c;
  c.threads = std::max(1, cfg[0]);
  c.act = cfg[1];
  std::memcpy(&c.eps, cfg + 2, sizeof(float));
  std::memcpy(&c.batch_weight, cfg + 3, sizeof(float));
  c.fixed_statistics = cfg[4] != 0;
  return c;
}

template <int A>
inline float activate(float z) {
  if (A == kRelu) return z > 0.f ? z : 0.f;
  if (A == kRelu6) return std::min(std::max(z, 0.f), 6.f);
  if (A == kHardSwish) return z * std::min(std::max(z + 3.f, 0.f), 6.f) * (1.f / 6.f);
  return z;
}

// MindSpore's gradients: ReluGrad passes where the output is > 0, ReLU6Grad where 0 < x <= 6,
// HSwishGrad 0 below -3, 1 above 3, x / 3 + 1/2 between (boundaries included).
template <int A>
inline float slope(float z) {
  if (A == kRelu) return z > 0.f ? 1.f : 0.f;
  if (A == kRelu6) return (z > 0.f && z <= 6.f) ? 1.f : 0.f;
  if (A == kHardSwish) return z < -3.f ? 0.f : (z > 3.f ? 1.f : z * (1.f / 3.f) + 0.5f);
  return 1.f;
}

// The normalised, scaled and shifted value: one expression for the forward and the gradient's
// recomputation, so both see the same pre-activation bits.
inline float affine(float x, float mean, float scale, float beta) { return (x - mean) * scale + beta; }

// Eight lanes of float and double (GCC/Clang vector extensions: the compiler maps them onto the
// CPU's vector registers). Sums of a channel run lane-wise in double, then the lanes in order.
typedef float Floats8 __attribute__((vector_size(32)));
typedef double Doubles8 __attribute__((vector_size(64)));

inline Doubles8 load_wide(const float* p) {
  Floats8 v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, Doubles8);
}

inline double lane_sum(Doubles8 v) {
  double s = 0;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}

// Sum and sum of squares of (x - shift) over the channel's planes.
void channel_moments(const float* x, const Layout& l, int64_t ch, double shift, double* sum, double* squares) {
  Doubles8 s = {0, 0, 0, 0, 0, 0, 0, 0}, q = s;
  double ts = 0, tq = 0;
  for (int64_t i = 0; i < l.n; ++i) {
    const float* p = x + (i * l.c + ch) * l.hw;
    int64_t j = 0;
    for (; j + 8 <= l.hw; j += 8) {
      const Doubles8 v = load_wide(p + j) - shift;
      s += v;
      q += v * v;
    }
    for (; j < l.hw; ++j) {
      const double v = static_cast<double>(p[j]) - shift;
      ts += v;
      tq += v * v;
    }
  }
  *sum = ts + lane_sum(s);
  *squares = tq + lane_sum(q);
}

template <int A>
void normalize_channel(const float* x, float* y, const Layout& l, int64_t ch, float mean, float scale, float beta) {
  for (int64_t i = 0; i < l.n; ++i) {
    const float* p = x + (i * l.c + ch) * l.hw;
    float* o = y + (i * l.c + ch) * l.hw;
    for (int64_t j = 0; j < l.hw; ++j) o[j] = activate<A>(affine(p[j], mean, scale, beta));
  }
}

template <int A>
void normalize(const float* x, float* y, const Layout& l, const Config& cfg, const float* mean, const float* scale,
               const float* beta) {
  mindcv_kernels::parallel_blocks(l.c, cfg.threads, 2 * l.n * l.c * l.hw, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) normalize_channel<A>(x, y, l, ch, mean[ch], scale[ch], beta[ch]);
  });
}

template <int A>
void training(const float* x, const float* gamma, const float* beta, const float* moving_mean,
              const float* moving_var, const Layout& l, const Config& cfg, float* y, float* mean, float* invstd,
              float* new_mean, float* new_var) {
  const int64_t count = l.n * l.hw;
  const float keep = 1.f - cfg.batch_weight;
  mindcv_kernels::parallel_blocks(l.c, cfg.threads, 3 * l.n * l.c * l.hw, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const double shift = count > 0 ? x[ch * l.hw] : 0.0;
      double sum, squares;
      channel_moments(x, l, ch, shift, &sum, &squares);
      const double centred = count > 0 ? sum / count : 0.0;
      const double var = std::max(count > 0 ? squares / count - centred * centred : 0.0, 0.0);
      const float m = static_cast<float>(shift + centred);
      const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(cfg.eps)));
      mean[ch] = m;
      invstd[ch] = inv;
      const float unbiased = static_cast<float>(count > 1 ? var * count / (count - 1) : var);
      new_mean[ch] = moving_mean[ch] * keep + m * cfg.batch_weight;
      new_var[ch] = moving_var[ch] * keep + unbiased * cfg.batch_weight;
      normalize_channel<A>(x, y, l, ch, m, gamma[ch] * inv, beta[ch]);
    }
  });
}

// One channel's gradient: g = dy * act'(z); dbeta = sum g, dgamma = sum g * xhat,
// dx = gamma / std * (g - mean(g) - xhat * mean(g * xhat)) for batch statistics, gamma / std * g
// for fixed ones.
template <int A>
void backward_channel(const float* dy, const float* x, const Layout& l, int64_t ch, float gamma, float beta,
                      float mean, float inv, bool fixed, float* dx, float* dgamma, float* dbeta) {
  const float scale = gamma * inv;
  // Per chunk of a plane: g and xhat elementwise (vectorised), then their lane-wise sums.
  constexpr int64_t kChunk = 512;
  float g[kChunk], xhat[kChunk];
  Doubles8 sg = {0, 0, 0, 0, 0, 0, 0, 0}, sgx = sg;
  double tg = 0, tgx = 0;
  for (int64_t i = 0; i < l.n; ++i) {
    const int64_t base = (i * l.c + ch) * l.hw;
    for (int64_t start = 0; start < l.hw; start += kChunk) {
      const int64_t len = std::min(kChunk, l.hw - start);
      const float* d = dy + base + start;
      const float* p = x + base + start;
      for (int64_t j = 0; j < len; ++j) {
        g[j] = d[j] * slope<A>(affine(p[j], mean, scale, beta));
        xhat[j] = (p[j] - mean) * inv;
      }
      int64_t j = 0;
      for (; j + 8 <= len; j += 8) {
        const Doubles8 gv = load_wide(g + j);
        sg += gv;
        sgx += gv * load_wide(xhat + j);
      }
      for (; j < len; ++j) {
        tg += g[j];
        tgx += static_cast<double>(g[j]) * static_cast<double>(xhat[j]);
      }
    }
  }
  tg += lane_sum(sg);
  tgx += lane_sum(sgx);
  *dbeta = static_cast<float>(tg);
  *dgamma = static_cast<float>(tgx);
  const int64_t count = l.n * l.hw;
  const float mg = count > 0 && !fixed ? static_cast<float>(tg / count) : 0.f;
  const float mgx = count > 0 && !fixed ? static_cast<float>(tgx / count) : 0.f;
  for (int64_t i = 0; i < l.n; ++i) {
    const int64_t base = (i * l.c + ch) * l.hw;
    const float* d = dy + base;
    const float* p = x + base;
    float* o = dx + base;
    for (int64_t j = 0; j < l.hw; ++j) {
      const float g = d[j] * slope<A>(affine(p[j], mean, scale, beta));
      o[j] = scale * (g - mg - (p[j] - mean) * inv * mgx);
    }
  }
}

// stats: the forward's mean and 1/std (batch statistics) or the moving mean and variance.
template <int A>
void backward(const float* dy, const float* x, const float* gamma, const float* beta, const float* mean,
              const float* stats, const Layout& l, const Config& cfg, float* dx, float* dgamma, float* dbeta) {
  mindcv_kernels::parallel_blocks(l.c, cfg.threads, 4 * l.n * l.c * l.hw, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const float inv = cfg.fixed_statistics ? 1.f / std::sqrt(stats[ch] + cfg.eps) : stats[ch];
      backward_channel<A>(dy, x, l, ch, gamma[ch], beta[ch], mean[ch], inv, cfg.fixed_statistics, dx, dgamma + ch,
                          dbeta + ch);
    }
  });
}

#define DISPATCH_ACT(cfg, FN, ...)                  \
  do {                                              \
    switch ((cfg).act) {                            \
      case kNone: FN<kNone>(__VA_ARGS__); break;    \
      case kRelu: FN<kRelu>(__VA_ARGS__); break;    \
      case kRelu6: FN<kRelu6>(__VA_ARGS__); break;  \
      case kHardSwish: FN<kHardSwish>(__VA_ARGS__); break; \
      default: return 1;                            \
    }                                               \
  } while (0)

}  // namespace

// x, gamma, beta, moving_mean, moving_var, cfg -> y, mean, 1/std, new moving mean, new moving var
extern "C" int BatchNormTraining(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  if (nparam != 11 || ndims[0] < 2) return 1;
  const Layout l = make_layout(shapes[0], ndims[0]);
  const Config cfg = make_config(static_cast<const int*>(params[5]));
  auto in = [&](int i) { return static_cast<const float*>(params[i]); };
  auto out = [&](int i) { return static_cast<float*>(params[i]); };
  DISPATCH_ACT(cfg, training, in(0), in(1), in(2), in(3), in(4), l, cfg, out(6), out(7), out(8), out(9), out(10));
  return 0;
}

// dy, x, gamma, beta, then mean and 1/std of the training forward or the moving mean and variance
// (cfg says which), cfg -> dx, dgamma, dbeta
extern "C" int BatchNormBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                         void* stream, void* extra) {
  if (nparam != 10 || ndims[0] < 2) return 1;
  const Layout l = make_layout(shapes[0], ndims[0]);
  const Config cfg = make_config(static_cast<const int*>(params[6]));
  auto in = [&](int i) { return static_cast<const float*>(params[i]); };
  auto out = [&](int i) { return static_cast<float*>(params[i]); };
  DISPATCH_ACT(cfg, backward, in(0), in(1), in(2), in(3), in(4), in(5), l, cfg, out(7), out(8), out(9));
  return 0;
}

// x, gamma, beta, moving_mean, moving_var, cfg -> y (normalised with the moving statistics)
extern "C" int BatchNormInference(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                  void* stream, void* extra) {
  if (nparam != 7 || ndims[0] < 2) return 1;
  const Layout l = make_layout(shapes[0], ndims[0]);
  const Config cfg = make_config(static_cast<const int*>(params[5]));
  const float* gamma = static_cast<const float*>(params[1]);
  const float* var = static_cast<const float*>(params[4]);
  std::vector<float> scale(l.c);
  for (int64_t ch = 0; ch < l.c; ++ch) scale[ch] = gamma[ch] * (1.f / std::sqrt(var[ch] + cfg.eps));
  auto in = [&](int i) { return static_cast<const float*>(params[i]); };
  DISPATCH_ACT(cfg, normalize, in(0), static_cast<float*>(params[6]), l, cfg, in(3), scale.data(), in(2));
  return 0;
}
