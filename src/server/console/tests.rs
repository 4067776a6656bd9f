//! The console's handlers, through the whole server router (no network): every page and
//! fragment, sign-in and sessions, CSRF, and escaping.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use crate::config::Config;
use crate::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crate::history::{MessageState, MessageType, RunId, Trigger};
use crate::job::Channel;
use crate::recipients::{Recipient, RecipientKind, Status};
use crate::server::{AppState, Shared, router};

const TOKEN: &str = "console-test-token-1234";

struct World {
    _dir: tempfile::TempDir,
    state: Shared,
    app: axum::Router,
    run: RunId,
}

fn customer(id: u64, name: &str, location: &str) -> Recipient {
    Recipient {
        kind: RecipientKind::Customer,
        id,
        login: None,
        status: Status::Active,
        name: name.into(),
        email: None,
        billing_email: None,
        phone: Some(format!("+2782123456{id}")),
        phone_raw: None,
        category: None,
        location: Some(location.into()),
        billing_type: None,
        partner: None,
        tariffs: vec![],
        timezone: None,
        attrs: Default::default(),
    }
}

/// A project with two customers (one named `<script>…`), a job, and one run with a
/// failed and a queued message.
/// A run of `job` over customers 1 and 2 (outbox): the first message failed
/// (`E42 number <barred>`), the second still queued.
fn run_with_a_failure(store: &dyn crate::store::Store, job: &str) -> RunId {
    let ledger = Ledger::new(store);
    let run = ledger
        .create_run(NewRun {
            job: job.into(),
            trigger: Trigger::Manual,
            channels: vec![Channel::Sms],
            provider: "outbox".into(),
            body: "Hi <b>{{ customer.name }}</b>".into(),
            subject: None,
        })
        .unwrap();
    let planned = [1u64, 2]
        .map(|id| NewMessage {
            recipient_kind: RecipientKind::Customer,
            recipient_id: id,
            address: format!("+2782123456{id}"),
            channel: Channel::Sms,
            provider: "outbox".into(),
            kind: MessageType::Message,
            subject: None,
            body: format!("Hi {id}"),
            encoding: Some("gsm7".into()),
            parts: 1,
            state: MessageState::Queued,
            reason: None,
            error: None,
            snapshot: Default::default(),
            html: None,
            route: Vec::new(),
        })
        .to_vec();
    let ids = ledger.plan(run.id, planned).unwrap();
    ledger.finish_planning(run.id).unwrap();
    ledger
        .transition(&[Change::to(ids[0], MessageState::Sending)])
        .unwrap();
    let mut failed = Change::to(ids[0], MessageState::Failed);
    failed.error = Some(("E42".into(), "number <barred>".into()));
    ledger.transition(&[failed]).unwrap();
    run.id
}

fn world(token: Option<&str>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("crier.yaml");
    let head = format!(
        "timezone: Africa/Johannesburg\ndata_dir: {}\n",
        dir.path().join("data").display()
    );
    let text = match token {
        Some(t) => format!("{head}server:\n  token: {t}\n"),
        None => head,
    };
    let config = Config::parse(&config_path, &text, &|_| None).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/notice.yaml"),
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients:\n  where: { location: Cape Town }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("jobs/broken.yaml"),
        "send_to: sms\nshedule: x\n",
    )
    .unwrap();
    let store: Arc<dyn crate::store::Store> =
        Arc::from(crate::store::open(&config.store_config()).unwrap());
    store
        .upsert_recipients(
            &[
                customer(1, "<script>alert(1)</script>", "Cape Town"),
                customer(2, "Ben", "Durban"),
            ],
            true,
        )
        .unwrap();
    let run = run_with_a_failure(store.as_ref(), "notice");
    let state = Arc::new(AppState {
        config,
        store,
        metrics: Default::default(),
        jobs_dir: dir.path().join("jobs"),
        scheduler: None,
        worker: None,
    });
    World {
        app: router(state.clone()),
        state,
        _dir: dir,
        run,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl World {
    async fn call(&self, request: Request<Body>) -> Answer {
        let r = self.app.clone().oneshot(request).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut r = Request::get(path);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.call(r.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookie: &str, form: &str) -> Answer {
        self.call(
            Request::post(path)
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Signs in through the form; returns the session cookie and its CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let page = self.get("/signin", None).await;
        assert_eq!(page.status, StatusCode::OK);
        let pre = cookie_of(&page);
        let csrf = csrf_of(&page.body);
        let form = format!("token={TOKEN}&csrf={csrf}&next=%2Fruns");
        let r = self.post("/signin", &pre, &form).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.headers[header::LOCATION], "/runs");
        let cookie = cookie_of(&r);
        assert_ne!(cookie, pre, "a new session id on sign-in");
        let page = self.get("/runs", Some(&cookie)).await;
        (cookie, csrf_of(&page.body))
    }
}

fn cookie_of(a: &Answer) -> String {
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 64].to_string()
}

#[tokio::test]
async fn pages_need_a_session_and_sign_in_sets_one() {
    let w = world(Some(TOKEN));
    let r = w.get("/runs?status=sent", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers[header::LOCATION],
        "/signin?next=%2Fruns%3Fstatus%3Dsent"
    );
    // htmx gets a 401 with where to go.
    let r = w
        .call(
            Request::get("/runs")
                .header("HX-Request", "true")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key("hx-redirect"));
    // A made-up cookie is no session.
    let r = w.get("/runs", Some("crier_session=0123")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    // A wrong token is refused, and the page does not echo it.
    let page = w.get("/signin", None).await;
    let pre = cookie_of(&page);
    let csrf = csrf_of(&page.body);
    let r = w
        .post("/signin", &pre, &format!("token=wrong-guess&csrf={csrf}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("That is not the server&#x27;s token."),
        "{}",
        r.body
    );
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    assert!(!r.body.contains("wrong-guess") && !r.body.contains(TOKEN));
    // The pre-session is not signed in.
    assert_eq!(
        w.get("/runs", Some(&pre)).await.status,
        StatusCode::SEE_OTHER
    );

    let (cookie, _) = w.sign_in().await;
    let r = w.get("/runs", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("<table class=\"runs\">"));
    assert!(!r.body.contains(TOKEN));
    // The API still takes its bearer token, and not the console's cookie.
    let r = w.get("/api/runs", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = w
        .call(
            Request::get("/api/runs")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let w = world(Some(TOKEN));
    let (cookie, csrf) = w.sign_in().await;
    let r = w.post("/signout", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        w.get("/runs", Some(&cookie)).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused() {
    let w = world(Some(TOKEN));
    let (cookie, csrf) = w.sign_in().await;
    let cancel = format!("/runs/{}/cancel", w.run);
    for form in [
        "",
        "csrf=",
        "csrf=0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = w.post(&cancel, &cookie, form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}");
    }
    let ledger = Ledger::new(w.state.store.as_ref());
    assert_eq!(
        ledger
            .run(w.run)
            .unwrap()
            .counters
            .get(MessageState::Queued),
        1
    );
    // With it (form field or htmx's header), the cancel goes through.
    let r = w.post(&cancel, &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        ledger
            .run(w.run)
            .unwrap()
            .counters
            .get(MessageState::Queued),
        0
    );
    assert_eq!(
        ledger
            .run(w.run)
            .unwrap()
            .counters
            .get(MessageState::Cancelled),
        1
    );
    let r = w
        .call(
            Request::post(format!("/runs/{}/remove", w.run))
                .header(header::COOKIE, &cookie)
                .header("X-CSRF-Token", &csrf)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(ledger.run(w.run).unwrap().removed);
    // The sign-in form has its own.
    let page = w.get("/signin", None).await;
    let r = w
        .post(
            "/signin",
            &cookie_of(&page),
            &format!("token={TOKEN}&csrf=nope"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn history_filters_come_from_the_url_and_bad_ones_are_named() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    let r = w
        .get(
            "/runs?status=processing&period=today&job=notice",
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains(&format!("href=\"/runs/{}\"", w.run)),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("<option value=\"processing\" selected>Processing</option>")
    );
    let r = w.get("/runs?status=sent", Some(&cookie)).await;
    assert!(!r.body.contains(&format!("/runs/{}", w.run)));
    let r = w.get("/runs?period=fortnight", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("unknown period `fortnight`"), "{}", r.body);
    let r = w.get("/runs?colour=red", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_page_is_whole_or_its_fragment_for_htmx() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    let whole = w.get("/runs", Some(&cookie)).await;
    assert!(whole.body.starts_with("<!doctype html>"));
    assert!(whole.body.contains("/assets/htmx.min.js"));
    let part = w
        .call(
            Request::get("/runs")
                .header(header::COOKIE, &cookie)
                .header("HX-Request", "true")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(part.status, StatusCode::OK);
    assert!(!part.body.contains("<html") && part.body.contains("<h1>History</h1>"));
    assert!(
        part.headers[header::VARY]
            .to_str()
            .unwrap()
            .contains("HX-Request")
    );
}

#[tokio::test]
async fn every_screen_and_fragment_answers() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    let id = w.run;
    for (path, expect) in [
        ("/".to_string(), "Messages per day"),
        ("/runs".to_string(), "Runs, newest first"),
        (format!("/runs/{id}"), "sse-connect"),
        (format!("/runs/{id}/progress"), "id=\"progress\""),
        (
            format!("/runs/{id}/breakdown"),
            "Outcomes by recipient field",
        ),
        (
            format!("/runs/{id}/breakdown?by=billing_type"),
            "Billing type",
        ),
        ("/messages".to_string(), "Messages, newest first"),
        (
            format!("/messages?run={id}&state=failed"),
            "number &lt;barred&gt;",
        ),
        (format!("/messages?id={id}-0"), &format!("{id}-000000")),
        (format!("/messages/{id}-0"), "Transitions"),
        ("/jobs".to_string(), "notice"),
        ("/jobs/notice".to_string(), "Send as test"),
        (
            "/jobs/notice/preview".to_string(),
            "id=\"preview-count\">1<",
        ),
        ("/jobs/notice/confirm".to_string(), "confirm-send"),
    ] {
        let r = w.get(&path, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(r.body.contains(expect), "{path} lacks {expect}: {}", r.body);
    }
    // The tiles link to the messages of each state.
    let r = w.get(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(
        r.body
            .contains(&format!("/messages?run={id}&amp;state=failed")),
        "{}",
        r.body
    );
    // The broken job shows `crier validate`'s line.
    let r = w.get("/jobs", Some(&cookie)).await;
    assert!(
        r.body.contains("broken.yaml") && r.body.contains("shedule"),
        "{}",
        r.body
    );
    // Breakdown by location: Cape Town has the failed message.
    let r = w
        .get(&format!("/runs/{id}/breakdown?by=location"), Some(&cookie))
        .await;
    assert!(r.body.contains("<td>Cape Town</td>"), "{}", r.body);
    // Unknown things are 404/400 pages, not panics.
    assert_eq!(
        w.get("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(&cookie))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get("/runs/nope", Some(&cookie)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        w.get("/jobs/missing", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.get(&format!("/runs/{id}/breakdown?by=colour"), Some(&cookie))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_script_in_a_recipient_name_is_shown_as_text() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    for path in [
        "/jobs/notice/preview".to_string(),
        format!("/messages/{}-0", w.run),
    ] {
        let r = w.get(&path, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            !r.body.contains("<script>alert(1)</script>"),
            "{path}: {}",
            r.body
        );
        assert!(
            r.body
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{path}: {}",
            r.body
        );
    }
    // The run's body, as sent, is text too.
    let r = w.get(&format!("/runs/{}", w.run), Some(&cookie)).await;
    assert!(r.body.contains("Hi &lt;b&gt;") && !r.body.contains("Hi <b>"));
}

#[tokio::test]
async fn exports_are_the_api_csv() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    let r = w
        .get(&format!("/runs/{}/messages.csv", w.run), Some(&cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(r.body.lines().count(), 3, "{}", r.body);
    let r = w.get("/messages.csv?state=failed", Some(&cookie)).await;
    assert_eq!(r.body.lines().count(), 2, "{}", r.body);
    assert!(r.body.contains("E42"));
}

#[tokio::test]
async fn send_as_test_and_send_go_through_the_engine() {
    let w = world(Some(TOKEN));
    let (cookie, csrf) = w.sign_in().await;
    let r = w
        .post(
            "/jobs/notice/test",
            &cookie,
            &format!("csrf={csrf}&to=%2B27829999999&recipient="),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Test sent to +27829999999"), "{}", r.body);
    let ledger = Ledger::new(w.state.store.as_ref());
    let tests: Vec<_> = crate::history::query::messages(
        &ledger,
        &crate::history::query::MessageFilter {
            kind: Some(MessageType::Test),
            ..Default::default()
        },
    )
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].address, "+27829999999");

    let r = w
        .post("/jobs/notice/send", &cookie, &format!("csrf={csrf}"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let at = r.headers[header::LOCATION].to_str().unwrap().to_string();
    let id: RunId = at.strip_prefix("/runs/").unwrap().parse().unwrap();
    let run = ledger.run(id).unwrap();
    assert_eq!(run.job, "notice");
    assert_eq!(run.trigger, Trigger::Api);
}

#[tokio::test]
async fn without_a_token_the_console_is_open_on_loopback_only() {
    let w = world(None);
    let r = w.get("/runs", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = cookie_of(&r);
    // Still a CSRF token on every POST.
    let r = w
        .post(&format!("/runs/{}/cancel", w.run), &cookie, "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let config = &w.state.config;
    assert!(super::allowed(config, "127.0.0.1:8080".parse().unwrap()));
    assert!(super::allowed(config, "[::1]:8080".parse().unwrap()));
    assert!(!super::allowed(config, "0.0.0.0:8080".parse().unwrap()));
    assert!(!super::allowed(config, "192.0.2.1:8080".parse().unwrap()));
    let with_token = world(Some(TOKEN));
    assert!(super::allowed(
        &with_token.state.config,
        "0.0.0.0:8080".parse().unwrap()
    ));
}

#[tokio::test]
async fn the_assets_are_served_from_the_binary() {
    let w = world(Some(TOKEN));
    for (name, needle) in [
        ("htmx.min.js", "htmx"),
        ("htmx-ext-sse.min.js", "sse"),
        ("console.css", "--accent"),
    ] {
        let r = w.get(&format!("/assets/{name}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(r.body.contains(needle));
    }
    assert_eq!(
        w.get("/assets/../crier.yaml", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn sign_in_only_returns_to_this_console() {
    assert_eq!(
        super::safe_next(Some("/runs?status=sent")),
        "/runs?status=sent"
    );
    for bad in ["//evil.example", "https://evil.example", "/\\evil", "runs"] {
        assert_eq!(super::safe_next(Some(bad)), "/", "{bad}");
    }
}

#[tokio::test]
async fn the_event_stream_sends_whole_snapshots_then_done() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    // A finished run: one last snapshot, then `done`, then the stream ends.
    Ledger::new(w.state.store.as_ref()).cancel(w.run).unwrap();
    let r = w
        .get(&format!("/runs/{}/events", w.run), Some(&cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let progress = r.body.find("event: progress").expect("a snapshot");
    let done = r.body.find("event: done").expect("the end");
    assert!(progress < done, "{}", r.body);
    assert!(r.body.contains("data-percent=\"100\""), "{}", r.body);
    assert!(
        !r.body.contains("Cancel queued"),
        "a finished run offers no cancel"
    );
}

#[tokio::test]
async fn compose_previews_validates_downloads_and_sends() {
    let w = world(Some(TOKEN));
    let (cookie, csrf) = w.sign_in().await;
    let r = w.get("/compose", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("New mass sending"));
    let fields =
        "name=outage&location=Cape+Town&send_to=sms&message=Hi+%7B%7B+customer.name+%7D%7D";
    let r = w
        .get(&format!("/compose/preview?{fields}"), Some(&cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("id=\"preview-count\">1<"), "{}", r.body);
    // A bad value is the job parser's error, on its field.
    let r = w
        .get("/compose/preview?status=actve&message=Hi", Some(&cookie))
        .await;
    assert!(r.body.contains("recipients.where.status"), "{}", r.body);
    // The download is a job file the parser accepts.
    let r = w
        .get(&format!("/compose/job.yaml?{fields}"), Some(&cookie))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("outage.yaml")
    );
    crate::job::parse(
        &w.state.jobs_dir.join("outage.yaml"),
        &r.body,
        &w.state.config,
        &|_| None,
    )
    .unwrap();
    // Confirm lists the recipients and carries the fields on; send starts the run.
    let r = w
        .post(
            "/compose/confirm",
            &cookie,
            &format!("csrf={csrf}&{fields}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("action=\"/compose/send\"")
            && r.body.contains("name=\"location\" value=\"Cape Town\""),
        "{}",
        r.body
    );
    let r = w
        .post("/compose/send", &cookie, &format!("csrf={csrf}&{fields}"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let id: RunId = r.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .strip_prefix("/runs/")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        Ledger::new(w.state.store.as_ref()).run(id).unwrap().job,
        "outage"
    );
    // Without the token, no send.
    let r = w.post("/compose/send", &cookie, fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Save as new template: stored once, refused when the name is taken or the text bad.
    let save = format!("csrf={csrf}&{fields}&template_name=outage-sms");
    let r = w.post("/compose/template", &cookie, &save).await;
    assert!(r.body.contains("id=\"template-saved\""), "{}", r.body);
    let stored = crate::render::stored::Templates::new(w.state.store.directory())
        .get("outage-sms")
        .unwrap()
        .unwrap();
    assert_eq!(stored.body, "Hi {{ customer.name }}");
    let r = w.post("/compose/template", &cookie, &save).await;
    assert!(r.body.contains("exists already"), "{}", r.body);
    let r = w
        .post(
            "/compose/template",
            &cookie,
            &format!("csrf={csrf}&message=%7B%7B+oops&template_name=bad"),
        )
        .await;
    assert!(r.body.contains("id=\"invalid\""), "{}", r.body);
}

#[tokio::test]
async fn recipients_search_with_the_where_filters() {
    let w = world(Some(TOKEN));
    let (cookie, _) = w.sign_in().await;
    let r = w.get("/recipients?location=Cape+Town", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("<strong>1</strong> customer<"),
        "{}",
        r.body
    );
    assert!(r.body.contains("&lt;script&gt;") && !r.body.contains("<script>alert"));
    let r = w.get("/recipients?status=actve", Some(&cookie)).await;
    let at = r.body.find("id=\"recipient-count\"").unwrap();
    assert!(
        r.body.contains("class=\"alert\""),
        "{}",
        &r.body[at - 300..at + 100]
    );
    let r = w.get("/recipients/customer/1", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("receives messages"), "{}", r.body);
    assert!(r.body.contains(&format!("{}-000000", w.run)), "{}", r.body);
    assert_eq!(
        w.get("/recipients/customer/77", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_sends_the_failed_again_as_a_new_run() {
    let w = world(Some(TOKEN));
    let (cookie, csrf) = w.sign_in().await;
    // A job of its own: the one-run-per-job registry is process-wide, and other tests
    // send `notice`.
    std::fs::write(
        w.state.jobs_dir.join("again.yaml"),
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\n",
    )
    .unwrap();
    let ledger = Ledger::new(w.state.store.as_ref());
    let old = run_with_a_failure(w.state.store.as_ref(), "again");
    // Still sending (one queued): nothing to retry yet, and no button.
    let page = w.get(&format!("/runs/{}", old), Some(&cookie)).await;
    assert!(!page.body.contains("Retry failed"), "{}", page.body);
    ledger.cancel(old).unwrap();
    let page = w.get(&format!("/runs/{}", old), Some(&cookie)).await;
    assert!(page.body.contains("Retry failed (1)"), "{}", page.body);
    let r = w.post(&format!("/runs/{}/retry", old), &cookie, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "CSRF still applies");
    let r = w
        .post(
            &format!("/runs/{}/retry", old),
            &cookie,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let at = r.headers[header::LOCATION].to_str().unwrap().to_string();
    let id: RunId = at.strip_prefix("/runs/").unwrap().parse().unwrap();
    assert_ne!(id, old);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let retry = loop {
        let run = ledger.run(id).unwrap();
        if run.finished_at.is_some() {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retry never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(retry.retry_of, Some(old));
    assert_eq!(retry.job, "again");
    assert_eq!(retry.counters.total(), 1);
    assert_eq!(retry.counters.get(MessageState::Sent), 1);
    let again: Vec<_> = ledger
        .messages_of(id, None)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(again[0].recipient_id, 1);
    assert_eq!(again[0].address, "+27821234561");
    let page = w.get(&format!("/runs/{id}"), Some(&cookie)).await;
    assert!(
        page.body.contains(&format!("href=\"/runs/{}\"", old)),
        "{}",
        page.body
    );
}
