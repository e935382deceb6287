//! Report lines on semihosting stderr without `core::fmt`, whose
//! formatting machinery would cost several KB of flash.
//!
//! `report!("images: ", n, " done")` writes the pieces in order and a
//! newline; pieces are `&str` or 32-bit integers (decimal), or
//! [`Hex`].

use semihosting::io::Write;

/// A line being assembled (at most 160 bytes; the rest is cut).
pub struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
        }
    }

    /// Appends bytes (cut at the capacity).
    ///
    /// No slice indexing here or below: its out-of-range panic formats
    /// its message, which would link `core::fmt`'s integer printing
    /// (about 1 KB of flash) into every program.
    #[inline(never)]
    pub fn push(&mut self, b: &[u8]) {
        let free = self.buf.get_mut(self.len..).unwrap_or_default();
        for (d, &s) in free.iter_mut().zip(b) {
            *d = s;
            self.len += 1;
        }
    }

    /// Writes the line and a newline to semihosting stderr. A line that
    /// cannot be written is dropped: a report is not worth a panic.
    pub fn finish(mut self) {
        self.push(b"\n");
        if let Ok(mut err) = semihosting::io::stderr() {
            let _ = err.write_all(self.buf.get(..self.len).unwrap_or_default());
        }
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

/// A piece of a report line.
pub trait Show {
    /// Appends `self` to `line`.
    fn show(&self, line: &mut Line);
}

impl Show for &str {
    fn show(&self, line: &mut Line) {
        line.push(self.as_bytes());
    }
}

impl Show for u32 {
    fn show(&self, line: &mut Line) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut v = *self;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        line.push(digits.get(i..).unwrap_or_default());
    }
}

impl Show for usize {
    fn show(&self, line: &mut Line) {
        (*self as u32).show(line);
    }
}

impl Show for i32 {
    fn show(&self, line: &mut Line) {
        if *self < 0 {
            line.push(b"-");
        }
        self.unsigned_abs().show(line);
    }
}

/// A u32 shown as `0x` and eight hex digits.
pub struct Hex(pub u32);

impl Show for Hex {
    fn show(&self, line: &mut Line) {
        let mut s = *b"0x00000000";
        for (k, c) in s[2..].iter_mut().enumerate() {
            let nibble = (self.0 >> (28 - 4 * k)) & 0xf;
            *c = b"0123456789abcdef"[nibble as usize];
        }
        line.push(&s);
    }
}

/// Writes one report line (plain text on semihosting stderr) from pieces
/// that implement [`Show`]: `report!("images: ", n)`.
#[macro_export]
macro_rules! report {
    ($($piece:expr),+ $(,)?) => {{
        let mut line = $crate::report::Line::new();
        $( $crate::report::Show::show(&$piece, &mut line); )+
        line.finish();
    }};
}
