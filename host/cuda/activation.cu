// Elementwise activation where it cannot be fused into the layer before it
// (after a pooling layer). Its gradient needs no kernel of its own: the
// next layer's input-gradient kernel multiplies by act'(y) from the output.
// Mirrors lenet-core's Activation::forward_in_place.
#include "lenet.cuh"

// One thread per value; grid covers LEN threads. y = act(y) in place.
extern "C" __global__ void activation_forward(const ActArgs a) {
    int i = global_index();
    if (i >= a.len) {
        return;
    }
    a.y[i] = act_apply(a.act, a.y[i]);
}
