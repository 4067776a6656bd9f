//! `crier providers check`: each provider's credentials and balance, as Splynx's balance
//! check shows them. Exit 1 when any provider refuses. An SMTP provider whose DKIM
//! domain does not align with its `From:` gets a warning (the check still passes), and
//! the TXT record its key needs is printed.

use anyhow::bail;

use super::{Outcome, open_store, print_table};
use crate::cli::ProvidersCommand;
use crate::config::Config;
use crate::provider::{self, BuildContext};

pub(super) fn run(config: &Config, command: &ProvidersCommand) -> anyhow::Result<Outcome> {
    let ProvidersCommand::Check { name } = command;
    let names: Vec<&String> = match name {
        Some(n) if config.providers.contains_key(n) => vec![n],
        Some(n) => bail!(
            "no provider `{n}` in the configuration (configured: {})",
            config
                .providers
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => config.providers.keys().collect(),
    };
    if let Err(missing) = config.require_provider_secrets(names.iter().map(|n| n.as_str())) {
        crate::errln!("{missing}");
        return Ok(Outcome::Failed);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _entered = runtime.enter();
    let store = open_store(config)?;
    let ctx = BuildContext {
        http: provider::http_client(),
        data_dir: &config.data_dir,
        inbox: store.history(),
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for &name in &names {
        let pc = &config.providers[name];
        let (status, balance) = match provider::build(name, pc, &ctx) {
            Err(e) => {
                failed = true;
                (format!("error: {e}"), String::new())
            }
            Ok(p) => match runtime.block_on(p.balance()) {
                Ok(Some(b)) => ("ok".to_string(), format!("{:.2} {}", b.amount, b.unit)),
                Ok(None) => ("ok".to_string(), "-".to_string()),
                Err(e) => {
                    failed = true;
                    (format!("error: {e}"), String::new())
                }
            },
        };
        rows.push(vec![
            name.clone(),
            pc.type_name().to_string(),
            status,
            balance,
        ]);
    }
    print_table(&["provider", "type", "status", "balance"], &rows);
    for name in names {
        let provider::ProviderConfig::Smtp(smtp) = &config.providers[name] else {
            continue;
        };
        if let Some(dkim) = &smtp.dkim
            && let Ok(signer) = provider::dkim::Signer::new(dkim)
        {
            crate::outln!("providers.{name}: DKIM public key: {}", signer.zone_line());
        }
        if let Some(problem) = smtp.dkim.as_ref().and_then(|d| d.misalignment(&smtp.from)) {
            crate::errln!("warning: providers.{name}: {problem}");
        }
    }
    if failed {
        crate::errln!("error: a provider failed its check (see the status column)");
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
