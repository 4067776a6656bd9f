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
        let h = crier::history::store::sqlite::SqliteHistory::open(
            &dir.path().join("history.sqlite3"),
        )
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
