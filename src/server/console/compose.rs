//! *New mass sending* (`/compose`): the seed's create window. The form is turned into a
//! job file's YAML, and that text is validated by `job::parse`, the parser behind
//! `crier validate`, so the console has no rules of its own about what a send may be: a
//! bad filter is the parser's error, placed on its field. Preview, Send as test and Send
//! then go through the same engine calls as a job file's page, and *Download as job
//! file* hands over exactly the text that was validated.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::{Extension, Form};
use serde::{Deserialize, Serialize};

use super::jobs::{PreviewPage, preview_job, test_job};
use super::{Console, Ctx, PageResult, fragment, page};
use crate::history::Trigger;
use crate::job::{self, Job};
use crate::server::ApiError;
use crate::server::api::{blocking, query_of, start_run};

/// The create window's fields, from the query (GET) or the form (POST); every one
/// optional, as the window is.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Compose {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    who: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    billing_type: String,
    #[serde(default)]
    partner: String,
    #[serde(default)]
    tariff: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    send_to: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    provider: String,
    /// *Save as new template*: its name.
    #[serde(default, skip_serializing)]
    template_name: String,
    /// Send as test: the address, and whose data.
    #[serde(default, skip_serializing)]
    to: String,
    #[serde(default, skip_serializing)]
    recipient: String,
    /// The CSRF token a POST carries (checked before the handler runs).
    #[serde(default, rename = "csrf", skip_serializing)]
    _csrf: String,
}

/// Reads one field of the window.
type Field = fn(&Compose) -> &str;

/// The `where:` fields of the window, with the YAML key each one writes.
const WHERE: [(&str, Field); 11] = [
    ("status", |c| &c.status),
    ("login", |c| &c.login),
    ("name", |c| &c.who),
    ("email", |c| &c.email),
    ("phone", |c| &c.phone),
    ("category", |c| &c.category),
    ("location", |c| &c.location),
    ("billing_type", |c| &c.billing_type),
    ("partner", |c| &c.partner),
    ("tariff", |c| &c.tariff),
    ("service", |c| &c.service),
];

/// A field's values: comma-separated, trimmed.
fn values(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

impl Compose {
    /// The job's name: what was typed, else `adhoc`.
    fn job_name(&self) -> String {
        let n = self.name.trim();
        if n.is_empty() {
            "adhoc".into()
        } else {
            n.to_string()
        }
    }

    /// The job file this window describes.
    pub(super) fn yaml(&self) -> String {
        use serde_yaml::{Mapping, Value};
        let mut doc = Mapping::new();
        let s = |v: &str| Value::String(v.to_string());
        doc.insert(s("name"), s(&self.job_name()));
        let mut recipients = Mapping::new();
        if !self.kind.trim().is_empty() {
            recipients.insert(s("kind"), s(self.kind.trim()));
        }
        let mut filter = Mapping::new();
        for (key, get) in WHERE {
            let vs = values(get(self));
            match vs.len() {
                0 => {}
                1 => {
                    filter.insert(s(key), s(&vs[0]));
                }
                _ => {
                    filter.insert(s(key), Value::Sequence(vs.iter().map(|v| s(v)).collect()));
                }
            }
        }
        if !filter.is_empty() {
            recipients.insert(s("where"), Value::Mapping(filter));
        }
        doc.insert(s("recipients"), Value::Mapping(recipients));
        let send_to = self.send_to.trim();
        doc.insert(
            s("send_to"),
            s(if send_to.is_empty() { "sms" } else { send_to }),
        );
        if !self.template.trim().is_empty() {
            doc.insert(s("template"), s(self.template.trim()));
        } else {
            // As typed, with the browser's CR LF line ends made plain.
            doc.insert(s("message"), s(&self.message.replace("\r\n", "\n")));
        }
        if !self.subject.trim().is_empty() {
            doc.insert(s("subject"), s(self.subject.trim()));
        }
        if !self.provider.trim().is_empty() {
            doc.insert(s("provider"), s(self.provider.trim()));
        }
        let body = serde_yaml::to_string(&Value::Mapping(doc)).unwrap_or_default();
        format!("# Made in crier's console (New mass sending).\n{body}")
    }
}

/// The window's YAML validated as `jobs/<name>.yaml` would be, or `crier validate`'s lines.
async fn job_of(c: &Console, form: &Compose) -> Result<Job, Vec<String>> {
    let text = form.yaml();
    let path = c.app.jobs_dir.join(format!("{}.yaml", form.job_name()));
    let app = c.app.clone();
    blocking(move || {
        Ok(
            job::parse(&path, &text, &app.config, &crate::config::env::from_process)
                .map_err(|d| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
        )
    })
    .await
    .map_err(|e| vec![e.message])?
}

#[derive(Serialize)]
struct ComposePage<'a> {
    f: &'a Compose,
    yaml: String,
    errors: Vec<String>,
    query: String,
    send_tos: [&'static str; 4],
    kinds: [&'static str; 2],
}

fn query_string(f: &Compose) -> String {
    serde_urlencoded_like(f)
}

/// The window's fields as a query string (for the download link and the Back link).
fn serde_urlencoded_like(f: &Compose) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let pairs: [(&str, &str); 18] = [
        ("name", &f.name),
        ("kind", &f.kind),
        ("status", &f.status),
        ("login", &f.login),
        ("who", &f.who),
        ("email", &f.email),
        ("phone", &f.phone),
        ("category", &f.category),
        ("location", &f.location),
        ("billing_type", &f.billing_type),
        ("partner", &f.partner),
        ("tariff", &f.tariff),
        ("service", &f.service),
        ("send_to", &f.send_to),
        ("message", &f.message),
        ("template", &f.template),
        ("subject", &f.subject),
        ("provider", &f.provider),
    ];
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// The create window (its fields from the URL, so a draft can be bookmarked).
pub(super) async fn show(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    q: Result<Query<Compose>, QueryRejection>,
) -> PageResult {
    let f = query_of(q)?;
    let started = !f.message.is_empty() || !f.template.is_empty();
    let errors = if started {
        job_of(&c, &f).await.err().unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(page(
        &ctx,
        "compose.html",
        &ComposePage {
            yaml: f.yaml(),
            errors,
            query: query_string(&f),
            f: &f,
            send_tos: ["sms", "email", "portal", "portal+email"],
            kinds: ["customer", "lead"],
        },
    ))
}

#[derive(Serialize)]
struct Invalid {
    errors: Vec<String>,
}

/// Preview of the window's send (a fragment), or its validation errors.
pub(super) async fn preview(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    q: Result<Query<Compose>, QueryRejection>,
) -> PageResult {
    let f = query_of(q)?;
    match job_of(&c, &f).await {
        Err(errors) => Ok(fragment(&ctx, "invalid.html", &Invalid { errors })),
        Ok(job) => {
            let recipient = super::jobs::recipient_id(Some(&f.recipient))?;
            let p: PreviewPage = preview_job(&c, job, recipient, 10).await?;
            Ok(fragment(&ctx, "preview.html", &p))
        }
    }
}

/// *Send as test* of the window's send.
pub(super) async fn test(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<Compose>,
) -> PageResult {
    match job_of(&c, &f).await {
        Err(errors) => Ok(fragment(&ctx, "invalid.html", &Invalid { errors })),
        Ok(job) => test_job(&c, &ctx, job, &f.to, Some(&f.recipient)).await,
    }
}

#[derive(Serialize)]
struct ConfirmPage<'a> {
    #[serde(flatten)]
    preview: PreviewPage,
    f: &'a Compose,
    compose: bool,
    query: String,
}

/// The confirmation: the count and the first recipients, with the window's fields to
/// send on.
pub(super) async fn confirm(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<Compose>,
) -> PageResult {
    let job = match job_of(&c, &f).await {
        Err(errors) => return Ok(fragment(&ctx, "invalid.html", &Invalid { errors })),
        Ok(job) => job,
    };
    let preview = preview_job(&c, job, None, 20).await?;
    Ok(page(
        &ctx,
        "confirm.html",
        &ConfirmPage {
            preview,
            query: query_string(&f),
            f: &f,
            compose: true,
        },
    ))
}

/// *Send*, confirmed: the run starts, and its page opens.
pub(super) async fn send(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<Compose>,
) -> PageResult {
    let job = job_of(&c, &f)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.join("\n")))?;
    let name = job.name.clone();
    let id = start_run(&c.app, job, Trigger::Api).await?;
    tracing::info!(job = %name, run = %id, "Composed run started through the console.");
    Ok(super::see_other(&ctx, &format!("/runs/{id}")))
}

#[derive(Serialize)]
struct Saved {
    name: String,
    channel: &'static str,
}

/// *Save as new template*: the message, checked as `crier templates save` checks it,
/// stored under a name not yet taken, for the window's first channel.
pub(super) async fn save_template(
    State(c): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<Compose>,
) -> PageResult {
    let name = f.template_name.trim().to_string();
    if !crate::render::stored::valid_name(&name) {
        let errors = vec![format!(
            "template name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )];
        return Ok(fragment(&ctx, "invalid.html", &Invalid { errors }));
    }
    let body = f.message.replace("\r\n", "\n");
    if let Err(errors) = crate::render::template::check(&body) {
        let errors = errors
            .iter()
            .map(|e| format!("message:{}: template: {}", e.line, e.message))
            .collect();
        return Ok(fragment(&ctx, "invalid.html", &Invalid { errors }));
    }
    let send_to: job::SendTo = serde_yaml::from_str(if f.send_to.trim().is_empty() {
        "sms"
    } else {
        f.send_to.trim()
    })
    .map_err(|_| ApiError::bad_request(format!("unknown send to `{}`", f.send_to)))?;
    let channel = send_to.channels()[0];
    let app = c.app.clone();
    let taken = {
        let name = name.clone();
        blocking(move || {
            let templates = crate::render::stored::Templates::new(app.store.directory());
            if templates.get(&name).map_err(ApiError::internal)?.is_some() {
                return Ok(true);
            }
            templates
                .save(&name, channel, &body)
                .map_err(ApiError::internal)?;
            app.store.flush().map_err(ApiError::internal)?;
            Ok(false)
        })
        .await?
    };
    if taken {
        let errors = vec![format!(
            "a stored template `{name}` exists already; choose a new name (`crier templates save` replaces one)"
        )];
        return Ok(fragment(&ctx, "invalid.html", &Invalid { errors }));
    }
    tracing::info!(template = %name, "Template saved through the console.");
    Ok(fragment(
        &ctx,
        "saved.html",
        &Saved {
            name,
            channel: channel.as_str(),
        },
    ))
}

/// *Download as job file*: the YAML, as validated.
pub(super) async fn download(q: Result<Query<Compose>, QueryRejection>) -> PageResult {
    let f = query_of(q)?;
    let name: String = f
        .job_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}.yaml\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        f.yaml(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_writes_a_job_file() {
        let f = Compose {
            name: "outage".into(),
            location: "Cape Town, Durban".into(),
            status: "active".into(),
            send_to: "sms".into(),
            message: "Hi {{ customer.name }}\r\nSorry.".into(),
            ..Compose::default()
        };
        let yaml = f.yaml();
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["name"], "outage");
        assert_eq!(v["recipients"]["where"]["status"], "active");
        assert_eq!(v["recipients"]["where"]["location"][1], "Durban");
        assert_eq!(v["message"], "Hi {{ customer.name }}\nSorry.");
        let config = crate::config::Config::defaults();
        job::parse(
            std::path::Path::new("jobs/outage.yaml"),
            &yaml,
            &config,
            &|_| None,
        )
        .unwrap();
    }
}
