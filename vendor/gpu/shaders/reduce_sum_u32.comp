// umdev_reduce_sum_u32: sum += values[0] + ... + values[count - 1] (wrapping).
// Bindings 0 (values), 1 (sum, one uint, which the caller zeroes first); push
// constant: uint count. Each 64-invocation workgroup reduces its elements in
// shared memory and adds its partial sum atomically, so any group count that
// covers count (ceil(count / 64)) gives the same result.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Values { uint values[]; };
layout(std430, binding = 1) buffer Sum { uint sum; };
layout(push_constant) uniform Params { uint count; } params;

shared uint partial[64];

void main() {
  uint i = gl_GlobalInvocationID.x;
  uint lid = gl_LocalInvocationID.x;
  partial[lid] = i < params.count ? values[i] : 0u;
  barrier();
  for (uint stride = 32u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    barrier();
  }
  if (lid == 0u) {
    atomicAdd(sum, partial[0]);
  }
}
