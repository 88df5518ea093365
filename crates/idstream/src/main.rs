//! The `idstream` command: the server (`serve`, `migrate`) from `idstream-server`, the tools
//! (`simulate`, `bench`, `watch`) from `idstream-tools`, and the small CLI verbs (`apikey`,
//! `token`, `rules`, `backtest`, `schema`).

mod access_cli;
mod backtest;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use idstream_core::event::Provider;
use idstream_core::signature::Secret;
use idstream_server::config::{ApiKeyConfig, Config, LogFormat, SourceConfig};
use idstream_server::state::{hash_api_key, AppState};
use tokio_util::sync::CancellationToken;

// The request path allocates many small buffers (JSON, headers); mimalloc serves them from
// thread-local pages, measurably cheaper than glibc malloc on this workload (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "idstream", version, about = "Self-hosted real-time identity event platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: webhooks, read API, health and metrics.
    Serve {
        /// TOML configuration file, layered over the compiled-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the schema of the configured backend (`serve` also does this at
    /// start-up): the embedded database in `server.data_dir`, or PostgreSQL (`store.url`) and
    /// the NATS stream.
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send realistic signed Didit v3 webhooks from synthetic personas to a server.
    Simulate(idstream_tools::simulate::SimulateArgs),
    /// A local Didit: hosted sessions, decisions and signed webhooks back, for the whole loop
    /// on one machine (set `[[providers]] base_url` to its address).
    Sandbox(idstream_tools::sandbox::SandboxArgs),
    /// Load harness behind BENCHMARKS.md.
    Bench(idstream_tools::bench::BenchArgs),
    /// API keys: config snippets (`new`), or keys made on a running server (`create`, `list`,
    /// `revoke`).
    Apikey {
        #[command(subcommand)]
        command: access_cli::ApikeyCommand,
    },
    /// User accounts for people (written to the configured store; with the embedded backend,
    /// while `serve` is stopped — or use the API).
    User {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: access_cli::UserCommand,
    },
    /// Print the compiled-in default configuration (commented).
    DefaultConfig,
    /// Print a published contract: the REST API's OpenAPI document, or the JSON Schema of the
    /// log's events (what `docs/openapi.json` and `docs/events.schema.json` hold).
    Schema {
        #[arg(value_enum)]
        which: SchemaKind,
    },
    /// Mint an HS256 stream token (JWT) for `GET /v1/stream`.
    Token(TokenArgs),
    /// Print a live event stream, one JSON line per event; resumes after disconnects.
    Watch(idstream_tools::watch::WatchArgs),
    /// Replay past decisions through a candidate ruleset and report what would change.
    Backtest(backtest::BacktestArgs),
    /// Check and test decision rulesets (the policy compliance teams own).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaKind {
    Openapi,
    Events,
    /// The role × endpoint matrix (Markdown, as in README "Access").
    Access,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a ruleset file; prints every error with file, rule id and line:column.
    Check { file: PathBuf },
    /// Run a file of example contexts with expected outcomes against a ruleset; exits 1 if any fails.
    Test { file: PathBuf, cases: PathBuf },
    /// Print the shipped default KYC ruleset (a starting point for your own).
    Default,
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn rules(command: RulesCommand) -> anyhow::Result<()> {
    use idstream_rules::{ErrorList, Ruleset};
    match command {
        RulesCommand::Check { file } => {
            let name = file.display().to_string();
            match idstream_rules::check(&name, &read_text(&file)?) {
                Ok(summary) => println!("{summary}"),
                Err(errors) => anyhow::bail!("{name} is not a valid ruleset:\n{}", ErrorList(&errors)),
            }
        }
        RulesCommand::Test { file, cases } => {
            let name = file.display().to_string();
            let ruleset = Ruleset::parse(&name, &read_text(&file)?)
                .map_err(|errors| anyhow::anyhow!("{name} is not a valid ruleset:\n{}", ErrorList(&errors)))?;
            let cases_name = cases.display().to_string();
            let report = idstream_rules::run_cases(&ruleset, &cases_name, &read_text(&cases)?)
                .map_err(|errors| anyhow::anyhow!("{cases_name} is not a valid cases file:\n{}", ErrorList(&errors)))?;
            println!("{report}");
            anyhow::ensure!(report.passed(), "{} of {} cases failed", report.failures(), report.cases.len());
        }
        RulesCommand::Default => print!("{}", idstream_rules::DEFAULT_RULESET),
    }
    Ok(())
}

#[derive(clap::Args)]
struct TokenArgs {
    /// File holding the HS256 secret (sandbox mode writes `idstream-data/sandbox.jwt`).
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
    /// The HS256 secret itself (prefer --secret-file or IDSTREAM_STREAM_SECRET: command lines are visible).
    #[arg(long, env = "IDSTREAM_STREAM_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The tenant whose events the token may read.
    #[arg(long)]
    tenant: String,
    /// Kind patterns the token may read, comma-separated (`verification.*,decision.made`, or `*`).
    #[arg(long, default_value = "*")]
    kinds: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// The `sub` claim: who the token is for.
    #[arg(long, default_value = "idstream-cli")]
    sub: String,
}

fn mint_token(a: TokenArgs) -> anyhow::Result<()> {
    let secret = match (a.secret, a.secret_file) {
        (Some(s), _) => s,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?.trim().to_owned()
        }
        (None, None) => anyhow::bail!("give the HS256 secret with --secret-file, --secret or IDSTREAM_STREAM_SECRET"),
    };
    anyhow::ensure!(secret.len() >= 32, "the HS256 secret must be at least 32 bytes (stream.hs256_secrets)");
    let kinds: Vec<String> = a.kinds.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
    for k in &kinds {
        idstream_server::stream::auth::KindPattern::parse(k).map_err(anyhow::Error::msg)?;
    }
    anyhow::ensure!(!kinds.is_empty(), "--kinds must list at least one pattern");
    anyhow::ensure!(!a.tenant.is_empty() && a.tenant != "*", "--tenant must name one tenant");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = idstream_server::stream::auth::Claims {
        sub: a.sub,
        tenant: a.tenant,
        kinds,
        exp: now + a.ttl,
        nbf: None,
        iat: Some(now),
    };
    println!("{}", idstream_server::stream::auth::mint_hs256(secret.as_bytes(), &claims));
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Reads `path`, or creates it with a fresh random token (mode 0600).
fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok(s.trim().to_owned());
    }
    let token = random_token(32);
    idstream_server::util::create_private_file(path, token.as_bytes())
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(token)
}

/// With no source configured, add the `sandbox` Didit source and a sandbox API key, their
/// secrets kept in files in the data directory (never printed).
fn sandbox_mode(cfg: &mut Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.server.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.server.data_dir.display()))?;
    let secret_path = cfg.server.data_dir.join("sandbox.secret");
    let key_path = cfg.server.data_dir.join("sandbox.apikey");
    let secret = read_or_create_token(&secret_path)?;
    let key = read_or_create_token(&key_path)?;
    cfg.sources.push(SourceConfig {
        id: "sandbox".into(),
        provider: Provider::Didit,
        tenant: "sandbox".into(),
        secrets: vec![Secret::new(secret)],
        timestamp_tolerance_secs: 300,
    });
    cfg.api_keys.push(ApiKeyConfig {
        name: "sandbox".into(),
        tenant: "sandbox".into(),
        sha256: hash_api_key(&key),
        role: Some(idstream_server::domain::Role::Admin),
    });
    // Streams too, unless keys are configured: `idstream token --secret-file {data_dir}/sandbox.jwt`.
    let stream = &cfg.stream;
    if stream.hs256_secrets.is_empty() && stream.public_keys.is_empty() && stream.jwks_file.is_none() {
        let jwt_path = cfg.server.data_dir.join("sandbox.jwt");
        cfg.stream.hs256_secrets.push(Secret::new(read_or_create_token(&jwt_path)?));
        tracing::warn!(
            jwt_secret_file = %jwt_path.display(),
            "sandbox mode: stream tokens are signed with the generated HS256 secret (try `idstream token --secret-file {} --tenant sandbox`)",
            jwt_path.display()
        );
    }
    // Verifications go to `idstream sandbox` on its default address (it accepts any API key
    // when started without one).
    if cfg.providers.is_empty() {
        cfg.providers.push(idstream_server::config::ProviderConfig::didit(
            "sandbox",
            Secret::new("sandbox"),
            "http://127.0.0.1:8090",
            "sandbox-workflow",
            "sandbox",
        ));
    }
    tracing::warn!(
        secret_file = %secret_path.display(),
        api_key_file = %key_path.display(),
        "no webhook source configured: sandbox mode, Didit source `sandbox` at POST /webhooks/sandbox (try `idstream simulate`), verifications started with `idstream sandbox` at http://127.0.0.1:8090"
    );
    Ok(())
}

/// In sandbox mode, a first `admin` user for the dashboard, its generated password written to
/// a file beside the sandbox secret (never to the log). Made once: a data directory that has
/// users keeps them.
async fn sandbox_admin(cfg: &Config, state: &AppState) -> anyhow::Result<()> {
    if !state.store.users(None).await?.is_empty() {
        return Ok(());
    }
    let path = cfg.server.data_dir.join("sandbox.admin-password");
    let password = idstream_server::access::random_token(18);
    idstream_server::util::create_private_file(&path, password.as_bytes())
        .with_context(|| format!("creating {}", path.display()))?;
    let role = idstream_server::domain::Role::Admin;
    idstream_server::access::users::create_user(
        state.store.as_ref(),
        "sandbox",
        "admin",
        role,
        Some(password),
        None,
        "sandbox",
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the sandbox admin: {e}"))?;
    tracing::warn!(
        password_file = %path.display(),
        "sandbox mode: log in as `admin` with the password in {} (change it: `idstream user passwd admin`)",
        path.display()
    );
    Ok(())
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref())?;
    init_tracing(cfg.server.log_format);
    let sandbox = cfg.sources.is_empty();
    if sandbox {
        sandbox_mode(&mut cfg)?;
    }
    let state = Arc::new(AppState::open(&cfg).await?);
    if sandbox {
        sandbox_admin(&cfg, &state).await?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("binding {} (server.listen)", cfg.server.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %cfg.server.data_dir.display(),
        sources = cfg.sources.len(),
        log_head = state.log.head(),
        "idstream serving"
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    idstream_server::server::serve(listener, state, shutdown, Duration::from_secs(cfg.server.shutdown_grace_secs))
        .await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
    let backend = idstream_server::backend::Backend::from_config(&cfg);
    let log = idstream_server::backend::migrate(&backend, &mut |database, applied, latest| {
        if applied.is_empty() {
            println!("{database}: schema is up to date (version {latest})");
        } else {
            for m in applied {
                println!("applied migration {}: {}", m.version, m.description);
            }
            println!("{database}: schema at version {latest}");
        }
    })
    .await?;
    println!("{log}");
    Ok(())
}

async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: draining in-flight requests");
    token.cancel();
}

/// Errors are printed as one line with their causes (`error: reading x: No such file`), never as
/// a debug dump, and the exit code is 1.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve { config } => rt.block_on(serve(config)),
        Command::Migrate { config } => rt.block_on(migrate(config)),
        Command::Simulate(args) => rt.block_on(idstream_tools::simulate::run(args)),
        Command::Sandbox(args) => rt.block_on(idstream_tools::sandbox::run(args)),
        Command::Bench(args) => rt.block_on(idstream_tools::bench::run(args)),
        Command::Apikey { command } => rt.block_on(access_cli::apikey(command)),
        Command::User { config, command } => rt.block_on(access_cli::user(config, command)),
        Command::Token(args) => mint_token(args),
        Command::Watch(args) => rt.block_on(idstream_tools::watch::run(args)),
        Command::Rules { command } => rules(command),
        Command::Backtest(args) => rt.block_on(backtest::cli(args)),
        Command::Schema { which } => {
            let doc = match which {
                SchemaKind::Openapi => serde_json::to_value(idstream_server::http::openapi())?,
                SchemaKind::Events => idstream_server::events::json_schema(),
                SchemaKind::Access => {
                    print!("{}", idstream_server::http::authz::matrix_markdown());
                    return Ok(());
                }
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", idstream_server::config::DEFAULT_TOML);
            Ok(())
        }
    }
}
