//! `host check`: the trainers of a back end against PyTorch's golden
//! records, one network at a time, so that a user with a new GPU (or a new
//! build) sees that it computes what PyTorch computes.
//!
//! Per network, through [`make_trainer`] (the same code `host train` runs):
//! the logits of the golden batch, the loss and gradients of one training
//! step (one SGD step with lr 1 recovers them: `g = p0 - p1`), then a few
//! Adam and SGD-with-momentum steps: losses and final weights.
//!
//! - `lenet.bin`: LeNet-5 classic, its max-pool variant and the widened
//!   one (sigmoid), 10 Adam and 5 SGD steps;
//! - `nets.bin`: the course notes' CNN, two small VGGs and a small AlexNet
//!   (ReLU, with the project's dropout mask), 3 Adam and 3 SGD steps.
//!   Tensors of more than `keep[0]` values are stored every `keep[1]`-th
//!   value only; the comparisons pick the same values.

use crate::backend::{Device, make_trainer};
use crate::backend::{OptimizerConfig, OptimizerState, Trainer, TrainerConfig};
use crate::golden::{Golden, Worst, compare, compare_record};
use lenet_core::activation::Activation;
use lenet_core::model::{AlexNetConfig, Arch, ModelKind, PARAM_NAMES, Plan, VggConfig};
use std::path::Path;
use std::time::Instant;

/// Logits, loss and gradients (worst seen on the CPU: 2.4e-7 absolute).
pub const FORWARD_TOL: (f32, f32) = (1e-6, 1e-5);
/// Losses and weights after the Adam / SGD steps. Adam divides by
/// `sqrt(v)`, so a gradient that is rounding noise still moves its weight
/// by about `lr`: worst seen 3.3e-6 absolute, on LeNet-5 classic.
pub const TRAIN_TOL: (f32, f32) = (1e-5, 1e-5);
/// Learning rate of the `nets.bin` SGD records (`NET_SGD_LR` in
/// `gen_golden.py`).
pub const NET_SGD_LR: f32 = 0.01;
/// Side of the golden images.
const PIXELS: usize = 28 * 28;

/// The three LeNet-5 record groups of `lenet.bin`.
pub const LENETS: [(&str, ModelKind); 3] = [
    ("classic", ModelKind::LeNet5),
    ("max", ModelKind::LeNet5Max),
    ("wide", ModelKind::LeNet5Wide),
];

/// The four network record groups of `nets.bin`, as the generator's
/// `NET_CONFIGS`. AlexNet's 65 is the smallest side at which its three
/// 3x3/2 poolings fit.
pub const NETS: [(&str, Arch); 4] = [
    ("cnn", Arch::Cnn),
    (
        "vgg_small",
        Arch::Vgg(VggConfig {
            blocks: 3,
            width_div: 16,
            size: 28,
            hidden: 64,
        }),
    ),
    (
        "vgg_resize",
        Arch::Vgg(VggConfig {
            blocks: 2,
            width_div: 16,
            size: 32,
            hidden: 32,
        }),
    ),
    (
        "alexnet_small",
        Arch::AlexNet(AlexNetConfig {
            width_div: 16,
            size: 65,
            hidden: 64,
        }),
    ),
];

/// How much of a network's records a check compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Logits of the first `n` images only (the emulated device on the
    /// full CNN: about 24x LeNet-5's work per image).
    Logits(usize),
    /// Logits, the first step's loss and gradients, and the first Adam
    /// step's loss: every kernel once, for slow tools such as
    /// compute-sanitizer.
    Step,
    /// Logits, loss, gradients, the Adam and the SGD steps.
    Full,
    /// One op's kernels against `ops.bin` (forward and gradients).
    Op,
}

/// The worst errors of one passing check.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Logits, loss and gradients.
    pub forward: Worst,
    /// Losses and weights after training.
    pub train: Worst,
}

const fn sgd(lr: f32, momentum: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd {
        lr,
        momentum,
        weight_decay: 0.0,
    }
}

fn trainer(device: Device, cfg: TrainerConfig, init: &[f32]) -> Result<Box<dyn Trainer>, String> {
    let (mut t, _) = make_trainer(device, &cfg, 0).map_err(|e| e.to_string())?;
    t.load(init, &OptimizerState::default())
        .map_err(|e| e.to_string())?;
    Ok(t)
}

fn labels(g: &Golden, name: &str) -> Result<Vec<u8>, String> {
    Ok(g.record(name)?.data.iter().map(|&l| l as u8).collect())
}

/// One golden group through a trainer: the shared steps of both files.
struct Group<'a> {
    g: &'a Golden,
    prefix: String,
    device: Device,
    cfg: TrainerConfig,
    x: &'a [f32],
    labels: Vec<u8>,
    init: Vec<f32>,
    /// The stored subset of a flat parameter vector.
    kept: &'a dyn Fn(&[f32]) -> Vec<f32>,
    /// The stored records `prefix/<part>/<tensor>`, flat.
    records: &'a dyn Fn(&str) -> Result<Vec<f32>, String>,
    optimizers: [(&'static str, OptimizerConfig); 2],
}

impl Group<'_> {
    fn run(&self, scope: Scope) -> Result<Outcome, String> {
        let p = &self.prefix;
        let (atol, rtol) = FORWARD_TOL;
        let mut t = trainer(self.device, self.cfg.with(sgd(1.0, 0.0)), &self.init)
            .map_err(|e| format!("{p}: {e}"))?;
        let n = match scope {
            Scope::Logits(n) => n.min(self.labels.len()),
            Scope::Step | Scope::Full | Scope::Op => self.labels.len(),
        };
        let mut logits = vec![f32::NAN; n * 10];
        t.forward(&self.x[..n * PIXELS], &mut logits)
            .map_err(|e| format!("{p}: forward: {e}"))?;
        let want = self.g.record(&format!("{p}/logits"))?;
        let mut forward = compare(
            &format!("{p}/logits (first {n} images) [{}]", want.source),
            &logits,
            want.data.get(..n * 10).ok_or("short logits record")?,
            atol,
            rtol,
        )?;
        if let Scope::Logits(_) = scope {
            return Ok(Outcome {
                forward,
                train: Worst::default(),
            });
        }
        let step = |t: &mut Box<dyn Trainer>| {
            t.train_batch(self.x, &self.labels)
                .map_err(|e| format!("{p}: training step: {e}"))
        };
        let params = |t: &mut Box<dyn Trainer>| t.params().map_err(|e| format!("{p}: params: {e}"));
        let loss = step(&mut t)?;
        let want = self.g.record(&format!("{p}/loss"))?;
        forward = forward.max(compare_record(&[loss], want, atol, rtol)?);
        let grads: Vec<f32> = self
            .init
            .iter()
            .zip(params(&mut t)?)
            .map(|(a, b)| a - b)
            .collect();
        forward = forward.max(compare(
            &format!("{p}/grad (p0 - p1 after SGD lr 1)"),
            &(self.kept)(&grads),
            &(self.records)("grad")?,
            atol,
            rtol,
        )?);

        let (atol, rtol) = TRAIN_TOL;
        let mut train = Worst::default();
        if scope == Scope::Step {
            let (name, opt) = self.optimizers[0];
            let mut t = trainer(self.device, self.cfg.with(opt), &self.init)
                .map_err(|e| format!("{p}: {e}"))?;
            let want = self.g.record(&format!("{p}/{name}/losses"))?;
            let first = want.data.first().ok_or("empty losses record")?;
            forward = forward.max(compare(
                &format!("{p}/{name}/losses[0] [{}]", want.source),
                &[step(&mut t)?],
                &[*first],
                atol,
                rtol,
            )?);
            return Ok(Outcome { forward, train });
        }
        for (name, opt) in self.optimizers {
            let mut t = trainer(self.device, self.cfg.with(opt), &self.init)
                .map_err(|e| format!("{p}: {e}"))?;
            let want = self.g.record(&format!("{p}/{name}/losses"))?;
            let losses = (0..want.data.len())
                .map(|_| step(&mut t))
                .collect::<Result<Vec<f32>, String>>()?;
            train = train.max(compare_record(&losses, want, atol, rtol)?);
            train = train.max(compare(
                &format!("{p}/{name}/final"),
                &(self.kept)(&params(&mut t)?),
                &(self.records)(&format!("{name}/final"))?,
                atol,
                rtol,
            )?);
        }
        Ok(Outcome { forward, train })
    }
}

trait With {
    fn with(&self, optimizer: OptimizerConfig) -> TrainerConfig;
}

impl With for TrainerConfig {
    fn with(&self, optimizer: OptimizerConfig) -> TrainerConfig {
        TrainerConfig {
            optimizer,
            ..self.clone()
        }
    }
}

/// LeNet-5 group `name` of `lenet.bin` (`classic`, `max`, `wide`) on
/// `device`.
///
/// # Errors
/// A missing record, a trainer failure, or the first comparison out of
/// tolerance, named.
pub fn lenet(
    g: &Golden,
    device: Device,
    kind: ModelKind,
    name: &str,
    scope: Scope,
) -> Result<Outcome, String> {
    let p = format!("lenet/{name}");
    let state_dict = |prefix: &str| -> Result<Vec<f32>, String> {
        let mut out = Vec::new();
        for n in PARAM_NAMES {
            out.extend_from_slice(&g.record(&format!("{prefix}/{n}"))?.data);
        }
        Ok(out)
    };
    let same = |v: &[f32]| v.to_vec();
    let records = |part: &str| state_dict(&format!("{p}/{part}"));
    Group {
        g,
        device,
        cfg: TrainerConfig {
            arch: kind.into(),
            dropout_seed: 0,
            act: Activation::Sigmoid,
            optimizer: sgd(1.0, 0.0),
            threads: 1,
        },
        x: &g.record("lenet/x")?.data,
        labels: labels(g, "lenet/labels")?,
        init: state_dict(&format!("{p}/init"))?,
        kept: &same,
        records: &records,
        optimizers: [
            ("adam", OptimizerConfig::adam(1e-3)),
            ("sgd", sgd(0.1, 0.9)),
        ],
        prefix: p.clone(),
    }
    .run(scope)
}

/// The network a `nets.bin` record group was generated for.
///
/// # Errors
/// A missing or malformed `nets/<net>/arch` record.
pub fn golden_arch(g: &Golden, net: &str) -> Result<Arch, String> {
    let name = format!("nets/{net}/arch");
    let a: Vec<u32> = g.record(&name)?.data.iter().map(|&v| v as u32).collect();
    let [kind, blocks, width_div, size, hidden] = a[..] else {
        return Err(format!("{name}: {a:?} is not 5 fields"));
    };
    let narrow = |v: u32| u16::try_from(v).map_err(|_| format!("{name}: {v} out of range"));
    let arch = match kind {
        0 => Arch::Cnn,
        1 => Arch::Vgg(VggConfig {
            blocks: u8::try_from(blocks).map_err(|_| format!("{name}: blocks {blocks}"))?,
            width_div: narrow(width_div)?,
            size: narrow(size)?,
            hidden,
        }),
        2 => Arch::AlexNet(AlexNetConfig {
            width_div: narrow(width_div)?,
            size: narrow(size)?,
            hidden,
        }),
        _ => return Err(format!("{name}: unknown kind {kind}")),
    };
    arch.check().map_err(|e| format!("{name}: {e}"))?;
    Ok(arch)
}

/// `(state_dict name, number of values)` of every parameter tensor, in
/// order: `"{index}.weight"` and `"{index}.bias"` of the layers that have
/// parameters.
pub fn param_tensors(arch: Arch) -> Vec<(String, usize)> {
    Plan::new(arch)
        .map(|p| {
            p.tensors()
                .map(|t| (t.name.to_string(), t.range.len()))
                .collect()
        })
        .unwrap_or_default()
}

/// `(n, s)`: tensors of more than `n` values are stored every `s`-th value.
///
/// # Errors
/// A missing or malformed `nets/<net>/keep` record.
pub fn keep_rule(g: &Golden, net: &str) -> Result<(usize, usize), String> {
    let name = format!("nets/{net}/keep");
    match g.record(&name)?.data[..] {
        [n, s] if s >= 1.0 => Ok((n as usize, s as usize)),
        ref d => Err(format!("{name}: {d:?}")),
    }
}

/// The stored subset of a flat parameter vector (see [`keep_rule`]).
pub fn kept(flat: &[f32], arch: Arch, (n, s): (usize, usize)) -> Vec<f32> {
    let mut out = Vec::new();
    let mut off = 0;
    for (_, len) in param_tensors(arch) {
        let Some(t) = flat.get(off..off + len) else {
            break;
        };
        if len > n {
            out.extend(t.iter().step_by(s));
        } else {
            out.extend_from_slice(t);
        }
        off += len;
    }
    out
}

/// The stored records `prefix/<name>` of every tensor, flat, after checking
/// that each holds the values the keep rule names (`None`: all of them).
///
/// # Errors
/// A missing record or one of the wrong length.
pub fn kept_records(
    g: &Golden,
    prefix: &str,
    arch: Arch,
    rule: Option<(usize, usize)>,
) -> Result<Vec<f32>, String> {
    let mut out = Vec::new();
    for (n, len) in param_tensors(arch) {
        let r = g.record(&format!("{prefix}/{n}"))?;
        let want = match rule {
            Some((big, s)) if len > big => len.div_ceil(s),
            _ => len,
        };
        if r.data.len() != want {
            return Err(format!(
                "{}: {} values, the network needs {want}",
                r.name,
                r.data.len()
            ));
        }
        out.extend_from_slice(&r.data);
    }
    Ok(out)
}

/// Network group `net` of `nets.bin` on `device`, which must be `arch`.
///
/// # Errors
/// As [`lenet`], and a group generated for another network.
pub fn net(
    g: &Golden,
    device: Device,
    net: &str,
    arch: Arch,
    scope: Scope,
) -> Result<Outcome, String> {
    let found = golden_arch(g, net)?;
    if found != arch {
        return Err(format!("nets/{net} was generated for {found}, not {arch}"));
    }
    let p = format!("nets/{net}");
    let rule = keep_rule(g, net)?;
    let keep = |v: &[f32]| kept(v, arch, rule);
    let records = |part: &str| kept_records(g, &format!("{p}/{part}"), arch, Some(rule));
    Group {
        g,
        device,
        cfg: TrainerConfig {
            arch,
            act: Activation::Relu,
            optimizer: sgd(1.0, 0.0),
            threads: 1,
            dropout_seed: g.record(&format!("{p}/dropout_seed"))?.data[0] as u64,
        },
        x: &g.record("nets/x")?.data,
        labels: labels(g, "nets/labels")?,
        init: kept_records(g, &format!("{p}/init"), arch, None)?,
        kept: &keep,
        records: &records,
        optimizers: [
            ("adam", OptimizerConfig::adam(1e-3)),
            ("sgd", sgd(NET_SGD_LR, 0.9)),
        ],
        prefix: p.clone(),
    }
    .run(scope)
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Line {
    /// The record group, e.g. `lenet/classic` or `nets/vgg_small`.
    pub name: String,
    /// What was compared, when not everything.
    pub scope: Scope,
    /// Worst errors (`None`: not applicable to this device), or why it
    /// failed.
    pub result: Result<Option<Outcome>, String>,
    /// Wall time of the check.
    pub seconds: f64,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(None) => write!(
                f,
                "n/a   {:<20} kernel, stride or padding differ between height and width: \
                 the kernels take one of each, as the networks do",
                self.name
            ),
            Ok(Some(o)) if self.scope == Scope::Op => write!(
                f,
                "ok    {:<20} outputs and gradients max abs {:.1e} rel {:.1e} ({:.1} s)",
                self.name, o.forward.abs, o.forward.rel, self.seconds
            ),
            Ok(Some(o)) => {
                write!(
                    f,
                    "ok    {:<20} logits/loss/gradients max abs {:.1e} rel {:.1e}",
                    self.name, o.forward.abs, o.forward.rel
                )?;
                match self.scope {
                    Scope::Full => write!(
                        f,
                        ", trained weights max abs {:.1e} rel {:.1e}",
                        o.train.abs, o.train.rel
                    )?,
                    Scope::Step => write!(f, " (first steps only)")?,
                    Scope::Op => {}
                    Scope::Logits(n) => write!(f, " (logits of {n} images only)")?,
                }
                write!(f, " ({:.1} s)", self.seconds)
            }
            Err(e) => write!(f, "FAIL  {:<20} {e} ({:.1} s)", self.name, self.seconds),
        }
    }
}

/// Every golden check on `device`, in order, each line passed to `report`
/// as it finishes; `only` keeps the groups whose name contains one of its
/// words. `one_step` compares only the first steps ([`Scope::Step`]). On
/// the emulated device the full CNN takes about a minute, so only its
/// logits of two images are compared there unless `full`.
///
/// # Errors
/// A golden file that cannot be read (a failing check is a line, not an
/// error).
pub fn run(
    device: Device,
    dir: &Path,
    only: &[String],
    one_step: bool,
    full: bool,
    report: &mut dyn FnMut(&Line),
) -> Result<Vec<Line>, String> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let mut lines = Vec::new();
    let mut push = |name: String, scope: Scope, f: &dyn Fn() -> Result<Outcome, String>| {
        let t = Instant::now();
        let result = f().map(Some);
        let line = Line {
            name,
            scope,
            result,
            seconds: t.elapsed().as_secs_f64(),
        };
        report(&line);
        lines.push(line);
    };
    let groups: Vec<_> = LENETS
        .iter()
        .map(|(n, _)| format!("lenet/{n}"))
        .filter(|n| wanted(n))
        .collect();
    if !groups.is_empty() {
        let g = Golden::read(&dir.join("lenet.bin"))?;
        for (name, kind) in LENETS {
            let group = format!("lenet/{name}");
            if groups.contains(&group) {
                let scope = if one_step { Scope::Step } else { Scope::Full };
                push(group, scope, &|| lenet(&g, device, kind, name, scope));
            }
        }
    }
    if NETS.iter().any(|(n, _)| wanted(&format!("nets/{n}"))) {
        let g = Golden::read(&dir.join("nets.bin"))?;
        for (name, arch) in NETS {
            let group = format!("nets/{name}");
            if !wanted(&group) {
                continue;
            }
            let scope = if device == Device::CudaEmu && arch == Arch::Cnn && !full {
                Scope::Logits(2)
            } else if one_step {
                Scope::Step
            } else {
                Scope::Full
            };
            push(group, scope, &|| net(&g, device, name, arch, scope));
        }
    }
    if matches!(device, Device::Cuda | Device::CudaEmu) && OP_FAMILIES.iter().any(|f| wanted(f)) {
        let g = Golden::read(&dir.join("ops.bin"))?;
        let mut op = |name: &str, r: &crate::backend::gpu::ops::OpResult, seconds: f64| {
            if !wanted(name) {
                return;
            }
            let line = Line {
                name: name.to_owned(),
                scope: Scope::Op,
                result: r.clone().map(|w| {
                    w.map(|forward| Outcome {
                        forward,
                        train: Worst::default(),
                    })
                }),
                seconds,
            };
            report(&line);
            lines.push(line);
        };
        ops_on(device, &g, &mut op)?;
    }
    Ok(lines)
}

/// The op families of `ops.bin` that [`crate::backend::gpu::ops`] checks.
const OP_FAMILIES: [&str; 5] = ["conv2d", "max_pool2d", "avg_pool2d", "linear", "upsample"];

/// Runs the op checks on a fresh device of kind `device`.
fn ops_on(
    device: Device,
    g: &Golden,
    op: &mut dyn FnMut(&str, &crate::backend::gpu::ops::OpResult, f64),
) -> Result<(), String> {
    let mut t = Instant::now();
    let mut each = |name: &str, r: &crate::backend::gpu::ops::OpResult| {
        op(name, r, t.elapsed().as_secs_f64());
        t = Instant::now();
    };
    match device {
        #[cfg(feature = "cuda-emu")]
        Device::CudaEmu => {
            use crate::backend::gpu::emu::{EmuDevice, ThreadOrder};
            let mut d = EmuDevice::new(ThreadOrder::Ascending).map_err(|e| e.to_string())?;
            crate::backend::gpu::ops::check(&mut d, g, &mut each);
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let mut d = crate::backend::gpu::cuda::CudaDevice::new().map_err(|e| e.to_string())?;
            crate::backend::gpu::ops::check(&mut d, g, &mut each);
            Ok(())
        }
        _ => {
            let _ = (g, &mut each);
            Err(format!(
                "{device:?}: this build has no such device for the op checks"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
    }

    /// A check that cannot fail proves nothing: a trainer whose weights
    /// are off by one rounding step in one value passes, one whose weights
    /// are off by 1e-3 fails, naming the record.
    #[test]
    fn a_wrong_start_fails_and_names_the_record() {
        let g = Golden::read(&dir().join("lenet.bin")).unwrap();
        let ok = lenet(&g, Device::Cpu, ModelKind::LeNet5Max, "max", Scope::Full).unwrap();
        assert!(ok.forward.abs < FORWARD_TOL.0 && ok.train.abs < TRAIN_TOL.0);
        // The widened network's records are not the max-pool network's.
        let e = lenet(&g, Device::Cpu, ModelKind::LeNet5Max, "wide", Scope::Step).unwrap_err();
        assert!(e.contains("lenet/wide"), "{e}");
        let ng = Golden::read(&dir().join("nets.bin")).unwrap();
        let e = net(&ng, Device::Cpu, "vgg_small", NETS[2].1, Scope::Full).unwrap_err();
        assert!(e.contains("was generated for"), "{e}");
    }

    #[test]
    fn only_selects_groups_and_a_missing_folder_is_named() {
        let mut seen = Vec::new();
        let lines = run(
            Device::Cpu,
            &dir(),
            &["vgg_resize".into()],
            false,
            false,
            &mut |l| seen.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(lines.len(), 1);
        assert!(seen[0].starts_with("ok    nets/vgg_resize"), "{seen:?}");
        let e = run(
            Device::Cpu,
            Path::new("/nonexistent"),
            &[],
            false,
            false,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/lenet.bin"), "{e}");
        let mut seen = Vec::new();
        run(
            Device::Cpu,
            &dir(),
            &["lenet/max".into()],
            true,
            false,
            &mut |l| seen.push(l.to_string()),
        )
        .unwrap();
        assert!(seen[0].contains("(first steps only)"), "{seen:?}");
    }
}
