//! What `/volumes` and `/computers/{id}/volumes` answer.

use serde::{Deserialize, Serialize};

use crate::{time, Timestamp};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub project_id: Option<String>,
    pub size_bytes: i64,
    /// `size_bytes` in GiB.
    pub size_gb: f64,
    pub used_bytes: u64,
    /// `ext4` or `dir`
    pub backend: String,
    /// Same as `backend`.
    pub filesystem: String,
    /// Whether writes past `size_bytes` fail (ext4 only).
    pub size_enforced: bool,
    /// `attached` or `available`
    pub state: String,
    /// The holder's id.
    pub attached_to: Option<String>,
    pub attachment: Option<Attachment>,
    pub host_id: String,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
}

/// A live lease of a volume by a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub volume_id: String,
    /// The holder, under the name the MIOSA computers API reads.
    pub computer_id: String,
    /// The same holder.
    pub sandbox_id: String,
    pub holder_kind: String,
    pub mount_path: String,
    /// Grows with each lease of the volume: a stale holder's is smaller.
    pub fencing_token: i64,
    /// Always `attached`.
    pub state: String,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    pub size_bytes: i64,
    /// Absent in the answer to taking one.
    #[serde(
        default,
        serialize_with = "time::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<Timestamp>,
}

/// `POST /volumes`: the size as `size_bytes` or `size_gb` (GiB).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateVolume {
    pub name: Option<String>,
    pub size_gb: Option<f64>,
    pub size_bytes: Option<i64>,
    /// local (the best this host has, the default), ext4 or dir.
    pub backend: Option<String>,
    /// Project id or slug.
    pub project_id: Option<String>,
}
