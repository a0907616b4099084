//! `keel fleet config set PATH VALUE`: the same edit on every appliance, each with its own
//! ETag, and one summary line per appliance.
//!
//! The edit is made here with `keel_config::edit` (the code the appliance runs for
//! `config set` on its console), so a bad path or value is reported with the schema's
//! message before anything is sent; the appliance validates the result again on `PUT`, and
//! its refusal (a rule this CLI's schema does not know, a stale ETag) is shown as it said it.

use keel_config::Config;
use keel_config::edit::{self, Change};
use serde_json::{Value, json};

/// What happened on one appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// The appliance took the new configuration; the leaves that changed.
    Changed(Vec<Change>),
    /// The value was already set; nothing was sent.
    Unchanged,
    /// The edit breaks a rule (checked here, or by the appliance on `PUT`): its message.
    Refused(String),
    /// The appliance could not be asked (connect, timeout, bad token, unexpected answer).
    Failed(String),
}

impl ConfigOutcome {
    /// Whether the appliance ends up with the value set.
    pub fn is_success(&self) -> bool {
        matches!(self, ConfigOutcome::Changed(_) | ConfigOutcome::Unchanged)
    }
}

/// The configuration to `PUT`, from the body of `GET /api/v1/config`: `Ok(None)` when the
/// value is already there, `Err` with the reason when the edit is refused.
pub fn edited(
    current: &Value,
    path: &str,
    value: &str,
) -> Result<Option<(Config, Vec<Change>)>, String> {
    let current = Config::from_value(current)
        .map_err(|e| format!("its configuration does not read as this keel's schema: {e}"))?;
    let new = edit::set(&current, path, value).map_err(|e| e.to_string())?;
    let changes = edit::diff(&current, &new);
    if changes.is_empty() {
        Ok(None)
    } else {
        Ok(Some((new, changes)))
    }
}

/// The summary: one line per appliance.
pub fn summary(outcomes: &[(String, ConfigOutcome)]) -> String {
    let mut out = String::new();
    for (name, outcome) in outcomes {
        let line = match outcome {
            ConfigOutcome::Changed(changes) => {
                let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                format!("{name}: changed: {}", changes.join(", "))
            }
            ConfigOutcome::Unchanged => format!("{name}: unchanged (already set)"),
            ConfigOutcome::Refused(message) => format!("{name}: refused: {message}"),
            ConfigOutcome::Failed(reason) => format!("{name}: not changed: {reason}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let ok = outcomes.iter().filter(|(_, o)| o.is_success()).count();
    out.push_str(&format!(
        "{ok} of {} appliances have the new value\n",
        outcomes.len()
    ));
    out
}

/// `--json`: one object per appliance with `result` (`changed`, `unchanged`, `refused`,
/// `failed`) and the changes or the message.
pub fn summary_json(outcomes: &[(String, ConfigOutcome)]) -> Value {
    Value::Array(
        outcomes
            .iter()
            .map(|(name, outcome)| match outcome {
                ConfigOutcome::Changed(changes) => json!({
                    "appliance": name,
                    "result": "changed",
                    "changes": changes.iter().map(|c| json!({
                        "path": c.path, "old": c.old, "new": c.new,
                    })).collect::<Vec<_>>(),
                }),
                ConfigOutcome::Unchanged => json!({ "appliance": name, "result": "unchanged" }),
                ConfigOutcome::Refused(m) => {
                    json!({ "appliance": name, "result": "refused", "error": m })
                }
                ConfigOutcome::Failed(m) => {
                    json!({ "appliance": name, "result": "failed", "error": m })
                }
            })
            .collect(),
    )
}
