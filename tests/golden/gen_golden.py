#!/usr/bin/env python3
"""Write the PyTorch golden files that `tests/golden_core.rs` and
`tests/course_notes.rs` compare lenet-core against.

Run from the repository root with the interpreter that has PyTorch:

    /usr/bin/python3 tests/golden/gen_golden.py

Output (committed to the repository, so the Rust tests never need PyTorch):

    tests/golden/ops.bin    conv2d, pooling, linear, activations, losses,
                            optimizers, the two-sample course model
    tests/golden/lenet.bin  LeNet-5 classic, the max-pool variant and its
                            16/32-channel widening: weights,
                            logits, loss, gradients, Adam and SGD steps

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
        w.add(p + "y", y, call)
        w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
        w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")
        w.add(p + "dw", wt.grad, f"w.grad after ({call}).backward(dy)")
        if bias:
            w.add(p + "db", b.grad, f"b.grad after ({call}).backward(dy)")


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
        w.add(p + "y", y, call)
        w.add(p + "dy", dy, "torch.randn_like(y), upstream gradient")
        w.add(p + "dx", x.grad, f"x.grad after ({call}).backward(dy)")
        w.add(p + "dw", wt.grad, f"w.grad after ({call}).backward(dy)")
        if bias:
            w.add(p + "db", b.grad, f"b.grad after ({call}).backward(dy)")


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


def main():
    ops = GoldenWriter()
    gen_conv(ops)
    gen_pool(ops)
    gen_linear(ops)
    gen_activations(ops)
    gen_losses(ops)
    gen_optim(ops)
    gen_course(ops)
    ops.write(os.path.join(HERE, "ops.bin"))

    lenet = GoldenWriter()
    x, labels = load_fashion(LENET_BATCH)
    lenet.add("lenet/x", x, f"first {LENET_BATCH} Fashion-MNIST test images (t10k-images-idx3-ubyte) / 255")
    lenet.add("lenet/labels", labels.to(torch.float32), "their labels (t10k-labels-idx1-ubyte)")
    gen_lenet(lenet, "classic", lenet_classic, 10, x, labels)
    gen_lenet(lenet, "max", lenet_max, 11, x, labels)
    gen_lenet(lenet, "wide", lenet_wide, 12, x, labels)
    lenet.write(os.path.join(HERE, "lenet.bin"))


if __name__ == "__main__":
    if sys.version_info < (3, 6):
        sys.exit("python 3.6+ needed")
    main()
