//! `mds auth`: end-user auth of a project, from the terminal. Settings are
//! per project; users, mail and keys per environment.

use clap::{Args, Subcommand};
use mds_api_types::auth::{AppUser, AuthMail, AuthStatus, Secs, SigningKeys};
use serde_json::{json, Map, Value};

use crate::client::{data, segment};
use crate::commands::{Ctx, Target};
use crate::output::table;

#[derive(Args)]
pub struct Settings {
    /// Turn signups off (or back on with --allow-signups)
    #[arg(long, conflicts_with = "allow_signups")]
    no_signups: bool,
    #[arg(long)]
    allow_signups: bool,
    /// Users must confirm their email address before logging in
    #[arg(long)]
    email_confirm_required: Option<bool>,
    /// Access-token lifetime in seconds
    #[arg(long)]
    token_expiry_sec: Option<u32>,
    /// HS256 (AUTH_JWT_SECRET) or ES256 (AUTH_JWKS_URL)
    #[arg(long)]
    signing_algorithm: Option<String>,
    #[arg(long)]
    password_min_length: Option<u32>,
    /// Login attempts per minute from one address
    #[arg(long)]
    login_rate_per_ip: Option<u32>,
    /// Login attempts per minute against one account
    #[arg(long)]
    login_rate_per_account: Option<u32>,
}

impl Settings {
    fn body(&self) -> Value {
        let mut map = Map::new();
        if self.no_signups {
            map.insert("allow_signups".into(), json!(false));
        }
        if self.allow_signups {
            map.insert("allow_signups".into(), json!(true));
        }
        let optional = [
            (
                "email_confirm_required",
                self.email_confirm_required.map(Value::from),
            ),
            ("token_expiry_sec", self.token_expiry_sec.map(Value::from)),
            (
                "signing_algorithm",
                self.signing_algorithm.clone().map(Value::from),
            ),
            (
                "password_min_length",
                self.password_min_length.map(Value::from),
            ),
            ("login_rate_per_ip", self.login_rate_per_ip.map(Value::from)),
            (
                "login_rate_per_account",
                self.login_rate_per_account.map(Value::from),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.insert(name.into(), value);
            }
        }
        Value::Object(map)
    }
}

#[derive(Subcommand)]
pub enum Auth {
    /// Enable auth for a project (its environments get users of their
    /// own), or change its settings
    Enable {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        settings: Settings,
    },
    /// Disable auth: the API stops answering and nothing is injected;
    /// users are kept
    Disable {
        #[command(flatten)]
        target: Target,
    },
    /// Show whether auth is on, its settings and AUTH_URL
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// List an environment's users
    Users {
        #[command(flatten)]
        target: Target,
    },
    /// Show the mail an environment's sink captured (newest first)
    Mail {
        #[command(flatten)]
        target: Target,
        /// How many messages
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Rotate the environment's ES256 keys: standby -> active -> retired
    RotateKeys {
        #[command(flatten)]
        target: Target,
    },
}

fn path(target: &Target, rest: &str) -> String {
    format!("/projects/{}/auth{rest}", segment(&target.project))
}

/// A timestamp as the API sends it, `-` for none.
fn when(t: Option<Secs>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| t.0.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

fn print_status(ctx: &Ctx, answer: Value) -> anyhow::Result<()> {
    if ctx.printed_json(&answer) {
        return Ok(());
    }
    let status: AuthStatus = data(answer)?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let service = status.service.as_ref();
    let auth_url = service.and_then(|s| s.auth_url.clone());
    let mut rows = vec![
        vec!["enabled".to_string(), status.enabled.to_string()],
        vec!["state".to_string(), status.state.clone()],
        vec!["environment".to_string(), status.environment.clone()],
        vec![
            "AUTH_URL".to_string(),
            auth_url.unwrap_or_else(|| "-".into()),
        ],
    ];
    for (name, value) in &status.config {
        rows.push(vec![name.clone(), text(value)]);
    }
    table(&["SETTING", "VALUE"], rows);
    for warning in service.into_iter().flat_map(|s| &s.warnings) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

impl Auth {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Auth::Enable { target, settings } => {
                let answer = ctx.api.send_json(
                    reqwest::Method::POST,
                    &path(&target, ""),
                    &[("environment", &target.environment)],
                    &settings.body(),
                )?;
                print_status(ctx, answer)?;
            }
            Auth::Disable { target } => {
                let answer = ctx.api.send_json(
                    reqwest::Method::POST,
                    &path(&target, "/disable"),
                    &[("environment", &target.environment)],
                    &json!({}),
                )?;
                print_status(ctx, answer)?;
            }
            Auth::Status { target } => {
                let answer = ctx
                    .api
                    .get_query(&path(&target, ""), &[("environment", &target.environment)])?;
                print_status(ctx, answer)?;
            }
            Auth::Users { target } => {
                let answer = ctx.api.get_query(
                    &path(&target, "/users"),
                    &[("environment", &target.environment), ("per_page", "1000")],
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let users: Vec<AppUser> = data(answer)?;
                table(
                    &["ID", "EMAIL", "CONFIRMED", "LAST SIGN-IN", "CREATED"],
                    users
                        .into_iter()
                        .map(|u| {
                            vec![
                                u.id,
                                u.email,
                                when(u.email_confirmed_at),
                                when(u.last_sign_in_at),
                                when(Some(u.created_at)),
                            ]
                        })
                        .collect(),
                );
            }
            Auth::Mail { target, limit } => {
                let answer = ctx.api.get_query(
                    &path(&target, "/mail"),
                    &[
                        ("environment", &target.environment),
                        ("limit", &limit.to_string()),
                    ],
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let messages: Vec<AuthMail> = data(answer)?;
                if messages.is_empty() {
                    println!("no mail");
                }
                for m in messages {
                    let sent = when(Some(m.created_at));
                    println!("--- {sent} to {} ({})", m.to, m.delivery);
                    println!("Subject: {}\n\n{}", m.subject, m.body);
                }
            }
            Auth::RotateKeys { target } => {
                let answer = ctx.api.send_json(
                    reqwest::Method::POST,
                    &path(&target, "/keys/rotate"),
                    &[("environment", &target.environment)],
                    &json!({}),
                )?;
                if ctx.printed_json(&answer) {
                    return Ok(());
                }
                let rotated: SigningKeys = data(answer)?;
                table(
                    &["KID", "STATE", "RETIRED"],
                    rotated
                        .keys
                        .into_iter()
                        .map(|k| vec![k.kid, k.state, when(k.retired_at)])
                        .collect(),
                );
            }
        }
        Ok(())
    }
}
