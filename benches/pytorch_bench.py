#!/usr/bin/env python3
"""PyTorch CPU baseline for the numbers `host bench` prints for the Rust CPU
back end: training images/s (Adam, batch 256), inference images/s (batch
256) and single-image forward latency, on random data.

Run with the system python that has PyTorch installed:

    /usr/bin/python3 benches/pytorch_bench.py [--threads 2] [--model lenet5|lenet5-max|cnn]
        [--act sigmoid|relu|tanh] [--batch 256] [--seconds 2] [--warmup 1]
        [--infer-seconds S]

The network is the same nn.Sequential as the project's models (PyTorch's
Conv2d/AvgPool2d/MaxPool2d/Linear, CrossEntropyLoss, torch.optim.Adam);
`cnn` is the course notes' Conv2d(1,64,3) -> MaxPool2d(2) -> act ->
Conv2d(64,128,3) -> MaxPool2d(2) -> act -> Linear(3200,256) -> act ->
Linear(256,10). Training GFLOP/s counts 3 x 2 x the forward
multiply-accumulates of the convolutions and linear layers (forward, and
the two products of the backward pass).
"""
import argparse
import time

import torch
from torch import nn


def lenet(model: str, act: str) -> nn.Module:
    a = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}[act]
    if model == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=3), nn.MaxPool2d(2), a(),
            nn.Conv2d(64, 128, kernel_size=3), nn.MaxPool2d(2), a(),
            nn.Flatten(),
            nn.Linear(3200, 256), a(),
            nn.Linear(256, 10))
    if model == "lenet5":
        pad, pool, flat = 2, nn.AvgPool2d(kernel_size=2, stride=2), 16 * 5 * 5
    else:
        pad, pool, flat = 0, nn.MaxPool2d(kernel_size=2, stride=2), 16 * 4 * 4
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=pad), a(), pool,
        nn.Conv2d(6, 16, kernel_size=5), a(), type(pool)(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(flat, 120), a(),
        nn.Linear(120, 84), a(),
        nn.Linear(84, 10))


def forward_macs(net: nn.Module) -> int:
    """Multiply-accumulates of one image's forward pass through the
    convolutions and linear layers (per output value: in_channels x kernel
    area, or in_features)."""
    macs = []

    def hook(m, _inp, out):
        per_out = m.in_features if isinstance(m, nn.Linear) else (
            m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        macs.append(out[0].numel() * per_out)

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    return sum(macs)


def time_it(seconds: float, f, warmup: int = 1) -> float:
    """Mean seconds per call of f over about `seconds`, after `warmup` calls."""
    for _ in range(warmup):
        f()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        f()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="lenet5", choices=["lenet5", "lenet5-max", "cnn"])
    p.add_argument("--act", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    p.add_argument("--infer-seconds", type=float, help="seconds of inference timing (default: --seconds)")
    args = p.parse_args()
    infer_seconds = args.seconds if args.infer_seconds is None else args.infer_seconds

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = lenet(args.model, args.act)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(args.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))

    def train_step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    macs = forward_macs(net)
    train = time_it(args.seconds, train_step, args.warmup)
    with torch.no_grad():
        infer = time_it(infer_seconds, lambda: net(x))
        one = x[:1].clone()
        lat = time_it(infer_seconds / 2, lambda: net(one))
    gflops = 3 * 2 * macs * args.batch / train / 1e9
    print(f"pytorch {torch.__version__} ({args.model}, {args.act}, {args.threads} threads): "
          f"train {args.batch / train:.0f} img/s ({gflops:.1f} GFLOP/s, {macs:,} MACs/image), "
          f"inference {args.batch / infer:.0f} img/s, batch-1 latency {lat * 1e6:.1f} us")


if __name__ == "__main__":
    main()
