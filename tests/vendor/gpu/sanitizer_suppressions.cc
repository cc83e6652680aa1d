// Sanitizer suppressions for the watchdog tests, which abandon llvmpipe
// devices with work pending and keep two instances alive at once.
//
// LeakSanitizer: an abandoned device is deliberately never destroyed; the
// engine keeps every handle it holds reachable, but llvmpipe's own
// bookkeeping for the abandoned submission (freed only if the device were
// destroyed) is not referenced from anything the checker scans.
// ThreadSanitizer: LLVM (not instrumented) initialises its managed statics
// lazily with fences TSan cannot see, so two instances' threads starting
// their JIT at the same time look like a race inside libLLVM.
extern "C" const char* __lsan_default_suppressions() {
  return "leak:libvulkan_lvp.so\n";
}

extern "C" const char* __tsan_default_suppressions() {
  return "race:llvm::sys::DynamicLibrary::getPermanentLibrary\n";
}
