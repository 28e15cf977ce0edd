//! `mds sandbox`: create sandboxes of a project environment, run commands
//! in them, destroy them. Sandboxes are named by id or by name.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use mds_api_types::sandboxes::{ExecResult, Sandbox as SandboxView};
use mds_api_types::time;
use serde_json::{json, Map};

use crate::client::{data, segment};
use crate::commands::Ctx;
use crate::output::table;

#[derive(Subcommand)]
pub enum Sandbox {
    /// Create a sandbox that boots with a project environment's variables
    Create {
        /// Project (id or slug); without one, no data service is injected
        #[arg(short, long)]
        project: Option<String>,
        /// Environment [default: staging]
        #[arg(short, long)]
        environment: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// A variable of its own, NAME=value (repeatable)
        #[arg(short = 'E', long = "env")]
        env: Vec<String>,
    },
    /// List sandboxes
    List {
        #[arg(short, long)]
        project: Option<String>,
        /// Only this state (running, stopped, destroyed...)
        #[arg(long)]
        state: Option<String>,
    },
    /// Run a command in a sandbox; its exit code is mds's
    Exec {
        sandbox: String,
        /// Seconds before the command is killed (at most 600)
        #[arg(long, default_value_t = 60)]
        timeout: u32,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run commands line by line in a sandbox (no terminal: each line is
    /// one command, in /workspace)
    Shell { sandbox: String },
    /// Destroy a sandbox: its processes and workspace; data services are
    /// untouched
    Destroy { sandbox: String },
}

/// The sandbox's id, from an id or a name.
fn resolve(ctx: &Ctx, reference: &str) -> anyhow::Result<String> {
    if reference.starts_with("sbx_") {
        return Ok(reference.to_string());
    }
    let answer = ctx
        .api
        .get(&format!("/sandboxes/by-name/{}", segment(reference)))?;
    Ok(data::<SandboxView>(answer)?.id)
}

/// Runs one command; prints its output; returns its exit code.
fn exec(ctx: &Ctx, id: &str, command: &str, timeout: u32) -> anyhow::Result<i64> {
    let answer = ctx.api.post(
        &format!("/sandboxes/{}/exec", segment(id)),
        &json!({ "command": command, "timeout": timeout }),
    )?;
    let finished: ExecResult = data(answer)?;
    print!("{}", finished.stdout);
    eprint!("{}", finished.stderr);
    std::io::stdout().flush()?;
    if finished.timed_out {
        eprintln!("mds sandbox: the command ran past {timeout} s and was killed");
    }
    Ok(finished.exit_code.into())
}

fn print_sandboxes(rows: &[SandboxView]) {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    table(
        &["ID", "NAME", "STATE", "PROJECT", "ENVIRONMENT", "CREATED"],
        rows.iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    s(&r.name),
                    r.state.clone(),
                    s(&r.project_slug),
                    s(&r.environment),
                    time::format(&r.created_at),
                ]
            })
            .collect(),
    );
}

impl Sandbox {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        match self {
            Sandbox::Create {
                project,
                environment,
                name,
                env,
            } => {
                let mut vars = Map::new();
                for assignment in &env {
                    let (k, v) = assignment
                        .split_once('=')
                        .with_context(|| format!("-E {assignment:?} is not NAME=value"))?;
                    vars.insert(k.to_string(), json!(v));
                }
                let answer = ctx.api.post(
                    "/sandboxes",
                    &json!({
                        "project_id": project,
                        "environment": environment,
                        "name": name,
                        "env": vars,
                    }),
                )?;
                if !ctx.printed_json(&answer) {
                    print_sandboxes(&[data(answer)?]);
                }
            }
            Sandbox::List { project, state } => {
                let mut query = Vec::new();
                if let Some(p) = &project {
                    query.push(("project_id", p.as_str()));
                }
                if let Some(s) = &state {
                    query.push(("state", s.as_str()));
                }
                let answer = ctx.api.get_query("/sandboxes", &query)?;
                if !ctx.printed_json(&answer) {
                    print_sandboxes(&data::<Vec<SandboxView>>(answer)?);
                }
            }
            Sandbox::Exec {
                sandbox,
                timeout,
                command,
            } => {
                let id = resolve(ctx, &sandbox)?;
                let code = exec(ctx, &id, &command.join(" "), timeout)?;
                return Ok(ExitCode::from(code.clamp(0, 255) as u8));
            }
            Sandbox::Shell { sandbox } => {
                let id = resolve(ctx, &sandbox)?;
                eprintln!("{id}: one command per line; Ctrl-D ends");
                let stdin = std::io::stdin();
                loop {
                    eprint!("{id}$ ");
                    let mut line = String::new();
                    if stdin.lock().read_line(&mut line)? == 0 {
                        eprintln!();
                        break;
                    }
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let code = exec(ctx, &id, line, 600)?;
                    if code != 0 {
                        eprintln!("(exit {code})");
                    }
                }
            }
            Sandbox::Destroy { sandbox } => {
                let id = resolve(ctx, &sandbox)?;
                let answer = ctx.api.delete(&format!("/sandboxes/{}", segment(&id)))?;
                if !ctx.printed_json(&answer) {
                    println!("destroyed {id}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
