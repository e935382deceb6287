//! The optimizer step of the CPU trainer ([`super::CpuTrainer`], on both of
//! its paths): per-thread gradients summed in thread order,
//! range by range, and lenet-core's per-scalar update applied to each
//! range, so the result does not depend on how the ranges are split.

use crate::backend::{OptimizerConfig, core_adam, core_sgd};

/// One optimizer step from per-thread gradients, on `pool`: the
/// parameters are cut into one range per thread; each range's gradients
/// are summed in thread order ([`reduce`]) and updated ([`optimize`]) by
/// one worker, so the split does not change the result. Creates SGD's
/// momentum buffer on the first step that needs it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_and_update(
    pool: &rayon::ThreadPool,
    threads: usize,
    opt: OptimizerConfig,
    step: u64,
    grads: &[Vec<f32>],
    params: &mut [f32],
    m: &mut Vec<f32>,
    v: &mut [f32],
) {
    if let OptimizerConfig::Sgd { momentum, .. } = opt
        && momentum != 0.0
        && m.len() != params.len()
    {
        *m = vec![0.0; params.len()];
    }
    let per = params.len().div_ceil(threads.max(1)).next_multiple_of(64);
    let mut m_chunks: Vec<&mut [f32]> = m.chunks_mut(per).collect();
    let mut v_chunks: Vec<&mut [f32]> = v.chunks_mut(per).collect();
    pool.scope(|s| {
        for (i, p) in params.chunks_mut(per).enumerate() {
            let m = m_chunks.get_mut(i).map_or(&mut [][..], core::mem::take);
            let v = v_chunks.get_mut(i).map_or(&mut [][..], core::mem::take);
            s.spawn(move |_| {
                let mut g = vec![0.0f32; p.len()];
                reduce(&mut g, grads, i * per);
                optimize(opt, step, p, &g, m, v);
            });
        }
    });
}

/// Sums the per-thread gradients of `range` in thread order into `g`.
fn reduce(g: &mut [f32], grads: &[Vec<f32>], start: usize) {
    g.copy_from_slice(&grads[0][start..start + g.len()]);
    for part in &grads[1..] {
        for (d, s) in g.iter_mut().zip(&part[start..]) {
            *d += s;
        }
    }
}

/// One optimizer step on a slice of the parameters: lenet-core's
/// per-scalar updates (`AdamScalars::update`, `Sgd::update`), the one
/// definition that the CUDA kernels mirror.
fn optimize(
    opt: OptimizerConfig,
    step: u64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    match opt {
        OptimizerConfig::Adam { .. } => {
            let k = core_adam(opt).scalars(step);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                k.update(p, g, m, v);
            }
        }
        OptimizerConfig::Sgd { .. } => {
            let sgd = core_sgd(opt);
            let first = step == 1;
            if m.is_empty() {
                let mut unused = 0.0;
                for (p, &g) in p.iter_mut().zip(g) {
                    sgd.update(p, g, &mut unused, first);
                }
            } else {
                for ((p, &g), buf) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                    sgd.update(p, g, buf, first);
                }
            }
        }
    }
}
