#!/usr/bin/env python3
"""Write the PyTorch golden files that `tests/golden_core.rs`,
`tests/course_notes.rs`, `tests/golden_host.rs` and `tests/golden_nets.rs`
compare lenet-core and the host's trainers against.

Run from the repository root with the interpreter that has PyTorch:

    /usr/bin/python3 tests/golden/gen_golden.py

Output (committed to the repository, so the Rust tests never need PyTorch):

    tests/golden/ops.bin    conv2d, pooling, linear, activations, losses,
                            optimizers, the two-sample course model,
                            bilinear upsampling, dropout with the
                            project's seeded mask
    tests/golden/lenet.bin  LeNet-5 classic, the max-pool variant and its
                            16/32-channel widening: weights,
                            logits, loss, gradients, Adam and SGD steps
    tests/golden/nets.bin   the course notes' CNN, two small VGGs and a
                            small AlexNet, with dropout: the same records,
                            and a float64 self-check of each (printed)

File format (little-endian), documented in tests/golden/README.md:

    b"LNGOLDEN"  u32 version  u32 record_count
    record_count x {
        u16 name_len, name (utf-8)       e.g. "conv2d/pad_multi/dw"
        u16 source_len, source (utf-8)   the PyTorch call that produced it
        u8 ndim, ndim x u32 dims         row-major, PyTorch's shape
        prod(dims) x f32 data
    }

Everything is float32, single-threaded, deterministic algorithms, and
seeded per group (`torch.manual_seed`), so two runs give identical bytes.
"""

import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MAGIC = b"LNGOLDEN"
# Bump when the format or the meaning/naming of records changes; the Rust
# reader (tests/common/golden.rs, GOLDEN_VERSION) must match.
VERSION = 1

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION_TEST_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
FASHION_TEST_LABELS = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_default_dtype(torch.float32)


class GoldenWriter:
    """Collects named float32 tensors and writes them in the LNGOLDEN format."""

    def __init__(self):
        self.records = []
        self.names = set()

    def add(self, name, tensor, source):
        if name in self.names:
            raise ValueError(f"duplicate record {name}")
        self.names.add(name)
        # Copy now: .numpy() shares memory with the tensor, and parameters,
        # gradients and state_dict() tensors change in place later.
        if isinstance(tensor, torch.Tensor):
            arr = tensor.detach().cpu().to(torch.float32).numpy()
        else:
            arr = np.asarray(tensor, dtype=np.float32)
        arr = np.array(arr, dtype="<f4", order="C", copy=True)
        self.records.append((name, source, arr))

    def write(self, path):
        out = bytearray()
        out += MAGIC
        out += struct.pack("<II", VERSION, len(self.records))
        for name, source, arr in self.records:
            nb = name.encode("utf-8")
            sb = source.encode("utf-8")
            out += struct.pack("<H", len(nb)) + nb
            out += struct.pack("<H", len(sb)) + sb
            out += struct.pack("<B", arr.ndim)
            out += struct.pack(f"<{arr.ndim}I", *arr.shape)
            out += arr.tobytes(order="C")
        with open(path, "wb") as f:
            f.write(out)
        print(f"wrote {path}: {len(self.records)} records, {len(out)} bytes")


def add_layer_grads(w, p, call, y, dy, x, wt, b):
    """Records, under the prefix `p`, a layer's output `y` (of `call`), the
    upstream gradient `dy`, and the gradients of the input `x`, the weight
    `wt` and the bias `b` (none if `b` is None) after `y.backward(dy)`."""
    w.add(p + "y", y, call)
    w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
    w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")
    w.add(p + "dw", wt.grad, f"w.grad after ({call}).backward(dy)")
    if b is not None:
        w.add(p + "db", b.grad, f"b.grad after ({call}).backward(dy)")


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def distinct_values(shape, gen_seed):
    """Values without ties (a shuffled ramp in [-1, 1)), so max pooling has
    one winner per window and the argmax is unambiguous."""
    g = torch.Generator().manual_seed(gen_seed)
    n = int(np.prod(shape))
    perm = torch.randperm(n, generator=g).to(torch.float32)
    return (perm / n * 2.0 - 1.0).reshape(shape)


# ---------------------------------------------------------------- conv2d

# name: (N, CI, CO, H, W, KH, KW, PH, PW, SH, SW, bias)
CONV_CONFIGS = {
    "k3_single": (2, 1, 1, 5, 5, 3, 3, 0, 0, 1, 1, True),
    "pad_multi": (2, 3, 4, 7, 6, 3, 3, 1, 1, 1, 1, True),
    "stride2_nobias": (2, 2, 3, 9, 8, 3, 3, 1, 1, 2, 2, False),
    "nonsquare": (2, 2, 2, 8, 7, 2, 4, 1, 2, 2, 1, True),
    "uneven_stride": (2, 1, 2, 10, 9, 3, 5, 0, 2, 3, 2, False),
    "k1": (2, 4, 3, 5, 5, 1, 1, 0, 0, 1, 1, True),
    "k1_s2_nobias": (2, 3, 2, 6, 5, 1, 1, 0, 0, 2, 2, False),
    "lenet_c1": (2, 1, 6, 28, 28, 5, 5, 2, 2, 1, 1, True),
    "lenet_c2": (2, 6, 16, 14, 14, 5, 5, 0, 0, 1, 1, True),
    # the larger networks' convolutions (VGG, AlexNet)
    "k3_p1_multi": (2, 4, 8, 10, 9, 3, 3, 1, 1, 1, 1, True),
    "k11_s4_p1": (2, 1, 6, 65, 65, 11, 11, 1, 1, 4, 4, True),
    "k5_p2": (2, 6, 16, 7, 7, 5, 5, 2, 2, 1, 1, True),
}


def gen_conv(w):
    torch.manual_seed(1)
    for name, cfg in CONV_CONFIGS.items():
        n, ci, co, h, wd, kh, kw, ph, pw, sh, sw, bias = cfg
        x = leaf(torch.randn(n, ci, h, wd))
        wt = leaf(torch.randn(co, ci, kh, kw) / (ci * kh * kw) ** 0.5)
        b = leaf(torch.randn(co)) if bias else None
        call = f"torch.nn.functional.conv2d(x, w, {'b' if bias else 'None'}, stride=({sh}, {sw}), padding=({ph}, {pw}))"
        y = F.conv2d(x, wt, b, stride=(sh, sw), padding=(ph, pw))
        dy = torch.randn_like(y)
        y.backward(dy)
        p = f"conv2d/{name}/"
        w.add(p + "cfg", [n, ci, co, h, wd, kh, kw, ph, pw, sh, sw, int(bias)],
              "config (N, CI, CO, H, W, KH, KW, PH, PW, SH, SW, bias) of " + call)
        w.add(p + "x", x, "torch.randn(N, CI, H, W), input of " + call)
        w.add(p + "w", wt, "torch.randn(CO, CI, KH, KW) / sqrt(CI*KH*KW), weight of " + call)
        if bias:
            w.add(p + "b", b, "torch.randn(CO), bias of " + call)
        add_layer_grads(w, p, call, y, dy, x, wt, b)


# ---------------------------------------------------------------- pooling

# name: (N, C, H, W, KH, KW, PH, PW, SH, SW)
POOL_CONFIGS = {
    "w2_s2": (2, 2, 6, 6, 2, 2, 0, 0, 2, 2),
    "w3_s2_p1": (2, 2, 7, 7, 3, 3, 1, 1, 2, 2),
    "w3_s1_overlap": (2, 2, 5, 5, 3, 3, 0, 0, 1, 1),
    "nonsquare": (2, 3, 7, 9, 2, 3, 1, 1, 1, 2),
    "floor_tail": (2, 1, 7, 8, 3, 2, 0, 1, 2, 3),
    "lenet_p1": (2, 6, 24, 24, 2, 2, 0, 0, 2, 2),
    "lenet_p2": (2, 16, 8, 8, 2, 2, 0, 0, 2, 2),
    "w3_s2_overlap": (2, 3, 15, 13, 3, 3, 0, 0, 2, 2),
}


def gen_pool(w):
    torch.manual_seed(2)
    for idx, (name, cfg) in enumerate(POOL_CONFIGS.items()):
        n, c, h, wd, kh, kw, ph, pw, sh, sw = cfg
        x0 = distinct_values((n, c, h, wd), 100 + idx)
        for kind in ("max", "avg"):
            x = leaf(x0)
            if kind == "max":
                call = (f"torch.nn.functional.max_pool2d(x, ({kh}, {kw}), stride=({sh}, {sw}), "
                        f"padding=({ph}, {pw}), return_indices=True)")
                y, ind = F.max_pool2d(x, (kh, kw), stride=(sh, sw), padding=(ph, pw), return_indices=True)
            else:
                call = (f"torch.nn.functional.avg_pool2d(x, ({kh}, {kw}), stride=({sh}, {sw}), "
                        f"padding=({ph}, {pw}))  # count_include_pad=True")
                y = F.avg_pool2d(x, (kh, kw), stride=(sh, sw), padding=(ph, pw))
            dy = torch.randn_like(y)
            y.backward(dy)
            p = f"{kind}_pool2d/{name}/"
            w.add(p + "cfg", [n, c, h, wd, kh, kw, ph, pw, sh, sw],
                  "config (N, C, H, W, KH, KW, PH, PW, SH, SW) of " + call)
            w.add(p + "x", x, "shuffled ramp without ties (torch.randperm), input of " + call)
            w.add(p + "y", y, call)
            if kind == "max":
                w.add(p + "argmax", ind.to(torch.float32), "indices (row*W + col) returned by " + call)
            w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
            w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")


# ---------------------------------------------------------------- linear

# name: (N, I, O, bias)
LINEAR_CONFIGS = {
    "i7_o5": (3, 7, 5, True),
    "i16_o1_nobias": (3, 16, 1, False),
    "i84_o10": (3, 84, 10, True),
}


def gen_linear(w):
    torch.manual_seed(3)
    for name, (n, i, o, bias) in LINEAR_CONFIGS.items():
        x = leaf(torch.randn(n, i))
        wt = leaf(torch.randn(o, i) / i ** 0.5)
        b = leaf(torch.randn(o)) if bias else None
        call = f"torch.nn.functional.linear(x, w, {'b' if bias else 'None'})"
        y = F.linear(x, wt, b)
        dy = torch.randn_like(y)
        y.backward(dy)
        p = f"linear/{name}/"
        w.add(p + "cfg", [n, i, o, int(bias)], "config (N, I, O, bias) of " + call)
        w.add(p + "x", x, "torch.randn(N, I), input of " + call)
        w.add(p + "w", wt, "torch.randn(O, I) / sqrt(I), weight of " + call)
        if bias:
            w.add(p + "b", b, "torch.randn(O), bias of " + call)
        add_layer_grads(w, p, call, y, dy, x, wt, b)


# ---------------------------------------------------------------- activations

def gen_activations(w):
    torch.manual_seed(4)
    base = torch.randn(64) * 3.0
    # A few large magnitudes exercise saturation; no exact zeros (ReLU's kink).
    base[:6] = torch.tensor([-20.0, -9.5, -0.001, 0.001, 9.5, 20.0])
    for name, fn, call in (
        ("sigmoid", torch.sigmoid, "torch.sigmoid(x)"),
        ("relu", torch.relu, "torch.relu(x)"),
        ("tanh", torch.tanh, "torch.tanh(x)"),
    ):
        x = leaf(base)
        y = fn(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        p = f"activation/{name}/"
        w.add(p + "x", x, "torch.randn(64) * 3 with six fixed saturating values, input of " + call)
        w.add(p + "y", y, call)
        w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
        w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")
    x = torch.randn(4, 10) * 2.0
    x[1] += 1000.0  # stability: naive exp overflows
    x[2] -= 1000.0
    x[3, 0] = 50.0
    w.add("activation/softmax/x", x, "torch.randn(4, 10) * 2, row 1 +1000, row 2 -1000, x[3,0]=50")
    w.add("activation/softmax/y", torch.softmax(x, dim=1), "torch.softmax(x, dim=1)")


# ---------------------------------------------------------------- losses

def gen_losses(w):
    torch.manual_seed(5)
    # cross-entropy from logits, mean over the batch
    logits = leaf(torch.randn(4, 10) * 2.0)
    with torch.no_grad():
        logits[3] += 200.0
    target = torch.tensor([3, 0, 9, 5])
    call = "torch.nn.functional.cross_entropy(logits, target)  # mean over N"
    loss = F.cross_entropy(logits, target)
    loss.backward()
    w.add("loss/cross_entropy/logits", logits, "torch.randn(4, 10) * 2, row 3 + 200, input of " + call)
    w.add("loss/cross_entropy/target", target.to(torch.float32), "class indices, target of " + call)
    w.add("loss/cross_entropy/loss", loss.reshape(1), call)
    w.add("loss/cross_entropy/dlogits", logits.grad, f"logits.grad after ({call}).backward()")

    # MSE, mean
    pred = leaf(torch.randn(12))
    tgt = torch.randn(12)
    call = "torch.nn.functional.mse_loss(pred, target)  # mean"
    loss = F.mse_loss(pred, tgt)
    loss.backward()
    w.add("loss/mse/pred", pred, "torch.randn(12), input of " + call)
    w.add("loss/mse/target", tgt, "torch.randn(12), target of " + call)
    w.add("loss/mse/loss", loss.reshape(1), call)
    w.add("loss/mse/dpred", pred.grad, f"pred.grad after ({call}).backward()")

    # sum of squared errors, the loss of the course's "learning a kernel"
    # example (l = (Y_hat - Y) ** 2; l.sum().backward()): no factor 1/2
    pred = leaf(torch.randn(12))
    tgt = torch.randn(12)
    call = "((pred - target) ** 2).sum()"
    loss = ((pred - tgt) ** 2).sum()
    loss.backward()
    w.add("loss/sum_squares/pred", pred, "torch.randn(12), input of " + call)
    w.add("loss/sum_squares/target", tgt, "torch.randn(12), target of " + call)
    w.add("loss/sum_squares/loss", loss.reshape(1), call)
    w.add("loss/sum_squares/dpred", pred.grad, f"pred.grad after ({call}).backward()")

    # binary cross-entropy on probabilities, mean
    p = leaf(torch.rand(12) * 0.98 + 0.01)
    t = (torch.rand(12) > 0.5).to(torch.float32)
    with torch.no_grad():
        t[0] = 0.3  # soft targets are allowed by BCELoss
        t[1] = 0.75
    call = "torch.nn.functional.binary_cross_entropy(p, t)  # mean"
    loss = F.binary_cross_entropy(p, t)
    loss.backward()
    w.add("loss/bce/p", p, "torch.rand(12) * 0.98 + 0.01, input of " + call)
    w.add("loss/bce/target", t, "0/1 targets with two soft ones, target of " + call)
    w.add("loss/bce/loss", loss.reshape(1), call)
    w.add("loss/bce/dp", p.grad, f"p.grad after ({call}).backward()")

    # BCE at the edges: log(0) is clamped to -100
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])
    t = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    w.add("loss/bce_edge/p", p, "probabilities exactly 0 and 1, input of " + call)
    w.add("loss/bce_edge/target", t, "targets, target of " + call)
    w.add("loss/bce_edge/loss", F.binary_cross_entropy(p, t).reshape(1),
          call + "  # log clamped at -100")


# ---------------------------------------------------------------- optimizers

# name: (torch optimizer constructor text, factory)
OPTIM_CONFIGS = {
    "adam_default": ("torch.optim.Adam([p], lr=1e-3)", lambda p: torch.optim.Adam([p], lr=1e-3)),
    "adam_custom": ("torch.optim.Adam([p], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)",
                    lambda p: torch.optim.Adam([p], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "sgd_plain": ("torch.optim.SGD([p], lr=0.1)", lambda p: torch.optim.SGD([p], lr=0.1)),
    "sgd_momentum": ("torch.optim.SGD([p], lr=0.1, momentum=0.9)",
                     lambda p: torch.optim.SGD([p], lr=0.1, momentum=0.9)),
    "sgd_momentum_wd": ("torch.optim.SGD([p], lr=0.05, momentum=0.9, weight_decay=0.01)",
                        lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.9, weight_decay=0.01)),
}
OPTIM_STEPS = 6
OPTIM_N = 20


def gen_optim(w):
    torch.manual_seed(6)
    for name, (ctor, make) in OPTIM_CONFIGS.items():
        p = torch.randn(OPTIM_N).requires_grad_(True)
        p0 = p.detach().clone()
        opt = make(p)
        grads = torch.randn(OPTIM_STEPS, OPTIM_N)
        after = []
        for t in range(OPTIM_STEPS):
            opt.zero_grad()
            p.grad = grads[t].clone()
            opt.step()
            after.append(p.detach().clone())
        pre = f"optim/{name}/"
        w.add(pre + "p0", p0, "torch.randn(20), initial parameters of " + ctor)
        w.add(pre + "grads", grads, "torch.randn(steps, 20), p.grad before each step")
        w.add(pre + "params", torch.stack(after), f"p after each {ctor}.step()")


# ---------------------------------------------------------------- course model

COURSE_STEPS = 800


def course_inputs():
    a = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    return torch.stack([a, a.t().contiguous()]).reshape(2, 1, 4, 4) / 8.0


def gen_course(w):
    """The course notes' two-sample model: Conv2d(1,1,3) -> MaxPool2d(2) ->
    ReLU -> Linear(1,1) -> Sigmoid, BCE, Adam(lr=1e-2). Fixed initial weights
    (not random) so the Rust test can rebuild them without a PRNG."""
    x = course_inputs()
    y = torch.tensor([[0.0], [1.0]])
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1), nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[0.2, -0.1, 0.3], [0.1, 0.2, -0.2], [0.3, 0.1, 0.1]]]]))
        model[0].bias.fill_(0.05)
        model[4].weight.fill_(0.5)
        model[4].bias.fill_(-0.1)
    for k, v in model.state_dict().items():
        w.add(f"course/init/{k}", v, f"fixed initial value of state_dict()['{k}']")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(COURSE_STEPS):
        opt.zero_grad()
        loss = F.binary_cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    w.add("course/x", x, "torch.arange(16).reshape(4, 4) and its transpose, / 8")
    w.add("course/y", y, "labels 0 and 1")
    w.add("course/losses", losses,
          "binary_cross_entropy(model(x), y) before each of the first "
          f"{COURSE_STEPS} torch.optim.Adam(lr=1e-2) steps")


# ---------------------------------------------------------------- upsample

# name: (N, C, H, W, OH, OW)
UPSAMPLE_CONFIGS = {
    "28_224": (1, 1, 28, 28, 224, 224),
    "28_32": (2, 1, 28, 28, 32, 32),
    "nonsquare": (2, 2, 6, 9, 11, 14),
    "down": (2, 2, 13, 11, 5, 7),
}


def gen_upsample(w):
    torch.manual_seed(8)
    for name, (n, c, h, wd, oh, ow) in UPSAMPLE_CONFIGS.items():
        x = leaf(torch.randn(n, c, h, wd))
        call = (f"torch.nn.functional.interpolate(x, size=({oh}, {ow}), mode='bilinear', "
                "align_corners=False)")
        y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        dy = torch.randn_like(y)
        y.backward(dy)
        p = f"upsample/{name}/"
        w.add(p + "cfg", [n, c, h, wd, oh, ow], "config (N, C, H, W, OH, OW) of " + call)
        w.add(p + "x", x, "torch.randn(N, C, H, W), input of " + call)
        w.add(p + "y", y, call)
        w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
        w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")


# ---------------------------------------------------------------- dropout
#
# PyTorch's dropout draws from its own generator, which nothing outside
# PyTorch reproduces; the project's mask is a pure function of
# (seed, step, layer, index) (core/src/dropout.rs). These functions mirror
# it in numpy uint64 arithmetic, and `_bits_int` once more in Python
# integers, as a check of the mirror.

U64 = np.uint64


def mix64(z):
    """SplitMix64's output function on a uint64 array (wrapping)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def dropout_bits(seed, step, layer, index):
    """lenet_core::dropout::bits for an array of indices: 24 uniform bits."""
    with np.errstate(over="ignore"):
        key = np.array([step], dtype=U64) + (np.array([layer], dtype=U64) << U64(48))
        a = mix64(np.array([seed], dtype=U64) ^ mix64(key))
        idx = np.asarray(index, dtype=U64) * U64(0x9E3779B97F4A7C15)
        return (mix64(a ^ idx) >> U64(40)).astype(np.uint32)


def dropout_threshold(p):
    """lenet_core::dropout::threshold: round(p * 2^24), in f32 as Rust does."""
    return np.uint32(np.float32(p) * np.float32(16777216.0) + np.float32(0.5))


def dropout_scale(p):
    """lenet_core::dropout::scale: 1 / (1 - p) in f32."""
    return np.float32(1.0) / (np.float32(1.0) - np.float32(p))


def dropout_noise(seed, step, layer, n, features, p):
    """The (n, features) noise tensor of lenet_core::dropout::mask:
    0 where bits < threshold, else scale; index = sample * features + feature."""
    b = dropout_bits(seed, step, layer, np.arange(n * features, dtype=np.uint64))
    noise = np.where(b < dropout_threshold(p), np.float32(0.0), dropout_scale(p)).astype(np.float32)
    return torch.from_numpy(noise.reshape(n, features))


def _mix64_int(z):
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _bits_int(seed, step, layer, index):
    m = (1 << 64) - 1
    a = _mix64_int(seed ^ _mix64_int((step + (layer << 48)) & m))
    return _mix64_int(a ^ ((index * 0x9E3779B97F4A7C15) & m)) >> 40


def check_dropout_mirror():
    """The numpy mirror against Python integers, and the doctest's facts
    from core/src/dropout.rs."""
    for seed, step, layer in ((0, 0, 0), (7, 1, 12), (16777215, 123456, 39), (7, 2, 19)):
        idx = np.arange(0, 5000, dtype=np.uint64) * np.uint64(3355) + np.uint64(step)
        got = dropout_bits(seed, step, layer, idx)
        want = [_bits_int(seed, step, layer, int(i)) for i in idx]
        assert got.tolist() == want, (seed, step, layer)
    kept = int((dropout_noise(7, 1, 12, 1, 10000, 0.5) != 0).sum())
    assert 4800 <= kept < 5200, kept
    assert float(dropout_noise(7, 1, 12, 1, 4, 0.0)[0, 3]) == 1.0
    assert dropout_scale(0.5) == 2.0
    assert dropout_threshold(0.5) == 1 << 23
    print(f"dropout mirror: numpy == python ints on 20000 values; mask(7, 1, 12, i, 0.5) keeps {kept} of 10000")


class SeededDropout(nn.Module):
    """nn.Dropout(p) with lenet_core's mask: in training `x * noise`, noise
    from `dropout_noise(seed, self.step, layer, ...)`; the identity in eval
    mode. Autograd gives dx = dy * noise, as nn.Dropout's backward."""

    def __init__(self, p, layer, seed):
        super().__init__()
        self.p, self.layer, self.seed, self.step = p, layer, seed, 0

    def forward(self, x):
        if not self.training:
            return x
        n, f = x.shape
        return x * dropout_noise(self.seed, self.step, self.layer, n, f, self.p).to(x.dtype)


# name: (seed, step, layer, N, features, p)
DROPOUT_CONFIGS = {
    "p05": (7, 0, 12, 4, 64, 0.5),
    "p02_step3": (12345, 3, 20, 3, 50, 0.2),
}

# (seed, step, layer, index) for a table of raw bits(): all below 2^24,
# so f32 holds them exactly, as it holds the 24-bit results.
DROPOUT_BITS_KEYS = [
    (s, t, l, i)
    for s in (0, 7, 16777215)
    for t in (0, 1, 2, 1000)
    for l in (0, 12, 39)
    for i in (0, 1, 2, 63, 4096, 16777215)
]


def gen_dropout(w):
    torch.manual_seed(9)
    for name, (seed, step, layer, n, feats, p) in DROPOUT_CONFIGS.items():
        x = leaf(torch.randn(n, feats))
        m = SeededDropout(p, layer, seed)
        m.step = step
        noise = dropout_noise(seed, step, layer, n, feats, p)
        call = f"x * noise  # nn.Dropout({p}) with lenet_core::dropout::mask({seed}, {step}, {layer}, i, {p})"
        y = m(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        pre = f"dropout/{name}/"
        w.add(pre + "cfg", [seed, step, layer, n, feats], "config (seed, step, layer, N, features) of " + call)
        w.add(pre + "p", [p], "drop probability of " + call)
        w.add(pre + "x", x, "torch.randn(N, features), input of " + call)
        w.add(pre + "noise", noise, "0 or 1/(1-p) per element, index = sample * features + feature "
              "(numpy mirror of lenet_core::dropout::mask)")
        w.add(pre + "y", y, call)
        w.add(pre + "dy", dy, "torch.randn_like(y), upstream gradient")
        w.add(pre + "dx", x.grad, f"x.grad after ({call}).backward(dy)")
    table = [[s, t, l, i, int(dropout_bits(s, t, l, [i])[0])] for s, t, l, i in DROPOUT_BITS_KEYS]
    assert all(row[4] == _bits_int(*row[:4]) for row in table)
    w.add("dropout/bits", table, "rows (seed, step, layer, index, lenet_core::dropout::bits(...)) "
          "from the numpy mirror in gen_golden.py")


# ---------------------------------------------------------------- LeNet-5

def load_fashion(n):
    with gzip.open(FASHION_TEST_IMAGES, "rb") as f:
        data = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 2051 and rows == 28 and cols == 28 and count >= n
    img = np.frombuffer(data, dtype=np.uint8, count=n * 784, offset=16).reshape(n, 1, 28, 28)
    with gzip.open(FASHION_TEST_LABELS, "rb") as f:
        lab = f.read()
    magic, count = struct.unpack(">II", lab[:8])
    assert magic == 2049 and count >= n
    labels = np.frombuffer(lab, dtype=np.uint8, count=n, offset=8)
    return torch.tensor(img, dtype=torch.float32) / 255.0, torch.tensor(labels, dtype=torch.int64)


def lenet_classic():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def lenet_max():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2), nn.Flatten(),
        nn.Linear(256, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def lenet_wide():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2), nn.Flatten(),
        nn.Linear(512, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


LENET_BATCH = 4
ADAM_STEPS = 10
SGD_STEPS = 5


def gen_lenet(w, name, make, seed, x, labels):
    torch.manual_seed(seed)
    model = make()
    p = f"lenet/{name}/"
    ctor = f"{make.__name__}() (nn.Sequential, default init) after torch.manual_seed({seed})"
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, v in init.items():
        w.add(p + "init/" + k, v, f"state_dict()['{k}'] of {ctor}")
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    w.add(p + "logits", logits, "model(x)")
    w.add(p + "loss", loss.reshape(1), "torch.nn.functional.cross_entropy(model(x), labels)  # mean over N")
    for k, prm in model.named_parameters():
        w.add(p + "grad/" + k, prm.grad, f"grad of '{k}' after cross_entropy(model(x), labels).backward()")

    for opt_name, ctor_text, make_opt, steps in (
        ("adam", "torch.optim.Adam(model.parameters(), lr=1e-3)",
         lambda ps: torch.optim.Adam(ps, lr=1e-3), ADAM_STEPS),
        ("sgd", "torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)",
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), SGD_STEPS),
    ):
        model.load_state_dict(init)
        opt = make_opt(model.parameters())
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        w.add(p + opt_name + "/losses", losses,
              f"cross_entropy(model(x), labels) before each of {steps} {ctor_text}.step() calls from init")
        for k, v in model.state_dict().items():
            w.add(p + opt_name + "/final/" + k, v, f"state_dict()['{k}'] after {steps} {ctor_text} steps")


# ---------------------------------------------------------------- larger networks
#
# The course notes' CNN, VGG and AlexNet, built from the same layer lists as
# lenet_core::model::Arch::layers (core/src/model/arch.rs), with ReLU and
# SeededDropout standing in for nn.Dropout.

CLASSES = 10


def _div(n, d):
    return max(n // max(d, 1), 1)


def _out(n, k, p, s):
    return (n + 2 * p - k) // s + 1


def arch_layers(kind, blocks=0, width_div=1, size=28, hidden=0):
    """The layer list of Arch::Cnn / Vgg / AlexNet as tuples:
    ("conv", in, out, kernel, padding, stride), ("act",), ("maxpool", k, s),
    ("flatten",), ("linear", in, out), ("dropout", p), ("upsample", h, w)."""
    layers = []
    shape = [1, 28, 28]

    def push(l):
        t = l[0]
        if t == "conv":
            _, i, o, k, p, s = l
            assert shape[0] == i
            shape[:] = [o, _out(shape[1], k, p, s), _out(shape[2], k, p, s)]
        elif t == "maxpool":
            _, k, s = l
            shape[1:] = [_out(shape[1], k, 0, s), _out(shape[2], k, 0, s)]
        elif t == "upsample":
            shape[1:] = [l[1], l[2]]
        elif t == "flatten":
            shape[:] = [shape[0] * shape[1] * shape[2], 1, 1]
        elif t == "linear":
            assert shape[0] == l[1]
            shape[:] = [l[2], 1, 1]
        assert min(shape) >= 1, (l, shape)
        layers.append(l)

    def head():
        push(("flatten",))
        push(("linear", shape[0], hidden))
        push(("act",))
        push(("dropout", 0.5))
        push(("linear", hidden, hidden))
        push(("act",))
        push(("dropout", 0.5))
        push(("linear", hidden, CLASSES))

    if kind == "cnn":
        for l in (("conv", 1, 64, 3, 0, 1), ("maxpool", 2, 2), ("act",), ("conv", 64, 128, 3, 0, 1),
                  ("maxpool", 2, 2), ("act",), ("flatten",), ("linear", 3200, 256), ("act",),
                  ("linear", 256, CLASSES)):
            push(l)
    elif kind == "vgg":
        if size != 28:
            push(("upsample", size, size))
        ch = 1
        for convs, out in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))[:blocks]:
            out = _div(out, width_div)
            for _ in range(convs):
                push(("conv", ch, out, 3, 1, 1))
                push(("act",))
                ch = out
            push(("maxpool", 2, 2))
        head()
    elif kind == "alexnet":
        if size != 28:
            push(("upsample", size, size))
        c1, c2, c3, c4, c5 = (_div(n, width_div) for n in (96, 256, 384, 384, 256))
        for l in (("conv", 1, c1, 11, 1, 4), ("act",), ("maxpool", 3, 2),
                  ("conv", c1, c2, 5, 2, 1), ("act",), ("maxpool", 3, 2),
                  ("conv", c2, c3, 3, 1, 1), ("act",), ("conv", c3, c4, 3, 1, 1), ("act",),
                  ("conv", c4, c5, 3, 1, 1), ("act",), ("maxpool", 3, 2)):
            push(l)
        head()
    else:
        raise ValueError(kind)
    assert shape == [CLASSES, 1, 1], shape
    return layers


def build_sequential(layers, dropout_seed):
    mods = []
    for idx, l in enumerate(layers):
        t = l[0]
        if t == "conv":
            _, i, o, k, p, s = l
            mods.append(nn.Conv2d(i, o, k, stride=s, padding=p))
        elif t == "act":
            mods.append(nn.ReLU())
        elif t == "maxpool":
            mods.append(nn.MaxPool2d(l[1], l[2]))
        elif t == "flatten":
            mods.append(nn.Flatten())
        elif t == "linear":
            mods.append(nn.Linear(l[1], l[2]))
        elif t == "dropout":
            mods.append(SeededDropout(l[1], idx, dropout_seed))
        elif t == "upsample":
            mods.append(nn.Upsample(size=(l[1], l[2]), mode="bilinear", align_corners=False))
    return nn.Sequential(*mods)


def set_dropout_step(model, step):
    for m in model.modules():
        if isinstance(m, SeededDropout):
            m.step = step


def functional_forward(layers, params, x, dropout_seed, step):
    """The network again, from `params` (state_dict names) with torch.nn.functional
    calls: an independent route for the self-check. step None: inference."""
    for idx, l in enumerate(layers):
        t = l[0]
        if t == "conv":
            x = F.conv2d(x, params[f"{idx}.weight"], params[f"{idx}.bias"], stride=l[5], padding=l[4])
        elif t == "act":
            x = torch.clamp(x, min=0.0)
        elif t == "maxpool":
            x = F.max_pool2d(x, l[1], l[2])
        elif t == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif t == "linear":
            x = x @ params[f"{idx}.weight"].t() + params[f"{idx}.bias"]
        elif t == "dropout":
            if step is not None:
                x = x * dropout_noise(dropout_seed, step, idx, x.shape[0], x.shape[1], l[1]).to(x.dtype)
        elif t == "upsample":
            x = F.interpolate(x, size=(l[1], l[2]), mode="bilinear", align_corners=False)
    return x


# name: (arch kind, blocks, width_div, size, hidden, torch seed)
NET_CONFIGS = {
    "cnn": ("cnn", 0, 1, 28, 0, 20),
    "vgg_small": ("vgg", 3, 16, 28, 64, 21),
    "vgg_resize": ("vgg", 2, 16, 32, 32, 22),
    # 65: the smallest side at which AlexNet's three 3x3/2 poolings fit
    "alexnet_small": ("alexnet", 0, 16, 65, 64, 23),
}
NET_KINDS = {"cnn": 0, "vgg": 1, "alexnet": 2}
NET_DROPOUT_SEED = 7
NET_STEPS = 3
NET_SGD_LR = 0.01
# Gradients and trained weights of a tensor with more than NET_KEEP_FULL
# values keep every NET_KEEP_STRIDE-th value (flat index 0, 31, 62, ...):
# the CNN's two large layers would otherwise cost 3.6 MB per copy.
NET_KEEP_FULL = 50_000
NET_KEEP_STRIDE = 31


def keep(t):
    flat = t.detach().reshape(-1)
    return flat if flat.numel() <= NET_KEEP_FULL else flat[::NET_KEEP_STRIDE]


def train_net(model, init, x, labels, make_opt, steps):
    model.load_state_dict(init)
    model.train()
    opt = make_opt(model.parameters())
    losses = []
    for s in range(steps):
        set_dropout_step(model, s)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def self_check_net(name, layers, init, x, labels, rec):
    """Rebuilds the forward, the gradients and both optimizers' steps in
    float64 from the stored float32 init (functional ops, hand-written Adam
    and SGD), and compares with what the nn.Sequential run recorded."""
    d = torch.float64
    x64 = x.to(d)
    p64 = {k: v.to(d).clone().requires_grad_(True) for k, v in init.items()}
    report = []

    def cmp(what, got32, want64):
        got32 = got32.detach().to(d).reshape(-1)
        want64 = want64.detach().reshape(-1)
        err = (got32 - want64).abs()
        scale = want64.abs().max().item()
        report.append(f"{what} {err.max().item():.1e} (max |value| {scale:.1e})")
        return err.max().item(), scale

    with torch.no_grad():
        logits64 = functional_forward(layers, p64, x64, NET_DROPOUT_SEED, None)
    e, s = cmp("logits", rec["logits"], logits64)
    assert e <= 1e-5 * max(s, 1.0), (name, "logits", e)

    loss64 = F.cross_entropy(functional_forward(layers, p64, x64, NET_DROPOUT_SEED, 0), labels)
    loss64.backward()
    e, _ = cmp("loss", rec["loss"], loss64)
    assert e <= 1e-5, (name, "loss", e)
    worst = 0.0
    for k in init:
        e, s = cmp(f"grad {k}", rec["grad"][k], p64[k].grad)
        worst = max(worst, e / max(s, 1e-3))
    assert worst <= 1e-3, (name, "grad", worst)

    for opt in ("adam", "sgd"):
        p = {k: v.to(d).clone() for k, v in init.items()}
        m = {k: torch.zeros_like(v) for k, v in p.items()}
        v2 = {k: torch.zeros_like(v) for k, v in p.items()}
        losses = []
        for t in range(NET_STEPS):
            q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
            loss = F.cross_entropy(functional_forward(layers, q, x64, NET_DROPOUT_SEED, t), labels)
            loss.backward()
            losses.append(loss.item())
            for k in p:
                g = q[k].grad
                if opt == "adam":
                    # torch.optim.Adam(lr=1e-3): bias-corrected moments
                    m[k] = 0.9 * m[k] + 0.1 * g
                    v2[k] = 0.999 * v2[k] + 0.001 * g * g
                    mh = m[k] / (1 - 0.9 ** (t + 1))
                    vh = v2[k] / (1 - 0.999 ** (t + 1))
                    p[k] = p[k] - 1e-3 * mh / (vh.sqrt() + 1e-8)
                else:
                    # torch.optim.SGD(momentum=0.9): buf = g on the first step
                    m[k] = g.clone() if t == 0 else 0.9 * m[k] + g
                    p[k] = p[k] - NET_SGD_LR * m[k]
        e, _ = cmp(f"{opt} losses", torch.tensor(rec[opt + "/losses"]), torch.tensor(losses, dtype=d))
        assert e <= 1e-5, (name, opt, "losses", e)
        final = torch.cat([p[k].reshape(-1) for k in init])
        got = torch.cat([rec[opt + "/final"][k].reshape(-1) for k in init])
        err = (got.to(d) - final).abs()
        # Adam's first steps move a weight by about lr * sign(g): where g is
        # rounding noise, float32 and float64 may step opposite ways.
        bad = int((err > 1e-5).sum())
        report.append(f"{opt} final {err.max().item():.1e} ({bad} of {err.numel()} above 1e-5)")
        assert bad <= err.numel() // 1000, (name, opt, bad)
    print(f"self-check {name}: " + "; ".join(r for r in report if not r.startswith("grad ")) +
          f"; worst grad error / tensor max {worst:.1e}")


def gen_net(w, name, x, labels):
    kind, blocks, width_div, size, hidden, seed = NET_CONFIGS[name]
    layers = arch_layers(kind, blocks, width_div, size, hidden)
    torch.manual_seed(seed)
    model = build_sequential(layers, NET_DROPOUT_SEED)
    p = f"nets/{name}/"
    ctor = (f"nn.Sequential of Arch {kind}(blocks={blocks}, width_div={width_div}, size={size}, "
            f"hidden={hidden}) (default init) after torch.manual_seed({seed})")
    w.add(p + "arch", [NET_KINDS[kind], blocks, width_div, size, hidden],
          "(kind 0 cnn / 1 vgg / 2 alexnet, blocks, width_div, size, hidden) of " + ctor)
    w.add(p + "dropout_seed", [NET_DROPOUT_SEED], "seed of every SeededDropout mask")
    w.add(p + "keep", [NET_KEEP_FULL, NET_KEEP_STRIDE],
          "(n, s): a tensor of more than n values keeps its flat values 0, s, 2s, ... "
          "in grad/, adam/final/ and sgd/final/")
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, v in init.items():
        w.add(p + "init/" + k, v, f"state_dict()['{k}'] of {ctor}")
    rec = {}
    model.eval()
    with torch.no_grad():
        rec["logits"] = model(x)
    w.add(p + "logits", rec["logits"], "model.eval(); model(x)  # dropout off")
    model.train()
    set_dropout_step(model, 0)
    loss = F.cross_entropy(model(x), labels)
    loss.backward()
    rec["loss"] = loss.detach().reshape(1)
    w.add(p + "loss", rec["loss"],
          "model.train(); cross_entropy(model(x), labels)  # mean over N, dropout step 0")
    rec["grad"] = {}
    for k, prm in model.named_parameters():
        rec["grad"][k] = prm.grad.detach().clone()
        w.add(p + "grad/" + k, keep(prm.grad),
              f"grad of '{k}' (flat, see keep) after that loss.backward()")
    for opt_name, ctor_text, make_opt in (
        ("adam", "torch.optim.Adam(model.parameters(), lr=1e-3)",
         lambda ps: torch.optim.Adam(ps, lr=1e-3)),
        ("sgd", f"torch.optim.SGD(model.parameters(), lr={NET_SGD_LR}, momentum=0.9)",
         lambda ps: torch.optim.SGD(ps, lr=NET_SGD_LR, momentum=0.9)),
    ):
        losses, final = train_net(model, init, x, labels, make_opt, NET_STEPS)
        rec[opt_name + "/losses"] = losses
        rec[opt_name + "/final"] = final
        w.add(p + opt_name + "/losses", losses,
              f"cross_entropy(model(x), labels) before each of {NET_STEPS} {ctor_text}.step() calls "
              "from init, dropout steps 0, 1, 2")
        for k, v in final.items():
            w.add(p + opt_name + "/final/" + k, keep(v),
                  f"state_dict()['{k}'] (flat, see keep) after {NET_STEPS} {ctor_text} steps")
    self_check_net(name, layers, init, x, labels, rec)


def main():
    ops = GoldenWriter()
    gen_conv(ops)
    gen_pool(ops)
    gen_linear(ops)
    gen_activations(ops)
    gen_losses(ops)
    gen_optim(ops)
    gen_course(ops)
    check_dropout_mirror()
    gen_upsample(ops)
    gen_dropout(ops)
    ops.write(os.path.join(HERE, "ops.bin"))

    lenet = GoldenWriter()
    x, labels = load_fashion(LENET_BATCH)
    lenet.add("lenet/x", x, f"first {LENET_BATCH} Fashion-MNIST test images (t10k-images-idx3-ubyte) / 255")
    lenet.add("lenet/labels", labels.to(torch.float32), "their labels (t10k-labels-idx1-ubyte)")
    gen_lenet(lenet, "classic", lenet_classic, 10, x, labels)
    gen_lenet(lenet, "max", lenet_max, 11, x, labels)
    gen_lenet(lenet, "wide", lenet_wide, 12, x, labels)
    lenet.write(os.path.join(HERE, "lenet.bin"))

    nets = GoldenWriter()
    nets.add("nets/x", x, f"first {LENET_BATCH} Fashion-MNIST test images (t10k-images-idx3-ubyte) / 255")
    nets.add("nets/labels", labels.to(torch.float32), "their labels (t10k-labels-idx1-ubyte)")
    for name in NET_CONFIGS:
        gen_net(nets, name, x, labels)
    nets.write(os.path.join(HERE, "nets.bin"))


if __name__ == "__main__":
    if sys.version_info < (3, 6):
        sys.exit("python 3.6+ needed")
    main()
