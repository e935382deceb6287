// The input pipeline on the device: gather, augment and normalize one
// mini-batch from the training set, which stays on the device for the run.
// Mirrors the host's Augment::apply and Normalization::apply.
#include "lenet.cuh"

// One thread per output pixel: grid covers N * 784 threads.
// out[y][x] = src[y - dy][x'] with x' = x - dx (mirrored to 27 - x' when
// flipping), 0 where y - dy or x' falls outside the image.
extern "C" __global__ void gather_batch(const GatherArgs a) {
    int i = global_index();
    if (i >= a.n * 784) {
        return;
    }
    int img = i / 784;
    int pix = i % 784;
    int y = pix / 28;
    int x = pix % 28;
    int pos = a.first + img;
    unsigned int src = a.order[pos];
    int flip = 0, dy = 0, dx = 0;
    if (a.aug) {
        flip = a.aug[3 * pos];
        dy = a.aug[3 * pos + 1];
        dx = a.aug[3 * pos + 2];
    }
    int sy = y - dy;
    int sx0 = x - dx;
    int sx = flip ? 27 - sx0 : sx0;
    unsigned int v = 0;
    if (sy >= 0 && sy < 28 && sx0 >= 0 && sx0 < 28) {
        v = a.images[(size_t)src * 784 + sy * 28 + sx];
    }
    a.x[i] = ((float)v / 255.0f - a.mean) / a.std;
    if (pix == 0) {
        a.y[img] = a.labels[src];
    }
}
