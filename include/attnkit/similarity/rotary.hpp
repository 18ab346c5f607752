#include "attnkit/position/rotary.hpp"  // rotary position encoding moved to attnkit/position/
