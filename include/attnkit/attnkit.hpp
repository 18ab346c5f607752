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
#include "attnkit/attention/kv_cache.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/problem.hpp"
#include "attnkit/attention/reference.hpp"

#include "attnkit/similarity/rotary.hpp"

#include "attnkit/io/npy.hpp"

#include "attnkit/workload/synthetic.hpp"
