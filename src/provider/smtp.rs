//! Email over SMTP (lettre): STARTTLS, implicit TLS or plain, with optional auth, and the
//! recipient's financial documents as attachments.
//!
//! Speaks RFC 5321 through lettre's [`AsyncSmtpConnection`] (reference:
//! <https://docs.rs/lettre/0.11/lettre/transport/smtp/index.html>). crier keeps its own small
//! pool of connections instead of lettre's `AsyncSmtpTransport` pool for two reasons: every
//! send is bounded by `limits.timeout`, and a connection abandoned by that timeout in the
//! middle of a transaction must be closed, never reused (lettre's pool would park it and
//! read its late answer as the reply to the next command); and the outcome of a failure
//! depends on *where* it happened — a connection lost before the message body was
//! written sent nothing (retry), one lost after may have delivered it (unknown). Each
//! send records its [`Stage`], and [`classify`] maps stage and failure to a
//! [`SendOutcome`] in one place.
//!
//! [`Smtp::build`] composes the message in one function: text/plain (and the HTML
//! alternative) with CRLF line ends, each attachment base64 with its type guessed from its
//! file name. Nothing leaves with a bare LF or CR, which strict MTAs refuse (Postfix's
//! `smtpd_forbid_bare_newline`) and others rewrite; `tests/email_mta.rs` holds it to that
//! against aiosmtpd and Python's `email` parser. A message with unsubscribe links gets
//! `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 2369, RFC 8058), and with `dkim:`
//! each message is signed last, over its bytes as sent ([`super::dkim`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::address::{Address, Envelope};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Limits, RoutedMessage, SendOutcome};
use crate::config::Secret;
use crate::diag::FileReport;
use crate::job::DocumentKind;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: loopback relays only.
    Plain,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port (default: 587 for starttls, 465 for tls, 25 for plain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    /// Login user, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Login password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The `From:` address, e.g. `Acme ISP <billing@acme.example>`.
    pub from: String,
    /// Folder of financial documents for `attach:` (`<id>/<kind>/*.pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_dir: Option<std::path::PathBuf>,
    /// Domain whose mail reaches `crier bounces ingest`, e.g. `bounces.acme.example`. When
    /// set, each message's envelope sender (its `Return-Path`) is
    /// `bounces+<message id>@<bounce_domain>` (VERP), so a bounce names its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce_domain: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Sign every message with DKIM (RSA-SHA256 or Ed25519-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<super::dkim::DkimSettings>,
}

impl SmtpConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        if self.host.trim().is_empty() {
            report.error(&format!("{field}.host"), "must not be empty");
        }
        if self.port == Some(0) {
            report.error(&format!("{field}.port"), "must be 1 to 65535");
        }
        if self.from.parse::<Mailbox>().is_err() {
            report.error(
                &format!("{field}.from"),
                format!("`{}` is not an email address", self.from),
            );
        }
        if self.username.is_some() != self.password.is_some() {
            report.error(field, "`username` and `password` go together");
        }
        if let Some(domain) = &self.bounce_domain
            && let Err(why) = check_domain(domain)
        {
            report.error(&format!("{field}.bounce_domain"), why);
        }
        self.limits.check(field, report);
        if let Some(dkim) = &self.dkim {
            dkim.check(&format!("{field}.dkim"), report);
        }
    }
}

/// How long an idle pooled connection is kept before it is closed instead of reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// The SMTP client: the parsed `From`, how to open a connection, and the idle connections.
pub struct Smtp {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// What must never appear in an outcome: the password and its base64 forms.
    secrets: Vec<String>,
    from: Mailbox,
    documents_dir: Option<PathBuf>,
    dkim: Option<super::dkim::Signer>,
    bounce_domain: Option<String>,
    timeout: Duration,
    max_idle_connections: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("authenticated", &self.credentials.is_some())
            .field("from", &self.from.to_string())
            .field("documents_dir", &self.documents_dir)
            .field("dkim", &self.dkim.is_some())
            .field("bounce_domain", &self.bounce_domain)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// Builds the client; nothing is connected yet. A `from` that is not a mailbox is an
    /// error here, not on every message.
    pub fn new(config: &SmtpConfig) -> Result<Smtp, String> {
        // lettre's rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("from: `{}` is not a mailbox: {e}", config.from))?;
        let port = config.port.unwrap_or(match config.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::Plain => 25,
        });
        let tls = match config.security {
            Security::Plain => None,
            Security::Starttls | Security::Tls => Some(
                TlsParameters::new(config.host.clone())
                    .map_err(|e| format!("host: TLS setup for `{}` failed: {e}", config.host))?,
            ),
        };
        let mut secrets = Vec::new();
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                let password = password.expose();
                if !password.is_empty() {
                    secrets.push(password.to_owned());
                    secrets.push(base64(password.as_bytes()));
                    secrets.push(base64(format!("\0{user}\0{password}").as_bytes()));
                }
                Some(Credentials::new(user.clone(), password.to_owned()))
            }
            (None, None) => None,
            _ => return Err("`username` and `password` go together".into()),
        };
        // Longest first: the PLAIN payload's base64 contains the password's own.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let dkim = config
            .dkim
            .as_ref()
            .map(super::dkim::Signer::new)
            .transpose()?;
        Ok(Smtp {
            host: config.host.clone(),
            port,
            security: config.security,
            tls,
            hello: ClientId::default(),
            credentials,
            secrets,
            from,
            documents_dir: config.documents_dir.clone(),
            dkim,
            bounce_domain: config.bounce_domain.clone(),
            timeout: super::timeout(&config.limits),
            max_idle_connections: config.limits.concurrency.unwrap_or(8).max(1) as usize,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection ready for `MAIL FROM`: a live idle one (checked with `NOOP`), else a new
    /// one (connect, STARTTLS, AUTH). `stage` says how far a new one got.
    async fn connection(&self, stage: &mut Stage) -> Result<AsyncSmtpConnection, Failure> {
        loop {
            let parked = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()
            };
            let Some((mut conn, since)) = parked else {
                break;
            };
            if since.elapsed() < MAX_IDLE && conn.test_connected().await {
                return Ok(conn);
            }
            // Stale or dead: close the socket without waiting for a QUIT answer.
            drop(conn);
        }
        *stage = Stage::Connect;
        let mut conn = match (self.security, &self.tls) {
            (Security::Tls, Some(tls)) => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(tls.clone()),
                None,
            )
            .await
            .map_err(Failure::from)?,
            _ => {
                // Our own socket, to turn Nagle off: lettre writes the body and its final
                // `.` separately, and the second write would wait for a delayed ACK.
                let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
                let tcp = match tokio::time::timeout(self.timeout, tcp).await {
                    Ok(Ok(tcp)) => tcp,
                    Ok(Err(e)) => {
                        return Err(Failure {
                            kind: FailureKind::Lost,
                            text: format!("{}:{}: {e}", self.host, self.port),
                        });
                    }
                    Err(_) => {
                        return Err(Failure {
                            kind: FailureKind::Timeout,
                            text: format!("{}:{}: connect timed out", self.host, self.port),
                        });
                    }
                };
                let _ = tcp.set_nodelay(true);
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(Failure::from)?
            }
        };
        if let (Security::Starttls, Some(tls)) = (self.security, &self.tls) {
            conn.starttls(tls.clone(), &self.hello)
                .await
                .map_err(Failure::from)?;
        }
        if let Some(credentials) = &self.credentials {
            *stage = Stage::Auth;
            if let Err(e) = conn
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
            {
                conn.abort().await;
                return Err(e.into());
            }
        }
        Ok(conn)
    }

    /// Parks a connection for the next send, or closes it when the pool is full.
    async fn release(&self, conn: AsyncSmtpConnection) {
        let conn = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.max_idle_connections {
                idle.push((conn, Instant::now()));
                return;
            }
            conn
        };
        self.close(conn).await;
    }

    /// Says QUIT, waiting at most `timeout` for the answer, then closes the socket.
    async fn close(&self, mut conn: AsyncSmtpConnection) {
        let _ = tokio::time::timeout(self.timeout, conn.abort()).await;
    }

    /// What to do with a transaction's connection once its outcome is known: park it after
    /// a success, reset and park it after a refused command, drop it after anything else
    /// (a timeout leaves it mid-transaction: its late answer must never meet another send).
    async fn finish(&self, mut conn: AsyncSmtpConnection, result: &TransmitResult) {
        match result {
            Ok(Ok(_)) if !conn.has_broken() => self.release(conn).await,
            Ok(Err(Failure {
                kind: FailureKind::Reply(_),
                ..
            })) if !conn.has_broken() => {
                let reset = tokio::time::timeout(self.timeout, conn.command("RSET\r\n")).await;
                if matches!(reset, Ok(Ok(_))) {
                    self.release(conn).await;
                }
            }
            _ => drop(conn),
        }
    }

    /// One SMTP transaction on a connection it leaves in `slot`; `stage` follows it so a
    /// timeout can be classified.
    async fn transmit(
        &self,
        email: &Message,
        stage: &mut Stage,
        slot: &mut Option<AsyncSmtpConnection>,
    ) -> Result<lettre::transport::smtp::response::Response, Failure> {
        let conn = slot.insert(self.connection(stage).await?);
        *stage = Stage::Envelope;
        envelope_and_data(conn, email, stage).await
    }

    /// The email crier sends for `message`, or why it cannot be built: the one place its
    /// headers and MIME parts are composed. lettre encodes non-ASCII header text (RFC 2047,
    /// RFC 2231 for file names) and picks the text parts' transfer encoding; every line of
    /// the result ends in CRLF (RFC 5322 §2.3), as strict MTAs require.
    fn build(&self, message: &RoutedMessage) -> Result<Message, SendOutcome> {
        let to: Mailbox = message.to.parse().map_err(|e| SendOutcome::Rejected {
            code: "smtp:address".into(),
            text: format!("`{}` is not an email address: {e}", message.to),
        })?;
        let attachments = self.attachments(message)?;
        let mut builder = Message::builder();
        if let Some(domain) = &self.bounce_domain {
            let envelope = verp(&message.id, domain)
                .map_err(|e| e.to_string())
                .and_then(|sender| {
                    Envelope::new(Some(sender), vec![to.email.clone()]).map_err(|e| e.to_string())
                })
                .map_err(|e| SendOutcome::Rejected {
                    code: "smtp:address".into(),
                    text: format!("no VERP envelope sender for `{}`: {e}", message.to),
                })?;
            builder = builder.envelope(envelope);
        }
        let builder = builder
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone().unwrap_or_default())
            .message_id(Some(message_id(&message.id, self.from.email.domain())))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Crier-Message-Id"),
                message.id.clone(),
            ));
        // RFC 2369 and RFC 8058 one-click: the mail client POSTs
        // `List-Unsubscribe=One-Click` to the HTTPS link.
        let builder = message
            .unsubscribe
            .iter()
            .flat_map(|links| links.headers())
            .fold(builder, |b, (name, value)| {
                b.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str(name),
                    value,
                ))
            });
        let body = crlf_line_ends(&message.body);
        let plain = || SinglePart::plain(body.clone());
        let alternative = message
            .html
            .as_ref()
            .map(|html| MultiPart::alternative_plain_html(body.clone(), crlf_line_ends(html)));
        // text/plain, or multipart/alternative with the HTML; inside multipart/mixed with
        // the attachments when there are any.
        let built = match (alternative, attachments.is_empty()) {
            (None, true) => builder.singlepart(plain()),
            (Some(alternative), true) => builder.multipart(alternative),
            (alternative, false) => {
                let mixed = match alternative {
                    Some(alternative) => MultiPart::mixed().multipart(alternative),
                    None => MultiPart::mixed().singlepart(plain()),
                };
                builder.multipart(attachments.into_iter().fold(mixed, MultiPart::singlepart))
            }
        };
        let mut email = built.map_err(|e| SendOutcome::Rejected {
            code: "smtp:message".into(),
            text: format!("the email could not be built: {e}"),
        })?;
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut email);
        }
        Ok(email)
    }

    /// The attachment parts of `message.attach`, read from `documents_dir`, typed by file
    /// name, base64 ([`super::attachments::mime_parts`] says why).
    fn attachments(&self, message: &RoutedMessage) -> Result<Vec<SinglePart>, SendOutcome> {
        let files = super::attachments::load("smtp", self.documents_dir.as_deref(), message)?;
        super::attachments::mime_parts("smtp", files)
    }

    /// Removes every form of the password from text that leaves this provider.
    fn scrub(&self, mut text: String) -> String {
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), crate::config::secret::REDACTED);
            }
        }
        text
    }

    fn scrub_outcome(&self, outcome: SendOutcome) -> SendOutcome {
        match outcome {
            SendOutcome::Sent { provider_id } => SendOutcome::Sent { provider_id },
            SendOutcome::Retry { reason } => SendOutcome::Retry {
                reason: self.scrub(reason),
            },
            SendOutcome::RetryAfter { after, reason } => SendOutcome::RetryAfter {
                after,
                reason: self.scrub(reason),
            },
            SendOutcome::Rejected { code, text } => SendOutcome::Rejected {
                code,
                text: self.scrub(text),
            },
            SendOutcome::Unknown { reason } => SendOutcome::Unknown {
                reason: self.scrub(reason),
            },
            SendOutcome::Resubmit { after, reason } => SendOutcome::Resubmit {
                after,
                reason: self.scrub(reason),
            },
            SendOutcome::Halt { code, text } => SendOutcome::Halt {
                code,
                text: self.scrub(text),
            },
        }
    }
}

type TransmitResult = Result<
    Result<lettre::transport::smtp::response::Response, Failure>,
    tokio::time::error::Elapsed,
>;

/// `MAIL FROM`, `RCPT TO`, `DATA` and the message, on an open connection.
async fn envelope_and_data(
    conn: &mut AsyncSmtpConnection,
    email: &Message,
    stage: &mut Stage,
) -> Result<lettre::transport::smtp::response::Response, Failure> {
    let envelope = email.envelope();
    let bytes = email.formatted();
    let mut parameters = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::client(
                "the address is not ASCII and the server does not support SMTPUTF8",
            ));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return Err(Failure::client(
                "the message is not ASCII and the server does not support 8BITMIME",
            ));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), parameters))
        .await?;
    for to in envelope.to() {
        conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
    }
    conn.command(Data).await?;
    // From the first byte of the body on, the server may accept the message.
    *stage = Stage::Data;
    Ok(conn.message(&bytes).await?)
}

impl super::Provider for Smtp {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let email = match self.build(message) {
                Ok(email) => email,
                Err(outcome) => return self.scrub_outcome(outcome),
            };
            let mut stage = Stage::Connect;
            let mut slot = None;
            let result =
                tokio::time::timeout(self.timeout, self.transmit(&email, &mut stage, &mut slot))
                    .await;
            let outcome = match &result {
                Ok(Ok(_)) => SendOutcome::Sent {
                    provider_id: message_id(&message.id, self.from.email.domain()),
                },
                Ok(Err(failure)) => classify(stage, failure),
                Err(_) => classify(
                    stage,
                    &Failure {
                        kind: FailureKind::Timeout,
                        text: format!(
                            "no answer within {}",
                            humantime::format_duration(self.timeout)
                        ),
                    },
                ),
            };
            if let Some(conn) = slot {
                self.finish(conn, &result).await;
            }
            self.scrub_outcome(outcome)
        })
    }

    fn balance(&self) -> BoxFuture<'_, Result<Option<super::Balance>, String>> {
        Box::pin(async move {
            let mut stage = Stage::Connect;
            let check = async {
                let mut conn = self.connection(&mut stage).await?;
                if conn.test_connected().await {
                    self.release(conn).await;
                    Ok(())
                } else {
                    drop(conn);
                    Err(Failure {
                        kind: FailureKind::Lost,
                        text: "the server did not answer NOOP".into(),
                    })
                }
            };
            let failure = match tokio::time::timeout(self.timeout, check).await {
                Ok(Ok(())) => return Ok(None),
                Ok(Err(failure)) => failure,
                Err(_) => Failure {
                    kind: FailureKind::Timeout,
                    text: format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                },
            };
            let what = match (stage, &failure.kind) {
                (Stage::Auth, _) => "the server refused the login",
                (_, FailureKind::Timeout) => "the server timed out",
                _ => "could not connect",
            };
            Err(self.scrub(format!(
                "{what} ({}:{}): {}",
                self.host, self.port, failure.text
            )))
        })
    }
}

/// How far one SMTP transaction got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Opening the connection: TCP, greeting, EHLO, STARTTLS.
    Connect,
    /// Logging in.
    Auth,
    /// `MAIL FROM`, `RCPT TO`, `DATA`: nothing of the message has been sent.
    Envelope,
    /// The message body is on its way or awaiting the server's verdict.
    Data,
}

/// A failed SMTP step, reduced to what classification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    /// The server's reply text or the error's description.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The server answered with this 4xx or 5xx code.
    Reply(u16),
    /// No answer in time.
    Timeout,
    /// The connection failed, closed or sent something unreadable.
    Lost,
    /// The TLS handshake or STARTTLS failed.
    Tls,
    /// crier could not go on (no common AUTH mechanism, SMTPUTF8 missing, ...).
    Client,
}

impl Failure {
    fn client(text: &str) -> Failure {
        Failure {
            kind: FailureKind::Client,
            text: text.into(),
        }
    }
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(error: lettre::transport::smtp::Error) -> Failure {
        // The source is the server's reply text or the I/O error; never the credentials
        // (lettre's errors carry neither the command sent nor the AUTH payload).
        let source = std::error::Error::source(&error).map(|s| s.to_string());
        let kind = if let Some(code) = error.status() {
            FailureKind::Reply(u16::from(code))
        } else if error.is_timeout() {
            FailureKind::Timeout
        } else if error.is_tls() {
            FailureKind::Tls
        } else if error.is_client() {
            FailureKind::Client
        } else {
            FailureKind::Lost
        };
        let text = match (kind, source) {
            (FailureKind::Reply(_), Some(text)) => text,
            _ => error.to_string(),
        };
        Failure { kind, text }
    }
}

/// What became of a send that failed at `stage` with `failure`. The one place SMTP
/// answers become outcomes:
///
/// - 530/534/535/538 (authentication required or refused) → `Halt`: no message can go.
/// - 4xx → `Retry`, at any stage: the server refused this time, the message was not taken.
/// - 5xx while connecting or logging in → `Halt` (the server refuses crier, not the
///   message); 5xx later → `Rejected` with code `smtp:<code>` and the server's text.
/// - Timeout or a lost connection before the body was sent → `Retry`; during or after
///   the body → `Unknown` (the server may have accepted it).
/// - TLS failures and client errors while connecting → `Halt` (configuration); a client
///   error about the message (e.g. no SMTPUTF8) → `Rejected`.
pub(crate) fn classify(stage: Stage, failure: &Failure) -> SendOutcome {
    let text = failure.text.clone();
    match failure.kind {
        FailureKind::Reply(code @ (530 | 534 | 535 | 538)) => SendOutcome::Halt {
            code: format!("smtp:{code}"),
            text: format!("the server refused the login: {text}"),
        },
        FailureKind::Reply(code) if (400..500).contains(&code) => SendOutcome::Retry {
            reason: format!("smtp {code}: {text}"),
        },
        FailureKind::Reply(code) if matches!(stage, Stage::Connect | Stage::Auth) => {
            SendOutcome::Halt {
                code: format!("smtp:{code}"),
                text: format!("the server refused the connection: {text}"),
            }
        }
        FailureKind::Reply(code) => SendOutcome::Rejected {
            code: format!("smtp:{code}"),
            text,
        },
        FailureKind::Timeout | FailureKind::Lost if stage == Stage::Data => SendOutcome::Unknown {
            reason: format!("after the message was sent: {text}"),
        },
        FailureKind::Timeout | FailureKind::Lost => SendOutcome::Retry {
            reason: match stage {
                Stage::Connect => format!("could not connect: {text}"),
                _ => text,
            },
        },
        FailureKind::Tls => SendOutcome::Halt {
            code: "smtp:tls".into(),
            text: format!("TLS failed: {text}"),
        },
        FailureKind::Client if matches!(stage, Stage::Connect | Stage::Auth) => SendOutcome::Halt {
            code: "smtp:client".into(),
            text,
        },
        FailureKind::Client => SendOutcome::Rejected {
            code: "smtp:client".into(),
            text,
        },
    }
}

/// The files to attach for `recipient_id`: every regular file in
/// `<dir>/<recipient_id>/<kind>/` for each kind in order, sorted by name within a kind. A
/// missing folder attaches nothing. A file whose real path (symlinks resolved) lies
/// outside `dir` is an error naming it relative to `dir`. The paths returned are under `dir`.
pub fn documents(
    dir: &Path,
    recipient_id: u64,
    kinds: &[DocumentKind],
) -> Result<Vec<PathBuf>, String> {
    let root = dir
        .canonicalize()
        .map_err(|e| format!("documents_dir `{}`: {e}", dir.display()))?;
    let mut found = Vec::new();
    for kind in kinds {
        let relative = Path::new(&recipient_id.to_string()).join(kind_folder(*kind));
        let entries = match std::fs::read_dir(dir.join(&relative)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("`{}`: {e}", relative.display())),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("`{}`: {e}", relative.display()))?;
            let shown = relative.join(entry.file_name());
            let real = entry
                .path()
                .canonicalize()
                .map_err(|e| format!("`{}`: {e}", shown.display()))?;
            if !real.starts_with(&root) {
                return Err(format!(
                    "`{}` leads outside documents_dir; refusing to attach it",
                    shown.display()
                ));
            }
            let metadata =
                std::fs::metadata(&real).map_err(|e| format!("`{}`: {e}", shown.display()))?;
            if metadata.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        found.extend(files);
    }
    Ok(found)
}

/// The folder name of a document kind: its YAML spelling.
fn kind_folder(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::Invoices => "invoices",
        DocumentKind::ProformaInvoices => "proforma_invoices",
        DocumentKind::CreditNotes => "credit_notes",
        DocumentKind::Payments => "payments",
    }
}

/// `text` with every line end (LF, CRLF or a lone CR) as CRLF. lettre adds the CR to a
/// bare LF itself but leaves a lone CR, which is as bare to an MTA.
pub(super) fn crlf_line_ends(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

/// The `Message-ID` of crier message `id`: stable, so a retried send carries the same one.
fn message_id(id: &str, domain: &str) -> String {
    let local: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<crier.{local}@{domain}>")
}

/// The VERP envelope sender of crier message `id`: `bounces+<id>@<domain>`. A bounce is
/// sent to it, so it names the message (`crate::bounces` reads it back).
fn verp(id: &str, domain: &str) -> Result<Address, lettre::address::AddressError> {
    Address::new(format!("{}+{id}", crate::bounces::VERP_PREFIX), domain)
}

/// Why `domain` cannot be a bounce domain, if it cannot: dot-separated labels of letters,
/// digits and inner hyphens (RFC 1035 §2.3.1), at least two of them.
fn check_domain(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let good_label = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if labels.len() < 2 || domain.len() > 253 || !labels.iter().all(good_label) {
        return Err(format!(
            "`{domain}` is not a domain name (expected e.g. `bounces.acme.example`)"
        ));
    }
    Ok(())
}

/// Standard base64 (RFC 4648, padded), for recognising encoded credentials in server text.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;

    fn failure(kind: FailureKind, text: &str) -> Failure {
        Failure {
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn classifies_every_stage_and_failure() {
        use FailureKind::*;
        use Stage::*;
        let retry = |reason: &str| SendOutcome::Retry {
            reason: reason.into(),
        };
        let table: Vec<(Stage, Failure, SendOutcome)> = vec![
            (
                Envelope,
                failure(Reply(450), "4.2.1 busy"),
                retry("smtp 450: 4.2.1 busy"),
            ),
            (
                Data,
                failure(Reply(451), "4.3.0 later"),
                retry("smtp 451: 4.3.0 later"),
            ),
            (
                Connect,
                failure(Reply(421), "4.3.2 shutting down"),
                retry("smtp 421: 4.3.2 shutting down"),
            ),
            (
                Envelope,
                failure(Reply(550), "5.1.1 no such user"),
                SendOutcome::Rejected {
                    code: "smtp:550".into(),
                    text: "5.1.1 no such user".into(),
                },
            ),
            (
                Data,
                failure(Reply(554), "5.7.1 spam"),
                SendOutcome::Rejected {
                    code: "smtp:554".into(),
                    text: "5.7.1 spam".into(),
                },
            ),
            (
                Auth,
                failure(Reply(535), "5.7.8 bad credentials"),
                SendOutcome::Halt {
                    code: "smtp:535".into(),
                    text: "the server refused the login: 5.7.8 bad credentials".into(),
                },
            ),
            (
                Envelope,
                failure(Reply(530), "5.7.0 authentication required"),
                SendOutcome::Halt {
                    code: "smtp:530".into(),
                    text: "the server refused the login: 5.7.0 authentication required".into(),
                },
            ),
            (
                Connect,
                failure(Reply(554), "5.7.1 you are blocked"),
                SendOutcome::Halt {
                    code: "smtp:554".into(),
                    text: "the server refused the connection: 5.7.1 you are blocked".into(),
                },
            ),
            (
                Connect,
                failure(Lost, "Connection error: refused"),
                retry("could not connect: Connection error: refused"),
            ),
            (
                Connect,
                failure(Timeout, "no answer"),
                retry("could not connect: no answer"),
            ),
            (
                Envelope,
                failure(Lost, "network error: reset"),
                retry("network error: reset"),
            ),
            (Envelope, failure(Timeout, "no answer"), retry("no answer")),
            (
                Data,
                failure(Timeout, "no answer within 300ms"),
                SendOutcome::Unknown {
                    reason: "after the message was sent: no answer within 300ms".into(),
                },
            ),
            (
                Data,
                failure(Lost, "incomplete response"),
                SendOutcome::Unknown {
                    reason: "after the message was sent: incomplete response".into(),
                },
            ),
            (
                Connect,
                failure(Tls, "bad certificate"),
                SendOutcome::Halt {
                    code: "smtp:tls".into(),
                    text: "TLS failed: bad certificate".into(),
                },
            ),
            (
                Auth,
                failure(Client, "no compatible mechanism"),
                SendOutcome::Halt {
                    code: "smtp:client".into(),
                    text: "no compatible mechanism".into(),
                },
            ),
            (
                Envelope,
                failure(Client, "no SMTPUTF8"),
                SendOutcome::Rejected {
                    code: "smtp:client".into(),
                    text: "no SMTPUTF8".into(),
                },
            ),
        ];
        for (stage, failure, expected) in table {
            assert_eq!(classify(stage, &failure), expected, "{stage:?} {failure:?}");
        }
    }

    #[test]
    fn lists_documents_sorted_by_name_kind_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "5/invoices/b.pdf",
            "5/invoices/a.pdf",
            "5/payments/z.pdf",
            "6/invoices/x.pdf",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("5/invoices/subfolder")).unwrap();
        let found = documents(
            dir.path(),
            5,
            &[DocumentKind::Payments, DocumentKind::Invoices],
        )
        .unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            ["5/payments/z.pdf", "5/invoices/a.pdf", "5/invoices/b.pdf"]
        );
    }

    #[test]
    fn a_missing_folder_attaches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let kinds = [DocumentKind::CreditNotes, DocumentKind::ProformaInvoices];
        assert_eq!(
            documents(dir.path(), 1, &kinds).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn a_missing_documents_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = documents(&missing, 1, &[DocumentKind::Invoices]).unwrap_err();
        assert!(error.contains("documents_dir"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_symlink_leading_outside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("other.pdf"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("3/invoices")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("other.pdf"),
            dir.path().join("3/invoices/mine.pdf"),
        )
        .unwrap();
        let error = documents(dir.path(), 3, &[DocumentKind::Invoices]).unwrap_err();
        assert!(
            error.contains("`3/invoices/mine.pdf` leads outside documents_dir"),
            "{error}"
        );

        // A symlinked recipient folder pointing outside is refused the same way.
        std::fs::create_dir_all(outside.path().join("invoices")).unwrap();
        std::fs::write(outside.path().join("invoices/a.pdf"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("4")).unwrap();
        let error = documents(dir.path(), 4, &[DocumentKind::Invoices]).unwrap_err();
        assert!(
            error.contains("`4/invoices/a.pdf` leads outside"),
            "{error}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn allows_a_symlink_that_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("store/abc.pdf"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("3/invoices")).unwrap();
        std::os::unix::fs::symlink("../../store/abc.pdf", dir.path().join("3/invoices/jan.pdf"))
            .unwrap();
        let found = documents(dir.path(), 3, &[DocumentKind::Invoices]).unwrap();
        assert_eq!(found, [dir.path().join("3/invoices/jan.pdf")]);
    }

    #[test]
    fn encodes_base64_like_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("\0u\0p", "AHUAcA=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn scrubs_the_password_in_every_form() {
        let config: SmtpConfig = serde_yaml::from_str(
            "host: mail.example\nfrom: a@example.com\nusername: u\npassword: hunter2",
        )
        .unwrap();
        let smtp = Smtp::new(&config).unwrap();
        let text = format!(
            "echo hunter2 {} {}",
            base64(b"hunter2"),
            base64(b"\0u\0hunter2")
        );
        assert_eq!(smtp.scrub(text), "echo <redacted> <redacted> <redacted>");
        assert!(!format!("{smtp:?}").contains("hunter2"));
    }

    #[test]
    fn message_ids_are_stable_and_valid() {
        assert_eq!(
            message_id("run 7/42", "acme.example"),
            "<crier.run.7.42@acme.example>"
        );
    }

    #[test]
    fn check_reports_a_from_that_is_not_a_mailbox() {
        let text = "host: mail.example\nfrom: Billing billing.example\n";
        let config: SmtpConfig = serde_yaml::from_str(text).unwrap();
        let map = crate::diag::SourceMap::new(text);
        let mut report = FileReport::new(Path::new("crier.yaml"), &map);
        config.check("providers.mail", &mut report);
        let fields: Vec<_> = report.diags.iter().map(|d| d.field.clone()).collect();
        assert_eq!(fields, ["providers.mail.from"]);

        let good: SmtpConfig =
            serde_yaml::from_str("host: m\nfrom: Acme ISP <billing@acme.example>\n").unwrap();
        let mut report = FileReport::new(Path::new("crier.yaml"), &map);
        good.check("providers.mail", &mut report);
        assert!(report.diags.is_empty());
    }

    /// A client for `documents_dir`, and an email to customer 1 attaching their invoices.
    fn client_and_message(documents_dir: &Path, body: &str) -> (Smtp, RoutedMessage) {
        let config: SmtpConfig = serde_yaml::from_str(&format!(
            "host: mail.example\nfrom: Zoë's ISP <billing@isp.example>\ndocuments_dir: {}",
            documents_dir.display()
        ))
        .unwrap();
        let message = RoutedMessage {
            id: "run.1".into(),
            channel: crate::job::Channel::Email,
            to: "ann@example.com".into(),
            subject: Some("Ihre Rechnung für März".into()),
            body: body.into(),
            html: None,
            encoding: None,
            parts: 0,
            recipient_id: 1,
            attach: vec![DocumentKind::Invoices],
            unsubscribe: None,
            dedup_id: 0,
        };
        (Smtp::new(&config).unwrap(), message)
    }

    /// Positions of line ends in `bytes` other than CRLF.
    fn bare_line_ends(bytes: &[u8]) -> Vec<usize> {
        (0..bytes.len())
            .filter(|&i| match bytes[i] {
                b'\n' => i == 0 || bytes[i - 1] != b'\r',
                b'\r' => bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            })
            .collect()
    }

    #[test]
    fn attachments_go_as_base64_and_every_line_ends_in_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let invoices = dir.path().join("1/invoices");
        std::fs::create_dir_all(&invoices).unwrap();
        // ASCII with LF ends: lettre alone would send it as 7bit with the bare LFs.
        let notes = b"Usage\n.\nFrom here\nlast line".to_vec();
        std::fs::write(invoices.join("notes.txt"), &notes).unwrap();
        let (smtp, message) = client_and_message(dir.path(), "Dear Ann,\nyour invoice.\r\n\rBye\n");
        let bytes = smtp.build(&message).unwrap().formatted();
        assert_eq!(bare_line_ends(&bytes), Vec::<usize>::new());

        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        let attachment = parsed.attachment(0).unwrap();
        assert_eq!(
            attachment.content_transfer_encoding(),
            Some("base64"),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(attachment.contents(), notes.as_slice());
        assert_eq!(
            parsed.body_text(0).unwrap(),
            "Dear Ann,\r\nyour invoice.\r\n\r\nBye\r\n"
        );
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(
            crlf_line_ends("a\nb\r\nc\rd\n\n"),
            "a\r\nb\r\nc\r\nd\r\n\r\n"
        );
        assert_eq!(crlf_line_ends("no line end"), "no line end");
    }

    #[test]
    fn default_ports_follow_security() {
        for (security, port) in [("starttls", 587), ("tls", 465), ("plain", 25)] {
            let config: SmtpConfig = serde_yaml::from_str(&format!(
                "host: mail.example\nfrom: a@example.com\nsecurity: {security}"
            ))
            .unwrap();
            assert_eq!(Smtp::new(&config).unwrap().port, port);
        }
    }

    #[test]
    fn the_envelope_sender_is_the_verp_address_when_a_bounce_domain_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let (smtp, mut message) = client_and_message(dir.path(), "Hello");
        message.attach.clear();
        message.id = "01JDZ8X6Q4T5N0V9K3M2R7W1YB-000003".into();
        let plain = smtp.build(&message).unwrap();
        assert_eq!(
            plain.envelope().from().map(|a| a.to_string()).as_deref(),
            Some("billing@isp.example"),
            "without bounce_domain the envelope sender is the From address"
        );

        let config: SmtpConfig = serde_yaml::from_str(
            "host: mail.example\nfrom: Zoë's ISP <billing@isp.example>\nbounce_domain: bounces.isp.example",
        )
        .unwrap();
        let smtp = Smtp::new(&config).unwrap();
        let email = smtp.build(&message).unwrap();
        assert_eq!(
            email.envelope().from().map(|a| a.to_string()).as_deref(),
            Some("bounces+01JDZ8X6Q4T5N0V9K3M2R7W1YB-000003@bounces.isp.example")
        );
        let to: Vec<String> = email
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(to, ["ann@example.com"]);
        let bytes = email.formatted();
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(
            parsed
                .from()
                .and_then(|f| f.first())
                .and_then(|a| a.address()),
            Some("billing@isp.example"),
            "the From header stays"
        );
        assert!(
            parsed.header("Return-Path").is_none(),
            "the receiving MTA writes Return-Path, not crier"
        );
    }

    #[test]
    fn check_reports_a_bounce_domain_that_is_no_domain() {
        for (domain, good) in [
            ("bounces.acme.example", true),
            ("b-1.acme.example", true),
            ("localhost", false),
            ("bounces..acme.example", false),
            ("-bounces.acme.example", false),
            ("bounces@acme.example", false),
        ] {
            let text = format!("host: m\nfrom: a@acme.example\nbounce_domain: '{domain}'\n");
            let config: SmtpConfig = serde_yaml::from_str(&text).unwrap();
            let map = crate::diag::SourceMap::new(&text);
            let mut report = FileReport::new(Path::new("crier.yaml"), &map);
            config.check("providers.mail", &mut report);
            let fields: Vec<_> = report.diags.iter().map(|d| d.field.clone()).collect();
            if good {
                assert!(fields.is_empty(), "{domain}: {fields:?}");
            } else {
                assert_eq!(fields, ["providers.mail.bounce_domain"], "{domain}");
            }
        }
    }
}
