//! The reference trainer: any [`Arch`], one sample at a time, every layer
//! of its [`Plan`] as the direct loops of its formula. Clean and slow on
//! purpose; it is the oracle the fast back ends (the CPU trainer
//! [`crate::backend::cpu::CpuTrainer`] on both of its paths, the CUDA trainer) are
//! tested against, and `--device reference` runs it.
//!
//! Legend: `C` channels, `H` rows, `W` columns, `K` kernel side, `S`
//! stride, `P` padding; a sample's feature map is `(C, H, W)` row-major,
//! which is also its flattened order.
//!
//! A batch is cut into chunks of [`CHUNK`] samples (independent of the
//! thread count) run on rayon workers, each into its own gradient, summed
//! in chunk order: the result does not depend on the thread count. Loss:
//! mean cross-entropy over the batch, so every sample's `dlogits` is scaled
//! by `1/N` (PyTorch `CrossEntropyLoss(reduction="mean")`). The optimizer is lenet-core's per-scalar update
//! ([`core_adam`], [`core_sgd`]).

use lenet_core::activation::Activation;
use lenet_core::dropout;
use lenet_core::loss::{cross_entropy, cross_entropy_backward};
use lenet_core::model::{Arch, CLASSES, Layer, Plan, Shape3};
use lenet_core::resize;
use rayon::prelude::*;

use crate::backend::{
    HostState, OptimizerConfig, OptimizerState, Trainer, TrainerConfig, TrainerError, core_adam,
    core_sgd, init_params,
};

/// Samples per gradient chunk.
pub const CHUNK: usize = 16;
const IMG: usize = 28 * 28;

/// A network resolved for the plain loops of this file: its layers, the
/// shape before and after each, and where each layer's parameters start.
/// [`forward`](Self::forward) is the reference inference, with an observer
/// of every layer's output (int8 calibration reads its ranges there).
#[derive(Clone, Debug)]
pub struct RefNet {
    arch: Arch,
    layers: Vec<Layer>,
    /// Input shape of each layer, and the output shape of the last at the end.
    shapes: Vec<Shape3>,
    /// Offset of each layer's weight in `params`.
    offsets: Vec<usize>,
    num_params: usize,
}

/// Reference trainer for any [`Arch`].
pub struct NetReference {
    net: RefNet,
    act: Activation,
    dropout_seed: u64,
    /// Parameters and optimizer state.
    state: HostState,
    pool: rayon::ThreadPool,
}

/// The reference trainer for `cfg`, starting from the reference
/// initialization for `seed` (PyTorch's default init, see `lenet-core`).
///
/// # Errors
/// The network does not fit its input.
pub fn new_reference(cfg: &TrainerConfig, seed: u64) -> Result<Box<dyn Trainer>, TrainerError> {
    let init = init_params(cfg.arch, seed);
    Ok(Box::new(NetReference::new(cfg, &init)?))
}

impl core::fmt::Debug for NetReference {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetReference")
            .field("arch", &self.net.arch)
            .field("step", &self.state.step)
            .finish_non_exhaustive()
    }
}

/// The dropout mask of feature `f` at layer `j` of the sample at
/// `(seed, optimizer step, position in the batch)`.
fn mask((seed, step, sample): (u64, u64, usize), j: usize, f: usize, s: Shape3, p: f32) -> f32 {
    let index = (sample * s.len() + f) as u64;
    dropout::mask(seed, step, j as u32, index, p)
}

/// What one sample's forward pass keeps for its backward pass.
struct Tape {
    /// Input of each layer, then the logits.
    xs: Vec<Vec<f32>>,
    /// Per max-pool layer (else empty): the input index of each output.
    argmax: Vec<Vec<usize>>,
}

impl RefNet {
    /// Resolves `arch`.
    ///
    /// # Errors
    /// [`TrainerError::State`] if the network does not fit its input or has
    /// a layer the plain loops do not run.
    pub fn new(arch: Arch) -> Result<RefNet, TrainerError> {
        let plan = Plan::new(arch).map_err(|e| TrainerError::State(format!("{arch}: {e}")))?;
        let mut layers = Vec::new();
        let mut shapes = vec![plan.input()];
        let mut offsets = Vec::new();
        for p in plan.layers() {
            let l = p.layer;
            if !matches!(
                l,
                Layer::Conv2d { .. }
                    | Layer::Linear { .. }
                    | Layer::MaxPool2d { .. }
                    | Layer::AvgPool2d { .. }
                    | Layer::Act
                    | Layer::Dropout { .. }
                    | Layer::Flatten
                    | Layer::Upsample { .. }
            ) {
                return Err(TrainerError::State(format!(
                    "{arch}: layer {l:?} is not supported by the reference trainer"
                )));
            }
            layers.push(l);
            shapes.push(p.output);
            // (read only for layers with parameters)
            offsets.push(p.params.as_ref().map_or(0, |r| r.weight.start));
        }
        Ok(RefNet {
            arch,
            layers,
            shapes,
            offsets,
            num_params: plan.num_params(),
        })
    }

    /// Parameters the network takes.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Inference of one image (`1 x 28 x 28`, normalized) with `params`
    /// (flat, `state_dict` order): calls `observe(j, layer, output)` after
    /// each layer `j` of the plan, in order, and returns the logits.
    ///
    /// # Panics
    /// If `img` or `params` has the wrong length.
    pub fn forward(
        &self,
        params: &[f32],
        act: Activation,
        img: &[f32],
        mut observe: impl FnMut(usize, &Layer, &[f32]),
    ) -> Vec<f32> {
        assert_eq!(params.len(), self.num_params, "parameter count");
        let mut tape = self.run(params, act, img, None);
        for (j, l) in self.layers.iter().enumerate() {
            observe(j, l, &tape.xs[j + 1]);
        }
        tape.xs.pop().unwrap_or_default()
    }

    /// Forward pass of one image; `dropout` is `(seed, optimizer step, the
    /// image's position in the batch)` in training, `None` in inference.
    fn run(
        &self,
        params: &[f32],
        act: Activation,
        img: &[f32],
        dropout: Option<(u64, u64, usize)>,
    ) -> Tape {
        let mut xs = vec![img.to_vec()];
        let mut argmax = Vec::new();
        for (j, l) in self.layers.iter().enumerate() {
            let (si, so) = (self.shapes[j], self.shapes[j + 1]);
            let x = &xs[j];
            let mut y = vec![0.0f32; so.len()];
            let mut am = Vec::new();
            let p = &params[self.offsets[j]..];
            match *l {
                Layer::Conv2d {
                    kernel: k,
                    padding: pad,
                    stride: s,
                    ..
                } => {
                    // y[o][oy][ox] = b[o] + sum_{i,u,v} w[o][i][u][v] * x[i][oy*S+u-P][ox*S+v-P]
                    let wlen = so.c * si.c * k * k;
                    for o in 0..so.c {
                        for oy in 0..so.h {
                            for ox in 0..so.w {
                                let mut acc = p[wlen + o];
                                for i in 0..si.c {
                                    for u in 0..k {
                                        for v in 0..k {
                                            let iy = (oy * s + u) as isize - pad as isize;
                                            let ix = (ox * s + v) as isize - pad as isize;
                                            if iy < 0
                                                || ix < 0
                                                || iy >= si.h as isize
                                                || ix >= si.w as isize
                                            {
                                                continue;
                                            }
                                            let wv = p[((o * si.c + i) * k + u) * k + v];
                                            acc += wv
                                                * x[(i * si.h + iy as usize) * si.w + ix as usize];
                                        }
                                    }
                                }
                                y[(o * so.h + oy) * so.w + ox] = acc;
                            }
                        }
                    }
                }
                Layer::Linear {
                    in_features: fi,
                    out_features: fo,
                } => {
                    // y[o] = b[o] + sum_f w[o][f] * x[f]
                    for o in 0..fo {
                        let mut acc = p[fo * fi + o];
                        for f in 0..fi {
                            acc += p[o * fi + f] * x[f];
                        }
                        y[o] = acc;
                    }
                }
                Layer::MaxPool2d { kernel: k, stride } => {
                    am = vec![0; so.len()];
                    for c in 0..so.c {
                        for oy in 0..so.h {
                            for ox in 0..so.w {
                                // First maximum in window order; NaN wins.
                                let mut best = (c * si.h + oy * stride) * si.w + ox * stride;
                                for u in 0..k {
                                    for v in 0..k {
                                        let q =
                                            (c * si.h + oy * stride + u) * si.w + ox * stride + v;
                                        if x[q] > x[best] || x[q].is_nan() && !x[best].is_nan() {
                                            best = q;
                                        }
                                    }
                                }
                                let o = (c * so.h + oy) * so.w + ox;
                                y[o] = x[best];
                                am[o] = best;
                            }
                        }
                    }
                }
                Layer::AvgPool2d { kernel: k, stride } => {
                    for c in 0..so.c {
                        for oy in 0..so.h {
                            for ox in 0..so.w {
                                let mut acc = 0.0;
                                for u in 0..k {
                                    for v in 0..k {
                                        acc += x
                                            [(c * si.h + oy * stride + u) * si.w + ox * stride + v];
                                    }
                                }
                                y[(c * so.h + oy) * so.w + ox] = acc * (1.0 / (k * k) as f32);
                            }
                        }
                    }
                }
                Layer::Act => {
                    for (yv, &xv) in y.iter_mut().zip(x) {
                        *yv = act.apply(xv);
                    }
                }
                Layer::Dropout { p: prob } => {
                    for (f, (yv, &xv)) in y.iter_mut().zip(x).enumerate() {
                        *yv = match dropout {
                            Some((seed, step, sample)) => {
                                xv * mask((seed, step, sample), j, f, so, prob)
                            }
                            None => xv,
                        };
                    }
                }
                Layer::Flatten => y.copy_from_slice(x),
                Layer::Upsample { .. } => resize::forward(x, si.c, si.h, si.w, &mut y, so.h, so.w),
                _ => unreachable!("checked in new"),
            }
            xs.push(y);
            argmax.push(am);
        }
        Tape { xs, argmax }
    }
}

impl NetReference {
    /// A reference trainer for `cfg` starting from `params` (flat,
    /// `state_dict` order).
    ///
    /// # Errors
    /// [`TrainerError::State`] if the network does not fit its input or
    /// `params` has the wrong length; [`TrainerError::Device`] if the
    /// threads cannot be started.
    pub fn new(cfg: &TrainerConfig, params: &[f32]) -> Result<NetReference, TrainerError> {
        let net = RefNet::new(cfg.arch)?;
        let state = HostState::new(cfg.optimizer, net.num_params, params)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .build()
            .map_err(|e| TrainerError::Device {
                device: "cpu-reference",
                msg: format!("cannot build the thread pool: {e}"),
            })?;
        Ok(NetReference {
            net,
            act: cfg.act,
            dropout_seed: cfg.dropout_seed,
            state,
            pool,
        })
    }

    /// Backward pass of one sample from `dy = dL/dlogits`, accumulating
    /// into `grad`.
    fn backward_one(&self, tape: &Tape, sample: usize, mut dy: Vec<f32>, grad: &mut [f32]) {
        for (j, l) in self.net.layers.iter().enumerate().rev() {
            let (si, so) = (self.net.shapes[j], self.net.shapes[j + 1]);
            let (x, y) = (&tape.xs[j], &tape.xs[j + 1]);
            let mut dx = vec![0.0f32; si.len()];
            let p = &self.state.params[self.net.offsets[j]..];
            let g = &mut grad[self.net.offsets[j]..];
            match *l {
                Layer::Conv2d {
                    kernel: k,
                    padding: pad,
                    stride: s,
                    ..
                } => {
                    // dL/dw[o][i][u][v] += sum_{oy,ox} dy[o][oy][ox] * x[i][oy*S+u-P][ox*S+v-P]
                    // dL/db[o] += sum_{oy,ox} dy[o][oy][ox]
                    // dL/dx[i][iy][ix] += sum w[o][i][u][v] * dy[o][oy][ox]
                    let wlen = so.c * si.c * k * k;
                    for o in 0..so.c {
                        for oy in 0..so.h {
                            for ox in 0..so.w {
                                let d = dy[(o * so.h + oy) * so.w + ox];
                                g[wlen + o] += d;
                                for i in 0..si.c {
                                    for u in 0..k {
                                        for v in 0..k {
                                            let iy = (oy * s + u) as isize - pad as isize;
                                            let ix = (ox * s + v) as isize - pad as isize;
                                            if iy < 0
                                                || ix < 0
                                                || iy >= si.h as isize
                                                || ix >= si.w as isize
                                            {
                                                continue;
                                            }
                                            let q = (i * si.h + iy as usize) * si.w + ix as usize;
                                            let wi = ((o * si.c + i) * k + u) * k + v;
                                            g[wi] += d * x[q];
                                            dx[q] += p[wi] * d;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Layer::Linear {
                    in_features: fi,
                    out_features: fo,
                } => {
                    // dL/dw[o][f] += dy[o] * x[f]; dL/db[o] += dy[o];
                    // dL/dx[f] += sum_o w[o][f] * dy[o]
                    for o in 0..fo {
                        g[fo * fi + o] += dy[o];
                        for f in 0..fi {
                            g[o * fi + f] += dy[o] * x[f];
                            dx[f] += p[o * fi + f] * dy[o];
                        }
                    }
                }
                Layer::MaxPool2d { .. } => {
                    // dL/dx[argmax] += dy
                    for (o, &q) in tape.argmax[j].iter().enumerate() {
                        dx[q] += dy[o];
                    }
                }
                Layer::AvgPool2d { kernel: k, stride } => {
                    // dL/dx[oy*S+u][ox*S+v] += dy[oy][ox] / K^2
                    for c in 0..so.c {
                        for oy in 0..so.h {
                            for ox in 0..so.w {
                                let d = dy[(c * so.h + oy) * so.w + ox] * (1.0 / (k * k) as f32);
                                for u in 0..k {
                                    for v in 0..k {
                                        dx[(c * si.h + oy * stride + u) * si.w
                                            + ox * stride
                                            + v] += d;
                                    }
                                }
                            }
                        }
                    }
                }
                Layer::Act => {
                    // dL/dx = dL/dy * act'(x), from y = act(x)
                    for ((d, &dv), &yv) in dx.iter_mut().zip(&dy).zip(y) {
                        *d = dv * self.act.derivative_from_output(yv);
                    }
                }
                Layer::Dropout { p: prob } => {
                    // dL/dx = dL/dy * mask
                    for (f, (d, &dv)) in dx.iter_mut().zip(&dy).enumerate() {
                        *d =
                            dv * mask((self.dropout_seed, self.state.step, sample), j, f, so, prob);
                    }
                }
                Layer::Flatten => dx.copy_from_slice(&dy),
                Layer::Upsample { .. } => {
                    resize::backward(&dy, si.c, si.h, si.w, so.h, so.w, &mut dx);
                }
                _ => unreachable!("checked in new"),
            }
            dy = dx;
        }
    }

    /// Loss sum and gradient (of the batch-mean loss) of one chunk whose
    /// first sample is `first` in the batch.
    fn chunk_grads(&self, x: &[f32], labels: &[u8], first: usize, scale: f32) -> (f64, Vec<f32>) {
        let mut grad = vec![0.0f32; self.state.params.len()];
        let mut loss = 0.0f64;
        for (k, (img, &t)) in x.chunks_exact(IMG).zip(labels).enumerate() {
            let tape = self.net.run(
                &self.state.params,
                self.act,
                img,
                Some((self.dropout_seed, self.state.step, first + k)),
            );
            let z: [f32; CLASSES] = core::array::from_fn(|j| tape.xs[self.net.layers.len()][j]);
            loss += f64::from(cross_entropy(&z, usize::from(t)));
            let mut dz = [0.0f32; CLASSES];
            cross_entropy_backward(&mut dz, &z, usize::from(t), scale);
            self.backward_one(&tape, first + k, dz.to_vec(), &mut grad);
        }
        (loss, grad)
    }
}

fn check_batch(x: &[f32], n: usize) -> Result<(), TrainerError> {
    if x.len() != n * IMG {
        return Err(TrainerError::State(format!(
            "expected {n} images of 28x28 ({} values), got {} values",
            n * IMG,
            x.len()
        )));
    }
    Ok(())
}

impl Trainer for NetReference {
    fn device_name(&self) -> &'static str {
        "cpu-reference"
    }

    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError> {
        let n = labels.len();
        check_batch(x, n)?;
        if labels.iter().any(|&l| usize::from(l) >= CLASSES) {
            return Err(TrainerError::State(format!(
                "labels must be in 0..{CLASSES}"
            )));
        }
        if n == 0 {
            return Ok(0.0);
        }
        let scale = 1.0 / n as f32;
        let this = &*self;
        let parts: Vec<(f64, Vec<f32>)> = this.pool.install(|| {
            x.par_chunks(CHUNK * IMG)
                .zip(labels.par_chunks(CHUNK))
                .enumerate()
                .map(|(c, (xc, lc))| this.chunk_grads(xc, lc, c * CHUNK, scale))
                .collect()
        });
        let mut loss = 0.0;
        let mut grad = vec![0.0f32; self.state.params.len()];
        for (l, g) in parts {
            loss += l;
            for (a, b) in grad.iter_mut().zip(&g) {
                *a += b;
            }
        }
        self.state.step += 1;
        let opt = self.state.optimizer;
        match opt {
            OptimizerConfig::Adam { .. } => {
                let k = core_adam(opt).scalars(self.state.step);
                let st = &mut self.state;
                for (((p, &g), m), v) in st
                    .params
                    .iter_mut()
                    .zip(&grad)
                    .zip(&mut st.m)
                    .zip(&mut st.v)
                {
                    k.update(p, g, m, v);
                }
            }
            OptimizerConfig::Sgd { momentum, .. } => {
                let sgd = core_sgd(opt);
                if momentum != 0.0 && self.state.m.len() != self.state.params.len() {
                    self.state.m = vec![0.0; self.state.params.len()];
                }
                let first = self.state.step == 1;
                let mut unused = 0.0;
                for (i, (p, &g)) in self.state.params.iter_mut().zip(&grad).enumerate() {
                    let buf = match self.state.m.get_mut(i) {
                        Some(b) => b,
                        None => &mut unused,
                    };
                    sgd.update(p, g, buf, first);
                }
            }
        }
        Ok((loss / n as f64) as f32)
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = logits.len() / CLASSES;
        if logits.len() != n * CLASSES {
            return Err(TrainerError::State("logits must be N x 10".into()));
        }
        check_batch(x, n)?;
        let this = &*self;
        let last = self.net.layers.len();
        this.pool.install(|| {
            logits
                .par_chunks_mut(CLASSES)
                .zip(x.par_chunks(IMG))
                .for_each(|(out, img)| {
                    out.copy_from_slice(
                        &this.net.run(&this.state.params, this.act, img, None).xs[last],
                    );
                });
        });
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        self.state.set_lr(lr);
    }

    fn params(&mut self) -> Result<Vec<f32>, TrainerError> {
        Ok(self.state.params.clone())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError> {
        Ok(self.state.optimizer_state())
    }

    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        self.state.load(params, state)
    }
}
