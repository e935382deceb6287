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
//! Driven through `make_trainer` only, like `golden_host.rs`: the CPU
//! trainer, the CPU reference trainer, with feature `cuda-emu` the CUDA
//! kernels on the emulated device, and with feature `cuda` (ignored
//! tests) a real GPU.

mod common;

use common::{Golden, Worst, assert_close, assert_record};
use lenet_core::activation::Activation;
use lenet_core::model::{AlexNetConfig, Arch, VggConfig};
use lenet_host::backend::{Device, make_trainer};
use lenet_host::trainer::{OptimizerConfig, OptimizerState, Trainer, TrainerConfig};
use std::sync::OnceLock;

/// Logits, loss and gradients: as for LeNet-5 in `golden_host.rs`.
const FORWARD_TOL: (f32, f32) = (1e-6, 1e-5);
/// Losses and weights after 3 Adam / 3 SGD steps: as for LeNet-5.
const TRAIN_TOL: (f32, f32) = (1e-5, 1e-5);
/// Learning rate of the SGD records (`NET_SGD_LR` in `gen_golden.py`).
const SGD_LR: f32 = 0.01;
/// Images in the golden batch.
const BATCH: usize = 4;

/// The four networks of `nets.bin`, as the generator's `NET_CONFIGS`.
const CNN: Arch = Arch::Cnn;
const VGG_SMALL: Arch = Arch::Vgg(VggConfig {
    blocks: 3,
    width_div: 16,
    size: 28,
    hidden: 64,
});
const VGG_RESIZE: Arch = Arch::Vgg(VggConfig {
    blocks: 2,
    width_div: 16,
    size: 32,
    hidden: 32,
});
/// 65 is the smallest side at which AlexNet's three 3x3/2 poolings fit.
const ALEXNET_SMALL: Arch = Arch::AlexNet(AlexNetConfig {
    width_div: 16,
    size: 65,
    hidden: 64,
});
const NETS: [(&str, Arch); 4] = [
    ("cnn", CNN),
    ("vgg_small", VGG_SMALL),
    ("vgg_resize", VGG_RESIZE),
    ("alexnet_small", ALEXNET_SMALL),
];

fn nets() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| Golden::load("nets.bin"))
}

/// The network a record group was generated for.
fn golden_arch(g: &Golden, net: &str) -> Arch {
    let a: Vec<u32> = g
        .get(&format!("nets/{net}/arch"))
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    let [kind, blocks, width_div, size, hidden] = a[..] else {
        panic!("nets/{net}/arch: {a:?}")
    };
    let (blocks, width_div, size) = (blocks as u8, width_div as u16, size as u16);
    match kind {
        0 => Arch::Cnn,
        1 => Arch::Vgg(VggConfig {
            blocks,
            width_div,
            size,
            hidden,
        }),
        2 => Arch::AlexNet(AlexNetConfig {
            width_div,
            size,
            hidden,
        }),
        _ => panic!("nets/{net}/arch: unknown kind {kind}"),
    }
}

/// `(state_dict name, number of values)` of every parameter tensor, in
/// order: `"{index}.weight"` and `"{index}.bias"` of the layers that have
/// parameters.
fn param_tensors(arch: Arch) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, l) in arch.layers().iter().enumerate() {
        if let Some((w, b)) = l.param_shapes() {
            out.push((format!("{i}.weight"), w.iter().product()));
            out.push((format!("{i}.bias"), b));
        }
    }
    out
}

/// All values of `prefix/<name>` for every tensor, flat.
fn state_dict(g: &Golden, prefix: &str, arch: Arch) -> Vec<f32> {
    param_tensors(arch)
        .iter()
        .flat_map(|(n, len)| {
            let r = g.get(&format!("{prefix}/{n}"));
            assert_eq!(r.data.len(), *len, "{}: length", r.name);
            r.data.iter().copied()
        })
        .collect()
}

/// `(n, s)`: tensors of more than `n` values are stored every `s`-th value.
fn keep_rule(g: &Golden, net: &str) -> (usize, usize) {
    let k = g.get(&format!("nets/{net}/keep"));
    (k.data[0] as usize, k.data[1] as usize)
}

/// The stored subset of a flat parameter vector (see [`keep_rule`]).
fn kept(flat: &[f32], arch: Arch, (n, s): (usize, usize)) -> Vec<f32> {
    let mut out = Vec::new();
    let mut off = 0;
    for (_, len) in param_tensors(arch) {
        let t = &flat[off..off + len];
        if len > n {
            out.extend(t.iter().step_by(s));
        } else {
            out.extend_from_slice(t);
        }
        off += len;
    }
    assert_eq!(off, flat.len(), "parameter count");
    out
}

/// The stored records `prefix/<name>` of every tensor, flat, after checking
/// that each holds the values the keep rule names.
fn kept_records(g: &Golden, prefix: &str, arch: Arch, rule: (usize, usize)) -> Vec<f32> {
    param_tensors(arch)
        .iter()
        .flat_map(|(n, len)| {
            let r = g.get(&format!("{prefix}/{n}"));
            let want = if *len > rule.0 {
                len.div_ceil(rule.1)
            } else {
                *len
            };
            assert_eq!(r.data.len(), want, "{}: kept values", r.name);
            r.data.iter().copied()
        })
        .collect()
}

const fn adam(lr: f32) -> OptimizerConfig {
    OptimizerConfig::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

const fn sgd(lr: f32, momentum: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd {
        lr,
        momentum,
        weight_decay: 0.0,
    }
}

fn trainer(
    device: Device,
    arch: Arch,
    dropout_seed: u64,
    optimizer: OptimizerConfig,
    init: &[f32],
) -> Box<dyn Trainer> {
    let cfg = TrainerConfig {
        arch,
        act: Activation::Relu,
        optimizer,
        threads: 1,
        dropout_seed,
    };
    let (mut t, _) = make_trainer(device, &cfg, 0).expect("trainer");
    t.load(init, &OptimizerState::default()).unwrap();
    t
}

/// How much of a network's records a test checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Logits of the first `n` images only (the emulated device on the
    /// full CNN: about 24x LeNet-5's work per image).
    #[cfg_attr(not(feature = "cuda-emu"), allow(dead_code))]
    Logits(usize),
    /// Logits, loss, gradients, 3 Adam and 3 SGD steps.
    Full,
}

fn check(device: Device, net: &str, arch: Arch, scope: Scope) -> (Worst, Worst) {
    let g = nets();
    assert_eq!(
        golden_arch(g, net),
        arch,
        "nets/{net} was generated for another network"
    );
    let x = &g.get("nets/x").data;
    let labels: Vec<u8> = g.get("nets/labels").data.iter().map(|&l| l as u8).collect();
    let p = format!("nets/{net}");
    let seed = g.get(&format!("{p}/dropout_seed")).scalar() as u64;
    let rule = keep_rule(g, net);
    let init = state_dict(g, &format!("{p}/init"), arch);

    let (atol, rtol) = FORWARD_TOL;
    let mut t = trainer(device, arch, seed, sgd(1.0, 0.0), &init);
    let n = match scope {
        Scope::Logits(n) => n,
        Scope::Full => labels.len(),
    };
    let mut logits = vec![f32::NAN; n * 10];
    t.forward(&x[..n * 28 * 28], &mut logits).unwrap();
    let want = g.get(&format!("{p}/logits"));
    let mut fwd = assert_close(
        &format!("{p}/logits (first {n} images) [{}]", want.source),
        &logits,
        &want.data[..n * 10],
        atol,
        rtol,
    );
    if scope != Scope::Full {
        return (fwd, Worst::default());
    }
    let loss = t.train_batch(x, &labels).unwrap();
    fwd = fwd.max(assert_record(
        &[loss],
        g.get(&format!("{p}/loss")),
        atol,
        rtol,
    ));
    let grads: Vec<f32> = init
        .iter()
        .zip(t.params().unwrap())
        .map(|(a, b)| a - b)
        .collect();
    fwd = fwd.max(assert_close(
        &format!("{p}/grad (p0 - p1 after SGD lr 1)"),
        &kept(&grads, arch, rule),
        &kept_records(g, &format!("{p}/grad"), arch, rule),
        atol,
        rtol,
    ));

    let (atol, rtol) = TRAIN_TOL;
    let mut train = Worst::default();
    for (opt_name, opt) in [("adam", adam(1e-3)), ("sgd", sgd(SGD_LR, 0.9))] {
        let mut t = trainer(device, arch, seed, opt, &init);
        let want = g.get(&format!("{p}/{opt_name}/losses"));
        let losses: Vec<f32> = (0..want.data.len())
            .map(|_| t.train_batch(x, &labels).unwrap())
            .collect();
        train = train.max(assert_record(&losses, want, atol, rtol));
        train = train.max(assert_close(
            &format!("{p}/{opt_name}/final"),
            &kept(&t.params().unwrap(), arch, rule),
            &kept_records(g, &format!("{p}/{opt_name}/final"), arch, rule),
            atol,
            rtol,
        ));
    }
    (fwd, train)
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
        assert_eq!(golden_arch(g, net), arch, "{net}");
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
        let rule = keep_rule(g, net);
        for part in ["grad", "adam/final", "sgd/final"] {
            kept_records(g, &format!("{p}/{part}"), arch, rule);
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
                let (fwd, train) = check($device, $net, $arch, $scope);
                println!(
                    "{} {} worst: forward/gradients {fwd:?}, training {train:?}",
                    $tag, $net
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

// The same on a real GPU (feature `cuda`); scripts/gpu-check.sh runs them.
#[cfg(feature = "cuda")]
net_tests! { Device::Cuda, "cuda",
    #[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
    cuda_trainer_matches_pytorch_cnn: "cnn", CNN, Scope::Full;
    #[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
    cuda_trainer_matches_pytorch_vgg_small: "vgg_small", VGG_SMALL, Scope::Full;
    #[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
    cuda_trainer_matches_pytorch_vgg_resize: "vgg_resize", VGG_RESIZE, Scope::Full;
    #[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
    cuda_trainer_matches_pytorch_alexnet_small: "alexnet_small", ALEXNET_SMALL, Scope::Full;
}
