//! `crier serve` on an ephemeral loopback port, with a blocking HTTP client: the API,
//! webhook and security tests all talk to the real server this way.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Project;

/// A running `crier serve`; killed on drop, SIGTERMed by [`Server::stop`].
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
    pub rt: tokio::runtime::Runtime,
    pub client: reqwest::Client,
    /// The bearer token [`Server::get`] and [`Server::post`] send.
    pub token: Option<String>,
}

/// One answer, read whole.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Server {
    /// Starts `crier serve --jobs jobs` in `p` with `env` (and debug logs on stderr);
    /// `get` and `post` send `token`.
    pub fn start(p: &Project, env: &[(&str, &str)], token: Option<&str>) -> Server {
        Server::start_with(p, &[], env, token)
    }

    /// [`Server::start`] with crier's global flags `args` (e.g. `--log-format json`).
    pub fn start_with(
        p: &Project,
        args: &[&str],
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crier"));
        cmd.args(args)
            .args(["serve", "--listen", "127.0.0.1:0", "--jobs", "jobs"])
            .current_dir(p.path())
            .env("RUST_LOG", "crier=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start crier serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                // Give the stderr reader a moment to collect why.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "unexpected first line {line:?}; stderr: {}",
                    stderr.lock().unwrap()
                )
            })
            .to_string();
        let _ = rustls::crypto::ring::default_provider().install_default();
        Server {
            child,
            base,
            stderr,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            token: token.map(String::from),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with `Authorization: Bearer token` when `token` is given.
    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> Answer {
        let headers: Vec<(String, String)> = token
            .map(|t| ("Authorization".to_string(), format!("Bearer {t}")))
            .into_iter()
            .collect();
        self.send(method, path, &headers, Vec::new())
    }

    /// Any request: `headers` as given, `body` as the body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Answer {
        let url = self.url(path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, &url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        self.rt.block_on(async {
            let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            let content_type = header("content-type").unwrap_or_default();
            let location = header("location");
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            Answer {
                status,
                content_type,
                location,
                body,
            }
        })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, self.token.as_deref())
    }

    pub fn post(&self, path: &str) -> Answer {
        self.request("POST", path, self.token.as_deref())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit: the server finishes and flushes the store. Returns its log.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "crier serve exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "crier serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
