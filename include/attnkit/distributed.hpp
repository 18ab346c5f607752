#pragma once

/// \file attnkit/distributed.hpp
/// Exact sequence-parallel attention over MPI (CMake: link attnkit::mpi,
/// component `mpi`; these headers include <mpi.h>, so the umbrella
/// attnkit/attnkit.hpp does not pull them in): the shardings, ring attention
/// for prefill, the sharded KV cache for decode, the cross-process merge of
/// partial results and the scatter/gather of stacked arrays.
/// docs/distributed.md describes the design.

#include "attnkit/distributed/kv_cache.hpp"
#include "attnkit/distributed/reduce.hpp"
#include "attnkit/distributed/ring_attention.hpp"
#include "attnkit/distributed/scatter.hpp"
#include "attnkit/distributed/sharding.hpp"
