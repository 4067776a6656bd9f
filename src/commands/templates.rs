//! `crier templates`: list, show, save and delete stored templates.

use anyhow::{Context, bail};

use super::{Outcome, open_store, print_table};
use crate::cli::TemplatesCommand;
use crate::config::Config;
use crate::history::export::iso;
use crate::job::Channel;
use crate::render::stored::{Templates, valid_name};
use crate::render::template;

pub(super) fn run(config: &Config, command: &TemplatesCommand) -> anyhow::Result<Outcome> {
    let store = open_store(config)?;
    let templates = Templates::new(store.directory());
    match command {
        TemplatesCommand::List => {
            let rows: Vec<Vec<String>> = templates
                .list()
                .map(|t| {
                    t.map(|t| {
                        vec![
                            t.name,
                            t.channel.to_string(),
                            iso(t.updated_at),
                            t.body.chars().count().to_string(),
                        ]
                    })
                })
                .collect::<Result<_, _>>()?;
            let n = rows.len();
            print_table(&["name", "channel", "updated", "characters"], &rows);
            crate::outln!("{n} template{}", if n == 1 { "" } else { "s" });
        }
        TemplatesCommand::Show { name } => match templates.get(name)? {
            Some(t) => {
                crate::outln!(
                    "# {} ({}), updated {}",
                    t.name,
                    t.channel,
                    iso(t.updated_at)
                );
                crate::outln!("{}", t.body);
            }
            None => bail!("no stored template `{name}` (see `crier templates list`)"),
        },
        TemplatesCommand::Save {
            name,
            channel,
            file,
        } => {
            if !valid_name(name) {
                bail!("`{name}` is not a template name (letters, digits, -, _ and ., at most 64)");
            }
            let channel = Channel::ALL
                .into_iter()
                .find(|c| c.as_str() == channel.trim().to_lowercase())
                .with_context(|| {
                    format!("unknown channel `{channel}` (expected sms, email or portal)")
                })?;
            let body = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if let Err(errors) = template::check(&body) {
                for e in &errors {
                    crate::errln!(
                        "{}:{}:{}: template: {}",
                        file.display(),
                        e.line,
                        e.col,
                        e.message
                    );
                }
                bail!(
                    "{} has {} error(s); nothing was saved",
                    file.display(),
                    errors.len()
                );
            }
            let replaced = templates.save(name, channel, &body)?;
            store.flush()?;
            crate::outln!(
                "{} template `{name}` ({channel}); use it as `template: stored:{name}`",
                if replaced { "replaced" } else { "saved" }
            );
        }
        TemplatesCommand::Delete { name } => {
            if !templates.delete(name)? {
                bail!("no stored template `{name}`");
            }
            store.flush()?;
            crate::outln!("deleted template `{name}`");
        }
    }
    Ok(Outcome::Ok)
}
