//! `mds storage`: the bucket an attached storage service gives one
//! environment, from the terminal. Remote keys are written `:key` so that
//! `cp` can tell them from local paths.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use mds_api_types::{Bucket, ObjectList, Presigned};
use reqwest::Method;
use serde_json::json;

use crate::client::{data, segment};
use crate::commands::{Ctx, Target};
use crate::output::table;

/// Transfers smaller than this show no progress bar.
const PROGRESS_FROM: u64 = 1 << 20;
/// A transfer may take long; the API's default timeout may not.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Subcommand)]
pub enum Storage {
    /// List objects (under a prefix)
    Ls {
        #[command(flatten)]
        target: Target,
        /// Only keys starting with this
        prefix: Option<String>,
    },
    /// Copy a file to a key (`mds storage cp ./a.png :img/a.png`) or a key
    /// to a file (`mds storage cp :img/a.png ./a.png`; `-` is stdout)
    Cp {
        #[command(flatten)]
        target: Target,
        from: String,
        to: String,
    },
    /// Delete objects
    Rm {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print a URL that opens one key for one method without a key
    Presign {
        #[command(flatten)]
        target: Target,
        key: String,
        /// For an upload (PUT) instead of a download (GET)
        #[arg(long)]
        put: bool,
        /// Lifetime in seconds
        #[arg(long, default_value_t = 300)]
        expires_in: i64,
    },
}

fn remote(arg: &str) -> Option<&str> {
    arg.strip_prefix(':')
}

/// The bucket of the storage service attached to (project, environment).
fn bucket(ctx: &Ctx, target: &Target) -> anyhow::Result<Bucket> {
    let answer = ctx
        .api
        .get_query("/storage/buckets", &[("project_id", &target.project)])?;
    let buckets: Vec<Bucket> = data(answer)?;
    buckets
        .into_iter()
        .find(|b| b.environment.as_deref() == Some(target.environment.as_str()))
        .with_context(|| {
            format!(
                "project {:?} has no storage in environment {:?}; attach it with \
                 `mds attach storage -p {}`",
                target.project, target.environment, target.project
            )
        })
}

fn object_path(bucket: &Bucket, key: &str) -> String {
    format!("/storage/buckets/{}/objects/{}", bucket.id, segment(key))
}

fn progress(len: u64, what: &str) -> ProgressBar {
    if len < PROGRESS_FROM {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

impl Storage {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Storage::Ls { target, prefix } => {
                let bucket = bucket(ctx, &target)?;
                let mut marker = String::new();
                let mut rows = Vec::new();
                loop {
                    let answer = ctx.api.get_query(
                        &format!("/storage/buckets/{}/objects", bucket.id),
                        &[
                            ("prefix", prefix.as_deref().unwrap_or("")),
                            ("marker", &marker),
                        ],
                    )?;
                    let page: ObjectList = serde_json::from_value(answer)?;
                    rows.extend(page.data);
                    match page.next_marker {
                        Some(next) if page.is_truncated => marker = next,
                        _ => break,
                    }
                }
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                    return Ok(());
                }
                table(
                    &["KEY", "SIZE", "MODIFIED", "CONTENT TYPE"],
                    rows.iter()
                        .map(|o| {
                            vec![
                                o.key.clone(),
                                o.size.to_string(),
                                o.last_modified.format("%Y-%m-%d %H:%M:%S").to_string(),
                                o.content_type.clone(),
                            ]
                        })
                        .collect(),
                );
                Ok(())
            }
            Storage::Cp { target, from, to } => match (remote(&from), remote(&to)) {
                (None, Some(key)) => upload(ctx, &target, Path::new(&from), key),
                (Some(key), None) => download(ctx, &target, key, &to),
                _ => bail!(
                    "one side of cp is a local path and the other a key written :key, \
                     e.g. `mds storage cp ./a.png :images/a.png`"
                ),
            },
            Storage::Rm { target, keys } => {
                let bucket = bucket(ctx, &target)?;
                for key in keys {
                    let key = remote(&key).unwrap_or(&key).to_string();
                    ctx.api.delete(&object_path(&bucket, &key))?;
                    println!("deleted {key}");
                }
                Ok(())
            }
            Storage::Presign {
                target,
                key,
                put,
                expires_in,
            } => {
                let bucket = bucket(ctx, &target)?;
                let key = remote(&key).unwrap_or(&key).to_string();
                let answer = ctx.api.post(
                    &format!("/storage/buckets/{}/presign", bucket.id),
                    &json!({
                        "key": key,
                        "method": if put { "PUT" } else { "GET" },
                        "expires_in": expires_in,
                    }),
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let presigned: Presigned = data(answer)?;
                println!("{}", presigned.url);
                eprintln!(
                    "valid until {} for {}",
                    presigned.expires_at, presigned.method
                );
                Ok(())
            }
        }
    }
}

/// Counts bytes as they are read, for the progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn upload(ctx: &Ctx, target: &Target, file: &Path, key: &str) -> anyhow::Result<()> {
    let bucket = bucket(ctx, target)?;
    let opened = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = opened.metadata()?.len();
    let bar = progress(len, &format!("upload {key}"));
    let body = reqwest::blocking::Body::sized(
        Counting {
            inner: opened,
            bar: bar.clone(),
        },
        len,
    );
    let request = ctx
        .api
        .request(Method::PUT, &object_path(&bucket, key))
        .timeout(TRANSFER_TIMEOUT)
        .header("content-type", content_type(file))
        .body(body);
    let answer: serde_json::Value = ctx.api.send_raw(request)?.json()?;
    bar.finish_and_clear();
    if ctx.printed_json(&answer) {
        return Ok(());
    }
    println!(
        "{} -> {key} ({len} bytes, etag {})",
        file.display(),
        answer["data"]["etag"].as_str().unwrap_or_default()
    );
    Ok(())
}

fn download(ctx: &Ctx, target: &Target, key: &str, to: &str) -> anyhow::Result<()> {
    let bucket = bucket(ctx, target)?;
    let request = ctx
        .api
        .request(Method::GET, &object_path(&bucket, key))
        .timeout(TRANSFER_TIMEOUT);
    let mut response = ctx.api.send_raw(request)?;
    let len = response.content_length().unwrap_or(0);
    if to == "-" {
        let mut out = std::io::stdout().lock();
        response.copy_to(&mut out)?;
        out.flush()?;
        return Ok(());
    }
    let mut path = PathBuf::from(to);
    if path.is_dir() {
        path.push(key.rsplit('/').next().unwrap_or(key));
    }
    // Written next to the target and renamed: a cut download leaves the
    // old file (or none), never half a file.
    let partial = path.with_extension("mds-partial");
    let bar = progress(len, &format!("download {key}"));
    let mut file =
        File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let copied = std::io::copy(
        &mut Counting {
            inner: &mut response,
            bar: bar.clone(),
        },
        &mut file,
    );
    bar.finish_and_clear();
    if let Err(e) = copied.and_then(|_| file.sync_all()) {
        let _ = std::fs::remove_file(&partial);
        return Err(e).context("the download broke off");
    }
    std::fs::rename(&partial, &path)?;
    println!("{key} -> {} ({len} bytes)", path.display());
    Ok(())
}

/// A content type from the file's extension, for browsers fetching it.
fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}
