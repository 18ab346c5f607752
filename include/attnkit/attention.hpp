#pragma once

/// \file attnkit/attention.hpp
/// Exact attention: the problem and its conventions, the reference oracle,
/// the fused kernel with partial results, multi-head and grouped-query
/// attention, the exact merge, the KV cache, and the score policies the
/// kernel takes (attnkit/similarity/*).

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/heads.hpp"
#include "attnkit/attention/kv_cache.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/attention/reference.hpp"
#include "attnkit/similarity/alibi.hpp"
#include "attnkit/similarity/cosine.hpp"
#include "attnkit/similarity/hyperbolic.hpp"
#include "attnkit/similarity/rbf.hpp"
#include "attnkit/similarity/score.hpp"
#include "attnkit/similarity/softcap.hpp"
