// RunTimesReporter: the console table, plus each benchmark's real time per
// iteration kept by name, so that a bench can print its figures as ratios
// to a floor measured in the same run. Used by one reporting thread.
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace umdev::bench {

class RunTimesReporter : public benchmark::ConsoleReporter {
 public:
  // |full_names|: keyed by the whole run name ("BM_X/8/min_time:0.100"),
  // else by the function's name alone ("BM_X").
  explicit RunTimesReporter(bool full_names = false) : full_names_(full_names) {}

  // With --benchmark_repetitions the median is kept, else the one run.
  void ReportRuns(const std::vector<Run>& reports) override {
    ConsoleReporter::ReportRuns(reports);
    for (const Run& run : reports) {
      if (run.error_occurred || run.iterations == 0) continue;
      const std::string name = full_names_ ? run.run_name.str() : run.run_name.function_name;
      const double ns = run.real_accumulated_time * 1e9 / static_cast<double>(run.iterations);
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name == "median") {
        ns_[name] = ns;
        medians_.insert(name);
      } else if (run.run_type == Run::RT_Iteration && !medians_.contains(name)) {
        ns_[name] = ns;
      }
    }
  }

 protected:
  // Nanoseconds per iteration of |name|; 0 when it did not run.
  double Ns(const std::string& name) const {
    auto it = ns_.find(name);
    return it == ns_.end() ? 0 : it->second;
  }
  const std::map<std::string, double>& all_ns() const { return ns_; }

 private:
  const bool full_names_;
  std::map<std::string, double> ns_;
  std::set<std::string> medians_;
};

}  // namespace umdev::bench
