# Shared build settings and the helper that keeps every module target uniform.

add_library(umdev_warnings INTERFACE)
add_library(umdev::warnings ALIAS umdev_warnings)
target_compile_options(umdev_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
  -Wcast-align -Woverloaded-virtual -Wno-missing-field-initializers -Wnull-dereference -Wimplicit-fallthrough
  $<$<BOOL:${UMDEV_WERROR}>:-Werror>
  # A unity build #includes each source into a batch file, and GCC then
  # takes the source's anonymous-namespace types for a header's.
  $<$<AND:$<BOOL:${CMAKE_UNITY_BUILD}>,$<CXX_COMPILER_ID:GNU>>:-Wno-subobject-linkage>)

if(UMDEV_FUZZ)
  # libFuzzer's coverage on every module, ASan+UBSan as in the unit pass.
  # Clang 16 announces C++20 concepts as 201907, which hides std::expected in
  # libstdc++ 12; it implements what <expected> needs, so say 202002.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined -Wno-macro-redefined
                      -D__cpp_concepts=202002L)
  add_link_options(-fsanitize=address,undefined)
elseif(UMDEV_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(UMDEV_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT UMDEV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "UMDEV_SANITIZE must be '', 'address' or 'thread'")
endif()

# Debian's hardening (what dpkg-buildflags gives with hardening=+all) for
# every build that is neither sanitized nor a fuzz build: the package ships
# what the regular tests ran. _FORTIFY_SOURCE needs optimization, so only
# the optimized build types get it.
option(UMDEV_HARDENING "Build with Debian's hardening flags (fortify, stack protector, relro, now)" ON)
if(UMDEV_HARDENING AND NOT UMDEV_FUZZ AND UMDEV_SANITIZE STREQUAL "")
  add_compile_options(-fstack-protector-strong -fstack-clash-protection -fcf-protection
                      -Wformat -Werror=format-security
                      $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-D_FORTIFY_SOURCE=2>)
  add_link_options(-Wl,-z,relro -Wl,-z,now)
endif()

# umdev_library(NAME SRCS ... DEPS ... PRIVATE_DEPS ...)
# A module: public headers under include/umdev/NAME/, private sources in src/.
# Other modules see only include/; src/ is a PRIVATE include directory.
function(umdev_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(umdev_${name} STATIC ${A_SRCS})
  add_library(umdev::${name} ALIAS umdev_${name})
  target_include_directories(umdev_${name}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(umdev_${name} PUBLIC ${A_DEPS}
                        PRIVATE ${A_PRIVATE_DEPS} umdev::warnings)
endfunction()

# umdev_test(NAME SRCS ... DEPS ... LABELS ...)
# One GoogleTest executable registered with CTest; LABELS select the passes:
#   unit         run again under ASan+UBSan
#   concurrency  run again under TSan
#   integration  regular build only (daemon, CLI, real processes)
#   WHOLE        one CTest test for the whole executable instead of one per
#                case (for suites of hundreds of cheap cases sharing a set-up)
function(umdev_test name)
  cmake_parse_arguments(A "WHOLE" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gmock GTest::gtest_main
                        umdev::warnings)
  if(A_WHOLE)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES TIMEOUT 600 LABELS "${A_LABELS}")
  else()
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 300)
    # Labels go on once CTest has loaded the discovered tests (their names are
    # in ${name}_TESTS): gtest_discover_tests's PROPERTIES keeps only the first
    # element of a list, so "unit;concurrency" would lose "concurrency".
    set(labels_file "${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake")
    file(WRITE "${labels_file}"
         "if(DEFINED ${name}_TESTS)\n"
         "  set_tests_properties(\${${name}_TESTS} PROPERTIES LABELS \"${A_LABELS}\")\n"
         "endif()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${labels_file}")
  endif()
  umdev_label_targets(${name} "${A_LABELS}")
endfunction()

# umdev_label_targets(TARGET LABELS): aggregate targets per label
# (unit_tests, concurrency_tests, ...) let the sanitizer builds compile only
# the executables their pass runs.
function(umdev_label_targets target labels)
  foreach(label IN LISTS labels)
    if(NOT TARGET ${label}_tests)
      add_custom_target(${label}_tests)
    endif()
    add_dependencies(${label}_tests ${target})
  endforeach()
endfunction()
