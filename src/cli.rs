//! The command line: every command, its flags, and an example for each.
//!
//! Exit codes: 0 ok, 1 the work failed or the input was invalid, 2 bad usage (clap);
//! `bounces ingest` answers its MTA in `sysexits.h` codes (see `commands/bounces.rs`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::recipients::RecipientKind;

#[derive(Debug, Parser)]
#[command(
    name = "crier",
    version,
    about = "Scheduled mass messaging (SMS, email, customer portal) for internet providers.",
    after_help = "Quick start:\n  crier import jobs/data/customers.csv\n  crier send jobs/payment-reminder.yaml --yes\n\nSee each command's --help for an example."
)]
pub struct Cli {
    /// Project config file (default ./crier.yaml; built-in defaults if it does not exist).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Makes every relative path argument relative to `cwd` instead (a command carried out
    /// by the running daemon for a process in another directory).
    pub fn rebase(&mut self, cwd: &std::path::Path) {
        let at = |p: &mut PathBuf| *p = crate::control::rebased(p, cwd);
        if let Some(config) = &mut self.config {
            at(config);
        }
        match &mut self.command {
            Command::Validate(a) => a.paths.iter_mut().for_each(at),
            Command::Import(a) => {
                at(&mut a.file);
                if let Some(r) = &mut a.rejects {
                    at(r);
                }
            }
            Command::Preview(a) => at(&mut a.job),
            Command::Send(a) => at(&mut a.job),
            Command::Templates(TemplatesCommand::Save { file, .. }) => at(file),
            Command::Optout(OptoutCommand::Import { file }) => at(file),
            Command::Bounces(BouncesCommand::Ingest(a)) => {
                if let Some(file) = a.file.as_mut().filter(|f| f.as_os_str() != "-") {
                    at(file);
                }
                if let Some(dir) = &mut a.maildir {
                    at(dir);
                }
            }
            Command::Run(a) => at(&mut a.jobs),
            Command::Jobs(a) => at(&mut a.jobs),
            Command::Serve(a) => at(&mut a.jobs),
            Command::Recipients(a) => {
                if let Some(job) = &mut a.job {
                    at(job);
                }
            }
            Command::Schema(_)
            | Command::Config(_)
            | Command::Templates(_)
            | Command::Optout(_)
            | Command::History(_)
            | Command::Logs(_)
            | Command::Providers(_)
            | Command::Workers(_)
            | Command::Portal(_) => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check crier.yaml and job files and print every error.
    #[command(
        after_help = "Example:\n  crier validate            # crier.yaml and jobs/\n  crier validate jobs/payment-reminder.yaml"
    )]
    Validate(ValidateArgs),
    /// Print the JSON Schema of job files (or of crier.yaml) for editors.
    #[command(after_help = "Example:\n  crier schema > job.schema.json\n  crier schema config")]
    Schema(SchemaArgs),
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Import customers or leads from a CSV file into the store.
    #[command(
        after_help = "Example:\n  crier import customers.csv --rejects rejects.csv\n  crier import leads.csv --kind lead --delimiter ';' --dry-run"
    )]
    Import(ImportArgs),
    /// Preview a job: who it reaches, who is skipped and why, the first messages, the cost.
    #[command(
        after_help = "Example:\n  crier preview jobs/payment-reminder.yaml --limit 3\n  crier preview jobs/payment-reminder.yaml --recipient 1042"
    )]
    Preview(PreviewArgs),
    /// Send a job now: the preview, a confirmation, then every message, recorded in the history.
    #[command(
        after_help = "Example:\n  crier send jobs/payment-reminder.yaml          # asks before sending\n  crier send jobs/payment-reminder.yaml --yes\n  crier send jobs/payment-reminder.yaml --test-to '082 123 4567' --recipient 1042"
    )]
    Send(SendArgs),
    /// Stored templates that jobs use as `template: stored:NAME`.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// The opt-out list: addresses no job ever messages.
    #[command(subcommand)]
    Optout(OptoutCommand),
    /// Bounces and abuse reports that MTAs send back: each message's fate, opt-outs.
    #[command(subcommand)]
    Bounces(BouncesCommand),
    /// Mass sendings: list by status and period, show, recipients, cancel, delete.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Example:\n  crier history --status sent_with_error --period last-7-days\n  crier history show 01JDZ8X6Q4T5N0V9K3M2R7W1YB\n  crier history recipients 01JDZ8X6Q4T5N0V9K3M2R7W1YB --state failed --format csv > failed.csv"
    )]
    History(HistoryArgs),
    /// Per-message log of every channel (Splynx's Logs → SMS), filterable and exportable.
    #[command(
        after_help = "Example:\n  crier logs --channel sms --state failed --period today\n  crier logs --phone '082 123 4567' --format csv > messages.csv"
    )]
    Logs(LogsArgs),
    /// Run the daemon: fire every scheduled job on time, serve the HTTP API if configured.
    #[command(
        after_help = "Example:\n  crier run                 # jobs/ in this directory\n  crier run --jobs /etc/crier/jobs --strict"
    )]
    Run(RunArgs),
    /// Scheduled jobs: their next fire times and last runs.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Example:\n  crier jobs\n  crier jobs next payment-reminder --count 5 --format json"
    )]
    Jobs(JobsArgs),
    /// Workers on one PostgreSQL store: who is alive, who leads the scheduler, what each holds.
    #[command(after_help = "Example:\n  crier workers\n  crier workers --format json")]
    Workers(WorkersArgs),
    /// Run the HTTP server: delivery reports, the query API, the portal inbox, metrics.
    #[command(
        after_help = "Example:\n  CRIER_API_TOKEN=... crier serve\n  crier serve --listen 0.0.0.0:8025"
    )]
    Serve(ServeArgs),
    /// Providers: check credentials and read balances.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// The customer-portal inbox: what the `portal` channel delivered.
    #[command(subcommand)]
    Portal(PortalCommand),
    /// List the recipients a job, or a filter, reaches.
    #[command(
        after_help = "Example:\n  crier recipients jobs/payment-reminder.yaml --limit 20\n  crier recipients --where status=active --where location='Cape Town' --format csv"
    )]
    Recipients(RecipientsArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Job files or directories (default: jobs/).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Job,
    Config,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which file's schema.
    #[arg(value_enum, default_value_t = SchemaKind::Job)]
    pub kind: SchemaKind,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config with every secret redacted.
    #[command(
        after_help = "Example:\n  crier config show\n  crier --config /etc/crier/crier.yaml config show"
    )]
    Show,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DelimiterArg {
    Auto,
    #[value(name = ",")]
    Comma,
    #[value(name = ";")]
    Semicolon,
    #[value(name = "tab")]
    Tab,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file (a Splynx customer export works as is).
    pub file: PathBuf,
    /// What the rows are.
    #[arg(long, value_enum, default_value_t = KindArg::Customer)]
    pub kind: KindArg,
    /// Field separator.
    #[arg(long, value_enum, default_value_t = DelimiterArg::Auto)]
    pub delimiter: DelimiterArg,
    /// Region for phone numbers without `+` (default: crier.yaml's default_region).
    #[arg(long, value_name = "CC")]
    pub default_region: Option<String>,
    /// Check and count, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Abort, writing nothing, if any row is rejected.
    #[arg(long)]
    pub strict: bool,
    /// Copy rejected rows, with line and reason, to this CSV file.
    #[arg(long, value_name = "OUT.csv")]
    pub rejects: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Customer,
    Lead,
}

impl From<KindArg> for RecipientKind {
    fn from(k: KindArg) -> RecipientKind {
        match k {
            KindArg::Customer => RecipientKind::Customer,
            KindArg::Lead => RecipientKind::Lead,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct RecipientsArgs {
    /// A job file; its `recipients:` section selects.
    pub job: Option<PathBuf>,
    /// A filter KEY=VALUE (any `where:` key; VALUE may list alternatives with commas;
    /// `attrs.NAME=VALUE` for extra columns). Repeat for more; all must match.
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Customers or leads (without a job; default customer).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show at most N recipients (the count still covers all).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// CSV: every cell as stored. By default a text cell starting with `=`, `+`, `-`, `@`,
    /// a tab or a CR gets a leading `'` so a spreadsheet does not run it as a formula.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Every stored template.
    #[command(after_help = "Example:\n  crier templates list")]
    List,
    /// Print one template.
    #[command(after_help = "Example:\n  crier templates show reminder")]
    Show { name: String },
    /// Save a template file under a name (replacing one of that name); it is checked first.
    #[command(
        after_help = "Example:\n  crier templates save reminder --channel sms --file jobs/templates/payment-reminder.sms.j2"
    )]
    Save {
        name: String,
        /// sms, email or portal.
        #[arg(long)]
        channel: String,
        /// The template file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a stored template.
    #[command(after_help = "Example:\n  crier templates delete reminder")]
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Read one bounce (a DSN, RFC 3464) or abuse report (ARF, RFC 5965), or a Maildir of
    /// them: a hard bounce makes its message `undelivered` and opts the address out.
    ///
    /// Exit status, for an MTA's pipe transport: 0 recorded (or nothing to record), 65
    /// (EX_DATAERR) the input is no report crier can use, 66 (EX_NOINPUT) the file cannot
    /// be read, 75 (EX_TEMPFAIL) the store or config is unavailable now: try again later.
    #[command(
        after_help = "Example:\n  crier bounces ingest < dsn.eml\n  crier bounces ingest /var/mail/bounce.eml\n  crier bounces ingest --maildir ~/Maildir/.bounces\n\nPostfix master.cf:\n  crier unix - n n - 1 pipe flags=DORhu user=crier argv=/usr/local/bin/crier --config /etc/crier/crier.yaml bounces ingest -"
    )]
    Ingest(IngestArgs),
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The message: a file, or `-` for standard input (the default).
    #[arg(value_name = "FILE|-", conflicts_with = "maildir")]
    pub file: Option<PathBuf>,
    /// Read every message in this Maildir's `new/`, moving each one to `cur/`: flagged
    /// seen (`:2,S`) once recorded, flagged `F` (and reported) when it is no report crier
    /// can use. A store that is unavailable stops the run and leaves the rest in `new/`.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum OptoutCommand {
    /// Add phone numbers (any local form) or email addresses.
    #[command(
        after_help = "Example:\n  crier optout add '082 123 4567' ann@example.com --reason 'asked by phone'"
    )]
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Why, for the record.
        #[arg(long, default_value = "cli")]
        reason: String,
    },
    /// Take addresses off the list.
    #[command(after_help = "Example:\n  crier optout remove '082 123 4567'")]
    Remove {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Show the list.
    #[command(after_help = "Example:\n  crier optout list --format csv > optouts.csv")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// CSV: every cell as stored. By default a text cell starting with `=`, `+`, `-`, `@`,
        /// a tab or a CR gets a leading `'` so a spreadsheet does not run it as a formula.
        #[arg(long)]
        raw: bool,
    },
    /// Add every address in a file: one per line, or the first column of a CSV.
    #[command(after_help = "Example:\n  crier optout import stop-replies.csv")]
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of job files.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
    /// Refuse to start when any job is invalid (default: leave it out, run the others).
    #[arg(long)]
    pub strict: bool,
    /// This worker's name among the workers on one PostgreSQL store (default
    /// `HOSTNAME-PID`). A name a live worker has is refused.
    #[arg(long, value_name = "ID", value_parser = worker_id)]
    pub worker_id: Option<String>,
}

/// A `--worker-id`: 1 to 100 visible characters, no spaces.
fn worker_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 100 {
        return Err("1 to 100 characters (e.g. `web-1`)".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("no spaces or control characters (e.g. `web-1`)".into());
    }
    Ok(text.to_string())
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// table, or json (`{"workers": [...], "lease": {"holder", "expires_in_ms"} | null}`).
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    pub format: TableOrJson,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// Directory of job files.
    #[arg(long, default_value = "jobs", global = true)]
    pub jobs: PathBuf,
    /// table (instants as `2027-03-28 03:00:00 +02:00 CEST`) or json (RFC 3339 instants).
    #[arg(long, value_enum, default_value_t = TableOrJson::Table, global = true)]
    pub format: TableOrJson,
}

/// A listing with nothing to put in a CSV: a table for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// The next fire times of one job.
    #[command(after_help = "Example:\n  crier jobs next payment-reminder --count 5")]
    Next {
        /// Job name.
        job: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `server.listen` of crier.yaml, else 127.0.0.1:8025).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Directory of job files, for `POST /api/jobs/{name}/run`.
    #[arg(long, default_value = "jobs")]
    pub jobs: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Check each provider's credentials and read its balance (Splynx's balance check).
    #[command(after_help = "Example:\n  crier providers check\n  crier providers check bulksms")]
    Check {
        /// One provider (default: all configured).
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortalCommand {
    /// List a customer's portal inbox.
    #[command(after_help = "Example:\n  crier portal inbox 1042 --format json")]
    Inbox {
        /// Customer id.
        customer: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// CSV: every cell as stored. By default a text cell starting with `=`, `+`, `-`, `@`,
        /// a tab or a CR gets a leading `'` so a spreadsheet does not run it as a formula.
        #[arg(long)]
        raw: bool,
    },
    /// Mark a message of a customer's inbox read.
    #[command(after_help = "Example:\n  crier portal read 1042 01JDZ8X6Q4T5N0V9K3M2R7W1YB-7")]
    Read { customer: u64, message: String },
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The job file.
    pub job: PathBuf,
    /// Send without asking (needed when there is no terminal).
    #[arg(long)]
    pub yes: bool,
    /// Show what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send as test: one message to this phone number or email address.
    #[arg(long, value_name = "ADDRESS")]
    pub test_to: Option<String>,
    /// With --test-to: render with this recipient's data (default: the first).
    #[arg(long, value_name = "ID", requires = "test_to")]
    pub recipient: Option<u64>,
    /// Go on with a run left `processing` (a crash, a pause, a shutdown): its queued
    /// messages are sent, in-flight ones resolved without a blind resend.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["test_to", "dry_run"])]
    pub resume: Option<String>,
    /// Retry failed: a new run of this job that sends the failed and expired messages of
    /// RUN again (recorded as its retry; the console's "Retry failed").
    #[arg(long, value_name = "RUN", conflicts_with_all = ["test_to", "dry_run", "resume"])]
    pub retry_failed: Option<String>,
    /// Send now even outside the job's send window (an urgent notice, a first try at
    /// night); the window still holds for every other run of the job.
    #[arg(long)]
    pub ignore_window: bool,
    /// Plan the run and leave the sending to the `crier run` workers (PostgreSQL: every
    /// worker claims its messages); returns once every recipient is planned.
    #[arg(long, conflicts_with_all = ["test_to", "dry_run"])]
    pub enqueue: bool,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The job file.
    pub job: PathBuf,
    /// How many rendered messages to show.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub limit: usize,
    /// Show the message for this recipient id only.
    #[arg(long, value_name = "ID")]
    pub recipient: Option<u64>,
}

/// When: a named period or a custom range (dates in the configured time zone).
#[derive(Debug, Args, Clone, Default)]
pub struct PeriodArgs {
    /// today, yesterday, last-7-days, last-30-days, this-month, last-month.
    #[arg(long, value_name = "PERIOD")]
    pub period: Option<String>,
    /// Start of a custom range: YYYY-MM-DD or YYYY-MM-DDTHH:MM.
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// End of a custom range (a date includes that whole day).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    #[command(flatten)]
    pub list: HistoryListArgs,
}

#[derive(Debug, Args)]
pub struct HistoryListArgs {
    /// any (all but removed), new, processing, sent, sent_with_error, cancelled, removed.
    #[arg(long, default_value = "any")]
    pub status: String,
    #[command(flatten)]
    pub period: PeriodArgs,
    /// Only runs of this job.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// At most N runs (default: 50 in a table, all in csv and json).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// One run: its message, counters and timings.
    #[command(after_help = "Example:\n  crier history show 01JDZ8X6Q4T5N0V9K3M2R7W1YB")]
    Show {
        /// The run id.
        run: String,
    },
    /// The recipients of a run with each one's state.
    #[command(
        after_help = "Example:\n  crier history recipients 01JDZ8X6Q4T5N0V9K3M2R7W1YB --state failed --format csv"
    )]
    Recipients {
        run: String,
        /// Only messages in this state.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// At most N rows (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// CSV: every cell as stored. By default a text cell starting with `=`, `+`, `-`, `@`,
        /// a tab or a CR gets a leading `'` so a spreadsheet does not run it as a formula.
        #[arg(long)]
        raw: bool,
    },
    /// Mark a run removed (kept for audit, hidden from listings); --purge deletes it.
    #[command(
        after_help = "Example:\n  crier history delete 01JDZ8X6Q4T5N0V9K3M2R7W1YB\n  crier history delete 01JDZ8X6Q4T5N0V9K3M2R7W1YB --purge --yes"
    )]
    Delete {
        run: String,
        /// Delete the run and its messages for good.
        #[arg(long)]
        purge: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Cancel a run: every message still queued becomes cancelled.
    #[command(after_help = "Example:\n  crier history cancel 01JDZ8X6Q4T5N0V9K3M2R7W1YB")]
    Cancel { run: String },
    /// Queue a run's `unknown` messages again (after checking with the provider that they
    /// did not arrive); `crier send JOB --resume RUN` or the daemon then sends them.
    #[command(after_help = "Example:\n  crier history retry 01JDZ8X6Q4T5N0V9K3M2R7W1YB --yes")]
    Retry {
        run: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// sms, email or portal.
    #[arg(long)]
    pub channel: Option<String>,
    /// Message state: queued, sending, sent, delivered, undelivered, failed, expired,
    /// unknown, skipped, cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// message or test.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    #[command(flatten)]
    pub period: PeriodArgs,
    /// A phone number (any local form; compared in E.164) or an email address.
    #[arg(long, value_name = "NUMBER")]
    pub phone: Option<String>,
    /// A recipient id (`lead:ID` for a lead).
    #[arg(long, value_name = "ID")]
    pub recipient: Option<String>,
    /// Only messages of this run (listed even when the run is removed).
    #[arg(long)]
    pub run: Option<String>,
    /// List the messages of removed runs too (`crier history delete` hides them).
    #[arg(long)]
    pub include_removed: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// At most N messages (default: 50 in a table, all in csv and json).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// CSV: every cell as stored. By default a text cell starting with `=`, `+`, `-`, `@`,
    /// a tab or a CR gets a leading `'` so a spreadsheet does not run it as a formula.
    #[arg(long)]
    pub raw: bool,
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` wins over -v/-q.
pub fn init_logging(cli: &Cli) {
    // Commands print their results; logs are for the curious (-v) and for the daemon.
    let level = match (cli.verbose, cli.quiet) {
        (0, 0) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        (v, _) if v >= 3 => "trace",
        _ => "error",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,crier={level}")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(crate::logging::writer);
    match cli.log_format {
        LogFormat::Text => builder.with_target(false).compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}
