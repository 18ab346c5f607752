#pragma once

/// \file attnkit/attnkit.hpp
/// Umbrella header: everything public in attnkit. The area headers
/// (attnkit/attention.hpp, attnkit/prune.hpp, attnkit/io.hpp) and the
/// individual headers (attnkit/<area>/<concept>.hpp) compile faster.

#include "attnkit/version.hpp"

#include "attnkit/core/mask.hpp"
#include "attnkit/core/metrics.hpp"
#include "attnkit/core/softmax.hpp"
#include "attnkit/core/types.hpp"

#include "attnkit/attention.hpp"

#include "attnkit/position/rotary.hpp"

#include "attnkit/linear/feature_maps.hpp"
#include "attnkit/linear/linear_attention.hpp"
#include "attnkit/linear/linear_state.hpp"
#include "attnkit/linear/positive_random_features.hpp"

#include "attnkit/sparse/lsh_attention.hpp"
#include "attnkit/sparse/lsh_hash.hpp"
#include "attnkit/sparse/topk.hpp"

#include "attnkit/io.hpp"

#include "attnkit/workload/grouped.hpp"
#include "attnkit/workload/llm_like.hpp"
#include "attnkit/workload/synthetic.hpp"
#include "attnkit/workload/workload.hpp"

#include "attnkit/prune.hpp"
