#pragma once

/// \file attnkit/sparse/lsh_hash.hpp
/// Seeded locality-sensitive hashes of token vectors into buckets, L
/// independent rounds at a time: the bucketing behind LSH attention
/// (attnkit/sparse/lsh_attention.hpp). Vectors at a small angle share a
/// bucket with high probability; the probability falls with the angle.
///
/// Round r draws a Gaussian matrix R_r (entries N(0, 1), in double from
/// attnkit/detail/random.hpp, rounded once to Scalar) and hashes x (a row)
/// with p = x R_r:
///  - LshHashKind::angular (Reformer's random rotations, Andoni et al. 2015):
///    R_r is d x B/2 and h(x) = argmax over the B entries of [p, -p], i.e.
///    a = argmax_a |p_a| (the first on ties), h = a if p_a >= 0, else
///    a + B/2. B even;
///  - LshHashKind::simhash (Charikar 2002): R_r is d x b, B = 2^b, and bit i
///    of h(x) is 1 when p_i > 0. B a power of two.
/// B = 1 puts every vector in bucket 0 (no projection is drawn).
/// A NaN in x gives some bucket in [0, B) (which one is unspecified).
///
/// Cost: one (n x d)(d x L w) GEMM per call, w = B/2 (angular) or log2 B
/// (simhash), plus O(n L w). Thread safety: codes() is const and safe to call
/// concurrently.

#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/core/types.hpp"
#include "attnkit/detail/check.hpp"
#include "attnkit/detail/random.hpp"

namespace attnkit {

enum class LshHashKind { angular, simhash };

/// Name used in messages and on the command line: "angular", "simhash".
inline const char* to_string(LshHashKind kind) {
  return kind == LshHashKind::angular ? "angular" : "simhash";
}

/// Bucket codes of n vectors in L rounds: (n x L), entries in [0, B).
using LshCodes = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Settings of an LSH family.
struct LshHashOptions {
  /// Hash family (see the file comment).
  LshHashKind kind = LshHashKind::angular;
  /// Buckets per round B: 1, or even (angular), or a power of two (simhash);
  /// at most 2^30.
  Index buckets = 16;
  /// Independent hash rounds L, >= 1.
  Index rounds = 4;
  /// Seed of the projections; the same seed gives the same buckets.
  std::uint64_t seed = 0;
};

/// L rounds of one LSH family for vectors of width d.
template <typename Scalar>
class LshHasher {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "LshHasher supports float and double");

 public:
  /// Draws the projections.
  /// \throws std::invalid_argument for d < 1, rounds < 1, a bucket count
  ///         the family cannot produce (see LshHashOptions::buckets), or
  ///         d x L w overflowing Index.
  LshHasher(Index d, const LshHashOptions& options = {}) : options_(options), d_(d) {
    const char* where = "LshHasher";
    const Index b = options.buckets;
    if (d < 1) detail::fail(where, ": d = ", d, " must be >= 1");
    if (options.rounds < 1) detail::fail(where, ": rounds = ", options.rounds, " must be >= 1");
    if (b < 1 || b > (Index{1} << 30)) detail::fail(where, ": buckets = ", b, " must be in [1, 2^30]");
    if (b == 1) {
      width_ = 0;
    } else if (options.kind == LshHashKind::angular) {
      if (b % 2 != 0) detail::fail(where, ": buckets = ", b, " must be even (or 1) for angular hashing");
      width_ = b / 2;
    } else {
      if ((b & (b - 1)) != 0)
        detail::fail(where, ": buckets = ", b, " must be a power of two (or 1) for simhash");
      width_ = 0;
      while ((Index{1} << width_) < b)
        ++width_;
    }
    detail::checked_product(where, "rounds x (buckets + 1)", options.rounds,
                            b + 1);  // the index's bucket tables
    const Index cols = detail::checked_product(where, "rounds x projection width", options.rounds, width_);
    detail::checked_product(where, "d x rounds x projection width", d, cols);
    detail::Random rng(options.seed);
    projections_ = rng.normal_matrix(d, cols).template cast<Scalar>();
  }

  Index dim() const { return d_; }
  Index rounds() const { return options_.rounds; }
  Index buckets() const { return options_.buckets; }
  LshHashKind kind() const { return options_.kind; }
  const LshHashOptions& options() const { return options_; }
  /// Columns per round: B/2 (angular), log2 B (simhash), 0 for B = 1.
  Index width() const { return width_; }
  /// All projections (d x L w): round r in columns [r w, (r + 1) w).
  const RowMatrix<Scalar>& projections() const { return projections_; }

  /// Bucket codes of the rows of x (n x d).
  /// \throws std::invalid_argument for an empty x or a width other than d.
  template <typename Derived>
  LshCodes codes(const Eigen::MatrixBase<Derived>& x) const {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                  "codes: x must have the hasher's Scalar type");
    detail::require_non_empty("LshHasher::codes", "x", x);
    if (x.cols() != d_) detail::fail("LshHasher::codes: x ", detail::shape(x), " must have width d = ", d_);
    const Index n = x.rows(), rounds = options_.rounds, w = width_;
    LshCodes out = LshCodes::Zero(n, rounds);
    if (w == 0) return out;
    const RowMatrix<Scalar> p = x * projections_;
    for (Index i = 0; i < n; ++i)
      for (Index r = 0; r < rounds; ++r) {
        const Scalar* row = p.data() + i * p.cols() + r * w;
        Index code = 0;
        if (options_.kind == LshHashKind::angular) {
          Index best = 0;
          Scalar best_abs = std::abs(row[0]);
          for (Index a = 1; a < w; ++a)
            if (std::abs(row[a]) > best_abs) {
              best_abs = std::abs(row[a]);
              best = a;
            }
          code = row[best] >= Scalar(0) ? best : best + w;
        } else {
          for (Index bit = 0; bit < w; ++bit)
            if (row[bit] > Scalar(0)) code |= Index{1} << bit;
        }
        out(i, r) = code;
      }
    return out;
  }

 private:
  LshHashOptions options_;
  Index d_;
  Index width_ = 0;
  RowMatrix<Scalar> projections_;
};

}  // namespace attnkit
