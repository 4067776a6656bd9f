//! The `file` provider: an outbox of JSON lines, one file per channel.
//!
//! The embedded default, so a newcomer runs a real job with no credentials and reads
//! what would have been sent in `data/outbox/sms.jsonl`.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory of the outbox files (default: `<data_dir>/outbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}
