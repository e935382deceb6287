#!/usr/bin/env python3
"""Compiles host/cuda/*.cu to PTX with NVRTC (libnvrtc.so.12, loaded with
ctypes), one .ptx file per source, for the virtual architecture compute_70
so that the driver JIT-compiles it for every GPU from Volta (sm_70) on.

    python3 scripts/cuda_ptx.py OUT_DIR [--nvrtc PATH]

Built with --fmad=false (no contraction into fused multiply-adds), so the
GPU rounds as the emulated device's C++ build (-ffp-contract=off) does.
"""
import ctypes
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CUDA = ROOT / "host" / "cuda"
OPTIONS = [
    "--gpu-architecture=compute_70",
    "--fmad=false",
    "--std=c++17",
    f"--include-path={CUDA}",
]


def check(nvrtc, rc, what):
    if rc != 0:
        nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise SystemExit(f"NVRTC {what}: {nvrtc.nvrtcGetErrorString(rc).decode()}")


def compile_one(nvrtc, src):
    prog = ctypes.c_void_p()
    check(
        nvrtc,
        nvrtc.nvrtcCreateProgram(
            ctypes.byref(prog), src.read_bytes(), src.name.encode(), 0, None, None
        ),
        f"create {src.name}",
    )
    opts = (ctypes.c_char_p * len(OPTIONS))(*[o.encode() for o in OPTIONS])
    rc = nvrtc.nvrtcCompileProgram(prog, len(OPTIONS), opts)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    text = log.value.decode().strip()
    if rc != 0 or text:
        print(f"{src.name}:\n{text}", file=sys.stderr)
    check(nvrtc, rc, f"compile {src.name}")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx), f"PTX of {src.name}")
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    if text:
        raise SystemExit(f"{src.name}: NVRTC warnings are errors here")
    return ptx.value.decode()


def main():
    args = sys.argv[1:]
    lib = "libnvrtc.so.12"
    if "--nvrtc" in args:
        i = args.index("--nvrtc")
        lib = args[i + 1]
        del args[i : i + 2]
    if len(args) != 1:
        raise SystemExit(__doc__)
    out = pathlib.Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    nvrtc = ctypes.CDLL(lib)
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value}: {' '.join(OPTIONS[:3])}")
    for src in sorted(CUDA.glob("*.cu")):
        ptx = compile_one(nvrtc, src)
        (out / (src.stem + ".ptx")).write_text(ptx)
        print(f"  {src.name} -> {src.stem}.ptx ({len(ptx)} bytes)")


if __name__ == "__main__":
    main()
