#pragma once

/// \file attnkit/attnkit.hpp
/// Umbrella header: everything public in attnkit. Including the individual
/// headers (attnkit/<area>/<concept>.hpp) compiles faster.

#include "attnkit/version.hpp"

#include "attnkit/core/mask.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/core/softmax.hpp"
#include "attnkit/core/types.hpp"

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/kv_cache.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/attention/reference.hpp"

#include "attnkit/similarity/rotary.hpp"
#include "attnkit/similarity/score.hpp"

#include "attnkit/io/npy.hpp"

#include "attnkit/workload/grouped.hpp"
#include "attnkit/workload/synthetic.hpp"

// Key-dimension pruning.
#include "attnkit/prune/cache.hpp"
#include "attnkit/prune/compensation.hpp"
#include "attnkit/prune/config.hpp"
#include "attnkit/prune/greedy.hpp"
#include "attnkit/prune/local_search.hpp"
#include "attnkit/prune/optimum.hpp"
#include "attnkit/prune/prompt.hpp"
#include "attnkit/prune/protocol.hpp"
#include "attnkit/prune/residual.hpp"
#include "attnkit/prune/selection.hpp"
#include "attnkit/prune/statistics.hpp"
#include "attnkit/prune/weights.hpp"

// Rotary position encoding (attnkit/similarity/rotary.hpp forwards here).
#include "attnkit/position/rotary.hpp"

// Kernelized linear attention.
#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/linear_state.hpp"
#include "attnkit/linear/positive_random_features.hpp"

// LSH bucketed attention.
#include "attnkit/sparse/lsh_attention.hpp"
#include "attnkit/sparse/lsh_hash.hpp"
