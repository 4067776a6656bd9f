//! The PostgreSQL plumbing every PostgreSQL backend shares: the pool, a private runtime,
//! placed errors and the migrations runner.
//!
//! crier's storage traits are synchronous: they are called from plain threads (commands)
//! and from inside tokio tasks (the engine, the server). tokio-postgres is asynchronous,
//! so [`Pg`] owns a small tokio runtime of its own: [`Pg::call`] runs a future on it with a
//! pooled connection and waits for the answer on a std channel. That works from any
//! thread, including one of another runtime (a multi-thread runtime's worker yields its
//! other tasks first, with `block_in_place`; a current-thread runtime simply waits, as the
//! work runs on the private runtime's own threads). Async callers on a hot path (a shared
//! rate limit's reservations) use [`Pg::call_async`] instead, which awaits the answer on
//! a oneshot channel and blocks no thread.
//!
//! Every connection sets `search_path` to the configured schema (`store.schema`, default
//! `crier`), so the SQL files name tables without a schema and read as an analyst would
//! type them in psql.
//!
//! Errors name the server (host and port, never the URL: it may hold the password) and
//! say what to do: unreachable (with the OS's error), authentication refused, database
//! missing, schema newer than this binary, connection lost.
//!
//! [`Pg::migrate`] applies a domain's versioned SQL migrations at open, each in the same
//! transaction as its row in `schema_migrations(domain, version, name, applied_at)`, under
//! an advisory lock so two crier processes starting together do not race.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use thiserror::Error;
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use super::StoreError;
use crate::config::SecretUrl;

/// Default of `store.pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default of `store.schema`.
pub const DEFAULT_SCHEMA: &str = "crier";

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a free pooled connection.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of a PostgreSQL store, from `store:` in `crier.yaml`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (or libpq's `key=value` form).
    pub url: SecretUrl,
    /// Most connections open at once.
    pub pool_size: usize,
    /// The schema crier's tables live in.
    pub schema: String,
}

impl PgSettings {
    /// Settings for `url` with the default pool size and schema (tests, benchmarks).
    pub fn new(url: impl Into<String>) -> PgSettings {
        PgSettings {
            url: SecretUrl::new(url),
            pool_size: DEFAULT_POOL_SIZE,
            schema: DEFAULT_SCHEMA.into(),
        }
    }
}

/// Is `name` usable as `store.schema`? (Lower-case SQL identifier, so it needs no quoting.)
pub fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// What went wrong talking to PostgreSQL. No variant carries the URL or the password.
#[derive(Debug, Error)]
pub enum PgError {
    #[error(
        "store.url is not a PostgreSQL URL (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
    )]
    BadUrl,
    #[error("store.url: the environment variable `{0}` is not set")]
    UnsetUrl(String),
    #[error("store.schema `{0}` is not a lower-case SQL identifier (e.g. `crier`)")]
    BadSchema(String),
    #[error(
        "cannot reach PostgreSQL at {server}: {error} (is the server running, and is store.url's host and port right?)"
    )]
    Unreachable { server: String, error: String },
    #[error(
        "PostgreSQL at {server} refused the login of role `{user}`: {detail} (check the user and password in store.url)"
    )]
    AuthRefused {
        server: String,
        user: String,
        detail: String,
    },
    #[error(
        "PostgreSQL at {server} has no database `{database}` (create it: `createdb -h HOST -p PORT {database}`)"
    )]
    DatabaseMissing { server: String, database: String },
    #[error(
        "the {domain} schema in PostgreSQL at {server} (schema `{schema}`) is at version {found}, newer than this crier knows ({known}): upgrade crier, or point it at another database"
    )]
    SchemaTooNew {
        server: String,
        schema: String,
        domain: String,
        found: i32,
        known: i32,
    },
    #[error("lost the connection to PostgreSQL at {server}: {detail}")]
    Lost { server: String, detail: String },
    #[error("PostgreSQL at {server}: {what}: {detail}")]
    Query {
        server: String,
        what: String,
        detail: String,
    },
}

/// One versioned migration of a domain: applied once, in order, never edited once released.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    /// A short name for `schema_migrations.name` (`create_recipients`).
    pub name: &'static str,
    /// The SQL itself, usually `include_str!` of the `.sql` file beside the backend.
    pub sql: &'static str,
}

/// A pool of connections to one PostgreSQL database, with the runtime that drives it.
/// Clones share both (a store bundle hands one to its directory and one to its history).
#[derive(Clone)]
pub struct Pg {
    runtime: std::sync::Arc<ClientRuntime>,
    pool: Pool,
    /// How to connect, for a connection of its own outside the pool ([`Pg::listen`]).
    config: tokio_postgres::Config,
    schema: String,
    /// `host:port`, for messages.
    server: String,
    user: String,
    database: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("server", &self.server)
            .field("database", &self.database)
            .field("schema", &self.schema)
            .finish()
    }
}

impl Pg {
    /// Connects (one connection is opened now, so a bad URL, an unreachable server, a
    /// refused login or a missing database fail here, placed) and creates the schema.
    pub fn connect(settings: &PgSettings) -> Result<Pg, StoreError> {
        if let Some(var) = settings.url.unset_var() {
            return Err(PgError::UnsetUrl(var.to_string()).into());
        }
        if !valid_schema(&settings.schema) {
            return Err(PgError::BadSchema(settings.schema.clone()).into());
        }
        let mut config: tokio_postgres::Config =
            settings.url.expose().parse().map_err(|_| PgError::BadUrl)?;
        config
            .options(format!("-c search_path={}", settings.schema))
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("crier");
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("(none)").to_string();
        let database = config
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("crier-postgres")
            .enable_all()
            .build()
            .map_err(|error| PgError::Query {
                server: format!("{host}:{port}"),
                what: "start the client runtime".into(),
                detail: error.to_string(),
            })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| PgError::Query {
                server: format!("{host}:{port}"),
                what: "build the connection pool".into(),
                detail: e.to_string(),
            })?;
        let pg = Pg {
            runtime: std::sync::Arc::new(ClientRuntime(Some(runtime))),
            pool,
            config,
            schema: settings.schema.clone(),
            server: format!("{host}:{port}"),
            user,
            database,
        };
        let create = format!("CREATE SCHEMA IF NOT EXISTS {}", pg.schema);
        pg.call("create the schema", move |client| async move {
            // Serialised with migrations: CREATE SCHEMA IF NOT EXISTS races with itself.
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); {create}; COMMIT"
                ))
                .await
        })?;
        Ok(pg)
    }

    /// The schema crier's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Runs `f` with a pooled connection on the private runtime and waits for its result.
    /// `what` names the operation in errors (`upsert recipients`).
    pub fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        self.start(what, f).wait()
    }

    /// [`Pg::call`] started now and answered later ([`Pending::wait`]): a reader asks for
    /// its next page before it works on this one, so the server and the reader work at
    /// once. Dropping it abandons the answer, not the work.
    pub fn start<T, F, Fut>(&self, what: &str, f: F) -> Pending<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.begin(what, async move {
            match pool.get().await {
                Ok(client) => f(client).await.map_err(Failure::Query),
                Err(e) => Err(Failure::Pool(e)),
            }
        })
    }

    /// A pooled connection held by the caller for several [`Pg::run`]s: a transaction
    /// spans them (`BEGIN` … `COMMIT` on this one connection). It goes back to the pool
    /// when the last clone is dropped.
    pub fn checkout(&self, what: &str) -> Result<std::sync::Arc<Object>, StoreError> {
        self.call(
            what,
            |client| async move { Ok(std::sync::Arc::new(client)) },
        )
    }

    /// Runs `fut` (on a connection from [`Pg::checkout`]) on the private runtime and waits
    /// for its result.
    pub fn run<T, Fut>(&self, what: &str, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        self.wait(what, async move { fut.await.map_err(Failure::Query) })
    }

    /// Spawns `fut` on the private runtime and returns at once (a producer feeding a
    /// channel the caller reads).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let runtime = self.runtime.0.as_ref().expect("runtime lives until drop");
        runtime.spawn(fut);
    }

    /// Listens on `channel` (`LISTEN`) on a connection of its own, outside the pool, and
    /// passes each notification's payload on; the receiver ends when the connection does
    /// (the caller falls back to polling).
    pub fn listen(
        &self,
        channel: &'static str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, StoreError> {
        let config = self.config.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(async move {
            use futures_util::StreamExt;
            let (client, mut connection) = match config.connect(NoTls).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let statement = format!("LISTEN {channel}");
            {
                let listen = client.batch_execute(&statement);
                tokio::pin!(listen);
                // The connection must be driven while LISTEN waits for its answer.
                loop {
                    tokio::select! {
                        done = &mut listen => {
                            let _ = ready_tx.send(done);
                            break;
                        }
                        message = messages.next() => if message.is_none() { return },
                    }
                }
            }
            // The client lives as long as the connection is listened to.
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            drop(client);
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(e)) => Err(self.query_error("listen for notifications", e)),
            Err(_) => Err(PgError::Lost {
                server: self.server.clone(),
                detail: "listen for notifications: the client task ended".into(),
            }
            .into()),
        }
    }

    /// A query's error as [`Pg::call`] would report it.
    pub fn query_error(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        self.classify(what, Failure::Query(e)).into()
    }

    /// Spawns `fut` on the private runtime and waits for it on a std channel, from any
    /// kind of caller.
    fn wait<T, Fut>(&self, what: &str, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        self.begin(what, fut).wait()
    }

    /// Spawns `fut` on the private runtime; its answer arrives on a std channel.
    fn begin<T, Fut>(&self, what: &str, fut: Fut) -> Pending<'_, T>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.0.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        Pending {
            pg: self,
            what: what.to_string(),
            answer: rx,
        }
    }

    /// [`Pg::call`] for async callers: the work runs on the private runtime as there, and
    /// the caller's task awaits the answer instead of blocking its thread (a hot path
    /// such as a shared rate limit's reservation). Dropping the future abandons the
    /// answer, not the work: a statement already sent still completes.
    pub async fn call_async<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = self.pool.clone();
        let runtime = self.runtime.0.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => f(client).await.map_err(Failure::Query),
                Err(e) => Err(Failure::Pool(e)),
            };
            let _ = tx.send(result);
        });
        self.answer(what, rx.await.ok())
    }

    /// The caller's result from the private runtime's answer (`None`: it gave none).
    fn answer<T>(&self, what: &str, received: Option<Result<T, Failure>>) -> Result<T, StoreError> {
        match received {
            Some(Ok(value)) => Ok(value),
            Some(Err(failure)) => Err(self.classify(what, failure).into()),
            None => Err(PgError::Lost {
                server: self.server.clone(),
                detail: format!("{what}: the client task ended without an answer"),
            }
            .into()),
        }
    }

    /// Applies `migrations` of `domain` (ascending versions) that this database lacks, each
    /// in one transaction with its `schema_migrations` row; refuses a database whose
    /// `domain` is at a version newer than the last of `migrations`.
    pub fn migrate(
        &self,
        domain: &str,
        migrations: &'static [Migration],
    ) -> Result<(), StoreError> {
        let known = migrations.last().map_or(0, |m| m.version);
        let owned_domain = domain.to_string();
        let found = self.call("apply migrations", move |mut client| async move {
            let tx = client.transaction().await?;
            tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK}); {}",
                MIGRATIONS_TABLE
            ))
            .await?;
            let row = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE domain = $1",
                    &[&owned_domain],
                )
                .await?;
            let found: i32 = row.get(0);
            if found > known {
                return Ok(found);
            }
            for m in migrations.iter().filter(|m| m.version > found) {
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (domain, version, name) VALUES ($1, $2, $3)",
                    &[&owned_domain, &m.version, &m.name],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(found)
        })?;
        if found > known {
            return Err(PgError::SchemaTooNew {
                server: self.server.clone(),
                schema: self.schema.clone(),
                domain: domain.to_string(),
                found,
                known,
            }
            .into());
        }
        Ok(())
    }

    fn classify(&self, what: &str, failure: Failure) -> PgError {
        let server = self.server.clone();
        let e = match failure {
            Failure::Query(e) => e,
            Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => e,
            Failure::Pool(deadpool_postgres::PoolError::Timeout(_)) => {
                return PgError::Unreachable {
                    server,
                    error: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                };
            }
            Failure::Pool(other) => {
                return PgError::Query {
                    server,
                    what: what.into(),
                    detail: other.to_string(),
                };
            }
        };
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return PgError::AuthRefused {
                    server,
                    user: self.user.clone(),
                    detail: db.message().to_string(),
                };
            }
            if *code == SqlState::INVALID_CATALOG_NAME {
                return PgError::DatabaseMissing {
                    server,
                    database: self.database.clone(),
                };
            }
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
            {
                return PgError::Lost {
                    server,
                    detail: db.message().to_string(),
                };
            }
            return PgError::Query {
                server,
                what: what.into(),
                detail: db.message().to_string(),
            };
        }
        if let Some(io) = io_source(&e) {
            return PgError::Unreachable {
                server,
                error: io.to_string(),
            };
        }
        if e.is_closed() {
            return PgError::Lost {
                server,
                detail: format!("{what}: {e}"),
            };
        }
        PgError::Query {
            server,
            what: what.into(),
            detail: e.to_string(),
        }
    }
}

/// The key of the advisory lock that serialises schema changes.
const MIGRATION_LOCK: i64 = 0x6372_6965_7200; // "crier\0"

/// The table the migrations runner keeps; created before any domain's first migration.
const MIGRATIONS_TABLE: &str = include_str!("postgres/schema_migrations.sql");

/// A call under way on the private runtime ([`Pg::start`]).
pub struct Pending<'a, T> {
    pg: &'a Pg,
    what: String,
    answer: std::sync::mpsc::Receiver<Result<T, Failure>>,
}

impl<T> Pending<'_, T> {
    /// Waits for the answer, from any kind of caller.
    pub fn wait(self) -> Result<T, StoreError> {
        let wait = || self.answer.recv();
        let received = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        self.pg.answer(&self.what, received.ok())
    }
}

enum Failure {
    Query(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

/// The OS error under a client error, if it is one (connection refused, no route).
fn io_source(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// The private runtime; `Some` until dropped.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    /// A runtime may not be dropped inside another one's async context (crier drops stores
    /// in tasks), so it is shut down in the background instead; its connections go with it.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
