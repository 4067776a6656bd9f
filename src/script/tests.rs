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
        partner: Some("Coastal Wireless".into()),
        tariffs: vec![],
        timezone: None,
        attrs: [
            ("balance".to_string(), "-1250.5".to_string()),
            ("overdue_days".to_string(), "21".to_string()),
        ]
        .into(),
    }
}

fn sms(address: &str) -> Dynamic {
    message(&MessageView {
        channel: "sms",
        provider: "outbox",
        address,
        subject: None,
        body: "Hi",
        encoding: Some("gsm7"),
        parts: 1,
    })
}

fn scripts(source: &str) -> Scripts {
    Scripts::from_source("scripts/test.rhai", source, Limits::default()).unwrap()
}

fn shipped(name: &str) -> Scripts {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let source = std::fs::read_to_string(path).unwrap();
    Scripts::from_source(&format!("scripts/{name}"), &source, Limits::default()).unwrap()
}

#[test]
fn the_engine_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Scripts>();
}

#[test]
fn filter_sees_every_field_and_attrs() {
    let s = scripts(
        r#"fn filter(c) { c.name == "Ann Dlamini" && c.attrs.overdue_days == "21" && c.email == () && c.status == "active" }"#,
    );
    assert!(s.filter(&customer(&ann())).unwrap());
    let s = scripts("fn filter(c) { c.id > 100 }");
    assert!(!s.filter(&customer(&ann())).unwrap());
}

#[test]
fn filter_must_return_a_bool() {
    let s = scripts("fn filter(c) { 1 }");
    let e = s.filter(&customer(&ann())).unwrap_err();
    assert_eq!(e.script, "scripts/test.rhai");
    assert!(e.message.contains("true or false"), "{e}");
}

#[test]
fn vars_return_template_values() {
    let s = scripts(
        r#"fn vars(c) { #{ days: parse_int(c.attrs.overdue_days), who: c.name, list: [1, 2] } }"#,
    );
    let vars = s.vars(&customer(&ann())).unwrap();
    assert_eq!(vars["days"], serde_json::json!(21));
    assert_eq!(vars["who"], serde_json::json!("Ann Dlamini"));
    assert_eq!(vars["list"], serde_json::json!([1, 2]));
    let e = scripts("fn vars(c) { 42 }")
        .vars(&customer(&ann()))
        .unwrap_err();
    assert!(e.message.contains("must return a map"), "{e}");
}

#[test]
fn route_returns_a_name_a_failover_order_or_nothing() {
    let s = scripts(
        r#"fn route(m, c) { if m.country == "ZA" { ["bulksms", "clickatell"] } else if m.country == () { () } else { "twilio" } }"#,
    );
    let c = customer(&ann());
    assert_eq!(
        s.route(sms("+27821234567"), &c).unwrap(),
        Route::To(vec!["bulksms".into(), "clickatell".into()])
    );
    assert_eq!(
        s.route(sms("+447911123456"), &c).unwrap(),
        Route::To(vec!["twilio".into()])
    );
    assert_eq!(s.route(sms("nobody"), &c).unwrap(), Route::Out);
    let e = scripts("fn route(m, c) { 42 }").route(sms("+27821234567"), &c);
    assert!(e.unwrap_err().message.contains("provider name"));
}

#[test]
fn the_message_carries_its_country() {
    let s = scripts(
        "fn route(m, c) { `${m.country} ${m.calling_code} ${m.parts} ${m.channel} ${m.provider}` }",
    );
    let c = customer(&ann());
    assert_eq!(
        s.route(sms("+27821234567"), &c).unwrap(),
        Route::To(vec!["ZA 27 1 sms outbox".into()])
    );
    assert_eq!(
        s.route(sms("+14155550100"), &c).unwrap(),
        Route::To(vec!["US 1 1 sms outbox".into()])
    );
}

#[test]
fn route_literals_are_found_for_validation() {
    let s = shipped("route.rhai");
    let names: Vec<&str> = s
        .route_literals()
        .iter()
        .map(|(n, ..)| n.as_str())
        .collect();
    assert_eq!(names, ["bulksms", "clickatell", "twilio", "clickatell"]);
    assert_eq!(
        s.route_literals()
            .iter()
            .map(|(_, l, c)| (*l, *c))
            .collect::<Vec<_>>(),
        [(14, 9), (14, 9), (16, 9), (16, 9)]
    );
    assert!(
        s.route_literals()
            .iter()
            .all(|(_, line, col)| *line > 0 && *col > 0)
    );
}

#[test]
fn shipped_helpers_format_money_and_dates() {
    let s = shipped("format.rhai");
    let money = |args: Vec<Dynamic>| s.helper("money", args).unwrap().to_string();
    assert_eq!(money(vec!["1 250.5".into(), "ZAR".into()]), "R 1 250.50");
    assert_eq!(money(vec![Dynamic::from_float(-3.0)]), "-R 3.00");
    assert_eq!(
        money(vec![Dynamic::from_int(1_000_000), "USD".into()]),
        "$ 1 000 000.00"
    );
    let date = s
        .helper("long_date", vec!["2026-12-01T09:00:00+02:00".into()])
        .unwrap();
    assert_eq!(date.to_string(), "1 December 2026");
}

#[test]
fn shipped_overdue_filter_and_vars() {
    let s = shipped("overdue.rhai");
    let mut r = ann();
    assert!(s.filter(&customer(&r)).unwrap());
    let vars = s.vars(&customer(&r)).unwrap();
    assert_eq!(vars["days_overdue"], serde_json::json!(21));
    assert_eq!(vars["balance"], serde_json::json!(1250.5));
    r.attrs.insert("overdue_days".into(), "14".into());
    assert!(!s.filter(&customer(&r)).unwrap());
    r.attrs.insert("overdue_days".into(), "30".into());
    r.attrs.insert("balance".into(), "20.00".into());
    assert!(!s.filter(&customer(&r)).unwrap(), "a credit is not a debt");
    r.attrs.clear();
    assert!(!s.filter(&customer(&r)).unwrap());
}

#[test]
fn shipped_partner_route_picks_the_partners_sender() {
    let s = shipped("partner-sender.rhai");
    let mut r = ann();
    assert_eq!(
        s.route(sms("+27821234567"), &customer(&r)).unwrap(),
        Route::To(vec!["bulksms-coastal".into(), "bulksms".into()])
    );
    r.partner = None;
    assert_eq!(
        s.route(sms("+27821234567"), &customer(&r)).unwrap(),
        Route::To(vec!["bulksms".into()])
    );
}

#[test]
fn the_customer_is_read_only() {
    let s = scripts(r#"fn filter(c) { c.name = "Mallory"; true }"#);
    let c = customer(&ann());
    let result = s.filter(&c);
    // Either refused outright, or a change to the script's own copy only.
    if let Err(e) = &result {
        assert!(e.message.to_lowercase().contains("constant"), "{e}");
    }
    let name = c.clone().cast::<Map>()["name"].to_string();
    assert_eq!(name, "Ann Dlamini");
}

#[test]
fn an_infinite_loop_hits_the_operation_limit() {
    let s = scripts("fn filter(c) { loop { } }");
    let e = s.filter(&customer(&ann())).unwrap_err();
    assert_eq!(e.function, "filter");
    assert!(e.script.starts_with("scripts/test.rhai"), "{e}");
    assert!(
        e.message.contains("operation limit reached (1000000"),
        "{e}"
    );
}

#[test]
fn deep_recursion_hits_the_call_depth_limit() {
    let s = scripts("fn down(n) { down(n + 1) } fn filter(c) { down(0) }");
    let e = s.filter(&customer(&ann())).unwrap_err();
    assert!(e.message.contains("call depth limit reached (32"), "{e}");
}

#[test]
fn a_huge_string_hits_the_size_limit() {
    let s = scripts(r#"fn vars(c) { let s = "x"; loop { s += s; } }"#);
    let e = s.vars(&customer(&ann())).unwrap_err();
    assert!(e.message.contains("size limit reached"), "{e}");
    assert!(e.message.contains("65536 bytes"), "{e}");
    let s = scripts("fn vars(c) { let a = []; loop { a.push(1); } }");
    let e = s.vars(&customer(&ann())).unwrap_err();
    assert!(e.message.contains("10000 items"), "{e}");
}

#[test]
fn a_slow_call_hits_the_wall_clock_limit() {
    let limits = Limits {
        operations: u64::MAX / 2,
        wall_clock: Duration::from_millis(50),
        ..Limits::default()
    };
    let s = Scripts::from_source("scripts/slow.rhai", "fn filter(c) { loop { } }", limits).unwrap();
    let started = Instant::now();
    let e = s.filter(&customer(&ann())).unwrap_err();
    assert!(
        e.message.contains("wall-clock limit reached (50 ms)"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn there_is_no_file_or_process_access() {
    for source in [
        r#"fn filter(c) { let f = open_file("/etc/passwd"); true }"#,
        r#"fn filter(c) { read_string(open_file("/etc/passwd")); true }"#,
        r#"fn filter(c) { system("ls"); true }"#,
        r#"fn filter(c) { http_get("http://127.0.0.1/"); true }"#,
    ] {
        let s = scripts(source);
        let e = s.filter(&customer(&ann())).unwrap_err();
        assert!(e.message.contains("Function not found"), "{source}: {e}");
    }
    // `eval` would compile text at run time, outside validation: it is not in the language.
    let e = Scripts::from_source(
        "scripts/e.rhai",
        r#"fn filter(c) { eval("1"); true }"#,
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(e.message.contains("eval"), "{e:?}");
}

#[test]
fn imports_outside_scripts_are_refused_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts/lib")).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("secret.rhai"), "fn x() { 1 }").unwrap();
    std::fs::write(
        dir.path().join("scripts/lib/names.rhai"),
        r#"fn main_provider() { "outbox" }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scripts/good.rhai"),
        "import \"lib/names\" as names;\nfn route(m, c) { names::main_provider() }",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scripts/bad.rhai"),
        "import \"../secret\" as s;\nfn route(m, c) { s::x() }",
    )
    .unwrap();
    let job = dir.path().join("jobs/x.yaml");
    let paths = |file: &str| ScriptPaths {
        route: Some(format!("scripts/{file}")),
        ..ScriptPaths::default()
    };
    let good = Scripts::load(&paths("good.rhai"), &job, Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        good.route(sms("+27821234567"), &customer(&ann())).unwrap(),
        Route::To(vec!["outbox".into()])
    );
    let errors = Scripts::load(&paths("bad.rhai"), &job, Limits::default())
        .unwrap_err()
        .errors;
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].col), (1, 8), "{:?}", errors[0]);
    assert!(
        errors[0]
            .message
            .contains("limited to files under scripts/"),
        "{:?}",
        errors[0]
    );
    // And a job cannot name a script outside scripts/ either.
    let errors = Scripts::load(&paths("../secret.rhai"), &job, Limits::default())
        .unwrap_err()
        .errors;
    assert!(
        errors[0].message.contains("is not under `scripts/`"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn compile_errors_and_missing_hooks_have_places() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/broken.rhai"),
        "fn filter(c) {\n  c.x +\n}",
    )
    .unwrap();
    std::fs::write(dir.path().join("scripts/helpers.rhai"), "fn money(x) { x }").unwrap();
    let job = dir.path().join("x.yaml");
    let paths = ScriptPaths {
        filter: Some("scripts/broken.rhai".into()),
        route: Some("scripts/helpers.rhai".into()),
        ..ScriptPaths::default()
    };
    let errors = Scripts::load(&paths, &job, Limits::default())
        .unwrap_err()
        .errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].field, "scripts.filter");
    assert_eq!(errors[0].line, 3, "{:?}", errors[0]);
    assert!(errors[0].file.ends_with("scripts/broken.rhai"));
    assert_eq!(errors[1].field, "scripts.route");
    assert!(
        errors[1]
            .message
            .contains("defines no `fn route(message, customer)`"),
        "{:?}",
        errors[1]
    );
}

#[test]
fn print_goes_to_tracing_not_stdout() {
    let s = scripts(r#"fn filter(c) { print("hello"); debug(c.id); true }"#);
    assert!(s.filter(&customer(&ann())).unwrap());
}

#[test]
fn one_call_cannot_change_what_the_next_sees() {
    let s = scripts(
        r#"fn vars(c) { c.name = "Mallory"; c.attrs.balance = "0"; #{} }
fn filter(c) { c.name == "Ann Dlamini" && c.attrs.balance == "-1250.5" }"#,
    );
    let c = customer(&ann());
    let _ = s.vars(&c);
    assert!(s.filter(&c).unwrap());
}
