// CPU kernels for the layers MindSpore 2.10's CPU backend runs slowly in MobileNets, float32
// NCHW, as MindSpore "aot" custom-op functions (kernels/cache.py compiles this file, kernels/ops.py
// wraps each function in ops.Custom with its gradient):
//   - depthwise 2-D convolution: forward, gradient w.r.t. the input, gradient w.r.t. the weight;
//   - per-channel spatial mean (squeeze-and-excite, global pooling) and its gradient;
//   - per-channel scaling x * s[n, c] (squeeze-and-excite) and its two gradients;
//   - hard-swish (MobileNetV3) and its gradient.
// batch_norm.cc (BatchNorm with its activation) and squeeze_excite.cc (the whole squeeze-and-excite
// block) are compiled into the same library and use parallel_blocks, sum_floats and dot_floats.
//
// Depthwise: MindSpore runs it through oneDNN's GEMM path, one tiny GEMM per (image, channel);
// these loops run fwd+bwd 1.5-8x faster on MobileNet layer shapes. Each plane
// (image, channel) is copied into a zero-padded buffer so that the inner loops have no bounds
// tests, and the kernel size and stride are template constants so the compiler unrolls the taps
// and vectorises along the output row. Stride-2 layers split the padded plane into its four
// phases (even/odd rows and columns) so that every tap reads contiguously (fwd+bwd 1.3-3x faster
// than stride-2 loads on 28x28 and 14x14 maps). Planes are independent and every sum runs in a
// fixed order, so results do not depend on the number of threads (bitwise reproducible runs).
//
// Depthwise cfg (int32[4]): stride, pad mode (0: explicit, 1: TensorFlow "same"), explicit
// padding, threads. The channel kernels take cfg int32[1]: threads.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

namespace {

struct Geometry {
  int64_t n, c, h, w, oh, ow, k, hp, wp;
  int s, pt, pl, threads;
};

Geometry make_geometry(const int64_t* x, const int64_t* weight, const int64_t* y, const int* cfg) {
  Geometry g;
  g.n = x[0]; g.c = x[1]; g.h = x[2]; g.w = x[3];
  g.k = weight[2]; g.oh = y[2]; g.ow = y[3];
  g.s = cfg[0];
  if (cfg[1] == 1) {  // "same": the odd padding row/column goes after (bottom/right)
    g.pt = static_cast<int>(std::max<int64_t>((g.oh - 1) * g.s + g.k - g.h, 0) / 2);
    g.pl = static_cast<int>(std::max<int64_t>((g.ow - 1) * g.s + g.k - g.w, 0) / 2);
  } else {
    g.pt = g.pl = cfg[2];
  }
  g.threads = std::max(1, cfg[3]);
  g.hp = std::max((g.oh - 1) * g.s + g.k, g.h + g.pt);
  g.wp = std::max((g.ow - 1) * g.s + g.k, g.w + g.pl);
  return g;
}

// fn(begin, end, worker) over [0, count) in contiguous blocks, on the calling thread plus up to
// threads-1 short-lived ones. Not OpenMP: its idle workers spin after each region and take the
// cores from MindSpore's own pool, which runs the next op. Small jobs stay on one thread.
template <typename Fn>
void parallel_for(int64_t count, int threads, int64_t work, Fn fn) {
  const int64_t kMinWorkPerThread = 1 << 18;  // multiply-adds
  int64_t n = std::min<int64_t>({static_cast<int64_t>(threads), count, std::max<int64_t>(1, work / kMinWorkPerThread)});
  if (n <= 1) { fn(0, count, 0); return; }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n; ++t) pool.emplace_back(fn, count * t / n, count * (t + 1) / n, static_cast<int>(t));
  fn(0, count / n, 0);
  for (auto& th : pool) th.join();
}

}  // namespace

// parallel_for for the other source files of this library (a std::function: one call per op).
namespace mindcv_kernels {
void parallel_blocks(int64_t count, int threads, int64_t work, const std::function<void(int64_t, int64_t)>& fn) {
  parallel_for(count, threads, work, [&fn](int64_t begin, int64_t end, int) { fn(begin, end); });
}
}  // namespace mindcv_kernels

namespace {

void pad_plane(const Geometry& g, const float* src, float* dst) {
  std::memset(dst, 0, sizeof(float) * g.hp * g.wp);
  for (int64_t i = 0; i < g.h; ++i) std::memcpy(dst + (i + g.pt) * g.wp + g.pl, src + i * g.w, sizeof(float) * g.w);
}

template <int K, int S>
void forward_plane(const Geometry& g, const float* xp, const float* wc, float* y) {
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    float* yr = y + oh * g.ow;
    for (int64_t j = 0; j < g.ow; ++j) yr[j] = 0.f;
    for (int kh = 0; kh < K; ++kh) {
      const float* xr = xp + (oh * S + kh) * g.wp;
      for (int kw = 0; kw < K; ++kw) {
        const float wv = wc[kh * K + kw];
        const float* xk = xr + kw;
        for (int64_t j = 0; j < g.ow; ++j) yr[j] += wv * xk[j * S];
      }
    }
  }
}

template <int K, int S>
void backward_data_plane(const Geometry& g, const float* dy, const float* wc, float* dxp) {
  std::memset(dxp, 0, sizeof(float) * g.hp * g.wp);
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    const float* dr = dy + oh * g.ow;
    for (int kh = 0; kh < K; ++kh) {
      float* xr = dxp + (oh * S + kh) * g.wp;
      for (int kw = 0; kw < K; ++kw) {
        const float wv = wc[kh * K + kw];
        float* xk = xr + kw;
        for (int64_t j = 0; j < g.ow; ++j) xk[j * S] += wv * dr[j];
      }
    }
  }
}

// acc: K*K rows of ow partial sums (vectorisable, no horizontal reduction in the hot loop).
template <int K, int S>
void backward_weight_plane(const Geometry& g, const float* dy, const float* xp, float* acc) {
  for (int64_t oh = 0; oh < g.oh; ++oh) {
    const float* dr = dy + oh * g.ow;
    for (int kh = 0; kh < K; ++kh) {
      const float* xr = xp + (oh * S + kh) * g.wp;
      for (int kw = 0; kw < K; ++kw) {
        float* a = acc + (kh * K + kw) * g.ow;
        const float* xk = xr + kw;
        for (int64_t j = 0; j < g.ow; ++j) a[j] += dr[j] * xk[j * S];
      }
    }
  }
}

// Stride 1 on narrow maps: rows of 7 or 14 outputs leave most of each vector idle and spend
// the time in loop overhead. There every tap is one pass over the plane flattened to rows of the
// padded width wp ("flat"), L = (oh-1)*wp + ow elements, computing wp-ow junk columns per row
// that are dropped (forward) or held at zero (gradients).
constexpr int64_t kFlatMaxWidth = 32;

inline int64_t flat_length(const Geometry& g) { return (g.oh - 1) * g.wp + g.ow; }

// dy rows into a grid of rows `stride` wide whose junk columns stay zero.
inline void spread_rows(const Geometry& g, const float* dy, float* dyf, int64_t stride) {
  for (int64_t oh = 0; oh < g.oh; ++oh) std::memcpy(dyf + oh * stride, dy + oh * g.ow, sizeof(float) * g.ow);
}

template <int K>
void forward_plane_flat(const Geometry& g, const float* xp, const float* wc, float* y, float* yf) {
  const int64_t len = flat_length(g);
  for (int64_t j = 0; j < len; ++j) yf[j] = 0.f;
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const float wv = wc[kh * K + kw];
      const float* src = xp + kh * g.wp + kw;
      for (int64_t j = 0; j < len; ++j) yf[j] += wv * src[j];
    }
  for (int64_t oh = 0; oh < g.oh; ++oh) std::memcpy(y + oh * g.ow, yf + oh * g.wp, sizeof(float) * g.ow);
}

template <int K>
void backward_data_plane_flat(const Geometry& g, const float* dyf, const float* wc, float* dxp) {
  const int64_t len = flat_length(g);
  std::memset(dxp, 0, sizeof(float) * g.hp * g.wp);
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const float wv = wc[kh * K + kw];
      float* dst = dxp + kh * g.wp + kw;
      for (int64_t j = 0; j < len; ++j) dst[j] += wv * dyf[j];
    }
}

template <int K>
void backward_weight_plane_flat(const Geometry& g, const float* dyf, const float* xp, float* acc) {
  const int64_t len = flat_length(g);
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      float* a = acc + (kh * K + kw) * len;
      const float* src = xp + kh * g.wp + kw;
      for (int64_t j = 0; j < len; ++j) a[j] += dyf[j] * src[j];
    }
}

// Stride 2: the padded plane split into its four phases (even/odd rows x even/odd columns), each
// ph x pw = (hp+1)/2 x (wp+1)/2. Tap (kh, kw) reads phase (kh % 2, kw % 2) from offset
// (kh / 2) * pw + kw / 2, so every tap is one contiguous pass of L = (oh-1)*pw + ow elements, as
// in the flat stride-1 path (pw-ow junk columns per row), instead of a stride-2 load per output.
struct Phases {
  int64_t ph, pw, size, len;
};

constexpr int64_t kPhaseWeightMaxWidth = 16;

inline Phases make_phases(const Geometry& g) {
  Phases f;
  f.ph = (g.hp + 1) / 2;
  f.pw = (g.wp + 1) / 2;
  f.size = f.ph * f.pw;
  f.len = (g.oh - 1) * f.pw + g.ow;
  return f;
}

inline const float* phase_at(const Phases& f, const float* phases, int kh, int kw) {
  return phases + (2 * (kh & 1) + (kw & 1)) * f.size + (kh >> 1) * f.pw + (kw >> 1);
}

// Plane (h x w) <-> the four phases of its zero-padded version. to_phases: split (the padding
// zeroed); otherwise gather the plane back from the phases (the padding dropped).
void move_phases(const Geometry& g, const Phases& f, const float* plane, float* phases, bool to_phases,
                 float* out_plane) {
  if (to_phases) std::memset(phases, 0, sizeof(float) * 4 * f.size);
  for (int64_t i = 0; i < g.h; ++i) {
    const int64_t r = i + g.pt;
    for (int b = 0; b < 2; ++b) {
      const int64_t j0 = (b - g.pl) & 1;  // first column landing in column phase b
      const int64_t count = (g.w - j0 + 1) / 2;
      float* ph = phases + (2 * (r & 1) + b) * f.size + (r >> 1) * f.pw + ((j0 + g.pl) >> 1);
      if (to_phases) {
        const float* row = plane + i * g.w + j0;
        for (int64_t k = 0; k < count; ++k) ph[k] = row[2 * k];
      } else {
        float* row = out_plane + i * g.w + j0;
        for (int64_t k = 0; k < count; ++k) row[2 * k] = ph[k];
      }
    }
  }
}

template <int K>
void forward_plane_phases(const Geometry& g, const Phases& f, const float* phases, const float* wc, float* y,
                          float* yf) {
  for (int64_t j = 0; j < f.len; ++j) yf[j] = 0.f;
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const float wv = wc[kh * K + kw];
      const float* src = phase_at(f, phases, kh, kw);
      for (int64_t j = 0; j < f.len; ++j) yf[j] += wv * src[j];
    }
  for (int64_t oh = 0; oh < g.oh; ++oh) std::memcpy(y + oh * g.ow, yf + oh * f.pw, sizeof(float) * g.ow);
}

template <int K>
void backward_data_plane_phases(const Phases& f, const float* dyf, const float* wc, float* dphases) {
  std::memset(dphases, 0, sizeof(float) * 4 * f.size);
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      const float wv = wc[kh * K + kw];
      float* dst = const_cast<float*>(phase_at(f, dphases, kh, kw));
      for (int64_t j = 0; j < f.len; ++j) dst[j] += wv * dyf[j];
    }
}

template <int K>
void backward_weight_plane_phases(const Phases& f, const float* dyf, const float* phases, float* acc) {
  for (int kh = 0; kh < K; ++kh)
    for (int kw = 0; kw < K; ++kw) {
      float* a = acc + (kh * K + kw) * f.len;
      const float* src = phase_at(f, phases, kh, kw);
      for (int64_t j = 0; j < f.len; ++j) a[j] += dyf[j] * src[j];
    }
}

template <int K, int S>
void forward(const Geometry& g, const float* x, const float* w, float* y) {
  parallel_for(g.n * g.c, g.threads, g.n * g.c * g.oh * g.ow * K * K, [&](int64_t begin, int64_t end, int) {
    if (S == 2) {
      const Phases f = make_phases(g);
      std::vector<float> phases(4 * f.size), yf(f.len);
      for (int64_t p = begin; p < end; ++p) {
        move_phases(g, f, x + p * g.h * g.w, phases.data(), true, nullptr);
        forward_plane_phases<K>(g, f, phases.data(), w + (p % g.c) * K * K, y + p * g.oh * g.ow, yf.data());
      }
      return;
    }
    std::vector<float> buf(g.hp * g.wp);
    const bool flat = S == 1 && g.ow <= kFlatMaxWidth;
    std::vector<float> yf(flat ? g.oh * g.wp : 0);
    for (int64_t p = begin; p < end; ++p) {
      pad_plane(g, x + p * g.h * g.w, buf.data());
      if (flat) forward_plane_flat<K>(g, buf.data(), w + (p % g.c) * K * K, y + p * g.oh * g.ow, yf.data());
      else forward_plane<K, S>(g, buf.data(), w + (p % g.c) * K * K, y + p * g.oh * g.ow);
    }
  });
}

template <int K, int S>
void backward_data(const Geometry& g, const float* dy, const float* w, float* dx) {
  parallel_for(g.n * g.c, g.threads, g.n * g.c * g.oh * g.ow * K * K, [&](int64_t begin, int64_t end, int) {
    if (S == 2) {
      const Phases f = make_phases(g);
      std::vector<float> dphases(4 * f.size), dyf(g.oh * f.pw, 0.f);
      for (int64_t p = begin; p < end; ++p) {
        spread_rows(g, dy + p * g.oh * g.ow, dyf.data(), f.pw);
        backward_data_plane_phases<K>(f, dyf.data(), w + (p % g.c) * K * K, dphases.data());
        move_phases(g, f, nullptr, dphases.data(), false, dx + p * g.h * g.w);
      }
      return;
    }
    std::vector<float> buf(g.hp * g.wp);
    const bool flat = S == 1 && g.ow <= kFlatMaxWidth;
    std::vector<float> dyf(flat ? g.oh * g.wp : 0, 0.f);
    for (int64_t p = begin; p < end; ++p) {
      if (flat) {
        spread_rows(g, dy + p * g.oh * g.ow, dyf.data(), g.wp);
        backward_data_plane_flat<K>(g, dyf.data(), w + (p % g.c) * K * K, buf.data());
      } else {
        backward_data_plane<K, S>(g, dy + p * g.oh * g.ow, w + (p % g.c) * K * K, buf.data());
      }
      float* dst = dx + p * g.h * g.w;
      for (int64_t i = 0; i < g.h; ++i)
        std::memcpy(dst + i * g.w, buf.data() + (i + g.pt) * g.wp + g.pl, sizeof(float) * g.w);
    }
  });
}

template <int K, int S>
void backward_weight(const Geometry& g, const float* dy, const float* x, float* dw) {
  parallel_for(g.c, g.threads, g.n * g.c * g.oh * g.ow * K * K, [&](int64_t begin, int64_t end, int) {
    const Phases f = make_phases(g);
    // Phases for the weight gradient of narrow maps only: at 28 outputs wide the K*K partial-sum
    // rows outgrow L1 and the strided row-by-row loop is faster (measured 5.5 vs 7.3 ms, 72ch).
    const bool phased = S == 2 && g.ow <= kPhaseWeightMaxWidth;
    const bool flat = S == 1 && g.ow <= kFlatMaxWidth;
    std::vector<float> buf(phased ? 4 * f.size : g.hp * g.wp);
    const int64_t row = phased ? f.len : (flat ? flat_length(g) : g.ow);  // partial sums per tap
    std::vector<float> acc(K * K * row);
    std::vector<float> dyf(phased ? g.oh * f.pw : (flat ? g.oh * g.wp : 0), 0.f);
    for (int64_t c = begin; c < end; ++c) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t n = 0; n < g.n; ++n) {
        const int64_t p = n * g.c + c;
        if (phased) {
          move_phases(g, f, x + p * g.h * g.w, buf.data(), true, nullptr);
          spread_rows(g, dy + p * g.oh * g.ow, dyf.data(), f.pw);
          backward_weight_plane_phases<K>(f, dyf.data(), buf.data(), acc.data());
          continue;
        }
        pad_plane(g, x + p * g.h * g.w, buf.data());
        if (flat) {
          spread_rows(g, dy + p * g.oh * g.ow, dyf.data(), g.wp);
          backward_weight_plane_flat<K>(g, dyf.data(), buf.data(), acc.data());
        } else {
          backward_weight_plane<K, S>(g, dy + p * g.oh * g.ow, buf.data(), acc.data());
        }
      }
      for (int t = 0; t < K * K; ++t) {
        float sum = 0.f;
        for (int64_t j = 0; j < row; ++j) sum += acc[t * row + j];
        dw[c * K * K + t] = sum;
      }
    }
  });
}

// The (kernel, stride) pairs MobileNets use; others return 1 (the Python side never sends them).
#define DISPATCH(FN, g, ...)                                  \
  do {                                                        \
    if (g.k == 3 && g.s == 1) FN<3, 1>(g, __VA_ARGS__);       \
    else if (g.k == 3 && g.s == 2) FN<3, 2>(g, __VA_ARGS__);  \
    else if (g.k == 5 && g.s == 1) FN<5, 1>(g, __VA_ARGS__);  \
    else if (g.k == 5 && g.s == 2) FN<5, 2>(g, __VA_ARGS__);  \
    else if (g.k == 7 && g.s == 1) FN<7, 1>(g, __VA_ARGS__);  \
    else if (g.k == 7 && g.s == 2) FN<7, 2>(g, __VA_ARGS__);  \
    else return 1;                                            \
  } while (0)

}  // namespace

// x (N,C,H,W), weight (C,1,K,K), cfg -> y (N,C,OH,OW)
extern "C" int DepthwiseForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  if (nparam != 4) return 1;
  const Geometry g = make_geometry(shapes[0], shapes[1], shapes[3], static_cast<const int*>(params[2]));
  DISPATCH(forward, g, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
           static_cast<float*>(params[3]));
  return 0;
}

// dy (N,C,OH,OW), weight (C,1,K,K), cfg, x (shape only) -> dx (N,C,H,W)
extern "C" int DepthwiseBackwardData(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                     void* stream, void* extra) {
  if (nparam != 5) return 1;
  const Geometry g = make_geometry(shapes[3], shapes[1], shapes[0], static_cast<const int*>(params[2]));
  DISPATCH(backward_data, g, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
           static_cast<float*>(params[4]));
  return 0;
}

// dy (N,C,OH,OW), x (N,C,H,W), cfg, weight (shape only) -> dweight (C,1,K,K)
extern "C" int DepthwiseBackwardWeight(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                       void* stream, void* extra) {
  if (nparam != 5) return 1;
  const Geometry g = make_geometry(shapes[1], shapes[3], shapes[0], static_cast<const int*>(params[2]));
  DISPATCH(backward_weight, g, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
           static_cast<float*>(params[4]));
  return 0;
}

// ---- per-channel mean and scale (squeeze-and-excite) ----------------------------------------
namespace {

// Sum of n floats in a fixed order: 8 interleaved partial sums (vectorisable), then combined.
inline float plane_sum(const float* x, int64_t n) {
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) part[k] += x[i + k];
  float sum = 0.f;
  for (; i < n; ++i) sum += x[i];
  for (int k = 0; k < 8; ++k) sum += part[k];
  return sum;
}

inline float plane_dot(const float* x, const float* y, int64_t n) {
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) part[k] += x[i + k] * y[i + k];
  float sum = 0.f;
  for (; i < n; ++i) sum += x[i] * y[i];
  for (int k = 0; k < 8; ++k) sum += part[k];
  return sum;
}

}  // namespace

// The same sums for the other source files of this library.
namespace mindcv_kernels {
float sum_floats(const float* x, int64_t n) { return plane_sum(x, n); }
float dot_floats(const float* x, const float* y, int64_t n) { return plane_dot(x, y, n); }
}  // namespace mindcv_kernels

// x (N,C,H,W), cfg -> mean (N,C,1,1)
extern "C" int ChannelMean(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                           void* stream, void* extra) {
  if (nparam != 3 || ndims[0] != 4) return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* mean = static_cast<float*>(params[2]);
  const int64_t planes = shapes[0][0] * shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const int threads = std::max(1, static_cast<const int*>(params[1])[0]);
  parallel_for(planes, threads, planes * hw, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) mean[p] = plane_sum(x + p * hw, hw) / static_cast<float>(hw);
  });
  return 0;
}

// dmean (N,C,1,1), cfg, x (shape only) -> dx (N,C,H,W) = dmean / (H*W) everywhere
extern "C" int ChannelMeanBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                   void* stream, void* extra) {
  if (nparam != 4 || ndims[2] != 4) return 1;
  const float* dmean = static_cast<const float*>(params[0]);
  float* dx = static_cast<float*>(params[3]);
  const int64_t planes = shapes[2][0] * shapes[2][1], hw = shapes[2][2] * shapes[2][3];
  const int threads = std::max(1, static_cast<const int*>(params[1])[0]);
  parallel_for(planes, threads, planes * hw, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) {
      const float v = dmean[p] / static_cast<float>(hw);
      float* row = dx + p * hw;
      for (int64_t i = 0; i < hw; ++i) row[i] = v;
    }
  });
  return 0;
}

// x (N,C,H,W), s (N,C,1,1), cfg -> y = x * s
extern "C" int ChannelScale(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                            void* stream, void* extra) {
  if (nparam != 4 || ndims[0] != 4) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* scale = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[3]);
  const int64_t planes = shapes[0][0] * shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const int threads = std::max(1, static_cast<const int*>(params[2])[0]);
  parallel_for(planes, threads, planes * hw, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) {
      const float v = scale[p];
      const float* src = x + p * hw;
      float* dst = y + p * hw;
      for (int64_t i = 0; i < hw; ++i) dst[i] = src[i] * v;
    }
  });
  return 0;
}

// dy (N,C,H,W), x (N,C,H,W), s (N,C,1,1), cfg -> dx = dy * s, ds = sum over H,W of dy * x
extern "C" int ChannelScaleBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                    void* stream, void* extra) {
  if (nparam != 6 || ndims[0] != 4) return 1;
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* scale = static_cast<const float*>(params[2]);
  float* dx = static_cast<float*>(params[4]);
  float* ds = static_cast<float*>(params[5]);
  const int64_t planes = shapes[0][0] * shapes[0][1], hw = shapes[0][2] * shapes[0][3];
  const int threads = std::max(1, static_cast<const int*>(params[3])[0]);
  parallel_for(planes, threads, 2 * planes * hw, [&](int64_t begin, int64_t end, int) {
    for (int64_t p = begin; p < end; ++p) {
      const float v = scale[p];
      const float* g = dy + p * hw;
      float* dst = dx + p * hw;
      for (int64_t i = 0; i < hw; ++i) dst[i] = g[i] * v;
      ds[p] = plane_dot(g, x + p * hw, hw);
    }
  });
  return 0;
}

// ---- hard-swish (MobileNetV3) -----------------------------------------------------------------
namespace {

int64_t element_count(const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

constexpr int64_t kElementBlock = 1 << 14;

}  // namespace

// x (any shape), cfg -> y = x * relu6(x + 3) / 6
extern "C" int HardSwish(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                         void* stream, void* extra) {
  if (nparam != 3) return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[2]);
  const int64_t n = element_count(shapes[0], ndims[0]);
  const int threads = std::max(1, static_cast<const int*>(params[1])[0]);
  const int64_t blocks = (n + kElementBlock - 1) / kElementBlock;
  parallel_for(blocks, threads, n, [&](int64_t begin, int64_t end, int) {
    const int64_t stop = std::min(n, end * kElementBlock);
    for (int64_t i = begin * kElementBlock; i < stop; ++i) {
      const float v = x[i];
      y[i] = v * std::min(std::max(v + 3.f, 0.f), 6.f) * (1.f / 6.f);
    }
  });
  return 0;
}

// dy, x, cfg -> dx = dy * (0 for x < -3, x / 3 + 1/2 for -3 <= x <= 3, 1 for x > 3): MindSpore's
// HSwishGrad, boundaries included
extern "C" int HardSwishBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  if (nparam != 4) return 1;
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[3]);
  const int64_t n = element_count(shapes[0], ndims[0]);
  const int threads = std::max(1, static_cast<const int*>(params[2])[0]);
  const int64_t blocks = (n + kElementBlock - 1) / kElementBlock;
  parallel_for(blocks, threads, n, [&](int64_t begin, int64_t end, int) {
    const int64_t stop = std::min(n, end * kElementBlock);
    for (int64_t i = begin * kElementBlock; i < stop; ++i) {
      const float v = x[i];
      const float slope = v < -3.f ? 0.f : (v > 3.f ? 1.f : v * (1.f / 3.f) + 0.5f);
      dx[i] = dy[i] * slope;
    }
  });
  return 0;
}
