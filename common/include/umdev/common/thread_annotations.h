// Clang thread-safety annotations (no-ops under GCC), Abseil's names with a UMDEV_ prefix.
#pragma once

#if defined(__clang__)
#define UMDEV_TSA_(x) __attribute__((x))
#else
#define UMDEV_TSA_(x)
#endif

#define UMDEV_CAPABILITY(x) UMDEV_TSA_(capability(x))
#define UMDEV_SCOPED_CAPABILITY UMDEV_TSA_(scoped_lockable)
#define UMDEV_GUARDED_BY(x) UMDEV_TSA_(guarded_by(x))
#define UMDEV_PT_GUARDED_BY(x) UMDEV_TSA_(pt_guarded_by(x))
#define UMDEV_ACQUIRED_AFTER(...) UMDEV_TSA_(acquired_after(__VA_ARGS__))
#define UMDEV_REQUIRES(...) UMDEV_TSA_(requires_capability(__VA_ARGS__))
#define UMDEV_EXCLUDES(...) UMDEV_TSA_(locks_excluded(__VA_ARGS__))
#define UMDEV_ACQUIRE(...) UMDEV_TSA_(acquire_capability(__VA_ARGS__))
#define UMDEV_RELEASE(...) UMDEV_TSA_(release_capability(__VA_ARGS__))
#define UMDEV_NO_THREAD_SAFETY_ANALYSIS UMDEV_TSA_(no_thread_safety_analysis)
