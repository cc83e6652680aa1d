// NextMigrationState and the arc set, against tables worked out by hand from
// the FSM text of include/uapi/linux/vfio.h.
#include <gtest/gtest.h>

#include <array>
#include <set>
#include <string>
#include <utility>

#include "umdev/mdev_core/migration.h"

namespace umdev {
namespace {

// One letter per state, in enum order (ERROR .. PRE_COPY_P2P).
constexpr std::string_view kLetters = "ESRCMPpq";
constexpr uint64_t kStopCopyFlag = VFIO_MIGRATION_STOP_COPY;
constexpr uint64_t kP2P = VFIO_MIGRATION_P2P;
constexpr uint64_t kPreCopy = kVfioMigrationPreCopy;

vfio_device_mig_state State(char letter) {
  return static_cast<vfio_device_mig_state>(kLetters.find(letter));
}

vfio_device_mig_state StateAt(uint32_t i) { return static_cast<vfio_device_mig_state>(i); }

struct FlagCase {
  const char* name;
  uint64_t flags;
  // The single arcs the uapi lists for these flags, as "from>to" pairs.
  std::vector<std::string> arcs;
  // Row = current state, column = target, both in enum order; the letter is
  // the next state, '-' is EINVAL.
  std::array<std::string_view, kVfioStateCount> next;
};

// E ERROR, S STOP, R RUNNING, C STOP_COPY, M RESUMING, P RUNNING_P2P,
// p PRE_COPY, q PRE_COPY_P2P.
const FlagCase kCases[] = {
    {"StopCopy",
     kStopCopyFlag,
     {"S>M", "M>S", "S>C", "C>S", "R>S", "S>R"},
     {"--------",  // ERROR: left only by reset.
      "-SRCM---",  // STOP
      "-SRSS---",  // RUNNING
      "-SSCS---",  // STOP_COPY
      "-SSSM---",  // RESUMING
      "--------", "--------", "--------"}},
    {"StopCopyP2P",
     kStopCopyFlag | kP2P,
     {"S>M", "M>S", "S>C", "C>S", "R>P", "P>R", "P>S", "S>P"},
     {"--------",  // ERROR
      "-SPCMP--",  // STOP
      "-PRPPP--",  // RUNNING
      "-SSCSS--",  // STOP_COPY
      "-SSSMS--",  // RESUMING
      "-SRSSP--",  // RUNNING_P2P
      "--------", "--------"}},
    {"StopCopyPreCopy",
     kStopCopyFlag | kPreCopy,
     {"S>M", "M>S", "S>C", "C>S", "R>S", "S>R", "R>p", "p>R", "p>C"},
     {"--------",  // ERROR
      "-SRCM-R-",  // STOP
      "-SRSS-p-",  // RUNNING
      "-SSCS---",  // STOP_COPY: no way back into PRE_COPY.
      "-SSSM-S-",  // RESUMING
      "--------",  // RUNNING_P2P: unsupported.
      "-RRCR-p-",  // PRE_COPY
      "--------"}},
    {"All",
     kStopCopyFlag | kP2P | kPreCopy,
     {"S>M", "M>S", "S>C", "C>S", "R>P", "P>R", "P>S", "S>P", "R>p", "p>R", "p>q", "q>p", "q>P",
      "P>q", "q>C"},
     {"--------",  // ERROR
      "-SPCMPPP",  // STOP
      "-PRPPPpP",  // RUNNING
      "-SSCSS--",  // STOP_COPY
      "-SSSMSSS",  // RESUMING
      "-SRSSPRq",  // RUNNING_P2P
      "-RRqRRpq",  // PRE_COPY
      "-PPCPPpq"}},  // PRE_COPY_P2P
};

class MigrationFsmTest : public ::testing::TestWithParam<FlagCase> {};

TEST_P(MigrationFsmTest, NextStateMatchesTheTableForEveryPair) {
  const FlagCase& c = GetParam();
  for (uint32_t from = 0; from < kVfioStateCount; ++from) {
    for (uint32_t to = 0; to < kVfioStateCount; ++to) {
      const char want = c.next[from][to];
      const auto got = NextMigrationState(c.flags, StateAt(from), StateAt(to));
      SCOPED_TRACE(std::string(MigrationStateName(StateAt(from))) + " -> " +
                   std::string(MigrationStateName(StateAt(to))));
      if (want == '-') {
        ASSERT_FALSE(got.has_value()) << MigrationStateName(*got);
        EXPECT_EQ(got.error().code, EINVAL);
      } else {
        ASSERT_TRUE(got.has_value()) << got.error().Describe();
        EXPECT_EQ(*got, State(want));
      }
    }
  }
}

TEST_P(MigrationFsmTest, ArcsAreExactlyTheDocumentedOnes) {
  const FlagCase& c = GetParam();
  std::set<std::pair<char, char>> documented;
  for (const std::string& arc : c.arcs) documented.emplace(arc[0], arc[2]);
  for (uint32_t from = 0; from < kVfioStateCount; ++from) {
    for (uint32_t to = 0; to < kVfioStateCount; ++to) {
      EXPECT_EQ(IsMigrationArc(c.flags, StateAt(from), StateAt(to)),
                documented.contains({kLetters[from], kLetters[to]}))
          << kLetters[from] << ">" << kLetters[to];
    }
  }
}

// Following the steps reaches the target over documented arcs only, and
// never through a saving state unless both ends are saving states.
TEST_P(MigrationFsmTest, WalksReachTheTargetWithoutPassingThroughSavingStates) {
  const FlagCase& c = GetParam();
  for (uint32_t from = 0; from < kVfioStateCount; ++from) {
    for (uint32_t to = 0; to < kVfioStateCount; ++to) {
      if (c.next[from][to] == '-') continue;
      const bool within_session = IsSavingState(StateAt(from)) && IsSavingState(StateAt(to));
      vfio_device_mig_state at = StateAt(from);
      for (int steps = 0; at != StateAt(to); ++steps) {
        ASSERT_LT(steps, 4) << kLetters[from] << ">" << kLetters[to];
        const vfio_device_mig_state next = NextMigrationState(c.flags, at, StateAt(to)).value();
        EXPECT_TRUE(IsMigrationArc(c.flags, at, next));
        if (next != StateAt(to)) {
          EXPECT_EQ(IsSavingState(next), within_session);
        }
        at = next;
      }
    }
  }
}

TEST_P(MigrationFsmTest, SupportedStatesFollowTheFlags) {
  const FlagCase& c = GetParam();
  for (uint32_t s = 0; s < kVfioStateCount; ++s) {
    // A state is supported exactly when its diagonal entry is not '-'.
    EXPECT_EQ(MigrationStateSupported(c.flags, StateAt(s)), c.next[s][s] != '-') << kLetters[s];
  }
}

INSTANTIATE_TEST_SUITE_P(Flags, MigrationFsmTest, ::testing::ValuesIn(kCases),
                         [](const auto& test_info) { return std::string(test_info.param.name); });

TEST(MigrationFsm, WithoutStopCopyNothingIsSupported) {
  for (const uint64_t flags : {uint64_t{0}, kP2P, kPreCopy, kP2P | kPreCopy}) {
    for (uint32_t from = 0; from < kVfioStateCount; ++from) {
      EXPECT_FALSE(MigrationStateSupported(flags, StateAt(from)));
      for (uint32_t to = 0; to < kVfioStateCount; ++to) {
        EXPECT_EQ(NextMigrationState(flags, StateAt(from), StateAt(to)).error().code, EINVAL);
        EXPECT_FALSE(IsMigrationArc(flags, StateAt(from), StateAt(to)));
      }
    }
  }
}

TEST(MigrationFsm, UnknownFlagBitsAreIgnored) {
  const uint64_t flags = kStopCopyFlag | (uint64_t{1} << 40);
  EXPECT_EQ(NextMigrationState(flags, VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP_COPY)
                .value(),
            VFIO_DEVICE_STATE_STOP);
}

TEST(MigrationFsm, SavingStatesAreTheSavingGroup) {
  std::string saving;
  for (uint32_t s = 0; s < kVfioStateCount; ++s) {
    if (IsSavingState(StateAt(s))) saving += kLetters[s];
  }
  EXPECT_EQ(saving, "Cpq");
}

TEST(MigrationFsm, StateNames) {
  EXPECT_EQ(MigrationStateName(VFIO_DEVICE_STATE_ERROR), "ERROR");
  EXPECT_EQ(MigrationStateName(VFIO_DEVICE_STATE_RUNNING_P2P), "RUNNING_P2P");
  EXPECT_EQ(MigrationStateName(kVfioStatePreCopyP2P), "PRE_COPY_P2P");
}

}  // namespace
}  // namespace umdev
