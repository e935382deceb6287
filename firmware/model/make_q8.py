#!/usr/bin/env python3
"""Train the classic LeNet-5 on Fashion-MNIST with PyTorch and write it as an
int8 `.q8` model (the format lenet-core documents in core/src/quant/mod.rs).

This is how `firmware/model/lenet5.q8` was made:

    /usr/bin/python3 firmware/model/make_q8.py --epochs 4 --out firmware/model/lenet5.q8

Architecture: Conv(1,6,5,pad 2) act AvgPool2 -> Conv(6,16,5) act AvgPool2 ->
400 -> 120 act -> 84 act -> 10, activation ReLU by default. Quantization as
lenet-core specifies it: weights int8 symmetric per output channel, int32
biases on scale s_in * s_w, activations int8 per tensor from min/max
calibration on training images, Q31 multiplier and shift per channel, a
256-entry table per activation. lenet-core's parser validates the result
(the firmware build does, too).
"""
import argparse
import gzip
import math
import pathlib
import struct
import zlib

import numpy as np
import torch
from torch import nn

MEAN, STD = 0.2860, 0.3530
ACTS = {"sigmoid": 0, "relu": 1, "tanh": 2}


def load(data, split):
    prefix = "train" if split == "train" else "t10k"
    x = gzip.open(data / f"{prefix}-images-idx3-ubyte.gz").read()[16:]
    y = gzip.open(data / f"{prefix}-labels-idx1-ubyte.gz").read()[8:]
    x = np.frombuffer(x, np.uint8).reshape(-1, 1, 28, 28)
    return x, np.frombuffer(y, np.uint8)


def normalize(x):
    return (torch.from_numpy(x.astype(np.float32)) / 255.0 - MEAN) / STD


def act_module(name):
    return {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}[name]()


def lenet(act):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), act_module(act), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), act_module(act), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), act_module(act), nn.Linear(120, 84), act_module(act),
        nn.Linear(84, 10))


def round_away(v):
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def qparams(lo, hi):
    """TFLite ChooseQuantizationParams, as lenet-core's QParams::from_min_max."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = round_away(-128.0 - lo / scale)
    return scale, int(min(max(zp, -128), 127))


def quantize_multiplier(real):
    if real == 0:
        return 0, 0
    frac, exp = math.frexp(real)
    q = round_away(frac * (1 << 31))
    if q == 1 << 31:
        q //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    assert exp <= 30
    return q, exp


def lut(act, pre, out):
    table = []
    for i in range(256):
        x = (i - 128 - pre[1]) * pre[0]
        f = {"sigmoid": lambda v: 1 / (1 + math.exp(-v)), "tanh": math.tanh,
             "relu": lambda v: max(v, 0.0)}[act](x)
        table.append(int(min(max(round_away(f / out[0]) + out[1], -128), 127)))
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist", type=pathlib.Path)
    ap.add_argument("--epochs", type=int, default=4, help="0 writes the random initialization")
    ap.add_argument("--act", choices=ACTS, default="relu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("lenet5.q8"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)

    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "test")
    net = lenet(args.act)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = normalize(xtr), torch.from_numpy(ytr.astype(np.int64))
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xt))
        net.train()
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net(normalize(xte)).argmax(1).numpy() == yte).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, float test accuracy {acc:.4f}")

    # Calibrate: ranges of every layer output (pre-activation) and activation
    # output on 2000 training images.
    net.eval()
    with torch.no_grad():
        outs, h = [], xt[:2000]
        for m in net:
            h = m(h)
            outs.append(h)
    rng = lambda t: (float(t.min()), float(t.max()))
    # Indices in the Sequential: conv1 0, act 1, conv2 3, act 4, fc1 7, act 8, fc2 9, act 10, fc3 11.
    q_in = (float(np.float32(1 / (255 * STD))), int(min(max(round_away(255 * MEAN - 128), -128), 127)))
    acts = []
    for pre_i, act_i in [(0, 1), (3, 4), (7, 8), (9, 10)]:
        if args.act == "relu":
            pre = out = qparams(*rng(outs[act_i]))
        else:
            pre = qparams(*rng(outs[pre_i]))
            out = (1 / 256, -128) if args.act == "sigmoid" else (1 / 128, 0)
        acts.append((pre, out))
    q_logits = qparams(*rng(outs[11]))

    layers = [net[0], net[3], net[7], net[9], net[11]]
    s_ins = [q_in[0], acts[0][1][0], acts[1][1][0], acts[2][1][0], acts[3][1][0]]
    s_outs = [acts[0][0][0], acts[1][0][0], acts[2][0][0], acts[3][0][0], q_logits[0]]
    body = b""
    for layer, s_in, s_out in zip(layers, s_ins, s_outs):
        w = layer.weight.detach().numpy().astype(np.float64)
        b = layer.bias.detach().numpy().astype(np.float64)
        w2 = w.reshape(w.shape[0], -1)
        s_w = np.maximum(np.abs(w2).max(1), 1e-12) / 127.0
        s_w = s_w.astype(np.float32).astype(np.float64)
        qw = np.clip(np.vectorize(round_away)(w2 / s_w[:, None]), -127, 127).astype(np.int8)
        qb = [round_away(bb / (s_in * sw)) for bb, sw in zip(b, s_w)]
        ms = [quantize_multiplier(s_in * sw / s_out) for sw in s_w]
        body += qw.tobytes()
        body += struct.pack(f"<{len(s_w)}f", *s_w)
        body += struct.pack(f"<{len(qb)}i", *qb)
        body += struct.pack(f"<{len(ms)}i", *[m for m, _ in ms])
        body += struct.pack(f"<{len(ms)}i", *[s for _, s in ms])
    for pre, out in acts:
        body += struct.pack("<256b", *lut(args.act, pre, out))

    params = struct.pack("<2f", MEAN, STD) + struct.pack("<fi", *q_in)
    for pre, out in acts:
        params += struct.pack("<fifi", pre[0], pre[1], out[0], out[1])
    params += struct.pack("<fi", *q_logits)
    shapes = struct.pack("<12H", 1, 28, 28, 6, 5, 2, 16, 5, 400, 120, 84, 10)
    total = 12 + len(shapes) + len(params) + len(body) + 4
    head = b"LQ8M" + struct.pack("<HBBI", 1, 0, ACTS[args.act], total)
    content = head + shapes + params + body
    args.out.write_bytes(content + struct.pack("<I", zlib.crc32(content)))
    print(f"wrote {args.out} ({total} bytes, {args.act}, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
