#!/usr/bin/env python3
"""ONNX Runtime CPU baseline for the inference numbers `host bench` prints:
inference images/s at batch 256 and single-image latency, on random data.

The graph is LeNet-5 built directly with `onnx.helper` (Conv, Sigmoid/Relu/
Tanh, AveragePool/MaxPool, Flatten, Gemm) with random weights, so PyTorch is
not needed:

    pip install onnxruntime onnx numpy
    python3 benches/onnxruntime_bench.py [--threads 2] [--model lenet5|lenet5-max]
        [--act sigmoid|relu|tanh] [--batch 256] [--seconds 2]
"""
import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def lenet(model: str, act: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    act_op = {"sigmoid": "Sigmoid", "relu": "Relu", "tanh": "Tanh"}[act]
    pad = 2 if model == "lenet5" else 0
    pool = "AveragePool" if model == "lenet5" else "MaxPool"
    flat = 400 if model == "lenet5" else 256
    inits, nodes = [], []

    def param(name, shape, fan_in):
        b = 1.0 / np.sqrt(fan_in)
        inits.append(numpy_helper.from_array(
            rng.uniform(-b, b, size=shape).astype(np.float32), name))
        return name

    def conv(x, y, co, ci, p):
        w = param(y + "_w", (co, ci, 5, 5), ci * 25)
        b = param(y + "_b", (co,), ci * 25)
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[5, 5],
                                      pads=[p, p, p, p]))

    def gemm(x, y, o, i):
        w = param(y + "_w", (o, i), i)
        b = param(y + "_b", (o,), i)
        nodes.append(helper.make_node("Gemm", [x, w, b], [y], transB=1))

    def a(x, y):
        nodes.append(helper.make_node(act_op, [x], [y]))

    def p2(x, y):
        nodes.append(helper.make_node(pool, [x], [y], kernel_shape=[2, 2], strides=[2, 2]))

    conv("x", "c1", 6, 1, pad); a("c1", "a1"); p2("a1", "p1")
    conv("p1", "c2", 16, 6, 0); a("c2", "a2"); p2("a2", "p2")
    nodes.append(helper.make_node("Flatten", ["p2"], ["f"], axis=1))
    gemm("f", "l1", 120, flat); a("l1", "a3")
    gemm("a3", "l2", 84, 120); a("l2", "a4")
    gemm("a4", "logits", 10, 84)
    g = helper.make_graph(
        nodes, "lenet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def time_it(seconds: float, f) -> float:
    """Mean seconds per call of f over about `seconds`, after one warm-up."""
    f()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        f()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="lenet5", choices=["lenet5", "lenet5-max"])
    p.add_argument("--act", default="sigmoid", choices=["sigmoid", "relu", "tanh"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(lenet(args.model, args.act).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(args.batch, 1, 28, 28)).astype(np.float32)
    one = x[:1].copy()
    infer = time_it(args.seconds, lambda: sess.run(None, {"x": x}))
    lat = time_it(args.seconds / 2, lambda: sess.run(None, {"x": one}))
    print(f"onnxruntime {ort.__version__} ({args.model}, {args.act}, {args.threads} threads): "
          f"inference {args.batch / infer:.0f} img/s, batch-1 latency {lat * 1e6:.1f} us")


if __name__ == "__main__":
    main()
