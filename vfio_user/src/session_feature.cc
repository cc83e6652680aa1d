// Session: DEVICE_FEATURE and the migration data stream.
#include "session.h"

namespace umdev::vfio_user {

Result<Reply> Session::HandleDeviceFeature(const Message& message) {
  (void)message;
  return Fail(ENOTTY, "DEVICE_FEATURE: not supported yet");
}

Result<Reply> Session::HandleMigDataRead(const Message& message) {
  (void)message;
  return Fail(ENOTTY, "MIG_DATA_READ: not supported yet");
}

Result<Reply> Session::HandleMigDataWrite(const Message& message) {
  (void)message;
  return Fail(ENOTTY, "MIG_DATA_WRITE: not supported yet");
}

}  // namespace umdev::vfio_user
