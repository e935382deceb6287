#!/usr/bin/env python3
"""A static model of the CUDA kernels' speed, read from the SASS that ptxas
makes of host/cuda/ptx for one GPU (default sm_90, the H100/H200).

For every kernel it finds the loops (backward branches), takes the hottest
(the one with the most multiply-adds; of equals, the shortest: an outer
loop counts its inner loops' instructions once), and counts its
instructions by class:

  ffma   fused multiply-adds (FFMA), the useful work of a GEMM-like loop
  fmul/fadd   separate multiplies and adds (a multiply-add without fusion
         costs two of these)
  ldg    global loads; lds  shared loads; sts  shared stores
  other  integer index arithmetic, branches, predicates, moves, barriers

and prints per kernel: registers, shared memory, the loop's size, the FMA
share (multiply-adds, fused or not, per issued instruction: the fraction
of the FP32 pipe's peak the loop can reach at best) and loads per
multiply-add.

    python3 scripts/sass_model.py PTXAS NVDISASM [--arch sm_90] [--min-share K=F ...] [--host HOST]

--min-share KERNEL=FRACTION makes the script exit 1 when that kernel's
hot loop has a lower FMA share (a gate for the register-tiled kernels).

--host HOST (a built `host` binary) adds an estimate of one 60,000-image
training epoch of each network on an H100 SXM: every layer's multiply-adds
in the forward pass, the input gradient (where needed) and the weight
gradient, each divided by the FP32 FMA rate (33.5 T/s) times the efficiency
of the kernel the schedule picks for that shape (host/src/backend/gpu/mod.rs:
gemm_tile and wgrad_tile choose 64- or 128-wide GEMM tiles, `_large`):
its hot loop's FMA share, times the share of its tiles that the layer
fills, times ISSUE_EFFICIENCY for latency and occupancy; plus 4 us per
launch.
An estimate to compare kernels by, not a measurement.
"""
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PTX = ROOT / "host" / "cuda" / "ptx"

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*?);")
LABEL = re.compile(r"^\s*(\.L_x_\d+):")
FUNC = re.compile(r"^\.text\.(\w+):")
TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def classify(op):
    base = op.split(".")[0]
    if base in ("FFMA", "HFMA2", "DFMA"):
        return "ffma"
    if base == "FMUL":
        return "fmul"
    if base == "FADD":
        return "fadd"
    if base in ("LDG", "LD"):
        return "ldg"
    if base == "LDS":
        return "lds"
    if base == "STS":
        return "sts"
    if base in ("HMMA", "IMMA", "HGMMA", "WGMMA"):
        return "mma"
    return "other"


def parse(sass):
    """{kernel: [(addr, opcode, operands, label_or_None)]}"""
    funcs, cur = {}, None
    pending = []
    for line in sass.splitlines():
        m = FUNC.match(line.strip())
        if m:
            cur = m.group(1)
            funcs[cur] = []
            continue
        if cur is None:
            continue
        m = LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = INSN.search(line)
        if m:
            funcs[cur].append((int(m.group(1), 16), m.group(3), m.group(4), pending))
            pending = []
    return funcs


def loops(insns):
    """Loops: (start index, end index) of each backward branch (the
    one-instruction self-loop that pads a kernel's end is left out)."""
    where = {}
    for i, (_, _, _, labels) in enumerate(insns):
        for lab in labels:
            where[lab] = i
    back = []
    for i, (_, op, args, _) in enumerate(insns):
        if op.startswith("BRA"):
            t = TARGET.search(args)
            if t and t.group(1) in where and where[t.group(1)] <= i:
                back.append((where[t.group(1)], i))
    return [(s, e) for (s, e) in back if e - s >= 2]


def mix(insns, s, e):
    counts = {k: 0 for k in ("ffma", "fmul", "fadd", "ldg", "lds", "sts", "mma", "other")}
    for _, op, _, _ in insns[s:e + 1]:
        counts[classify(op)] += 1
    counts["total"] = e - s + 1
    return counts


def resources(ptxas, arch, ptx):
    r = subprocess.run([ptxas, f"-arch={arch}", "-v", str(ptx), "-o", "/dev/null"],
                       capture_output=True, text=True, check=True)
    out, kernel, res = r.stdout + r.stderr, None, {}
    for line in out.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            kernel = m.group(1)
        m = re.search(r"Used (\d+) registers(?:, (\d+) bytes smem)?", line)
        if m and kernel:
            res[kernel] = (int(m.group(1)), int(m.group(2) or 0))
    return res


FMA_RATE = 33.5e12  # H100 SXM: 67 TFLOP/s fp32 = 33.5 T fused multiply-adds/s
ISSUE_EFFICIENCY = 0.6  # assumed: issue slots lost to latency and occupancy
LAUNCH_S = 4e-6
GEMM_MIN_CHANNELS = 16  # host/src/backend/gpu/mod.rs: CONV_GEMM_MIN_CHANNELS
LARGE_MIN_DEPTH = 64  # GEMM_LARGE_MIN_DEPTH
LARGE_MIN_BLOCKS = 128  # GEMM_LARGE_MIN_BLOCKS
NETWORKS = [  # (name, host flags, batch)
    ("lenet5", ["--model", "lenet5"], 256),
    ("cnn", ["--model", "cnn"], 256),
    ("vgg --width-div 4", ["--model", "vgg", "--width-div", "4"], 128),
    ("alexnet", ["--model", "alexnet"], 128),
    ("vgg (VGG-11)", ["--model", "vgg"], 128),
]
LAYER = re.compile(r"^\s*\d+\s+(nn\.\w+|activation)\((.*)\)?\s+(\d+)x(\d+)x(\d+)\s+\d+\s*$")


def layers_of(host, flags):
    """(kind, args, (c, h, w) in, (c, h, w) out) of every layer."""
    out = subprocess.run([host, "models", *flags], capture_output=True, text=True,
                         check=True).stdout
    shape, layers = (1, 28, 28), []
    for line in out.splitlines():
        m = re.match(r"^\s*\d+\s+(\S.*?)\s+(\d+)x(\d+)x(\d+)\s+\d+\s*$", line)
        if not m:
            continue
        new = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        layers.append((m.group(1), shape, new))
        shape = new
    return layers


def up(d, e):
    return -(-d // e) * e


def tiles(edge, m, n):
    return up(m, edge) // edge * (up(n, edge) // edge)


def fits_large(d):
    """host/src/backend/gpu/mod.rs: fits_large."""
    return up(d, 128) * 4 <= up(d, 64) * 5


def gemm_tile(m, n, k):
    """host/src/backend/gpu/mod.rs: gemm_tile (the tile edge)."""
    large = (fits_large(m) and fits_large(n) and k >= LARGE_MIN_DEPTH
             and tiles(128, m, n) >= LARGE_MIN_BLOCKS)
    return 128 if large else 64


def wgrad_splits(edge, c_out, kdim):
    return min(max(256 // tiles(edge, c_out, kdim), 1), 64)


def wgrad_tile(c_out, kdim, positions):
    """host/src/backend/gpu/mod.rs: wgrad_tile (the tile edge)."""
    large = (fits_large(c_out) and fits_large(kdim)
             and positions // wgrad_splits(128, c_out, kdim) >= LARGE_MIN_DEPTH)
    return 128 if large else 64


def estimate(host, shares):
    """Per network: (seconds per epoch, launches per step)."""
    def eff(kernel, fill):
        return max(shares.get(kernel, 0.0), 0.01) * fill * ISSUE_EFFICIENCY

    def gemm(kernel, edge, m, n):
        """The efficiency of GEMM `kernel` in tiles of `edge` on m x n."""
        name = kernel + ("_large" if edge == 128 else "")
        return eff(name, m / up(m, edge) * n / up(n, edge))

    rows = []
    for name, flags, batch in NETWORKS:
        seconds, launches, seen_params, fusable = 0.0, 3, False, False
        for desc, (ci, h, w), (co, oh, ow) in layers_of(host, flags):
            # An activation is fused into a convolution or linear layer
            # before it, else a launch of its own.
            if desc == "activation":
                launches += int(not fusable)
            fusable = desc.startswith(("nn.Conv2d", "nn.Linear"))
            conv = re.match(r"nn\.Conv2d\((\d+), (\d+), kernel_size=(\d+)(?:, stride=(\d+))?", desc)
            lin = re.match(r"nn\.Linear\((\d+), (\d+)\)", desc)
            if conv:
                k, stride = int(conv.group(3)), int(conv.group(4) or 1)
                macs = co * oh * ow * ci * k * k
                use_gemm = co >= GEMM_MIN_CHANNELS
                pos, kdim = batch * oh * ow, ci * k * k
                if use_gemm:
                    fwd = gemm("conv2d_forward_gemm", gemm_tile(co, pos, kdim), co, pos)
                    wgt = gemm("conv2d_backward_weight_gemm", wgrad_tile(co, kdim, pos), co, kdim)
                else:
                    fwd = eff("conv2d_forward", 1.0)
                    wgt = eff("conv2d_backward_weight", 1.0)
                t = macs / fwd + macs / wgt
                launches += 2 + int(use_gemm)
                if seen_params:
                    if stride == 1 and ci >= GEMM_MIN_CHANNELS:
                        ipos = batch * h * w
                        edge = gemm_tile(ci, ipos, co * k * k)
                        t += macs / gemm("conv2d_backward_input_gemm", edge, ci, ipos)
                    else:
                        t += macs / eff("conv2d_backward_input", 1.0)
                    launches += 1
                seconds += t / FMA_RATE * 60000
                seen_params = True
            elif lin:
                fi, fo = int(lin.group(1)), int(lin.group(2))
                macs = fi * fo
                t = (macs / gemm("linear_forward", gemm_tile(batch, fo, fi), batch, fo)
                     + macs / gemm("linear_backward_weight", gemm_tile(fo, fi, batch), fo, fi))
                launches += 2
                if seen_params:
                    t += macs / gemm("linear_backward_input", gemm_tile(batch, fi, fo), batch, fi)
                    launches += 1
                seconds += t / FMA_RATE * 60000
                seen_params = True
            elif desc.startswith(("nn.MaxPool", "nn.AvgPool", "nn.Upsample", "nn.Dropout")):
                launches += 1 + int(seen_params)
        steps = -(-60000 // batch)
        rows.append((name, batch, seconds + steps * launches * LAUNCH_S, launches))
    return rows


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    ptxas, nvdisasm = args[0], args[1]
    arch, gates, host = "sm_90", {}, None
    rest = args[2:]
    while rest:
        a = rest.pop(0)
        if a == "--arch":
            arch = rest.pop(0)
        elif a == "--host":
            host = rest.pop(0)
        elif a == "--min-share":
            k, f = rest.pop(0).split("=")
            gates[k] = float(f)
        else:
            sys.exit(f"unknown argument {a}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ptx in sorted(PTX.glob("*.ptx")):
            cubin = pathlib.Path(tmp) / (ptx.stem + ".cubin")
            subprocess.run([ptxas, f"-arch={arch}", str(ptx), "-o", str(cubin)], check=True)
            sass = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True,
                                  text=True, check=True).stdout
            res = resources(ptxas, arch, ptx)
            for kernel, insns in sorted(parse(sass).items()):
                if kernel not in res:
                    continue  # a device function's own section
                best = None
                for s, e in loops(insns):
                    m = mix(insns, s, e)
                    work = m["ffma"] + min(m["fmul"], m["fadd"]) + m["mma"]
                    if best is None or work > best[0] or (work == best[0] and m["total"] < best[1]["total"]):
                        best = (work, m)
                rows.append((kernel, res[kernel], best))
    print(f"\nSASS for {arch}: the hottest loop of every kernel\n")
    print(f"{'kernel':26}{'regs':>5}{'smem':>7}{'loop':>6}{'ffma':>6}{'fmul':>6}{'fadd':>6}"
          f"{'ldg':>5}{'lds':>5}{'FMA share':>11}{'loads/FMA':>11}")
    failed = []
    for kernel, (regs, smem), best in rows:
        if best is None:
            print(f"{kernel:26}{regs:>5}{smem:>7}{'(no loop)':>12}")
            share = 0.0
        else:
            work, m = best
            # A multiply-add without fusion is two instructions doing one.
            share = work / m["total"] if m["total"] else 0.0
            loads = (m["ldg"] + m["lds"]) / work if work else float("inf")
            print(f"{kernel:26}{regs:>5}{smem:>7}{m['total']:>6}{m['ffma']:>6}{m['fmul']:>6}"
                  f"{m['fadd']:>6}{m['ldg']:>5}{m['lds']:>5}{share:>10.0%}{loads:>11.2f}")
        if kernel in gates and share < gates[kernel]:
            failed.append(f"{kernel}: FMA share {share:.0%} under {gates[kernel]:.0%}")
    if host:
        shares = {}
        for kernel, _, best in rows:
            if best is not None and best[1]["total"]:
                shares[kernel] = best[0] / best[1]["total"]
        print(f"\nEstimated training epoch (60,000 images, Adam) on an H100 SXM, from these "
              f"loops ({ISSUE_EFFICIENCY:.0%} issue efficiency assumed):\n")
        print(f"{'network':22}{'batch':>7}{'launches/step':>15}{'epoch':>12}")
        for name, batch, secs, launches in estimate(host, shares):
            when = f"{secs * 1000:.0f} ms" if secs < 10 else f"{secs:.0f} s"
            print(f"{name:22}{batch:>7}{launches:>15}{when:>12}")
    missing = [k for k in gates if k not in {r[0] for r in rows}]
    failed += [f"{k}: no such kernel" for k in missing]
    if failed:
        sys.exit("sass_model: " + "; ".join(failed))


if __name__ == "__main__":
    main()
