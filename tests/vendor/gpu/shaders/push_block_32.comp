// A valid module with a 32-byte push-constant block (eight uints, the last
// one read), for the check of the block's size against the bytes given.
#version 450
layout(local_size_x = 1) in;
layout(push_constant) uniform Params { uint words[8]; } params;
layout(std430, binding = 0) buffer Out { uint words[]; } result;

void main() {
  result.words[0] = params.words[7];
}
