//! Amazon SES v2 `SendEmail` mock: `POST /v2/email/outbound-emails`, the SigV4 signature
//! recomputed and checked as AWS does (`UnrecognizedClientException` for an unknown key,
//! `InvalidSignatureException` for a wrong or expired one), the JSON body validated
//! (`Destination.ToAddresses`, a verified `FromEmailAddress`, `Content.Simple` or
//! `Content.Raw`), `200 {"MessageId"}`, and errors named by `x-amzn-ErrorType`. Also a
//! small SNS stand-in that serves a signing certificate and answers
//! `ConfirmSubscription`.

use base64::Engine as _;
use ring::{digest, hmac};
use serde_json::json;

use super::{Committed, Kind, Mock, Request, Response, State};

/// The access key id the mock knows (its secret is the mock's secret).
pub const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// An SES mock for secret access key `secret` and the one verified identity `from`.
pub async fn ses(secret: &str, from: &str) -> Mock {
    super::start(Kind::Ses, from, secret, "", handle).await
}

/// SES's error: status, `x-amzn-ErrorType` and `{"message"}`.
pub fn error(status: u16, kind: &str, message: &str) -> Response {
    Response::json(status, json!({ "message": message })).with_header(
        "x-amzn-ErrorType",
        &format!("{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"),
    )
}

fn handle(state: &State, req: &Request) -> Response {
    if let Err(r) = verify_sigv4(state, req) {
        return r;
    }
    // GetAccount; a balance of 0 or less stands for sending paused.
    if (req.method.as_str(), req.path.as_str()) == ("GET", "/v2/email/account") {
        return Response::json(
            200,
            json!({"ProductionAccessEnabled": true, "SendingEnabled": state.balance() > 0.0,
                   "EnforcementStatus": "HEALTHY", "DedicatedIpAutoWarmupEnabled": false,
                   "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0,
                                 "SentLast24Hours": state.accepted_count() as f64}}),
        );
    }
    if req.method != "POST" || req.path != "/v2/email/outbound-emails" {
        return error(404, "NotFoundException", "Not Found");
    }
    let Some(body) = req.json() else {
        return error(
            400,
            "BadRequestException",
            "Could not parse the request body.",
        );
    };
    let from = body["FromEmailAddress"].as_str().unwrap_or_default();
    let address = from
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(from);
    if address != state.user {
        return error(
            400,
            "MessageRejected",
            &format!(
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: {from}"
            ),
        );
    }
    let Some(to) = body["Destination"]["ToAddresses"][0].as_str() else {
        return error(400, "BadRequestException", "Missing required Destination.");
    };
    let (user, host) = to.split_once('@').unwrap_or_default();
    if user.is_empty() || !host.contains('.') || to.contains(char::is_whitespace) {
        return error(400, "BadRequestException", "Missing final '@domain'");
    }
    let content = &body["Content"];
    let text = if let Some(simple) = content.get("Simple") {
        if simple["Subject"]["Data"].as_str().is_none() {
            return error(400, "BadRequestException", "Missing required Subject.");
        }
        match simple["Body"]["Text"]["Data"]
            .as_str()
            .or(simple["Body"]["Html"]["Data"].as_str())
        {
            Some(t) => t.to_string(),
            None => return error(400, "BadRequestException", "Missing required Body."),
        }
    } else if let Some(raw) = content["Raw"]["Data"].as_str() {
        match base64::engine::general_purpose::STANDARD.decode(raw) {
            Ok(mime) => String::from_utf8_lossy(&mime).into_owned(),
            Err(_) => return error(400, "BadRequestException", "Raw.Data is not base64."),
        }
    } else {
        return error(400, "BadRequestException", "Missing required Content.");
    };
    let tag = body["EmailTags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["Name"] == "crier_message_id")
        .and_then(|t| t["Value"].as_str());
    let c = state.commit(Committed {
        seq: 0,
        to: to.into(),
        body: text.as_str().into(),
        from: Some(from.into()),
        tag: tag.map(Into::into),
        dedup: None,
        unicode: !text.is_ascii(),
    });
    Response::json(200, json!({"MessageId": state.provider_id(c.seq)}))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Recomputes the request's SigV4 signature from what arrived, as AWS does.
fn verify_sigv4(state: &State, req: &Request) -> Result<(), Response> {
    let denied = |kind: &str, message: &str| Err(error(403, kind, message));
    let Some(auth) = req.header("authorization") else {
        return denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return denied("IncompleteSignatureException", "Unsupported algorithm.");
    };
    let part = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    let (credential, signed_headers, signature) = (
        part("Credential="),
        part("SignedHeaders="),
        part("Signature="),
    );
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != ACCESS_KEY_ID {
        return denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    let (date, region, service) = (scope[1], scope[2], scope[3]);
    let amz_date = req.header("x-amz-date").unwrap_or_default();
    let when = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc().timestamp());
    if service != "ses"
        || !amz_date.starts_with(date)
        || when.is_err()
        || (chrono::Utc::now().timestamp() - when.unwrap_or(0)).abs() > 15 * 60
    {
        return denied(
            "InvalidSignatureException",
            "Signature expired or the credential scope is wrong.",
        );
    }
    let mut canonical = format!("{}\n{}\n{}\n", req.method, req.path, req.query);
    for name in signed_headers.split(';') {
        let value = req.header(name).unwrap_or_default();
        canonical.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let body_hash = hex(digest::digest(&digest::SHA256, &req.body).as_ref());
    canonical.push_str(&format!("\n{signed_headers}\n{body_hash}"));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k = step(format!("AWS4{}", state.secret).as_bytes(), date);
    let k = step(k.as_ref(), region);
    let k = step(k.as_ref(), service);
    let k = step(k.as_ref(), "aws4_request");
    let expected = hex(step(k.as_ref(), &string_to_sign).as_ref());
    if !signed_headers.split(';').any(|h| h == "host") || expected != signature {
        return denied(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    Ok(())
}

/// An SNS stand-in on loopback: `GET /SimpleNotificationService-test.pem` serves
/// `cert_pem`; `GET /?Action=ConfirmSubscription&TopicArn=…&Token=…` answers as SNS does
/// and records the confirmation (as an accepted message whose `to` is the token).
pub async fn sns(cert_pem: &str) -> Mock {
    super::start(Kind::Gateway, cert_pem, "", "", sns_handle).await
}

fn sns_handle(state: &State, req: &Request) -> Response {
    if req.path == "/SimpleNotificationService-test.pem" {
        return Response::json(200, &state.user);
    }
    if req.query_param("Action").as_deref() == Some("ConfirmSubscription") {
        let token = req.query_param("Token").unwrap_or_default();
        state.commit(Committed {
            seq: 0,
            to: token.as_str().into(),
            body: req.query_param("TopicArn").unwrap_or_default().into(),
            from: None,
            tag: None,
            dedup: None,
            unicode: false,
        });
        return Response::json(
            200,
            "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:eu-west-1:123456789012:crier-ses-events:1</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
        );
    }
    Response::json(404, "<Error><Code>NotFound</Code></Error>")
}
