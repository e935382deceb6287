#!/usr/bin/env python3
"""PyTorch on the same device as lenet, in the same run: the same networks
(the nn.Sequential that `host models --model M --pytorch` prints), batch,
optimizer (Adam, lr 1e-3, betas 0.9/0.999, eps 1e-8) and loss (mean cross
entropy), with the images resident on the device, timed per epoch like
`host bench`'s epoch figure.

Modes: eager and CUDA graphs (the whole training step captured, Adam with
capturable state), each in strict fp32 (TF32 off for matmuls and cuDNN)
and in PyTorch's defaults; torch.compile for the first network when the
time budget allows. Inference: eager, no_grad, strict fp32.

    pytorch_bench.py --device cuda --nets nets.tsv --budget 80 > table.md

nets.tsv: one network per line, tab-separated: name, batch, epoch images,
the module file (a Python expression), lenet's `host bench` output file.
Prints a Markdown table with lenet's figures beside PyTorch's and the
ratio. Exits 0 with a note when PyTorch is missing.
"""

import argparse
import re
import sys
import time


def parse_lenet(path):
    try:
        text = open(path).read()
    except OSError:
        return None, None
    epoch = re.search(r"one \d+-image epoch [\d.]+ ms \((\d+) img/s\)", text)
    infer = re.search(r"inference (\d+) img/s", text)
    return (
        float(epoch.group(1)) if epoch else None,
        float(infer.group(1)) if infer else None,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nets", required=True)
    ap.add_argument("--budget", type=float, default=90.0, help="seconds for everything")
    args = ap.parse_args()
    t_start = time.time()
    try:
        import torch
        from torch import nn
    except ImportError as e:
        print(f"PyTorch baseline skipped: {e}")
        return 0
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("PyTorch baseline skipped: torch.cuda.is_available() is False")
        return 0
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"PyTorch {torch.__version__} on {name}\n")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def set_strict(strict):
        torch.backends.cuda.matmul.allow_tf32 = not strict and DEFAULT_MATMUL_TF32
        torch.backends.cudnn.allow_tf32 = not strict and DEFAULT_CUDNN_TF32

    DEFAULT_MATMUL_TF32 = torch.backends.cuda.matmul.allow_tf32
    DEFAULT_CUDNN_TF32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.benchmark = True

    rows = []
    lines = [l.rstrip("\n").split("\t") for l in open(args.nets) if l.strip()]
    for i, (net, batch, images, module_file, lenet_file) in enumerate(lines):
        batch, images = int(batch), int(images)
        images = max(batch, images // batch * batch)
        src = open(module_file).read()
        torch.manual_seed(0)
        x_all = torch.randn(images, 1, 28, 28, device=dev)
        y_all = torch.randint(0, 10, (images,), device=dev)
        steps = images // batch
        results = {}

        def fresh(capturable=False):
            model = eval(src, {"nn": nn}).to(dev)
            opt = torch.optim.Adam(
                model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                capturable=capturable,
            )
            return model, opt

        loss_fn = nn.CrossEntropyLoss()

        def eager_epoch(model, opt):
            for s in range(steps):
                xb = x_all[s * batch:(s + 1) * batch]
                yb = y_all[s * batch:(s + 1) * batch]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                opt.step()

        def timed(f):
            f()  # warm-up epoch (cuDNN autotuning, allocator)
            sync()
            t = time.perf_counter()
            f()
            sync()
            return images / (time.perf_counter() - t)

        def left():
            return args.budget - (time.time() - t_start)

        for strict in (True, False):
            tag = "fp32" if strict else "defaults"
            if left() < 5:
                break
            set_strict(strict)
            model, opt = fresh()
            results[f"eager {tag}"] = timed(lambda: eager_epoch(model, opt))
            if cuda and left() > 5:
                try:
                    model, opt = fresh(capturable=True)
                    sx = torch.empty(batch, 1, 28, 28, device=dev)
                    sy = torch.empty(batch, dtype=torch.long, device=dev)
                    sx.copy_(x_all[:batch])
                    sy.copy_(y_all[:batch])
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for _ in range(3):
                            opt.zero_grad(set_to_none=True)
                            loss_fn(model(sx), sy).backward()
                            opt.step()
                    torch.cuda.current_stream().wait_stream(side)
                    g = torch.cuda.CUDAGraph()
                    opt.zero_grad(set_to_none=True)
                    with torch.cuda.graph(g):
                        loss_fn(model(sx), sy).backward()
                        opt.step()

                    def graph_epoch():
                        for s in range(steps):
                            sx.copy_(x_all[s * batch:(s + 1) * batch])
                            sy.copy_(y_all[s * batch:(s + 1) * batch])
                            g.replay()

                    results[f"graph {tag}"] = timed(graph_epoch)
                except Exception as e:  # a mode that does not work is a note
                    print(f"{net}: CUDA graph {tag}: {type(e).__name__}: {e}")
        set_strict(True)
        if i == 0 and hasattr(torch, "compile") and left() > 60:
            try:
                model, opt = fresh()
                cm = torch.compile(model)
                results["compile fp32"] = timed(lambda: eager_epoch(cm, opt))
            except Exception as e:
                print(f"{net}: torch.compile: {type(e).__name__}: {e}")
        infer = None
        if left() > 3:
            model, _ = fresh()
            model.eval()

            def infer_epoch():
                with torch.no_grad():
                    for s in range(steps):
                        model(x_all[s * batch:(s + 1) * batch])

            infer = timed(infer_epoch)
        lenet_train, lenet_infer = parse_lenet(lenet_file)
        rows.append((net, batch, images, lenet_train, results, lenet_infer, infer))
        del x_all, y_all
        if cuda:
            torch.cuda.empty_cache()

    modes = ["eager fp32", "graph fp32", "eager defaults", "graph defaults", "compile fp32"]
    modes = [m for m in modes if any(m in r[4] for r in rows)]
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"
    print("Training, images/s over one resident epoch (Adam, batch as given):\n")
    print("| network | batch | images | lenet | " + " | ".join(f"PyTorch {m}" for m in modes)
          + " | lenet / best PyTorch |")
    print("|---" * (5 + len(modes)) + "|")
    for net, batch, images, lt, res, li, pi in rows:
        best = max(res.values()) if res else None
        ratio = f"{lt / best:.2f}x" if lt and best else "-"
        print(f"| {net} | {batch} | {images} | {fmt(lt)} | "
              + " | ".join(fmt(res.get(m)) for m in modes) + f" | {ratio} |")
    print("\nInference, images/s (no_grad, fp32; lenet: `host bench`'s inference figure):\n")
    print("| network | lenet | PyTorch eager fp32 | lenet / PyTorch |")
    print("|---|---|---|---|")
    for net, batch, images, lt, res, li, pi in rows:
        ratio = f"{li / pi:.2f}x" if li and pi else "-"
        print(f"| {net} | {fmt(li)} | {fmt(pi)} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
