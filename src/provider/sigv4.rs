//! AWS Signature Version 4 for the one request crier signs (SESv2 `SendEmail`), over
//! `ring`'s HMAC-SHA256 and SHA-256.
//! Reference: <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv_create-signed-request.html>.
//!
//! Kept small instead of taking `aws-sigv4`, whose tree (the smithy runtime crates, a
//! second `hmac`/`sha2`, `time`) is larger than everything crier signs; held to AWS's
//! published SigV4 test suite (`get-vanilla`, `get-vanilla-query-order-key-case`,
//! `post-vanilla`, `post-x-www-form-urlencoded`) in the tests below. Header-based
//! signing only (no presigned URLs, no chunked payloads, no SigV4a).

use ring::{digest, hmac};

/// The credentials a request is signed with.
pub(crate) struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// A temporary credential's session token, sent (and signed) as
    /// `X-Amz-Security-Token`.
    pub session_token: Option<&'a str>,
}

/// What to sign: the request as it will be sent.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// `Host` as sent: the host, and `:port` when it is not the scheme's default.
    pub host: &'a str,
    /// The path, not yet percent-encoded (`/v2/email/outbound-emails`).
    pub path: &'a str,
    /// Query parameters, not yet percent-encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides `host`, `x-amz-date` and `x-amz-security-token`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers to add to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    pub authorization: String,
    pub amz_date: String,
    pub session_token: Option<String>,
}

/// Signs `request` for `service` in `region` at `amz_date` (`YYYYMMDDTHHMMSSZ`, UTC).
pub(crate) fn sign(
    credentials: &Credentials<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> Signed {
    let date = &amz_date[..amz_date.len().min(8)];
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    headers.push(("host".into(), canonical_value(request.host)));
    headers.push(("x-amz-date".into(), amz_date.to_string()));
    if let Some(token) = credentials.session_token {
        headers.push(("x-amz-security-token".into(), canonical_value(token)));
    }
    headers.sort();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query)
    );
    for (k, v) in &headers {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed_headers}\n{}", sha256_hex(request.body)));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(credentials.secret_access_key, date, region, service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    Signed {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
        amz_date: amz_date.to_string(),
        session_token: credentials.session_token.map(str::to_string),
    }
}

/// `kSigning`: the secret keyed through date, region, service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// The `X-Amz-Date` of `at`.
pub(crate) fn amz_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Each path segment encoded (`/` kept); an empty path is `/`.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Parameters encoded, sorted by name then value, joined by `&`.
fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value trimmed, with runs of spaces folded to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials, region, service and time of AWS's SigV4 test suite.
    const SUITE: Credentials<'static> = Credentials {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };

    fn suite(
        method: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        sign(
            &SUITE,
            "us-east-1",
            "service",
            "20150830T123600Z",
            &Request {
                method,
                host: "example.amazonaws.com",
                path: "/",
                query,
                headers,
                body,
            },
        )
        .authorization
    }

    const CREDENTIAL: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    #[test]
    fn matches_the_aws_sigv4_test_suite() {
        assert_eq!(
            suite("GET", &[], &[], b""),
            format!(
                "{CREDENTIAL}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            ),
            "get-vanilla"
        );
        assert_eq!(
            suite(
                "GET",
                &[("Param2", "value2"), ("Param1", "value1")],
                &[],
                b""
            ),
            format!(
                "{CREDENTIAL}, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            ),
            "get-vanilla-query-order-key-case"
        );
        assert_eq!(
            suite("POST", &[], &[], b""),
            format!(
                "{CREDENTIAL}, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            ),
            "post-vanilla"
        );
        assert_eq!(
            suite(
                "POST",
                &[],
                &[("Content-Type", "application/x-www-form-urlencoded")],
                b"Param1=value1"
            ),
            format!(
                "{CREDENTIAL}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            ),
            "post-x-www-form-urlencoded"
        );
    }

    #[test]
    fn a_session_token_is_signed_and_returned() {
        let creds = Credentials {
            session_token: Some("token"),
            ..SUITE
        };
        let signed = sign(
            &creds,
            "eu-west-1",
            "ses",
            "20260101T000000Z",
            &Request {
                method: "POST",
                host: "email.eu-west-1.amazonaws.com",
                path: "/v2/email/outbound-emails",
                query: &[],
                headers: &[("content-type", "application/json")],
                body: b"{}",
            },
        );
        assert!(
            signed
                .authorization
                .contains("/20260101/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, ")
        );
        assert_eq!(signed.session_token.as_deref(), Some("token"));
    }

    #[test]
    fn encodes_paths_queries_and_values_canonically() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/a b/ሴ"), "/a%20b/%E1%88%B4");
        assert_eq!(canonical_query(&[("b", "2"), ("a", "x y")]), "a=x%20y&b=2");
        assert_eq!(canonical_value("  a   b  "), "a b");
        assert_eq!(
            amz_date(chrono::DateTime::from_timestamp(1_440_938_160, 0).unwrap()),
            "20150830T123600Z"
        );
    }
}
