//! Local mock servers that speak the providers' real HTTP APIs (SMS and email), over real TCP on
//! 127.0.0.1, with faults that can be injected one request at a time.
//!
//! One small hand-written HTTP/1.1 server (keep-alive, `Content-Length` bodies) serves
//! every mock; each provider's file holds only its API: routes, auth, validation, the
//! answers and error bodies of `/work/shared/specs/providers.md` (the email APIs:
//! `tests/mocks/email-apis.md`). Faults queued with
//! [`State::push_faults`] are consumed one per request, in order; with none queued the
//! mock answers as the real API does. [`State::set_random_faults`] adds a seeded random
//! mix on top (the chaos suite), and [`State::log_requests`] keeps every request with the
//! fault it met, so a test can follow one message's attempts.
//!
//! Built to be driven hard (a benchmark pushes about a million requests through the
//! BulkSMS mock): no logging, one short lock per commit, and committed messages kept
//! compactly (ids are derived from a sequence number, not stored). A benchmark that only
//! needs counts can call [`State::keep_accepted`]`(false)` and read
//! [`State::accepted_count`].

#![allow(dead_code)]

pub mod bulksms;
pub mod clickatell;
pub mod gateway;
pub mod mailgun;
pub mod sendgrid;
pub mod ses;
pub mod twilio;
pub mod vonage;

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use {
    bulksms::bulksms, clickatell::clickatell, gateway::http_gateway, mailgun::mailgun,
    sendgrid::sendgrid, ses::ses, twilio::twilio, vonage::vonage,
};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running mock: put `url` in the provider's `base_url`.
pub struct Mock {
    /// Base URL for the provider config, e.g. `http://127.0.0.1:PORT/v1` for BulkSMS.
    pub url: String,
    pub state: Arc<State>,
}

/// What the mock does to one request instead of (or before) answering it normally.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status, body and optional `Retry-After` (seconds); nothing is
    /// committed.
    Status(u16, String, Option<u64>),
    /// Close the connection before answering; nothing is committed.
    Drop,
    /// Commit the message as usual, then close without answering (the lost response).
    AcceptThenDrop,
    /// Wait this long, then answer normally.
    Delay(Duration),
}

impl Fault {
    /// A short name for logs and counts: `5xx`, `429`, `status-400`, `drop`,
    /// `accept-then-drop`, `delay`.
    pub fn label(&self) -> String {
        match self {
            Fault::Status(s, _, _) if *s >= 500 => "5xx".into(),
            Fault::Status(s, _, _) => format!("status-{s}"),
            Fault::Drop => "drop".into(),
            Fault::AcceptThenDrop => "accept-then-drop".into(),
            Fault::Delay(_) => "delay".into(),
        }
    }
}

/// A seeded random mix of faults: each request without a queued fault draws one.
struct Mix {
    seed: u64,
    /// `(per-mille, fault)`; the rest of the thousand answer normally.
    faults: Vec<(u32, Fault)>,
}

impl Mix {
    /// The fault of request `n`: a pure function of the seed and `n`, so a run with the
    /// same seed draws the same faults for the same request numbers.
    fn draw(&self, n: usize) -> Option<Fault> {
        let mut roll = (splitmix64(self.seed ^ n as u64) % 1000) as u32;
        for (per_mille, fault) in &self.faults {
            if roll < *per_mille {
                return Some(fault.clone());
            }
            roll -= per_mille;
        }
        None
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One request as [`State::log_requests`] keeps it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When it arrived.
    pub at: std::time::Instant,
    pub request: Request,
    /// The fault it met ([`Fault::label`]), or `None` when it was answered normally.
    pub fault: Option<String>,
}

/// One message a mock committed (would have sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub to: String,
    pub body: String,
    pub from: Option<String>,
    /// The id the mock answered with (`id`, `apiMessageId`, `sid`, `message-id`).
    pub provider_id: String,
    /// BulkSMS's `deduplication-id`, when the submission had one.
    pub dedup_id: Option<i32>,
    /// Sent as UCS-2 (`UNICODE` / `type=unicode`).
    pub unicode: bool,
}

/// Which API a mock speaks (it decides how provider ids look).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BulkSms,
    Clickatell,
    Twilio,
    Vonage,
    Gateway,
    Sendgrid,
    Mailgun,
    Ses,
}

/// A committed message as the mock keeps it: the id is derived from `seq`.
#[derive(Debug)]
pub(crate) struct Committed {
    pub seq: u64,
    pub to: Box<str>,
    pub body: Box<str>,
    pub from: Option<Box<str>>,
    /// `userSuppliedId` / `client-ref`, echoed back.
    pub tag: Option<Box<str>>,
    pub dedup: Option<i32>,
    pub unicode: bool,
}

/// A mock's shared state: credentials, fault queue, what it committed.
pub struct State {
    kind: Kind,
    /// The credential pair the mock accepts (id/key/sid, secret/token; second may be empty).
    pub(crate) user: String,
    pub(crate) secret: String,
    queued: AtomicUsize,
    faults: Mutex<VecDeque<Fault>>,
    every_n: AtomicUsize,
    every: Mutex<Option<Fault>>,
    mix: Mutex<Option<Arc<Mix>>>,
    logging: AtomicBool,
    log: Mutex<Vec<Logged>>,
    requests: AtomicUsize,
    seq: AtomicU64,
    committed_count: AtomicUsize,
    keep: AtomicBool,
    committed: Mutex<Vec<Arc<Committed>>>,
    /// BulkSMS: `deduplication-id` → what that submission committed.
    pub(crate) dedup: Mutex<HashMap<i32, Box<[Arc<Committed>]>>>,
    last: Mutex<Option<Request>>,
    balance_bits: AtomicU64,
    /// When each POST arrived (rate checks).
    arrivals: Mutex<Vec<std::time::Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl State {
    fn new(kind: Kind, user: &str, secret: &str) -> State {
        State {
            kind,
            user: user.into(),
            secret: secret.into(),
            queued: AtomicUsize::new(0),
            faults: Mutex::new(VecDeque::new()),
            every_n: AtomicUsize::new(0),
            every: Mutex::new(None),
            mix: Mutex::new(None),
            logging: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            committed_count: AtomicUsize::new(0),
            keep: AtomicBool::new(true),
            committed: Mutex::new(Vec::new()),
            dedup: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
            balance_bits: AtomicU64::new(1_000_000.0f64.to_bits()),
            arrivals: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Queues faults for the next requests, one each, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        let mut queue = self.faults.lock().unwrap();
        queue.extend(faults);
        self.queued.store(queue.len(), Ordering::SeqCst);
    }

    /// Applies `fault` to every `n`-th request (counting all requests from 1) that has
    /// no queued fault; `n == 0` turns it off.
    pub fn set_fault_every(&self, n: usize, fault: Fault) {
        *self.every.lock().unwrap() = Some(fault);
        self.every_n.store(n, Ordering::SeqCst);
    }

    /// Gives each request that has no queued or every-`n`-th fault a fault drawn from
    /// `faults` (`(per-mille, fault)` pairs; the rest of the thousand answer normally),
    /// seeded so a failure can be replayed. An empty list turns it off.
    pub fn set_random_faults(&self, seed: u64, faults: Vec<(u32, Fault)>) {
        assert!(
            faults.iter().map(|(p, _)| p).sum::<u32>() <= 1000,
            "more than 1000 per mille"
        );
        *self.mix.lock().unwrap() = (!faults.is_empty()).then(|| Arc::new(Mix { seed, faults }));
    }

    /// Whether to keep every request with the fault it met, for [`State::log`]
    /// (default off: a benchmark's million requests would be kept too).
    pub fn log_requests(&self, on: bool) {
        self.logging.store(on, Ordering::SeqCst);
    }

    /// The requests kept since [`State::log_requests`]`(true)`, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    /// Every message committed so far, in order (empty after `keep_accepted(false)`).
    pub fn accepted(&self) -> Vec<Accepted> {
        let committed = self.committed.lock().unwrap();
        committed.iter().map(|c| self.accepted_of(c)).collect()
    }

    /// How many messages were committed (counted even when not kept).
    pub fn accepted_count(&self) -> usize {
        self.committed_count.load(Ordering::SeqCst)
    }

    /// Whether to keep committed messages for [`State::accepted`] (default true). A
    /// benchmark turns it off to keep memory flat; deduplication still works.
    pub fn keep_accepted(&self, keep: bool) {
        self.keep.store(keep, Ordering::SeqCst);
    }

    /// Forgets every `deduplication-id` seen (as BulkSMS does after about 12 hours).
    pub fn forget_dedup(&self) {
        self.dedup.lock().unwrap().clear();
    }

    /// When each POST (a send) arrived, faulted ones included.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.arrivals.lock().unwrap().clone()
    }

    pub fn clear_arrivals(&self) {
        self.arrivals.lock().unwrap().clear();
    }

    /// The most requests the mock was working on at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests received, faulted ones included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The last request answered normally (not the faulted ones that never reached the
    /// API), for checking headers and bodies.
    pub fn last_request(&self) -> Option<Request> {
        self.last.lock().unwrap().clone()
    }

    /// The account balance the mock reports (and, at 0 or below, the provider's
    /// out-of-credit answer to every send). Default 1,000,000.
    pub fn set_balance(&self, amount: f64) {
        self.balance_bits.store(amount.to_bits(), Ordering::SeqCst);
    }

    pub fn balance(&self) -> f64 {
        f64::from_bits(self.balance_bits.load(Ordering::SeqCst))
    }

    /// The provider id of committed message `seq`, in the provider's format.
    pub(crate) fn provider_id(&self, seq: u64) -> String {
        // Spread the sequence so ids look random but stay unique.
        let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        match self.kind {
            Kind::BulkSms => (4_400_000_000 + seq).to_string(),
            Kind::Clickatell => format!("{mixed:016x}{seq:016x}"),
            Kind::Twilio => format!("SM{mixed:016x}{seq:016x}"),
            Kind::Vonage => format!("{:016X}", mixed ^ seq),
            Kind::Gateway => format!("gw-{seq}"),
            // `X-Message-Id`: 22 URL-safe base64 characters.
            Kind::Sendgrid => format!("{:016x}{seq:06}", mixed).replace('0', "A"),
            // The bare `Message-Id` (the send answer wraps it in `<>`); `user` is the domain.
            Kind::Mailgun => format!("20261127080000.{seq}.{:X}@{}", mixed >> 32, self.user),
            // `0100` and 16 hex digits, dashes, `-000000` (the look of SES message ids).
            Kind::Ses => format!(
                "0100018f{:08x}-{:08x}-{:04x}-{seq:012}-000000",
                mixed >> 32,
                mixed as u32,
                seq & 0xffff
            ),
        }
    }

    /// The kept committed messages (shared, not copied).
    pub(crate) fn committed_list(&self) -> Vec<Arc<Committed>> {
        self.committed.lock().unwrap().clone()
    }

    fn accepted_of(&self, c: &Committed) -> Accepted {
        Accepted {
            to: c.to.to_string(),
            body: c.body.to_string(),
            from: c.from.as_deref().map(str::to_string),
            provider_id: self.provider_id(c.seq),
            dedup_id: c.dedup,
            unicode: c.unicode,
        }
    }

    /// Commits one message and returns it (with its sequence number filled in).
    pub(crate) fn commit(&self, mut c: Committed) -> Arc<Committed> {
        c.seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let c = Arc::new(c);
        self.committed_count.fetch_add(1, Ordering::SeqCst);
        if self.keep.load(Ordering::Relaxed) {
            self.committed.lock().unwrap().push(c.clone());
        }
        c
    }

    fn next_fault(&self, n: usize) -> Option<Fault> {
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut queue = self.faults.lock().unwrap();
            if let Some(f) = queue.pop_front() {
                self.queued.store(queue.len(), Ordering::SeqCst);
                return Some(f);
            }
        }
        let every = self.every_n.load(Ordering::Relaxed);
        if every > 0 && n.is_multiple_of(every) {
            return self.every.lock().unwrap().clone();
        }
        let mix = self.mix.lock().unwrap().clone();
        mix.and_then(|m| m.draw(n))
    }
}

/// One parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        decode_form(self.query.as_bytes())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        find(self.query_pairs(), name)
    }

    /// The parts of a `multipart/form-data` body: name, file name, content type, bytes.
    pub fn multipart(&self) -> Vec<Part> {
        let Some(boundary) = self
            .content_type()
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
        else {
            return Vec::new();
        };
        let boundary = format!("--{}", boundary.trim_matches('"'));
        let mut parts = Vec::new();
        let body = &self.body;
        let mut at = match find_bytes(body, boundary.as_bytes(), 0) {
            Some(i) => i + boundary.len(),
            None => return parts,
        };
        while body[at..].starts_with(b"\r\n") {
            let head_start = at + 2;
            let Some(head_end) = find_bytes(body, b"\r\n\r\n", head_start) else {
                break;
            };
            let head = String::from_utf8_lossy(&body[head_start..head_end]).into_owned();
            let data_start = head_end + 4;
            let delimiter = format!("\r\n{boundary}");
            let Some(data_end) = find_bytes(body, delimiter.as_bytes(), data_start) else {
                break;
            };
            let mut part = Part {
                data: body[data_start..data_end].to_vec(),
                ..Part::default()
            };
            for line in head.split("\r\n") {
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                if k.eq_ignore_ascii_case("content-type") {
                    part.content_type = Some(v.trim().to_string());
                } else if k.eq_ignore_ascii_case("content-disposition") {
                    for param in v.split(';') {
                        let param = param.trim();
                        if let Some(n) = param.strip_prefix("name=") {
                            part.name = n.trim_matches('"').to_string();
                        } else if let Some(f) = param.strip_prefix("filename=") {
                            part.filename = Some(f.trim_matches('"').to_string());
                        }
                    }
                }
            }
            parts.push(part);
            at = data_end + delimiter.len();
        }
        parts
    }

    /// Decoded `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> Vec<(String, String)> {
        decode_form(&self.body)
    }

    pub fn form_value(&self, name: &str) -> Option<String> {
        find(self.form(), name)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// The user and password of a `Basic` authorization header.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?;
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
        let (user, pass) = decoded.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }
}

/// One part of a multipart body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl Part {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn find(pairs: Vec<(String, String)>, name: &str) -> Option<String> {
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn decode_form(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let url = format!("http://x/?{text}");
    match reqwest::Url::parse(&url) {
        Ok(u) => u.query_pairs().into_owned().collect(),
        Err(_) => Vec::new(),
    }
}

/// An answer from a provider handler.
pub struct Response {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<u64>,
    /// More headers (SendGrid's `X-Message-Id`).
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn json(status: u16, body: impl ToString) -> Response {
        Response {
            status,
            body: body.to_string(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A provider's request handler: validates, commits, answers.
pub(crate) type Handler = fn(&State, &Request) -> Response;

/// Binds a loopback port and serves `handler` until the runtime shuts down.
pub(crate) async fn start(
    kind: Kind,
    user: &str,
    secret: &str,
    prefix: &str,
    handler: Handler,
) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let state = Arc::new(State::new(kind, user, secret));
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                // Out of file descriptors, most likely: let connections close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = socket.set_nodelay(true);
            tokio::spawn(connection(socket, shared.clone(), handler));
        }
    });
    Mock {
        url: format!("http://{addr}{prefix}"),
        state,
    }
}

async fn connection(mut socket: TcpStream, state: Arc<State>, handler: Handler) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let (request, close) = match read_request(&mut socket, &mut buf).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if request.method == "POST" {
            state
                .arrivals
                .lock()
                .unwrap()
                .push(std::time::Instant::now());
        }
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let response = respond(&state, request, handler, n).await;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        let Some(response) = response else {
            return;
        };
        out.clear();
        write_response(&mut out, &response, close);
        if socket.write_all(&out).await.is_err() || close {
            return;
        }
    }
}

/// The answer to request number `n`, or `None` to drop the connection.
async fn respond(state: &State, request: Request, handler: Handler, n: usize) -> Option<Response> {
    let fault = state.next_fault(n);
    if state.logging.load(Ordering::Relaxed) {
        state.log.lock().unwrap().push(Logged {
            at: std::time::Instant::now(),
            request: request.clone(),
            fault: fault.as_ref().map(Fault::label),
        });
    }
    Some(match fault {
        Some(Fault::Drop) => return None,
        Some(Fault::AcceptThenDrop) => {
            let _ = handler(state, &request);
            return None;
        }
        Some(Fault::Status(status, body, retry_after)) => Response {
            status,
            body,
            retry_after,
            headers: Vec::new(),
        },
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            answer(state, request, handler)
        }
        None => answer(state, request, handler),
    })
}

fn answer(state: &State, request: Request, handler: Handler) -> Response {
    let response = handler(state, &request);
    *state.last.lock().unwrap() = Some(request);
    response
}

/// Reads one request (head and `Content-Length` body); `None` at a clean end of stream.
/// The flag says the client asked to close after this one.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Request, bool)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| std::io::Error::other("head is not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let method = first.next().unwrap_or("").to_string();
            let target = first.next().unwrap_or("");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target.to_string(), String::new()),
            };
            let mut headers = Vec::new();
            let mut length = 0usize;
            let mut close = false;
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    let k = k.trim().to_ascii_lowercase();
                    let v = v.trim().to_string();
                    if k == "content-length" {
                        length = v.parse().map_err(|_| std::io::Error::other("bad length"))?;
                    } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                        close = true;
                    }
                    headers.push((k, v));
                }
            }
            let total = end + 4 + length;
            while buf.len() < total {
                buf.reserve(total - buf.len());
                if socket.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            let request = Request {
                method,
                path,
                query,
                headers,
                body,
            };
            return Ok(Some((request, close)));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8192);
        }
        if socket.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn write_response(out: &mut Vec<u8>, r: &Response, close: bool) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    if let Some(s) = r.retry_after {
        let _ = write!(out, "retry-after: {s}\r\n");
    }
    for (name, value) in &r.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(r.body.as_bytes());
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        207 => "Multi-Status",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (for `Basic` credentials).
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `Basic base64(user:secret)`, as a client sends it.
pub fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{secret}").as_bytes())
    )
}

/// A string field of a JSON object.
pub(crate) fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// `\+?\d{min,max}`: an international number, with or without `+` as `plus` allows.
pub(crate) fn is_number(s: &str, plus: bool, min: usize, max: usize) -> bool {
    let digits = if plus {
        s.strip_prefix('+').unwrap_or(s)
    } else {
        s
    };
    (min..=max).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}
