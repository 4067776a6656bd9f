//! Where a command's output goes: this process's terminal, or — for a command that the
//! running daemon executes on behalf of another `crier` process (see [`crate::control`]) —
//! back over the daemon's control socket to that process.
//!
//! Commands print through [`outln!`](crate::outln), [`errln!`](crate::errln), [`stdout`] and
//! [`confirm`] rather than `println!` and `stdin`, and take their config and store from
//! [`crate::commands`], which asks here first. A forwarded command runs on a thread of its
//! own with a [`Forwarded`] set for that thread only, so commands need no parameter for it
//! and the daemon's own output is untouched.

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender};

use crate::config::Config;
use crate::store::Store;

/// What a forwarded command sends back to the process that asked for it.
#[derive(Debug)]
pub(crate) enum Frame {
    Out(Vec<u8>),
    Err(Vec<u8>),
    /// A yes/no question for the person at the other terminal.
    Ask(String),
}

/// The context of a command the daemon runs for another process.
pub(crate) struct Forwarded {
    /// The daemon's configuration (it holds the store that configuration names).
    pub config: Config,
    /// The daemon's open store.
    pub store: Arc<dyn Store>,
    pub frames: SyncSender<Frame>,
    /// Answers to [`Frame::Ask`], one line each.
    pub answers: Receiver<String>,
    /// The other process's stdin and stderr are a terminal: questions may be asked.
    pub terminal: bool,
    /// Set when the other process goes away (Ctrl-C) or the daemon shuts down.
    pub cancel: Arc<AtomicBool>,
    /// The other process's standard input, when the command reads it.
    pub stdin: Option<Vec<u8>>,
}

thread_local! {
    static FORWARDED: RefCell<Option<Rc<Forwarded>>> = const { RefCell::new(None) };
}

/// Runs `body` with its output forwarded as `context` says.
pub(crate) fn forwarded<R>(context: Forwarded, body: impl FnOnce() -> R) -> R {
    FORWARDED.with(|f| *f.borrow_mut() = Some(Rc::new(context)));
    let result = body();
    FORWARDED.with(|f| *f.borrow_mut() = None);
    result
}

fn current() -> Option<Rc<Forwarded>> {
    FORWARDED.with(|f| f.borrow().clone())
}

/// The daemon's config, when this command runs inside it.
pub(crate) fn forwarded_config() -> Option<Config> {
    current().map(|f| f.config.clone())
}

/// The daemon's store, when this command runs inside it.
pub(crate) fn forwarded_store() -> Option<Arc<dyn Store>> {
    current().map(|f| f.store.clone())
}

/// Set when a forwarded command should stop (its caller went away, the daemon stops).
pub(crate) fn cancel_flag() -> Option<Arc<AtomicBool>> {
    current().map(|f| f.cancel.clone())
}

/// The command's standard input, read to its end: the other process's, when this
/// command runs inside the daemon for it (empty if it sent none).
pub fn read_stdin() -> io::Result<Vec<u8>> {
    match current() {
        Some(f) => Ok(f.stdin.clone().unwrap_or_default()),
        None => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes)?;
            Ok(bytes)
        }
    }
}

/// Is this command running inside the daemon for another process?
pub fn is_forwarded() -> bool {
    current().is_some()
}

/// Writes to the command's standard output.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    match current() {
        Some(f) => {
            let _ = f.frames.send(Frame::Out(args.to_string().into_bytes()));
        }
        None => {
            let mut out = io::stdout().lock();
            // A closed pipe (`crier logs | head`) is not an error worth a panic.
            let _ = out.write_fmt(args);
        }
    }
}

/// Writes to the command's standard error.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    match current() {
        Some(f) => {
            let _ = f.frames.send(Frame::Err(args.to_string().into_bytes()));
        }
        None => {
            let _ = io::stderr().lock().write_fmt(args);
        }
    }
}

/// The command's standard output as a writer (CSV and JSON exports), buffered.
pub fn stdout() -> Box<dyn Write> {
    match current() {
        Some(f) => Box::new(io::BufWriter::with_capacity(
            64 * 1024,
            FrameWriter(f.frames.clone()),
        )),
        None => Box::new(io::stdout().lock()),
    }
}

struct FrameWriter(SyncSender<Frame>);

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .send(Frame::Out(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Asks `prompt` (a yes/no question) of the person at the terminal: `None` when there is
/// no terminal to ask at, else whether they answered yes.
pub fn confirm(prompt: &str) -> io::Result<Option<bool>> {
    let yes = |answer: &str| matches!(answer.trim(), "y" | "Y" | "yes");
    match current() {
        Some(f) => {
            if !f.terminal {
                return Ok(None);
            }
            f.frames
                .send(Frame::Ask(prompt.to_string()))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller went away"))?;
            match f.answers.recv() {
                Ok(answer) => Ok(Some(yes(&answer))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the caller went away before answering",
                )),
            }
        }
        None => {
            if !io::stdin().is_terminal() {
                return Ok(None);
            }
            eprint!("{prompt} [y/N] ");
            io::stderr().flush()?;
            let mut answer = String::new();
            io::stdin().read_line(&mut answer)?;
            Ok(Some(yes(&answer)))
        }
    }
}

/// `println!` for commands: to the terminal or back to the process that asked.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` for commands: to the terminal or back to the process that asked.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}
