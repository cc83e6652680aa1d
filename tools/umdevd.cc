// umdevd: the daemon, with the parent drivers this build offers.
#include "umdev/daemon/daemon.h"

int main(int argc, char** argv) {
  return umdev::daemon::RunUmdevd(argc, argv, [](umdev::daemon::Daemon&) {});
}
