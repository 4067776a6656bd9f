//! Message templates: minijinja (Twig-like, as Splynx's own templates), compiled once,
//! checked at `crier validate`, rendered per recipient.
//!
//! Variables: `customer` (the recipient; `recipient` is the same, so lead templates read
//! naturally), `job` (`name`, `description`), `run` (`id`, `trigger`), `now` (ISO 8601
//! in the job's zone) and `vars` (per-recipient values from scripts). Undefined values
//! are errors, never empty strings: a message with a hole in it fails on its own with a
//! reason, and the run goes on. A reference to a field no recipient can have
//! (`customer.nmae`) is caught before any run, with its line and column.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::format::{DelayedFormat, Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use minijinja::value::{Rest, Serde};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

use crate::diag;
use crate::recipients::Recipient;
use crate::script::Scripts;

/// The fields a template may read from `customer`, which `RecipientView` offers.
pub const RECIPIENT_FIELDS: [&str; 17] = [
    "kind",
    "id",
    "login",
    "status",
    "name",
    "email",
    "billing_email",
    "phone",
    "phone_raw",
    "category",
    "location",
    "billing_type",
    "partner",
    "tariffs",
    "timezone",
    "attrs",
    "services",
];

const TOP_LEVEL: [&str; 7] = [
    "customer",
    "recipient",
    "job",
    "run",
    "now",
    "vars",
    "unsubscribe_url",
];
const JOB_FIELDS: [&str; 2] = ["name", "description"];
const RUN_FIELDS: [&str; 2] = ["id", "trigger"];

/// A problem in a template, with its place in the template's own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Work budget of one render, so a runaway loop in a template cannot hang a run.
const FUEL: u64 = 200_000;

fn environment(scripts: Option<&Arc<Scripts>>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.add_filter("money", money);
    env.add_filter("date", date);
    if let Some(scripts) = scripts {
        for name in scripts.helper_names() {
            let scripts = scripts.clone();
            let helper = name.to_string();
            env.add_function(name.to_string(), move |args: Rest<Value>| {
                call_helper(&scripts, &helper, &args)
            });
        }
    }
    env
}

/// Calls a Rhai helper with template values and hands its result back to the template.
fn call_helper(scripts: &Scripts, name: &str, args: &[Value]) -> Result<Value, minijinja::Error> {
    let bad = |message: String| minijinja::Error::new(ErrorKind::InvalidOperation, message);
    let args = args
        .iter()
        .map(|v| rhai::serde::to_dynamic(v).map_err(|e| bad(format!("{name}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let out = scripts.helper(name, args).map_err(|e| bad(e.to_string()))?;
    Ok(Value::from(Serde(out)))
}

/// `{{ customer.attrs.balance | money }}` → `R 1 250.00`; `money("USD")` → `$ 1 250.00`.
fn money(value: Value, currency: Option<String>) -> Result<String, minijinja::Error> {
    let amount: f64 = match value.as_str() {
        Some(s) => s.trim().replace([' ', ','], "").parse().map_err(|_| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("money: `{s}` is not a number"),
            )
        })?,
        None => f64::try_from(value.clone()).map_err(|_| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("money: `{value}` is not a number"),
            )
        })?,
    };
    let symbol = match currency.as_deref().unwrap_or("ZAR") {
        "ZAR" => "R",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        other => other,
    };
    let cents = (amount.abs() * 100.0).round() as u64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    let sign = if amount < 0.0 { "-" } else { "" };
    Ok(format!("{sign}{symbol} {grouped}.{:02}", cents % 100))
}

/// `{{ now | date("%d %B %Y") }}`; accepts RFC 3339 times and `YYYY-MM-DD` dates.
fn date(value: String, format: Option<String>) -> Result<String, minijinja::Error> {
    let format = format.unwrap_or_else(|| "%Y-%m-%d".into());
    let bad = |message: String| minijinja::Error::new(ErrorKind::InvalidOperation, message);
    // chrono reports a bad specifier (`%Q`) only while printing, as a formatting error.
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.contains(&Item::Error) {
        return Err(bad(format!(
            "date: `{format}` is not a date format (e.g. `%d %B %Y`)"
        )));
    }
    let print = |shown: DelayedFormat<_>| {
        let mut out = String::new();
        write!(out, "{shown}")
            .map_err(|_| bad(format!("date: cannot print `{value}` as `{format}`")))?;
        Ok(out)
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&value) {
        return print(t.format_with_items(items.iter()));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&value, "%Y-%m-%dT%H:%M:%S") {
        return print(t.format_with_items(items.iter()));
    }
    match NaiveDate::parse_from_str(&value, "%Y-%m-%d") {
        Ok(d) => print(d.format_with_items(items.iter())),
        Err(_) => Err(bad(format!("date: `{value}` is not a date"))),
    }
}

/// Byte offset → 1-based line and column (in characters).
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn from_minijinja(source: &str, e: &minijinja::Error) -> TemplateError {
    let (line, col) = match (e.range(), e.line()) {
        (Some(r), _) => position(source, r.start),
        (None, Some(l)) => (l, 1),
        _ => (0, 0),
    };
    TemplateError {
        line,
        col,
        message: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    }
}

/// Checks a template: syntax, and that every variable it reads can exist.
pub fn check(source: &str) -> Result<(), Vec<TemplateError>> {
    check_with(source, &[])
}

/// [`check`] for a job whose scripts define the template functions `helpers`.
pub fn check_with(source: &str, helpers: &[String]) -> Result<(), Vec<TemplateError>> {
    let env = environment(None);
    let template = env
        .template_from_str(source)
        .map_err(|e| vec![from_minijinja(source, &e)])?;
    let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    names.sort();
    let mut errors = Vec::new();
    for name in names {
        let mut parts = name.split('.');
        let top = parts.next().unwrap_or_default();
        let field = parts.next();
        let problem = if !TOP_LEVEL.contains(&top) {
            if is_builtin(top) || helpers.iter().any(|h| h == top) {
                None
            } else {
                Some(unknown(top, None, &TOP_LEVEL))
            }
        } else {
            match (top, field) {
                ("customer" | "recipient", Some(f)) if !RECIPIENT_FIELDS.contains(&f) => {
                    Some(unknown(f, Some(top), &RECIPIENT_FIELDS))
                }
                ("job", Some(f)) if !JOB_FIELDS.contains(&f) => {
                    Some(unknown(f, Some(top), &JOB_FIELDS))
                }
                ("run", Some(f)) if !RUN_FIELDS.contains(&f) => {
                    Some(unknown(f, Some(top), &RUN_FIELDS))
                }
                _ => None,
            }
        };
        if let Some(message) = problem {
            // `customer.\n name` is the name `customer.name` too: failing the whole
            // name, place it at its first part, or at the start.
            let (line, col) = source
                .find(&name)
                .or_else(|| source.find(top))
                .map_or((1, 1), |at| position(source, at));
            errors.push(TemplateError { line, col, message });
        }
    }
    if errors.is_empty()
        && let Some(e) = unknown_names(source, helpers)
    {
        errors.push(e);
    }
    errors.sort_by_key(|e| (e.line, e.col));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether `source` reads the variable `name` (a template that does not parse reads
/// nothing; [`check`] reports it).
pub fn uses(source: &str, name: &str) -> bool {
    let env = environment(None);
    env.template_from_str(source)
        .is_ok_and(|t| t.undeclared_variables(false).iter().any(|v| v == name))
}

/// Filters, tests and functions are looked up while rendering, so a misspelt one
/// (`| uper`) parses: a trial render in which every value may be missing finds the first
/// one it reaches.
fn unknown_names(source: &str, helpers: &[String]) -> Option<TemplateError> {
    let mut env = environment(None);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    for helper in helpers {
        env.add_function(helper.clone(), |_: Rest<Value>| Value::UNDEFINED);
    }
    let template = env.template_from_str(source).ok()?;
    match template.render(minijinja::context! {}) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
            ) =>
        {
            let mut error = from_minijinja(source, &e);
            // minijinja: "unknown filter: filter uper is unknown".
            let detail = e.detail().unwrap_or_default();
            if let Some(name) = detail.split(' ').nth(1)
                && detail.ends_with(" is unknown")
            {
                error.message = format!("unknown {} `{name}`", detail.split(' ').next()?);
            }
            Some(error)
        }
        _ => None,
    }
}

fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "range" | "dict" | "namespace" | "loop" | "debug" | "lipsum" | "cycler" | "joiner"
    )
}

fn unknown(field: &str, of: Option<&str>, known: &[&str]) -> String {
    let hint = match diag::suggest(field, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("known: {}", known.join(", ")),
    };
    match of {
        Some(parent) => format!("`{parent}` has no field `{field}` ({hint})"),
        None => format!("unknown variable `{field}` ({hint})"),
    }
}

/// What a template sees besides the recipient.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Context {
    pub job: BTreeMap<String, String>,
    pub run: BTreeMap<String, String>,
    /// Now, RFC 3339 in the job's zone.
    pub now: String,
    pub vars: BTreeMap<String, serde_json::Value>,
    /// The one-click unsubscribe link of this message (email that offers one); absent
    /// otherwise, so a template that reads it fails rather than print nothing.
    pub unsubscribe_url: Option<String>,
}

/// A compiled template, rendered once per recipient.
pub struct Template {
    env: Environment<'static>,
}

impl Template {
    /// Compiles `source` (already [`check`]ed at validation; compiling again is cheap).
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        Template::compile_with(source, None)
    }

    /// [`Template::compile`] with the job's script helpers as template functions.
    pub fn compile_with(
        source: &str,
        scripts: Option<&Arc<Scripts>>,
    ) -> Result<Template, TemplateError> {
        let mut env = environment(scripts);
        env.add_template_owned("message", source.to_string())
            .map_err(|e| from_minijinja(source, &e))?;
        Ok(Template { env })
    }

    /// [`Template::compile`] for HTML: every value printed is HTML-escaped unless marked
    /// `|safe`.
    pub fn compile_html(
        source: &str,
        scripts: Option<&Arc<Scripts>>,
    ) -> Result<Template, TemplateError> {
        let mut env = environment(scripts);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template_owned("message", source.to_string())
            .map_err(|e| from_minijinja(source, &e))?;
        Ok(Template { env })
    }

    /// Renders for one recipient. An error names what was missing or wrong.
    pub fn render(&self, recipient: &Recipient, context: &Context) -> Result<String, String> {
        let template = self
            .env
            .get_template("message")
            .map_err(|e| e.to_string())?;
        let customer = Value::from_object(RecipientView(recipient.clone()));
        let ctx = minijinja::context! {
            customer => customer.clone(),
            recipient => customer,
            job => Value::from(Serde(&context.job)),
            run => Value::from(Serde(&context.run)),
            now => context.now.clone(),
            vars => Value::from(Serde(&context.vars)),
            unsubscribe_url => context.unsubscribe_url.clone().map(Value::from).unwrap_or(Value::UNDEFINED),
        };
        template
            .render(ctx)
            .map(|s| s.trim_end().to_string())
            .map_err(|e| match e.detail() {
                Some(d) => format!("template: {d}"),
                None => format!("template: {}", e.kind()),
            })
    }
}

/// The recipient as templates see it: every field that has a value, plus `services`.
/// Absent optional values are left out, so using one is an error, not a blank. A field
/// becomes a template value only when the template reads it: a message that prints the
/// name converts nothing else.
#[derive(Debug)]
struct RecipientView(Recipient);

impl RecipientView {
    fn field(&self, name: &str) -> Option<Value> {
        let r = &self.0;
        let text = |v: &Option<String>| v.as_deref().map(Value::from);
        match name {
            "attrs" => Some(Value::from(Serde(&r.attrs))),
            "billing_email" => text(&r.billing_email),
            "billing_type" => r.billing_type.map(|b| Value::from(Serde(b))),
            "category" => r.category.map(|c| Value::from(Serde(c))),
            "email" => text(&r.email),
            "id" => Some(Value::from(r.id)),
            "kind" => Some(Value::from(Serde(r.kind))),
            "location" => text(&r.location),
            "login" => text(&r.login),
            "name" => Some(Value::from(r.name.as_str())),
            "partner" => text(&r.partner),
            "phone" => text(&r.phone),
            "phone_raw" => text(&r.phone_raw),
            "services" => Some(Value::from(
                r.tariffs
                    .iter()
                    .filter_map(|t| t.service.map(|s| Value::from(s.to_string())))
                    .collect::<Vec<_>>(),
            )),
            "status" => Some(Value::from(Serde(r.status))),
            // Through JSON, so each plan's keys are in the same (sorted) order as ever.
            "tariffs" => Some(Value::from(Serde(
                serde_json::to_value(&r.tariffs).unwrap_or_default(),
            ))),
            "timezone" => text(&r.timezone),
            _ => None,
        }
    }
}

impl minijinja::value::Object for RecipientView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.field(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        // In name order, as the whole recipient serialized through JSON listed them.
        let mut present: Vec<&str> = RECIPIENT_FIELDS
            .into_iter()
            .filter(|f| self.field(f).is_some())
            .collect();
        present.sort_unstable();
        minijinja::value::Enumerator::Values(present.into_iter().map(Value::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::{RecipientKind, Status};

    fn ann() -> Recipient {
        Recipient {
            kind: RecipientKind::Customer,
            id: 7,
            login: Some("000007".into()),
            status: Status::Active,
            name: "Ann Dlamini".into(),
            email: None,
            billing_email: None,
            phone: Some("+27821234567".into()),
            phone_raw: None,
            category: None,
            location: Some("Cape Town".into()),
            billing_type: None,
            partner: None,
            tariffs: vec![],
            timezone: None,
            attrs: [("balance".to_string(), "-1250.5".to_string())].into(),
        }
    }

    #[test]
    fn renders_fields_attrs_and_filters() {
        let t = Template::compile(
            "Hi {{ customer.name | upper }} ({{ recipient.login }}), you owe {{ customer.attrs.balance | money }} as of {{ now | date('%d %b %Y') }}.",
        )
        .unwrap();
        let ctx = Context {
            now: "2026-12-01T09:00:00+02:00".into(),
            ..Context::default()
        };
        assert_eq!(
            t.render(&ann(), &ctx).unwrap(),
            "Hi ANN DLAMINI (000007), you owe -R 1 250.50 as of 01 Dec 2026."
        );
    }

    /// The whole recipient as one value, as templates saw it before [`RecipientView`]
    /// (serialized through JSON, nulls dropped): the view must render the same.
    fn whole(r: &Recipient) -> Value {
        let mut v = serde_json::to_value(r).unwrap();
        let map = v.as_object_mut().unwrap();
        map.retain(|_, value| !value.is_null());
        let services: Vec<String> = r
            .tariffs
            .iter()
            .filter_map(|t| t.service.map(|s| s.to_string()))
            .collect();
        map.insert("services".into(), services.into());
        Value::from(Serde(v))
    }

    #[test]
    fn the_recipient_view_renders_as_the_whole_recipient_would() {
        use crate::recipients::{BillingType, Category, Service, Tariff};
        let mut full = ann();
        full.email = Some("ann@example.net".into());
        full.category = Some(Category::Business);
        full.billing_type = Some(BillingType::PrepaidDaily);
        full.partner = Some("Main".into());
        full.tariffs = vec![
            Tariff {
                service: Some(Service::Internet),
                plan: "Fibre 50".into(),
            },
            Tariff {
                service: None,
                plan: "Static IP".into(),
            },
        ];
        let sources = [
            "{{ customer }}",
            "{{ customer | tojson }}",
            "{% for k, v in customer | items %}{{ k }}={{ v }};{% endfor %}",
            "{{ customer | length }} {{ customer.id + 1 }} {{ customer.kind }} {{ customer.status == 'active' }}",
            "{{ customer.services | join(',') }} {{ customer.tariffs[0].plan }} {{ customer.tariffs[1].service }}",
            "{{ customer['location'] }} {{ customer.attrs | tojson }} {{ 'email' in customer }}",
            "{{ customer.category }} {{ customer.billing_type }} {{ recipient.partner | upper }}",
            "{{ customer.email }}",
            "{{ customer.nickname }}",
        ];
        for r in [ann(), full] {
            for source in sources {
                let t = Template::compile(source).unwrap();
                let mut env = environment(None);
                env.add_template("whole", source).unwrap();
                let reference = env
                    .get_template("whole")
                    .unwrap()
                    .render(minijinja::context! {
                        customer => whole(&r),
                        recipient => whole(&r),
                        job => Value::from(Serde(BTreeMap::<String, String>::new())),
                        run => Value::from(Serde(BTreeMap::<String, String>::new())),
                        now => "",
                        vars => Value::from(Serde(BTreeMap::<String, String>::new())),
                    })
                    .map(|s| s.trim_end().to_string())
                    .map_err(|e| e.kind());
                let rendered = t.render(&r, &Context::default()).map_err(|_| ());
                match reference {
                    Ok(expected) => assert_eq!(rendered, Ok(expected), "{source} for {}", r.id),
                    Err(_) => assert!(rendered.is_err(), "{source} should fail, as before"),
                }
            }
        }
    }

    #[test]
    fn a_missing_value_fails_that_message() {
        let t = Template::compile("Mail {{ customer.email }}").unwrap();
        let e = t.render(&ann(), &Context::default()).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        let t = Template::compile("{{ customer.attrs.nope }}").unwrap();
        assert!(t.render(&ann(), &Context::default()).is_err());
    }

    #[test]
    fn check_finds_unknown_fields_with_their_place() {
        let errors = check("Hello\n  {{ customer.nmae }} and {{ custmer.name }}").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0],
            TemplateError {
                line: 2,
                col: 6,
                message: "`customer` has no field `nmae` (did you mean `name`?)".into()
            }
        );
        assert!(
            errors[1]
                .message
                .contains("unknown variable `custmer` (did you mean `customer`?)")
        );
        assert!(check("{{ customer.attrs.anything }} {{ vars.days }} {% for t in customer.tariffs %}{{ t.plan }}{% endfor %}").is_ok());
    }

    #[test]
    fn check_reports_syntax_errors_with_line_and_column() {
        let errors = check("line one\n{{ customer.name ").unwrap_err();
        assert_eq!(errors[0].line, 2);
        assert!(
            errors[0].message.contains("syntax error"),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = Template::compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(t.render(&ann(), &Context::default()).is_err());
    }
}
