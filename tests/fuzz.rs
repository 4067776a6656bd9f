//! Property tests of bad input: crier's parsers fed random and half-right input never
//! panic and keep their contract (`crier::fuzz` states it: positioned diagnostics, clean
//! one-line reasons), SMS part counting agrees with an independent reference, and the
//! crashes found so far stay fixed (the `regression_` tests).
//!
//! Each property runs a modest number of cases so the suite stays fast; for a long run
//! set `PROPTEST_CASES`, e.g. `PROPTEST_CASES=20000 cargo test --release --test fuzz`.
//! The same parsers have cargo-fuzz targets in `tests/fuzz/` (see the README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crier::fuzz::{self, Webhook};
use crier::recipients::{BillingType, Category, Recipient, RecipientKind, Service, Status, Tariff};
use crier::render::sms::{self, Encoding};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_yaml::Value as Yaml;

/// `cases` per property, or `PROPTEST_CASES` when set.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Job and config files

/// A project for fuzzed job files to point into: good and broken templates and scripts,
/// a CSV source, and a script outside `scripts/`.
fn project() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("jobs/templates/a.sms.j2", "Hi {{ customer.name }}, R{{ customer.attrs.balance }} is due."),
            ("jobs/templates/a.email.j2", "Dear {{ customer.name }},\n\nyour invoice is due.\n"),
            ("jobs/templates/a.email.html.j2", "<p>Dear {{ customer.name }}</p>"),
            ("jobs/templates/broken.j2", "Hi {{ customer.name }\n{% if %}"),
            ("jobs/templates/typo.j2", "line one\nHi {{ customer.nmae }}"),
            ("jobs/people.csv", "id,name,phone\n1,Ann,0821234567\n"),
            (
                "scripts/ok.rhai",
                "fn filter(customer) { true }\nfn vars(customer) { #{ x: 1 } }\nfn route(message, customer) { \"outbox\" }\nfn shout(s) { s.to_upper() }\n",
            ),
            ("scripts/broken.rhai", "fn filter(customer) {\n  let x = ;\n}\n"),
            ("scripts/route-nowhere.rhai", "fn route(message, customer) { \"nowhere\" }\n"),
            ("scripts/sneaky.rhai", "import \"../secret\" as s;\nfn filter(c) { s::x() }\n"),
            ("secret.rhai", "fn x() { true }\n"),
        ];
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    })
    .path()
}

fn job_path() -> PathBuf {
    project().join("jobs/fuzz.yaml")
}

/// Values a job field might be given: right, nearly right and wrong, as YAML text.
const JOB_FIELDS: &[(&str, &[&str])] = &[
    ("name", &["reminder", "bad name!", "\"\"", "a.b-c_d", "[x]"]),
    (
        "description",
        &["Monthly", "\"Zoë’s ✓ \\t tab\"", "{}", "~"],
    ),
    ("enabled", &["true", "false", "yes", "3"]),
    (
        "schedule.cron",
        &[
            "\"0 9 1 * *\"",
            "\"0 9 * *\"",
            "\"@daily\"",
            "\"@fortnightly\"",
            "\"*/0 * * * *\"",
            "\"60 * * * *\"",
            "\"0 0 30 2 *\"",
            "\"0 0 * * 8\"",
            "\"1-0 * * * *\"",
            "\"0 0 0 0 0 0 0\"",
            "\"\"",
            "5",
        ],
    ),
    (
        "schedule.at",
        &[
            "2026-12-01T09:00",
            "\"2026-13-01T09:00\"",
            "yesterday",
            "2020-01-01T00:00",
            "\"+275760-09-13T00:00\"",
        ],
    ),
    (
        "schedule.timezone",
        &["Africa/Johannesburg", "Mars/Base", "UTC", "\"\"", "[UTC]"],
    ),
    ("schedule.misfire", &["run", "skip", "later"]),
    (
        "schedule.grace",
        &["1h", "0s", "forever", "\"-1h\"", "99999999999999999999d"],
    ),
    ("schedule.overlap", &["skip", "queue", "both"]),
    (
        "schedule.window",
        &[
            "{from: \"08:00\", to: \"20:00\", days: [mon, fri]}",
            "{from: \"25:00\", to: \"08:00\"}",
            "{from: \"08:00\", to: \"08:00\"}",
            "{days: [funday]}",
            "{from: 8}",
            "[]",
        ],
    ),
    ("recipients.kind", &["customer", "lead", "alien"]),
    (
        "recipients.source",
        &[
            "store",
            "missing.csv",
            "people.csv",
            "../jobs/people.csv",
            "/dev/null",
            "\"\"",
        ],
    ),
    (
        "recipients.where.status",
        &["active", "[active, blockd]", "7", "[]", "{a: b}"],
    ),
    (
        "recipients.where.phone",
        &[
            "\"+27821234567\"",
            "\"12\"",
            "\"+2721*\"",
            "\"*\"",
            "\"++\"",
            "\"0\"",
        ],
    ),
    (
        "recipients.where.login",
        &["\"000040\"", "\"[\"", "\"**?\"", "40"],
    ),
    (
        "recipients.where.name",
        &["\"John*\"", "\"\\u0000\"", "\"ß*ẞ\""],
    ),
    (
        "recipients.where.category",
        &["individual", "business", "company", "[individual, alien]"],
    ),
    (
        "recipients.where.billing_type",
        &["[recurring]", "prepaid", "prepaid_daily"],
    ),
    (
        "recipients.where.service",
        &["[internet]", "[fax]", "internet"],
    ),
    ("recipients.where.tariff", &["[\"Fiber 100\"]", "\"\""]),
    (
        "recipients.where.attrs",
        &[
            "{region: west}",
            "{\"\": x}",
            "{a: [1, 2]}",
            "{a: {b: c}}",
            "[]",
        ],
    ),
    ("recipients.where.location", &["[Cape Town, Durban]", "~"]),
    (
        "scripts.filter",
        &[
            "scripts/ok.rhai",
            "scripts/broken.rhai",
            "scripts/missing.rhai",
            "../secret.rhai",
            "/etc/passwd",
            "scripts/sneaky.rhai",
            "scripts/",
        ],
    ),
    (
        "scripts.vars",
        &[
            "scripts/ok.rhai",
            "scripts/broken.rhai",
            "templates/a.sms.j2",
        ],
    ),
    (
        "scripts.route",
        &[
            "scripts/ok.rhai",
            "scripts/route-nowhere.rhai",
            "scripts/broken.rhai",
        ],
    ),
    (
        "scripts.helpers",
        &[
            "[scripts/ok.rhai]",
            "scripts/ok.rhai",
            "[scripts/ok.rhai, scripts/ok.rhai]",
            "[1]",
        ],
    ),
    (
        "send_to",
        &["sms", "email", "portal", "portal+email", "fax", "[sms]"],
    ),
    (
        "template",
        &[
            "templates/a.sms.j2",
            "templates/a.email.j2",
            "templates/broken.j2",
            "templates/typo.j2",
            "missing.j2",
            "\"stored:\"",
            "\"stored:x\"",
            "templates",
            "/dev/zero",
        ],
    ),
    (
        "message",
        &[
            "\"Hi {{ customer.name }}\"",
            "\"{{ customer.nmae }}\"",
            "\"{% if %}\"",
            "\"{{\"",
            "\"{{ shout(customer.name) }}\"",
            "\"line\\n{{ customer.nmae }}\\nthree\"",
            "\"{{ money(1) }}\"",
            "\"€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€\"",
            "\"😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀\"",
        ],
    ),
    (
        "subject",
        &["Hi", "\"\"", "\"{{ customer.name }}\"", "\"{{ x\""],
    ),
    (
        "html_template",
        &[
            "templates/a.email.html.j2",
            "missing.html",
            "templates/broken.j2",
        ],
    ),
    (
        "attach",
        &[
            "[invoices]",
            "[invoices, payments]",
            "[\"../../etc/passwd\"]",
            "invoices",
            "[bills]",
            "[\"/etc/passwd\"]",
        ],
    ),
    ("provider", &["outbox", "portal", "nope", "\"\""]),
    (
        "rate",
        &[
            "10/s",
            "0/s",
            "10/fortnight",
            "\"-1/s\"",
            "1000000000000000000000/s",
            "abc",
            "10",
            "\"/s\"",
            "\"1/0s\"",
        ],
    ),
    (
        "expire_after",
        &["1d", "0s", "soon", "99999999999999999999999h"],
    ),
    ("min_balance", &["50", "-1", ".nan", ".inf", "x", "1e400"]),
    ("sms.max_parts", &["0", "1", "3", "255", "-1", "4294967296"]),
    ("sms.gsm_safe", &["true", "\"no\""]),
    ("shedule", &["{cron: \"0 9 * * *\"}"]),
    ("recipients.wher", &["{}"]),
    ("sms.max_part", &["3"]),
];

/// Sets `value` at the dotted `path` of a YAML mapping, making mappings on the way.
fn set(root: &mut Yaml, path: &str, value: Yaml) {
    let mut node = root;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, key) in keys.iter().enumerate() {
        if !node.is_mapping() {
            *node = Yaml::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().unwrap();
        let key = Yaml::String(key.to_string());
        if i + 1 == keys.len() {
            map.insert(key, value);
            return;
        }
        node = map.entry(key).or_insert(Yaml::Null);
    }
}

/// A job file: some fields from [`JOB_FIELDS`], each with one of its values or a random
/// string, written out as YAML.
fn job_yaml() -> impl Strategy<Value = String> {
    let field = (
        0..JOB_FIELDS.len(),
        any::<prop::sample::Index>(),
        any::<bool>(),
        ".{0,12}",
    );
    prop::collection::vec(field, 0..14).prop_map(|picks| {
        let mut root = Yaml::Mapping(Default::default());
        for (field, value, random, text) in picks {
            let (path, values) = JOB_FIELDS[field];
            let value = if random && field % 3 == 0 {
                Yaml::String(text)
            } else {
                serde_yaml::from_str(value.get::<&str>(values)).unwrap_or(Yaml::Null)
            };
            set(&mut root, path, value);
        }
        serde_yaml::to_string(&root).unwrap()
    })
}

/// Text edits: delete a span, insert a character YAML cares about, or repeat a line.
fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let edit = (
        0u8..3,
        any::<prop::sample::Index>(),
        0usize..8,
        prop::sample::select(vec![
            ':', '-', ' ', '\n', '\t', '"', '\'', '{', '}', '[', ']', '&', '*', '!', '%', '#', '|',
            '>', '?', '@', '`', '\u{feff}', '\u{0}', 'é', '😀', '$',
        ]),
    );
    (text, prop::collection::vec(edit, 0..4)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (kind, at, len, c) in edits {
            let at = if chars.is_empty() {
                0
            } else {
                at.index(chars.len() + 1)
            };
            match kind {
                0 => {
                    let end = (at + len).min(chars.len());
                    chars.drain(at..end);
                }
                1 => chars.insert(at, c),
                _ => {
                    let text: String = chars.iter().collect();
                    let lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let line = lines[at % lines.len()];
                        let mut out = lines.clone();
                        out.insert(at % lines.len(), line);
                        chars = out.join("\n").chars().collect();
                    }
                }
            }
        }
        chars.into_iter().collect()
    })
}

/// A job that is right in every respect, with random but valid optional fields.
fn valid_job() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9_.-]{0,20}",
        any::<String>(),
        prop::sample::select(vec![
            "0 9 1 * *",
            "@daily",
            "*/5 * * * *",
            "0 0 9 * * mon-fri",
        ]),
        prop::sample::select(vec![
            "UTC",
            "Africa/Johannesburg",
            "America/St_Johns",
            "Asia/Kathmandu",
        ]),
        prop::sample::select(vec!["10/s", "1/min", "3600/h"]),
        prop::collection::vec(
            prop::sample::select(vec!["new", "active", "inactive", "blocked"]),
            0..4,
        ),
        1u32..10,
        any::<String>(),
    )
        .prop_map(
            |(name, description, cron, tz, rate, status, parts, location)| {
                let mut root = Yaml::Mapping(Default::default());
                set(&mut root, "name", Yaml::String(name));
                // `${` starts a variable; `$${` is the literal.
                let literal = |s: String| Yaml::String(s.replace("${", "$${"));
                set(&mut root, "description", literal(description));
                set(&mut root, "send_to", Yaml::String("sms".into()));
                set(
                    &mut root,
                    "message",
                    Yaml::String("Hi {{ customer.name }}".into()),
                );
                set(&mut root, "schedule.cron", Yaml::String(cron.into()));
                set(&mut root, "schedule.timezone", Yaml::String(tz.into()));
                set(&mut root, "rate", Yaml::String(rate.into()));
                set(&mut root, "sms.max_parts", Yaml::Number(parts.into()));
                let status = status.into_iter().map(|s| Yaml::String(s.into())).collect();
                set(&mut root, "recipients.where.status", Yaml::Sequence(status));
                set(&mut root, "recipients.where.location", literal(location));
                serde_yaml::to_string(&root).unwrap()
            },
        )
}

/// Values a `crier.yaml` field might be given.
const CONFIG_FIELDS: &[(&str, &[&str])] = &[
    ("data_dir", &["./data", "\"\"", "/nonexistent/data", "[x]"]),
    ("default_region", &["ZA", "XX", "za", "\"\"", "1"]),
    ("timezone", &["UTC", "Mars/Base", "\"\""]),
    ("store.backend", &["embedded", "postgres", "mongo"]),
    ("store.cache_mb", &["0", "64", "99999999", "-1", "x"]),
    (
        "providers.sms.type",
        &[
            "bulksms",
            "twilio",
            "clickatell",
            "vonage",
            "http",
            "smtp",
            "file",
            "portal",
            "fax",
        ],
    ),
    (
        "providers.sms.token_id",
        &[
            "id",
            "${SET}",
            "${MISSING}",
            "${SET:-x}",
            "$${SET}",
            "${",
            "\"${}\"",
        ],
    ),
    ("providers.sms.token_secret", &["s3cret", "${SET}", "\"\""]),
    ("providers.sms.api_key", &["key", "${MISSING:-}"]),
    (
        "providers.sms.account_sid",
        &["AC0123456789abcdef0123456789abcdef", "AC1"],
    ),
    ("providers.sms.auth_token", &["tok"]),
    ("providers.sms.from", &["\"+15005550006\"", "crier", "\"\""]),
    (
        "providers.sms.url",
        &["https://gw.example.net/send", "not a url", "ftp://x"],
    ),
    ("providers.sms.base_url", &["http://127.0.0.1:1", "::"]),
    ("providers.sms.host", &["127.0.0.1", "\"\""]),
    ("providers.sms.port", &["25", "0", "70000"]),
    (
        "providers.sms.limits",
        &[
            "{rate: 30/s, burst: 10, concurrency: 8, timeout: 15s}",
            "{rate: 0/s}",
            "{concurrency: 0}",
            "{timeout: never}",
            "{burst: -1}",
        ],
    ),
    (
        "providers.sms.delivery_reports",
        &[
            "{message_id: id, status: st, delivered: [\"1\"]}",
            "{message_id: \"\", status: \"\", delivered: []}",
            "{format: xml}",
        ],
    ),
    ("providers.outbox.type", &["file", "bulksms"]),
    ("channels.sms", &["outbox", "sms", "nope", "portal"]),
    ("channels.email", &["outbox", "sms"]),
    ("channels.portal", &["portal", "outbox"]),
    (
        "server.listen",
        &["127.0.0.1:8025", "nope", "127.0.0.1:99999"],
    ),
    (
        "server.token",
        &["short", "a-long-enough-api-token-0123", "${MISSING}"],
    ),
    ("server.webhook_token", &["short", "hook-0123456789abcdef"]),
    (
        "server.public_url",
        &["https://crier.example.net", "crier", "\"\""],
    ),
    ("server.max_body_kb", &["0", "1", "1024", "99999999999"]),
    ("providerz", &["{}"]),
    ("server.tokn", &["x"]),
];

fn config_yaml() -> impl Strategy<Value = String> {
    let field = (0..CONFIG_FIELDS.len(), any::<prop::sample::Index>());
    prop::collection::vec(field, 0..10).prop_map(|picks| {
        let mut root = Yaml::Mapping(Default::default());
        for (field, value) in picks {
            let (path, values) = CONFIG_FIELDS[field];
            set(
                &mut root,
                path,
                serde_yaml::from_str(value.get::<&str>(values)).unwrap_or(Yaml::Null),
            );
        }
        serde_yaml::to_string(&root).unwrap()
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn job_files_validate_or_point_at_the_problem(text in mutated(job_yaml())) {
        fuzz::job(&job_path(), &text);
    }

    #[test]
    fn arbitrary_bytes_as_a_job_file_are_diagnosed(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        fuzz::job(&job_path(), &text);
    }

    #[test]
    fn right_jobs_validate_whatever_their_text(text in valid_job()) {
        let job = fuzz::job(&job_path(), &text);
        prop_assert!(job.is_some(), "refused:\n{}", text);
    }

    #[test]
    fn config_files_validate_or_point_at_the_problem(text in mutated(config_yaml())) {
        fuzz::config(&project().join("crier.yaml"), &text);
    }
}

// ---------------------------------------------------------------------------------------
// CSV import rows

const HEADERS: &[&str] = &[
    "id",
    "ID",
    "login",
    "Portal login",
    "status",
    "name",
    "Full name",
    "email",
    "billing_email",
    "Phone number",
    "phone",
    "category",
    "location",
    "billing_type",
    "Billing type",
    "partner",
    "Tariff plans",
    "timezone",
    "Overdue days",
    "balance",
    "",
    " ",
    "Ünïcode héader",
    "id",
];

/// Values for a column of each header: right ones first, then wrong ones.
fn cell_values(header: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match recipients_squash(header).as_str() {
        "id" => (
            &["1", "42", "18446744073709551615"],
            &["x1", "-1", "18446744073709551616", "1.0"],
        ),
        "login" | "portallogin" => (&["ann", "000040", "ß"], &[]),
        "status" => (
            &["active", "Active", "new", "blocked", "inactive", ""],
            &["actve", "disabled"],
        ),
        "category" => (&["individual", "business", "Company", ""], &["alien"]),
        "billingtype" => (
            &["recurring", "Prepaid (Daily)", "prepaid_custom"],
            &["postpaid"],
        ),
        "timezone" => (
            &["Africa/Johannesburg", "UTC", ""],
            &["Mars/Base", "+02:00"],
        ),
        "phone" | "phonenumber" => (
            &[
                "082 123 4567",
                "+27821234567",
                "12345",
                "",
                "+",
                "0",
                "082 123 4567, 083 765 4321",
                "+999999999999999999999",
                "٠٨٢١٢٣٤٥٦٧",
            ],
            &[],
        ),
        "tariffplans" => (
            &[
                "Internet: Fiber 100 | Voice: Basic",
                "|||",
                ":",
                "Internet:",
                ": plan",
            ],
            &[],
        ),
        _ => (
            &[
                "",
                "x",
                "R 1,250.50",
                "a\"b",
                "line\nbreak",
                "tab\there",
                "ünï",
            ],
            &[],
        ),
    }
}

fn recipients_squash(s: &str) -> String {
    crier::recipients::squash(s)
}

/// A CSV written with correct quoting: a header from [`HEADERS`], rows of values for
/// each column, and whether every value is a right one.
fn csv_file() -> impl Strategy<Value = (Vec<u8>, usize, bool)> {
    let header = prop::collection::vec(prop::sample::select(HEADERS.to_vec()), 1..8);
    (
        header,
        any::<bool>(),
        prop::sample::select(vec![b',', b';', b'\t']),
        any::<bool>(),
    )
        .prop_flat_map(|(header, wrong, delimiter, bom)| {
            let width = header.len();
            let cell = (any::<prop::sample::Index>(), any::<bool>());
            let rows = prop::collection::vec(prop::collection::vec(cell, width), 0..12);
            (Just(header), Just(wrong), Just(delimiter), Just(bom), rows)
        })
        .prop_map(|(header, wrong, delimiter, bom, rows)| {
            let mut writer = csv::WriterBuilder::new()
                .delimiter(delimiter)
                .from_writer(Vec::new());
            writer.write_record(&header).unwrap();
            let mut all_right = true;
            for row in &rows {
                let cells: Vec<&str> = header
                    .iter()
                    .zip(row)
                    .map(|(h, (pick, use_wrong))| {
                        let (right, bad) = cell_values(h);
                        if wrong && *use_wrong && !bad.is_empty() {
                            all_right = false;
                            *pick.get(bad)
                        } else {
                            *pick.get(right)
                        }
                    })
                    .collect();
                writer.write_record(&cells).unwrap();
            }
            let mut bytes = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            bytes.extend(writer.into_inner().unwrap());
            (bytes, rows.len(), all_right)
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn csv_bytes_never_panic_the_importer(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzz::csv(&bytes);
    }

    #[test]
    fn csv_rows_are_recipients_or_rejections_with_their_column((bytes, rows, all_right) in csv_file()) {
        let tally = fuzz::csv(&bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let squashed: Vec<String> = text.lines().next().unwrap_or("").split([',', ';', '\t'])
            .map(recipients_squash).collect();
        let keyed = squashed.iter().any(|h| matches!(h.as_str(), "id" | "login" | "portallogin"));
        prop_assert!(!tally.refused || text.trim_start_matches('\u{feff}').lines().next().unwrap_or("").trim_matches([',', ';', '\t', ' ', '"']).is_empty(), "refused {text:?}");
        prop_assert_eq!(tally.unreadable, 0, "{:?}", text);
        if !tally.refused {
            prop_assert_eq!(tally.recipients + tally.rejected, rows, "{:?}", text);
        }
        // Without an id or login column every row is rejected; with one and right values
        // (and each row carrying one), every row is a recipient.
        if !keyed && !tally.refused {
            prop_assert_eq!(tally.recipients, 0, "{:?}", text);
        }
        if all_right && keyed {
            prop_assert_eq!(tally.rejected, 0, "{:?}", text);
        }
    }

    #[test]
    fn csv_fields_of_any_text_parse_without_panic(fields in prop::collection::vec((prop::sample::select(HEADERS.to_vec()), any::<String>()), 1..8)) {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(fields.iter().map(|(h, _)| *h)).unwrap();
        writer.write_record(fields.iter().map(|(_, v)| v.as_str())).unwrap();
        let tally = fuzz::csv(&writer.into_inner().unwrap());
        if !tally.refused {
            prop_assert_eq!(tally.recipients + tally.rejected + tally.unreadable, 1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Templates

const TEMPLATE_PIECES: &[&str] = &[
    "Hi ",
    "{{ customer.name }}",
    "{{ recipient.login }}",
    "{{ customer.email }}",
    "{{ customer.phone }}",
    "{{ customer.attrs.balance }}",
    "{{ customer.attrs.balance | money }}",
    "{{ customer.attrs.balance | money(\"USD\") }}",
    "{{ customer.attrs.balance | money(customer.name) }}",
    "{{ customer.id | money }}",
    "{{ customer.attrs.due | date }}",
    "{{ customer.attrs.due | date(\"%d %B %Y\") }}",
    "{{ now | date(\"%d %B %Y\") }}",
    "{{ now | date(\"%Q\") }}",
    "{{ now | date(\"%\") }}",
    "{{ now | date(customer.name) }}",
    "{{ customer.attrs.due | date(customer.attrs.balance) }}",
    "{{ vars.x }}",
    "{{ vars.x.y }}",
    "{% if customer.email %}mail{% endif %}",
    "{% for t in customer.tariffs %}{{ t.plan }},{% endfor %}",
    "{{ customer.services | join(\", \") }}",
    "{{ customer.nmae }}",
    "{{ job.name }} {{ run.id }}",
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ customer.id * 99999999999999 }}",
    "{{ customer.id ** 99 }}",
    "{{ customer.name[3:1] }}",
    "{{ customer.name | upper | title }}",
    "{{ customer.attrs | length }}",
    "{{ customer.attrs.balance | float * 2 }}",
    "{{ customer.attrs.balance | int }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set x = customer.name %}{{ x }}",
    "{{ \"%s-%s\" | format(customer.name) }}",
    "{{ customer.name ~ customer.id }}",
    "{{ customer | tojson }}",
    "{{ customer.name | safe }}",
    "{{",
    "}}",
    "{%",
    "{# note #}",
    "{{ x",
    "\n",
    "€",
    "😀",
];

fn template_source() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(TEMPLATE_PIECES.to_vec()), 0..8),
        "[^{}%#]{0,6}",
    )
        .prop_map(|(pieces, filler)| pieces.join(&filler))
}

fn attr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1250.5",
            "-3",
            "abc",
            "1e400",
            "NaN",
            "inf",
            "-inf",
            "2026-11-27",
            "2026-02-30",
            "2026-11-27T10:00:00+02:00",
            "",
            "1 250,50",
            "18446744073709551616",
            "-0",
        ])
        .prop_map(String::from),
        any::<String>(),
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    let status = prop::sample::select(vec![
        Status::New,
        Status::Active,
        Status::Inactive,
        Status::Blocked,
    ]);
    let category = prop::option::of(prop::sample::select(vec![
        Category::Individual,
        Category::Business,
    ]));
    let billing = prop::option::of(prop::sample::select(vec![
        BillingType::Recurring,
        BillingType::PrepaidCustom,
        BillingType::PrepaidDaily,
    ]));
    let tariff = (
        prop::option::of(prop::sample::select(vec![
            Service::Internet,
            Service::Voice,
        ])),
        any::<String>(),
    )
        .prop_map(|(service, plan)| Tariff { service, plan });
    let attrs = prop::collection::btree_map(
        prop_oneof![
            prop::sample::select(vec!["balance", "due", "x"]).prop_map(String::from),
            any::<String>()
        ],
        attr_value(),
        0..4,
    );
    (
        (
            any::<u64>(),
            prop::option::of(any::<String>()),
            status,
            any::<String>(),
            prop::option::of(any::<String>()),
        ),
        (
            prop::option::of("\\+[0-9]{0,15}"),
            category,
            billing,
            prop::collection::vec(tariff, 0..3),
            attrs,
        ),
    )
        .prop_map(
            |(
                (id, login, status, name, email),
                (phone, category, billing_type, tariffs, attrs),
            )| Recipient {
                kind: RecipientKind::Customer,
                id,
                login,
                status,
                name,
                email,
                billing_email: None,
                phone: phone.clone(),
                phone_raw: phone,
                category,
                location: None,
                billing_type,
                partner: None,
                tariffs,
                timezone: None,
                attrs,
            },
        )
}

fn vars() -> impl Strategy<Value = BTreeMap<String, serde_json::Value>> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        Just(serde_json::json!({"y": [1, "two", null]})),
    ];
    prop::collection::btree_map(
        prop::sample::select(vec!["x".to_string(), "y".to_string()]),
        value,
        0..2,
    )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn templates_render_or_fail_with_a_reason(source in template_source(), r in recipient(), vars in vars()) {
        let _ = fuzz::template(&source, &r, &vars);
    }

    #[test]
    fn any_text_as_a_template_is_handled(source in any::<String>(), r in recipient()) {
        let _ = fuzz::template(&source, &r, &BTreeMap::new());
    }

    #[test]
    fn a_name_renders_as_itself(r in recipient()) {
        let out = fuzz::template("{{ customer.name }}", &r, &BTreeMap::new());
        prop_assert_eq!(out, Ok(r.name.trim_end().to_string()));
    }
}

// ---------------------------------------------------------------------------------------
// SMS parts, against a reference written from GSM 03.38 and the concatenation rules

#[path = "fuzz/sms_reference.rs"]
mod reference;

/// Text near the part boundaries: mostly GSM characters, some extension ones, and now
/// and then a character (or an emoji) that forces UCS-2.
fn sms_text() -> impl Strategy<Value = String> {
    let gsm = prop::sample::select(
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà"
            .chars()
            .collect::<Vec<_>>(),
    );
    let ext = prop::sample::select("\u{c}^{}\\[~]|€".chars().collect::<Vec<_>>());
    let other = prop::sample::select(
        "жé’`\u{1b}\u{0}\t😀🙏ẞ\u{feff}Ωç"
            .chars()
            .collect::<Vec<_>>(),
    );
    let char = prop_oneof![60 => gsm, 10 => ext, 1 => other, 1 => any::<char>()];
    let run = (char, 1usize..80);
    prop::collection::vec(run, 0..8).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(c, n)| std::iter::repeat_n(c, n))
            .collect()
    })
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn sms_parts_match_the_reference(text in sms_text()) {
        let parts = fuzz::sms(&text);
        prop_assert_eq!((parts.encoding, parts.units, parts.parts), reference::count(&text), "{:?}", text);
    }

    #[test]
    fn sms_parts_of_any_text_match_the_reference(text in any::<String>()) {
        let parts = fuzz::sms(&text);
        prop_assert_eq!((parts.encoding, parts.units, parts.parts), reference::count(&text));
    }

    #[test]
    fn gsm_safe_never_costs_more(text in sms_text()) {
        let before = sms::count(&text);
        let after = sms::count(&sms::gsm_safe(&text));
        if before.encoding == Encoding::Gsm7 {
            prop_assert_eq!(after, before);
        }
        prop_assert!(after.encoding == Encoding::Gsm7 || before.encoding == Encoding::Ucs2);
    }
}

#[test]
fn the_reference_agrees_with_known_counts() {
    // The reference itself, against figures worked out by hand: it is only a check if it
    // is right.
    let cases: &[(String, Encoding, usize, usize)] = &[
        ("a".repeat(160), Encoding::Gsm7, 160, 1),
        ("a".repeat(161), Encoding::Gsm7, 161, 2),
        ("a".repeat(306), Encoding::Gsm7, 306, 2),
        ("a".repeat(307), Encoding::Gsm7, 307, 3),
        ("€".repeat(80), Encoding::Gsm7, 160, 1),
        (
            format!("{}€{}", "a".repeat(152), "a".repeat(10)),
            Encoding::Gsm7,
            164,
            2,
        ),
        (
            format!("{}€{}", "a".repeat(151), "a".repeat(10)),
            Encoding::Gsm7,
            163,
            2,
        ),
        ("ж".repeat(70), Encoding::Ucs2, 70, 1),
        ("ж".repeat(134), Encoding::Ucs2, 134, 2),
        ("ж".repeat(135), Encoding::Ucs2, 135, 3),
        (
            format!("{}😀{}", "ж".repeat(66), "ж".repeat(5)),
            Encoding::Ucs2,
            73,
            2,
        ),
        ("😀".repeat(35), Encoding::Ucs2, 70, 1),
        ("😀".repeat(36), Encoding::Ucs2, 72, 2),
        ("`".into(), Encoding::Ucs2, 1, 1),
        ("\u{1b}".into(), Encoding::Ucs2, 1, 1),
        (String::new(), Encoding::Gsm7, 0, 0),
    ];
    for (text, encoding, units, parts) in cases {
        assert_eq!(
            reference::count(text),
            (*encoding, *units, *parts),
            "{text:?}"
        );
        let p = sms::count(text);
        assert_eq!(
            (p.encoding, p.units, p.parts),
            (*encoding, *units, *parts),
            "{text:?}"
        );
    }
    // 36 emoji: 72 units, 67 per part, and the 34th emoji would straddle the cut.
    assert_eq!(
        reference::septets("Hi €").unwrap(),
        vec![0x48, 0x69, 0x20, 0x1b, 0x65]
    );
}

// ---------------------------------------------------------------------------------------
// Delivery-report parsers

const REPORT_KEYS: &[&str] = &[
    "id",
    "type",
    "status",
    "subtype",
    "from",
    "to",
    "body",
    "messageId",
    "apiMessageId",
    "statusCode",
    "statusDescription",
    "timestamp",
    "event",
    "messageStatusUpdate",
    "msisdn",
    "text",
    "err-code",
    "message-timestamp",
    "data",
    "state",
    "err",
    "ts",
    "MessageSid",
    "SmsSid",
    "MessageStatus",
    "SmsStatus",
    "ErrorCode",
    "From",
    "Body",
    "OptOutType",
    "RawDlrDoneDate",
    "To",
];

const REPORT_VALUES: &[&str] = &[
    "DELIVERED",
    "FAILED",
    "EXPIRED",
    "BLOCKED",
    "HANDSET_ERROR",
    "RECEIVED",
    "SENT",
    "null",
    "STOP",
    "stop ",
    "delivered",
    "undelivered",
    "failed",
    "rejected",
    "received",
    "read",
    "DELIVRD",
    "UNDELIV",
    "REJECTD",
    "OPTOUT",
    "STOPPED_BY_USER",
    "21",
    "21610",
    "1",
    "0",
    "-9223372036854775808",
    "9223372036854775807",
    "99999999999999999999",
    "1e400",
    "-1",
    "2026-11-27T10:00:00Z",
    "2026-11-27 10:00:00",
    "2613131313",
    "9912312359",
    "",
    " ",
    "27821234567",
    "+27821234567",
    "0821234567",
    "bulk-1",
    "\u{0}",
    "\n",
];

fn report_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        4 => prop::sample::select(REPORT_VALUES.to_vec()).prop_map(|s| Value::String(s.into())),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(REPORT_KEYS.to_vec()), inner), 0..6)
                .prop_map(|pairs| Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
        ]
    })
}

fn report_form() -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => prop::sample::select(REPORT_KEYS.to_vec()).prop_map(String::from), 1 => "[%&=+a-z]{0,6}"];
    let value = prop_oneof![4 => prop::sample::select(REPORT_VALUES.to_vec()).prop_map(String::from), 1 => "[%&=+a-zA-Z0-9]{0,8}"];
    prop::collection::vec((key, value, any::<bool>()), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, raw)| {
                if raw {
                    format!("{k}={v}")
                } else {
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair(&k, &v)
                        .finish()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Every parser on `body`, and the query-reading ones with `body` as the query too.
fn every_parser(body: &[u8]) {
    for kind in Webhook::ALL {
        let _ = fuzz::webhook(kind, body, None);
    }
    if let Ok(query) = std::str::from_utf8(body) {
        for kind in [Webhook::Clickatell, Webhook::Vonage, Webhook::HttpQuery] {
            let _ = fuzz::webhook(kind, b"", Some(query));
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn report_bodies_of_any_bytes_are_read_or_refused(body in prop::collection::vec(any::<u8>(), 0..400)) {
        every_parser(&body);
    }

    #[test]
    fn report_json_of_any_shape_is_read_or_refused(value in report_json()) {
        every_parser(value.to_string().as_bytes());
        every_parser(serde_json::json!([value]).to_string().as_bytes());
        every_parser(serde_json::json!({"event": {"messageStatusUpdate": [value]}}).to_string().as_bytes());
    }

    #[test]
    fn report_forms_are_read_or_refused(form in report_form()) {
        every_parser(form.as_bytes());
    }

    #[test]
    fn garbage_is_refused_by_every_parser(body in "[^%+\\[]{0,200}") {
        // No field name a report needs, and nothing that could decode into one.
        prop_assume!(!["id", "Id", "Sid", "msisdn", "From"].iter().any(|k| body.contains(k)));
        for kind in Webhook::ALL {
            let result = fuzz::webhook(kind, body.as_bytes(), Some(&body));
            prop_assert!(result.is_err(), "{kind:?} read {body:?}: {result:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused(mut body in prop::collection::vec(any::<u8>(), 0..200), at in any::<prop::sample::Index>()) {
        body.insert(at.index(body.len() + 1), 0xff);
        for kind in Webhook::ALL {
            prop_assert!(fuzz::webhook(kind, &body, None).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn well_formed_reports_are_read(id in "[A-Za-z0-9-]{1,20}", status in 0usize..3, time in any::<i64>()) {
        // Positive controls: a right report of each format is read as one report.
        let bulk = ["DELIVERED", "FAILED", "SENT"][status];
        let body = serde_json::json!([{"id": id, "type": "SENT", "status": {"type": bulk, "subtype": null}}]);
        prop_assert_eq!(fuzz::webhook(Webhook::BulkSms, body.to_string().as_bytes(), None), Ok(1));
        let click = serde_json::json!({"event": {"messageStatusUpdate": [{"messageId": id, "statusCode": 4 + status, "timestamp": time}]}});
        prop_assert_eq!(fuzz::webhook(Webhook::Clickatell, click.to_string().as_bytes(), None), Ok(1));
        let vonage = format!("messageId={id}&status={}&message-timestamp={time}", ["delivered", "failed", "accepted"][status]);
        prop_assert_eq!(fuzz::webhook(Webhook::Vonage, vonage.as_bytes(), None), Ok(1));
        prop_assert_eq!(fuzz::webhook(Webhook::Vonage, b"", Some(&vonage)), Ok(1));
        let twilio = format!("MessageSid={id}&MessageStatus={}", ["delivered", "failed", "sent"][status]);
        prop_assert_eq!(fuzz::webhook(Webhook::Twilio, twilio.as_bytes(), None), Ok(1));
        let state = ["DELIVRD", "REJECTD", "ACCEPTD"][status];
        let gw = serde_json::json!({"data": {"id": id, "state": state, "ts": time}});
        prop_assert_eq!(fuzz::webhook(Webhook::HttpJson, gw.to_string().as_bytes(), None), Ok(1));
        let flat = format!("id={id}&state=DELIVRD&ts={time}");
        prop_assert_eq!(fuzz::webhook(Webhook::HttpForm, flat.as_bytes(), None), Ok(1));
        prop_assert_eq!(fuzz::webhook(Webhook::HttpQuery, b"", Some(&flat)), Ok(1));
        let sg_event = ["delivered", "bounce", "processed"][status];
        let sendgrid = serde_json::json!([{"event": sg_event, "sg_message_id": format!("{id}.filter0"), "email": "a@b.example", "timestamp": time}]);
        prop_assert_eq!(fuzz::webhook(Webhook::Sendgrid, sendgrid.to_string().as_bytes(), None), Ok(1));
        let mg_event = ["delivered", "failed", "accepted"][status];
        let mailgun = serde_json::json!({"signature": {}, "event-data": {"event": mg_event, "severity": "permanent", "message": {"headers": {"message-id": id}}}});
        prop_assert_eq!(fuzz::webhook(Webhook::Mailgun, mailgun.to_string().as_bytes(), None), Ok(1));
        let ses_event = ["Delivery", "Bounce", "Send"][status];
        let ses = serde_json::json!({"eventType": ses_event, "mail": {"messageId": id}, "bounce": {"bounceType": "Permanent"}});
        prop_assert_eq!(fuzz::webhook(Webhook::Ses, ses.to_string().as_bytes(), None), Ok(1));
    }
}

// ---------------------------------------------------------------------------------------
// Crashes and broken contracts found by the properties above, kept fixed.

fn nobody() -> Recipient {
    Recipient {
        kind: RecipientKind::Customer,
        id: 7,
        login: None,
        status: Status::Active,
        name: "Ann".into(),
        email: None,
        billing_email: None,
        phone: None,
        phone_raw: None,
        category: None,
        location: None,
        billing_type: None,
        partner: None,
        tariffs: Vec::new(),
        timezone: None,
        attrs: BTreeMap::from([("due".to_string(), "2026-11-27".to_string())]),
    }
}

#[test]
fn regression_a_bad_date_format_fails_the_message_instead_of_panicking() {
    // chrono's `to_string` panicked on `%Q` (and on `%z` for a date without a zone).
    let out = fuzz::template("{{ now | date(\"%Q\") }}", &nobody(), &BTreeMap::new());
    assert_eq!(
        out,
        Err("template: date: `%Q` is not a date format (e.g. `%d %B %Y`)".into())
    );
    let out = fuzz::template(
        "{{ customer.attrs.due | date(\"%z\") }}",
        &nobody(),
        &BTreeMap::new(),
    );
    assert_eq!(
        out,
        Err("template: date: cannot print `2026-11-27` as `%z`".into())
    );
    let out = fuzz::template(
        "{{ customer.attrs.due | date(\"%d %B %Y\") }}",
        &nobody(),
        &BTreeMap::new(),
    );
    assert_eq!(out, Ok("27 November 2026".into()));
}

#[test]
fn regression_a_report_time_of_the_smallest_integer_is_read() {
    // `i64::MIN.abs()` overflowed (a panic in the request's task).
    let form = "messageId=v-1&status=delivered&message-timestamp=-9223372036854775808";
    assert_eq!(fuzz::webhook(Webhook::Vonage, form.as_bytes(), None), Ok(1));
    let json = r#"{"messageId":"c-1","statusCode":"4","timestamp":"-9223372036854775808"}"#;
    assert_eq!(
        fuzz::webhook(Webhook::Clickatell, json.as_bytes(), None),
        Ok(1)
    );
}

#[test]
fn regression_a_refused_reports_reason_is_short_and_on_one_line() {
    // The value of `statusCode` was echoed raw: control characters, and any length.
    let json = r#"{"messageId":"c-1","statusCode":"\u0000\n2"}"#;
    assert_eq!(
        fuzz::webhook(Webhook::Clickatell, json.as_bytes(), None),
        Err("callback: `statusCode` `\\0\\n2` is not a number".into())
    );
    let long = serde_json::json!({"messageId": "c-1", "statusCode": "9".repeat(5000) + "x"});
    let reason = fuzz::webhook(Webhook::Clickatell, long.to_string().as_bytes(), None).unwrap_err();
    assert!(reason.chars().count() < 100, "{reason}");
    assert!(reason.contains("…` is not a number"), "{reason}");
}

#[test]
fn regression_a_second_yaml_document_is_placed() {
    // serde_yaml gives no position for it; the diagnostic had none (`file: message`).
    let path = job_path();
    let config = crier::config::Config::defaults();
    let err = crier::job::parse(
        &path,
        "send_to: sms\nmessage: hi\nrecipients: {}\n---\nsend_to: email\n",
        &config,
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:1: a file holds one YAML document, and another starts here (remove the `---` and what follows it)",
            path.display()
        )
    );
    assert!(fuzz::config(&project().join("crier.yaml"), "{}{\n").is_none());
}

#[test]
fn regression_an_unknown_name_split_over_lines_is_placed() {
    // Found by the `template` fuzz target: `{{ siding.\nkind }}` is the variable
    // `siding.kind`, which is not in the text as such, so the error had no line.
    let source = "z{{siding.\nkindT76}}}8}}\n{\n";
    assert!(fuzz::template(source, &nobody(), &BTreeMap::new()).is_err());
    let errors = crier::render::template::check(source).unwrap_err();
    assert_eq!((errors[0].line, errors[0].col), (1, 4), "{errors:?}");
    assert!(
        errors[0].message.starts_with("unknown variable `siding`"),
        "{errors:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Bounces

/// The bounce samples (`tests/bounces/*.eml`), each as bytes.
fn bounce_samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bounces");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    })
}

/// A sample cut short, with a stretch replaced by random bytes: the damage a bounce
/// suffers on the way (truncated by `bounce_size_limit`, mangled by a gateway).
fn damaged_bounce() -> impl Strategy<Value = Vec<u8>> {
    (
        0..bounce_samples().len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(i, cut, at, noise)| {
            let sample = &bounce_samples()[i];
            let mut bytes = sample[..cut.index(sample.len() + 1)].to_vec();
            let at = at.index(bytes.len() + 1);
            let end = (at + noise.len()).min(bytes.len());
            bytes.splice(at..end, noise);
            bytes
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn damaged_bounces_are_read_or_refused_in_one_line(bytes in damaged_bounce()) {
        if let Err(e) = crier::bounces::parse(&bytes) {
            let text = e.to_string();
            prop_assert!(!text.contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_bounce_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = crier::bounces::parse(&bytes);
    }
}
