//! The reference trainer: `lenet-core`'s model and optimizers, one sample at
//! a time. Clean and slow on purpose; the fast back ends are tested against
//! it.
//!
//! A batch of `N` images is cut into fixed chunks of [`CHUNK`] samples
//! (independent of the thread count). Each chunk is run on a rayon worker
//! into its own gradient buffer; the buffers are then summed in chunk order,
//! so the result is bit-identical for any `--threads`.
//!
//! Loss: mean cross-entropy over the batch, so every sample's `dlogits` is
//! scaled by `1/N` (PyTorch `CrossEntropyLoss(reduction="mean")`).

use lenet_core::init::Rng;
use lenet_core::loss::{cross_entropy, cross_entropy_backward};
use lenet_core::model::{
    CLASSES, Image, LeNet5, LeNet5Activations, LeNet5Max, LeNet5Params, LeNet5Wide, MaxNet,
    MaxNetActivations, MaxNetParams, Model, ModelKind,
};
use lenet_core::optim::{Adam, AdamState, Parameters, Sgd, SgdState};
use rayon::prelude::*;

pub use crate::reference_net::CHUNK;
use crate::reference_net::NetReference;
use crate::trainer::{
    OptimizerConfig, OptimizerState, Trainer, TrainerConfig, TrainerError, check_state, core_adam,
    core_sgd, init_params,
};

const PIXELS: usize = 28 * 28;

/// A core model the host can allocate buffers for.
pub trait HostModel: Model + Send + Sync + 'static
where
    Self::Params: Send + Sync,
{
    /// Zeroed parameters on the heap.
    fn new_params() -> Box<Self::Params>;
    /// Zeroed activations on the heap.
    fn new_acts() -> Box<Self::Activations>;
}

impl HostModel for LeNet5 {
    fn new_params() -> Box<LeNet5Params> {
        Box::new(LeNet5Params::zeroed())
    }
    fn new_acts() -> Box<LeNet5Activations> {
        Box::new(LeNet5Activations::zeroed())
    }
}

impl<const N1: usize, const N2: usize, const FL: usize> HostModel for MaxNet<N1, N2, FL> {
    fn new_params() -> Box<MaxNetParams<N1, N2, FL>> {
        Box::new(MaxNetParams::zeroed())
    }
    fn new_acts() -> Box<MaxNetActivations<N1, N2>> {
        Box::new(MaxNetActivations::zeroed())
    }
}

enum Opt<P> {
    Adam(Adam, Box<AdamState<P>>),
    Sgd(Sgd, Box<SgdState<P>>),
}

/// Reference trainer over core model `M`.
pub struct ReferenceTrainer<M: HostModel>
where
    M::Params: Send + Sync,
{
    model: M,
    params: Box<M::Params>,
    opt: Opt<M::Params>,
    pool: rayon::ThreadPool,
}

/// Copies `x` (784 floats) into an [`Image`].
fn to_image(img: &mut Image, x: &[f32]) {
    img.as_flattened_mut().as_flattened_mut().copy_from_slice(x);
}

fn flatten<P: Parameters>(p: &P) -> Vec<f32> {
    p.tensors().flat_map(|t| t.iter().copied()).collect()
}

fn unflatten<P: Parameters>(p: &mut P, flat: &[f32]) {
    let mut at = 0;
    for t in p.tensors_mut() {
        let n = t.len();
        t.copy_from_slice(&flat[at..at + n]);
        at += n;
    }
    assert_eq!(at, flat.len(), "parameter count mismatch");
}

impl<M: HostModel> ReferenceTrainer<M>
where
    M::Params: Send + Sync,
    M::Activations: Send,
{
    /// A trainer for `model`, weights initialized from `seed` as PyTorch
    /// does (Kaiming-uniform weights, uniform biases).
    pub fn new(model: M, cfg: &TrainerConfig, seed: u64) -> Self {
        let mut params = M::new_params();
        model.init(&mut params, &mut Rng::new(seed));
        let zero = || {
            let mut z = M::new_params();
            z.fill(0.0);
            *z
        };
        let opt = match cfg.optimizer {
            OptimizerConfig::Adam { .. } => Opt::Adam(
                core_adam(cfg.optimizer),
                Box::new(AdamState {
                    m: zero(),
                    v: zero(),
                    t: 0,
                }),
            ),
            OptimizerConfig::Sgd { .. } => Opt::Sgd(
                core_sgd(cfg.optimizer),
                Box::new(SgdState {
                    velocity: zero(),
                    steps: 0,
                }),
            ),
        };
        // 0 lets rayon pick (all cores, or $RAYON_NUM_THREADS).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .build()
            .expect("rayon thread pool");
        Self {
            model,
            params,
            opt,
            pool,
        }
    }

    /// Loss sum and gradient (of the batch-mean loss) of one chunk.
    fn chunk_grads(&self, x: &[f32], labels: &[u8], scale: f32) -> (f64, Box<M::Params>) {
        let mut grads = M::new_params();
        grads.fill(0.0);
        let mut acts = M::new_acts();
        let mut img: Image = [[[0.0; 28]; 28]; 1];
        let mut loss = 0.0f64;
        for (xi, &label) in x.chunks_exact(PIXELS).zip(labels) {
            to_image(&mut img, xi);
            let logits = *self.model.forward(&mut acts, &self.params, &img);
            loss += f64::from(cross_entropy(&logits, label as usize));
            let mut dlogits = [0.0f32; CLASSES];
            cross_entropy_backward(&mut dlogits, &logits, label as usize, scale);
            self.model
                .backward(&mut grads, &acts, &self.params, &dlogits);
        }
        (loss, grads)
    }
}

impl<M: HostModel> Trainer for ReferenceTrainer<M>
where
    M::Params: Send + Sync,
    M::Activations: Send,
{
    fn device_name(&self) -> &'static str {
        "cpu-reference"
    }

    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError> {
        let n = labels.len();
        assert_eq!(x.len(), n * PIXELS, "x must be N x 784");
        if n == 0 {
            return Ok(f32::NAN);
        }
        let scale = 1.0 / n as f32;
        let this = &*self;
        let parts: Vec<(f64, Box<M::Params>)> = this.pool.install(|| {
            x.par_chunks(CHUNK * PIXELS)
                .zip(labels.par_chunks(CHUNK))
                .map(|(xc, lc)| this.chunk_grads(xc, lc, scale))
                .collect()
        });
        let mut it = parts.into_iter();
        let (mut loss, mut grads) = it.next().expect("at least one chunk");
        for (l, g) in it {
            loss += l;
            for (a, b) in grads.tensors_mut().zip(g.tensors()) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += *y;
                }
            }
        }
        match &mut self.opt {
            Opt::Adam(o, s) => o.step(&mut *self.params, &*grads, &mut **s),
            Opt::Sgd(o, s) => o.step(&mut *self.params, &*grads, &mut **s),
        }
        Ok((loss / n as f64) as f32)
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = x.len() / PIXELS;
        assert_eq!(logits.len(), n * CLASSES, "logits must be N x 10");
        let this = &*self;
        this.pool.install(|| {
            logits
                .par_chunks_mut(CHUNK * CLASSES)
                .zip(x.par_chunks(CHUNK * PIXELS))
                .for_each(|(out, xc)| {
                    let mut acts = M::new_acts();
                    let mut img: Image = [[[0.0; 28]; 28]; 1];
                    for (o, xi) in out.chunks_exact_mut(CLASSES).zip(xc.chunks_exact(PIXELS)) {
                        to_image(&mut img, xi);
                        o.copy_from_slice(this.model.forward(&mut acts, &this.params, &img));
                    }
                });
        });
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        match &mut self.opt {
            Opt::Adam(o, _) => o.lr = lr,
            Opt::Sgd(o, _) => o.lr = lr,
        }
    }

    fn params(&mut self) -> Result<Vec<f32>, TrainerError> {
        Ok(flatten(&*self.params))
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError> {
        Ok(match &self.opt {
            Opt::Adam(_, s) => OptimizerState {
                step: u64::from(s.t),
                m: flatten(&s.m),
                v: flatten(&s.v),
            },
            Opt::Sgd(_, s) => OptimizerState {
                step: u64::from(s.steps),
                m: flatten(&s.velocity),
                v: Vec::new(),
            },
        })
    }

    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        check_state(flatten(&*self.params).len(), params, state)?;
        unflatten(&mut *self.params, params);
        let restore = |p: &mut M::Params, v: &[f32]| {
            if v.is_empty() {
                p.fill(0.0);
            } else {
                unflatten(p, v);
            }
        };
        match &mut self.opt {
            Opt::Adam(_, s) => {
                restore(&mut s.m, &state.m);
                restore(&mut s.v, &state.v);
                s.t = state.step as u32;
            }
            Opt::Sgd(_, s) => {
                restore(&mut s.velocity, &state.m);
                s.steps = state.step as u32;
            }
        }
        Ok(())
    }
}

/// A boxed reference trainer for `cfg`, initialized from `seed`: the
/// lenet-core model for a LeNet, the layer-list reference
/// ([`NetReference`]) for any other network.
///
/// # Errors
/// The network does not fit its input, or the threads cannot be started.
pub fn new_reference(cfg: &TrainerConfig, seed: u64) -> Result<Box<dyn Trainer>, TrainerError> {
    let Some(kind) = cfg.arch.lenet() else {
        let init = init_params(cfg.arch, seed);
        return Ok(Box::new(NetReference::new(cfg, &init)?));
    };
    Ok(match kind {
        ModelKind::LeNet5 => Box::new(ReferenceTrainer::new(LeNet5 { act: cfg.act }, cfg, seed)),
        ModelKind::LeNet5Max => {
            Box::new(ReferenceTrainer::new(LeNet5Max { act: cfg.act }, cfg, seed))
        }
        ModelKind::LeNet5Wide => Box::new(ReferenceTrainer::new(
            LeNet5Wide { act: cfg.act },
            cfg,
            seed,
        )),
    })
}
