// A valid module whose binding 0 is a uniform buffer, where the engine only
// ever binds storage buffers: the engine must refuse it.
#version 450
layout(local_size_x = 1) in;
layout(std140, binding = 0) uniform Params { uvec4 value; } params;
layout(std430, binding = 1) buffer Out { uint words[]; } result;

void main() {
  result.words[0] = params.value.x;
}
