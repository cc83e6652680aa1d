// A runaway kernel for the dispatch watchdog tests: spins until binding 0's
// flag word becomes non-zero, which nothing ever writes, while counting in
// the next word (a side effect the compiler must keep, so it cannot drop the
// loop). Binding 0: {flag, counter}; one workgroup of one invocation.
#version 450
layout(local_size_x = 1) in;
layout(std430, binding = 0) coherent buffer State { uint flag; uint counter; } state;

void main() {
  while (state.flag == 0u) {
    state.counter += 1u;
  }
}
