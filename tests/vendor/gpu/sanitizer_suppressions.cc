// Sanitizer settings for every test binary that runs Vulkan (llvmpipe).
//
// The Vulkan loader unloads the ICD (libvulkan_lvp.so) when the last
// instance is destroyed. What llvmpipe still holds in its globals then
// looks leaked, from an "<unknown module>" that no suppression can name
// (Mesa 22.3.6-1+deb12u2 does this on every instance). Keeping the ICD
// mapped for the life of the process leaves that memory reachable, and
// anything else llvmpipe leaks attributable and suppressible below.
//
// The watchdog tests abandon llvmpipe devices with work pending and keep
// two instances alive at once:
//
// LeakSanitizer: an abandoned device is deliberately never destroyed; the
// engine keeps every handle it holds reachable, but llvmpipe's own
// bookkeeping for the abandoned submission (freed only if the device were
// destroyed) is not referenced from anything the checker scans.
// ThreadSanitizer: LLVM (not instrumented) initialises its managed statics
// lazily with fences TSan cannot see, so two instances' threads starting
// their JIT at the same time look like a race inside libLLVM.
#include <dlfcn.h>

namespace {

__attribute__((constructor)) void KeepTheCpuVulkanDriverLoaded() {
  // Absent (no Mesa) is fine: the Vulkan tests then skip.
  (void)::dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
}

}  // namespace

extern "C" const char* __lsan_default_suppressions() {
  return "leak:libvulkan_lvp.so\n";
}

extern "C" const char* __tsan_default_suppressions() {
  return "race:llvm::sys::DynamicLibrary::getPermanentLibrary\n";
}
