// attnkit-eval: counts live heap bytes for the peak-memory column. Linked
// into the attnkit-eval executable only: with glibc this file DEFINES malloc,
// free, calloc, realloc and the aligned allocators for the whole process.
//
// Eigen allocates through std::malloc (not operator new), and operator new
// itself calls malloc, so counting at the malloc level sees every heap byte a
// method allocates. Three cases:
//  - glibc, no AddressSanitizer: the executable replaces malloc & co. (glibc
//    supports this: "Replacing malloc" in its manual). Each replacement
//    forwards to glibc's own allocator (__libc_malloc, ...) and adds or
//    subtracts malloc_usable_size() of the block: the bytes glibc actually
//    reserved for the caller (the request rounded up to 16 bytes, at least
//    24), not counting glibc's 8-byte chunk headers or memory it keeps for
//    reuse. Cost: two relaxed atomic operations per call.
//  - AddressSanitizer (the sanitizer build): ASan owns malloc, so the probe
//    installs ASan's malloc/free hooks instead and counts the requested sizes
//    (__sanitizer_get_allocated_size on free).
//  - anything else: no probe; peak bytes are reported as n/a.
// Memory obtained with mmap directly or on the stack is not counted (attnkit
// and Eigen's heap matrices do not do that).

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "attnkit-eval/memory.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ATTNKIT_EVAL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ATTNKIT_EVAL_ASAN 1
#endif

namespace {

std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_bytes{0};

void count_alloc(std::int64_t bytes) {
  const std::int64_t now = live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::int64_t peak = peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void count_free(std::int64_t bytes) {
  live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

class CountingProbe final : public attnkit_eval::PeakMemoryProbe {
 public:
  explicit CountingProbe(const char* how) : how_(how) {}
  void start() override {
    baseline_ = live_bytes.load(std::memory_order_relaxed);
    peak_bytes.store(baseline_, std::memory_order_relaxed);
  }
  std::int64_t peak_extra_bytes() const override {
    const std::int64_t extra = peak_bytes.load(std::memory_order_relaxed) - baseline_;
    return extra > 0 ? extra : 0;
  }
  const char* method() const override { return how_; }

 private:
  const char* how_;
  std::int64_t baseline_ = 0;
};

}  // namespace

#if defined(ATTNKIT_EVAL_ASAN)

extern "C" {
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*, std::size_t),
                                              void (*free_hook)(const volatile void*));
std::size_t __sanitizer_get_allocated_size(const volatile void* p);
}

attnkit_eval::PeakMemoryProbe* attnkit_eval::malloc_probe() {
  static CountingProbe probe("AddressSanitizer malloc/free hooks: requested bytes");
  static const bool installed = [] {
    return __sanitizer_install_malloc_and_free_hooks(
               [](const volatile void*, std::size_t size) { count_alloc(static_cast<std::int64_t>(size)); },
               [](const volatile void* p) {
                 count_free(static_cast<std::int64_t>(__sanitizer_get_allocated_size(p)));
               }) != 0;
  }();
  return installed ? &probe : nullptr;
}

#elif defined(__GLIBC__)

#include <malloc.h>

#include <cerrno>

extern "C" {
void* __libc_malloc(std::size_t size);
void __libc_free(void* p);
void* __libc_calloc(std::size_t n, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void* __libc_valloc(std::size_t size);
void* __libc_pvalloc(std::size_t size);
}

namespace {
void* counted(void* p) {
  if (p) count_alloc(static_cast<std::int64_t>(malloc_usable_size(p)));
  return p;
}
}  // namespace

extern "C" {

void* malloc(std::size_t size) noexcept {
  return counted(__libc_malloc(size));
}

void free(void* p) noexcept {
  if (!p) return;
  count_free(static_cast<std::int64_t>(malloc_usable_size(p)));
  __libc_free(p);
}

void* calloc(std::size_t n, std::size_t size) noexcept {
  return counted(__libc_calloc(n, size));
}

void* realloc(void* p, std::size_t size) noexcept {
  const std::size_t old = p ? malloc_usable_size(p) : 0;
  void* q = __libc_realloc(p, size);
  if (q) {
    count_free(static_cast<std::int64_t>(old));
    counted(q);
  } else if (p && size == 0) {
    count_free(static_cast<std::int64_t>(old));  // realloc(p, 0) freed p
  }
  return q;
}

void* memalign(std::size_t alignment, std::size_t size) noexcept {
  return counted(__libc_memalign(alignment, size));
}

void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  return counted(__libc_memalign(alignment, size));
}

int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (!p) return ENOMEM;
  *out = counted(p);
  return 0;
}

void* valloc(std::size_t size) noexcept {
  return counted(__libc_valloc(size));
}

void* pvalloc(std::size_t size) noexcept {
  return counted(__libc_pvalloc(size));
}

}  // extern "C"

attnkit_eval::PeakMemoryProbe* attnkit_eval::malloc_probe() {
  static CountingProbe probe("glibc malloc interposition: malloc_usable_size of live blocks");
  return &probe;
}

#else

attnkit_eval::PeakMemoryProbe* attnkit_eval::malloc_probe() {
  return nullptr;
}

#endif
