//! `netdumpd`: the dump server daemon. Everything but option parsing and logging set-up
//! lives in the library, where the tests can drive it.

use anyhow::Context;
use clap::Parser;
use netdumpd::cli::Cli;
use netdumpd::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();
    netdumpd::signals::install_termination_handler().context("cannot install signal handlers")?;
    Server::bind(cli.server_config())?.run()
}
