//! Progress reporting: an `indicatif` bar on a terminal, a few plain lines
//! otherwise (logs, CI, pipes); and sizes in the words of messages
//! ([`human_bytes`]).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// What is being counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (downloads).
    Bytes,
    /// Items (batches, samples).
    Items,
}

/// One progress indicator. Plain mode prints a line at every quarter.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    next_quarter: u64,
}

impl Progress {
    /// A progress indicator for `total` units (unknown if `None`); a bar
    /// when stderr is a terminal.
    pub fn new(label: &str, total: Option<u64>, unit: Unit) -> Self {
        Self::with_mode(label, total, unit, std::io::stderr().is_terminal())
    }

    /// As [`Progress::new`], choosing bar (`tty`) or plain lines explicitly.
    pub fn with_mode(label: &str, total: Option<u64>, unit: Unit, tty: bool) -> Self {
        let bar = tty.then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let tmpl = match (unit, total.is_some()) {
                (Unit::Bytes, true) => {
                    "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
                }
                (Unit::Bytes, false) => "{msg:>24} {spinner} {bytes} {bytes_per_sec}",
                (Unit::Items, true) => "{msg:>24} [{bar:30}] {pos}/{len} eta {eta}",
                (Unit::Items, false) => "{msg:>24} {spinner} {pos}",
            };
            if let Ok(style) = ProgressStyle::with_template(tmpl) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Self {
            bar,
            label: label.to_string(),
            unit,
            total,
            done: 0,
            next_quarter: 1,
        }
    }

    /// Adds `n` units.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        if let Some(t) = self.total.filter(|&t| t > 0) {
            while self.next_quarter <= 3 && self.done * 4 >= self.next_quarter * t {
                eprintln!(
                    "{}: {}%  ({})",
                    self.label,
                    self.next_quarter * 25,
                    self.amount()
                );
                self.next_quarter += 1;
            }
        }
    }

    fn amount(&self) -> String {
        match self.unit {
            Unit::Bytes => format!("{:.1} MB", self.done as f64 / 1e6),
            Unit::Items => match self.total {
                Some(t) => format!("{}/{t}", self.done),
                None => self.done.to_string(),
            },
        }
    }

    /// Ends the indicator with a final message (printed in plain mode too).
    pub fn finish(self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("{}: {msg}", self.label)),
            None => eprintln!("{}: {msg}", self.label),
        }
    }

    /// Removes the bar without a message (plain mode prints nothing).
    pub fn clear(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `bytes` in MiB or GiB, for messages.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= f64::from(1u32 << 30) {
        format!("{:.1} GiB", b / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", (b / f64::from(1u32 << 20)).ceil())
    }
}
