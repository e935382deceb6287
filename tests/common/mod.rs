//! The integration tests' view of the golden records: the reader and the
//! float comparison of [`lenet_host::golden`], with panicking loaders and
//! asserts that quote each record's PyTorch call.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::PathBuf;

pub mod firmware;

pub use lenet_host::golden::{Golden, REGENERATE, Record, Worst};

/// The tests' panicking view of a golden file: a missing file or record is
/// a test failure that says how to regenerate the files.
pub trait GoldenExt: Sized {
    /// Loads `tests/golden/<file>`.
    fn load(file: &str) -> Self;
    /// Record `name`.
    fn get(&self, name: &str) -> &Record;
}

impl GoldenExt for Golden {
    fn load(file: &str) -> Self {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", file]
            .iter()
            .collect();
        Golden::read(&path).unwrap_or_else(|e| panic!("{e}; rerun `{REGENERATE}`"))
    }

    fn get(&self, name: &str) -> &Record {
        self.record(name)
            .unwrap_or_else(|e| panic!("{e}; rerun `{REGENERATE}`"))
    }
}

/// Shape-checked views of a record.
pub trait RecordExt {
    /// Values, after checking that the shape is `dims`.
    fn shaped(&self, dims: &[usize]) -> &[f32];
    /// The `i`-th slice along the first axis (a batch element).
    fn item(&self, i: usize) -> &[f32];
    /// The single value of a one-element record.
    fn scalar(&self) -> f32;
}

impl RecordExt for Record {
    fn shaped(&self, dims: &[usize]) -> &[f32] {
        assert_eq!(
            self.dims, dims,
            "golden record {} has shape {:?}, the test expects {:?}",
            self.name, self.dims, dims
        );
        &self.data
    }

    fn item(&self, i: usize) -> &[f32] {
        let n = self.dims[0];
        assert!(i < n, "{}: index {i} out of {n}", self.name);
        let stride = self.data.len() / n;
        &self.data[i * stride..(i + 1) * stride]
    }

    fn scalar(&self) -> f32 {
        assert_eq!(self.data.len(), 1, "{} is not a scalar", self.name);
        self.data[0]
    }
}

/// Checks `|got[i] - want[i]| <= atol + rtol * |want[i]|` for every `i`
/// ([`lenet_host::golden::compare`]); prints (visible with `--nocapture`)
/// and returns the largest absolute and relative errors.
///
/// # Panics
/// With the comparison's message when any element is out of tolerance.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Worst {
    let worst =
        lenet_host::golden::compare(name, got, want, atol, rtol).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "ok {name}: {} values, max abs {:.3e}, max rel {:.3e} (atol {atol:e}, rtol {rtol:e})",
        got.len(),
        worst.abs,
        worst.rel
    );
    worst
}

/// Compares against a golden record, checking its shape first; failure
/// messages quote the PyTorch call the record came from.
pub fn assert_record(got: &[f32], want: &Record, atol: f32, rtol: f32) -> Worst {
    let label = format!("{} [{}]", want.name, want.source);
    assert_close(&label, got, &want.data, atol, rtol)
}

/// Copies a flat slice into any `Copy` array of `f32` (nested arrays via
/// `as_flattened_mut`), checking the length.
pub fn fill(dst: &mut [f32], src: &[f32], what: &str) {
    assert_eq!(
        dst.len(),
        src.len(),
        "{what}: buffer has {} values, golden has {}",
        dst.len(),
        src.len()
    );
    dst.copy_from_slice(src);
}

/// Runs `f` on a thread with a large stack: the LeNet parameter, gradient
/// and optimizer-state structs are plain arrays of a few hundred KiB each.
pub fn with_big_stack<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .expect("spawn test thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
