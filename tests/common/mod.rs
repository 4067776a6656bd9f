//! Helpers shared by the end-to-end tests: run the real `crier` binary in a temp dir.

#![allow(dead_code)]

pub mod ledger;
pub mod pg;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project root, where `jobs/` lives.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch project directory.
pub struct Project {
    pub dir: tempfile::TempDir,
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
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
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
