// Sequence-parallel attention over MPI, end to end, as a program that reads
// its tensors on one rank does it:
//   1. rank 0 holds Q, K, V of a grouped-query causal self-attention (here
//      generated; a tool would read them from files);
//   2. scatter_shards gives every rank its zigzag shard;
//   3. ring_attention_heads computes every rank's rows of the output;
//   4. gather_shards puts the output back together on rank 0, which checks
//      it against the single-process kernel;
//   5. the K/V shards become a DistributedKVCache, and a few tokens are
//      decoded, each step checked against the single-process kernel.
//
//   mpirun -np 2 build/release/examples/ring_attention     (ctest: example.ring_attention)

#include <attnkit/attnkit.hpp>
#include <attnkit/distributed.hpp>

#include <mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  using attnkit::Index;
  using attnkit::RowMatrix;
  const Index n = 1000, steps = 5, d = 64;
  const attnkit::HeadLayout heads{8, 2};
  const attnkit::Sharding zigzag = attnkit::Sharding::zigzag;
  const attnkit::AttentionOptions causal{attnkit::Mask::causal()};

  // 1. The whole problem on rank 0: n prompt tokens and `steps` more.
  RowMatrix<float> q, k, v;
  if (rank == 0) {
    q.resize(heads.q_heads * (n + steps), d);
    k.resize(heads.kv_heads * (n + steps), d);
    v.resize(heads.kv_heads * (n + steps), d);
    for (Index h = 0; h < heads.q_heads; ++h) {
      const auto w =
          attnkit::make_llm_like_workload<float>({n + steps, n + steps, d, d}, 7 + std::uint64_t(h));
      q.middleRows(h * (n + steps), n + steps) = w.q;
      if (h < heads.kv_heads) {
        k.middleRows(h * (n + steps), n + steps) = w.k;
        v.middleRows(h * (n + steps), n + steps) = w.v;
      }
    }
  }
  // Token rows [a, b) of every head (rank 0 only).
  const auto tokens = [&](const RowMatrix<float>& all, Index h_count, Index a, Index b) {
    RowMatrix<float> out(h_count * (b - a), d);
    for (Index h = 0; h < h_count; ++h)
      out.middleRows(h * (b - a), b - a) = all.middleRows(h * (n + steps) + a, b - a);
    return out;
  };
  const RowMatrix<float> empty;
  const RowMatrix<float> q_prompt = rank == 0 ? tokens(q, heads.q_heads, 0, n) : empty;
  const RowMatrix<float> k_prompt = rank == 0 ? tokens(k, heads.kv_heads, 0, n) : empty;
  const RowMatrix<float> v_prompt = rank == 0 ? tokens(v, heads.kv_heads, 0, n) : empty;

  // 2.-4. Prefill: scatter, ring, gather.
  const RowMatrix<float> qs = attnkit::scatter_shards(MPI_COMM_WORLD, 0, q_prompt, heads.q_heads, zigzag);
  const RowMatrix<float> ks = attnkit::scatter_shards(MPI_COMM_WORLD, 0, k_prompt, heads.kv_heads, zigzag);
  const RowMatrix<float> vs = attnkit::scatter_shards(MPI_COMM_WORLD, 0, v_prompt, heads.kv_heads, zigzag);
  attnkit::RingStats stats;
  const auto mine =
      attnkit::ring_attention_heads(MPI_COMM_WORLD, qs, ks, vs, heads, causal, {zigzag}, &stats);
  const RowMatrix<float> out = attnkit::gather_shards(MPI_COMM_WORLD, 0, mine.output, heads.q_heads, zigzag);
  int ok = 1;
  if (rank == 0) {
    const auto one = attnkit::flash_attention_heads(q_prompt, k_prompt, v_prompt, heads, causal);
    const double error = attnkit::max_abs_error(out, one.output);
    std::printf(
        "prefill of %lld tokens on %d ranks: max |ring - one process| = %.1e (rank 0: %lld kernel calls, "
        "%lld skipped, %.0f bytes sent)\n",
        static_cast<long long>(n), ranks, error, static_cast<long long>(stats.partial_calls),
        static_cast<long long>(stats.skipped_calls), stats.bytes_sent);
    ok = error < 1e-5 ? 1 : 0;
  }

  // 5. Decode: the prompt's K/V shards stay where they are; new tokens go to
  //    the ranks in round-robin blocks of 2; every rank gets the same result.
  attnkit::DistributedKVCache<float> cache(MPI_COMM_WORLD, d, d, {2, heads});
  cache.assign_prefill(ks, vs, zigzag);
  for (Index t = n; t < n + steps; ++t) {
    // The new token's rows, the same on every rank (broadcast from rank 0).
    RowMatrix<float> q_t =
        rank == 0 ? tokens(q, heads.q_heads, t, t + 1) : RowMatrix<float>(heads.q_heads, d);
    RowMatrix<float> k_t =
        rank == 0 ? tokens(k, heads.kv_heads, t, t + 1) : RowMatrix<float>(heads.kv_heads, d);
    RowMatrix<float> v_t =
        rank == 0 ? tokens(v, heads.kv_heads, t, t + 1) : RowMatrix<float>(heads.kv_heads, d);
    for (RowMatrix<float>* m : {&q_t, &k_t, &v_t})
      MPI_Bcast(m->data(), static_cast<int>(m->size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
    cache.append(k_t, v_t);
    const auto step = cache.attend(q_t, causal);
    if (rank == 0) {
      const auto one = attnkit::flash_attention_heads(q_t, tokens(k, heads.kv_heads, 0, t + 1),
                                                      tokens(v, heads.kv_heads, 0, t + 1), heads, causal);
      const double error = attnkit::max_abs_error(step.output, one.output);
      std::printf("decode step at position %lld (owner: rank %d): max |distributed - one process| = %.1e\n",
                  static_cast<long long>(t), cache.owner(t), error);
      ok = ok && error < 1e-5;
    }
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s\n", ok ? "ok" : "FAILED");
  MPI_Finalize();
  return ok ? 0 : 1;
}
