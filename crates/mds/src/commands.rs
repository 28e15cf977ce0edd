//! CLI commands over the API. Projects are named by id or slug,
//! environments by name, slug or id.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use mds_api_types::{
    ApiKey, CreateApiKey, CreateEnvironment, CreateProject, Environment, Project, SetVariables,
    UpdateProject, Variable, VariableInput, VariablesInput,
};
use serde_json::Value;

use crate::client::{data, segment, ApiClient};
use crate::output::{json, table};
use crate::Global;

/// A project environment, as `-p P -e E`.
#[derive(clap::Args)]
pub struct Target {
    #[arg(short, long)]
    pub project: String,
    #[arg(short, long, default_value = "production")]
    pub environment: String,
}

pub struct Ctx {
    pub api: ApiClient,
    pub json: bool,
}

impl Ctx {
    /// With `--json`, prints the API's answer as it came and returns true;
    /// the caller then skips its table.
    pub fn printed_json(&self, answer: &Value) -> bool {
        if self.json {
            json(answer);
        }
        self.json
    }
}

/// Runs a command and turns its outcome into an exit code and a message
/// that says what to do.
pub fn run(global: &Global, command: impl FnOnce(&Ctx) -> anyhow::Result<()>) -> ExitCode {
    run_with_code(global, |ctx| command(ctx).map(|()| ExitCode::SUCCESS))
}

/// Like [`run`], for a command that chooses its own exit code.
pub fn run_with_code(
    global: &Global,
    command: impl FnOnce(&Ctx) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    let outcome = ApiClient::from_global(global).and_then(|api| {
        command(&Ctx {
            api,
            json: global.json,
        })
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn when(ts: mds_api_types::Timestamp) -> String {
    ts.format("%Y-%m-%d %H:%M").to_string()
}

#[derive(Subcommand)]
pub enum Projects {
    /// Create a project (with `production` and `staging`)
    Create {
        name: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Whether its sandboxes and instances reach the outside: `allow`
        /// (the default) or `none` (only its own data services)
        #[arg(long, value_parser = ["allow", "none"])]
        egress: Option<String>,
    },
    /// Change a project's name, description or egress
    Update {
        project: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// `allow` or `none`; running sandboxes change at once, runtime
        /// instances at their next start
        #[arg(long, value_parser = ["allow", "none"])]
        egress: Option<String>,
    },
    /// List projects
    List,
    /// Show one project and its environments
    Show { project: String },
    /// Delete a project and everything it owns, its data services' data
    /// included
    Delete {
        project: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

impl Projects {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Projects::Create {
                name,
                slug,
                description,
                egress,
            } => {
                let answer = ctx.api.post(
                    "/projects",
                    &CreateProject {
                        name: Some(name),
                        slug,
                        description,
                        network_egress: egress,
                        ..Default::default()
                    },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let project: Project = data(answer)?;
                println!("Created project {} ({})", project.slug, project.id);
                print_environments(&project.environments);
            }
            Projects::Update {
                project,
                name,
                description,
                egress,
            } => {
                let answer = ctx.api.send_json(
                    reqwest::Method::PATCH,
                    &format!("/projects/{}", segment(&project)),
                    &[],
                    &UpdateProject {
                        name,
                        description,
                        network_egress: egress,
                        ..Default::default()
                    },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let p: Project = data(answer)?;
                println!("Updated project {} (egress: {})", p.slug, p.network_egress);
            }
            Projects::List => {
                let answer = ctx.api.get_query("/projects", &[("page_size", "100")])?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let projects: Vec<Project> = data(answer)?;
                table(
                    &["slug", "name", "id", "environments", "created"],
                    projects
                        .into_iter()
                        .map(|p| {
                            vec![
                                p.slug,
                                p.name,
                                p.id,
                                p.environments
                                    .iter()
                                    .map(|e| e.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                when(p.created_at),
                            ]
                        })
                        .collect(),
                );
            }
            Projects::Show { project } => {
                let answer = ctx.api.get(&format!("/projects/{}", segment(&project)))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let p: Project = data(answer)?;
                println!("{} ({})", p.name, p.slug);
                println!("  id:          {}", p.id);
                if let Some(d) = &p.description {
                    println!("  description: {d}");
                }
                println!("  egress:      {}", p.network_egress);
                println!("  created:     {}", when(p.created_at));
                println!();
                print_environments(&p.environments);
            }
            Projects::Delete { project, yes } => {
                if !yes {
                    confirm(&project, "project", "everything it owns, its data included")?;
                }
                let answer = ctx.api.delete_query(
                    &format!("/projects/{}", segment(&project)),
                    &[("purge", "true")],
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!("Deleted project {project}");
            }
        }
        Ok(())
    }
}

/// Asks the person to type the name back; refuses without a terminal
/// unless `--yes` was given.
pub fn confirm(name: &str, what: &str, consequence: &str) -> anyhow::Result<()> {
    confirm_by_name(
        name,
        &format!("delete {what} {name:?}"),
        &format!("This deletes {what} {name:?} and {consequence}"),
        "nothing was deleted",
    )
}

/// Asks the person to type `name` back after `prompt`; refuses without a
/// terminal (to `action` without `--yes`).
pub fn confirm_by_name(
    name: &str,
    action: &str,
    prompt: &str,
    unchanged: &str,
) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {action} without confirmation: pass --yes");
    }
    print!("{prompt}. Type {name:?} to confirm: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != name {
        bail!("not confirmed; {unchanged}");
    }
    Ok(())
}

/// How long until `at`, roughly (`6d 23h`, `45m`), or `expired`.
fn time_left(at: chrono::DateTime<chrono::Utc>) -> String {
    match (at - chrono::Utc::now()).num_seconds() {
        ..=0 => "expired".to_string(),
        s => span_words(s),
    }
}

/// A span of seconds, roughly: `6d 23h`, `4h 5m`, `45m`.
pub(crate) fn span_words(secs: i64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}m", (s.max(0) + 59) / 60),
    }
}

fn print_environments(envs: &[Environment]) {
    table(
        &[
            "environment",
            "slug",
            "kind",
            "default",
            "expires in",
            "data",
            "id",
        ],
        envs.iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.slug.clone(),
                    e.kind.clone(),
                    if e.is_default {
                        "yes".into()
                    } else {
                        String::new()
                    },
                    e.expires_at.map(time_left).unwrap_or_default(),
                    e.data
                        .as_ref()
                        .map(|d| format!("{} of {}: {}", d.policy, d.source_environment, d.state))
                        .unwrap_or_default(),
                    e.id.clone(),
                ]
            })
            .collect(),
    );
}

/// Polls an environment until its data copy is done (at most an hour).
fn wait_for_copy(ctx: &Ctx, project: &str, env: &str) -> anyhow::Result<Environment> {
    let path = format!(
        "/projects/{}/environments/{}",
        segment(project),
        segment(env)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let env: Environment = data(ctx.api.get(&path)?)?;
        let copying = env.data.as_ref().is_some_and(|d| d.state == "copying");
        if !copying || std::time::Instant::now() > deadline {
            return Ok(env);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// What an environment made `--from` another got.
fn print_environment_data(env: &Environment) {
    let Some(data) = &env.data else {
        return;
    };
    println!(
        "Data: {} of {} ({}), from restore point {}",
        data.policy,
        data.source_environment,
        data.state,
        data.restore_point.as_deref().unwrap_or("not chosen yet")
    );
    for service in &data.services {
        println!(
            "  {} ({}): {}: {}",
            service.name, service.kind, service.data, service.detail
        );
    }
    if let Some(error) = &data.error {
        println!("  error: {error}");
    }
}

#[derive(Subcommand)]
pub enum Envs {
    /// List a project's environments
    List {
        #[arg(short, long)]
        project: String,
    },
    /// Create an environment (e.g. qa, preview/pr-42)
    Create {
        name: String,
        #[arg(short, long)]
        project: String,
        /// Purge it this long after now (e.g. 7d, 12h; 1h to 90d), with a
        /// restore point of its data taken first
        #[arg(long)]
        ttl: Option<String>,
        /// Fill its data services from this environment's restore point
        #[arg(long = "from")]
        from: Option<String>,
        /// With --from: empty, schema (Postgres tables without rows) or
        /// copy
        #[arg(long = "data", requires = "from")]
        data_policy: Option<String>,
        /// With --data copy: TABLE.COLUMN=email|hash|null, applied before
        /// anything can connect (repeatable)
        #[arg(long = "mask", requires = "from")]
        masks: Vec<String>,
        /// With --from: copy the auth users (without sessions) or none
        #[arg(long, requires = "from")]
        auth_users: Option<String>,
        /// With --from: the source's restore point to copy (an id, or new);
        /// by default its newest verified one
        #[arg(long = "point", requires = "from")]
        restore_point: Option<String>,
        /// Return at once instead of waiting for the copy
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an environment, with how far its data copy got
    Get {
        name: String,
        #[arg(short, long)]
        project: String,
    },
    /// Push a preview's expiry out by this much (from its current expiry)
    Extend {
        name: String,
        #[arg(short, long)]
        project: String,
        #[arg(long)]
        ttl: String,
    },
    /// Delete an environment (not the default one)
    Delete {
        name: String,
        #[arg(short, long)]
        project: String,
        /// Drop its data services' data too (a restore point of it is
        /// taken first)
        #[arg(long)]
        purge: bool,
    },
}

impl Envs {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Envs::List { project } => {
                let answer = ctx
                    .api
                    .get(&format!("/projects/{}/environments", segment(&project)))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                print_environments(&data::<Vec<Environment>>(answer)?);
            }
            Envs::Create {
                name,
                project,
                ttl,
                from,
                data_policy,
                masks,
                auth_users,
                restore_point,
                no_wait,
            } => {
                let answer = ctx.api.post(
                    &format!("/projects/{}/environments", segment(&project)),
                    &CreateEnvironment {
                        name: Some(name),
                        ttl,
                        source_environment: from,
                        data_policy,
                        masks: (!masks.is_empty()).then_some(masks),
                        auth_users,
                        restore_point,
                        ..Default::default()
                    },
                )?;
                let mut env: Environment = data(answer.clone())?;
                let copying = env.data.as_ref().is_some_and(|d| d.state == "copying");
                if copying && !no_wait {
                    env = wait_for_copy(ctx, &project, &env.id)?;
                    if ctx.printed_json(&serde_json::json!({ "data": &env })) {
                        return Ok(());
                    }
                } else if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!("Created environment {} ({}) in {project}", env.name, env.id);
                if let Some(at) = env.expires_at {
                    println!("It expires in {} ({}).", time_left(at), at.to_rfc3339());
                }
                print_environment_data(&env);
                if env.data.as_ref().is_some_and(|d| d.state == "failed") {
                    anyhow::bail!("the copy into {} failed", env.name);
                }
            }
            Envs::Get { name, project } => {
                let answer = ctx.api.get(&format!(
                    "/projects/{}/environments/{}",
                    segment(&project),
                    segment(&name)
                ))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let env: Environment = data(answer)?;
                print_environments(std::slice::from_ref(&env));
                print_environment_data(&env);
            }
            Envs::Extend { name, project, ttl } => {
                let answer = ctx.api.post(
                    &format!(
                        "/projects/{}/environments/{}/extend",
                        segment(&project),
                        segment(&name)
                    ),
                    &mds_api_types::ExtendEnvironment { ttl: Some(ttl) },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let env: Environment = data(answer)?;
                if let Some(at) = env.expires_at {
                    println!(
                        "{} now expires in {} ({}).",
                        env.name,
                        time_left(at),
                        at.to_rfc3339()
                    );
                }
            }
            Envs::Delete {
                name,
                project,
                purge,
            } => {
                let answer = ctx.api.delete(&format!(
                    "/projects/{}/environments/{}{}",
                    segment(&project),
                    segment(&name),
                    if purge { "?purge=true" } else { "" }
                ))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!("Deleted environment {name} from {project}");
            }
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum Vars {
    /// Set variables: NAME=value ...
    Set {
        #[arg(required = true)]
        assignments: Vec<String>,
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
        /// Mark them secret (always masked)
        #[arg(long, conflicts_with = "plain")]
        secret: bool,
        /// Mark them not secret, even if the name looks secret
        #[arg(long)]
        plain: bool,
    },
    /// List variables (previews, or values with --reveal)
    List {
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
        /// Show values (needs the env:reveal scope)
        #[arg(long)]
        reveal: bool,
    },
    /// Remove variables
    Unset {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        project: String,
        #[arg(short, long, default_value = "production")]
        environment: String,
    },
}

fn print_variables(vars: Vec<Variable>) {
    table(
        &["name", "value", "secret", "updated"],
        vars.into_iter()
            .map(|v| {
                vec![
                    v.name,
                    v.value.unwrap_or(v.preview),
                    if v.is_secret {
                        "yes".into()
                    } else {
                        String::new()
                    },
                    when(v.updated_at),
                ]
            })
            .collect(),
    );
}

impl Vars {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Vars::Set {
                assignments,
                project,
                environment,
                secret,
                plain,
            } => {
                let is_secret = match (secret, plain) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                };
                let list = assignments
                    .iter()
                    .map(|a| {
                        let (name, value) = a
                            .split_once('=')
                            .ok_or_else(|| anyhow!("{a:?} is not NAME=value"))?;
                        Ok(VariableInput {
                            name: name.to_string(),
                            value: value.to_string(),
                            is_secret,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let answer = ctx.api.put(
                    &format!("/projects/{}/shared-variables", segment(&project)),
                    &SetVariables {
                        variables: Some(VariablesInput::List(list)),
                        env: Some(environment.clone()),
                        environment: None,
                    },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!(
                    "Set {} variable(s) in {project}/{environment}; processes get them at their next boot",
                    assignments.len()
                );
                print_variables(data(answer)?);
            }
            Vars::List {
                project,
                environment,
                reveal,
            } => {
                let mut query = vec![("env", environment.as_str())];
                if reveal {
                    query.push(("reveal", "true"));
                }
                let answer = ctx.api.get_query(
                    &format!("/projects/{}/shared-variables", segment(&project)),
                    &query,
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                print_variables(data(answer)?);
            }
            Vars::Unset {
                names,
                project,
                environment,
            } => {
                let mut answers = Vec::new();
                for name in &names {
                    answers.push(ctx.api.delete_query(
                        &format!(
                            "/projects/{}/shared-variables/{}",
                            segment(&project),
                            segment(name)
                        ),
                        &[("env", environment.as_str())],
                    )?);
                }
                if ctx.printed_json(&Value::Array(answers)) {
                    return Ok(());
                }
                println!(
                    "Removed {} variable(s) from {project}/{environment}",
                    names.len()
                );
            }
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum Keys {
    /// Create an API key; its value is shown once
    Create {
        name: String,
        /// A scope to grant (repeatable); default: projects and env read/write
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List API keys
    List,
    /// Rotate a key: a new value, the old one stops working
    Rotate { id: String },
    /// Revoke a key
    Delete { id: String },
}

impl Keys {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Keys::Create { name, scopes } => {
                let answer = ctx.api.post(
                    "/api-keys",
                    &CreateApiKey {
                        name: Some(name),
                        scopes: (!scopes.is_empty()).then_some(scopes),
                        expires_at: None,
                    },
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                print_new_key(data(answer)?);
            }
            Keys::List => {
                let answer = ctx.api.get("/api-keys")?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let keys: Vec<ApiKey> = data(answer)?;
                table(
                    &["id", "name", "prefix", "scopes", "last used"],
                    keys.into_iter()
                        .map(|k| {
                            vec![
                                k.id,
                                k.name,
                                format!("{}…", k.prefix),
                                k.scopes.join(","),
                                k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect(),
                );
            }
            Keys::Rotate { id } => {
                let answer = ctx
                    .api
                    .post(&format!("/api-keys/{}/rotate", segment(&id)), &Value::Null)?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                print_new_key(data(answer)?);
            }
            Keys::Delete { id } => {
                let answer = ctx.api.delete(&format!("/api-keys/{}", segment(&id)))?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                println!("Revoked API key {id}");
            }
        }
        Ok(())
    }
}

fn print_new_key(key: ApiKey) {
    println!(
        "API key {} ({}), scopes {}",
        key.name,
        key.id,
        key.scopes.join(",")
    );
    println!("Its value is shown only now:");
    println!("  {}", key.token.unwrap_or_default());
}
