//! What the HTTP providers share once a request is on the wire: reading the answer,
//! quoting a response body in an outcome, and describing a failed balance check.
//!
//! Kept apart from the per-provider files so each of those holds only its own API's
//! request shape and its one classification table.

use std::time::Duration;

use super::SendOutcome;
use crate::config::secret::REDACTED;

/// Most characters of a response body quoted in an outcome or an error.
const SNIPPET: usize = 200;

/// The parts of an HTTP answer a classification needs: status, `Retry-After`, body text.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// Reads the whole answer. An error here means the body was cut off after the status
/// arrived: the caller classifies it like any other transport failure.
pub(crate) async fn read(response: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let retry_after = super::retry_after(response.headers());
    let body = response.text().await?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// A body cut to a readable length for an outcome text (on a character boundary), with
/// runs of whitespace folded.
pub(crate) fn snippet(body: &str) -> String {
    let mut out = String::new();
    for (n, word) in body.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > SNIPPET {
            break;
        }
    }
    if out.len() > SNIPPET {
        let mut end = SNIPPET;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// `Retry` or, when the provider said how long, `RetryAfter`.
pub(crate) fn retry(retry_after: Option<Duration>, reason: String) -> SendOutcome {
    match retry_after {
        Some(after) => SendOutcome::RetryAfter { after, reason },
        None => SendOutcome::Retry { reason },
    }
}

/// A balance request that got no answer, described without its URL (some APIs take the
/// credentials in the query string).
pub(crate) fn request_failed(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = String::from(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    });
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A balance request the API answered with something other than success.
pub(crate) fn balance_refused(answer: &Answer) -> String {
    match answer.status {
        401 | 403 => format!("credentials refused (HTTP {})", answer.status),
        status => format!(
            "balance request failed (HTTP {status}): {}",
            snippet(&answer.body)
        ),
    }
}

/// `outcome` with every occurrence of `secrets` in its text replaced by `<redacted>`:
/// some gateways echo the request, credentials and all, in their error bodies.
pub(crate) fn scrub<S: AsRef<str>>(outcome: SendOutcome, secrets: &[S]) -> SendOutcome {
    match outcome {
        SendOutcome::Sent { .. } => outcome,
        SendOutcome::Retry { reason } => SendOutcome::Retry {
            reason: scrub_text(reason, secrets),
        },
        SendOutcome::RetryAfter { after, reason } => SendOutcome::RetryAfter {
            after,
            reason: scrub_text(reason, secrets),
        },
        SendOutcome::Unknown { reason } => SendOutcome::Unknown {
            reason: scrub_text(reason, secrets),
        },
        SendOutcome::Resubmit { after, reason } => SendOutcome::Resubmit {
            after,
            reason: scrub_text(reason, secrets),
        },
        SendOutcome::Rejected { code, text } => SendOutcome::Rejected {
            code,
            text: scrub_text(text, secrets),
        },
        SendOutcome::Halt { code, text } => SendOutcome::Halt {
            code,
            text: scrub_text(text, secrets),
        },
    }
}

/// `text` with each secret (of 4 characters or more: shorter ones would redact common
/// words) replaced by `<redacted>`.
pub(crate) fn scrub_text<S: AsRef<str>>(mut text: String, secrets: &[S]) -> String {
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.len() >= 4 && text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    text
}

/// Reads `value` as a number whether the API sends `12.5` or `"12.5"`.
pub(crate) fn number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Sends a provider request and classifies what comes back with the provider's own
/// `classify`, every secret scrubbed from the outcome; a request that got no answer is a
/// transport failure (retried only when the provider deduplicates, `idempotent`).
pub(crate) async fn exchange<S: AsRef<str>>(
    request: reqwest::RequestBuilder,
    idempotent: bool,
    secrets: &[S],
    classify: impl FnOnce(&Answer) -> SendOutcome,
) -> SendOutcome {
    let answer = match request.send().await {
        Ok(response) => read(response).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(a) => scrub(classify(&a), secrets),
        Err(e) => super::transport_outcome(&e, idempotent),
    }
}

/// A balance check: sends `request`, requires a 2xx, and reads the amount at the JSON
/// path `amount` (e.g. `["credits", "balance"]`, a number or a numeric string) and the
/// unit at `unit` (or `default_unit`). Every error names what was wrong, the secret scrubbed.
pub(crate) async fn json_balance(
    request: reqwest::RequestBuilder,
    amount: &[&str],
    unit: Option<&str>,
    default_unit: &str,
    secret: &str,
) -> Result<Option<super::Balance>, String> {
    let result = async {
        let response = request.send().await.map_err(request_failed)?;
        let answer = read(response).await.map_err(request_failed)?;
        if !(200..300).contains(&answer.status) {
            return Err(balance_refused(&answer));
        }
        let reply: serde_json::Value = serde_json::from_str(&answer.body)
            .map_err(|_| format!("unreadable balance: {}", snippet(&answer.body)))?;
        let value = amount.iter().fold(&reply, |v, key| &v[*key]);
        let amount = number(value)
            .ok_or_else(|| format!("no {} in: {}", amount.join("."), snippet(&answer.body)))?;
        let unit = unit
            .and_then(|u| reply[u].as_str())
            .unwrap_or(default_unit)
            .to_string();
        Ok(Some(super::Balance { amount, unit }))
    }
    .await;
    result.map_err(|e| scrub_text(e, &[secret]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_folds_whitespace_and_cuts_long_bodies() {
        assert_eq!(snippet("  a\n\n b  "), "a b");
        let long = "é".repeat(300);
        let cut = snippet(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= SNIPPET + '…'.len_utf8());
    }

    #[test]
    fn scrub_replaces_secrets_in_every_text() {
        let out = scrub(
            SendOutcome::Rejected {
                code: "http:400".into(),
                text: "bad request: password=hunter22&to=1".into(),
            },
            &["hunter22", "", "x"],
        );
        assert_eq!(
            out,
            SendOutcome::Rejected {
                code: "http:400".into(),
                text: "bad request: password=<redacted>&to=1".into()
            }
        );
    }

    #[test]
    fn numbers_come_as_strings_or_numbers() {
        assert_eq!(number(&serde_json::json!("12.50")), Some(12.5));
        assert_eq!(number(&serde_json::json!(3)), Some(3.0));
        assert_eq!(number(&serde_json::json!(null)), None);
    }
}
