// The control protocol between umdevctl and umdevd: one JSON object per line
// over DIR/control.sock, answered by one JSON object per line.
//
// Requests:  {"cmd":"types"}                                   -> {"ok":true,"parents":[...]}
//            {"cmd":"list"}                                    -> {"ok":true,"mdevs":
//                  [{uuid,parent,type,iommu_group,open,broken[,vm]}]}
//              broken: the backend revoked the device's pins (until a reset)
//              an open instance's entry has "vm":{uuid,name,pid,accel,cgroup}
//            {"cmd":"stats"}                                   -> {"ok":true,"time_ns":T,
//                  "devices":[{uuid,parent,type,open,locked_bytes,
//                  [migration_state,][vm,]counters:{busy_ns,commands,bytes,errors}}]}
//              counters are those of the vendor's attributes the device has
//            {"cmd":"devices"}                                 -> {"ok":true,"devices":
//                  [{name,driver,iommu_group,open[,vm]}]}
//              devices a bus driver registered (passthrough), not mdevs
//            {"cmd":"start","parent":P,"type":T,"uuid":U[,"attrs":[{N:V},...]]}
//                                                              -> {"ok":true,"uuid":U}
//              attributes are written in order after creation; if one is
//              missing or refused the instance is removed again and the
//              failure reply carries "attr":{"name":N,"value":V,"exists":B}
//            {"cmd":"defined"}                                 -> {"ok":true,"definitions":
//                  [{"parent":P,"uuid":U,"mdev_type":T,"start":"auto"|"manual","attrs":[..]}]}
//            {"cmd":"define","parent":P,"uuid":U,"config":{mdev_type,start,attrs}
//                   [,"replace":true]}                         -> {"ok":true}
//              EEXIST defined already, unless replace
//            {"cmd":"undefine","parent":P,"uuid":U}            -> {"ok":true}  (ENOENT)
//            {"cmd":"stop","uuid":U}                           -> {"ok":true}
//            {"cmd":"attr-list","uuid":U}                      -> {"ok":true,"attributes":
//                                              [{"name":N,"readable":B,"writable":B}]}
//            {"cmd":"attr-get","uuid":U,"name":N}              -> {"ok":true,"value":V}
//            {"cmd":"attr-set","uuid":U,"name":N,"value":V}    -> {"ok":true}
//            {"cmd":"parent-attrs","parent":P}                 -> {"ok":true,"attributes":{N:V}}
//              a parent driver's read-only attributes (ENODEV no such parent)
// The sysfs tree (docs/sysfs.md), for tools where FUSE is not mounted; PATH
// is relative to the tree's root, as under --sysfs-mount:
//            {"cmd":"sysfs-stat","path":P}        -> {"ok":true,"kind":K,"mode":M[,"target":T]}
//            {"cmd":"sysfs-list","path":P}        -> {"ok":true,"entries":
//                                              [{"name":N,"kind":K,"mode":M[,"target":T]}]}
//            {"cmd":"sysfs-read","path":P}        -> {"ok":true,"value":V}
//            {"cmd":"sysfs-write","path":P,"value":V} -> {"ok":true}
//            K is "dir", "file" or "link"; M the permission bits; T a link's target.
//            Errors are the tree's: those a stat(), open(), read() or write()
//            on the mounted tree would give.
// Failures:  {"ok":false,"errno":N,"errname":"EEXIST","message":"..."}
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "umdev/common/error.h"

namespace umdev::control {

// Longest request line accepted; longer is refused with E2BIG and a disconnect.
inline constexpr size_t kMaxLineBytes = 64 * 1024;

nlohmann::json ErrorReply(const Error& error);
// The Error a failure reply carries; EPROTO for a malformed reply.
Error ErrorFromReply(const nlohmann::json& reply);

}  // namespace umdev::control
