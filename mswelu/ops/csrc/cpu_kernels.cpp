// CPU kernels for the places where a Mamba-SWELU training step spends its non-matmul time: the selective
// scan, the mixer's depthwise causal convolution (channels-last, so that the mixer needs no transposed
// copies), SWELU (each forward and backward) and the cross-entropy of the fused LM head + loss.
//
// All are written with ATen's Vectorized<T> (AVX-512, AVX2 or the generic fallback, chosen by the build
// flags that mswelu/ops/cpu_kernels.py passes) and run in parallel over torch's threads (at::parallel_for).
// Their references are the pure-PyTorch code in mswelu/ops/selective_scan.py, causal_conv.py, swelu.py and
// lm_loss.py; tests/test_cpu_kernels.py holds them to it (values and every gradient, fp32 and fp64).
//
// Selective scan (Mamba-1 with input-dependent B and C; the recurrence is in selective_scan.py):
//   one work item is one batch row and W consecutive channels (W = the lanes of a vector), so the state
//   (N vectors of W channels) stays in registers for the whole sequence and exp(delta * A) is never
//   stored. The forward keeps the state at every chunk start; the backward recomputes one chunk's states
//   into a small buffer and runs the adjoint recurrence through it. Sums over channels (the gradients of B
//   and C) and over the batch (of A, D and the delta bias) go into per-thread buffers that the caller adds
//   up, so the result does not depend on how the work was scheduled.
//   An optional gate z multiplies the output by act(z) (SiLU, as mamba_ssm's kernel does, SWELU or Swish-beta:
//   an activation epilogue, ScanGate), forward and backward, the shape parameters' gradients summed in the pass.
//   Layouts: u, delta and gout (and z) are (batch, length, channels) with unit channel stride; B and C are
//   (batch, length, N) with any strides; A comes transposed, (N, channels).
//   Dtypes: fp32 or fp64 throughout; or u, delta, gout and the outputs y, du, ddelta in bf16 (what the
//   mixer has under bf16 autocast) with everything else, the state and the arithmetic in fp32: the same
//   numbers as converting them to fp32 first and rounding the results, without the copies.
//
// Causal conv1d: y[b, t, c] = bias[c] + sum_j w[c, j] x[b, t - K + 1 + j, c], channels-last (x a slice of
//   in_proj's output), x and y in x's dtype (bf16 under autocast), weights and arithmetic in fp32.
//
// SWELU: lam * sign(z) * (1 - exp(-|z|^k)) with scalar k and lam, computed in fp32 (fp64 for fp64 z)
//   from z of any floating dtype, with the closed-form backward and the guards of swelu.py.

#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;
template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
inline Vec<T> softplus(const Vec<T>& x) {
  // torch.nn.functional.softplus with beta 1 and threshold 20
  return Vec<T>::blendv(x.exp().log1p(), x, x > Vec<T>(T(20)));
}

template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  return Vec<T>(T(1)) / (Vec<T>(T(1)) + x.neg().exp());
}

template <typename T>
inline void accumulate(T* p, const Vec<T>& v, int64_t count = Vec<T>::size()) {
  (Vec<T>::loadu(p, count) + v).store(p, count);
}

// Strided (batch, length, N) matrix: B or C of the scan.
template <typename T>
struct Strided3 {
  const T* p;
  int64_t s0, s1, s2;
  inline T at(int64_t b, int64_t t, int64_t n) const { return p[b * s0 + t * s1 + n * s2]; }
};

template <typename T>
Strided3<T> strided3(const Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2)};
}

// p[0:count] -> compute-type vector, zero-filled past count. Half-precision inputs are converted by ATen's
// vector conversions (one instruction a vector on AVX-512 / AVX2), not one element at a time.
template <typename scalar_t, typename opmath_t>
inline Vec<opmath_t> load_op(const scalar_t* p, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    return Vec<opmath_t>::loadu(p, count);
  } else {
    static_assert(Vec<scalar_t>::size() == 2 * Vec<opmath_t>::size());
    return std::get<0>(at::vec::convert_to_float<scalar_t>(Vec<scalar_t>::loadu(p, count)));
  }
}

// v[0:count] -> p[0:count], rounded to nearest even for half-precision outputs
template <typename scalar_t, typename opmath_t>
inline void store_op(scalar_t* p, const Vec<opmath_t>& v, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, opmath_t>) {
    v.store(p, count);
  } else {
    at::vec::convert_from_float<scalar_t>(v, v).store(p, count);
  }
}

// ------------------------------------------------------------------------------------------ SWELU

template <typename T>
inline Vec<T> sign_of(const Vec<T>& z) {
  const Vec<T> one(T(1)), zero(T(0));
  return Vec<T>::blendv(zero, one, z > zero) - Vec<T>::blendv(zero, one, z < zero);
}

// v, with NaN wherever x is NaN
template <typename V>
inline V nan_from(const V& x, const V& v) {
  return V::blendv(v, x, x != x);
}

// SWELU's exponentials. For half-precision z (bf16, fp16) the results are rounded to 8 or 11 significant bits,
// so `fast` uses ATen's exp_u20 (about 20 fp32 ulps, the exp of its own bf16 softmax) and a short series for
// 1 - exp(-p) at small p, instead of Sleef's full-precision exp and expm1; fp32 and fp64 keep full precision.
// exp_u20 saturates (inf -> FLT_MAX) and does not propagate NaN: callers put NaN back (nan_from).
template <bool fast, typename V>
inline V exp_of(const V& x) {
  if constexpr (fast) {
    return x.exp_u20();
  } else {
    return x.exp();
  }
}

// 1 - exp(-p) for p >= 0 (or NaN)
template <bool fast, typename V>
inline V one_minus_exp_neg(const V& p) {
  using T = typename V::value_type;
  if constexpr (fast) {
    // below 1/16 the series p (1 - p/2 + p^2/6) is within 1.1e-5 relative; above, 1 - exp_u20(-p) is within
    // 4e-5 relative (exp_u20's ~2.4e-6 absolute error on a result >= 0.06)
    const V one(T(1)), half(T(0.5)), sixth(T(1) / T(6)), cut(T(1) / T(16));
    const V series = p * (one - p * (half - p * sixth));
    return nan_from(p, V::blendv(one - p.neg().exp_u20(), series, p < cut));
  } else {
    return p.neg().expm1().neg();
  }
}

// SWELU of one vector of z (already in the compute dtype): the forward of swelu_fwd and of the conv's epilogue
template <bool fast, typename V>
inline V swelu_vec(const V& zv, const V& kv, const V& lamv) {
  const V p = exp_of<fast>(zv.abs().log() * kv);  // |z|^k: 0 at z = 0, inf (or max) at |z| = inf
  const V y = sign_of(zv) * one_minus_exp_neg<fast>(p) * lamv;
  return fast ? nan_from(zv, y) : y;
}

// SWELU's closed-form backward for one vector (swelu_bwd and the conv's epilogue share it, so that both give
// the same bits): returns dz (saturated for half-precision z) and adds the k and lam terms to acc_k, acc_lam.
template <typename scalar_t, typename op_t = at::opmath_type<scalar_t>>
struct SweluGrad {
  static constexpr bool reduced = !std::is_same_v<scalar_t, op_t>, fast = reduced;
  Vec<op_t> kv, lamv, epsv, chordv, zero, maxv, log_tiny, log_big;
  SweluGrad(double k, double lam, double zero_eps) {
    const op_t eps = static_cast<op_t>(zero_eps);
    // the mean slope over [0, eps], used inside the zero cell (swelu.py explains why)
    const op_t chord = -std::expm1(-std::exp(static_cast<op_t>(k) * std::log(eps))) / eps;
    // half-precision gradients saturate at the dtype's largest finite value
    const op_t out_max = reduced ? static_cast<op_t>(std::numeric_limits<scalar_t>::max())
                                 : std::numeric_limits<op_t>::infinity();
    kv = Vec<op_t>(static_cast<op_t>(k));
    lamv = Vec<op_t>(static_cast<op_t>(lam));
    epsv = Vec<op_t>(eps);
    chordv = Vec<op_t>(chord);
    zero = Vec<op_t>(op_t(0));
    maxv = Vec<op_t>(out_max);
    // log(clamp(|z|, tiny, max)) as a clamp of log|z|: log is monotonic, so one log serves both uses
    log_tiny = Vec<op_t>(std::log(std::numeric_limits<op_t>::min()));
    log_big = Vec<op_t>(std::log(std::numeric_limits<op_t>::max()));
  }
  inline Vec<op_t> operator()(const Vec<op_t>& zv, const Vec<op_t>& gv, bool need_k, bool need_lam,
                              Vec<op_t>& acc_k, Vec<op_t>& acc_lam) const {
    const Vec<op_t> a = zv.abs();
    const Vec<op_t> la = a.log();
    const Vec<op_t> p = fast ? nan_from(zv, exp_of<fast>(la * kv)) : exp_of<fast>(la * kv);
    const Vec<op_t> e = exp_of<fast>(p.neg());
    // p * e, exactly 0 where exp(-p) underflowed (huge |z|, inf): no inf * 0
    const Vec<op_t> pe = Vec<op_t>::blendv(p * e, zero, e == zero);
    const Vec<op_t> glam = gv * lamv;
    const Vec<op_t> slope = Vec<op_t>::blendv(pe / at::vec::maximum(a, epsv) * kv, chordv, a < epsv);
    Vec<op_t> dz = slope * glam;
    if constexpr (reduced) dz = at::vec::clamp(dz, maxv.neg(), maxv);
    const Vec<op_t> sgn = sign_of(zv);
    if (need_k) acc_k = acc_k + at::vec::clamp(la, log_tiny, log_big) * pe * sgn * glam;
    if (need_lam) acc_lam = acc_lam + one_minus_exp_neg<fast>(p) * sgn * gv;
    return dz;
  }
};

constexpr int64_t kSweluGrain = 1 << 14;

// SWELU takes z as (rows, cols) with unit column stride and any row stride (a slice of a wider tensor, as
// the mixer's conv output and gate are) and returns contiguous (rows, cols) results.
void check_rows(const Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && (x.size(1) <= 1 || x.stride(1) == 1), "mswelu CPU SWELU: ",
              what, " must be a (rows, cols) CPU tensor with unit column stride");
}

// Runs f(row pointer offset into z, row pointer offset into the output, count) over every row in pieces of
// about kSweluGrain elements, in parallel.
template <typename F>
void for_rows(const Tensor& z, const F& f) {
  const int64_t rows = z.size(0), cols = z.size(1), zs = z.stride(0);
  if (rows == 0 || cols == 0) return;
  const int64_t grain_rows = std::max<int64_t>(1, kSweluGrain / cols);
  at::parallel_for(0, rows, grain_rows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r * zs, r * cols, cols);
  });
}

Tensor swelu_fwd(const Tensor& z, double k, double lam) {
  check_rows(z, "z");
  Tensor y = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "mswelu_swelu_fwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    constexpr int64_t W = Vec<op_t>::size();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    constexpr bool fast = !std::is_same_v<scalar_t, op_t>;
    const Vec<op_t> kv(static_cast<op_t>(k)), lamv(static_cast<op_t>(lam));
    for_rows(z, [&](int64_t zoff, int64_t yoff, int64_t n) {
      for (int64_t i = 0; i < n; i += W) {
        const int64_t count = std::min(W, n - i);
        const Vec<op_t> zv = load_op<scalar_t, op_t>(zp + zoff + i, count);
        store_op<scalar_t, op_t>(yp + yoff + i, swelu_vec<fast>(zv, kv, lamv), count);
      }
    });
  });
  return y;
}

// -> (dz, dk, dlam): dk and dlam summed over every element (0-dim, compute dtype). g is (rows, cols) like z,
// with a row stride of its own.
std::vector<Tensor> swelu_bwd(const Tensor& z, const Tensor& g, double k, double lam, double zero_eps,
                              bool need_k, bool need_lam) {
  check_rows(z, "z");
  check_rows(g, "the gradient");
  TORCH_CHECK(g.sizes() == z.sizes() && g.scalar_type() == z.scalar_type(),
              "mswelu CPU SWELU: z and the gradient must have one shape and dtype");
  Tensor gz = at::empty(z.sizes(), z.options());
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "mswelu_swelu_bwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    constexpr int64_t W = Vec<op_t>::size();
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const int64_t gs = g.size(0) > 0 ? g.stride(0) : 0;
    scalar_t* gzp = gz.data_ptr<scalar_t>();
    const SweluGrad<scalar_t> grad(k, lam, zero_eps);
    const int64_t threads = at::get_num_threads();
    std::vector<op_t> part_k(threads, op_t(0)), part_lam(threads, op_t(0));
    const int64_t cols = z.size(1);
    for_rows(z, [&](int64_t zoff, int64_t off, int64_t n) {
      const int64_t goff = (off / std::max<int64_t>(cols, 1)) * gs;
      Vec<op_t> acc_k(op_t(0)), acc_lam(op_t(0));
      for (int64_t i = 0; i < n; i += W) {
        const int64_t count = std::min(W, n - i);
        const Vec<op_t> zv = load_op<scalar_t, op_t>(zp + zoff + i, count);
        const Vec<op_t> gv = load_op<scalar_t, op_t>(gp + goff + i, count);
        store_op<scalar_t, op_t>(gzp + off + i, grad(zv, gv, need_k, need_lam, acc_k, acc_lam), count);
      }
      const int64_t tid = at::get_thread_num();
      op_t lanes[W];
      acc_k.store(lanes);
      for (int64_t j = 0; j < W; ++j) part_k[tid] += lanes[j];
      acc_lam.store(lanes);
      for (int64_t j = 0; j < W; ++j) part_lam[tid] += lanes[j];
    });
    op_t dk = 0, dlam = 0;
    for (int64_t t = 0; t < threads; ++t) {
      dk += part_k[t];
      dlam += part_lam[t];
    }
    const auto opts = z.options().dtype(c10::CppTypeToScalarType<op_t>::value);
    result = {gz, at::scalar_tensor(dk, opts), at::scalar_tensor(dlam, opts)};
  });
  return result;
}

// ------------------------------------------------------------------------------ activation epilogues

// An activation applied where another kernel writes its input or reads its gradient (the epilogues): the conv's
// output (causal_conv1d_act_*) and the scan's gate (selective_scan_* with a gate activation). Each element is
// computed exactly as the activation's own kernel computes it (SWELU by swelu_vec / SweluGrad, SiLU as ATen's
// vectorised silu, the values rounded to the activation's dtype where its own kernel would store them), and the
// k and lam sums go per row and lane into a buffer that sum_row_lanes adds up in swelu_bwd's order: the fused
// ops give the unfused ops' bits. Activations: kActSilu, kActSwelu (k, lam), kActSwish (beta in k's slot:
// z sigmoid(beta z), fp32 throughout, its beta sum in the kernels' own order: not the unfused ops' bits).
constexpr int64_t kActSilu = 1, kActSwelu = 2, kActSwish = 3;

// v rounded to IO's precision, as storing and re-reading it would give
template <typename IO, typename T>
inline Vec<T> round_io(const Vec<T>& v) {
  if constexpr (std::is_same_v<IO, T>) {
    return v;
  } else {
    return std::get<0>(at::vec::convert_to_float<IO>(at::vec::convert_from_float<IO>(v, v)));
  }
}

// The sum of (rows, W) per-row lane vectors, added as swelu_bwd adds its rows' accumulators: over for_rows'
// partition of the rows into threads, lane by lane into each thread's total, then the threads in order.
template <typename T>
T sum_row_lanes(int64_t rows, int64_t cols, const T* lanes) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t threads = at::get_num_threads();
  std::vector<T> part(threads, T(0));
  if (rows > 0 && cols > 0) {
    const int64_t grain_rows = std::max<int64_t>(1, kSweluGrain / cols);
    at::parallel_for(0, rows, grain_rows, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t tid = at::get_thread_num();
        for (int64_t j = 0; j < W; ++j) part[tid] += lanes[r * W + j];
      }
    });
  }
  T total = 0;
  for (int64_t t = 0; t < threads; ++t) total += part[t];
  return total;
}

template <typename T>
inline Vec<T> silu_vec(const Vec<T>& z) {
  const Vec<T> one(T(1));
  return z / (one + z.neg().exp());
}

// ATen's silu_backward, vectorised: g * s * (1 + z (1 - s))
template <typename T>
inline Vec<T> silu_grad_vec(const Vec<T>& z, const Vec<T>& g) {
  const Vec<T> one(T(1));
  const Vec<T> s = one / (one + z.neg().exp());
  return g * s * (one + z * (one - s));
}

// Swish-beta: y = z s, s = sigmoid(beta z); dy/dz = s (1 + beta z (1 - s)); dy/dbeta = z^2 s (1 - s)
template <typename T>
inline Vec<T> swish_vec(const Vec<T>& z, const Vec<T>& beta) {
  return z * sigmoid(beta * z);
}

// One activation (kAct*) for z of dtype scalar_t, computed in op_t: its value (unrounded) and its backward, the
// k and lam terms added to acc_k, acc_lam (SWELU's k and lam, Swish's beta as k) where asked for.
template <typename scalar_t, typename op_t = at::opmath_type<scalar_t>>
struct ActEpilogue {
  static constexpr bool fast = !std::is_same_v<scalar_t, op_t>;
  int64_t act;
  SweluGrad<scalar_t> swelu;  // holds k (or beta) and lam as vectors
  ActEpilogue(int64_t act, double k, double lam, double zero_eps) : act(act), swelu(k, lam, zero_eps) {
    TORCH_CHECK(act >= kActSilu && act <= kActSwish, "mswelu CPU kernels: unknown activation ", act);
  }
  // a forward's: it has no use for the zero cell of the backward's slope
  ActEpilogue(int64_t act, double k, double lam) : ActEpilogue(act, k, lam, 1.0) {}
  inline Vec<op_t> value(const Vec<op_t>& z) const {
    if (act == kActSilu) return silu_vec(z);
    if (act == kActSwish) return swish_vec(z, swelu.kv);
    return swelu_vec<fast>(z, swelu.kv, swelu.lamv);
  }
  inline Vec<op_t> grad(const Vec<op_t>& z, const Vec<op_t>& g, bool need_k, bool need_lam, Vec<op_t>& acc_k,
                        Vec<op_t>& acc_lam) const {
    if (act == kActSilu) return silu_grad_vec(z, g);
    if (act == kActSwish) {
      const Vec<op_t> one(op_t(1)), s = sigmoid(swelu.kv * z), gs1 = g * s * (one - s);
      if (need_k) acc_k = acc_k + gs1 * z * z;
      return at::vec::fmadd(gs1 * swelu.kv, z, g * s);
    }
    return swelu(z, g, need_k, need_lam, acc_k, acc_lam);
  }
  bool has_k() const { return act != kActSilu; }
  bool has_lam() const { return act == kActSwelu; }
};

// ------------------------------------------------------------------------------------ selective scan

// N state vectors: a fixed array (registers, unrolled loops) for the usual state sizes, else a vector.
template <typename T, int NS>
struct StateVecs {
  std::array<Vec<T>, NS> v;
  explicit StateVecs(int64_t) {}
  Vec<T>& operator[](int64_t i) { return v[i]; }
};
template <typename T>
struct StateVecs<T, 0> {
  std::vector<Vec<T>> v;
  explicit StateVecs(int64_t n) : v(n) {}
  Vec<T>& operator[](int64_t i) { return v[i]; }
};

// f(std::integral_constant<int, N>) for N in {4, 8, 16}, f(integral_constant<int, 0>) (any N) otherwise
template <typename F>
void dispatch_nstate(int64_t n, const F& f) {
  switch (n) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    default: f(std::integral_constant<int, 0>{});
  }
}

struct ScanShape {
  int64_t batch, length, channels, nstate, chunk, nchunks, nblocks;
};

// The gate: out = y * act(z) (an activation epilogue), z (batch, length, channels) of dtype ZT (u's, or the
// compute dtype) with unit channel stride and any batch / time strides (a slice of in_proj's output). y and
// act(z) are rounded to z's dtype before the product and the product to the output's: the scan's output times
// the activation's own kernel's output, as the mixer computed them apart (the same bits). No z: no gate.
template <typename ZT, typename T = at::opmath_type<ZT>>
struct ScanGate {
  const ZT* zp;
  int64_t sb, sl;
  ActEpilogue<ZT> ep;
  ScanGate(const c10::optional<Tensor>& z, int64_t act, double k, double lam, double zero_eps)
      : zp(z.has_value() ? z->data_ptr<ZT>() : nullptr),
        sb(z.has_value() ? z->stride(0) : 0),
        sl(z.has_value() ? z->stride(1) : 0),
        ep(act, k, lam, zero_eps) {}
  explicit operator bool() const { return zp != nullptr; }
  inline Vec<T> z_at(int64_t b, int64_t t, int64_t d0, int64_t w) const {
    return load_op<ZT, T>(zp + b * sb + t * sl + d0, w);
  }
  inline Vec<T> value(const Vec<T>& z) const { return round_io<ZT, T>(ep.value(z)); }
};

template <typename IO, typename ZT, int NS, typename T = at::opmath_type<IO>>
void scan_forward_impl(const Tensor& u, const Tensor& delta, const Tensor& At, const Tensor& Bm,
                       const Tensor& Cm, const T* Dp, const ScanGate<ZT>& gate, const T* biasp, bool use_softplus,
                       const ScanShape& s, Tensor& out, Tensor& last, Tensor& states) {
  constexpr int64_t W = Vec<T>::size();
  const IO* up = u.data_ptr<IO>();
  const IO* dp = delta.data_ptr<IO>();
  const T* Ap = At.data_ptr<T>();
  const auto Bs = strided3<T>(Bm), Cs = strided3<T>(Cm);
  const int64_t su_b = u.stride(0), su_l = u.stride(1), sd_b = delta.stride(0), sd_l = delta.stride(1);
  IO* outp = out.data_ptr<IO>();
  T* lastp = last.data_ptr<T>();
  T* statesp = states.data_ptr<T>();
  const int64_t N = NS > 0 ? NS : s.nstate, L = s.length, Dm = s.channels;

  at::parallel_for(0, s.batch * s.nblocks, 1, [&](int64_t begin, int64_t end) {
    StateVecs<T, NS> h(N), Av(N);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / s.nblocks, d0 = (item % s.nblocks) * W, w = std::min(W, Dm - d0);
      for (int64_t n = 0; n < N; ++n) {
        Av[n] = Vec<T>::loadu(Ap + n * Dm + d0, w);
        h[n] = Vec<T>(T(0));
      }
      const Vec<T> Dv = Dp ? Vec<T>::loadu(Dp + d0, w) : Vec<T>(T(0));
      const Vec<T> bias = biasp ? Vec<T>::loadu(biasp + d0, w) : Vec<T>(T(0));
      for (int64_t t = 0; t < L; ++t) {
        if (t % s.chunk == 0) {
          T* st = statesp + ((b * s.nchunks + t / s.chunk) * N) * Dm + d0;
          for (int64_t n = 0; n < N; ++n) h[n].store(st + n * Dm, w);
        }
        const Vec<T> x = load_op<IO, T>(up + b * su_b + t * su_l + d0, w);
        Vec<T> dt = load_op<IO, T>(dp + b * sd_b + t * sd_l + d0, w) + bias;
        if (use_softplus) dt = softplus(dt);
        const Vec<T> dtu = dt * x;
        Vec<T> y(T(0));
        for (int64_t n = 0; n < N; ++n) {
          h[n] = at::vec::fmadd((dt * Av[n]).exp(), h[n], dtu * Vec<T>(Bs.at(b, t, n)));
          y = at::vec::fmadd(h[n], Vec<T>(Cs.at(b, t, n)), y);
        }
        y = at::vec::fmadd(Dv, x, y);
        if (gate) y = round_io<ZT, T>(y) * gate.value(gate.z_at(b, t, d0, w));
        store_op<IO, T>(outp + (b * L + t) * Dm + d0, y, w);
      }
      for (int64_t n = 0; n < N; ++n) h[n].store(lastp + (b * N + n) * Dm + d0, w);
    }
  });
}

// Where the gate's k and lam terms go: per row (batch row x time step) and lane (k_rows, lam_rows: (B L, W); null
// where not asked for), a row's channel blocks added in order, as swelu_bwd adds them, by the thread that runs
// the row's first block (the work items of one batch row are consecutive, and a thread runs its items in order).
// A thread whose range starts inside a batch row keeps the activation's gradient of those blocks (`side`:
// (threads, L, nblocks, W)) and its span (`spans`: (threads, 3) batch row, first block, end; -1: none), which
// add_side_terms adds after the parallel pass: the sums do not depend on how the work was scheduled.
template <typename T>
struct GateSums {
  T* k_rows;
  T* lam_rows;
  T* side;
  int64_t* spans;
  bool any() const { return k_rows != nullptr || lam_rows != nullptr; }
};

// With a gate: gz (ZT, contiguous) through the activation's backward and its k and lam terms (GateSums).
template <typename IO, typename ZT, int NS, typename T = at::opmath_type<IO>>
void scan_backward_impl(const Tensor& gout, const Tensor& u, const Tensor& delta, const Tensor& At,
                        const Tensor& Bm, const Tensor& Cm, const T* Dp, const ScanGate<ZT>& gate, const T* biasp,
                        const Tensor& states, bool use_softplus, const ScanShape& s, Tensor& gu, Tensor& gdelta,
                        ZT* gzp, const GateSums<T>& sums, Tensor& gA_part, Tensor& gD_part, Tensor& gbias_part,
                        Tensor& gB_part, Tensor& gC_part) {
  constexpr int64_t W = Vec<T>::size();
  const IO* gp = gout.data_ptr<IO>();
  const IO* up = u.data_ptr<IO>();
  const IO* dp = delta.data_ptr<IO>();
  const T* Ap = At.data_ptr<T>();
  const T* statesp = states.data_ptr<T>();
  const auto Bs = strided3<T>(Bm), Cs = strided3<T>(Cm);
  const int64_t su_b = u.stride(0), su_l = u.stride(1), sd_b = delta.stride(0), sd_l = delta.stride(1);
  const int64_t sg_b = gout.stride(0), sg_l = gout.stride(1);
  IO* gup = gu.data_ptr<IO>();
  IO* gdp = gdelta.data_ptr<IO>();
  T* gAp = gA_part.data_ptr<T>();
  T* gDp = gD_part.data_ptr<T>();
  T* gbp = gbias_part.data_ptr<T>();
  T* gBp = gB_part.data_ptr<T>();
  T* gCp = gC_part.data_ptr<T>();
  const int64_t N = NS > 0 ? NS : s.nstate, L = s.length, Dm = s.channels, K = s.chunk;

  at::parallel_for(0, s.batch * s.nblocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t tid = at::get_thread_num();
    StateVecs<T, NS> Av(N), g(N), gA(N);
    std::vector<Vec<T>> hs((K + 1) * N), as(K * N), dts(K), xs(K), sig(K);
    // this thread's range starts inside batch row `b_side`: its blocks there go to the side buffer
    const int64_t b_side = begin % s.nblocks != 0 && sums.any() ? begin / s.nblocks : -1;
    if (b_side >= 0) {
      int64_t* span = sums.spans + tid * 3;
      span[0] = b_side;
      span[1] = begin % s.nblocks;
      span[2] = std::min(end, (b_side + 1) * s.nblocks) - b_side * s.nblocks;
    }
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / s.nblocks, d0 = (item % s.nblocks) * W, w = std::min(W, Dm - d0);
      const bool side = b == b_side;
      for (int64_t n = 0; n < N; ++n) {
        Av[n] = Vec<T>::loadu(Ap + n * Dm + d0, w);
        g[n] = Vec<T>(T(0));  // a_{t+1} * dL/dh_{t+1}, handed back from the step after
        gA[n] = Vec<T>(T(0));
      }
      const Vec<T> Dv = Dp ? Vec<T>::loadu(Dp + d0, w) : Vec<T>(T(0));
      const Vec<T> bias = biasp ? Vec<T>::loadu(biasp + d0, w) : Vec<T>(T(0));
      Vec<T> gD(T(0)), gbias(T(0));
      // lane buffers of dL/dB and dL/dC for this thread and batch row: (length, N, W)
      T* gBrow = gBp + (tid * s.batch + b) * L * N * W;
      T* gCrow = gCp + (tid * s.batch + b) * L * N * W;
      for (int64_t c = s.nchunks - 1; c >= 0; --c) {
        const int64_t t0 = c * K, T_ = std::min(K, L - t0);
        const T* st = statesp + ((b * s.nchunks + c) * N) * Dm + d0;
        for (int64_t n = 0; n < N; ++n) hs[n] = Vec<T>::loadu(st + n * Dm, w);
        // recompute the chunk: hs[i+1] = h_{t0+i}, hs[0] = the state before the chunk
        for (int64_t i = 0; i < T_; ++i) {
          const int64_t t = t0 + i;
          const Vec<T> x = load_op<IO, T>(up + b * su_b + t * su_l + d0, w);
          Vec<T> dt = load_op<IO, T>(dp + b * sd_b + t * sd_l + d0, w) + bias;
          if (use_softplus) {
            sig[i] = sigmoid(dt);
            dt = softplus(dt);
          }
          dts[i] = dt;
          xs[i] = x;
          const Vec<T> dtu = dt * x;
          for (int64_t n = 0; n < N; ++n) {
            const Vec<T> a = (dt * Av[n]).exp();
            as[i * N + n] = a;
            hs[(i + 1) * N + n] = at::vec::fmadd(a, hs[i * N + n], dtu * Vec<T>(Bs.at(b, t, n)));
          }
        }
        // adjoint: g_t = gy_t C_t + a_{t+1} g_{t+1}
        for (int64_t i = T_ - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          Vec<T> gy = load_op<IO, T>(gp + b * sg_b + t * sg_l + d0, w);
          const Vec<T> dt = dts[i], x = xs[i], dtu = dt * x;
          if (gate) {  // through the gate: gz = act'(z) (gout y), then gy = gout act(z)
            const Vec<T> z = gate.z_at(b, t, d0, w);
            Vec<T> y(T(0));  // recomputed as the forward computed it
            for (int64_t n = 0; n < N; ++n) y = at::vec::fmadd(hs[(i + 1) * N + n], Vec<T>(Cs.at(b, t, n)), y);
            y = at::vec::fmadd(Dv, x, y);
            const Vec<T> gact = round_io<ZT, T>(gy * round_io<ZT, T>(y));
            const bool row_k = sums.k_rows != nullptr && !side, row_lam = sums.lam_rows != nullptr && !side;
            T* kp = sums.k_rows + (b * L + t) * W;
            T* lp = sums.lam_rows + (b * L + t) * W;
            Vec<T> acc_k = row_k ? Vec<T>::loadu(kp) : Vec<T>(T(0));
            Vec<T> acc_lam = row_lam ? Vec<T>::loadu(lp) : Vec<T>(T(0));
            store_op<ZT, T>(gzp + (b * L + t) * Dm + d0, gate.ep.grad(z, gact, row_k, row_lam, acc_k, acc_lam), w);
            if (row_k) acc_k.store(kp);
            if (row_lam) acc_lam.store(lp);
            if (side) gact.store(sums.side + ((tid * L + t) * s.nblocks + d0 / W) * W);
            gy = round_io<ZT, T>(gy * gate.value(z));
          }
          Vec<T> SB(T(0)), Sdt(T(0));
          T* gBt = gBrow + t * N * W;
          T* gCt = gCrow + t * N * W;
          for (int64_t n = 0; n < N; ++n) {
            const Vec<T> gn = at::vec::fmadd(gy, Vec<T>(Cs.at(b, t, n)), g[n]);
            accumulate(gCt + n * W, gy * hs[(i + 1) * N + n]);
            accumulate(gBt + n * W, gn * dtu);
            SB = at::vec::fmadd(gn, Vec<T>(Bs.at(b, t, n)), SB);
            const Vec<T> a = as[i * N + n];
            const Vec<T> M = gn * hs[i * N + n] * a;  // dL/da_t * a_t
            Sdt = at::vec::fmadd(M, Av[n], Sdt);
            gA[n] = at::vec::fmadd(M, dt, gA[n]);
            g[n] = a * gn;
          }
          gD = at::vec::fmadd(gy, x, gD);
          Vec<T> gdt = at::vec::fmadd(x, SB, Sdt);
          if (use_softplus) gdt = gdt * sig[i];
          gbias = gbias + gdt;
          store_op<IO, T>(gup + (b * L + t) * Dm + d0, at::vec::fmadd(dt, SB, Dv * gy), w);
          store_op<IO, T>(gdp + (b * L + t) * Dm + d0, gdt, w);
        }
      }
      for (int64_t n = 0; n < N; ++n) accumulate(gAp + (tid * N + n) * Dm + d0, gA[n], w);
      accumulate(gDp + tid * Dm + d0, gD, w);
      accumulate(gbp + tid * Dm + d0, gbias, w);
    }
  });
}

// The side buffers' terms (GateSums), added to their rows after the blocks before them, thread by thread in order.
template <typename ZT, typename T = at::opmath_type<ZT>>
void add_side_terms(const ScanGate<ZT>& gate, const GateSums<T>& sums, const ScanShape& s, int64_t threads) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t L = s.length, Dm = s.channels;
  for (int64_t tid = 0; tid < threads; ++tid) {
    const int64_t* span = sums.spans + tid * 3;
    const int64_t b = span[0];
    if (b < 0) continue;
    for (int64_t t = 0; t < L; ++t) {
      T* kp = sums.k_rows + (b * L + t) * W;
      T* lp = sums.lam_rows + (b * L + t) * W;
      Vec<T> acc_k = sums.k_rows ? Vec<T>::loadu(kp) : Vec<T>(T(0));
      Vec<T> acc_lam = sums.lam_rows ? Vec<T>::loadu(lp) : Vec<T>(T(0));
      for (int64_t blk = span[1]; blk < span[2]; ++blk) {
        const int64_t d0 = blk * W, w = std::min(W, Dm - d0);
        const Vec<T> gact = Vec<T>::loadu(sums.side + ((tid * L + t) * s.nblocks + blk) * W);
        gate.ep.grad(gate.z_at(b, t, d0, w), gact, sums.k_rows != nullptr, sums.lam_rows != nullptr, acc_k, acc_lam);
      }
      if (sums.k_rows) acc_k.store(kp);
      if (sums.lam_rows) acc_lam.store(lp);
    }
  }
}

// fp32 for bf16 inputs, else the inputs' own dtype
c10::ScalarType compute_dtype(const Tensor& u) {
  return u.scalar_type() == at::kBFloat16 ? at::kFloat : u.scalar_type();
}

// A single channel has no meaningful stride (contiguous() may leave any value there).
bool unit_channel_stride(const Tensor& x) { return x.size(2) == 1 || x.stride(2) == 1; }

void check_scan_inputs(const Tensor& u, const Tensor& delta, const Tensor& At, const Tensor& Bm,
                       const Tensor& Cm, const c10::optional<Tensor>& D, const c10::optional<Tensor>& z,
                       const c10::optional<Tensor>& bias) {
  TORCH_CHECK(u.device().is_cpu(), "mswelu CPU scan: tensors must be on the CPU");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "u and delta must be (batch, length, channels)");
  TORCH_CHECK(unit_channel_stride(u) && unit_channel_stride(delta), "u and delta need a unit channel stride");
  TORCH_CHECK(At.dim() == 2 && At.size(1) == u.size(2) && At.is_contiguous(), "A must be (N, channels), contiguous");
  for (const Tensor* m : {&Bm, &Cm}) {
    TORCH_CHECK(m->dim() == 3 && m->size(0) == u.size(0) && m->size(1) == u.size(1) && m->size(2) == At.size(0),
                "B and C must be (batch, length, N)");
  }
  // u and delta (and gout) in one dtype, fp32, fp64 or bf16; everything else in the compute dtype
  const auto ct = compute_dtype(u);
  TORCH_CHECK(delta.scalar_type() == u.scalar_type(), "u and delta must have one dtype");
  for (const Tensor* t : {&At, &Bm, &Cm}) {
    TORCH_CHECK(t->scalar_type() == ct, "A, B and C must be in the compute dtype (", ct, ")");
  }
  if (z.has_value()) {
    TORCH_CHECK(z->sizes() == u.sizes() && unit_channel_stride(*z) &&
                    (z->scalar_type() == u.scalar_type() || z->scalar_type() == ct),
                "z must be (batch, length, channels) with unit channel stride, in u's dtype or the compute dtype");
  }
  for (const auto* t : {&D, &bias}) {
    if (t->has_value()) {
      TORCH_CHECK((*t)->dim() == 1 && (*t)->size(0) == u.size(2) && (*t)->is_contiguous() &&
                      (*t)->scalar_type() == ct,
                  "D and the delta bias must be contiguous (channels,) in the compute dtype");
    }
  }
}

ScanShape scan_shape(const Tensor& u, const Tensor& At, int64_t chunk, int64_t lanes) {
  TORCH_CHECK(chunk >= 1, "chunk must be >= 1");
  ScanShape s{u.size(0), u.size(1), u.size(2), At.size(0), chunk, 0, 0};
  s.nchunks = (s.length + chunk - 1) / chunk;
  s.nblocks = (s.channels + lanes - 1) / lanes;
  return s;
}

template <typename T>
const T* optional_ptr(const c10::optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

template <typename T>
struct TypeTag {
  using type = T;
};

// f(TypeTag<ZT>) for the gate's dtype ZT: u's (scalar_t), or the compute dtype (op_t) where z is in it
template <typename scalar_t, typename op_t, typename F>
void dispatch_gate_dtype(const c10::optional<Tensor>& z, const F& f) {
  if constexpr (!std::is_same_v<scalar_t, op_t>) {
    if (z.has_value() && z->scalar_type() != c10::CppTypeToScalarType<scalar_t>::value) {
      f(TypeTag<op_t>{});
      return;
    }
  }
  f(TypeTag<scalar_t>{});
}

// -> (out (batch, length, channels), last state (batch, N, channels), chunk-start states
//     (batch, nchunks, N, channels)). With z: out = y * act(z), act a kAct* code with its k and lam (ScanGate).
std::vector<Tensor> selective_scan_fwd(const Tensor& u, const Tensor& delta, const Tensor& At, const Tensor& Bm,
                                       const Tensor& Cm, const c10::optional<Tensor>& D,
                                       const c10::optional<Tensor>& z, const c10::optional<Tensor>& bias,
                                       bool use_softplus, int64_t chunk, int64_t act, double k, double lam) {
  check_scan_inputs(u, delta, At, Bm, Cm, D, z, bias);
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, u.scalar_type(), "mswelu_selective_scan_fwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    const ScanShape s = scan_shape(u, At, chunk, Vec<op_t>::size());
    const auto opt = u.options().dtype(compute_dtype(u));
    Tensor out = at::empty({s.batch, s.length, s.channels}, u.options());
    Tensor last = at::empty({s.batch, s.nstate, s.channels}, opt);
    Tensor states = at::empty({s.batch, s.nchunks, s.nstate, s.channels}, opt);
    dispatch_gate_dtype<scalar_t, op_t>(z, [&](auto tag) {
      using ZT = typename decltype(tag)::type;
      const ScanGate<ZT> gate(z, act, k, lam, 1.0);  // (a forward: no zero cell)
      dispatch_nstate(s.nstate, [&](auto ns) {
        scan_forward_impl<scalar_t, ZT, decltype(ns)::value>(u, delta, At, Bm, Cm, optional_ptr<op_t>(D), gate,
                                                             optional_ptr<op_t>(bias), use_softplus, s, out, last,
                                                             states);
      });
    });
    result = {out, last, states};
  });
  return result;
}

// -> (du, ddelta (batch, length, channels), dA^T (N, channels), dB, dC (batch, length, N), dD, dz (z's dtype,
// contiguous), dbias, dk, dlam): dk and dlam 0-dim in the compute dtype (zero unless asked for: the gate's
// SWELU k and lam, Swish's beta as dk), summed in swelu_bwd's order over (batch x length) rows of channels.
std::vector<Tensor> selective_scan_bwd(const Tensor& gout, const Tensor& u, const Tensor& delta, const Tensor& At,
                                       const Tensor& Bm, const Tensor& Cm, const c10::optional<Tensor>& D,
                                       const c10::optional<Tensor>& z, const c10::optional<Tensor>& bias,
                                       const Tensor& states, bool use_softplus, int64_t chunk, int64_t act, double k,
                                       double lam, double zero_eps, bool need_k, bool need_lam) {
  check_scan_inputs(u, delta, At, Bm, Cm, D, z, bias);
  TORCH_CHECK(gout.sizes() == u.sizes() && unit_channel_stride(gout) && gout.scalar_type() == u.scalar_type(),
              "gout must be like u");
  TORCH_CHECK(states.is_contiguous() && states.scalar_type() == compute_dtype(u),
              "states must be contiguous, in the compute dtype");
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, u.scalar_type(), "mswelu_selective_scan_bwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    constexpr int64_t W = Vec<op_t>::size();
    const ScanShape s = scan_shape(u, At, chunk, W);
    TORCH_CHECK(states.dim() == 4 && states.size(0) == s.batch && states.size(1) == s.nchunks &&
                    states.size(2) == s.nstate && states.size(3) == s.channels,
                "states do not match the inputs (another chunk size?)");
    const int64_t threads = at::get_num_threads();
    const auto opt = u.options().dtype(compute_dtype(u));
    Tensor gu = at::empty({s.batch, s.length, s.channels}, u.options());
    Tensor gdelta = at::empty({s.batch, s.length, s.channels}, u.options());
    Tensor gz = z.has_value() ? at::empty({s.batch, s.length, s.channels}, z->options()) : Tensor();
    Tensor gA_part = at::zeros({threads, s.nstate, s.channels}, opt);
    Tensor gD_part = at::zeros({threads, s.channels}, opt);
    Tensor gbias_part = at::zeros({threads, s.channels}, opt);
    Tensor gB_part = at::zeros({threads, s.batch, s.length, s.nstate, W}, opt);
    Tensor gC_part = at::zeros({threads, s.batch, s.length, s.nstate, W}, opt);
    op_t dk = 0, dlam = 0;
    dispatch_gate_dtype<scalar_t, op_t>(z, [&](auto tag) {
      using ZT = typename decltype(tag)::type;
      const ScanGate<ZT> gate(z, act, k, lam, zero_eps);
      const bool with_k = gate && need_k && gate.ep.has_k(), with_lam = gate && need_lam && gate.ep.has_lam();
      const int64_t rows = s.batch * s.length;
      const bool any = with_k || with_lam;
      Tensor k_rows = at::zeros({with_k ? rows : 0, W}, opt), lam_rows = at::zeros({with_lam ? rows : 0, W}, opt);
      Tensor side = at::empty({any ? threads * s.length * s.nblocks * W : 0}, opt);
      Tensor spans = at::full({threads, 3}, -1, u.options().dtype(at::kLong));
      const GateSums<op_t> sums{with_k ? k_rows.data_ptr<op_t>() : nullptr,
                                with_lam ? lam_rows.data_ptr<op_t>() : nullptr, side.data_ptr<op_t>(),
                                spans.data_ptr<int64_t>()};
      dispatch_nstate(s.nstate, [&](auto ns) {
        scan_backward_impl<scalar_t, ZT, decltype(ns)::value>(
            gout, u, delta, At, Bm, Cm, optional_ptr<op_t>(D), gate, optional_ptr<op_t>(bias), states, use_softplus,
            s, gu, gdelta, gate ? gz.data_ptr<ZT>() : nullptr, sums, gA_part, gD_part, gbias_part, gB_part, gC_part);
      });
      if (any) add_side_terms(gate, sums, s, threads);
      if (with_k) dk = sum_row_lanes(rows, s.channels, sums.k_rows);
      if (with_lam) dlam = sum_row_lanes(rows, s.channels, sums.lam_rows);
    });
    result = {gu,
              gdelta,
              gA_part.sum(0),
              gB_part.sum({0, 4}),
              gC_part.sum({0, 4}),
              D.has_value() ? gD_part.sum(0) : Tensor(),
              gz,
              bias.has_value() ? gbias_part.sum(0) : Tensor(),
              at::scalar_tensor(dk, opt),
              at::scalar_tensor(dlam, opt)};
  });
  return result;
}

// ------------------------------------------------------------------------------- causal conv1d

// The mixer's depthwise causal convolution over time, channels-last: x (batch, length, channels) with unit
// channel stride and any batch / time strides (a slice of in_proj's output), the weight transposed to
// (K, channels) and the bias (channels,) in the compute dtype; y (batch, length, channels) contiguous in x's
// dtype:  y[b, t, c] = bias[c] + sum_j w[c, j] * x[b, t - (K - 1) + j, c], with x = 0 before t = 0.
constexpr int64_t kMaxConvWidth = 8;

void check_conv_inputs(const Tensor& x, const Tensor& wt, const c10::optional<Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && unit_channel_stride(x),
              "mswelu CPU conv: x must be a (batch, length, channels) CPU tensor with unit channel stride");
  const auto ct = compute_dtype(x);
  TORCH_CHECK(wt.dim() == 2 && wt.size(1) == x.size(2) && wt.is_contiguous() && wt.scalar_type() == ct,
              "mswelu CPU conv: the weight must be (K, channels), contiguous, in the compute dtype");
  TORCH_CHECK(wt.size(0) >= 1 && wt.size(0) <= kMaxConvWidth, "mswelu CPU conv: width must be in [1, ",
              kMaxConvWidth, "], got ", wt.size(0));
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(2) && bias->is_contiguous() &&
                    bias->scalar_type() == ct,
                "mswelu CPU conv: the bias must be contiguous (channels,) in the compute dtype");
  }
}

// f(std::integral_constant<int, K>) for the usual width 4, f(integral_constant<int, 0>) (any width) otherwise
template <typename F>
void dispatch_width(int64_t k, const F& f) {
  if (k == 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 0>{});
  }
}

// One work item: one batch row and kConvRows consecutive time steps, all channels (a vector of W channels
// at a time, walking the item's rows with the last K inputs in registers): the rows stay in cache while
// every channel block reads them, and each thread reads whole cache lines.
constexpr int64_t kConvRows = 64;

// f(b, t0, t1, d0, w) for every work item (batch row b, time steps [t0, t1)) and each of its channel blocks
// [d0, d0 + w), in parallel over the work items.
template <int64_t W, typename F>
void for_conv_blocks(int64_t nb, int64_t L, int64_t Dm, const F& f) {
  const int64_t tblocks = (L + kConvRows - 1) / kConvRows;
  at::parallel_for(0, nb * tblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / tblocks, t0 = (item % tblocks) * kConvRows, t1 = std::min(L, t0 + kConvRows);
      for (int64_t d0 = 0; d0 < Dm; d0 += W) f(b, t0, t1, d0, std::min(W, Dm - d0));
    }
  });
}

// epi(acc) is what is stored for the conv's output acc (the identity, or an activation: the epilogue)
template <typename IO, int KS, typename T = at::opmath_type<IO>, typename Epi>
void conv_forward_impl(const Tensor& x, const Tensor& wt, const T* bp, Tensor& y, const Epi& epi) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t nb = x.size(0), L = x.size(1), Dm = x.size(2), K = KS > 0 ? KS : wt.size(0);
  const int64_t sb = x.stride(0), sl = x.stride(1);
  const IO* xp = x.data_ptr<IO>();
  IO* yp = y.data_ptr<IO>();
  const T* wp = wt.data_ptr<T>();
  for_conv_blocks<W>(nb, L, Dm, [&](int64_t b, int64_t t0, int64_t t1, int64_t d0, int64_t w) {
    std::array<Vec<T>, kMaxConvWidth> wv, xs;  // xs[j] = x[t - (K - 1) + j]
    for (int64_t j = 0; j < K; ++j) {
      wv[j] = Vec<T>::loadu(wp + j * Dm + d0, w);
      // the K - 1 inputs before the block, in xs[1..K-1] (the first step shifts them down)
      const int64_t t = t0 - K + j;
      xs[j] = (j >= 1 && t >= 0) ? load_op<IO, T>(xp + b * sb + t * sl + d0, w) : Vec<T>(T(0));
    }
    const Vec<T> bv = bp ? Vec<T>::loadu(bp + d0, w) : Vec<T>(T(0));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t j = 0; j + 1 < K; ++j) xs[j] = xs[j + 1];
      xs[K - 1] = load_op<IO, T>(xp + b * sb + t * sl + d0, w);
      Vec<T> acc = bv;
      for (int64_t j = 0; j < K; ++j) acc = at::vec::fmadd(wv[j], xs[j], acc);
      store_op<IO, T>(yp + (b * L + t) * Dm + d0, epi(acc), w);
    }
  });
}

// dx[s] = sum_j w[j] gy[s + K - 1 - j]; dw[j] = sum_t gy[t] x[t - (K - 1) + j]; dbias = sum_t gy[t]. Per
// item and channel block the sums over its rows stay in registers; they go into per-thread partial sums
// that the caller adds up in a fixed order. gy_at(b, t, d0, w, wv, own) is the output gradient at (b, t) for
// channels [d0, d0 + w) (read from memory, or made by an activation's backward: the epilogue), t < L; own
// says that row t belongs to this work item (each row is own exactly once).
template <typename IO, int KS, typename T = at::opmath_type<IO>, typename GyAt>
void conv_backward_impl(const Tensor& x, const Tensor& wt, Tensor& gx, Tensor& gw_part, Tensor& gb_part,
                        const GyAt& gy_at) {
  constexpr int64_t W = Vec<T>::size();
  const int64_t nb = x.size(0), L = x.size(1), Dm = x.size(2), K = KS > 0 ? KS : wt.size(0);
  const int64_t sb = x.stride(0), sl = x.stride(1);
  const IO* xp = x.data_ptr<IO>();
  IO* gxp = gx.data_ptr<IO>();
  const T* wp = wt.data_ptr<T>();
  T* gwp = gw_part.data_ptr<T>();
  T* gbp = gb_part.data_ptr<T>();
  for_conv_blocks<W>(nb, L, Dm, [&](int64_t b, int64_t t0, int64_t t1, int64_t d0, int64_t w) {
    const int64_t tid = at::get_thread_num();
    // xs[j] = x[t - (K - 1) + j]; gs[j] = gy[t + j] (the output gradients dx[t] reads)
    std::array<Vec<T>, kMaxConvWidth> wv, xs, gs, gw;
    for (int64_t j = 0; j < K; ++j) wv[j] = Vec<T>::loadu(wp + j * Dm + d0, w);
    for (int64_t j = 0; j < K; ++j) {
      gw[j] = Vec<T>(T(0));
      const int64_t tx = t0 - K + j, tg = t0 + j - 1;  // one step behind: the first step shifts them
      xs[j] = (j >= 1 && tx >= 0) ? load_op<IO, T>(xp + b * sb + tx * sl + d0, w) : Vec<T>(T(0));
      gs[j] = (j >= 1 && tg < L) ? gy_at(b, tg, d0, w, wv, tg < t1) : Vec<T>(T(0));
    }
    Vec<T> gbias(T(0));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t j = 0; j + 1 < K; ++j) {
        xs[j] = xs[j + 1];
        gs[j] = gs[j + 1];
      }
      xs[K - 1] = load_op<IO, T>(xp + b * sb + t * sl + d0, w);
      const int64_t ahead = t + K - 1;
      gs[K - 1] = ahead < L ? gy_at(b, ahead, d0, w, wv, ahead < t1) : Vec<T>(T(0));
      const Vec<T> g = gs[0];  // gy[t]
      for (int64_t j = 0; j < K; ++j) gw[j] = at::vec::fmadd(g, xs[j], gw[j]);
      gbias = gbias + g;
      Vec<T> acc(T(0));
      for (int64_t j = 0; j < K; ++j) acc = at::vec::fmadd(wv[j], gs[K - 1 - j], acc);
      store_op<IO, T>(gxp + (b * L + t) * Dm + d0, acc, w);
    }
    for (int64_t j = 0; j < K; ++j) accumulate(gwp + (tid * K + j) * Dm + d0, gw[j], w);
    accumulate(gbp + tid * Dm + d0, gbias, w);
  });
}

Tensor causal_conv1d_fwd(const Tensor& x, const Tensor& wt, const c10::optional<Tensor>& bias) {
  check_conv_inputs(x, wt, bias);
  Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "mswelu_causal_conv1d_fwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    dispatch_width(wt.size(0), [&](auto ks) {
      conv_forward_impl<scalar_t, decltype(ks)::value>(x, wt, optional_ptr<op_t>(bias), y,
                                                       [](const Vec<op_t>& v) { return v; });
    });
  });
  return y;
}

// -> (dx (batch, length, channels) in x's dtype, dw^T (K, channels), dbias (channels,) or undefined), with
// gy like x (unit channel stride).
std::vector<Tensor> causal_conv1d_bwd(const Tensor& gy, const Tensor& x, const Tensor& wt,
                                      const c10::optional<Tensor>& bias) {
  check_conv_inputs(x, wt, bias);
  TORCH_CHECK(gy.sizes() == x.sizes() && unit_channel_stride(gy) && gy.scalar_type() == x.scalar_type(),
              "mswelu CPU conv: the output gradient must be like x");
  const int64_t threads = at::get_num_threads();
  Tensor gx = at::empty(x.sizes(), x.options());
  Tensor gw_part = at::zeros({threads, wt.size(0), x.size(2)}, wt.options());
  Tensor gb_part = at::zeros({threads, x.size(2)}, wt.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "mswelu_causal_conv1d_bwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = gy.data_ptr<scalar_t>();
    const int64_t gb = gy.stride(0), gl = gy.stride(1);
    const auto gy_at = [&](int64_t b, int64_t t, int64_t d0, int64_t w, const auto&, bool) {
      return load_op<scalar_t, op_t>(gp + b * gb + t * gl + d0, w);
    };
    dispatch_width(wt.size(0), [&](auto ks) {
      conv_backward_impl<scalar_t, decltype(ks)::value>(x, wt, gx, gw_part, gb_part, gy_at);
    });
  });
  return {gx, gw_part.sum(0), bias.has_value() ? gb_part.sum(0) : Tensor()};
}


// The mixer's conv with its activation in the epilogue (see "activation epilogues"): y = act(conv(x)), the
// conv's output rounded to x's dtype before the activation reads it, and in the backward the activation's
// gradient (rounded to x's dtype) made where the conv's backward reads it, without writing and re-reading the
// conv's output (forward) or the activation's gradient (backward).
Tensor causal_conv1d_act_fwd(const Tensor& x, const Tensor& wt, const c10::optional<Tensor>& bias, int64_t act,
                             double k, double lam) {
  check_conv_inputs(x, wt, bias);
  Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "mswelu_causal_conv1d_act_fwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    const ActEpilogue<scalar_t> ep(act, k, lam);
    dispatch_width(wt.size(0), [&](auto ks) {
      conv_forward_impl<scalar_t, decltype(ks)::value>(
          x, wt, optional_ptr<op_t>(bias), y, [&](const Vec<op_t>& v) { return ep.value(round_io<scalar_t, op_t>(v)); });
    });
  });
  return y;
}

// -> (dx, dw^T, dbias or undefined, dk, dlam) from the gradient of the activation's output gy (like x); dk and
// dlam 0-dim in the compute dtype (zero unless asked for: SWELU's k and lam, Swish's beta as dk).
std::vector<Tensor> causal_conv1d_act_bwd(const Tensor& gy, const Tensor& x, const Tensor& wt,
                                          const c10::optional<Tensor>& bias, int64_t act, double k, double lam,
                                          double zero_eps, bool need_k, bool need_lam) {
  check_conv_inputs(x, wt, bias);
  TORCH_CHECK(gy.sizes() == x.sizes() && unit_channel_stride(gy) && gy.scalar_type() == x.scalar_type(),
              "mswelu CPU conv: the output gradient must be like x");
  const int64_t threads = at::get_num_threads(), nb = x.size(0), L = x.size(1), Dm = x.size(2);
  Tensor gx = at::empty(x.sizes(), x.options());
  Tensor gw_part = at::zeros({threads, wt.size(0), Dm}, wt.options());
  Tensor gb_part = at::zeros({threads, Dm}, wt.options());
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "mswelu_causal_conv1d_act_bwd", [&] {
    using op_t = at::opmath_type<scalar_t>;
    constexpr int64_t W = Vec<op_t>::size();
    const ActEpilogue<scalar_t> ep(act, k, lam, zero_eps);
    need_k = need_k && ep.has_k();
    need_lam = need_lam && ep.has_lam();
    // per row (batch x length) and lane: the k and lam sums of swelu_bwd's row accumulators
    Tensor k_lanes = at::zeros({need_k ? nb * L : 0, W}, wt.options());
    Tensor lam_lanes = at::zeros({need_lam ? nb * L : 0, W}, wt.options());
    op_t* klp = k_lanes.data_ptr<op_t>();
    op_t* llp = lam_lanes.data_ptr<op_t>();
    const scalar_t* gp = gy.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const op_t* bp = optional_ptr<op_t>(bias);
    const int64_t gb = gy.stride(0), gl = gy.stride(1), sb = x.stride(0), sl = x.stride(1), K = wt.size(0);
    const auto gy_at = [&](int64_t b, int64_t t, int64_t d0, int64_t w, const auto& wv, bool own) {
      // the conv's output at t, recomputed as the forward computed it
      Vec<op_t> acc = bp ? Vec<op_t>::loadu(bp + d0, w) : Vec<op_t>(op_t(0));
      for (int64_t j = 0; j < K; ++j) {
        const int64_t tx = t - (K - 1) + j;
        const Vec<op_t> xj = tx >= 0 ? load_op<scalar_t, op_t>(xp + b * sb + tx * sl + d0, w) : Vec<op_t>(op_t(0));
        acc = at::vec::fmadd(wv[j], xj, acc);
      }
      const Vec<op_t> z = round_io<scalar_t, op_t>(acc);
      const Vec<op_t> g = load_op<scalar_t, op_t>(gp + b * gb + t * gl + d0, w);
      const bool row_k = need_k && own, row_lam = need_lam && own;
      op_t* kp = klp + (b * L + t) * W;
      op_t* lp = llp + (b * L + t) * W;
      Vec<op_t> acc_k = row_k ? Vec<op_t>::loadu(kp) : Vec<op_t>(op_t(0));
      Vec<op_t> acc_lam = row_lam ? Vec<op_t>::loadu(lp) : Vec<op_t>(op_t(0));
      const Vec<op_t> dz = ep.grad(z, g, row_k, row_lam, acc_k, acc_lam);
      if (row_k) acc_k.store(kp);
      if (row_lam) acc_lam.store(lp);
      return round_io<scalar_t, op_t>(dz);
    };
    dispatch_width(K, [&](auto ks) {
      conv_backward_impl<scalar_t, decltype(ks)::value>(x, wt, gx, gw_part, gb_part, gy_at);
    });
    const auto opts = wt.options();
    result = {gx, gw_part.sum(0), bias.has_value() ? gb_part.sum(0) : Tensor(),
              at::scalar_tensor(need_k ? sum_row_lanes(nb * L, Dm, klp) : op_t(0), opts),
              at::scalar_tensor(need_lam ? sum_row_lanes(nb * L, Dm, llp) : op_t(0), opts)};
  });
  return result;
}

// ------------------------------------------------------------------------------------ cross-entropy

// One chunk of the fused LM head + loss (lm_loss.py): for each row r of logits (rows, V), the loss
// logsumexp(x_r) - x_r[t_r] (0 where t_r == ignore_index), and, when `grad`, the row overwritten in its own
// dtype by scale * (softmax(x_r) - onehot(t_r)) (zeros for an ignored row): the gradient of
// scale * sum_r loss_r. Three passes over a row (max, sum of exponentials, gradient) that stays in cache,
// in fp32 (fp64 for fp64), instead of a dozen passes over the whole chunk in fp32.
// exp for logits of dtype T: for bf16 / half logits (8 or 11 significant bits) ATen's faster exp_u20
// (about 20 fp32 ulps, as its own softmax uses) is far below their rounding; full precision otherwise.
template <typename T, typename V>
inline V exp_for(const V& x) {
  if constexpr (std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>) {
    return x.exp_u20();
  } else {
    return x.exp();
  }
}

Tensor cross_entropy_rows_(Tensor& logits, const Tensor& targets, double scale, int64_t ignore_index,
                           bool grad) {
  TORCH_CHECK(logits.device().is_cpu() && logits.dim() == 2 && logits.is_contiguous(),
              "mswelu CPU cross-entropy: logits must be a contiguous (rows, vocab) CPU tensor");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0) && targets.is_contiguous() &&
                  targets.scalar_type() == at::kLong,
              "mswelu CPU cross-entropy: targets must be contiguous int64 (rows,)");
  const int64_t rows = logits.size(0), V = logits.size(1);
  const int64_t* tp = targets.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(tp[r] == ignore_index || (tp[r] >= 0 && tp[r] < V), "target ", tp[r], " is out of range for ",
                V, " classes");
  }
  Tensor loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "mswelu_cross_entropy", [&] {
    using op_t = at::opmath_type<scalar_t>;
    constexpr int64_t W = Vec<op_t>::size();
    loss = at::empty({rows}, logits.options().dtype(c10::CppTypeToScalarType<op_t>::value));
    op_t* lp = loss.data_ptr<op_t>();
    scalar_t* xp = logits.data_ptr<scalar_t>();
    const int64_t full = V - V % W;  // whole vectors; the tail is done one element at a time
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* x = xp + r * V;
        if (tp[r] == ignore_index) {
          lp[r] = op_t(0);
          if (grad) std::fill(x, x + V, scalar_t(0));
          continue;
        }
        Vec<op_t> vmax(-std::numeric_limits<op_t>::infinity());
        for (int64_t i = 0; i < full; i += W) vmax = at::vec::maximum(vmax, load_op<scalar_t, op_t>(x + i, W));
        op_t lanes[W];
        vmax.store(lanes);
        op_t top = *std::max_element(lanes, lanes + W);
        for (int64_t i = full; i < V; ++i) top = std::max(top, static_cast<op_t>(x[i]));
        const Vec<op_t> topv(top);
        Vec<op_t> vsum(op_t(0));
        for (int64_t i = 0; i < full; i += W) vsum = vsum + exp_for<scalar_t>(load_op<scalar_t, op_t>(x + i, W) - topv);
        vsum.store(lanes);
        op_t sum = std::accumulate(lanes, lanes + W, op_t(0));
        for (int64_t i = full; i < V; ++i) sum += std::exp(static_cast<op_t>(x[i]) - top);
        const op_t lse = top + std::log(sum);
        lp[r] = lse - static_cast<op_t>(x[tp[r]]);
        if (!grad) continue;
        const op_t s = static_cast<op_t>(scale);
        const Vec<op_t> lsev(lse), sv(s);
        for (int64_t i = 0; i < full; i += W) {
          store_op<scalar_t, op_t>(x + i, exp_for<scalar_t>(load_op<scalar_t, op_t>(x + i, W) - lsev) * sv, W);
        }
        for (int64_t i = full; i < V; ++i) x[i] = static_cast<scalar_t>(std::exp(static_cast<op_t>(x[i]) - lse) * s);
        x[tp[r]] = static_cast<scalar_t>(static_cast<op_t>(x[tp[r]]) - s);
      }
    });
  });
  return loss;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_fwd", &selective_scan_fwd, "Mamba-1 selective scan, forward (CPU)");
  m.def("selective_scan_bwd", &selective_scan_bwd, "Mamba-1 selective scan, backward (CPU)");
  m.def("causal_conv1d_fwd", &causal_conv1d_fwd, "Depthwise causal conv1d, channels-last, forward (CPU)");
  m.def("causal_conv1d_bwd", &causal_conv1d_bwd, "Depthwise causal conv1d, channels-last, backward (CPU)");
  m.def("causal_conv1d_act_fwd", &causal_conv1d_act_fwd, "Causal conv1d with an activation epilogue, forward");
  m.def("causal_conv1d_act_bwd", &causal_conv1d_act_bwd, "Causal conv1d with an activation epilogue, backward");
  m.def("swelu_fwd", &swelu_fwd, "SWELU with scalar k and lam, forward (CPU)");
  m.def("swelu_bwd", &swelu_bwd, "SWELU with scalar k and lam, backward (CPU)");
  m.def("cross_entropy_rows_", &cross_entropy_rows_,
        "Cross-entropy per row of a logits chunk; optionally overwrites it with the gradient (CPU)");
  m.def("vector_lanes", [] { return Vec<float>::size(); }, "fp32 lanes of a vector in this build");
}
