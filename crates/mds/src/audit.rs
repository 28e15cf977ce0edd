//! `mds audit`: the audit log's events, newest first; `mds audit verify`:
//! the whole chain checked (exit 1 when a link is broken).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::data;
use crate::commands::Ctx;
use crate::output::table;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Audit {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only this project's events (id or slug)
    #[arg(short, long)]
    project: Option<String>,
    /// Only events this recent, e.g. 1h, 7d
    #[arg(long, value_parser = crate::parse_span)]
    since: Option<std::time::Duration>,
    /// Only actions starting with this, e.g. data_service. or secret.reveal
    #[arg(long)]
    action: Option<String>,
    /// At most this many (newest first)
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole chain: every event in order, linked to the one
    /// before, unchanged since it was written (needs the operator's key)
    Verify,
}

impl Audit {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        if let Some(AuditCommand::Verify) = self.command {
            let answer = ctx.api.get("/audit-events/verify")?;
            let broken = answer["data"]["broken"].clone();
            if !ctx.printed_json(&answer) {
                let found = &answer["data"];
                match &broken {
                    Value::Null => println!(
                        "The audit chain holds: {} events, {} to {}{}.",
                        found["events"],
                        found["first_seq"],
                        found["last_seq"],
                        match found["anchored_after"].as_i64() {
                            Some(seq) => format!(" (trimmed up to event {seq})"),
                            None => String::new(),
                        }
                    ),
                    broken => println!(
                        "The audit chain is broken at event {}: {}.",
                        broken["seq"],
                        broken["reason"].as_str().unwrap_or_default()
                    ),
                }
            }
            return Ok(if broken.is_null() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let since = self.since.map(|span| {
            (chrono::Utc::now() - chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX))
                .to_rfc3339()
        });
        let limit = self.limit.to_string();
        let mut query: Vec<(&str, &str)> = vec![("limit", &limit)];
        for (name, value) in [
            ("project", self.project.as_deref()),
            ("since", since.as_deref()),
            ("action", self.action.as_deref()),
        ] {
            if let Some(value) = value {
                query.push((name, value));
            }
        }
        let answer = ctx.api.get_query("/audit-events", &query)?;
        if ctx.printed_json(&answer) {
            return Ok(ExitCode::SUCCESS);
        }
        let page: Value = data(answer)?;
        let text = |e: &Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
        table(
            &[
                "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL",
            ],
            page["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    vec![
                        e["seq"].to_string(),
                        text(e, "at"),
                        match text(e, "actor_kind").as_str() {
                            "system" => "system".to_string(),
                            _ => format!("{} ({})", text(e, "actor_name"), text(e, "actor_id")),
                        },
                        text(e, "action"),
                        text(e, "target"),
                        text(e, "outcome"),
                        text(e, "detail"),
                    ]
                })
                .collect(),
        );
        Ok(ExitCode::SUCCESS)
    }
}
