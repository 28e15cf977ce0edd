//! `mds volumes`: filesystems that outlive sandboxes, attached to one at a
//! time. Volumes and sandboxes are named by id or name.

use clap::Subcommand;
use mds_api_types::sandboxes::Sandbox;
use mds_api_types::volumes::{Attachment, Snapshot, Volume};
use serde_json::json;

use crate::client::{data, segment};
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

fn volume(ctx: &Ctx, reference: &str) -> anyhow::Result<Volume> {
    data(ctx.api.get(&format!("/volumes/{}", segment(reference)))?)
}

fn sandbox_id(ctx: &Ctx, reference: &str) -> anyhow::Result<String> {
    let path = if reference.starts_with("sbx_") {
        format!("/sandboxes/{}", segment(reference))
    } else {
        format!("/sandboxes/by-name/{}", segment(reference))
    };
    Ok(data::<Sandbox>(ctx.api.get(&path)?)?.id)
}

fn print_volumes(rows: &[Volume]) {
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
                    r.id.clone(),
                    r.name.clone(),
                    format!("{:.2} GB", r.size_gb),
                    format!("{} B", r.used_bytes),
                    r.backend.clone(),
                    r.state.clone(),
                    r.attached_to.clone().unwrap_or_else(|| "-".to_string()),
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
                    print_volumes(&[data(answer)?]);
                }
            }
            Volumes::List { project } => {
                let query: Vec<(&str, &str)> = project
                    .as_deref()
                    .map(|p| vec![("project_id", p)])
                    .unwrap_or_default();
                let answer = ctx.api.get_query("/volumes", &query)?;
                if !ctx.printed_json(&answer) {
                    print_volumes(&data::<Vec<Volume>>(answer)?);
                }
            }
            Volumes::Attach {
                volume: reference,
                sandbox,
                mount_path,
            } => {
                let id = volume(ctx, &reference)?.id;
                let sandbox = sandbox_id(ctx, &sandbox)?;
                let answer = ctx.api.post(
                    &format!("/computers/{}/volumes", segment(&sandbox)),
                    &json!({ "volume_id": id, "mount_path": mount_path }),
                )?;
                if !ctx.printed_json(&answer) {
                    let a: Attachment = data(answer)?;
                    println!(
                        "attached {} to {} at {} (lease {}, fencing token {})",
                        reference, sandbox, a.mount_path, a.id, a.fencing_token
                    );
                }
            }
            Volumes::Detach { volume: reference } => {
                let Some(attachment) = volume(ctx, &reference)?.attachment else {
                    println!("{reference} is not attached");
                    return Ok(());
                };
                let holder = attachment.computer_id;
                ctx.api.delete(&format!(
                    "/computers/{}/volumes/{}",
                    segment(&holder),
                    segment(&attachment.id)
                ))?;
                println!("detached {reference} from {holder}");
            }
            Volumes::Snapshot { volume: reference } => {
                let id = volume(ctx, &reference)?.id;
                let answer = ctx
                    .api
                    .post(&format!("/volumes/{}/snapshots", segment(&id)), &json!({}))?;
                if !ctx.printed_json(&answer) {
                    println!("snapshot {}", data::<Snapshot>(answer)?.id);
                }
            }
            Volumes::Restore {
                volume: reference,
                snapshot,
            } => {
                let id = volume(ctx, &reference)?.id;
                ctx.api.post(
                    &format!("/volumes/{}/restore", segment(&id)),
                    &json!({ "snapshot_id": snapshot }),
                )?;
                println!("restored {reference} to {snapshot}");
            }
            Volumes::Delete { volume: reference } => {
                let id = volume(ctx, &reference)?.id;
                ctx.api.delete(&format!("/volumes/{}", segment(&id)))?;
                println!("deleted {reference}");
            }
        }
        Ok(())
    }
}
