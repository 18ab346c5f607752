#pragma once

// Shared pieces of the approx tests: the input cases, the long-double oracle
// with its own error bound, and the per-entry checks (see approx_test.cpp).

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/approx/approx_attention.hpp"
#include "naive_attention.hpp"
#include "test_util.hpp"

namespace attnkit::approx_test {

using test::LD;

/// One input of the property test, generated in double and cast to Scalar
/// (the oracle sees exactly the Scalar values).
struct Case {
  std::string name;
  RowMatrix<double> q, k, v;
};

inline RowMatrix<double> normal(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  detail::Random rng(seed);
  return rng.normal_matrix(rows, cols, stddev);
}

/// Clustered keys (interleaved along the sequence), queries near the
/// centres: the structure the approximation exploits, so that the skip and
/// summarise tiers are exercised (ExercisesEveryTier checks they are).
inline Case clustered(Index n, Index d, Index clusters, double centre_std, double noise, std::uint64_t seed) {
  detail::Random rng(seed);
  const RowMatrix<double> centres = rng.normal_matrix(clusters, d, centre_std);
  Case c{"clustered_n" + std::to_string(n), RowMatrix<double>(n, d), RowMatrix<double>(n, d),
         rng.normal_matrix(n, 3)};
  for (Index j = 0; j < n; ++j)
    for (Index a = 0; a < d; ++a) {
      c.k(j, a) = centres(j % clusters, a) + noise * rng.normal();
      c.q(j, a) = centres(rng.index(clusters), a) + noise * rng.normal();
    }
  return c;
}

/// The inputs of the property test (fixed seeds). n is never a power of two
/// except where the case says so; d = 8, d_v = 3.
inline std::vector<Case> cases() {
  const Index d = 8;
  std::vector<Case> out;
  out.push_back({"iid_n300", normal(300, d, 1), normal(300, d, 2), normal(300, 3, 3)});
  out.push_back(clustered(517, d, 6, 2.0, 0.05, 4));
  out.push_back(clustered(1000, d, 3, 3.0, 0.01, 5));
  {
    Case c{"large_norm_keys", normal(300, d, 6), normal(300, d, 7, 30.0), normal(300, 3, 8)};
    out.push_back(c);
  }
  {
    // Keys within 1e-6 of one of two base keys: near-duplicates.
    Case c{"near_duplicate_keys", normal(333, d, 9), normal(333, d, 10, 1e-6), normal(333, 3, 11)};
    const RowMatrix<double> base = normal(2, d, 12, 2.0);
    for (Index j = 0; j < c.k.rows(); ++j)
      c.k.row(j) += base.row(j % 2);
    out.push_back(c);
  }
  {
    // Key 7 aligned with every query (logit about 40 above the others).
    Case c{"one_dominant_key", normal(260, d, 13, 0.3), normal(260, d, 14, 0.3), normal(260, 3, 15)};
    c.q.rowwise() += Eigen::RowVectorXd::Constant(d, 1.0);
    c.k.row(7) = Eigen::RowVectorXd::Constant(d, 6.0);
    out.push_back(c);
  }
  {
    Case c{"all_keys_identical", normal(256, d, 16), RowMatrix<double>(256, d), normal(256, 3, 17)};
    c.k.rowwise() = normal(1, d, 18).row(0);
    out.push_back(c);
  }
  {
    // Values of mixed sign around large offsets: +1e3 in column 0, -1e3 in
    // column 1, alternating +-1e3 in column 2.
    Case c = clustered(400, d, 4, 2.0, 0.1, 19);
    c.name = "mixed_sign_values";
    for (Index j = 0; j < c.v.rows(); ++j) {
      c.v(j, 0) += 1e3;
      c.v(j, 1) -= 1e3;
      c.v(j, 2) += (j % 2 ? 1e3 : -1e3);
    }
    out.push_back(c);
  }
  {
    // Logits of order +-80 (scale 1/sqrt(8)): e^80 is near float's range.
    Case c = clustered(300, d, 5, 5.0, 0.05, 20);
    c.name = "logits_near_float_range";
    out.push_back(c);
  }
  {
    // Logits of order +-5000: beyond the range of exp in double as well.
    Case c{"logits_beyond_exp_range", normal(300, d, 21, 40.0), normal(300, d, 22, 40.0), normal(300, 3, 23)};
    out.push_back(c);
  }
  out.push_back({"n1", normal(1, d, 24), normal(1, d, 25), normal(1, 3, 26)});
  out.push_back({"n2", normal(2, d, 27), normal(2, d, 28), normal(2, 3, 29)});
  return out;
}

/// The oracle and what the checks need from it, for one case and mask.
struct Oracle {
  test::NaiveResult exact;
  RowMatrix<double> vmax;  ///< (n_q x d_v): max_{visible j} |V_jc|, 0 if none
  RowMatrix<double> ref;   ///< (n_q x d_v): the oracle's own error bound
};

/// The oracle's error bound. In long double (u = 2^-64) each logit
/// scale * q.k is a d-term dot product: error <= (d + 1) u a with
/// a = scale * max_j sum_c |q_c k_jc| (the products, the sum, the scale).
/// exp(z - m) adds 2 u relative (the subtraction and exp, taken as 1 ulp),
/// so every weight is within relative (d + 1) u a + 2 u, giving 2 times that
/// on the normalised output (numerator and denominator); the n-term sums and
/// the division add (n + 1) u each on a convex combination of |v| <= vmax.
/// Doubled for safety of the "1 ulp" libm assumption:
///   ref_rc = 2 (2 ((d + 1) u a + 2 u) + 2 (n + 1) u) vmax_rc.
template <typename Scalar>
Oracle oracle(const RowMatrix<Scalar>& q, const RowMatrix<Scalar>& k, const RowMatrix<Scalar>& v,
              const test::NaiveMask& mask, double scale) {
  Oracle o{test::naive_attention(q, k, v, mask, scale), RowMatrix<double>::Zero(q.rows(), v.cols()),
           RowMatrix<double>::Zero(q.rows(), v.cols())};
  const double u = 0x1.0p-64;
  const double d = static_cast<double>(q.cols()), n = static_cast<double>(k.rows());
  for (Index i = 0; i < q.rows(); ++i) {
    double a = 0;
    for (Index j = 0; j < k.rows(); ++j) {
      if (!mask.visible(i, j, q.rows(), k.rows())) continue;
      double s = 0;
      for (Index c = 0; c < q.cols(); ++c)
        s += std::fabs(static_cast<double>(q(i, c)) * static_cast<double>(k(j, c)));
      a = std::max(a, scale * s);
      for (Index c = 0; c < v.cols(); ++c)
        o.vmax(i, c) = std::max(o.vmax(i, c), std::fabs(static_cast<double>(v(j, c))));
    }
    a *= 1.01;  // the double evaluation of a itself
    for (Index c = 0; c < v.cols(); ++c)
      o.ref(i, c) = 2 * (2 * ((d + 1) * u * a + 2 * u) + 2 * (n + 1) * u) * o.vmax(i, c);
  }
  return o;
}

inline test::NaiveMask naive_mask(MaskKind kind) {
  test::NaiveMask m;
  m.kind = kind;
  m.offset = 0;  // n_q = n_k: the default offset n_k - n_q
  return m;
}

/// Small blocks and leaves so that problems of a few hundred keys have
/// several levels and trees deep enough to skip and summarise.
inline ApproxOptions small_index(MaskKind kind) {
  ApproxOptions o;
  o.mask = Mask(kind);
  o.index.block = 16;
  o.index.leaf = 4;
  o.group_rows = 16;
  return o;
}

/// Checks soundness (and the contract when `certified`) on every entry;
/// returns the number of failures printed (at most a few).
template <typename Scalar>
int check_result(const ApproxResult<Scalar>& res, const Oracle& o, double eps, bool certified,
                 const std::string& what) {
  int failures = 0;
  const Index n_q = res.output.rows(), d_v = res.output.cols();
  EXPECT_EQ(res.bound.rows(), n_q);
  EXPECT_EQ(res.bound.cols(), d_v);
  for (Index r = 0; r < n_q; ++r) {
    const LD lse = o.exact.lse(r);
    if (lse == -std::numeric_limits<LD>::infinity()) {
      // A row that sees no key: zero output, lse -inf, bound 0.
      for (Index c = 0; c < d_v; ++c) {
        EXPECT_EQ(res.output(r, c), Scalar(0)) << what << " row " << r;
        EXPECT_EQ(res.bound(r, c), 0.0) << what << " row " << r;
      }
      EXPECT_EQ(res.lse(r), -std::numeric_limits<Scalar>::infinity()) << what << " row " << r;
      continue;
    }
    // lse: |lse' - lse| <= lse_bound (+ the oracle's error, below 1e-12 here).
    const double lerr = std::fabs(static_cast<double>(static_cast<LD>(res.lse(r)) - lse));
    if (!(lerr <= res.lse_bound(r) + 1e-12 * (1 + std::fabs(static_cast<double>(lse)))) && failures < 5) {
      ++failures;
      ADD_FAILURE() << what << ": lse row " << r << " error " << lerr << " > bound " << res.lse_bound(r);
    }
    for (Index c = 0; c < d_v; ++c) {
      const double err =
          static_cast<double>(std::fabs(static_cast<LD>(res.output(r, c)) - o.exact.output(r, c)));
      const double b = res.bound(r, c);
      if (!(err <= b + o.ref(r, c)) && failures < 5) {
        ++failures;
        ADD_FAILURE() << what << ": row " << r << " col " << c << " error " << err << " > bound " << b
                      << " (+ oracle " << o.ref(r, c) << ")";
      }
      if (certified && !(b <= eps * o.vmax(r, c)) && failures < 5) {
        ++failures;
        ADD_FAILURE() << what << ": row " << r << " col " << c << " bound " << b << " > eps max|v| "
                      << eps * o.vmax(r, c);
      }
    }
  }
  return failures;
}

constexpr MaskKind kMasks[] = {MaskKind::none, MaskKind::causal, MaskKind::strict_causal};

}  // namespace attnkit::approx_test
