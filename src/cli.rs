//! The command line: every command, its flags, and an example for each.
//!
//! Exit codes: 0 ok, 1 the work failed or the input was invalid, 2 bad usage (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::recipients::RecipientKind;

#[derive(Debug, Parser)]
#[command(
    name = "crier",
    version,
    about = "Scheduled mass messaging (SMS, email, customer portal) for internet providers.",
    after_help = "Quick start:\n  crier import jobs/data/customers.csv\n  crier recipients jobs/payment-reminder.yaml\n\nSee each command's --help for an example."
)]
pub struct Cli {
    /// Project config file (default ./crier.yaml; built-in defaults if it does not exist).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
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
}

/// Logs go to stderr, as text or JSON lines; `RUST_LOG` wins over -v/-q.
pub fn init_logging(cli: &Cli) {
    let level = match (cli.verbose, cli.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,crier={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.with_target(false).compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}
