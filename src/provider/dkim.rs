//! DKIM signing of the SMTP provider's email (RFC 6376; RFC 8463 for Ed25519), through
//! lettre's `dkim` feature: <https://docs.rs/lettre/0.11/lettre/message/dkim/index.html>.
//!
//! This file holds what `providers.<name>.dkim` says and how its key file is read; the
//! SMTP provider signs each message it builds with the [`Signer`] made here. lettre takes
//! an RSA key only as PKCS#1 PEM and an Ed25519 key only as its base64 seed, so the
//! other forms a key is kept in (PKCS#8 PEM, what `openssl genpkey` writes) are turned
//! into those here. The key is read when the provider is built, never at validation
//! (a jobs repository validates without production keys), and neither the key nor its
//! file's content is ever part of an error.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Signs messages with one key.
pub struct Signer {
    config: DkimConfig,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    /// Reads the key of `settings`. The error names the file, never its content.
    pub fn new(settings: &DkimSettings) -> Result<Signer, String> {
        let key = read_key(&settings.private_key_file)?;
        let headers = SIGNED_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect();
        Ok(Signer {
            config: DkimConfig::new(
                settings.selector.clone(),
                settings.domain.to_ascii_lowercase(),
                key,
                headers,
                // Relaxed both ways: a relay that refolds a header or trims a line's
                // trailing space does not break the signature.
                DkimCanonicalization {
                    header: DkimCanonicalizationType::Relaxed,
                    body: DkimCanonicalizationType::Relaxed,
                },
            ),
        })
    }

    /// Adds the `DKIM-Signature` header.
    pub fn sign(&self, message: &mut Message) {
        message.sign(&self.config);
    }
}

/// DER prefix of a PKCS#8 Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Reads a private key file in any of the forms [`DkimSettings::private_key_file`] lists.
fn read_key(path: &Path) -> Result<DkimSigningKey, String> {
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
        return DkimSigningKey::new(text, DkimSigningAlgorithm::Rsa).map_err(|_| not_a_key());
    }
    if let Some(body) = text
        .strip_prefix("-----BEGIN PRIVATE KEY-----")
        .and_then(|rest| rest.strip_suffix("-----END PRIVATE KEY-----"))
    {
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .map_err(|_| not_a_key())?;
        if der.len() == ED25519_PKCS8_PREFIX.len() + 32 && der.starts_with(&ED25519_PKCS8_PREFIX) {
            let seed = base64::engine::general_purpose::STANDARD
                .encode(&der[ED25519_PKCS8_PREFIX.len()..]);
            return DkimSigningKey::new(&seed, DkimSigningAlgorithm::Ed25519)
                .map_err(|_| not_a_key());
        }
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| not_a_key())?;
        let pkcs1 = key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|_| not_a_key())?;
        return DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa).map_err(|_| not_a_key());
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(seed) if seed.len() == 32 => {
            DkimSigningKey::new(text, DkimSigningAlgorithm::Ed25519).map_err(|_| not_a_key())
        }
        _ => Err(not_a_key()),
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
