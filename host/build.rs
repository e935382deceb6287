//! With the `cuda-emu` feature, compiles the CUDA kernels in `cuda/` for the
//! CPU (`cuda/emu/emu.cpp` includes every `.cu` file under the execution
//! model of `cuda/emu/cuda_emu.h`) and links them for the emulated device.

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
        cc::Build::new()
            .cpp(true)
            .file("cuda/emu/emu.cpp")
            .include("cuda")
            .std("c++17")
            // The same rounding as the PTX, which is built with --fmad=false:
            // no contraction of a * b + c into a fused multiply-add.
            .flag("-ffp-contract=off")
            .opt_level(2)
            .warnings(true)
            .extra_warnings(true)
            .compile("lenet_cuda_emu");
    }
}
