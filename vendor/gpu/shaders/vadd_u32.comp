// umdev_vadd_u32: c[i] = a[i] + b[i] for every i < count (wrapping uint add).
// Bindings 0 (a), 1 (b), 2 (c); push constant: uint count. 64 invocations a
// workgroup, so dispatch ceil(count / 64) groups in x.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer A { uint a[]; };
layout(std430, binding = 1) readonly buffer B { uint b[]; };
layout(std430, binding = 2) writeonly buffer C { uint c[]; };
layout(push_constant) uniform Params { uint count; } params;

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i < params.count) {
    c[i] = a[i] + b[i];
  }
}
