#pragma once
// A minimal test harness for the C++ unit tests: CHECK records a failure with its location and
// goes on; main returns the number of failures, which ctest reads as pass or fail.
#include <cstdio>

namespace mlperf_fast::testing {
inline int failures = 0;
}

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++mlperf_fast::testing::failures;                                           \
    }                                                                             \
  } while (0)

#define CHECK_THROWS(expr)                                                  \
  do {                                                                      \
    bool thrown = false;                                                    \
    try {                                                                   \
      (void)(expr);                                                         \
    } catch (const std::exception&) {                                       \
      thrown = true;                                                        \
    }                                                                       \
    if (!thrown) {                                                          \
      std::fprintf(stderr, "%s:%d: expected an exception from %s\n", __FILE__, __LINE__, #expr); \
      ++mlperf_fast::testing::failures;                                     \
    }                                                                       \
  } while (0)
