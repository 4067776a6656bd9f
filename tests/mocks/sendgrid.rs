//! SendGrid v3 Mail Send mock: `POST /v3/mail/send` with `Authorization: Bearer <key>`,
//! JSON body validated as the Mail Send reference describes (personalizations with a
//! `to`, a verified `from`, a subject, content, base64 attachments, string custom
//! arguments), `202 Accepted` with an empty body and `X-Message-Id`, and SendGrid's
//! `{"errors":[{"message","field","help"}]}` bodies; `GET /v3/scopes` for the credentials check.

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Committed, Kind, Mock, Request, Response, State};

/// A SendGrid mock accepting API key `key` and the one verified sender `from`.
pub async fn sendgrid(key: &str, from: &str) -> Mock {
    super::start(Kind::Sendgrid, from, key, "", handle).await
}

/// SendGrid's error body.
pub fn error(status: u16, field: Option<&str>, message: &str) -> Response {
    Response::json(
        status,
        json!({"errors": [{"message": message, "field": field, "help": null}]}),
    )
}

fn handle(state: &State, req: &Request) -> Response {
    let bearer = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    if bearer != Some(state.secret.as_str()) {
        return error(
            401,
            None,
            "The provided authorization grant is invalid, expired, or revoked",
        );
    }
    // The key's permissions; a balance of 0 or less stands for a key without `mail.send`.
    if (req.method.as_str(), req.path.as_str()) == ("GET", "/v3/scopes") {
        let mut scopes = vec!["alerts.read", "user.profile.read"];
        if state.balance() > 0.0 {
            scopes.push("mail.send");
        }
        return Response::json(200, json!({ "scopes": scopes }));
    }
    if req.path != "/v3/mail/send" {
        return error(404, None, "resource not found");
    }
    if req.method != "POST" {
        return error(405, None, "method not allowed");
    }
    if !req.content_type().starts_with("application/json") {
        return error(415, None, "Content-Type should be application/json.");
    }
    let Some(body) = req.json() else {
        return error(400, None, "Bad Request");
    };
    match check(state, &body) {
        Ok(c) => {
            let c = state.commit(c);
            Response::json(202, "").with_header("x-message-id", &state.provider_id(c.seq))
        }
        Err(response) => response,
    }
}

fn is_address(s: &str) -> bool {
    let (user, domain) = s.split_once('@').unwrap_or_default();
    !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace)
}

fn check(state: &State, body: &Value) -> Result<Committed, Response> {
    let personalizations = body["personalizations"]
        .as_array()
        .filter(|p| !p.is_empty());
    let Some(personalizations) = personalizations else {
        return Err(error(
            400,
            Some("personalizations"),
            "The personalizations field is required and must have at least one personalization.",
        ));
    };
    let first = &personalizations[0];
    let Some(to) = first["to"][0]["email"].as_str() else {
        return Err(error(
            400,
            Some("personalizations.0.to"),
            "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
        ));
    };
    if !is_address(to) {
        return Err(error(
            400,
            Some("personalizations.0.to.0.email"),
            "Does not contain a valid address.",
        ));
    }
    if let Some(args) = first["custom_args"].as_object()
        && args.values().any(|v| !v.is_string())
    {
        return Err(error(
            400,
            Some("personalizations.0.custom_args"),
            "Invalid type. Expected: string, given: integer.",
        ));
    }
    let Some(from) = body["from"]["email"].as_str() else {
        return Err(error(
            400,
            Some("from.email"),
            "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
        ));
    };
    if from != state.user {
        return Err(error(
            403,
            Some("from"),
            "The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved.",
        ));
    }
    let subject = body["subject"]
        .as_str()
        .or(first["subject"].as_str())
        .unwrap_or("");
    if subject.is_empty() {
        return Err(error(
            400,
            Some("subject"),
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
        ));
    }
    let content = body["content"].as_array().filter(|c| !c.is_empty());
    let Some(text) = content.and_then(|c| c[0]["value"].as_str()) else {
        return Err(error(
            400,
            Some("content"),
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.",
        ));
    };
    for (i, a) in body["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let decoded = a["content"]
            .as_str()
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
        if decoded.is_none() {
            return Err(error(
                400,
                Some(&format!("attachments.{i}.content")),
                "The attachment content must be base64 encoded.",
            ));
        }
        if a["filename"].as_str().is_none_or(str::is_empty) {
            return Err(error(
                400,
                Some(&format!("attachments.{i}.filename")),
                "The attachment filename parameter is required.",
            ));
        }
    }
    Ok(Committed {
        seq: 0,
        to: to.into(),
        body: text.into(),
        from: Some(from.into()),
        tag: first["custom_args"]["crier_message_id"]
            .as_str()
            .map(Into::into),
        dedup: None,
        unicode: !text.is_ascii(),
    })
}
