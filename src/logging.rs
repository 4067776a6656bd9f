//! Where log lines go: stderr, making room for the progress bar when one is drawn.
//!
//! `crier send` on a terminal draws an indicatif bar on stderr; a log line written
//! straight to stderr would be torn through by the next redraw. Every line is written
//! with the bar hidden for the moment ([`indicatif::ProgressBar::suspend`]) and the bar
//! is drawn again below it.

use std::io::{self, Write};
use std::sync::Mutex;

use indicatif::ProgressBar;

static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Registers the bar log lines must make room for (or none).
pub fn set_progress(bar: Option<ProgressBar>) {
    *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// stderr, around the progress bar.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// The tracing writer: one [`Stderr`] per event.
pub fn writer() -> Stderr {
    Stderr
}
