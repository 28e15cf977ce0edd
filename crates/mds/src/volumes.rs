//! `mds volumes`: filesystems that outlive sandboxes, attached to one at a
//! time. Volumes and sandboxes are named by id or name.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::segment;
use crate::commands::Ctx;
use crate::output::table;

#[derive(Subcommand)]
pub enum Volumes {
    /// Create a volume
    Create {
        name: String,
        /// Size in GB (GiB)
        #[arg(long)]
        size_gb: f64,
        /// local (ext4 where possible, else a directory), ext4 or dir
        #[arg(long)]
        backend: Option<String>,
        #[arg(short, long)]
        project: Option<String>,
    },
    /// List volumes
    List {
        #[arg(short, long)]
        project: Option<String>,
    },
    /// Attach a volume to a sandbox (one holder at a time)
    Attach {
        volume: String,
        sandbox: String,
        /// Where it appears in the sandbox [default: /mnt/NAME]
        #[arg(long)]
        mount_path: Option<String>,
    },
    /// Detach a volume from its sandbox
    Detach { volume: String },
    /// Take a point-in-time copy
    Snapshot { volume: String },
    /// Put a snapshot back (the volume must be detached)
    Restore { volume: String, snapshot: String },
    /// Delete a detached volume, its data and snapshots
    Delete { volume: String },
}

fn volume(ctx: &Ctx, reference: &str) -> anyhow::Result<Value> {
    Ok(ctx.api.get(&format!("/volumes/{}", segment(reference)))?["data"].clone())
}

fn sandbox_id(ctx: &Ctx, reference: &str) -> anyhow::Result<String> {
    let path = if reference.starts_with("sbx_") {
        format!("/sandboxes/{}", segment(reference))
    } else {
        format!("/sandboxes/by-name/{}", segment(reference))
    };
    ctx.api.get(&path)?["data"]["id"]
        .as_str()
        .map(str::to_string)
        .context("the server's answer has no sandbox id")
}

fn print_volumes(rows: &[Value]) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    table(
        &[
            "ID",
            "NAME",
            "SIZE",
            "USED",
            "BACKEND",
            "STATE",
            "ATTACHED TO",
        ],
        rows.iter()
            .map(|r| {
                vec![
                    s(&r["id"]),
                    s(&r["name"]),
                    format!("{:.2} GB", r["size_gb"].as_f64().unwrap_or_default()),
                    format!("{} B", r["used_bytes"].as_u64().unwrap_or_default()),
                    s(&r["backend"]),
                    s(&r["state"]),
                    s(&r["attached_to"]),
                ]
            })
            .collect(),
    );
}

impl Volumes {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Volumes::Create {
                name,
                size_gb,
                backend,
                project,
            } => {
                let answer = ctx.api.post(
                    "/volumes",
                    &json!({ "name": name, "size_gb": size_gb, "backend": backend, "project_id": project }),
                )?;
                if !ctx.printed_json(&answer) {
                    print_volumes(&[answer["data"].clone()]);
                }
            }
            Volumes::List { project } => {
                let query: Vec<(&str, &str)> = project
                    .as_deref()
                    .map(|p| vec![("project_id", p)])
                    .unwrap_or_default();
                let answer = ctx.api.get_query("/volumes", &query)?;
                if !ctx.printed_json(&answer) {
                    print_volumes(answer["data"].as_array().map_or(&[], Vec::as_slice));
                }
            }
            Volumes::Attach {
                volume: reference,
                sandbox,
                mount_path,
            } => {
                let id = volume(ctx, &reference)?["id"].clone();
                let sandbox = sandbox_id(ctx, &sandbox)?;
                let answer = ctx.api.post(
                    &format!("/computers/{}/volumes", segment(&sandbox)),
                    &json!({ "volume_id": id, "mount_path": mount_path }),
                )?;
                if !ctx.printed_json(&answer) {
                    let a = &answer["data"];
                    println!(
                        "attached {} to {} at {} (lease {}, fencing token {})",
                        reference,
                        sandbox,
                        a["mount_path"].as_str().unwrap_or_default(),
                        a["id"].as_str().unwrap_or_default(),
                        a["fencing_token"]
                    );
                }
            }
            Volumes::Detach { volume: reference } => {
                let v = volume(ctx, &reference)?;
                let attachment = &v["attachment"];
                let (Some(holder), Some(id)) = (
                    attachment["computer_id"].as_str(),
                    attachment["id"].as_str(),
                ) else {
                    println!("{reference} is not attached");
                    return Ok(());
                };
                ctx.api.delete(&format!(
                    "/computers/{}/volumes/{}",
                    segment(holder),
                    segment(id)
                ))?;
                println!("detached {reference} from {holder}");
            }
            Volumes::Snapshot { volume: reference } => {
                let id = volume(ctx, &reference)?["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let answer = ctx
                    .api
                    .post(&format!("/volumes/{}/snapshots", segment(&id)), &json!({}))?;
                if !ctx.printed_json(&answer) {
                    println!(
                        "snapshot {}",
                        answer["data"]["id"].as_str().unwrap_or_default()
                    );
                }
            }
            Volumes::Restore {
                volume: reference,
                snapshot,
            } => {
                let id = volume(ctx, &reference)?["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ctx.api.post(
                    &format!("/volumes/{}/restore", segment(&id)),
                    &json!({ "snapshot_id": snapshot }),
                )?;
                println!("restored {reference} to {snapshot}");
            }
            Volumes::Delete { volume: reference } => {
                let id = volume(ctx, &reference)?["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ctx.api.delete(&format!("/volumes/{}", segment(&id)))?;
                println!("deleted {reference}");
            }
        }
        Ok(())
    }
}
