//! The control socket: how `crier history`, `import`, `send`… keep working while `crier run`
//! (or `crier serve`) holds the store, which admits one process at a time.
//!
//! The process holding the store listens on `<data_dir>/crier.sock` (a Unix socket, mode
//! 0600: only its user may talk to it). Any other `crier` command that needs the store
//! first tries that socket; if a daemon answers, the command is carried out *inside the
//! daemon*, on its open store, with its configuration, and everything it prints comes back
//! here. So every command behaves the same whether a daemon runs or not, the daemon's
//! process-wide locks (the ledger's writer, the job-run registry in
//! [`crate::engine::running`]) cover it, and the same job never runs twice at once.
//!
//! The wire format is frames: one tag byte, a 4-byte big-endian length, the payload.
//! The caller sends `r` (the request: argv, working directory, whether a person is at a
//! terminal) and then `a` (answers to questions); the daemon sends `o` (stdout bytes),
//! `e` (stderr bytes), `q` (a yes/no question) and finally `x` (the exit code). Relative
//! paths in the arguments are resolved against the caller's working directory. If the
//! caller goes away (Ctrl-C), the command is told to stop, as a daemon shutdown would.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::console::{Forwarded, Frame};
use crate::store::Store;

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "crier.sock";

/// Largest frame accepted (an answer).
const MAX_FRAME: u32 = 1 << 20;
/// Largest request accepted: the arguments and, base64, a forwarded standard input.
const MAX_REQUEST: u32 = 64 << 20;

/// The socket of the process holding the store `config` names.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join(SOCKET)
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    argv: Vec<String>,
    cwd: PathBuf,
    terminal: bool,
    /// The caller's standard input, read to its end, in base64: for a command that reads
    /// it (`crier bounces ingest -`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdin: Option<String>,
}

fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&[tag])?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// The next frame, or `None` at a clean end of stream.
fn read_frame(r: &mut impl Read, max: u32) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (at most {max})"),
        ));
    }
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

// The daemon's side.

/// What forwarded commands run against: the daemon's config and store.
pub struct Host {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Set at shutdown: forwarded commands stop as the daemon's own runs do.
    pub cancel: Arc<AtomicBool>,
    active: AtomicUsize,
}

impl Host {
    pub fn new(config: Config, store: Arc<dyn Store>, cancel: Arc<AtomicBool>) -> Arc<Host> {
        Arc::new(Host {
            config,
            store,
            cancel,
            active: AtomicUsize::new(0),
        })
    }

    /// Forwarded commands still running.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits up to `deadline` for forwarded commands to end (after `cancel` was set).
    pub fn wait_idle(&self, deadline: Duration) {
        let until = std::time::Instant::now() + deadline;
        while self.active() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A bound control socket; dropping it removes the socket file.
pub struct Listener {
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket and serves it on a thread of its own until the process ends.
/// A leftover socket file (from a process that was killed) is replaced: whoever calls this
/// holds the store, so no other process can be serving it.
pub fn listen(host: Arc<Host>) -> anyhow::Result<Listener> {
    let path = socket_path(&host.config);
    // With the store in PostgreSQL nothing else creates the data dir.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
    }
    tracing::info!(socket = %path.display(), "Other crier commands on this store are carried out here.");
    std::thread::Builder::new()
        .name("crier-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let host = host.clone();
                        let _ = std::thread::Builder::new()
                            .name("crier-forwarded".into())
                            .spawn(move || {
                                if let Err(e) = serve_one(stream, &host) {
                                    tracing::warn!(error = %e, "A forwarded command's connection failed.");
                                }
                            });
                    }
                    Err(e) => tracing::warn!(error = %e, "Control socket accept failed."),
                }
            }
        })?;
    Ok(Listener { path })
}

fn serve_one(stream: UnixStream, host: &Arc<Host>) -> io::Result<()> {
    let mut reader = stream.try_clone()?;
    let mut writer = io::BufWriter::new(stream);
    let mut request: Request = match read_frame(&mut reader, MAX_REQUEST)? {
        Some((b'r', payload)) => serde_json::from_slice(&payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        // A probe (`crier run` checking whether one already runs): nothing to do.
        None => return Ok(()),
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected a request frame",
            ));
        }
    };
    host.active.fetch_add(1, Ordering::SeqCst);
    struct Active<'a>(&'a Host);
    impl Drop for Active<'_> {
        fn drop(&mut self) {
            self.0.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _active = Active(host);
    tracing::info!(command = %request.argv.get(1..).unwrap_or_default().join(" "), "Carrying out a command for another crier process.");

    // The caller's Ctrl-C (its end of the socket closing) or the daemon's shutdown stops
    // the command.
    let cancel = Arc::new(AtomicBool::new(false));
    let (answers_tx, answers_rx) = mpsc::channel::<String>();
    {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            loop {
                match read_frame(&mut reader, MAX_FRAME) {
                    Ok(Some((b'a', answer))) => {
                        if answers_tx
                            .send(String::from_utf8_lossy(&answer).into_owned())
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            cancel.store(true, Ordering::SeqCst);
        });
    }
    {
        let cancel = cancel.clone();
        let daemon = host.cancel.clone();
        std::thread::spawn(move || {
            while !cancel.load(Ordering::SeqCst) {
                if daemon.load(Ordering::SeqCst) {
                    cancel.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    let stdin = match request.stdin.take().map(|b| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b)
    }) {
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        None => None,
    };
    let (frames_tx, frames_rx) = mpsc::sync_channel::<Frame>(256);
    let context = Forwarded {
        stdin,
        config: host.config.clone(),
        store: host.store.clone(),
        frames: frames_tx,
        answers: answers_rx,
        terminal: request.terminal,
        cancel: cancel.clone(),
    };
    let command = std::thread::Builder::new()
        .name("crier-command".into())
        .spawn(move || crate::console::forwarded(context, || execute(request)))?;

    // Stream what the command prints until it ends (its sender is dropped with it).
    let mut gone = false;
    for frame in frames_rx {
        if gone {
            continue; // Keep draining so the command never blocks on a dead caller.
        }
        let (tag, payload) = match frame {
            Frame::Out(b) => (b'o', b),
            Frame::Err(b) => (b'e', b),
            Frame::Ask(q) => (b'q', q.into_bytes()),
        };
        if write_frame(&mut writer, tag, &payload).is_err() {
            gone = true;
            cancel.store(true, Ordering::SeqCst);
        }
    }
    let code = command.join().unwrap_or(101);
    cancel.store(true, Ordering::SeqCst); // Ends the watcher thread.
    if !gone {
        write_frame(&mut writer, b'x', &[code])?;
    }
    Ok(())
}

/// Parses and runs a forwarded command; its exit code.
fn execute(request: Request) -> u8 {
    let mut cli = match crate::cli::Cli::try_parse_from(&request.argv) {
        Ok(cli) => cli,
        Err(e) => {
            crate::errln!("{e}");
            return 2;
        }
    };
    cli.rebase(&request.cwd);
    match crate::commands::run(&cli) {
        Ok(crate::commands::Outcome::Ok) => 0,
        Ok(crate::commands::Outcome::Failed) => 1,
        Ok(crate::commands::Outcome::Exit(code)) => code,
        Err(e) => {
            crate::errln!("error: {e:#}");
            1
        }
    }
}

// The caller's side.

/// A daemon answering on `config`'s control socket, if one does.
pub fn connect(config: &Config) -> Option<UnixStream> {
    UnixStream::connect(socket_path(config)).ok()
}

/// Has the daemon on `stream` carry out this process's command line; prints what it
/// prints and returns its exit code.
pub fn forward(stream: UnixStream) -> anyhow::Result<u8> {
    forward_with_stdin(stream, None)
}

/// [`forward`], handing the daemon `stdin` as the command's standard input.
pub fn forward_with_stdin(mut stream: UnixStream, stdin: Option<&[u8]>) -> anyhow::Result<u8> {
    let argv = std::env::args_os()
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = Request {
        argv,
        cwd: std::env::current_dir().context("cannot read the working directory")?,
        terminal: stdin.is_none() && io::stdin().is_terminal() && io::stderr().is_terminal(),
        stdin: stdin.map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }),
    };
    write_frame(&mut stream, b'r', &serde_json::to_vec(&request)?)?;
    let mut reader = io::BufReader::new(stream.try_clone()?);
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        let Some((tag, payload)) = read_frame(&mut reader, u32::MAX)? else {
            anyhow::bail!("the running crier went away before the command finished");
        };
        match tag {
            b'o' => {
                let mut out = stdout.lock();
                if out.write_all(&payload).and_then(|_| out.flush()).is_err() {
                    // `| head` closed our stdout: stop the command, as a local one would.
                    return Ok(1);
                }
            }
            b'e' => {
                let _ = stderr.lock().write_all(&payload);
            }
            b'q' => {
                eprint!("{} [y/N] ", String::from_utf8_lossy(&payload));
                let mut answer = String::new();
                io::stdin().lock().read_line(&mut answer)?;
                write_frame(&mut stream, b'a', answer.trim().as_bytes())?;
            }
            b'x' => return Ok(payload.first().copied().unwrap_or(1)),
            other => anyhow::bail!(
                "unexpected frame `{}` from the running crier",
                other as char
            ),
        }
    }
}

/// The same path, relative to `cwd` unless absolute.
pub(crate) fn rebased(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}
