//! `idstream backtest`: replays past decisions through a candidate ruleset from the command
//! line, with progress, beside a running server (its store is opened read only).

use std::path::{Path, PathBuf};

use idstream_rules::Ruleset;
use idstream_server::backend::{self, Access, Backend};
use idstream_server::config::Config;
use idstream_server::decide::backtest;

const DEFAULT_DATA_DIR: &str = "./idstream-data";

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// The candidate ruleset file.
    #[arg(long)]
    pub ruleset: PathBuf,
    /// The server's data directory (read only; the server may be running).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The server's config: with shared backends (`store.url`), the decisions are read from
    /// PostgreSQL instead of a data directory.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Replay decisions made at or after this time (date, RFC 3339 or Unix seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// ... and before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this tenant's decisions.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn cli(a: BacktestArgs) -> anyhow::Result<()> {
    let name = a.ruleset.display().to_string();
    let ruleset = Ruleset::load_file(&a.ruleset)
        .map_err(|errors| anyhow::anyhow!("{name} is not a valid ruleset:\n{}", idstream_rules::ErrorList(&errors)))?;
    let since =
        a.since.as_deref().map(backtest::parse_time).transpose().map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until =
        a.until.as_deref().map(backtest::parse_time).transpose().map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    // The server's backend, read only; without a config, the data directory given.
    let mut cfg = match &a.config {
        Some(c) => Config::load(Some(c))?,
        None => Config::from_toml("")?,
    };
    if a.config.is_none() || cfg.log.url.is_empty() && a.data_dir != Path::new(DEFAULT_DATA_DIR) {
        cfg.server.data_dir = a.data_dir.clone();
    }
    let store = backend::open(&Backend::from_config(&cfg), Access::ReadOnly).await?.store;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replayed {pos} decisions ({per_sec}) {elapsed}")
            .expect("valid template"),
    );
    let progress = {
        let bar = bar.clone();
        move |n: u64| bar.set_position(n)
    };
    let report = backtest::run(
        store.as_ref(),
        &ruleset,
        since.unwrap_or(0),
        until.unwrap_or(i64::MAX),
        a.tenant.as_deref(),
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
