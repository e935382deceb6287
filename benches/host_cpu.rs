//! Criterion benchmarks of the batched CPU trainer (`lenet_host::backend::cpu`):
//! one Adam training step and one inference pass on a batch of 256 random
//! images, and a single-image forward pass, for both models, with all
//! cores. Throughput is printed in images per second.
//!
//! Run: `cargo bench --bench host_cpu`. For the same three numbers from the
//! CLI (and next to PyTorch's: `benches/pytorch_bench.py`) see
//! `lenet_host::backend::cpu::bench::bench`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lenet_core::activation::Activation;
use lenet_core::model::ModelKind;
use lenet_host::backend::cpu::CpuTrainer;
use lenet_host::backend::cpu::bench::{random_data, random_params};
use lenet_host::backend::{OptimizerConfig, Trainer, TrainerConfig};

const BATCH: usize = 256;

fn trainer(kind: ModelKind, act: Activation) -> CpuTrainer {
    let cfg = TrainerConfig {
        arch: kind.into(),
        dropout_seed: 0,
        act,
        optimizer: OptimizerConfig::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        threads: 0,
    };
    CpuTrainer::new(&cfg, &random_params(kind, 1)).expect("trainer")
}

fn host_cpu(c: &mut Criterion) {
    let mut x = vec![0.0; BATCH * 784];
    random_data(&mut x, 7);
    let labels: Vec<u8> = (0..BATCH).map(|i| (i % 10) as u8).collect();
    let mut logits = vec![0.0; BATCH * 10];
    for kind in ModelKind::ALL {
        let mut t = trainer(kind, Activation::Sigmoid);
        let mut g = c.benchmark_group(format!("host_cpu/{}", kind.name()));
        g.throughput(Throughput::Elements(BATCH as u64));
        g.bench_function("train_step_adam_b256", |b| {
            b.iter(|| black_box(t.train_batch(black_box(&x), &labels).unwrap()))
        });
        g.bench_function("forward_b256", |b| {
            b.iter(|| t.forward(black_box(&x), &mut logits).unwrap())
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function("forward_b1", |b| {
            b.iter(|| t.forward(black_box(&x[..784]), &mut logits[..10]).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, host_cpu);
criterion_main!(benches);
