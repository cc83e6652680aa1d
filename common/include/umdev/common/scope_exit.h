// ScopeExit: runs an undo step when a scope ends, unless dismissed.
#pragma once

#include <utility>

namespace umdev {

// Declared right after the step it undoes, so multi-step setup unwinds in reverse.
template <typename F>
class [[nodiscard]] ScopeExit {
 public:
  explicit ScopeExit(F f) : f_(std::move(f)) {}
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() {
    if (armed_) f_();
  }
  void Dismiss() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

}  // namespace umdev
