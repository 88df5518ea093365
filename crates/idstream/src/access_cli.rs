//! `idstream apikey` (keys made through a running server's API, or config snippets) and
//! `idstream user` (accounts, written straight into the configured store: the way to make the
//! first admin, and to recover when every admin is locked out).

use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use idstream_server::access::users::{self, UserChange};
use idstream_server::backend::{open, Access, Backend};
use idstream_server::config::Config;
use idstream_server::domain::Role;

#[derive(Subcommand)]
pub enum ApikeyCommand {
    /// Generate a key for the config file: prints the key and the `[[api_keys]]` snippet
    /// holding its hash.
    New {
        /// Tenant the key acts for (`*` for all).
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// viewer, analyst, policy_admin, admin, auditor or service.
        #[arg(long, default_value = "viewer")]
        role: Role,
    },
    /// Print the SHA-256 of an existing key (read from stdin).
    Hash,
    /// Make a key on a running server (`POST /v1/api-keys`); it is printed once.
    Create {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: Role,
        /// For an all-tenant admin key: the tenant the new key acts for.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a running server's keys (config and run-time; never the keys themselves).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a run-time key: refused from the next request on, on every node.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
}

/// Where the server is and the admin key to call it with.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// The server's base URL.
    #[arg(long, env = "IDSTREAM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin API key (prefer the environment variable: command lines are visible).
    #[arg(long, env = "IDSTREAM_API_KEY", hide_env_values = true)]
    api_key: String,
}

pub async fn apikey(command: ApikeyCommand) -> anyhow::Result<()> {
    match command {
        ApikeyCommand::New { tenant, name, role } => {
            let key = idstream_server::access::generate_key();
            println!("API key (give it to the client; it is not stored anywhere):\n  {key}\n");
            println!(
                "Config snippet:\n[[api_keys]]\nname = \"{name}\"\ntenant = \"{tenant}\"\nrole = \"{}\"\nsha256 = \"{}\"",
                role.as_str(),
                idstream_server::state::hash_api_key(&key)
            );
        }
        ApikeyCommand::Hash => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            println!("{}", idstream_server::state::hash_api_key(line.trim()));
        }
        ApikeyCommand::Create { api, name, role, tenant } => {
            let body = serde_json::json!({"name": name, "role": role, "tenant": tenant});
            let v = call(&api, reqwest::Method::POST, "/v1/api-keys", Some(body)).await?;
            println!(
                "API key `{}` ({}, tenant {}), shown once:\n  {}",
                v["name"].as_str().unwrap_or(""),
                v["role"].as_str().unwrap_or(""),
                v["tenant"].as_str().unwrap_or(""),
                v["api_key"].as_str().unwrap_or("")
            );
            println!("id: {}", v["id"].as_str().unwrap_or(""));
        }
        ApikeyCommand::List { api } => {
            let v = call(&api, reqwest::Method::GET, "/v1/api-keys", None).await?;
            println!(
                "{:<38} {:<20} {:<12} {:<13} {:<7} {:<10} last used",
                "id", "name", "tenant", "role", "source", "state"
            );
            for k in v["keys"].as_array().into_iter().flatten() {
                let s = |f: &str| k[f].as_str().unwrap_or("-").to_owned();
                let state = if k["revoked_at"].is_string() { "revoked" } else { "active" };
                println!(
                    "{:<38} {:<20} {:<12} {:<13} {:<7} {:<10} {}",
                    s("id"),
                    s("name"),
                    s("tenant"),
                    s("role"),
                    s("source"),
                    state,
                    s("last_used_at")
                );
            }
        }
        ApikeyCommand::Revoke { api, id } => {
            call(&api, reqwest::Method::DELETE, &format!("/v1/api-keys/{id}"), None).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method, &url).bearer_auth(&api.api_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url}: {status}: {}", v["message"].as_str().unwrap_or("no error message"));
    Ok(v)
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from stdin (`--password-stdin`) or generated and
    /// printed once.
    Add {
        username: String,
        #[arg(long)]
        role: Role,
        /// The account's tenant (`*`: an operator of every tenant).
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (ends the user's sessions).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account (ends its sessions; it can no longer log in).
    Disable { username: String },
    /// Enable a disabled account again.
    Enable { username: String },
    /// List accounts.
    List,
}

/// `idstream user ...`, against the configured store. The embedded store belongs to one process:
/// stop `serve` first, or use the API (`POST /v1/users`).
pub async fn user(config: Option<PathBuf>, command: UserCommand) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let backends = open(&Backend::from_config(&cfg), Access::Serve).await.context(
        "opening the store (with the embedded backend, stop `idstream serve` first or use the API: POST /v1/users)",
    )?;
    let store = backends.store.clone();
    let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "operator".into()));
    let find = |username: String| {
        let store = store.clone();
        async move { store.user_by_name(&username).await?.with_context(|| format!("no user `{username}`")) }
    };
    match command {
        UserCommand::Add { username, role, tenant, password_stdin } => {
            anyhow::ensure!(
                idstream_server::access::valid_name(&username),
                "the username must be 1 to 100 letters, digits, `-`, `_`, `.` or `@`"
            );
            anyhow::ensure!(store.user_by_name(&username).await?.is_none(), "user `{username}` exists already");
            let (password, generated) = password(password_stdin)?;
            let user =
                users::create_user(store.as_ref(), &tenant, &username, role, Some(password.clone()), None, &actor)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created {} ({}, tenant {}), id {}", user.username, role.as_str(), user.tenant, user.id);
            if generated {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Passwd { username, password_stdin } => {
            let user = find(username).await?;
            let (password, generated) = password(password_stdin)?;
            let change = UserChange { password: Some(password.clone()), ..Default::default() };
            users::update_user(store.as_ref(), None, &user, change, &actor)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("password of {} changed; their sessions are ended", user.username);
            if generated {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Disable { username } => {
            let user = find(username).await?;
            let change = UserChange { disabled: Some(true), ..Default::default() };
            users::update_user(store.as_ref(), None, &user, change, &actor)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("disabled {}", user.username);
        }
        UserCommand::Enable { username } => {
            let user = find(username).await?;
            let change = UserChange { disabled: Some(false), ..Default::default() };
            users::update_user(store.as_ref(), None, &user, change, &actor)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("enabled {}", user.username);
        }
        UserCommand::List => {
            println!("{:<38} {:<24} {:<12} {:<13} state", "id", "username", "tenant", "role");
            for u in store.users(None).await? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!("{:<38} {:<24} {:<12} {:<13} {state}", u.id, u.username, u.tenant, u.role.as_str());
            }
        }
    }
    backends.store.close().await;
    backends.log.close().await;
    Ok(())
}

/// The password from stdin, or a generated one (then `true`).
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((idstream_server::access::random_token(18), true));
    }
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if let Some(why) = users::weak_password(&password) {
        anyhow::bail!("{why}");
    }
    Ok((password, false))
}
