//! A small real SMTP server on loopback, for end-to-end tests of the SMTP provider.
//!
//! Speaks enough RFC 5321 for lettre over plain TCP: greeting, EHLO/HELO (advertising
//! `AUTH PLAIN LOGIN`, `8BITMIME`, `SIZE`), AUTH PLAIN and LOGIN, MAIL FROM, RCPT TO,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT. Faults are injected per stage
//! ([`SmtpMock::push_reply`]) or by stalling after the message body
//! ([`SmtpMock::set_stall_after_data`]). Include it with
//! `#[path = "mocks/smtp.rs"] mod smtp_mock;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the server accepted (or, when stalling, received in full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent, dot-unstuffed, lines ending in CRLF.
    pub data: Vec<u8>,
}

/// Where an injected reply replaces the server's normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The answer to `RCPT TO`.
    Rcpt,
    /// The answer after the message body (the final `.`).
    Data,
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    rcpt_replies: VecDeque<String>,
    data_replies: VecDeque<String>,
    stall_after_data: bool,
    connections: usize,
    auth_attempts: Vec<String>,
}

/// A running server; it stops when the test's runtime ends.
pub struct SmtpMock {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

/// Starts a server on 127.0.0.1 (a free port). With `auth`, `MAIL FROM` needs a login with
/// that user and password first (530 otherwise, 535 on a wrong one).
pub async fn start(auth: Option<(String, String)>) -> SmtpMock {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let state = Arc::new(Mutex::new(State::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.lock().unwrap().connections += 1;
            let state = shared.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let _ = session(stream, state, auth).await;
            });
        }
    });
    SmtpMock { port, state }
}

impl SmtpMock {
    /// Messages accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Answers the next command of `stage` with `reply` (e.g. `450 4.2.1 try later`)
    /// instead of the normal answer. Replies queue up in order.
    pub fn push_reply(&self, stage: Stage, reply: String) {
        let mut state = self.state.lock().unwrap();
        match stage {
            Stage::Rcpt => state.rcpt_replies.push_back(reply),
            Stage::Data => state.data_replies.push_back(reply),
        }
    }

    /// When set, the server takes the message body and then never answers.
    pub fn set_stall_after_data(&self, stall: bool) {
        self.state.lock().unwrap().stall_after_data = stall;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Every login attempt as `user\0password`, decoded, in order.
    pub fn auth_attempts(&self) -> Vec<String> {
        self.state.lock().unwrap().auth_attempts.clone()
    }
}

async fn session(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    auth: Option<(String, String)>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 mock.crier.test ESMTP ready\r\n")
        .await?;
    let mut authenticated = auth.is_none();
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = command.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("").to_string();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                "250-mock.crier.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SIZE 52428800"
                    .into()
            }
            "HELO" => "250 mock.crier.test".into(),
            "NOOP" => "250 2.0.0 OK".into(),
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".into()
            }
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "AUTH" => {
                let mut words = command.split_whitespace().skip(1);
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_string);
                let credentials = match mechanism.as_str() {
                    "PLAIN" => {
                        let payload = match initial {
                            Some(p) => p,
                            None => {
                                write.write_all(b"334 \r\n").await?;
                                read_line(&mut lines).await?
                            }
                        };
                        // authzid \0 authcid \0 password
                        let decoded =
                            String::from_utf8_lossy(&decode_base64(&payload)).into_owned();
                        let mut parts = decoded.split('\0').skip(1);
                        let user = parts.next().unwrap_or("").to_string();
                        let password = parts.next().unwrap_or("").to_string();
                        state
                            .lock()
                            .unwrap()
                            .auth_attempts
                            .push(format!("{user}\0{password}"));
                        Some((user, password))
                    }
                    "LOGIN" => {
                        let user = match initial {
                            Some(u) => u,
                            None => {
                                write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                                read_line(&mut lines).await?
                            }
                        };
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let password = read_line(&mut lines).await?;
                        let user = String::from_utf8_lossy(&decode_base64(&user)).into_owned();
                        let password =
                            String::from_utf8_lossy(&decode_base64(&password)).into_owned();
                        state
                            .lock()
                            .unwrap()
                            .auth_attempts
                            .push(format!("{user}\0{password}"));
                        Some((user, password))
                    }
                    _ => None,
                };
                match (credentials, &auth) {
                    (None, _) => "504 5.5.4 unrecognized authentication type".into(),
                    (Some(given), Some(expected)) if &given == expected => {
                        authenticated = true;
                        "235 2.7.0 Authentication successful".into()
                    }
                    (Some(_), Some(_)) => "535 5.7.8 Authentication credentials invalid".into(),
                    (Some(_), None) => "503 5.5.1 authentication not enabled".into(),
                }
            }
            "MAIL" if !authenticated => "530 5.7.0 Authentication required".into(),
            "MAIL" => match address(&command) {
                Some(address) => {
                    from = Some(address);
                    to.clear();
                    "250 2.1.0 OK".into()
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>".into(),
            },
            "RCPT" if from.is_none() => "503 5.5.1 need MAIL first".into(),
            "RCPT" => {
                let injected = state.lock().unwrap().rcpt_replies.pop_front();
                match (injected, address(&command)) {
                    (Some(reply), _) => reply,
                    (None, Some(address)) => {
                        to.push(address);
                        "250 2.1.5 OK".into()
                    }
                    (None, None) => "501 5.5.4 syntax: RCPT TO:<address>".into(),
                }
            }
            "DATA" if to.is_empty() => "503 5.5.1 need RCPT first".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    let mut raw = Vec::new();
                    if lines.read_until(b'\n', &mut raw).await? == 0 {
                        return Ok(());
                    }
                    if raw == b".\r\n" || raw == b".\n" {
                        break;
                    }
                    let unstuffed = if raw.starts_with(b"..") {
                        &raw[1..]
                    } else {
                        &raw[..]
                    };
                    data.extend_from_slice(unstuffed);
                }
                let received = Received {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                let (stall, injected) = {
                    let mut state = state.lock().unwrap();
                    (state.stall_after_data, state.data_replies.pop_front())
                };
                if stall {
                    state.lock().unwrap().messages.push(received);
                    // Took the message, never answers: wait for the client to go away.
                    let mut sink = Vec::new();
                    while lines.read_until(b'\n', &mut sink).await? > 0 {}
                    return Ok(());
                }
                match injected {
                    Some(reply) => {
                        if reply.starts_with('2') {
                            state.lock().unwrap().messages.push(received);
                        }
                        reply
                    }
                    None => {
                        state.lock().unwrap().messages.push(received);
                        "250 2.0.0 OK queued as MOCK".into()
                    }
                }
            }
            _ => "500 5.5.2 command not recognized".into(),
        };
        // One write per reply: a split one meets Nagle and delayed ACKs (200 ms stalls).
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut R) -> std::io::Result<String> {
    let mut line = String::new();
    lines.read_line(&mut line).await?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The address between `<` and `>` of `MAIL FROM:<a>` or `RCPT TO:<a>`.
fn address(command: &str) -> Option<String> {
    let start = command.find('<')?;
    let end = command[start..].find('>')? + start;
    Some(command[start + 1..end].to_string())
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
