# Settings for attnkit's OWN targets (tests, benchmarks, tools, examples).
# Nothing here is attached to the attnkit INTERFACE target, so no flag leaks to
# consumers.

set(ATTNKIT_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # GoogleTest's TYPED_TEST_SUITE(Suite, Types) leaves its macro's variadic
  # argument empty, which -Wpedantic reports under clang (not under GCC).
  list(APPEND ATTNKIT_WARNING_FLAGS -Wno-gnu-zero-variadic-macro-arguments)
endif()

# attnkit_configure_target(<target> [NATIVE] [OPTIMIZE])
#   Warnings (as errors with ATTNKIT_WERROR), sanitizers with ATTNKIT_SANITIZE,
#   and -march=native with NATIVE when ATTNKIT_NATIVE is on (benchmarks only).
#   OPTIMIZE: with ATTNKIT_SANITIZE (whose pass compiles at -O0, tests/run.sh)
#   the target is compiled at -O1, for test programs whose run time at -O0
#   (3 to 7 times longer under the sanitizers) would cost the pass more than
#   -O1's compile time.
function(attnkit_configure_target target)
  cmake_parse_arguments(ARG "NATIVE;OPTIMIZE" "" "" ${ARGN})
  target_compile_options(${target} PRIVATE ${ATTNKIT_WARNING_FLAGS})
  if(ATTNKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(ATTNKIT_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all
                                             -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined -fno-sanitize-recover=all)
    if(ARG_OPTIMIZE)
      target_compile_options(${target} PRIVATE -O1)
    endif()
  endif()
  if(ARG_NATIVE AND ATTNKIT_NATIVE)
    attnkit_target_march_native(${target})
  endif()
endfunction()

# attnkit_target_march_native(<target>): -march=native, for the benchmark
# targets (ATTNKIT_NATIVE) and the Python extension (ATTNKIT_PYTHON_NATIVE).
function(attnkit_target_march_native target)
  target_compile_options(${target} PRIVATE -march=native)
  # GCC 12 reports (maybe-)uninitialized use inside its own avx512fintrin.h
  # (_mm512_undefined_*; GCC PR 105593, fixed in GCC 13) whenever AVX-512
  # intrinsics are inlined. Silence only that, only on native targets of
  # GCC < 13; the same headers are still checked by the non-native tests.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized -Wno-uninitialized)
  endif()
endfunction()
