//! Helpers shared by the end-to-end tests: run the real `crier` binary in a temp dir.

#![allow(dead_code)]

pub mod ledger;
pub mod pg;
pub mod server;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The project root, where `jobs/` lives.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Does this run of the suite keep each project's store in PostgreSQL? Set
/// `CRIER_TEST_BACKEND=postgres` to run the end-to-end tests on the PostgreSQL backend:
/// every project then gets a fresh database of the harness's server (`pg.rs`), written
/// into its `crier.yaml` as `store.backend: postgres`.
pub fn on_postgres() -> bool {
    std::env::var("CRIER_TEST_BACKEND").as_deref() == Ok("postgres")
}

/// A scratch project directory.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The project's database, when the suite runs on PostgreSQL.
    pub pg_url: Option<String>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Project {
    pub fn new() -> Project {
        let p = Project {
            dir: tempfile::tempdir().expect("temp dir"),
            pg_url: on_postgres().then(|| pg::server().database()),
        };
        if p.pg_url.is_some() {
            p.write("crier.yaml", "{}\n");
        }
        p
    }

    /// How the library opens this project's store (tests that write history first).
    pub fn store_config(&self) -> crier::store::StoreConfig {
        crier::store::StoreConfig {
            path: self.path().join("data/store"),
            cache_bytes: 8 << 20,
            backend: match self.pg_url {
                Some(_) => crier::store::Backend::Postgres,
                None => crier::store::Backend::Embedded,
            },
            postgres: self
                .pg_url
                .as_ref()
                .map(|url| crier::store::PgSettings::new(url.clone())),
        }
    }

    /// `crier.yaml` as written, with `store:` pointed at this project's database when the
    /// suite runs on PostgreSQL (whatever backend the test wrote: the same test, the
    /// other store).
    fn with_store(&self, content: &[u8]) -> Vec<u8> {
        let Some(url) = &self.pg_url else {
            return content.to_vec();
        };
        let mut doc: serde_yaml::Value = match serde_yaml::from_slice(content) {
            Ok(serde_yaml::Value::Mapping(m)) => serde_yaml::Value::Mapping(m),
            // Not a mapping (a test of a broken file): leave it as written.
            _ => return content.to_vec(),
        };
        let store = doc
            .as_mapping_mut()
            .unwrap()
            .entry("store".into())
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
        if let Some(store) = store.as_mapping_mut() {
            store.insert("backend".into(), "postgres".into());
            store.insert("url".into(), url.as_str().into());
            store.remove("cache_mb");
        }
        serde_yaml::to_string(&doc).unwrap().into_bytes()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        if rel == "crier.yaml" {
            std::fs::write(&path, self.with_store(content.as_ref())).unwrap();
        } else {
            std::fs::write(&path, content).unwrap();
        }
        path
    }

    /// Runs crier with `args` in this directory, with `env` added to a clean environment.
    pub fn crier_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crier"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run crier").into()
    }

    pub fn crier(&self, args: &[&str]) -> Run {
        self.crier_env(args, &[])
    }

    /// Runs crier with `args` in this directory with `input` on its standard input.
    pub fn crier_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run crier");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().expect("run crier").into()
    }
}

impl Drop for Project {
    /// On PostgreSQL, a project that still wrote an embedded history ran on the wrong
    /// backend: the test proved nothing about PostgreSQL, so it fails.
    fn drop(&mut self) {
        if self.pg_url.is_some() && !std::thread::panicking() {
            let file = self.path().join("data/history.sqlite3");
            assert!(
                !file.exists(),
                "CRIER_TEST_BACKEND=postgres, yet {} was written",
                file.display()
            );
        }
    }
}

/// A runtime for the in-process provider mocks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A customers CSV of `n` with distinct valid mobile numbers: customer `i` has
/// `+2782xxxyyyy`, `xxx` = 100 + i / 10,000 and `yyyy` = i % 10,000.
pub fn customers(n: usize) -> String {
    let mut csv = String::from("id,name,status,phone\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "{i},Customer {i},active,082 {:03} {:04}\n",
            100 + i / 10_000,
            i % 10_000
        ));
    }
    csv
}

/// Reads `from` to its end on a thread of its own, into the returned buffer (a child's
/// output, while it runs).
pub fn drain(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let into = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

/// SIGTERM to `child`, then its exit code once it exits (SIGKILL and -1 after 40 s).
pub fn terminate(child: &mut Child) -> i32 {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP GET on loopback: the status and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
