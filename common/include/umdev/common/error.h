// Error and Result<T>: every fallible call returns a positive errno with context.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace umdev {

// A failure as the kernel or the vfio-user spec would report it. |code| is a
// positive errno (it becomes vfio_user_header::error_no or a write() error);
// |context| names the failed step and the object, for logs and CLI messages.
struct Error {
  int code = 0;
  std::string context;

  // "context: strerror (ENAME)", the form used in logs and CLI messages.
  std::string Describe() const;
};

template <typename T = void>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> Fail(int code, std::string context) {
  return std::unexpected<Error>(Error{code, std::move(context)});
}

// Call right after the failed syscall, before anything can clobber errno.
inline std::unexpected<Error> FailErrno(std::string context) {
  const int saved = errno;
  return Fail(saved, std::move(context));
}

// Fails with |error|'s errno under a new context, where the caller's words
// say more than the callee's.
inline std::unexpected<Error> FailAs(const Error& error, std::string context) {
  return Fail(error.code, std::move(context));
}

// Prepends |outer| to the context of |error| ("outer: inner").
Error Wrap(Error error, std::string_view outer);

// The symbolic name of an errno ("EINVAL"), or "E?" for an unknown value.
std::string_view ErrnoName(int code);

}  // namespace umdev

#define UMDEV_CONCAT_INNER_(a, b) a##b
#define UMDEV_CONCAT_(a, b) UMDEV_CONCAT_INNER_(a, b)

// Returns the error of |expr| (a Result) from the enclosing function.
#define UMDEV_TRY(expr)                                                   \
  do {                                                                    \
    if (auto umdev_try_ = (expr); !umdev_try_.has_value()) {              \
      return std::unexpected<::umdev::Error>(std::move(umdev_try_).error()); \
    }                                                                     \
  } while (0)

// Declares or assigns |lhs| from the value of |expr|, or returns its error.
#define UMDEV_ASSIGN_OR_RETURN(lhs, expr) \
  UMDEV_ASSIGN_OR_RETURN_IMPL_(UMDEV_CONCAT_(umdev_aor_, __LINE__), lhs, expr)
#define UMDEV_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)                 \
  auto tmp = (expr);                                                 \
  if (!tmp.has_value()) {                                            \
    return std::unexpected<::umdev::Error>(std::move(tmp).error());  \
  }                                                                  \
  lhs = std::move(tmp).value()
