// Runs a fuzz target's LLVMFuzzerTestOneInput over files and folders of
// inputs, without libFuzzer: the seed corpus and every input that once
// crashed, replayed by `make test` under the regular and ASan builds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void Replay(const std::filesystem::path& path, size_t& count) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  ++count;
}

}  // namespace

int main(int argc, char** argv) {
  size_t count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path path(argv[i]);
    if (std::filesystem::is_directory(path)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
        if (entry.is_regular_file()) Replay(entry.path(), count);
      }
    } else if (std::filesystem::exists(path)) {
      Replay(path, count);
    }
  }
  std::printf("replayed %zu inputs\n", count);
  std::fflush(stdout);
  // The targets keep their world (a server, its threads) for the process's
  // life, as under libFuzzer: leave without running static destructors,
  // which would free the logger under threads still using it.
  std::_Exit(count == 0 ? 1 : 0);
}
