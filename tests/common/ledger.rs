//! Ledger fixtures written through the library, for tests that need history to exist
//! before the real binary runs.

use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::{MessageState, MessageType, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::store::open;

use super::Project;

/// One run in `project`'s sled store whose messages are `sent`, one per
/// `(provider, provider message id, number)`.
pub fn sent_messages(project: &Project, messages: &[(&str, &str, &str)]) {
    sent_messages_on(project, Channel::Sms, messages);
}

/// [`sent_messages`] on `channel` (email messages for the email providers' events).
pub fn sent_messages_on(project: &Project, channel: Channel, messages: &[(&str, &str, &str)]) {
    let store = open(&project.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let run = ledger
        .create_run(NewRun {
            job: "payment-reminder".into(),
            trigger: Trigger::Manual,
            channels: vec![channel],
            provider: "bulk".into(),
            body: "Hi".into(),
            subject: None,
        })
        .unwrap();
    let planned = messages
        .iter()
        .enumerate()
        .map(|(i, (provider, _, number))| NewMessage {
            recipient_kind: RecipientKind::Customer,
            recipient_id: i as u64 + 1,
            address: number.to_string(),
            channel,
            provider: provider.to_string(),
            kind: MessageType::Message,
            subject: None,
            body: "Your invoice is due.".into(),
            encoding: (channel == Channel::Sms).then(|| "gsm7".into()),
            parts: 1,
            state: MessageState::Queued,
            reason: None,
            error: None,
            snapshot: Default::default(),
            html: None,
            route: Vec::new(),
        })
        .collect();
    let ids = ledger.plan(run.id, planned).unwrap();
    ledger.finish_planning(run.id).unwrap();
    let sending: Vec<Change> = ids
        .iter()
        .map(|id| Change::to(*id, MessageState::Sending))
        .collect();
    ledger.transition(&sending).unwrap();
    let sent: Vec<Change> = ids
        .iter()
        .zip(messages)
        .map(|(id, (_, pid, _))| {
            let mut c = Change::to(*id, MessageState::Sent);
            c.provider_message_id = Some(pid.to_string());
            c
        })
        .collect();
    ledger.transition(&sent).unwrap();
    ledger.flush().unwrap();
}
