#!/usr/bin/env bash
# The CUDA checks that need no GPU:
#  1. the PTX checked in under host/cuda/ptx is exactly what NVRTC makes of
#     host/cuda/*.cu (scripts/cuda_ptx.py);
#  2. every kernel assembles with ptxas for sm_70, sm_80 and sm_90 without
#     a warning, and a table of registers, spills and shared memory per
#     kernel is printed;
#  3. the static model of their speed (scripts/sass_model.py): the
#     instruction mix of every kernel's hottest loop in the SASS for sm_90,
#     read with nvdisasm; the register-tiled GEMM kernels must keep their
#     fused multiply-add share: 75 % for the 128x128 tiles (`_large`); for
#     the 64x64 tiles, which stage twice the operands per multiply-add,
#     65 % for the linear layers and 50-55 % for the convolutions, whose
#     loops also gather positions and taps. Given a
#     built `host` (bash scripts/cuda-check.sh [HOST]), it also estimates one
#     training epoch of every network from those loops.
# NVRTC and ptxas come from NVIDIA's PyPI wheels (no GPU, no toolkit),
# pinned to CUDA 12.0 so that the PTX (ISA 8.0) loads on drivers from
# R525 on. They are cached in $LENET_CUDA_TOOLS (default ~/.cache/lenet).
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_WHEELS=12.0.140
NVDISASM_WHEEL=13.5.37
tools="${LENET_CUDA_TOOLS:-$HOME/.cache/lenet}/cuda-$CUDA_WHEELS"
distools="${LENET_CUDA_TOOLS:-$HOME/.cache/lenet}/nvdisasm-$NVDISASM_WHEEL"
nvdisasm="$distools/nvidia/cu13/bin/nvdisasm"
nvrtc="$tools/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
ptxas="$tools/nvidia/cuda_nvcc/bin/ptxas"
if [ ! -x "$ptxas" ] || [ ! -f "$nvrtc" ]; then
    echo "cuda-check: installing NVRTC and ptxas $CUDA_WHEELS (PyPI wheels) into $tools"
    python3 -m pip --version >/dev/null 2>&1 || {
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q python3-pip
    }
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$tools" \
        "nvidia-cuda-nvrtc-cu12==$CUDA_WHEELS" "nvidia-cuda-nvcc-cu12==$CUDA_WHEELS"
fi

if [ ! -x "$nvdisasm" ]; then
    echo "cuda-check: installing nvdisasm $NVDISASM_WHEEL (PyPI wheel) into $distools"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$distools" \
        "nvidia-cuda-nvdisasm==$NVDISASM_WHEEL"
fi

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
python3 scripts/cuda_ptx.py "$fresh" --nvrtc "$nvrtc"
if ! diff -r host/cuda/ptx "$fresh" >/dev/null; then
    diff -r host/cuda/ptx "$fresh" | head -20
    echo "cuda-check: host/cuda/ptx is stale; regenerate it with:" >&2
    echo "  python3 scripts/cuda_ptx.py host/cuda/ptx --nvrtc $nvrtc" >&2
    exit 1
fi
echo "cuda-check: host/cuda/ptx matches the sources"

python3 - "$ptxas" host/cuda/ptx <<'PY'
import pathlib, re, subprocess, sys
ptxas, folder = sys.argv[1], pathlib.Path(sys.argv[2])
rows = {}
for arch in ("sm_70", "sm_80", "sm_90"):
    for ptx in sorted(folder.glob("*.ptx")):
        r = subprocess.run([ptxas, f"-arch={arch}", "-v", "--warn-on-spills", "--warning-as-error",
                            str(ptx), "-o", "/dev/null"], capture_output=True, text=True)
        out = r.stdout + r.stderr
        if r.returncode != 0 or "warning" in out.lower():
            sys.exit(f"ptxas {arch} {ptx.name} failed:\n{out}")
        kernel = None
        for line in out.splitlines():
            m = re.search(r"Compiling entry function '(\w+)'", line)
            if m:
                kernel = m.group(1)
                rows.setdefault(kernel, {})[arch] = {"regs": 0, "spill": 0, "smem": 0}
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m and kernel:
                rows[kernel][arch]["spill"] = int(m.group(1)) + int(m.group(2))
            m = re.search(r"Used (\d+) registers(?:, (\d+) bytes smem)?", line)
            if m and kernel:
                rows[kernel][arch]["regs"] = int(m.group(1))
                rows[kernel][arch]["smem"] = int(m.group(2) or 0)
archs = ("sm_70", "sm_80", "sm_90")
print(f"\n{'kernel':26}" + "".join(f"{a + ' regs/spill/smem':>26}" for a in archs))
for k in sorted(rows):
    cells = [rows[k].get(a) for a in archs]
    print(f"{k:26}" + "".join(f"{c['regs']:>14} / {c['spill']} / {c['smem']:>4}" for c in cells))
spills = sum(rows[k][a]["spill"] for k in rows for a in archs)
print(f"\nptxas: {len(rows)} kernels x {len(archs)} architectures, no warnings, {spills} bytes spilled")
if spills:
    sys.exit("ptxas: spills")
PY

python3 scripts/sass_model.py "$ptxas" "$nvdisasm" --arch sm_90 \
    --min-share linear_forward=0.65 --min-share linear_backward_input=0.65 \
    --min-share linear_backward_weight=0.65 --min-share conv2d_forward_gemm=0.55 \
    --min-share conv2d_backward_weight_gemm=0.5 --min-share conv2d_backward_input_gemm=0.5 \
    --min-share linear_forward_large=0.75 --min-share linear_backward_input_large=0.75 \
    --min-share linear_backward_weight_large=0.75 --min-share conv2d_forward_gemm_large=0.75 \
    --min-share conv2d_backward_weight_gemm_large=0.75 \
    --min-share conv2d_backward_input_gemm_large=0.75 \
    ${1:+--host "$1"}
