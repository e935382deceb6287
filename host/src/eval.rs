//! Evaluation: loss, accuracy, per-class accuracy and the confusion matrix
//! of any [`Trainer`] on a [`Dataset`].

use std::fmt::Write as _;

use crate::backend::{Trainer, TrainerError};
use crate::data::{CLASS_NAMES, CLASSES, Dataset, Normalization, PIXELS};

/// Results of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Samples evaluated.
    pub n: usize,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: [[u64; CLASSES]; CLASSES],
}

impl EvalReport {
    /// Accuracy of each true class (`NaN` for a class with no sample).
    pub fn per_class(&self) -> [f64; CLASSES] {
        let mut out = [0.0; CLASSES];
        for (c, row) in self.confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            out[c] = if total == 0 {
                f64::NAN
            } else {
                row[c] as f64 / total as f64
            };
        }
        out
    }

    /// Human-readable report: totals, per-class accuracy, confusion matrix.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "samples {}  loss {:.4}  accuracy {:.2}%",
            self.n,
            self.loss,
            100.0 * self.accuracy
        );
        let _ = writeln!(s, "\nper-class accuracy:");
        for (c, a) in self.per_class().iter().enumerate() {
            let _ = writeln!(s, "  {:>11}  {:6.2}%", CLASS_NAMES[c], 100.0 * a);
        }
        let _ = writeln!(
            s,
            "\nconfusion matrix (rows: true class, columns: predicted):"
        );
        let _ = write!(s, "{:>12}", "");
        for c in 0..CLASSES {
            let _ = write!(s, " {:>6}", short(c));
        }
        s.push('\n');
        for (r, row) in self.confusion.iter().enumerate() {
            let _ = write!(s, "{:>12}", CLASS_NAMES[r]);
            for v in row {
                let _ = write!(s, " {v:>6}");
            }
            s.push('\n');
        }
        s
    }
}

/// A column header of at most 6 characters for class `c`.
fn short(c: usize) -> &'static str {
    [
        "T-shrt", "Trousr", "Pullov", "Dress", "Coat", "Sandal", "Shirt", "Sneakr", "Bag", "Boot",
    ][c]
}

/// Numerically stable softmax of one row of logits, in `f64`.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = logits.iter().map(|&z| f64::from(z - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Cross-entropy of one row of logits against `target` (log-sum-exp), `f64`.
pub fn cross_entropy(logits: &[f32], target: usize) -> f64 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let lse = f64::from(m)
        + logits
            .iter()
            .map(|&z| f64::from(z - m).exp())
            .sum::<f64>()
            .ln();
    lse - f64::from(logits[target])
}

/// Index of the largest logit (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Runs `trainer.forward` over `ds` in batches of `batch` and scores it.
///
/// # Errors
/// The back end failed.
pub fn evaluate(
    trainer: &mut dyn Trainer,
    ds: &Dataset,
    norm: Normalization,
    batch: usize,
) -> Result<EvalReport, TrainerError> {
    let batch = batch.max(1);
    let mut confusion = [[0u64; CLASSES]; CLASSES];
    let mut loss = 0.0;
    let mut x = Vec::with_capacity(batch * PIXELS);
    let mut logits = vec![0.0f32; batch * CLASSES];
    let mut start = 0;
    while start < ds.len() {
        let end = (start + batch).min(ds.len());
        x.clear();
        norm.extend(&mut x, &ds.images[start * PIXELS..end * PIXELS]);
        let out = &mut logits[..(end - start) * CLASSES];
        trainer.forward(&x, out)?;
        for (row, &label) in out.chunks_exact(CLASSES).zip(&ds.labels[start..end]) {
            loss += cross_entropy(row, label as usize);
            confusion[label as usize][argmax(row)] += 1;
        }
        start = end;
    }
    let n = ds.len();
    let correct: u64 = (0..CLASSES).map(|c| confusion[c][c]).sum();
    Ok(EvalReport {
        n,
        loss: if n == 0 { f64::NAN } else { loss / n as f64 },
        accuracy: if n == 0 {
            f64::NAN
        } else {
            correct as f64 / n as f64
        },
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_cross_entropy_are_stable() {
        let l = [1000.0f32, 0.0, -1000.0];
        let p = softmax(&l);
        assert!((p[0] - 1.0).abs() < 1e-12 && p[2] == 0.0);
        assert!(cross_entropy(&l, 0).abs() < 1e-9);
        assert!((cross_entropy(&l, 1) - 1000.0).abs() < 1e-6);
        // Uniform logits: ln(10).
        assert!((cross_entropy(&[0.0; 10], 3) - 10f64.ln()).abs() < 1e-12);
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn per_class_and_render() {
        let mut confusion = [[0u64; CLASSES]; CLASSES];
        confusion[0][0] = 3;
        confusion[0][6] = 1;
        confusion[9][9] = 2;
        let r = EvalReport {
            n: 6,
            loss: 0.5,
            accuracy: 5.0 / 6.0,
            confusion,
        };
        let pc = r.per_class();
        assert_eq!(pc[0], 0.75);
        assert_eq!(pc[9], 1.0);
        assert!(pc[1].is_nan());
        let text = r.render();
        assert!(
            text.contains("T-shirt/top") && text.contains("Ankle boot") && text.contains("83.33%")
        );
    }
}
