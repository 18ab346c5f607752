// attnkit-eval prune: the protocol of docs/pruning.md on every head — per
// query head, or with shared selection once per key/value head for its whole
// group — then a table of the metrics on stdout and the kept dimensions
// (int64) and judged outputs as .npy.

#include <cstdint>
#include <cstdio>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attnkit-eval/commands.hpp"
#include "attnkit-eval/outputs.hpp"
#include "attnkit-eval/progress.hpp"
#include "attnkit/prune/protocol.hpp"
#include "median.hpp"

namespace attnkit_eval {

namespace {

template <typename Scalar>
void prune_typed(const PruneArgs& a, std::ostream& out, std::ostream& err) {
  const ProblemShape& s = a.common.inputs.shape;
  Progress progress(err, a.common.quiet);
  const Inputs<Scalar> in = load_inputs<Scalar>(a.common.inputs);
  check_finite(in, a.common.inputs, "prune");
  attnkit::PruneProtocolOptions po = a.settings.protocol;
  po.prune.scale = a.common.options.scale;
  const Index group = s.q_heads / s.kv_heads, n = s.n_q;

  // One result per query head; the cache memory once per cache (one per
  // query head, or one per key/value head with shared selection).
  std::vector<attnkit::PruneProtocolResult<Scalar>> results;
  std::size_t cache_key_bytes = 0;
  for (Index g = 0; g < s.kv_heads; ++g) {
    const auto k = in.k.head(g), v = in.v.head(g);
    if (a.settings.shared_selection) {
      auto shared =
          attnkit::run_prune_protocol_shared(in.q.data.middleRows(g * group * n, group * n), group, k, v, po);
      cache_key_bytes += shared.front().memory.total_bytes();
      for (auto& r : shared)
        results.push_back(std::move(r));
      progress.step("prune: key/value head", g + 1, s.kv_heads);
    } else {
      for (Index i = 0; i < group; ++i) {
        const Index h = g * group + i;
        results.push_back(attnkit::run_prune_protocol(in.q.head(h), k, v, po));
        cache_key_bytes += results.back().memory.total_bytes();
        progress.step("prune: head", h + 1, s.q_heads);
      }
    }
  }

  const auto& first = results.front();
  const Index kept = first.selection.kept_count(), judged = first.output.rows();
  std::vector<std::int64_t> dims;
  attnkit::RowMatrix<Scalar> outputs(s.q_heads * judged, s.d_v);
  std::vector<double> errors;
  std::ostringstream table;
  table
      << "head  kv_head  kept  output_error  logit_rmse  dropped_weight  key_bytes_before  key_bytes_after\n";
  for (Index h = 0; h < s.q_heads; ++h) {
    const auto& r = results[static_cast<std::size_t>(h)];
    for (const Index c : r.selection.kept())
      dims.push_back(static_cast<std::int64_t>(c));
    outputs.middleRows(h * judged, judged) = r.output;
    errors.push_back(r.output_error);
    char line[200];
    std::snprintf(line, sizeof line, "%4ld  %7ld  %4ld  %12.4g  %10.4g  %14.4g  %16zu  %15zu\n",
                  static_cast<long>(h), static_cast<long>(h / group), static_cast<long>(kept), r.output_error,
                  r.logit_rmse, r.objective_total > 0 ? r.objective / r.objective_total : 0.0,
                  r.memory.unpruned_bytes, r.memory.total_bytes());
    table << line;
  }
  const std::size_t full_key_bytes = static_cast<std::size_t>(s.kv_heads) * first.memory.unpruned_bytes;
  out << "prune " << attnkit::to_string(po.prune.config) << ", ratio " << po.prune.ratio << ": keep " << kept
      << " of " << s.d << " key dimensions; " << s.q_heads << " head(s) over " << s.kv_heads
      << " key/value head(s), "
      << (a.settings.shared_selection ? "one selection per key/value head" : "one selection per query head")
      << ", " << judged << " judged queries each (tokens " << first.first_judged << ".."
      << first.first_judged + judged - 1 << "), query window " << po.window << ", recent " << po.prune.recent
      << "\n"
      << table.str() << "median output error " << attnkit::bench::median(errors) << "\n"
      << "key cache over all heads: " << full_key_bytes << " bytes at full width (one per key/value head), "
      << cache_key_bytes << " bytes pruned ("
      << (a.settings.shared_selection ? "one cache per key/value head" : "one cache per query head") << ")\n";

  StagedOutputs files;
  files.write_npy("--out-dims", a.dims_path,
                  s.three_d ? std::vector<Index>{s.q_heads, kept} : std::vector<Index>{kept}, dims.data(),
                  dims.size());
  if (!a.out_path.empty())
    files.write_npy(
        "--out", a.out_path,
        s.three_d ? std::vector<Index>{s.q_heads, judged, s.d_v} : std::vector<Index>{judged, s.d_v},
        outputs.data(), static_cast<std::size_t>(outputs.size()));
  files.commit();
}

}  // namespace

void run_prune(const PruneArgs& a, std::ostream& out, std::ostream& err) {
  if (a.common.inputs.shape.dtype == attnkit::NpyDtype::float32)
    prune_typed<float>(a, out, err);
  else
    prune_typed<double>(a, out, err);
}

}  // namespace attnkit_eval
