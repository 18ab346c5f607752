#pragma once

// attnkit-eval: running one method over every head, progress reporting,
// validating the attention options and the output paths, writing .npy outputs.

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "attnkit/attention/problem.hpp"
#include "attnkit/core/mask.hpp"
#include "attnkit/io/npy.hpp"
#include "eval/inputs.hpp"
#include "eval/methods.hpp"

namespace attnkit::eval {

/// A progress line on stderr ("attnkit-eval: reference head 3/8, 1.2 s") once
/// the work has taken longer than `after` seconds, then at most once a second.
/// The threshold is 1 s, or the environment variable
/// ATTNKIT_EVAL_PROGRESS_AFTER (seconds; 0 prints every step, for tests).
class Progress {
 public:
  Progress(std::ostream& err, bool quiet) : err_(err), quiet_(quiet) {
    if (const char* env = std::getenv("ATTNKIT_EVAL_PROGRESS_AFTER")) {
      char* end = nullptr;
      const double x = std::strtod(env, &end);
      if (end != env && std::isfinite(x) && x >= 0) after_ = x;
    }
  }

  void step(const std::string& what, Index done, Index total) {
    if (quiet_) return;
    const double now = seconds_since(start_);
    if (now < after_) return;
    if (printed_ && after_ > 0 && now - last_ < 1.0 && done != total) return;
    err_ << "attnkit-eval: " << what << " head " << done << '/' << total << ", " << std::fixed;
    err_.precision(1);
    err_ << now << " s\n" << std::defaultfloat;
    err_.flush();
    printed_ = true;
    last_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }
  std::ostream& err_;
  bool quiet_;
  double after_ = 1.0;
  Clock::time_point start_ = Clock::now();
  bool printed_ = false;
  double last_ = 0;
};

/// Output of one method over all heads: output (heads, n_q, d_v) and lse as a
/// (heads x n_q) matrix.
template <typename Scalar>
struct Stacked {
  Tensor<Scalar> output;
  RowMatrix<Scalar> lse;
};

/// Runs `method` on query head h (and its key/value head).
/// \throws std::logic_error if the kernel returns the wrong shapes.
template <typename Scalar>
AttentionResult<Scalar> run_head(const Method& method, const Inputs<Scalar>& in, Index h,
                                 const AttentionOptions& options, const MethodParams& params) {
  const Index g = in.shape.kv_head(h);
  AttentionResult<Scalar> r =
      method.kernel<Scalar>()(in.q.head(h), in.k.head(g), in.v.head(g), options, params);
  if (r.output.rows() != in.shape.n_q || r.output.cols() != in.shape.d_v || r.lse.size() != in.shape.n_q)
    throw std::logic_error("method '" + method.name + "' returned output " +
                           attnkit::detail::shape(r.output) + " and lse of size " +
                           std::to_string(r.lse.size()) + " for n_q = " + std::to_string(in.shape.n_q) +
                           ", d_v = " + std::to_string(in.shape.d_v));
  return r;
}

template <typename Scalar>
Stacked<Scalar> make_stacked(const ProblemShape& s) {
  return {{s.q_heads, s.n_q, s.d_v, s.three_d, RowMatrix<Scalar>(s.q_heads * s.n_q, s.d_v)},
          RowMatrix<Scalar>(s.q_heads, s.n_q)};
}

template <typename Scalar>
void store_head(Stacked<Scalar>& out, Index h, const AttentionResult<Scalar>& r) {
  out.output.head(h) = r.output;
  out.lse.row(h) = r.lse.transpose();
}

/// Runs `method` on every head, reporting progress.
template <typename Scalar>
Stacked<Scalar> run_all_heads(const Method& method, const Inputs<Scalar>& in, const AttentionOptions& options,
                              const MethodParams& params, Progress& progress) {
  Stacked<Scalar> out = make_stacked<Scalar>(in.shape);
  for (Index h = 0; h < in.shape.q_heads; ++h) {
    store_head(out, h, run_head(method, in, h, options, params));
    progress.step(method.name, h + 1, in.shape.q_heads);
  }
  return out;
}

/// The mask and scale flags, validated against the problem shape.
struct MaskFlags {
  std::string mask = "none";
  bool has_offset = false;
  Index offset = 0;
  bool has_scale = false;
  double scale = 0;
};

/// \throws UsageError naming the flag when the mask, offset or scale does not
///         fit the shapes.
inline AttentionOptions make_attention_options(const MaskFlags& f, const ProblemShape& s) {
  AttentionOptions o;
  const MaskKind kind =
      f.mask == "causal" ? MaskKind::causal : (f.mask == "strict" ? MaskKind::strict_causal : MaskKind::none);
  if (f.mask != "none" && f.mask != "causal" && f.mask != "strict")
    throw UsageError("--mask " + f.mask + ": expected none, causal or strict");
  o.mask.kind = kind;
  if (f.has_offset) o.mask.offset = f.offset;
  try {
    resolve_mask(o.mask, s.n_q, s.n_k);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(f.has_offset ? "--offset " + std::to_string(f.offset) : "--mask " + f.mask) +
                     ": " + e.what());
  }
  if (f.has_scale) {
    if (!(std::isfinite(f.scale) && f.scale > 0)) {
      std::ostringstream os;
      os << "--scale " << f.scale << ": must be finite and > 0";
      throw UsageError(os.str());
    }
    o.scale = f.scale;
  }
  return o;
}

/// Checks, before any work, that `path` can be created: its directory exists
/// and is writable and it is not itself a directory.
/// \throws UsageError naming the flag and the path.
inline void check_writable(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) throw UsageError(flag + " '" + path + "': is a directory");
  fs::path dir = p.parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw UsageError(flag + " '" + path + "': directory '" + dir.string() + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0)
    throw UsageError(flag + " '" + path + "': directory '" + dir.string() + "' is not writable");
}

/// Writes C-order data with the given shape as .npy.
/// \throws UsageError naming the flag and the file.
template <typename Scalar>
void write_array(const std::string& flag, const std::string& path, const std::vector<Index>& shape,
                 const Scalar* data, std::size_t count) {
  try {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw UsageError(flag + " '" + path + "': cannot open for writing");
    write_npy(out, shape, data, count, {}, path);
    out.close();
    if (!out) throw UsageError(flag + " '" + path + "': write failed");
  } catch (const std::invalid_argument& e) {
    throw UsageError(flag + ": " + e.what());
  }
}

/// Writes the output (and, if lse_path is not empty, the log-sum-exp:
/// (heads, n_q) for 3-D inputs, (n_q) for 2-D) in Scalar.
template <typename Scalar>
void write_outputs(const Stacked<Scalar>& r, const std::string& out_path, const std::string& lse_path) {
  write_array("--out", out_path, r.output.shape(), r.output.data.data(),
              static_cast<std::size_t>(r.output.data.size()));
  if (lse_path.empty()) return;
  const std::vector<Index> shape =
      r.output.three_d ? std::vector<Index>{r.lse.rows(), r.lse.cols()} : std::vector<Index>{r.lse.cols()};
  write_array("--lse", lse_path, shape, r.lse.data(), static_cast<std::size_t>(r.lse.size()));
}

}  // namespace attnkit::eval
