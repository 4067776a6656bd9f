//! One-click unsubscribe (RFC 2369 `List-Unsubscribe`, RFC 8058 one-click): the token
//! in each email's link, and its check.
//!
//! A token names the run, the recipient and the address a message went to, followed by
//! an HMAC-SHA256 of those bytes under `email.unsubscribe.secret`, all as URL-safe
//! base64 without padding. `crier serve` can therefore refuse a forged or altered token
//! with no lookup at all (the MAC is checked in constant time, [`Mac::verify_slice`]),
//! and a genuine one says by itself which address to put on the opt-out list. The run
//! and recipient (rather than the message's own id, which the ledger assigns only after
//! rendering) are what the planner knows when it renders `{{ unsubscribe_url }}`; the
//! one email of a recipient in a run is the message they identify.
//!
//! The address travels readable in the token: the link only ever goes to that address.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::RecipientKind;
use crate::config::Secret;
use crate::history::RunId;

/// First byte of every token: the layout below. A new layout takes a new number.
const VERSION: u8 = 1;
/// Tag mixed into the MAC, so the key signs nothing else by accident.
const DOMAIN: &[u8] = b"crier unsubscribe v1\0";
const MAC_LEN: usize = 32;
/// version, run (16), kind (1), recipient id (8).
const FIXED_LEN: usize = 1 + 16 + 1 + 8;
/// Longest address a token carries (RFC 5321's path limit).
const MAX_ADDRESS: usize = 254;

/// Whose unsubscribe a token is: the run, the recipient and the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub run: RunId,
    pub kind: RecipientKind,
    pub recipient: u64,
    /// The address the message went to, as sent.
    pub address: String,
}

/// Why a token was refused. Deliberately vague to the outside: the server says only
/// "invalid link".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is not URL-safe base64")]
    Encoding,
    #[error("the token is not of a known layout")]
    Layout,
    #[error("the token's signature does not match")]
    Signature,
}

/// Signs and checks tokens, and makes the links a message carries.
pub struct Unsubscriber {
    key: Secret,
    /// `https://crier.example.net`, no trailing slash.
    base_url: String,
    mailto: Option<String>,
}

/// The unsubscribe links of one message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Links {
    /// `https://…/u/TOKEN`, for `List-Unsubscribe` and `{{ unsubscribe_url }}`.
    pub url: String,
    /// `mailto:…`, when `email.unsubscribe.mailto` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailto: Option<String>,
}

impl Links {
    /// The `List-Unsubscribe` value: the HTTPS link first (what RFC 8058 one-click
    /// posts to), then the mailto.
    pub fn header(&self) -> String {
        match &self.mailto {
            Some(mailto) => format!("<{}>, <{mailto}>", self.url),
            None => format!("<{}>", self.url),
        }
    }

    /// Both headers a one-click message carries, as every email provider writes them.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            ("List-Unsubscribe", self.header()),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()),
        ]
    }
}

impl std::fmt::Debug for Unsubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsubscriber")
            .field("base_url", &self.base_url)
            .field("mailto", &self.mailto)
            .finish_non_exhaustive()
    }
}

impl Unsubscriber {
    pub fn new(key: Secret, base_url: &str, mailto: Option<String>) -> Unsubscriber {
        Unsubscriber {
            key,
            base_url: base_url.trim_end_matches('/').to_string(),
            mailto,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac
    }

    /// The token of `ticket`.
    pub fn token(&self, ticket: &Ticket) -> String {
        let address = truncate(&ticket.address);
        let mut bytes = Vec::with_capacity(FIXED_LEN + address.len() + MAC_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&ticket.run.to_bytes());
        bytes.push(match ticket.kind {
            RecipientKind::Customer => b'c',
            RecipientKind::Lead => b'l',
        });
        bytes.extend_from_slice(&ticket.recipient.to_be_bytes());
        bytes.extend_from_slice(address.as_bytes());
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The ticket a token stands for, or why it is refused. The signature is checked
    /// before anything of the content is believed.
    pub fn verify(&self, token: &str) -> Result<Ticket, Refusal> {
        if token.len() > 2 * (FIXED_LEN + MAX_ADDRESS + MAC_LEN) {
            return Err(Refusal::Layout);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| Refusal::Encoding)?;
        if bytes.len() <= FIXED_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(Refusal::Layout);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Refusal::Signature)?;
        let run = RunId::from_bytes(&signed[1..17]).ok_or(Refusal::Layout)?;
        let kind = match signed[17] {
            b'c' => RecipientKind::Customer,
            b'l' => RecipientKind::Lead,
            _ => return Err(Refusal::Layout),
        };
        let recipient = u64::from_be_bytes(signed[18..26].try_into().map_err(|_| Refusal::Layout)?);
        let address = std::str::from_utf8(&signed[FIXED_LEN..])
            .map_err(|_| Refusal::Layout)?
            .to_string();
        Ok(Ticket {
            run,
            kind,
            recipient,
            address,
        })
    }

    /// The links of the message `ticket` names.
    pub fn links(&self, ticket: &Ticket) -> Links {
        Links {
            url: format!("{}/u/{}", self.base_url, self.token(ticket)),
            mailto: self.mailto.as_ref().map(|m| format!("mailto:{m}")),
        }
    }

    /// What a preview shows in place of a real link (a preview has no run).
    pub fn placeholder(&self) -> Links {
        Links {
            url: format!("{}/u/PREVIEW", self.base_url),
            mailto: self.mailto.as_ref().map(|m| format!("mailto:{m}")),
        }
    }
}

/// At most [`MAX_ADDRESS`] bytes, on a character boundary.
fn truncate(address: &str) -> &str {
    if address.len() <= MAX_ADDRESS {
        return address;
    }
    let mut end = MAX_ADDRESS;
    while !address.is_char_boundary(end) {
        end -= 1;
    }
    &address[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsubscriber(key: &str) -> Unsubscriber {
        Unsubscriber::new(
            Secret::new(key),
            "https://crier.example.net/",
            Some("unsubscribe@acme.example".into()),
        )
    }

    fn ticket() -> Ticket {
        Ticket {
            run: RunId(0x0197_1234_5678_9abc_def0_1234_5678_9abc),
            kind: RecipientKind::Customer,
            recipient: 1042,
            address: "Ann@Example.com".into(),
        }
    }

    #[test]
    fn a_token_round_trips_and_is_url_safe() {
        let u = unsubscriber("0123456789abcdef0123456789abcdef");
        let token = u.token(&ticket());
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(u.verify(&token), Ok(ticket()));
        let links = u.links(&ticket());
        assert_eq!(links.url, format!("https://crier.example.net/u/{token}"));
        assert_eq!(
            links.header(),
            format!("<https://crier.example.net/u/{token}>, <mailto:unsubscribe@acme.example>")
        );
    }

    #[test]
    fn refuses_forged_altered_and_malformed_tokens() {
        let u = unsubscriber("0123456789abcdef0123456789abcdef");
        let other = unsubscriber("another key entirely, 32 bytes!!");
        let token = other.token(&ticket());
        assert_eq!(u.verify(&token), Err(Refusal::Signature));

        // Another address under a valid-looking layout: the MAC no longer matches.
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(u.token(&ticket()))
            .unwrap();
        bytes[FIXED_LEN] = b'b';
        let altered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(u.verify(&altered), Err(Refusal::Signature));

        assert_eq!(u.verify("not base64!"), Err(Refusal::Encoding));
        assert_eq!(u.verify("AAAA"), Err(Refusal::Layout));
        assert_eq!(u.verify(""), Err(Refusal::Layout));
        assert_eq!(u.verify(&"A".repeat(4000)), Err(Refusal::Layout));
    }

    #[test]
    fn the_key_never_shows() {
        let u = unsubscriber("0123456789abcdef0123456789abcdef");
        assert!(!format!("{u:?}").contains("0123456789abcdef"));
    }
}
