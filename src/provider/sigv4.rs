//! AWS Signature Version 4 for the one request crier signs (SESv2 `SendEmail`): the
//! `aws-sigv4` crate (AWS's own signer, from smithy-rs) behind the small interface the
//! SES provider needs, held to AWS's published SigV4 test suite (`get-vanilla`,
//! `get-vanilla-query-order-key-case`, `post-vanilla`, `post-x-www-form-urlencoded`) in
//! the tests below. Header-based signing only (no presigned URLs, no chunked payloads).
//! Reference: <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv_create-signed-request.html>.

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

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
/// An error (a date or a request the signer cannot read) names what it could not read,
/// never a credential.
pub(crate) fn sign(
    credentials: &Credentials<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
    request: &Request<'_>,
) -> Result<Signed, String> {
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| format!("`{amz_date}` is not an X-Amz-Date"))?
        .and_utc();
    let identity: Identity = aws_credential_types::Credentials::new(
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.session_token.map(str::to_string),
        None,
        "crier.yaml",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time.into())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let mut uri = format!("https://{}{}", request.host, encode_path(request.path));
    if !request.query.is_empty() {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(request.query)
            .finish();
        uri.push('?');
        uri.push_str(&query);
    }
    let signable = SignableRequest::new(
        request.method,
        uri,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| format!("SigV4 cannot read the request: {e}"))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| format!("SigV4 signing failed: {e}"))?
        .into_parts();
    let header = |name: &str| {
        instructions
            .headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    };
    Ok(Signed {
        authorization: header("authorization").ok_or("SigV4 gave no Authorization header")?,
        amz_date: header("x-amz-date").unwrap_or_else(|| amz_date.to_string()),
        session_token: header("x-amz-security-token"),
    })
}

/// The `X-Amz-Date` of `at`.
pub(crate) fn amz_date(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Each path segment percent-encoded (`/` kept) for the URI the signer reads; an empty
/// path is `/`.
fn encode_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|segment| {
            form_urlencoded::byte_serialize(segment.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
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
        .unwrap()
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
        )
        .unwrap();
        assert!(
            signed
                .authorization
                .contains("/20260101/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, ")
        );
        assert_eq!(signed.session_token.as_deref(), Some("token"));
    }

    #[test]
    fn encodes_paths_and_dates() {
        assert_eq!(encode_path(""), "/");
        assert_eq!(encode_path("/a b/ሴ"), "/a%20b/%E1%88%B4");
        assert_eq!(
            amz_date(chrono::DateTime::from_timestamp(1_440_938_160, 0).unwrap()),
            "20150830T123600Z"
        );
        let bad = sign(
            &SUITE,
            "us-east-1",
            "service",
            "yesterday",
            &Request {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                query: &[],
                headers: &[],
                body: b"",
            },
        );
        assert_eq!(bad.unwrap_err(), "`yesterday` is not an X-Amz-Date");
    }
}
