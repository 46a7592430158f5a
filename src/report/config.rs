//! `[report]` of a spec: which tables and figures to draw.

use serde::{Deserialize, Serialize};

/// `[report]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Regenerate reports at the end of a run.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for ReportSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn default_true() -> bool {
    true
}
