//! The directory conformance suite: every [`Directory`] backend must pass every case.
//!
//! Public (hidden from the docs) so that `tests/storage.rs`, which can start a real
//! PostgreSQL server, runs it against every backend; the sled backend also runs it in
//! this crate's unit tests. [`run`] takes a constructor of fresh, empty directories and
//! runs each case on a directory of its own. (The pattern for the history suite: the
//! same shape, in `crate::history`.)

#![doc(hidden)]

use super::{Directory, LOCAL_ID_BASE};
use crate::job::Channel;
use crate::recipients::optout::OptOut;
use crate::recipients::{Recipient, RecipientKind, Status, Tariff};
use crate::render::stored::StoredTemplate;
use crate::store::Upsert;

/// A plain recipient for tests.
pub fn recipient(kind: RecipientKind, id: u64, login: &str) -> Recipient {
    Recipient {
        kind,
        id,
        login: Some(login.into()),
        status: Status::Active,
        name: format!("Customer {id}"),
        email: None,
        billing_email: None,
        phone: None,
        phone_raw: None,
        category: None,
        location: None,
        billing_type: None,
        partner: None,
        tariffs: vec![],
        timezone: None,
        attrs: Default::default(),
    }
}

/// One case of the suite.
type Case = (&'static str, fn(&dyn Directory));

/// Every case, by name, each on a fresh directory from `make`.
pub fn run(make: &dyn Fn() -> Box<dyn Directory>) {
    let cases: &[Case] = &[
        (
            "upsert_reports_inserted_updated_unchanged",
            upsert_reports_inserted_updated_unchanged,
        ),
        ("dry_run_writes_nothing", dry_run_writes_nothing),
        (
            "login_index_follows_login_changes",
            login_index_follows_login_changes,
        ),
        (
            "logins_swapped_in_one_batch_keep_both_entries",
            logins_swapped_in_one_batch_keep_both_entries,
        ),
        (
            "upserts_measure_scattered_ids_against_the_store",
            upserts_measure_scattered_ids_against_the_store,
        ),
        (
            "scans_are_per_kind_and_ordered",
            scans_are_per_kind_and_ordered,
        ),
        ("allocated_ids_are_fresh", allocated_ids_are_fresh),
        ("every_field_round_trips", every_field_round_trips),
        (
            "large_batches_upsert_in_order",
            large_batches_upsert_in_order,
        ),
        ("optouts_add_once_and_remove", optouts_add_once_and_remove),
        ("templates_replace_and_delete", templates_replace_and_delete),
    ];
    for (name, case) in cases {
        eprintln!("directory conformance: {name}");
        case(&*make());
    }
}

fn upsert_reports_inserted_updated_unchanged(d: &dyn Directory) {
    let a = recipient(RecipientKind::Customer, 1, "a");
    let mut a2 = a.clone();
    a2.name = "Renamed".into();
    let outcomes = d
        .upsert_recipients(&[a.clone(), a.clone(), a2.clone()], true)
        .unwrap();
    assert_eq!(
        outcomes,
        vec![Upsert::Inserted, Upsert::Unchanged, Upsert::Updated]
    );
    assert_eq!(
        d.recipient(RecipientKind::Customer, 1).unwrap(),
        Some(a2.clone())
    );
    // Against the stored row, in a later batch: same is unchanged, different is updated.
    let mut a3 = a2.clone();
    a3.attrs.insert("plan".into(), "gold".into());
    assert_eq!(
        d.upsert_recipients(&[a2.clone(), a3.clone()], true)
            .unwrap(),
        vec![Upsert::Unchanged, Upsert::Updated]
    );
    assert_eq!(d.recipient(RecipientKind::Customer, 1).unwrap(), Some(a3));
    // An absent optional field is a change too.
    let mut a4 = a2;
    a4.email = Some("a@example.com".into());
    assert_eq!(
        d.upsert_recipients(std::slice::from_ref(&a4), true)
            .unwrap(),
        vec![Upsert::Updated]
    );
}

fn dry_run_writes_nothing(d: &dyn Directory) {
    let b = recipient(RecipientKind::Customer, 2, "b");
    assert_eq!(
        d.upsert_recipients(std::slice::from_ref(&b), false)
            .unwrap(),
        vec![Upsert::Inserted]
    );
    assert_eq!(d.recipient(RecipientKind::Customer, 2).unwrap(), None);
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Customer, "b")
            .unwrap(),
        None
    );
    assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 0);
    // A dry run after a real one measures against what is stored.
    d.upsert_recipients(std::slice::from_ref(&b), true).unwrap();
    let mut b2 = b.clone();
    b2.name = "Other".into();
    assert_eq!(
        d.upsert_recipients(&[b.clone(), b2], false).unwrap(),
        vec![Upsert::Unchanged, Upsert::Updated]
    );
    assert_eq!(d.recipient(RecipientKind::Customer, 2).unwrap(), Some(b));
    // Dry-run imports invent ids near u64::MAX for rows with a login but no id.
    let invented = recipient(RecipientKind::Customer, u64::MAX - 1, "new");
    assert_eq!(
        d.upsert_recipients(&[invented], false).unwrap(),
        vec![Upsert::Inserted]
    );
}

fn login_index_follows_login_changes(d: &dyn Directory) {
    let c = recipient(RecipientKind::Lead, 3, "old");
    d.upsert_recipients(std::slice::from_ref(&c), true).unwrap();
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Lead, "old").unwrap(),
        Some(3)
    );
    let mut moved = c;
    moved.login = Some("new".into());
    d.upsert_recipients(&[moved], true).unwrap();
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Lead, "old").unwrap(),
        None
    );
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Lead, "new").unwrap(),
        Some(3)
    );
    // Customers and leads do not share logins.
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Customer, "new")
            .unwrap(),
        None
    );
}

fn logins_swapped_in_one_batch_keep_both_entries(d: &dyn Directory) {
    let kind = RecipientKind::Customer;
    let a = recipient(kind, 10, "x");
    let b = recipient(kind, 11, "y");
    d.upsert_recipients(&[a.clone(), b.clone()], true).unwrap();
    let mut a2 = a;
    a2.login = Some("y".into());
    let mut b2 = b;
    b2.login = Some("x".into());
    assert_eq!(
        d.upsert_recipients(&[a2, b2], true).unwrap(),
        vec![Upsert::Updated, Upsert::Updated]
    );
    assert_eq!(d.recipient_id_by_login(kind, "y").unwrap(), Some(10));
    assert_eq!(d.recipient_id_by_login(kind, "x").unwrap(), Some(11));
    // A login dropped and taken again in one batch (the same id twice) is kept.
    let mut c = recipient(kind, 12, "z");
    d.upsert_recipients(std::slice::from_ref(&c), true).unwrap();
    let mut c_moved = c.clone();
    c_moved.login = Some("w".into());
    c.name = "Back to z".into();
    assert_eq!(
        d.upsert_recipients(&[c_moved, c], true).unwrap(),
        vec![Upsert::Updated, Upsert::Updated]
    );
    assert_eq!(d.recipient_id_by_login(kind, "z").unwrap(), Some(12));
    assert_eq!(d.recipient_id_by_login(kind, "w").unwrap(), None);
}

/// A batch of scattered ids, out of order, over a store with many records between them
/// (the reads of stored records must find each one, whatever lies between).
fn upserts_measure_scattered_ids_against_the_store(d: &dyn Directory) {
    let kind = RecipientKind::Customer;
    let stored: Vec<_> = (1..=200u64)
        .map(|id| recipient(kind, id * 3, &format!("s{id}")))
        .collect();
    d.upsert_recipients(&stored, true).unwrap();
    d.upsert_recipients(&[recipient(RecipientKind::Lead, 30, "lead")], true)
        .unwrap();
    let mut changed = recipient(kind, 300, "s100");
    changed.name = "Changed".into();
    let batch = vec![
        recipient(kind, 600, "s200"),
        recipient(kind, 1, "new1"),
        changed,
        recipient(kind, 3, "s1"),
        recipient(kind, 301, "new301"),
        recipient(kind, 30, "s10"),
        recipient(kind, 1 << 40, "far"),
        recipient(kind, 598, "new598"),
    ];
    assert_eq!(
        d.upsert_recipients(&batch, true).unwrap(),
        vec![
            Upsert::Unchanged,
            Upsert::Inserted,
            Upsert::Updated,
            Upsert::Unchanged,
            Upsert::Inserted,
            Upsert::Unchanged,
            Upsert::Inserted,
            Upsert::Inserted,
        ]
    );
    assert_eq!(d.count_recipients(kind).unwrap(), 204);
    assert_eq!(d.recipient(kind, 300).unwrap().unwrap().name, "Changed");
    assert_eq!(d.recipient_id_by_login(kind, "far").unwrap(), Some(1 << 40));
}

fn scans_are_per_kind_and_ordered(d: &dyn Directory) {
    let recs: Vec<_> = [300u64, 5, 70_000, 1 << 33]
        .into_iter()
        .map(|id| recipient(RecipientKind::Customer, id, &format!("l{id}")))
        .collect();
    d.upsert_recipients(&recs, true).unwrap();
    d.upsert_recipients(&[recipient(RecipientKind::Lead, 6, "lead6")], true)
        .unwrap();
    let ids: Vec<u64> = d
        .recipients(RecipientKind::Customer)
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(ids, vec![5, 300, 70_000, 1 << 33]);
    assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 4);
    assert_eq!(d.count_recipients(RecipientKind::Lead).unwrap(), 1);
}

fn allocated_ids_are_fresh(d: &dyn Directory) {
    let a = d.allocate_recipient_id(RecipientKind::Lead).unwrap();
    let b = d.allocate_recipient_id(RecipientKind::Lead).unwrap();
    assert!(a >= LOCAL_ID_BASE, "{a}");
    assert!(b > a);
    let c = d.allocate_recipient_id(RecipientKind::Customer).unwrap();
    assert!(c >= LOCAL_ID_BASE, "{c}");
}

fn every_field_round_trips(d: &dyn Directory) {
    use crate::recipients::{BillingType, Category, Service};
    let mut r = recipient(RecipientKind::Customer, 42, "full");
    r.status = Status::Blocked;
    r.name = "Zoë \"Quotes\" O'Brien, Ltd".into();
    r.email = Some("zoe@example.com".into());
    r.billing_email = Some("billing@example.com".into());
    r.phone = Some("+27821234567".into());
    r.phone_raw = Some("082 123 4567".into());
    r.category = Some(Category::Business);
    // Every character a bulk-load format must escape.
    r.location = Some("Cape Town\tBlock 7\nUnit \\3\r".into());
    r.billing_type = Some(BillingType::PrepaidDaily);
    r.partner = Some("Main".into());
    r.tariffs = vec![
        Tariff {
            service: Some(Service::Internet),
            plan: "Fiber 100".into(),
        },
        Tariff {
            service: None,
            plan: "Voice basic".into(),
        },
    ];
    r.timezone = Some("Africa/Johannesburg".into());
    r.attrs.insert("balance".into(), "-12.50".into());
    r.attrs.insert("contract".into(), "".into());
    r.attrs
        .insert("note".into(), "tab\there \\N \"quoted\"\n".into());
    d.upsert_recipients(std::slice::from_ref(&r), true).unwrap();
    assert_eq!(
        d.recipient(RecipientKind::Customer, 42).unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        d.upsert_recipients(std::slice::from_ref(&r), true).unwrap(),
        vec![Upsert::Unchanged]
    );
    let mut bare = recipient(RecipientKind::Lead, 43, "bare");
    bare.login = None;
    bare.name = String::new();
    d.upsert_recipients(std::slice::from_ref(&bare), true)
        .unwrap();
    assert_eq!(d.recipient(RecipientKind::Lead, 43).unwrap(), Some(bare));
    assert_eq!(d.recipient(RecipientKind::Lead, 42).unwrap(), None);
}

fn large_batches_upsert_in_order(d: &dyn Directory) {
    let recs: Vec<_> = (1..=10_000u64)
        .map(|id| recipient(RecipientKind::Customer, id, &format!("u{id}")))
        .collect();
    let outcomes = d.upsert_recipients(&recs, true).unwrap();
    assert!(outcomes.iter().all(|o| *o == Upsert::Inserted));
    let mut again = recs.clone();
    again[4_999].name = "Changed".into();
    let outcomes = d.upsert_recipients(&again, true).unwrap();
    assert_eq!(outcomes.len(), 10_000);
    assert_eq!(outcomes[4_999], Upsert::Updated);
    assert_eq!(
        outcomes.iter().filter(|o| **o == Upsert::Unchanged).count(),
        9_999
    );
    assert_eq!(d.count_recipients(RecipientKind::Customer).unwrap(), 10_000);
    let ids: Vec<u64> = d
        .recipients(RecipientKind::Customer)
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(ids, (1..=10_000).collect::<Vec<_>>());
    assert_eq!(
        d.recipient_id_by_login(RecipientKind::Customer, "u7777")
            .unwrap(),
        Some(7777)
    );
}

fn optout(address: &str, reason: &str) -> OptOut {
    OptOut {
        address: address.into(),
        added_at: 1_700_000_000_000,
        reason: reason.into(),
        run: None,
        message: None,
    }
}

fn optouts_add_once_and_remove(d: &dyn Directory) {
    let mut from_run = optout("+27821234567", "unsubscribe");
    from_run.run = Some("01RUN".into());
    from_run.message = Some("01MSG".into());
    let added = d
        .add_optouts(&[
            from_run.clone(),
            optout("b@example.com", "cli"),
            optout("+27821234567", "again in the same call"),
        ])
        .unwrap();
    assert_eq!(added, 2);
    assert_eq!(d.optout("+27821234567").unwrap(), Some(from_run.clone()));
    assert_eq!(
        d.add_optouts(&[optout("b@example.com", "later")]).unwrap(),
        0,
        "already on the list: the first entry stays"
    );
    assert_eq!(d.optout("b@example.com").unwrap().unwrap().reason, "cli");
    let listed: Vec<String> = d.optouts().map(|o| o.unwrap().address).collect();
    assert_eq!(listed, vec!["+27821234567", "b@example.com"]);
    assert_eq!(
        d.remove_optouts(&["b@example.com".into(), "nobody@example.com".into()])
            .unwrap(),
        1
    );
    assert_eq!(d.optout("b@example.com").unwrap(), None);
    assert_eq!(d.optouts().count(), 1);
    let among = d
        .opted_out_among(&[
            "+27821234567".into(),
            "b@example.com".into(),
            "nobody@example.com".into(),
        ])
        .unwrap();
    assert_eq!(
        among,
        std::collections::HashSet::from(["+27821234567".to_string()]),
        "only the address still on the list"
    );
    assert!(d.opted_out_among(&[]).unwrap().is_empty());
}

fn templates_replace_and_delete(d: &dyn Directory) {
    let t = StoredTemplate {
        name: "welcome".into(),
        channel: Channel::Email,
        body: "Hello {{ name }}".into(),
        created_at: 1,
        updated_at: 1,
    };
    assert_eq!(d.template("welcome").unwrap(), None);
    d.put_template(&t).unwrap();
    assert_eq!(d.template("welcome").unwrap(), Some(t.clone()));
    let t2 = StoredTemplate {
        channel: Channel::Sms,
        body: "Hi".into(),
        updated_at: 2,
        ..t.clone()
    };
    d.put_template(&t2).unwrap();
    assert_eq!(d.template("welcome").unwrap(), Some(t2));
    d.put_template(&StoredTemplate {
        name: "a-first".into(),
        ..t.clone()
    })
    .unwrap();
    let names: Vec<String> = d.templates().map(|t| t.unwrap().name).collect();
    assert_eq!(names, vec!["a-first", "welcome"]);
    assert!(d.delete_template("welcome").unwrap());
    assert!(!d.delete_template("welcome").unwrap());
    assert_eq!(d.templates().count(), 1);
}
