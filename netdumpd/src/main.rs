//! `netdumpd`: the dump server daemon and its admin commands. Everything but option
//! parsing and logging set-up lives in the library, where the tests can drive it.

use anyhow::Context;
use clap::Parser;
use netdumpd::cli::{Cli, Command};
use netdumpd::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        None | Some(Command::Run) => {}
        Some(Command::List { json }) => {
            print!("{}", netdumpd::admin::list(&cli.server_config()?.dump_dir, *json)?);
            return Ok(());
        }
        Some(Command::Show { dump, lines, json }) => {
            print!("{}", netdumpd::admin::show(&cli.server_config()?.dump_dir, dump, *lines, *json)?);
            return Ok(());
        }
        Some(Command::Keygen { out }) => {
            print!("{}", netdumpd::keys::keygen(out)?);
            return Ok(());
        }
        Some(Command::CheckConfig { json }) => {
            let config = cli.server_config()?;
            let (text, ok) = netdumpd::admin::check_config(&config, cli.config.as_deref(), *json)?;
            print!("{text}");
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
    let config = cli.server_config()?;
    let filter = match cli.log_level()? {
        Some(level) => EnvFilter::try_new(&level).with_context(|| format!("bad log level {level:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    netdumpd::logging::init(filter, config.limits.log_lines_per_second);
    netdumpd::signals::install_termination_handler().context("cannot install signal handlers")?;
    Server::bind(config)?.run()
}
