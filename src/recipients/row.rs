//! One CSV row → one [`Recipient`]: header mapping and value parsing.
//!
//! Headers are matched by crier's own field names and by the labels of a Splynx customer
//! export (`Portal login`, `Full name`, `Phone number`, `Tariff plans`, …), ignoring case,
//! spaces and punctuation. Columns crier has no field for land in `attrs` under a
//! snake_case key, so an `Overdue days` column is `customer.attrs.overdue_days`.

use std::fmt;

use csv::StringRecord;
use phonenumber::country::Id;

use super::{
    BillingType, Category, Recipient, RecipientKind, Service, Status, Tariff, phone, squash,
};

/// What a CSV column feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Id,
    Login,
    Status,
    Name,
    Email,
    BillingEmail,
    Phone,
    Category,
    Location,
    BillingType,
    Partner,
    Tariffs,
    Timezone,
    Attr(String),
}

impl Column {
    fn for_header(header: &str) -> Column {
        match squash(header).as_str() {
            "id" | "customerid" | "leadid" => Column::Id,
            "login" | "portallogin" => Column::Login,
            "status" => Column::Status,
            "name" | "fullname" => Column::Name,
            "email" | "emailaddress" => Column::Email,
            "billingemail" => Column::BillingEmail,
            "phone" | "phonenumber" | "mobile" | "phonenumbers" => Column::Phone,
            "category" => Column::Category,
            "location" => Column::Location,
            "billingtype" => Column::BillingType,
            "partner" => Column::Partner,
            "tariff" | "tariffs" | "tariffplan" | "tariffplans" => Column::Tariffs,
            "timezone" => Column::Timezone,
            _ => Column::Attr(attr_key(header)),
        }
    }
}

/// `Overdue days` → `overdue_days`.
pub fn attr_key(header: &str) -> String {
    let mut key = String::with_capacity(header.len());
    for c in header.trim().chars() {
        if c.is_alphanumeric() {
            key.extend(c.to_lowercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    while key.ends_with('_') {
        key.pop();
    }
    key
}

/// The columns of a file, in order.
#[derive(Debug, Clone)]
pub struct Header {
    /// The header row as read.
    pub record: StringRecord,
    pub names: Vec<String>,
    pub columns: Vec<Column>,
}

impl Header {
    pub fn new(record: &StringRecord) -> Header {
        let mut columns: Vec<Column> = Vec::with_capacity(record.len());
        for name in record.iter() {
            let mut column = Column::for_header(name);
            // A second column mapping to the same field keeps its data as an attribute.
            if !matches!(column, Column::Attr(_)) && columns.contains(&column) {
                column = Column::Attr(attr_key(name));
            }
            columns.push(column);
        }
        Header {
            record: record.clone(),
            names: record.iter().map(|s| s.trim().to_string()).collect(),
            columns,
        }
    }

    pub fn has(&self, column: &Column) -> bool {
        self.columns.contains(column)
    }
}

/// Why a row cannot be a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub column: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column.is_empty() {
            write!(f, "{}", self.message)
        } else {
            // A quoted field may hold line breaks: escaped, the message stays one line.
            let value: String = self
                .value
                .chars()
                .map(|c| match c {
                    c if c.is_control() => c.escape_default().to_string(),
                    c => c.to_string(),
                })
                .collect();
            write!(f, "{}: `{value}`: {}", self.column, self.message)
        }
    }
}

/// A row that became a recipient. `id` is `None` when the row only had a login; the
/// importer resolves it.
#[derive(Debug, Clone)]
pub struct ParsedRow {
    pub recipient: Recipient,
    pub id: Option<u64>,
    /// The row had a phone value that is not a valid number.
    pub invalid_phone: bool,
}

/// Parses one record. Every problem in the row is reported, not just the first.
pub fn parse(
    header: &Header,
    record: &StringRecord,
    kind: RecipientKind,
    region: Id,
) -> Result<ParsedRow, Vec<RowError>> {
    let mut errors = Vec::new();
    let mut r = Recipient {
        kind,
        id: 0,
        login: None,
        status: Status::New,
        name: String::new(),
        email: None,
        billing_email: None,
        phone: None,
        phone_raw: None,
        category: None,
        location: None,
        billing_type: None,
        partner: None,
        tariffs: Vec::new(),
        timezone: None,
        attrs: Default::default(),
    };
    let mut id = None;
    // An id that is there but wrong is reported as such, not as a missing one too.
    let mut id_given = false;
    let mut invalid_phone = false;
    for (i, value) in record.iter().enumerate() {
        let Some(column) = header.columns.get(i) else {
            break;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let bad = |message: String| RowError {
            column: header.names[i].clone(),
            value: value.to_string(),
            message,
        };
        match column {
            Column::Id => {
                id_given = true;
                match value.parse::<u64>() {
                    Ok(v) => id = Some(v),
                    Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                        errors.push(bad(format!("too large (at most {})", u64::MAX)))
                    }
                    Err(_) => errors.push(bad("expected a whole number".into())),
                }
            }
            Column::Login => r.login = Some(value.to_string()),
            Column::Status => match Status::parse_label(value) {
                Some(s) => r.status = s,
                None => errors.push(bad(expected(Status::NAMES))),
            },
            Column::Name => r.name = value.to_string(),
            Column::Email => r.email = Some(value.to_string()),
            Column::BillingEmail => r.billing_email = Some(value.to_string()),
            Column::Phone => {
                r.phone = phone::first_valid(value, region);
                invalid_phone = r.phone.is_none();
                r.phone_raw = Some(value.to_string());
            }
            Column::Category => match Category::parse_label(value) {
                Some(c) => r.category = Some(c),
                None => errors.push(bad(expected(Category::NAMES))),
            },
            Column::Location => r.location = Some(value.to_string()),
            Column::BillingType => match BillingType::parse_label(value) {
                Some(b) => r.billing_type = Some(b),
                None => errors.push(bad(expected(BillingType::NAMES))),
            },
            Column::Partner => r.partner = Some(value.to_string()),
            Column::Tariffs => r.tariffs = parse_tariffs(value),
            Column::Timezone => match value.parse::<chrono_tz::Tz>() {
                Ok(_) => r.timezone = Some(value.to_string()),
                Err(_) => errors.push(bad(
                    "expected an IANA time zone such as `Africa/Johannesburg`".into(),
                )),
            },
            Column::Attr(key) => {
                r.attrs.insert(key.clone(), value.to_string());
            }
        }
    }
    if !id_given && r.login.is_none() {
        errors.push(RowError {
            column: String::new(),
            value: String::new(),
            message: "row has neither an id nor a login".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    r.id = id.unwrap_or(0);
    Ok(ParsedRow {
        recipient: r,
        id,
        invalid_phone,
    })
}

fn expected(names: &[&str]) -> String {
    format!("expected one of {}", names.join(", "))
}

/// `Internet: Fiber 100 | Voice: Basic` → two tariffs. Items are separated by `|`, `;`
/// or `,`; a `Service:` prefix is kept when it names a service.
pub fn parse_tariffs(value: &str) -> Vec<Tariff> {
    value
        .split(['|', ';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once(':') {
            Some((service, plan)) if Service::parse_label(service).is_some() => Tariff {
                service: Service::parse_label(service),
                plan: plan.trim().to_string(),
            },
            _ => Tariff {
                service: None,
                plan: item.to_string(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn za() -> Id {
        phone::parse_region("ZA").unwrap()
    }

    #[test]
    fn maps_splynx_export_headers_and_keeps_extra_columns() {
        let header = Header::new(&StringRecord::from(vec![
            "ID",
            "Portal login",
            "Full name",
            "Billing e-mail",
            "Phone number",
            "Tariff plans",
            "Overdue days",
        ]));
        assert_eq!(
            header.columns,
            vec![
                Column::Id,
                Column::Login,
                Column::Name,
                Column::BillingEmail,
                Column::Phone,
                Column::Tariffs,
                Column::Attr("overdue_days".into()),
            ]
        );
    }

    #[test]
    fn reports_every_bad_value_of_a_row() {
        let header = Header::new(&StringRecord::from(vec![
            "id", "login", "status", "category",
        ]));
        let errors = parse(
            &header,
            &StringRecord::from(vec!["x1", "0001", "actve", "alien"]),
            RecipientKind::Customer,
            za(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[1].column, "status");
        assert_eq!(errors[1].value, "actve");
    }

    #[test]
    fn invalid_phone_keeps_the_row_and_the_raw_value() {
        let header = Header::new(&StringRecord::from(vec!["id", "phone"]));
        let row = parse(
            &header,
            &StringRecord::from(vec!["7", "12345"]),
            RecipientKind::Lead,
            za(),
        )
        .unwrap();
        assert!(row.invalid_phone);
        assert_eq!(row.recipient.phone, None);
        assert_eq!(row.recipient.phone_raw.as_deref(), Some("12345"));
    }

    #[test]
    fn tariffs_keep_their_service() {
        let t = parse_tariffs("Internet: Fiber 100 | Voice: Basic; Legacy");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].service, Some(Service::Internet));
        assert_eq!(t[0].plan, "Fiber 100");
        assert_eq!(t[2].service, None);
    }
}
