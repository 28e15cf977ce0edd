//! The client side of a boot: `mds attach`, `mds env`, `mds run`, `mds psql`.
//! The server resolves (project, environment) with provenance; `mds run`
//! adds its run-level variables through the same pure `resolve_env`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use mds_api_types::{CreateDataService, DataService, EnvEntry, ResolvedEnv, UpdateDataService};
use mds_core::env::{injected_names, resolve_env, Candidate, Layer};
use mds_core::kinds::ServiceKind;
use serde_json::Value;

use crate::client::{data, segment};
use crate::commands::{confirm, Ctx};
use crate::output::table;

#[derive(Args)]
pub struct Attach {
    /// What to attach: postgres, redis or storage (leave out with --existing)
    #[arg(required_unless_present = "existing")]
    kind: Option<String>,
    #[arg(short, long)]
    project: String,
    /// A name; required for a second service of the same kind, whose
    /// variables are then prefixed (NAME_DATABASE_URL)
    #[arg(long)]
    name: Option<String>,
    /// Bind only in this environment (default: every environment)
    #[arg(short, long)]
    environment: Option<String>,
    /// Redis: memory limit, e.g. 256mb
    #[arg(long)]
    maxmemory: Option<String>,
    /// Redis: eviction policy, e.g. allkeys-lru (default noeviction)
    #[arg(long)]
    eviction: Option<String>,
    /// The engine's major version, e.g. 15 (refused unless this server has it)
    #[arg(long)]
    engine_version: Option<String>,
    /// Attach this standalone database or bucket (its id) instead of making one
    #[arg(long, conflicts_with_all = ["kind", "name", "maxmemory", "eviction", "engine_version", "pool", "pool_size", "pool_max_clients"])]
    existing: Option<String>,
    /// Postgres: how DATABASE_URL is pooled: transaction (default), session or
    /// off (DATABASE_URL direct)
    #[arg(long, value_parser = ["transaction", "session", "off"])]
    pool: Option<String>,
    /// Postgres: server connections of each binding's pool
    #[arg(long)]
    pool_size: Option<i64>,
    /// Postgres: client connections each binding may hold on the pooler
    #[arg(long)]
    pool_max_clients: Option<i64>,
}

impl Attach {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let answer = ctx.api.post(
            &format!(
                "/projects/{}/data-services?wait=true",
                segment(&self.project)
            ),
            &CreateDataService {
                kind: self.kind,
                name: self.name,
                environment: self.environment,
                maxmemory: self.maxmemory,
                eviction: self.eviction,
                engine_version: self.engine_version,
                existing: self.existing,
                pool_mode: self.pool,
                pool_size: self.pool_size,
                pool_max_clients: self.pool_max_clients,
            },
        )?;
        if ctx.printed_json(&answer) {
            return Ok(());
        }
        let service: DataService = data(answer)?;
        println!(
            "Attached {} {:?} to {} ({}): {}",
            service.kind, service.name, self.project, service.id, service.state
        );
        print_bindings(&service);
        // A kind this CLI does not know (a newer server's) names nothing.
        if let Ok(kind) = service.kind.parse::<ServiceKind>() {
            let prefix = &service.env_prefix;
            let names: Vec<String> = injected_names(kind)
                .iter()
                .filter(|name| prefix.is_empty() || !name.starts_with("AWS_"))
                .map(|name| format!("{prefix}{name}"))
                .collect();
            println!(
                "Processes booting in these environments get {} (see `mds env -p {} -e <env>`)",
                names.join(", "),
                self.project
            );
        }
        Ok(())
    }
}

fn print_bindings(service: &DataService) {
    table(
        &["environment", "state", "database", "error"],
        service
            .bindings
            .iter()
            .map(|b| {
                vec![
                    b.environment.clone(),
                    b.state.clone(),
                    b.resource.clone(),
                    b.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

#[derive(Subcommand)]
pub enum Data {
    /// List a project's data services
    List {
        #[arg(short, long)]
        project: String,
    },
    /// Set how a Postgres service's DATABASE_URL is pooled (the mode applies
    /// at the next boot, the size and client limit at once)
    Pool {
        name: String,
        #[arg(short, long)]
        project: String,
        /// Only in this environment (default: every one, and ones made later)
        #[arg(short, long)]
        environment: Option<String>,
        /// transaction, session or off (DATABASE_URL direct)
        #[arg(long, value_parser = ["transaction", "session", "off"])]
        mode: Option<String>,
        /// Server connections at most
        #[arg(long)]
        size: Option<i64>,
        /// Client connections on the pooler at most
        #[arg(long)]
        max_clients: Option<i64>,
    },
    /// Delete a data service and its data in every environment
    Delete {
        name: String,
        #[arg(short, long)]
        project: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

impl Data {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Data::List { project } => {
                let answer = ctx
                    .api
                    .get(&format!("/projects/{}/data-services", segment(&project)))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let services: Vec<DataService> = data(answer)?;
                table(
                    &["name", "type", "state", "prefix", "environments", "id"],
                    services
                        .into_iter()
                        .map(|s| {
                            vec![
                                s.name,
                                s.kind,
                                s.state,
                                s.env_prefix,
                                s.bindings
                                    .iter()
                                    .map(|b| format!("{}:{}", b.environment, b.state))
                                    .collect::<Vec<_>>()
                                    .join(" "),
                                s.id,
                            ]
                        })
                        .collect(),
                );
            }
            Data::Pool {
                name,
                project,
                environment,
                mode,
                size,
                max_clients,
            } => {
                let answer = ctx.api.send_json(
                    reqwest::Method::PATCH,
                    &format!(
                        "/projects/{}/data-services/{}",
                        segment(&project),
                        segment(&name)
                    ),
                    &[],
                    &UpdateDataService {
                        environment,
                        pool_mode: mode,
                        pool_size: size.map(Value::from),
                        pool_max_clients: max_clients.map(Value::from),
                    },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let service: DataService = data(answer)?;
                table(
                    &[
                        "environment",
                        "pool",
                        "size",
                        "max clients",
                        "database_url",
                        "in use",
                        "waiting",
                    ],
                    service
                        .bindings
                        .iter()
                        .filter_map(|b| {
                            let pool = b.pool.as_ref()?;
                            let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                            Some(vec![
                                b.environment.clone(),
                                pool.mode.clone(),
                                pool.size.to_string(),
                                pool.max_clients
                                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                                if pool.pooled { "pooled" } else { "direct" }.to_string(),
                                n(pool.servers_active),
                                n(pool.clients_waiting),
                            ])
                        })
                        .collect(),
                );
                println!("A new mode reaches DATABASE_URL at each process's next boot.");
            }
            Data::Delete { name, project, yes } => {
                if !yes {
                    confirm(&name, "data service", "its data in every environment")?;
                }
                let answer = ctx.api.delete_query(
                    &format!(
                        "/projects/{}/data-services/{}",
                        segment(&project),
                        segment(&name)
                    ),
                    &[("confirm", name.as_str())],
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!("Deleting {name}: its databases are being dropped");
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Dotenv,
    Json,
    Shell,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Env {
    #[command(subcommand)]
    sub: Option<EnvSub>,
    #[arg(short, long)]
    project: Option<String>,
    #[arg(short, long, default_value = "production")]
    environment: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Show values (needs the env:reveal scope)
    #[arg(long)]
    reveal: bool,
}

#[derive(Subcommand)]
enum EnvSub {
    /// Where one variable's value comes from
    Explain {
        name: String,
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
    },
    /// Names and provenance in two environments (never values)
    Diff {
        #[arg(short, long)]
        project: String,
        from: String,
        to: String,
    },
}

/// The resolved environment of (project, environment) from the server.
pub fn fetch(
    ctx: &Ctx,
    project: &str,
    environment: &str,
    reveal: bool,
) -> anyhow::Result<ResolvedEnv> {
    let mut query = vec![("env", environment)];
    if reveal {
        query.push(("reveal", "true"));
    }
    data(
        ctx.api
            .get_query(&format!("/projects/{}/env", segment(project)), &query)?,
    )
}

fn shown(entry: &EnvEntry) -> &str {
    entry.value.as_deref().unwrap_or(&entry.preview)
}

fn source(entry: &EnvEntry) -> String {
    format!("{} ({})", entry.source.layer, entry.source.origin)
}

/// `'...'` for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// `"..."` for a dotenv file.
fn dotenv_quote(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('$', "\\$");
    format!("\"{escaped}\"")
}

impl Env {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self.sub {
            Some(EnvSub::Explain {
                name,
                project,
                environment,
            }) => explain(ctx, &project, &environment, &name),
            Some(EnvSub::Diff { project, from, to }) => diff(ctx, &project, &from, &to),
            None => {
                let project = self
                    .project
                    .context("which project? pass -p PROJECT (or use `mds env explain|diff`)")?;
                let resolved = fetch(ctx, &project, &self.environment, self.reveal)?;
                print_env(ctx, &resolved, self.format)
            }
        }
    }
}

fn print_env(ctx: &Ctx, resolved: &ResolvedEnv, format: Format) -> anyhow::Result<()> {
    let format = if ctx.json { Format::Json } else { format };
    match format {
        Format::Table => {
            table(
                &["name", "value", "source"],
                resolved
                    .variables
                    .iter()
                    .map(|e| vec![e.name.clone(), shown(e).to_string(), source(e)])
                    .collect(),
            );
            for pending in &resolved.pending {
                eprintln!(
                    "note: binding {} in {} is {} and injects nothing yet",
                    pending.resource, pending.environment, pending.state
                );
            }
        }
        Format::Dotenv => {
            for e in &resolved.variables {
                println!("{}={}", e.name, dotenv_quote(shown(e)));
            }
        }
        Format::Shell => {
            for e in &resolved.variables {
                println!("export {}={}", e.name, shell_quote(shown(e)));
            }
        }
        Format::Json => {
            let map: BTreeMap<&str, &str> = resolved
                .variables
                .iter()
                .map(|e| (e.name.as_str(), shown(e)))
                .collect();
            println!("{}", serde_json::to_string_pretty(&map)?);
        }
    }
    Ok(())
}

fn explain(ctx: &Ctx, project: &str, environment: &str, name: &str) -> anyhow::Result<()> {
    let resolved = fetch(ctx, project, environment, false)?;
    let Some(entry) = resolved.variables.iter().find(|e| e.name == name) else {
        bail!("{name} is not set in {project}/{environment}");
    };
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(entry)?);
        return Ok(());
    }
    println!("{name} = {} in {project}/{environment}", entry.preview);
    println!("  from:       {}", source(entry));
    for overridden in &entry.overridden {
        println!("  overrides:  {} ({})", overridden.layer, overridden.origin);
    }
    // A binding's value: how old its credentials are.
    let origin = &entry.source.origin;
    let credentials = resolved.credentials.iter().find(|c| {
        entry.source.layer == "binding"
            && (*origin == c.service || origin.starts_with(&format!("{}, ", c.service)))
    });
    if let Some(c) = credentials {
        let age = (chrono::Utc::now() - c.made_at).num_seconds();
        print!(
            "  credentials: made {} ago, {} rotation(s)",
            crate::commands::span_words(age),
            c.rotations
        );
        match c.previous_valid_until {
            Some(until) => println!(
                "; the replaced ones work until {}",
                mds_api_types::time::format(&until)
            ),
            None => println!(),
        }
    }
    println!("  precedence: platform < binding < shared < service < run");
    Ok(())
}

fn diff(ctx: &Ctx, project: &str, from: &str, to: &str) -> anyhow::Result<()> {
    let a = fetch(ctx, project, from, false)?;
    let b = fetch(ctx, project, to, false)?;
    let mut names: BTreeMap<&str, (Option<&EnvEntry>, Option<&EnvEntry>)> = BTreeMap::new();
    for e in &a.variables {
        names.entry(&e.name).or_default().0 = Some(e);
    }
    for e in &b.variables {
        names.entry(&e.name).or_default().1 = Some(e);
    }
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .map(|(name, (x, y))| {
            let mark = match (x, y) {
                (Some(_), None) => "-",
                (None, Some(_)) => "+",
                _ => " ",
            };
            vec![
                format!("{mark} {name}"),
                x.map(source).unwrap_or_else(|| "(unset)".into()),
                y.map(source).unwrap_or_else(|| "(unset)".into()),
            ]
        })
        .collect();
    if ctx.json {
        let value: Value = rows
            .iter()
            .map(|r| serde_json::json!({"name": r[0][2..], from: r[1], to: r[2]}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    table(&["name", from, to], rows);
    Ok(())
}

#[derive(Args)]
pub struct Run {
    #[arg(short, long)]
    project: String,
    #[arg(short, long, default_value = "production")]
    environment: String,
    /// Run-level variables (highest precedence): -E NAME=value
    #[arg(short = 'E', long = "env", value_name = "NAME=value")]
    run_env: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Variables of the caller that a booted process must not inherit: the
/// caller's own credentials for mds.
const WITHHELD: &[&str] = &[
    "MIOSA_API_KEY",
    "MIOSA_ACCESS_TOKEN",
    "MDS_ADMIN_API_KEY",
    "MDS_MASTER_KEY",
];

impl Run {
    /// The boot: resolve, then spawn with that environment; the exit code
    /// passes through and signals are forwarded.
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<ExitCode> {
        let resolved = fetch(ctx, &self.project, &self.environment, true)?;
        for pending in &resolved.pending {
            eprintln!(
                "mds run: warning: {} in {} is {}; its variables are missing",
                pending.resource, pending.environment, pending.state
            );
        }
        let mut candidates: Vec<Candidate> = resolved
            .variables
            .iter()
            .map(|e| {
                Candidate::new(
                    layer_of(&e.source.layer),
                    &e.source.origin,
                    &e.name,
                    e.value.as_deref().unwrap_or_default(),
                    e.secret,
                )
            })
            .collect();
        for assignment in &self.run_env {
            let (name, value) = assignment
                .split_once('=')
                .with_context(|| format!("-E {assignment:?} is not NAME=value"))?;
            candidates.push(Candidate::new(Layer::Run, "mds run -E", name, value, false));
        }
        let env: Vec<(String, String)> = resolve_env(candidates)
            .into_iter()
            .map(|r| (r.winner.name, r.winner.value))
            .collect();
        spawn_forwarding(&self.command, &env)
    }
}

fn layer_of(label: &str) -> Layer {
    match label {
        "platform" => Layer::Platform,
        "binding" => Layer::Binding,
        "runtime_env" => Layer::RuntimeEnv,
        "shared" => Layer::Shared,
        "service" => Layer::Service,
        _ => Layer::Run,
    }
}

fn spawn_forwarding(command: &[String], env: &[(String, String)]) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    use tokio::signal::unix::{signal, SignalKind};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut cmd = tokio::process::Command::new(&command[0]);
        cmd.args(&command[1..]);
        for name in WITHHELD {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?}", command[0]))?;
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap_or_default() as i32);
        // From a terminal, ^C and ^\ already reach the whole foreground
        // group, the child included: forwarding them would deliver twice.
        let interactive = std::io::stdin().is_terminal();
        let mut kinds = vec![
            (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
            (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
            (
                SignalKind::user_defined1(),
                nix::sys::signal::Signal::SIGUSR1,
            ),
            (
                SignalKind::user_defined2(),
                nix::sys::signal::Signal::SIGUSR2,
            ),
        ];
        if !interactive {
            kinds.push((SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT));
            kinds.push((SignalKind::quit(), nix::sys::signal::Signal::SIGQUIT));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (kind, sig) in kinds {
            let mut stream = signal(kind)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        if interactive {
            // Stay alive through ^C so the child's exit code is reported.
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move { while int.recv().await.is_some() {} });
        }
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                Some(sig) = rx.recv() => { let _ = nix::sys::signal::kill(pid, sig); }
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })
}

/// The prefix of a project's service `name` (None: the standard names).
fn service_prefix(ctx: &Ctx, project: &str, name: Option<&str>) -> anyhow::Result<String> {
    let Some(name) = name else {
        return Ok(String::new());
    };
    let services: Vec<DataService> = data(
        ctx.api
            .get(&format!("/projects/{}/data-services", segment(project)))?,
    )?;
    Ok(services
        .into_iter()
        .find(|s| s.name == name || s.id == name)
        .with_context(|| format!("no data service {name:?} in {project}"))?
        .env_prefix)
}

/// Replaces this process with a client given the environment's URL.
fn exec_client(
    ctx: &Ctx,
    project: &str,
    environment: &str,
    service: Option<&str>,
    variable: &str,
    client: (&str, &[&str], &str),
    args: &[String],
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let (program, before_url, package) = client;
    let resolved = fetch(ctx, project, environment, true)?;
    let prefix = service_prefix(ctx, project, service)?;
    let name = format!("{prefix}{variable}");
    let Some(url) = resolved
        .variables
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
    else {
        bail!("{project}/{environment} has no {name}: attach one with `mds attach` first");
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(before_url).arg(url).args(args);
    for withheld in WITHHELD {
        cmd.env_remove(withheld);
    }
    let err = cmd.exec();
    bail!("cannot run {program}: {err} (install it with apt-get install {package})")
}

#[derive(Args)]
pub struct RedisCli {
    #[arg(short, long)]
    project: String,
    #[arg(short, long, default_value = "production")]
    environment: String,
    /// Which Redis service, for a project with several
    #[arg(long)]
    service: Option<String>,
    /// Arguments for redis-cli (a command to run, for example)
    #[arg(last = true)]
    args: Vec<String>,
}

impl RedisCli {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        exec_client(
            ctx,
            &self.project,
            &self.environment,
            self.service.as_deref(),
            "REDIS_URL",
            ("redis-cli", &["--no-auth-warning", "-u"], "redis-tools"),
            &self.args,
        )
    }
}

#[derive(Args)]
pub struct Psql {
    #[arg(short, long)]
    project: String,
    #[arg(short, long, default_value = "production")]
    environment: String,
    /// Which Postgres service, for a project with several
    #[arg(long)]
    service: Option<String>,
    /// Arguments for psql
    #[arg(last = true)]
    args: Vec<String>,
}

impl Psql {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        exec_client(
            ctx,
            &self.project,
            &self.environment,
            self.service.as_deref(),
            // An interactive session (SET, LISTEN, \watch): direct.
            "DATABASE_URL_UNPOOLED",
            ("psql", &[], "postgresql-client"),
            &self.args,
        )
    }
}
