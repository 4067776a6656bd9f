//! `crier portal inbox|read`: the customer-portal channel as a portal would show it.

use anyhow::bail;

use super::{Outcome, open_store, print_table};
use crate::cli::{Format, PortalCommand};
use crate::config::Config;
use crate::history::export::{Cells, csv_writer, iso};
use crate::provider::portal::Inbox;

pub(super) fn run(config: &Config, command: &PortalCommand) -> anyhow::Result<Outcome> {
    let store = open_store(config)?;
    let inbox = Inbox::new(store.history());
    match command {
        PortalCommand::Inbox {
            customer,
            format,
            raw,
        } => {
            let items = inbox.list(*customer)?;
            match format {
                Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&items)?),
                Format::Csv => {
                    let cells = Cells::raw(*raw);
                    let mut w = csv_writer(crate::console::stdout());
                    w.write_record(["id", "created", "read", "title", "body"])?;
                    for i in &items {
                        w.write_record([
                            i.id.as_str(),
                            &iso(i.created_at),
                            &i.read_at.map(iso).unwrap_or_default(),
                            &cells.text(i.title.as_deref().unwrap_or_default()),
                            &cells.text(&i.body),
                        ])?;
                    }
                    w.flush()?;
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|i| {
                            vec![
                                i.id.clone(),
                                iso(i.created_at),
                                i.read_at.map(iso).unwrap_or_else(|| "unread".into()),
                                i.title.clone().unwrap_or_default(),
                                i.body.replace('\n', " "),
                            ]
                        })
                        .collect();
                    print_table(&["message", "created", "read", "title", "body"], &rows);
                    crate::outln!(
                        "{} message{}",
                        rows.len(),
                        if rows.len() == 1 { "" } else { "s" }
                    );
                }
            }
        }
        PortalCommand::Read { customer, message } => {
            if !inbox.mark_read(*customer, message, chrono::Utc::now().timestamp_millis())? {
                bail!("customer {customer} has no message {message} in the portal inbox");
            }
            store.flush()?;
            crate::outln!("{message} marked read");
        }
    }
    Ok(Outcome::Ok)
}
