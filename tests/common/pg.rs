//! A real PostgreSQL 15 for the tests: one throwaway cluster per test binary, one fresh
//! database per test.
//!
//! [`server`] starts the cluster the first time a test asks (a `OnceLock`, ≈ 2 s):
//! `initdb` as the `postgres` user (it refuses root) into a temp dir chowned to it, a
//! free port on 127.0.0.1, the unix socket inside the temp dir, PostgreSQL's durability
//! settings left as shipped (fsync and synchronous_commit on; only initdb's own final
//! sync is skipped, `-N`, as the cluster is thrown away). [`Pg::database`] creates a
//! database per test. The role `postgres` is trusted; every other role must give its
//! password (scram), so tests can see authentication refused.
//!
//! Stopping: Rust runs no destructor for a static, so the cluster cannot be stopped
//! from `Drop`. Instead, a detached watchdog shell (its own process group, so a Ctrl-C
//! aimed at `cargo test` does not kill it first) polls the test binary's pid and, once
//! it is gone however it ended (pass, panic, SIGKILL), runs `pg_ctl stop -m fast` and
//! removes the temp dir. A fault test may [`Pg::stop_immediate`] and [`Pg::start`] the
//! server; the watchdog stops whatever is running at the end.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian's `postgresql` package puts the server binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A role the harness creates that must log in with a password (see [`Pg::password_url`]).
pub const PASSWORD_ROLE: &str = "crier_pw";
pub const PASSWORD: &str = "s3cret-pw-for-tests";

/// The running cluster of this test binary.
pub struct Pg {
    pub port: u16,
    /// The temp dir: `data/` (the cluster), `sock/`, `log`.
    pub root: PathBuf,
    next: AtomicU32,
}

/// The cluster, started on first use.
pub fn server() -> &'static Pg {
    static SERVER: OnceLock<Pg> = OnceLock::new();
    SERVER.get_or_init(Pg::boot)
}

/// Runs a PostgreSQL binary as the `postgres` user; panics with its output on failure.
fn as_postgres(bin: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(bin))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {bin} as postgres: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_postgres(path: &Path) {
    let ok = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown")
        .success();
    assert!(ok, "chown postgres {}", path.display());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Pg {
    fn boot() -> Pg {
        assert!(
            Path::new(BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed ({BIN}/initdb missing; .ci/run installs Debian's `postgresql`)"
        );
        let root = tempfile::Builder::new()
            .prefix("crier-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        chown_postgres(&root);
        let data = root.join("data");
        let data_s = data.to_str().expect("utf-8 temp path");
        as_postgres(
            "initdb",
            &[
                "-D",
                data_s,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
                "-U",
                "postgres",
            ],
        );
        let sock = root.join("sock");
        std::fs::create_dir(&sock).expect("socket dir");
        chown_postgres(&sock);
        let port = free_port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 200\nfsync = on\nsynchronous_commit = on\n",
            sock.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // `postgres` is trusted (the harness and most tests); any other role gives a password.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let pg = Pg {
            port,
            root,
            next: AtomicU32::new(0),
        };
        pg.watchdog();
        pg.start();
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'"),
        );
        pg
    }

    /// A detached shell that stops the cluster and removes its dir once this process ends.
    /// Never waited on, by design: it must outlive this process (init reaps it).
    #[allow(clippy::zombie_processes)]
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
             runuser -u postgres -- {BIN}/pg_ctl stop -D '{data}' -m fast >/dev/null 2>&1; \
             rm -rf '{root}'",
            pid = std::process::id(),
            data = self.data().display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the PostgreSQL watchdog");
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.root.join("log");
        as_postgres(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
            ],
        );
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint).
    pub fn stop_immediate(&self) {
        as_postgres(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
            ],
        );
    }

    /// Runs one SQL command as `postgres` in `database`.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(Path::new(BIN).join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A fresh, empty database; its URL (`postgres://postgres@127.0.0.1:PORT/dbN`).
    pub fn database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("db{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.psql(
            "postgres",
            &format!("GRANT ALL ON DATABASE {name} TO {PASSWORD_ROLE}"),
        );
        self.url(&name)
    }

    /// The URL of `database` as the trusted `postgres` role.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL of `database` as [`PASSWORD_ROLE`] with `password`.
    pub fn password_url(&self, database: &str, password: &str) -> String {
        format!(
            "postgres://{PASSWORD_ROLE}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open postgresql.conf");
    f.write_all(text.as_bytes()).expect("write postgresql.conf");
}
