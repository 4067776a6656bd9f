//! The storage domains against every backend, on a real PostgreSQL (tests/common/pg.rs).
//!
//! The conformance suites live in the library (`crier::recipients::directory::conformance`,
//! hidden from the docs) and run here against every backend: sled in a temp dir, and
//! PostgreSQL in a fresh database per case. Beside them: the PostgreSQL plumbing's placed
//! errors (unreachable, login refused, database missing, schema too new), the migrations
//! runner, `Pg::call` from each kind of caller, a server restart, and `crier import`'s
//! write path through the PostgreSQL directory.
//!
//! Tests that stop the server take [`SERVER`] for writing; the others for reading.

mod common;
mod mocks;

use std::sync::RwLock;

use common::pg;
use crier::recipients::RecipientKind;
use crier::recipients::directory::postgres::PgDirectory;
use crier::recipients::directory::{Directory, conformance};
use crier::recipients::import::{Delimiter, ImportOptions, import};
use crier::recipients::phone::parse_region;
use crier::store::postgres::{Migration, Pg, PgSettings};
use crier::store::{Backend, StoreConfig};

static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn pg_directory() -> PgDirectory {
    PgDirectory::open(&PgSettings::new(pg::server().database())).expect("open the directory")
}

#[test]
fn sled_directory_passes_the_conformance_suite() {
    let dirs = std::cell::RefCell::new(Vec::new());
    conformance::run(&|| {
        let dir = tempfile::tempdir().unwrap();
        let store = crier::store::open(&StoreConfig {
            path: dir.path().join("store"),
            cache_bytes: 8 << 20,
            backend: Backend::Embedded,
            postgres: None,
        })
        .unwrap();
        dirs.borrow_mut().push(dir);
        let directory: Box<dyn Directory> = store;
        directory
    });
}

#[test]
fn postgres_directory_passes_the_conformance_suite() {
    let _s = shared();
    conformance::run(&|| Box::new(pg_directory()));
}

#[test]
fn unreachable_server_names_host_port_and_the_os_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://crier:hunter2@127.0.0.1:{port}/crier");
    let err = PgDirectory::open(&PgSettings::new(url))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn refused_login_names_the_role_and_never_the_password() {
    let _s = shared();
    let server = pg::server();
    let url = server.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let wrong = server.password_url(&db, "not-the-password");
    let err = PgDirectory::open(&PgSettings::new(wrong))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "PostgreSQL at 127.0.0.1:{} refused the login of role `{}`",
            server.port,
            pg::PASSWORD_ROLE
        )),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    // The right password gets in, so the refusal was the password's.
    let right = server.password_url(&db, pg::PASSWORD);
    let d = PgDirectory::open(&PgSettings::new(right)).expect("the right password");
    assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 0);
}

#[test]
fn missing_database_is_named() {
    let _s = shared();
    let url = pg::server().url("no_such_db");
    let err = PgDirectory::open(&PgSettings::new(url))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "PostgreSQL at 127.0.0.1:{} has no database `no_such_db`",
            pg::server().port
        )),
        "{text}"
    );
}

#[test]
fn a_bad_url_says_so_without_echoing_it() {
    let err = PgDirectory::open(&PgSettings::new("postgres://crier:hunter2@host:notaport/x"))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("store.url is not a PostgreSQL URL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    let _s = shared();
    let url = pg::server().database();
    let db = url.rsplit('/').next().unwrap().to_string();
    drop(PgDirectory::open(&PgSettings::new(url.clone())).unwrap());
    pg::server().psql(
        &db,
        "INSERT INTO crier.schema_migrations (domain, version, name) VALUES ('directory', 99, 'from_the_future')",
    );
    let err = PgDirectory::open(&PgSettings::new(url))
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("the directory schema in PostgreSQL at 127.0.0.1:")
            && text.contains("(schema `crier`) is at version 99, newer than this crier knows (1)"),
        "{text}"
    );
}

static TEST_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_things",
        sql: "CREATE TABLE things (id bigint PRIMARY KEY)",
    },
    Migration {
        version: 2,
        name: "add_label",
        sql: "ALTER TABLE things ADD COLUMN label text NOT NULL DEFAULT ''",
    },
];

#[test]
fn migrations_apply_once_per_domain_and_are_recorded() {
    let _s = shared();
    let url = pg::server().database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut settings = PgSettings::new(url);
    settings.schema = "analytics_x".into();
    let pg = Pg::connect(&settings).unwrap();
    pg.migrate("things", &TEST_MIGRATIONS[..1]).unwrap();
    pg.migrate("things", TEST_MIGRATIONS).unwrap();
    pg.migrate("things", TEST_MIGRATIONS).unwrap();
    // A second domain in the same schema keeps its own versions.
    drop(PgDirectory::on(Pg::connect(&settings).unwrap()).unwrap());
    let rows = pg::server().psql(
        &db,
        "SELECT domain || ':' || version || ':' || name FROM analytics_x.schema_migrations ORDER BY domain, version",
    );
    assert_eq!(
        rows,
        "directory:1:create_directory\nthings:1:create_things\nthings:2:add_label"
    );
    assert_eq!(
        pg::server().psql(
            &db,
            "SELECT count(*) FROM analytics_x.things WHERE label = ''"
        ),
        "0"
    );
    // A migration that fails leaves nothing behind: not its table, not its row.
    static BROKEN: &[Migration] = &[
        Migration {
            version: 1,
            name: "ok",
            sql: "CREATE TABLE half (id int)",
        },
        Migration {
            version: 2,
            name: "broken",
            sql: "ALTER TABLE nowhere ADD COLUMN x int",
        },
    ];
    let err = pg.migrate("broken", BROKEN).expect_err("fails");
    assert!(format!("{err:#}").contains("nowhere"), "{err:#}");
    assert_eq!(
        pg::server().psql(
            &db,
            "SELECT count(*) FROM analytics_x.schema_migrations WHERE domain = 'broken'"
        ),
        "0"
    );
    assert_eq!(
        pg::server().psql(&db, "SELECT to_regclass('analytics_x.half') IS NULL"),
        "t"
    );
}

fn count_via_call(pg: &Pg) -> i64 {
    pg.call("count", |client| async move {
        let row = client.query_one("SELECT 41 + 1", &[]).await?;
        Ok(row.get::<_, i32>(0) as i64)
    })
    .unwrap()
}

#[test]
fn call_works_from_a_plain_thread() {
    let _s = shared();
    let pg = Pg::connect(&PgSettings::new(pg::server().database())).unwrap();
    let n = std::thread::spawn(move || count_via_call(&pg))
        .join()
        .unwrap();
    assert_eq!(n, 42);
}

#[test]
fn call_works_inside_a_multi_thread_runtime() {
    let _s = shared();
    let pg = std::sync::Arc::new(Pg::connect(&PgSettings::new(pg::server().database())).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sums = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pg = pg.clone();
                tokio::spawn(async move { count_via_call(&pg) })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(sums, vec![42; 8]);
    // Dropped inside the runtime's context, the client runtime shuts down quietly.
    runtime.block_on(async move { drop(pg) });
}

#[tokio::test]
async fn call_works_inside_a_current_thread_tokio_test() {
    let _s = shared();
    let d = pg_directory();
    d.upsert_recipients(
        &[conformance::recipient(RecipientKind::Customer, 7, "seven")],
        true,
    )
    .unwrap();
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Customer, "seven")
            .unwrap(),
        Some(7)
    );
    drop(d);
}

#[test]
fn a_restarted_server_is_reconnected_and_a_stopped_one_is_reported() {
    let _exclusive = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let server = pg::server();
    let d = pg_directory();
    d.upsert_recipients(&[conformance::recipient(RecipientKind::Lead, 1, "a")], true)
        .unwrap();
    server.stop_immediate();
    let err = d
        .count_recipients(RecipientKind::Lead)
        .expect_err("server down");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port))
            && (text.contains("lost the connection") || text.contains("cannot reach")),
        "{text}"
    );
    server.start();
    // The committed row survived the crash, and the pool reconnects by itself.
    assert_eq!(d.count_recipients(RecipientKind::Lead).unwrap(), 1);
}

/// Every trap of tests/import.rs's NASTY file (BOM, CRLF, `;`, quoted newlines, a
/// repeated id, a login-only row, rejected rows).
const NASTY: &str = "\u{feff}ID;Portal login;Full name;Status;Phone number;Category;Location;Tariff plans;Overdue days;Notes\r\n\
1;000001;Zoë Müller 🎉;Active;082 123 4567;Individual;Cape Town;Internet: Fiber 100;14;\"line one\r\nline two; still notes\"\r\n\
2;000002;José Naidoo;blocked;+27 21 555 0100;Business;Durban;Internet: Fiber 50 | Voice: Basic;0;\r\n\
3;000003;Bad Status;actve;082 000 1111;Individual;Durban;;0;\r\n\
;;No Id Or Login;active;082 000 2222;;;;;\r\n\
4;000004;Invalid Phone;new;12345;Individual;Cape Town;;0;\r\n\
2;000002;José Naidoo Updated;active;+27 21 555 0100;Business;Durban;Internet: Fiber 50;0;dup\r\n\
;000099;Login Only;active;+44 7911 123456;;London;;;\r\n\
5;000005;Alien;active;;Martian;Cape Town;;;\r\n";

fn import_nasty(d: &dyn Directory, csv: &std::path::Path, dry_run: bool) -> (u64, u64, u64, u64) {
    let options = ImportOptions {
        kind: RecipientKind::Customer,
        delimiter: Delimiter::Auto,
        region: parse_region("ZA").unwrap(),
        dry_run,
        strict: false,
        rejects: None,
    };
    let r = import(d, csv, &options).expect("import");
    (
        r.inserted as u64,
        r.updated as u64,
        r.unchanged as u64,
        r.rejected as u64,
    )
}

/// `crier import`'s write path (the library function the command calls) through the
/// PostgreSQL directory gives the counts the sled store gives (tests/import.rs).
#[test]
fn import_writes_through_the_postgres_directory_as_through_sled() {
    let _s = shared();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("nasty.csv");
    std::fs::write(&csv, NASTY).unwrap();
    let url = pg::server().database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let pgd = PgDirectory::open(&PgSettings::new(url)).unwrap();
    let sled = crier::store::open(&StoreConfig {
        path: dir.path().join("store"),
        cache_bytes: 8 << 20,
        backend: Backend::Embedded,
        postgres: None,
    })
    .unwrap();
    for d in [&pgd as &dyn Directory, sled.directory()] {
        assert_eq!(import_nasty(d, &csv, true), (4, 1, 0, 3), "dry run");
        assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 0);
        assert_eq!(import_nasty(d, &csv, false), (4, 1, 0, 3));
        // The file updates id 2 twice (its two rows), so a re-import replays both updates.
        assert_eq!(import_nasty(d, &csv, false), (0, 2, 3, 3));
        assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 4);
    }
    let from_pg: Vec<_> = pgd
        .recipients(RecipientKind::Customer)
        .map(Result::unwrap)
        .collect();
    let from_sled: Vec<_> = sled
        .recipients(RecipientKind::Customer)
        .map(Result::unwrap)
        .collect();
    assert_eq!(from_pg, from_sled, "every field the same on both backends");
    assert_eq!(from_pg[1].name, "José Naidoo Updated");
    let login_only = pgd
        .recipient_id_by_login(RecipientKind::Customer, "000099")
        .unwrap()
        .expect("the login-only row got an id");
    assert!(login_only >= crier::store::LOCAL_ID_BASE);
    // The README's example query, run as an analyst would (psql), so it never rots.
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let section = &readme[readme.find("### The directory in PostgreSQL").unwrap()..];
    let start = section.find("```sql\n").unwrap() + "```sql\n".len();
    let query = &section[start..start + section[start..].find("```").unwrap()];
    let out = pg::server().psql(&db, query);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["Cape Town|1", "Durban|1", "London|1"],
        "{query}"
    );
}

fn pg_history() -> crier::history::store::postgres::PgHistory {
    crier::history::store::postgres::PgHistory::open(&PgSettings::new(pg::server().database()))
        .expect("open the history")
}

#[test]
fn sqlite_history_passes_the_conformance_suite() {
    let dirs = std::cell::RefCell::new(Vec::new());
    crier::history::store::conformance::run(&|| {
        let dir = tempfile::tempdir().unwrap();
        let h =
            crier::history::store::sqlite::SqliteHistory::open(&dir.path().join("history.sqlite3"))
                .unwrap();
        dirs.borrow_mut().push(dir);
        Box::new(h)
    });
}

#[test]
fn postgres_history_passes_the_conformance_suite() {
    let _s = shared();
    crier::history::store::conformance::run(&|| Box::new(pg_history()));
}

const TOKEN_ID: &str = "STORAGE-TOKEN-01-B";
const SECRET: &str = "storage-secret-value";

/// A project on the PostgreSQL database `url` with `n` customers in `people.csv`, the
/// `bulksms` provider at `mock_url` and one SMS job, `jobs/remind.yaml`.
fn pg_project(url: &str, mock_url: &str, n: usize) -> common::Project {
    let p = common::Project::new();
    let mut csv = String::from("id,name,status,phone,location\n");
    for i in 1..=n {
        let town = if i % 2 == 0 { "Cape Town" } else { "Durban" };
        csv.push_str(&format!("{i},Customer {i},active,082 555 {i:04},{town}\n"));
    }
    p.write("people.csv", csv);
    p.write(
        "crier.yaml",
        format!(
            "store:\n  backend: postgres\n  url: \"{url}\"\nproviders:\n  bulksms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {mock_url}\n    limits: {{ concurrency: 4, backoff: 10ms }}\nchannels:\n  sms: bulksms\n"
        ),
    );
    p.write(
        "jobs/remind.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}, your invoice is due\"\nrecipients: {}\n",
    );
    p
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The database name at the end of a harness URL.
fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn import_send_and_history_work_end_to_end_on_postgres() {
    let _s = shared();
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let server = pg::server();
    let url = server.database();
    let n = 120;
    let p = pg_project(&url, &mock.url, n);
    let import = p.crier(&["import", "people.csv"]);
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert!(
        import.stdout.contains(&format!("{n} inserted")),
        "{}",
        import.stdout
    );
    let preview = p.crier(&["preview", "jobs/remind.yaml"]);
    assert_eq!(preview.code, 0, "{}", preview.stderr);
    assert!(
        preview.stdout.contains(&format!("messages: {n} to send")),
        "{}",
        preview.stdout
    );
    let send = p.crier(&["send", "jobs/remind.yaml", "--yes"]);
    assert_eq!(send.code, 0, "{}\n{}", send.stdout, send.stderr);
    assert_eq!(mock.state.accepted_count(), n);
    // Nothing went to the data dir: both domains are in the database.
    assert!(!p.path().join("data/history.sqlite3").exists());
    assert!(!p.path().join("data/store").exists());

    let history = p.crier(&["history", "--format", "json"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs[0]["status"], "sent", "{}", history.stdout);
    assert_eq!(runs[0]["counters"]["sent"], n as u64);
    let run = runs[0]["id"].as_str().unwrap();
    let logs = p.crier(&["logs", "--run", run, "--format", "csv"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert_eq!(logs.stdout.lines().count(), n + 1);
    // An analyst's psql sees the same, with the recipients' locations as planned.
    let by_state = server.psql(
        db_name(&url),
        "SELECT state || '=' || count(*) FROM crier.messages GROUP BY state",
    );
    assert_eq!(by_state, format!("sent={n}"));
    let by_location = server.psql(
        db_name(&url),
        "SELECT location || '=' || count(*) FROM crier.messages GROUP BY location ORDER BY location",
    );
    assert_eq!(
        by_location,
        format!("Cape Town={}\nDurban={}", n / 2, n / 2)
    );
    // A second send of the same job refuses nobody and sends again (a new run).
    let again = p.crier(&["history", "show", run]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("status:    sent"), "{}", again.stdout);
}

#[test]
fn postgres_stopped_mid_run_pauses_and_the_resume_sends_nobody_twice() {
    let _w = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state
        .set_fault_every(1, mocks::Fault::Delay(std::time::Duration::from_millis(10)));
    let server = pg::server();
    let url = server.database();
    let n = 400;
    let p = pg_project(&url, &mock.url, n);
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["send", "jobs/remind.yaml", "--yes"])
        .current_dir(p.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while mock.state.accepted_count() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not get going"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.stop_immediate();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the run went on without its database: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", server.port)),
        "the error names the server: {stderr}"
    );
    let at_stop = mock.state.accepted_count();
    assert!(at_stop < n, "everyone was sent though the history was down");
    server.start();

    let history = p.crier(&["history", "--status", "any", "--format", "json"]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let resumed = p.crier(&["send", "jobs/remind.yaml", "--resume", &run]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    // Everyone exactly once at the provider: what was in flight when the database went
    // away was resubmitted with its deduplication id, which BulkSMS recognises.
    let accepted = mock.state.accepted();
    let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), n, "recipients missed");
    assert_eq!(accepted.len(), n, "sent twice");
    let by_state = server.psql(
        db_name(&url),
        "SELECT state || '=' || count(*) FROM crier.messages GROUP BY state",
    );
    assert_eq!(by_state, format!("sent={n}"));
    println!(
        "postgres stopped mid-run: {n} recipients, {at_stop} accepted when the server stopped; resumed: {n} sent, 0 twice"
    );
}
