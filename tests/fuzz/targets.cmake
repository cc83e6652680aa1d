# The fuzz targets and what each links; shared by the libFuzzer build
# (tests/fuzz/CMakeLists.txt) and the corpus replay tests (tests/CMakeLists.txt).
# Pairs of NAME and its libraries, comma-separated (a list cannot nest).
set(UMDEV_FUZZ_TARGETS
  fuzz_config "umdev::daemon"
  fuzz_definition "umdev::control"
  fuzz_control "umdev::control,umdev::vendor_serial"
  fuzz_vfio_user "umdev::vfio_user,umdev::pinning,umdev::vendor_serial,umdev::vendor_gpu"
  fuzz_migration "umdev::pinning,umdev::vendor_serial,umdev::vendor_gpu"
  fuzz_sysfs_write "umdev::sysfs,umdev::vendor_serial"
  fuzz_gpu_ring "umdev::pinning,umdev::vendor_gpu"
)

# umdev_foreach_fuzz_target(FUNCTION): calls FUNCTION(NAME LIBRARY...) for
# every target above.
function(umdev_foreach_fuzz_target fn)
  list(LENGTH UMDEV_FUZZ_TARGETS count)
  math(EXPR last "${count} - 1")
  foreach(i RANGE 0 ${last} 2)
    math(EXPR j "${i} + 1")
    list(GET UMDEV_FUZZ_TARGETS ${i} name)
    list(GET UMDEV_FUZZ_TARGETS ${j} deps)
    string(REPLACE "," ";" deps "${deps}")
    cmake_language(CALL ${fn} ${name} ${deps})
  endforeach()
endfunction()
