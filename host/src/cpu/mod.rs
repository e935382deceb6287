//! Fast batched, multi-threaded CPU trainer.
//!
//! The batch is cut into contiguous chunks, one per thread of a dedicated
//! rayon pool; each thread runs its chunk in blocks of `L` images (16 with
//! AVX-512, 8 with AVX2, 4 otherwise) through lane kernels whose innermost
//! dimension is the image in the block (see [`kernels`]), so every scalar
//! formula of the `lenet-core` reference becomes one vector instruction.
//! Per-thread gradients are then summed in thread order, range by range, by
//! the same threads, which apply the optimizer to their range: for one
//! batch, thread count and processor the result is bit-identical from run
//! to run.
//!
//! The instruction set is detected once ([`Isa::detect`]); the kernels are
//! compiled for each set behind `#[target_feature]` entry points.

pub mod bench;
pub mod graph;
mod kernels;
mod net;
mod reduce;
pub mod sgemm;
mod simd;
mod single;
#[cfg(test)]
pub(crate) mod tests;

use crate::trainer::{
    OptimizerConfig, OptimizerState, Trainer, TrainerConfig, TrainerError, check_state,
};
pub use graph::GraphTrainer;
use lenet_core::model::ModelKind;
use net::{CLASSES, Engine, IMG, Layout, Prepared};
use reduce::reduce_and_update;
pub use simd::Isa;

/// Error building a [`CpuTrainer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CpuError {
    /// The parameter vector does not have the model's length.
    ParamCount {
        /// Length the model needs.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The thread pool could not be built.
    ThreadPool(rayon::ThreadPoolBuildError),
    /// A trainer method failed.
    Backend(TrainerError),
}

impl core::fmt::Display for CpuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpuError::ParamCount { expected, got } => {
                write!(f, "expected {expected} parameters, got {got}")
            }
            CpuError::ThreadPool(e) => write!(f, "cannot build the thread pool: {e}"),
            CpuError::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CpuError {}

/// Number of parameters of `kind` (61 706 for LeNet-5, 44 426 for the
/// max-pool variant, 85 822 for the wide one).
pub const fn num_params(kind: ModelKind) -> usize {
    Layout::of(kind).total
}

/// The batched CPU back end of [`Trainer`].
pub struct CpuTrainer {
    config: TrainerConfig,
    isa: Isa,
    pool: rayon::ThreadPool,
    threads: usize,
    params: Vec<f32>,
    /// Adam first moment or SGD momentum buffer.
    m: Vec<f32>,
    /// Adam second moment.
    v: Vec<f32>,
    step: u64,
    prep: Prepared,
    /// One batched engine per thread.
    engines: Vec<Box<dyn Engine>>,
    /// Per-thread gradients, `threads x num_params`.
    grads: Vec<Vec<f32>>,
    losses: Vec<f64>,
    /// Run small inference batches as blocks too (to test both paths).
    force_blocks: bool,
    /// `prep` does not reflect `params` (set whenever they change).
    prep_stale: bool,
}

impl core::fmt::Debug for CpuTrainer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CpuTrainer")
            .field("config", &self.config)
            .field("isa", &self.isa)
            .field("threads", &self.threads)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Inference batches below this size run image by image on the calling
/// thread through the single-image path (where the instruction set has
/// one).
const SINGLE_BELOW: usize = 4;

impl CpuTrainer {
    /// A trainer for `config` starting from `params` (flat, `state_dict`
    /// order), with a fresh optimizer state.
    ///
    /// # Errors
    ///
    /// [`CpuError::ParamCount`] if `params` has the wrong length,
    /// [`CpuError::ThreadPool`] if the threads cannot be started.
    pub fn new(config: &TrainerConfig, params: &[f32]) -> Result<CpuTrainer, CpuError> {
        Self::with_isa(config, params, Isa::detect())
    }

    /// As [`new`](Self::new), with the instruction set forced to `isa` (a
    /// narrower one than detected, to compare; a wider one is clamped to
    /// what the processor has).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_isa(
        config: &TrainerConfig,
        params: &[f32],
        isa: Isa,
    ) -> Result<CpuTrainer, CpuError> {
        let isa = match (Isa::detect(), isa) {
            (Isa::Generic, _) => Isa::Generic,
            (Isa::Avx2, Isa::Avx512) => Isa::Avx2,
            (_, wanted) => wanted,
        };
        let Some(kind) = config.arch.lenet() else {
            return Err(CpuError::Backend(TrainerError::State(format!(
                "the LeNet CPU trainer cannot run {}",
                config.arch
            ))));
        };
        let expected = num_params(kind);
        if params.len() != expected {
            return Err(CpuError::ParamCount {
                expected,
                got: params.len(),
            });
        }
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lenet-cpu-{i}"))
            .build()
            .map_err(CpuError::ThreadPool)?;
        let engines = (0..threads)
            .map(|_| net::new_engine(isa, config.act, kind))
            .collect();
        let mut prep = Prepared::new(kind);
        prep.update(params);
        let (m, v) = match config.optimizer {
            OptimizerConfig::Adam { .. } => (vec![0.0; expected], vec![0.0; expected]),
            OptimizerConfig::Sgd { .. } => (Vec::new(), Vec::new()),
        };
        Ok(CpuTrainer {
            config: config.clone(),
            isa,
            pool,
            threads,
            params: params.to_vec(),
            m,
            v,
            step: 0,
            prep,
            engines,
            grads: vec![vec![0.0; expected]; threads],
            losses: vec![0.0; threads],
            force_blocks: false,
            prep_stale: false,
        })
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The mean loss and the gradient (flat, `state_dict` order) of a batch
    /// at the current parameters, without an optimizer step.
    pub fn loss_and_grad(&mut self, x: &[f32], labels: &[u8], grad: &mut [f32]) -> f32 {
        let used = self.backprop(x, labels);
        grad.fill(0.0);
        for g in &self.grads[..used] {
            for (d, s) in grad.iter_mut().zip(g) {
                *d += s;
            }
        }
        self.batch_loss(used, labels.len())
    }

    /// Image ranges of the chunks: whole blocks of `lanes`, split evenly
    /// over at most `threads` threads. Returns the number of chunks.
    fn chunks(&self, n: usize, out: &mut [(usize, usize)]) -> usize {
        let lanes = self.isa.lanes();
        let blocks = n.div_ceil(lanes);
        let used = self.threads.min(blocks).max(1);
        for (t, r) in out.iter_mut().enumerate().take(used) {
            let b0 = t * blocks / used;
            let b1 = (t + 1) * blocks / used;
            *r = ((b0 * lanes).min(n), (b1 * lanes).min(n));
        }
        used
    }

    /// Forward and backward of the batch on all threads; leaves per-thread
    /// gradients and losses and returns how many threads took part.
    fn backprop(&mut self, x: &[f32], labels: &[u8]) -> usize {
        let n = labels.len();
        assert_eq!(x.len(), n * IMG, "x must hold labels.len() images of 28x28");
        if self.prep_stale {
            self.prep.update(&self.params);
            self.prep_stale = false;
        }
        let mut ranges = vec![(0, 0); self.threads];
        let used = self.chunks(n, &mut ranges);
        let scale = 1.0 / n as f32;
        let (prep, params) = (&self.prep, &self.params[..]);
        let work = self
            .engines
            .iter_mut()
            .zip(&mut self.grads)
            .zip(&mut self.losses);
        self.pool.scope(|s| {
            for (((engine, grad), loss), &(a, b)) in work.zip(&ranges).take(used) {
                s.spawn(move |_| {
                    *loss = engine.train(
                        prep,
                        params,
                        &x[a * IMG..b * IMG],
                        &labels[a..b],
                        scale,
                        grad,
                    );
                });
            }
        });
        used
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
        let used = self.backprop(x, labels);
        self.step += 1;
        reduce_and_update(
            &self.pool,
            self.threads,
            self.config.optimizer,
            self.step,
            &self.grads[..used],
            &mut self.params,
            &mut self.m,
            &mut self.v,
        );
        self.prep_stale = true;
        Ok(self.batch_loss(used, n))
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = logits.len() / CLASSES;
        assert_eq!(logits.len(), n * CLASSES, "logits must be N x 10");
        assert_eq!(x.len(), n * IMG, "x must hold N images of 28x28");
        if self.prep_stale {
            self.prep.update(&self.params);
            self.prep_stale = false;
        }
        if n < SINGLE_BELOW && !self.force_blocks {
            let (prep, params) = (&self.prep, &self.params[..]);
            let engine = &mut self.engines[0];
            let mut done = true;
            for (img, out) in x.chunks_exact(IMG).zip(logits.chunks_exact_mut(CLASSES)) {
                done &= engine.forward_one(prep, params, img, out);
            }
            if done {
                return Ok(());
            }
        }
        if n <= self.isa.lanes() {
            // One block: run it here rather than waking the pool.
            self.engines[0].forward(&self.prep, &self.params, x, logits);
            return Ok(());
        }
        let mut ranges = vec![(0, 0); self.threads];
        let used = self.chunks(n, &mut ranges);
        let (prep, params) = (&self.prep, &self.params[..]);
        let mut outs = Vec::with_capacity(used);
        let mut rest = logits;
        for &(a, b) in &ranges[..used] {
            let (head, tail) = rest.split_at_mut((b - a) * CLASSES);
            outs.push(head);
            rest = tail;
        }
        self.pool.scope(|s| {
            for ((engine, out), &(a, b)) in self.engines.iter_mut().zip(outs).zip(&ranges) {
                s.spawn(move |_| engine.forward(prep, params, &x[a * IMG..b * IMG], out));
            }
        });
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        match &mut self.config.optimizer {
            OptimizerConfig::Adam { lr: l, .. } | OptimizerConfig::Sgd { lr: l, .. } => *l = lr,
        }
    }

    fn params(&mut self) -> Result<Vec<f32>, TrainerError> {
        Ok(self.params.clone())
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError> {
        Ok(OptimizerState {
            step: self.step,
            m: self.m.clone(),
            v: self.v.clone(),
        })
    }

    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        check_state(self.params.len(), params, state)?;
        self.params.copy_from_slice(params);
        self.prep_stale = true;
        let s = state.fitted(self.config.optimizer, params.len());
        (self.step, self.m, self.v) = (s.step, s.m, s.v);
        Ok(())
    }
}
