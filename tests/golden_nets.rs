//! The host's trainers against PyTorch on the course notes' larger networks
//! (`tests/golden/nets.bin`, written by `tests/golden/gen_golden.py`): the
//! 64/128-channel CNN, a small VGG, a small VGG that resizes its input to
//! 32x32 and a small AlexNet (65x65), each on the four LeNet golden images.
//!
//! Per network: inference logits (dropout off), the loss and gradients of
//! one training step (dropout on, step 0; one SGD step with lr 1 recovers
//! the gradients: `g = p0 - p1`), and 3 Adam / 3 SGD-with-momentum steps
//! (dropout steps 0, 1, 2). PyTorch applied the project's dropout mask
//! (`lenet_core::dropout`) with seed `nets/<net>/dropout_seed`, so every
//! back end must drop the same values.
//!
//! Gradients and trained weights of tensors with more than `keep[0]`
//! values are stored for every `keep[1]`-th flat index only (the CNN's two
//! large layers); the comparisons pick the same values.
//!
//! The comparisons are `lenet_host::check::net`, the code `host check`
//! runs, driven through `make_trainer` only, like `golden_host.rs`: the CPU
//! trainer, the CPU reference trainer, with feature `cuda-emu` the CUDA
//! kernels on the emulated device, and with feature `cuda` (ignored
//! tests) a real GPU.

mod common;

use common::{Golden, GoldenExt, RecordExt, assert_record};
use lenet_core::model::Arch;
use lenet_host::backend::Device;
use lenet_host::check::{
    self, FORWARD_TOL, NETS, Scope, golden_arch, keep_rule, kept_records, param_tensors,
};
use std::sync::OnceLock;

/// Images in the golden batch.
const BATCH: usize = 4;
const CNN: Arch = NETS[0].1;
const VGG_SMALL: Arch = NETS[1].1;
const VGG_RESIZE: Arch = NETS[2].1;
const ALEXNET_SMALL: Arch = NETS[3].1;

fn nets() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden::load("nets.bin"))
}

/// All values of `prefix/<name>` for every tensor, flat.
fn state_dict(g: &Golden, prefix: &str, arch: Arch) -> Vec<f32> {
    kept_records(g, prefix, arch, None).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- the file itself

#[test]
fn nets_file_matches_the_layer_lists() {
    let g = nets();
    let mut groups = g.children("nets");
    groups.sort();
    let mut want: Vec<String> = NETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    want.extend(["x".to_owned(), "labels".to_owned()]);
    want.sort();
    assert_eq!(groups, want, "nets.bin: groups");
    g.get("nets/x").shaped(&[BATCH, 1, 28, 28]);
    g.get("nets/labels").shaped(&[BATCH]);
    for (net, arch) in NETS {
        assert_eq!(arch.check(), Ok(()), "{net}");
        assert_eq!(golden_arch(g, net), Ok(arch), "{net}");
        let p = format!("nets/{net}");
        let mut parts = g.children(&p);
        parts.sort();
        assert_eq!(
            parts,
            [
                "adam",
                "arch",
                "dropout_seed",
                "grad",
                "init",
                "keep",
                "logits",
                "loss",
                "sgd"
            ],
            "{p}"
        );
        // Names and sizes of the state_dict follow from the layer list.
        for (name, len) in param_tensors(arch) {
            assert_eq!(g.get(&format!("{p}/init/{name}")).data.len(), len);
        }
        let init = state_dict(g, &format!("{p}/init"), arch);
        assert_eq!(init.len(), arch.num_params(), "{p}: parameters");
        assert_eq!(
            g.children(&format!("{p}/init")).len(),
            param_tensors(arch).len()
        );
        let rule = keep_rule(g, net).unwrap();
        for part in ["grad", "adam/final", "sgd/final"] {
            kept_records(g, &format!("{p}/{part}"), arch, Some(rule)).unwrap();
        }
        g.get(&format!("{p}/logits")).shaped(&[BATCH, 10]);
        g.get(&format!("{p}/adam/losses")).shaped(&[3]);
        g.get(&format!("{p}/sgd/losses")).shaped(&[3]);
    }
    assert_eq!(CNN.num_params(), 896_522);
}

/// A plain forward pass over the layer list (f64 sums, no trainer): the
/// golden logits hold for lenet-core's own layer semantics, including
/// [`lenet_core::resize`] for `Upsample`.
fn plain_forward(arch: Arch, params: &[f32], image: &[f32]) -> Vec<f32> {
    use lenet_core::model::{Layer, Shape3};
    let mut s = Shape3 { c: 1, h: 28, w: 28 };
    let mut a = image.to_vec();
    let mut off = 0;
    for l in arch.layers() {
        let o = l.output_shape(s).expect("shape");
        let mut take = |n: usize| {
            let t = &params[off..off + n];
            off += n;
            t
        };
        a = match l {
            Layer::Conv2d {
                in_channels: ci,
                out_channels: co,
                kernel: k,
                padding: pad,
                stride: st,
            } => {
                let w = take(co * ci * k * k).to_vec();
                let b = take(co);
                let mut y = vec![0.0f32; o.len()];
                for oc in 0..co {
                    for oy in 0..o.h {
                        for ox in 0..o.w {
                            let mut acc = f64::from(b[oc]);
                            for ic in 0..ci {
                                for u in 0..k {
                                    let iy = (oy * st + u).wrapping_sub(pad);
                                    if iy >= s.h {
                                        continue;
                                    }
                                    for v in 0..k {
                                        let ix = (ox * st + v).wrapping_sub(pad);
                                        if ix >= s.w {
                                            continue;
                                        }
                                        acc += f64::from(w[((oc * ci + ic) * k + u) * k + v])
                                            * f64::from(a[(ic * s.h + iy) * s.w + ix]);
                                    }
                                }
                            }
                            y[(oc * o.h + oy) * o.w + ox] = acc as f32;
                        }
                    }
                }
                y
            }
            Layer::MaxPool2d { kernel: k, stride } => {
                let mut y = vec![f32::NEG_INFINITY; o.len()];
                for c in 0..o.c {
                    for oy in 0..o.h {
                        for ox in 0..o.w {
                            let m = &mut y[(c * o.h + oy) * o.w + ox];
                            for u in 0..k {
                                for v in 0..k {
                                    let i = (c * s.h + oy * stride + u) * s.w + ox * stride + v;
                                    *m = m.max(a[i]);
                                }
                            }
                        }
                    }
                }
                y
            }
            Layer::Act => a.iter().map(|&v| v.max(0.0)).collect(),
            Layer::Flatten | Layer::Dropout { .. } => a,
            Layer::Linear {
                in_features: i,
                out_features: n,
            } => {
                let w = take(n * i).to_vec();
                let b = take(n);
                (0..n)
                    .map(|r| {
                        let dot: f64 = w[r * i..(r + 1) * i]
                            .iter()
                            .zip(&a)
                            .map(|(&w, &x)| f64::from(w) * f64::from(x))
                            .sum();
                        (dot + f64::from(b[r])) as f32
                    })
                    .collect()
            }
            Layer::Upsample { h, w } => {
                let mut y = vec![f32::NAN; o.len()];
                lenet_core::resize::forward(&a, s.c, s.h, s.w, &mut y, h, w);
                y
            }
            other => panic!("layer {other:?} is not in these networks"),
        };
        s = o;
    }
    assert_eq!(off, params.len(), "parameter count");
    a
}

#[test]
fn golden_logits_follow_from_a_plain_forward() {
    let g = nets();
    let x = &g.get("nets/x").data;
    let (atol, rtol) = FORWARD_TOL;
    for (net, arch) in NETS {
        let p = format!("nets/{net}");
        let init = state_dict(g, &format!("{p}/init"), arch);
        let logits: Vec<f32> = x
            .chunks_exact(28 * 28)
            .flat_map(|img| plain_forward(arch, &init, img))
            .collect();
        assert_record(&logits, g.get(&format!("{p}/logits")), atol, rtol);
    }
}

// ---------------------------------------------------------------- trainers

macro_rules! net_tests {
    ($device:expr, $tag:literal, $($(#[$attr:meta])* $test:ident: $net:literal, $arch:expr, $scope:expr;)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $test() {
                let o = check::net(nets(), $device, $net, $arch, $scope)
                    .unwrap_or_else(|e| panic!("{e}"));
                println!(
                    "{} {} worst: forward/gradients {:?}, training {:?}",
                    $tag, $net, o.forward, o.train
                );
            }
        )+
    };
}

net_tests! { Device::Cpu, "cpu",
    cpu_trainer_matches_pytorch_cnn: "cnn", CNN, Scope::Full;
    cpu_trainer_matches_pytorch_vgg_small: "vgg_small", VGG_SMALL, Scope::Full;
    cpu_trainer_matches_pytorch_vgg_resize: "vgg_resize", VGG_RESIZE, Scope::Full;
    cpu_trainer_matches_pytorch_alexnet_small: "alexnet_small", ALEXNET_SMALL, Scope::Full;
}

net_tests! { Device::CpuReference, "cpu reference",
    reference_trainer_matches_pytorch_cnn: "cnn", CNN, Scope::Full;
    reference_trainer_matches_pytorch_vgg_small: "vgg_small", VGG_SMALL, Scope::Full;
    reference_trainer_matches_pytorch_vgg_resize: "vgg_resize", VGG_RESIZE, Scope::Full;
    reference_trainer_matches_pytorch_alexnet_small: "alexnet_small", ALEXNET_SMALL, Scope::Full;
}

// The CUDA trainer's kernels, run by the emulated device (feature
// `cuda-emu`): the small networks in full, the CNN's logits on two images
// (the full CNN check takes 70 s there on two busy cores; it passed with
// worst errors 2.4e-7 before training and 1.0e-6 after).
#[cfg(feature = "cuda-emu")]
net_tests! { Device::CudaEmu, "cuda-emu",
    emulated_cuda_trainer_matches_pytorch_cnn_logits: "cnn", CNN, Scope::Logits(2);
    #[ignore = "about a minute on the emulated device: run with --ignored"]
    emulated_cuda_trainer_matches_pytorch_cnn: "cnn", CNN, Scope::Full;
    emulated_cuda_trainer_matches_pytorch_vgg_small: "vgg_small", VGG_SMALL, Scope::Full;
    emulated_cuda_trainer_matches_pytorch_vgg_resize: "vgg_resize", VGG_RESIZE, Scope::Full;
    emulated_cuda_trainer_matches_pytorch_alexnet_small: "alexnet_small", ALEXNET_SMALL, Scope::Full;
}

// The same on a real GPU (feature `cuda`): `host check --device cuda` runs
// these checks from a bundle with no Rust toolchain.
#[cfg(feature = "cuda")]
net_tests! { Device::Cuda, "cuda",
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_cnn: "cnn", CNN, Scope::Full;
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_vgg_small: "vgg_small", VGG_SMALL, Scope::Full;
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_vgg_resize: "vgg_resize", VGG_RESIZE, Scope::Full;
    #[ignore = "needs an NVIDIA GPU"]
    cuda_trainer_matches_pytorch_alexnet_small: "alexnet_small", ALEXNET_SMALL, Scope::Full;
}
