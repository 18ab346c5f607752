#pragma once

/// \file attnkit/prune.hpp
/// Key-dimension pruning: weights, selectors, compensation, the pruned key
/// cache, prompt pruning and the evaluation protocol (docs/pruning.md).

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
