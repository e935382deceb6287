//! The CPU back end: one trainer ([`CpuTrainer`]) for every network, which
//! executes the network's plan with kernels chosen by its shape.
//!
//! The batch is cut into contiguous chunks, one per thread of a dedicated
//! rayon pool; each thread runs its chunk forward and backward into its own
//! gradient. The per-thread gradients are then summed in thread order,
//! range by range, by the same threads, which apply lenet-core's optimizer
//! to their range (`reduce.rs`): for one batch, thread count and processor
//! the result is bit-identical from run to run.
//!
//! Two paths run a chunk, picked once from the network's layer list:
//!
//! - **fused LeNet kernels** (`lenet/`), when the layer list is one of the
//!   three LeNets': blocks of `L` images (16 with AVX-512, 8 with AVX2, 4
//!   otherwise) go through lane kernels whose innermost dimension is the
//!   image in the block, so every scalar formula of the lenet-core
//!   reference becomes one vector instruction; single images take a
//!   low-latency path. The instruction set is detected once ([`Isa`]).
//! - **layer by layer** ([`graph`]), for every other list: im2col + GEMM
//!   convolutions, a convolution fused with the max pooling after it, and
//!   the other layers on channel-major planes.
//!
//! Both read the same flat parameters (`state_dict` order, the offsets of
//! [`lenet_core::model::Plan`]) and share the threads, the reduction and the
//! optimizer state, so a network changes kernels, never trainers.

pub mod bench;
pub mod graph;
mod lenet;
mod reduce;
pub mod sgemm;
#[cfg(test)]
pub(crate) mod tests;

use crate::backend::{HostState, OptimizerState, Trainer, TrainerConfig, TrainerError, try_zeros};
pub use lenet::Isa;
use lenet::{CLASSES, Engine, IMG, Prepared};
use lenet_core::model::{Arch, ModelKind};
use reduce::reduce_and_update;

/// Inference batches below this size run image by image on the calling
/// thread through the fused path's single-image kernels (where the
/// instruction set has them).
const SINGLE_BELOW: usize = 4;

/// How a [`CpuTrainer`] picks its kernels (the defaults pick the fastest;
/// the others exist to compare paths and instruction sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Instruction set of the fused LeNet kernels; one wider than the
    /// processor has is clamped to what it has.
    pub isa: Isa,
    /// Use the fused LeNet kernels where the layer list allows; `false`
    /// runs every network layer by layer.
    pub fused: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            isa: Isa::detect(),
            fused: true,
        }
    }
}

/// The LeNet whose layer list `arch` has, if any: the shapes the fused
/// kernels are written for.
pub fn fused_lenet(arch: Arch) -> Option<ModelKind> {
    let layers = arch.layers();
    ModelKind::ALL
        .into_iter()
        .find(|&k| Arch::LeNet(k).layers() == layers)
}

/// The kernels of one network.
enum Path {
    /// The fused LeNet kernels (`lenet/`).
    Fused {
        isa: Isa,
        /// Transposed weights, refreshed from the parameters when stale.
        prep: Box<Prepared>,
        stale: bool,
        /// One batched engine per thread.
        engines: Vec<Box<dyn Engine>>,
    },
    /// Layer by layer ([`graph`]).
    Layers {
        plan: graph::Plan,
        /// One set of buffers per thread.
        works: Vec<graph::Work>,
    },
}

impl Path {
    /// Images per unit of a thread's chunk: a block of lanes on the fused
    /// path, one image layer by layer.
    fn block(&self) -> usize {
        match self {
            Path::Fused { isa, .. } => isa.lanes(),
            Path::Layers { .. } => 1,
        }
    }

    /// The parameters changed: the fused path's transposed weights are
    /// stale until the next [`CpuTrainer::refresh`].
    fn params_changed(&mut self) {
        if let Path::Fused { stale, .. } = self {
            *stale = true;
        }
    }
}

/// The CPU back end of [`Trainer`], for every network.
pub struct CpuTrainer {
    config: TrainerConfig,
    path: Path,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Parameters and optimizer state.
    state: HostState,
    /// Per-thread gradients, `threads x num_params`, allocated on first use.
    grads: Vec<Vec<f32>>,
    losses: Vec<f64>,
    /// Run small inference batches as blocks too (to test both fused paths).
    force_blocks: bool,
}

impl core::fmt::Debug for CpuTrainer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CpuTrainer")
            .field("config", &self.config)
            .field("path", &self.path_name())
            .field("threads", &self.threads)
            .field("step", &self.state.step)
            .finish_non_exhaustive()
    }
}

/// Splits `n` images into at most `threads` contiguous ranges of whole
/// blocks of `block` images (the last may be short); returns the ranges.
fn ranges(n: usize, threads: usize, block: usize) -> Vec<(usize, usize)> {
    let blocks = n.div_ceil(block);
    let used = threads.min(blocks).max(1);
    (0..used)
        .map(|t| {
            let (b0, b1) = (t * blocks / used, (t + 1) * blocks / used);
            ((b0 * block).min(n), (b1 * block).min(n))
        })
        .collect()
}

impl CpuTrainer {
    /// A trainer for `config` starting from `params` (flat, `state_dict`
    /// order), with a fresh optimizer state and the fastest kernels.
    ///
    /// # Errors
    /// [`TrainerError::State`] if the network does not fit its input or
    /// `params` has the wrong length, [`TrainerError::Device`] if the
    /// threads or buffers cannot be had.
    pub fn new(config: &TrainerConfig, params: &[f32]) -> Result<CpuTrainer, TrainerError> {
        Self::with_options(config, params, CpuOptions::default())
    }

    /// As [`new`](Self::new), with the fused kernels' instruction set
    /// forced to `isa`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_isa(
        config: &TrainerConfig,
        params: &[f32],
        isa: Isa,
    ) -> Result<CpuTrainer, TrainerError> {
        Self::with_options(
            config,
            params,
            CpuOptions {
                isa,
                ..CpuOptions::default()
            },
        )
    }

    /// As [`new`](Self::new), with the kernels chosen by `opts`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_options(
        config: &TrainerConfig,
        params: &[f32],
        opts: CpuOptions,
    ) -> Result<CpuTrainer, TrainerError> {
        let plan = graph::Plan::new(config.arch)?;
        let state = HostState::new(config.optimizer, plan.num_params, params)?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lenet-cpu-{i}"))
            .build()
            .map_err(|e| TrainerError::Device {
                device: "cpu",
                msg: format!("cannot build the thread pool: {e}"),
            })?;
        let path = match fused_lenet(config.arch).filter(|_| opts.fused) {
            Some(kind) => {
                let isa = match (Isa::detect(), opts.isa) {
                    (Isa::Generic, _) => Isa::Generic,
                    (Isa::Avx2, Isa::Avx512) => Isa::Avx2,
                    (_, wanted) => wanted,
                };
                let mut prep = Box::new(Prepared::new(kind));
                prep.update(params);
                Path::Fused {
                    isa,
                    prep,
                    stale: false,
                    engines: (0..threads)
                        .map(|_| lenet::new_engine(isa, config.act, kind))
                        .collect(),
                }
            }
            None => Path::Layers {
                plan,
                works: (0..threads).map(|_| graph::Work::default()).collect(),
            },
        };
        Ok(CpuTrainer {
            config: config.clone(),
            path,
            pool,
            threads,
            state,
            grads: vec![Vec::new(); threads],
            losses: vec![0.0; threads],
            force_blocks: false,
        })
    }

    /// The instruction set of the fused kernels; [`Isa::Generic`] on the
    /// layer-by-layer path (whose products pick their own at run time).
    pub fn isa(&self) -> Isa {
        match self.path {
            Path::Fused { isa, .. } => isa,
            Path::Layers { .. } => Isa::Generic,
        }
    }

    /// Which kernels run the network: `"fused LeNet"` or `"layer by layer"`.
    pub fn path_name(&self) -> &'static str {
        match self.path {
            Path::Fused { .. } => "fused LeNet",
            Path::Layers { .. } => "layer by layer",
        }
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The mean loss and the gradient (flat, `state_dict` order) of a batch
    /// at the current parameters, without an optimizer step (dropout masks
    /// of the next step).
    ///
    /// # Errors
    /// As [`Trainer::train_batch`].
    pub fn loss_and_grad(
        &mut self,
        x: &[f32],
        labels: &[u8],
        grad: &mut [f32],
    ) -> Result<f32, TrainerError> {
        let used = self.backprop(x, labels)?;
        grad.fill(0.0);
        for g in &self.grads[..used] {
            for (d, s) in grad.iter_mut().zip(g) {
                *d += s;
            }
        }
        Ok(self.batch_loss(used, labels.len()))
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

    /// Refreshes the fused path's transposed weights if the parameters
    /// changed since.
    fn refresh(&mut self) {
        if let Path::Fused { prep, stale, .. } = &mut self.path
            && *stale
        {
            prep.update(&self.state.params);
            *stale = false;
        }
    }

    /// Forward and backward of the batch on all threads; leaves per-thread
    /// gradients and losses and returns how many threads took part.
    fn backprop(&mut self, x: &[f32], labels: &[u8]) -> Result<usize, TrainerError> {
        let n = labels.len();
        Self::check_batch(x, n)?;
        if let Some(&bad) = labels.iter().find(|&&l| usize::from(l) >= CLASSES) {
            return Err(TrainerError::State(format!(
                "label {bad} out of range 0..{CLASSES}"
            )));
        }
        self.refresh();
        let rs = ranges(n, self.threads, self.path.block());
        let total = self.state.params.len();
        for g in &mut self.grads[..rs.len()] {
            if g.len() != total {
                *g = try_zeros(total, "a thread's gradient")?;
            }
        }
        let scale = 1.0 / n as f32;
        let (params, act) = (&self.state.params[..], self.config.act);
        let (seed, step) = (self.config.dropout_seed, self.state.step);
        let out = self.grads.iter_mut().zip(&mut self.losses);
        let mut errs: Vec<Option<TrainerError>> = rs.iter().map(|_| None).collect();
        match &mut self.path {
            Path::Fused { prep, engines, .. } => {
                let prep = &**prep;
                self.pool.scope(|s| {
                    for ((engine, (grad, loss)), &(a, b)) in engines.iter_mut().zip(out).zip(&rs) {
                        s.spawn(move |_| {
                            let xs = &x[a * IMG..b * IMG];
                            *loss = engine.train(prep, params, xs, &labels[a..b], scale, grad);
                        });
                    }
                });
            }
            Path::Layers { plan, works } => {
                let plan = &*plan;
                self.pool.scope(|s| {
                    for (((work, (grad, loss)), &(a, b)), err) in
                        works.iter_mut().zip(out).zip(&rs).zip(&mut errs)
                    {
                        s.spawn(move |_| {
                            let xs = &x[a * IMG..b * IMG];
                            let run = graph::train_chunk(
                                plan,
                                params,
                                act,
                                (seed, step, a),
                                work,
                                xs,
                                &labels[a..b],
                                scale,
                                grad,
                            );
                            match run {
                                Ok(l) => *loss = l,
                                Err(e) => *err = Some(e),
                            }
                        });
                    }
                });
            }
        }
        if let Some(e) = errs.into_iter().flatten().next() {
            return Err(e);
        }
        Ok(rs.len())
    }

    fn batch_loss(&self, used: usize, n: usize) -> f32 {
        let sum: f64 = self.losses[..used].iter().sum();
        (sum / n.max(1) as f64) as f32
    }
}

impl Trainer for CpuTrainer {
    fn device_name(&self) -> &'static str {
        "cpu"
    }

    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError> {
        let n = labels.len();
        if n == 0 {
            return Ok(0.0);
        }
        let used = self.backprop(x, labels)?;
        let s = &mut self.state;
        s.step += 1;
        reduce_and_update(
            &self.pool,
            self.threads,
            s.optimizer,
            s.step,
            &self.grads[..used],
            &mut s.params,
            &mut s.m,
            &mut s.v,
        );
        self.path.params_changed();
        Ok(self.batch_loss(used, n))
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = logits.len() / CLASSES;
        if logits.len() != n * CLASSES {
            return Err(TrainerError::State(format!(
                "logits must be N x 10, got {} values",
                logits.len()
            )));
        }
        Self::check_batch(x, n)?;
        if n == 0 {
            return Ok(());
        }
        self.refresh();
        let params = &self.state.params[..];
        let act = self.config.act;
        if let Path::Fused {
            isa, prep, engines, ..
        } = &mut self.path
        {
            if n < SINGLE_BELOW && !self.force_blocks {
                let mut done = true;
                for (img, out) in x.chunks_exact(IMG).zip(logits.chunks_exact_mut(CLASSES)) {
                    done &= engines[0].forward_one(prep, params, img, out);
                }
                if done {
                    return Ok(());
                }
            }
            if n <= isa.lanes() {
                // One block: run it here rather than waking the pool.
                engines[0].forward(prep, params, x, logits);
                return Ok(());
            }
        }
        let rs = ranges(n, self.threads, self.path.block());
        let mut outs = Vec::with_capacity(rs.len());
        let mut rest = logits;
        for &(a, b) in &rs {
            let (head, tail) = rest.split_at_mut((b - a) * CLASSES);
            outs.push(head);
            rest = tail;
        }
        let mut errs: Vec<Option<TrainerError>> = rs.iter().map(|_| None).collect();
        match &mut self.path {
            Path::Fused { prep, engines, .. } => {
                let prep = &**prep;
                self.pool.scope(|s| {
                    for ((engine, out), &(a, b)) in engines.iter_mut().zip(outs).zip(&rs) {
                        s.spawn(move |_| engine.forward(prep, params, &x[a * IMG..b * IMG], out));
                    }
                });
            }
            Path::Layers { plan, works } => {
                let plan = &*plan;
                self.pool.scope(|s| {
                    for (((work, out), &(a, b)), err) in
                        works.iter_mut().zip(outs).zip(&rs).zip(&mut errs)
                    {
                        s.spawn(move |_| {
                            let xs = &x[a * IMG..b * IMG];
                            if let Err(e) = graph::forward_chunk(plan, params, act, work, xs, out) {
                                *err = Some(e);
                            }
                        });
                    }
                });
            }
        }
        if let Some(e) = errs.into_iter().flatten().next() {
            return Err(e);
        }
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
        self.state.load(params, state)?;
        self.path.params_changed();
        Ok(())
    }
}
