//! With the `cuda-emu` feature, compiles the CUDA kernels in `cuda/` for the
//! CPU (`cuda/emu/emu.cpp` includes every `.cu` file under the execution
//! model of `cuda/emu/cuda_emu.h`) and links them for the emulated device.
//!
//! It also writes `planted.inc`: copies of some kernels with one bug
//! planted in each, renamed `planted_<bug>__<kernel>`, which the emulator's
//! own tests run in place of the real kernel to show that its checks catch
//! that class of bug (`EmuDevice::plant`).

#[cfg(feature = "cuda-emu")]
const PLANTED: [(&str, &str, &str, &str); 3] = [
    // One thread past the end of the outputs (memcheck).
    (
        "past_end",
        "pool.cu",
        "if (i >= a.n * a.c * a.oh * a.ow) {",
        "if (i > a.n * a.c * a.oh * a.ow) {",
    ),
    // The height read as the width (only a non-square input shows it).
    (
        "h_as_w",
        "pool.cu",
        "(size_t)nc * a.h * a.w_in;",
        "(size_t)nc * a.w_in * a.w_in;",
    ),
    // The barrier before the reduction tree left out (racecheck).
    (
        "no_barrier",
        "conv2d.cu",
        "__syncthreads();\n        for (int half",
        "for (int half",
    ),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-emu")]
    {
        for entry in std::fs::read_dir("cuda").expect("host/cuda exists") {
            let path = entry.expect("readable host/cuda").path();
            println!("cargo:rerun-if-changed={}", path.display());
        }
        println!("cargo:rerun-if-changed=cuda/emu/emu.cpp");
        println!("cargo:rerun-if-changed=cuda/emu/cuda_emu.h");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let mut inc = String::new();
        let mut table = String::from("#define PLANTED_KERNELS");
        for (bug, file, from, to) in PLANTED {
            let src = std::fs::read_to_string(format!("cuda/{file}")).expect("readable kernel");
            assert!(
                src.matches(from).count() == 1,
                "planted bug {bug}: `{from}` is not in cuda/{file} exactly once"
            );
            let src = src.replacen(from, to, 1);
            let mut renamed = String::new();
            for line in src.lines() {
                if let Some(rest) = line.strip_prefix("extern \"C\" __global__ void ") {
                    let (name, args) = rest.split_once('(').expect("kernel signature");
                    let ty = args
                        .trim_start_matches("const ")
                        .split_whitespace()
                        .next()
                        .expect("argument type");
                    renamed.push_str(&format!("__global__ void planted_{bug}__{name}({args}\n"));
                    table.push_str(&format!(
                        " \\\n    {{\"planted_{bug}__{name}\", \
                         call<{ty}, planted_{bug}::planted_{bug}__{name}>, sizeof({ty}), true}},"
                    ));
                } else {
                    renamed.push_str(line);
                    renamed.push('\n');
                }
            }
            // (in a namespace of its own: the file's helper types too)
            inc.push_str(&format!(
                "// cuda/{file}, bug {bug} planted\nnamespace planted_{bug} {{\n{renamed}}}\n"
            ));
        }
        inc.push_str(&table);
        inc.push('\n');
        std::fs::write(out.join("planted.inc"), inc).expect("writable OUT_DIR");
        cc::Build::new()
            .cpp(true)
            .file("cuda/emu/emu.cpp")
            .include("cuda")
            .include("cuda/emu")
            .include(&out)
            .std("c++17")
            // The same rounding as the PTX, which is built with --fmad=false:
            // no contraction of a * b + c into a fused multiply-add.
            .flag("-ffp-contract=off")
            // `#pragma unroll` is for the GPU's compiler.
            .flag("-Wno-unknown-pragmas")
            .opt_level(2)
            .warnings(true)
            .extra_warnings(true)
            .compile("lenet_cuda_emu");
    }
}
