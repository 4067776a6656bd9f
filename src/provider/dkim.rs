//! DKIM signing of the SMTP provider's email (RFC 6376; RFC 8463 for Ed25519).
//!
//! This file holds what `providers.<name>.dkim` says, how its key file is read, and the
//! signature itself. crier signs the bytes that go on the wire ([`Message::formatted`]),
//! with relaxed/relaxed canonicalization, and adds the `DKIM-Signature` header to the
//! message: lettre's own `dkim` feature signs lettre's header list, which for a
//! single-part message lacks `Content-Type` (lettre writes it with the body), so a
//! verifier rejects the signature. The key is read when the provider is built, never at
//! validation (a jobs repository validates without production keys), and neither the key
//! nor its file's content is ever part of an error or a log line.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diag::FileReport;

/// `dkim:` of an SMTP provider: sign every message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`), e.g. `acme.example`: the `From:` domain or a parent of
    /// it, so that DMARC sees the signature as aligned.
    pub domain: String,
    /// The selector (`s=`): the key's public half is published as TXT at
    /// `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The private key: RSA (PKCS#1 or PKCS#8 PEM; 2048 bits or more) or Ed25519 (PKCS#8
    /// PEM, or the base64 seed `dknewkey` writes). Relative to crier.yaml.
    pub private_key_file: PathBuf,
}

/// The headers every signature covers, present or not: a header that is absent when
/// signed cannot be added later without breaking the signature (RFC 6376 §5.4.2).
const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

impl DkimSettings {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        let label = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        let domain_like = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|part| !part.is_empty() && part.chars().all(label))
        };
        if !domain_like(&self.domain) || !self.domain.contains('.') {
            report.error(
                &format!("{field}.domain"),
                format!(
                    "`{}` is not a domain name (e.g. `acme.example`)",
                    self.domain
                ),
            );
        }
        if !domain_like(&self.selector) {
            report.error(
                &format!("{field}.selector"),
                format!(
                    "`{}` is not a selector (letters, digits, - and _, dot-separated; e.g. `crier2026`)",
                    self.selector
                ),
            );
        }
    }

    /// Why a `From:` of `from` (a mailbox) would not align with the signing domain, for
    /// `crier providers check` to warn about; `None` when it aligns.
    pub fn misalignment(&self, from: &str) -> Option<String> {
        let from: lettre::message::Mailbox = from.parse().ok()?;
        let domain = from.email.domain();
        (!self.aligns_with(domain)).then(|| {
            format!(
                "the From domain `{domain}` does not align with dkim.domain `{}`: DMARC will not count the signature",
                self.domain
            )
        })
    }

    /// Does a `From:` in `from_domain` align with the signing domain (DMARC's relaxed
    /// rule, without a public-suffix list: one is the other or a subdomain of it)?
    pub fn aligns_with(&self, from_domain: &str) -> bool {
        let (a, b) = (
            self.domain.to_ascii_lowercase(),
            from_domain.to_ascii_lowercase(),
        );
        a == b || b.ends_with(&format!(".{a}")) || a.ends_with(&format!(".{b}"))
    }
}

/// A private key of either kind.
enum Key {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Rsa(_) => "Rsa(..)",
            Key::Ed25519(_) => "Ed25519(..)",
        })
    }
}

/// Signs messages with one key.
pub struct Signer {
    domain: String,
    selector: String,
    key: Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

/// DER of the SHA-256 `DigestInfo` prefix (RFC 8017 §9.2), for PKCS#1 v1.5 signatures.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

impl Signer {
    /// Reads the key of `settings`. The error names the file, never its content.
    pub fn new(settings: &DkimSettings) -> Result<Signer, String> {
        Ok(Signer {
            domain: settings.domain.to_ascii_lowercase(),
            selector: settings.selector.clone(),
            key: read_key(&settings.private_key_file)?,
        })
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> (String, String) {
        let name = format!("{}._domainkey.{}", self.selector, self.domain);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let value = match &self.key {
            Key::Rsa(key) => {
                use rsa::pkcs8::EncodePublicKey;
                let der = rsa::RsaPublicKey::from(key.as_ref())
                    .to_public_key_der()
                    .map(|d| b64(d.as_bytes()))
                    .unwrap_or_default();
                format!("v=DKIM1; k=rsa; p={der}")
            }
            Key::Ed25519(key) => {
                format!(
                    "v=DKIM1; k=ed25519; p={}",
                    b64(key.verifying_key().as_bytes())
                )
            }
        };
        (name, value)
    }

    /// [`Signer::dns_record`] as a zone file writes it: `name TXT "…" "…"`, the value in
    /// quoted strings of at most 255 characters (one DNS character-string each; a
    /// 2048-bit RSA key needs two, which resolvers join back together).
    pub fn zone_line(&self) -> String {
        let (name, value) = self.dns_record();
        let strings: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
            .collect();
        format!("{name} TXT {}", strings.join(" "))
    }

    /// Adds the `DKIM-Signature` header, over the message as it will be sent.
    pub fn sign(&self, message: &mut Message) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value = self.signature(&message.formatted(), now);
        message
            .headers_mut()
            .insert_raw(HeaderValue::dangerous_new_pre_encoded(
                HeaderName::new_from_ascii_str("DKIM-Signature"),
                value.clone(),
                value,
            ));
    }

    /// The `DKIM-Signature` value (folded, without its name) for the message `bytes`.
    fn signature(&self, bytes: &[u8], timestamp: u64) -> String {
        let split = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 2);
        let (head, body) = (&bytes[..split], bytes.get(split + 2..).unwrap_or_default());
        let body_hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(relaxed_body(body)));
        let algorithm = match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        };
        let names = SIGNED_HEADERS.map(str::to_ascii_lowercase).join(":");
        let unsigned = format!(
            "v=1; a={algorithm}; c=relaxed/relaxed; d={}; s={}; t={timestamp};\r\n h={names};\r\n bh={body_hash};\r\n b=",
            self.domain, self.selector
        );
        let fields = header_fields(head);
        let mut hashed = Sha256::new();
        for name in SIGNED_HEADERS {
            // The last instance (RFC 6376 §5.4.2); crier writes each of these once.
            if let Some(field) = fields.iter().rev().find(|f| f.0.eq_ignore_ascii_case(name)) {
                hashed.update(relaxed_header(field.1));
                hashed.update(b"\r\n");
            }
        }
        let own = format!("DKIM-Signature: {unsigned}");
        hashed.update(relaxed_header(own.as_bytes()));
        let digest = hashed.finalize();
        let signature = match &self.key {
            Key::Rsa(key) => key
                .sign(
                    rsa::Pkcs1v15Sign {
                        hash_len: Some(32),
                        prefix: SHA256_DIGEST_INFO.into(),
                    },
                    &digest,
                )
                .unwrap_or_default(),
            Key::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(&digest).to_bytes().to_vec()
            }
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
        // Folded into lines a verifier reads whitespace-blind (RFC 6376 §3.5, `b=`).
        let folded: Vec<&str> = encoded
            .as_bytes()
            .chunks(72)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        format!("{unsigned}{}", folded.join("\r\n "))
    }
}

/// The header fields of `head` (ending in CRLF): each name, and the whole field as
/// written (continuation lines included, its last CRLF not).
fn header_fields(head: &[u8]) -> Vec<(&str, &[u8])> {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < head.len() {
        let end = find(&head[at..], b"\r\n").map_or(head.len(), |i| at + i);
        if matches!(head.get(at), Some(b' ' | b'\t')) {
            if let Some(last) = fields.last_mut() {
                last.1 = end;
            }
        } else {
            fields.push((at, end));
        }
        at = end + 2;
    }
    fields
        .into_iter()
        .filter_map(|(start, end)| {
            let field = &head[start..end];
            let colon = field.iter().position(|&b| b == b':')?;
            Some((std::str::from_utf8(&field[..colon]).ok()?.trim(), field))
        })
        .collect()
}

/// RFC 6376 §3.4.2: lower-case name, no folding, runs of whitespace as one space, none
/// around the colon or at the end; without the CRLF.
fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let name = String::from_utf8_lossy(&field[..colon])
        .trim()
        .to_ascii_lowercase();
    let mut out = name.into_bytes();
    out.push(b':');
    let value = field.get(colon + 1..).unwrap_or_default();
    let mut space = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && out.last() != Some(&b':') {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
    }
    out
}

/// RFC 6376 §3.4.4: runs of whitespace as one space, none at a line's end, no empty
/// lines at the end, and a non-empty body ends in CRLF.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut space = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    while out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    if out == b"\r\n" {
        out.clear();
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads a private key file in any of the forms [`DkimSettings::private_key_file`] lists.
fn read_key(path: &Path) -> Result<Key, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("dkim.private_key_file: cannot read `{shown}`: {e}"))?;
    let not_a_key = || {
        format!(
            "dkim.private_key_file: `{shown}` is not an RSA or Ed25519 private key (PEM, or an Ed25519 base64 seed)"
        )
    };
    let text = text.trim();
    if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        return rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .map(|k| Key::Rsa(Box::new(k)))
            .map_err(|_| not_a_key());
    }
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        // One trait (the `pkcs8` crate's) for both key types.
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Ok(Key::Ed25519(Box::new(key)));
        }
        return rsa::RsaPrivateKey::from_pkcs8_pem(text)
            .map(|k| Key::Rsa(Box::new(k)))
            .map_err(|_| not_a_key());
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(seed) => <[u8; 32]>::try_from(seed.as_slice())
            .map(|seed| Key::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed))))
            .map_err(|_| not_a_key()),
        Err(_) => Err(not_a_key()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(domain: &str, selector: &str) -> DkimSettings {
        DkimSettings {
            domain: domain.into(),
            selector: selector.into(),
            private_key_file: "k".into(),
        }
    }

    #[test]
    fn alignment_is_the_domain_or_a_subdomain_either_way() {
        let s = settings("acme.example", "s");
        assert!(s.aligns_with("acme.example"));
        assert!(s.aligns_with("Billing.ACME.example"));
        assert!(settings("mail.acme.example", "s").aligns_with("acme.example"));
        assert!(!s.aligns_with("other.example"));
        assert!(!s.aligns_with("notacme.example"));
        assert_eq!(s.misalignment("Acme <billing@acme.example>"), None);
        assert_eq!(
            s.misalignment("Acme <billing@acme-mail.example>").unwrap(),
            "the From domain `acme-mail.example` does not align with dkim.domain `acme.example`: DMARC will not count the signature"
        );
    }

    #[test]
    fn check_reports_a_bad_domain_and_selector() {
        let map = crate::diag::SourceMap::new("");
        let mut report = FileReport::new(Path::new("crier.yaml"), &map);
        settings("acme", "has space").check("providers.mail.dkim", &mut report);
        let fields: Vec<_> = report.diags.iter().map(|d| d.field.clone()).collect();
        assert_eq!(
            fields,
            ["providers.mail.dkim.domain", "providers.mail.dkim.selector"]
        );
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dkim")
            .join(name)
    }

    fn signer(path: PathBuf) -> Signer {
        Signer::new(&DkimSettings {
            private_key_file: path,
            ..settings("acme.example", "s1")
        })
        .unwrap()
    }

    #[test]
    fn reads_every_key_form_and_names_its_dns_record() {
        for kind in ["rsa", "ed25519"] {
            let record =
                std::fs::read_to_string(fixture(&format!("{kind}.test-only.txt"))).unwrap();
            let pkcs8 = signer(fixture(&format!("{kind}.test-only.pem")));
            assert_eq!(
                pkcs8.dns_record(),
                (
                    "s1._domainkey.acme.example".to_string(),
                    record.trim().to_string()
                )
            );
        }
        // The same RSA key as PKCS#1, and the Ed25519 one as its base64 seed.
        let dir = tempfile::tempdir().unwrap();
        let Key::Rsa(rsa) = signer(fixture("rsa.test-only.pem")).key else {
            panic!("an RSA key")
        };
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let pkcs1 = rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        std::fs::write(dir.path().join("rsa1.pem"), pkcs1.as_bytes()).unwrap();
        assert_eq!(
            signer(dir.path().join("rsa1.pem")).dns_record(),
            signer(fixture("rsa.test-only.pem")).dns_record()
        );
        let Key::Ed25519(ed) = signer(fixture("ed25519.test-only.pem")).key else {
            panic!("an Ed25519 key")
        };
        let seed = base64::engine::general_purpose::STANDARD.encode(ed.to_bytes());
        std::fs::write(dir.path().join("ed.key"), seed).unwrap();
        assert_eq!(
            signer(dir.path().join("ed.key")).dns_record(),
            signer(fixture("ed25519.test-only.pem")).dns_record()
        );
    }

    #[test]
    fn a_long_record_is_split_into_dns_strings() {
        let rsa = signer(fixture("rsa.test-only.pem"));
        let (name, value) = rsa.dns_record();
        assert!(value.len() > 255, "a 2048-bit key's record");
        let line = rsa.zone_line();
        let quoted = line.strip_prefix(&format!("{name} TXT \"")).unwrap();
        let strings: Vec<&str> = quoted.strip_suffix('"').unwrap().split("\" \"").collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), value);
        let ed = signer(fixture("ed25519.test-only.pem"));
        assert_eq!(
            ed.zone_line(),
            format!("{} TXT \"{}\"", ed.dns_record().0, ed.dns_record().1)
        );
    }

    #[test]
    fn relaxed_canonicalization_follows_rfc_6376() {
        // RFC 6376 §3.4.5's example.
        assert_eq!(relaxed_header(b"A: X"), b"a:X");
        assert_eq!(relaxed_header(b"B : Y\t\r\n\tZ  "), b"b:Y Z");
        assert_eq!(relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        let head = b"From: a@b.example\r\nSubject: one\r\n two\r\nTo: c@d.example\r\n";
        let names: Vec<&str> = header_fields(head).iter().map(|f| f.0).collect();
        assert_eq!(names, ["From", "Subject", "To"]);
        assert_eq!(header_fields(head)[1].1, b"Subject: one\r\n two");
    }

    #[test]
    fn a_file_that_is_no_key_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = read_key(&path).unwrap_err();
        assert!(
            error.contains("is not an RSA or Ed25519 private key"),
            "{error}"
        );
        assert!(!error.contains("c2VjcmV0"), "{error}");
        let error = read_key(&dir.path().join("missing")).unwrap_err();
        assert!(error.contains("cannot read"), "{error}");
    }
}
