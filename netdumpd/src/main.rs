//! `netdumpd`: the dump server daemon and its admin commands. Everything but option
//! parsing, logging set-up and exit statuses lives in the library, where the tests can
//! drive it.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use netdumpd::cli::{Cli, Command, exit};
use netdumpd::server::Server;

/// An error and the exit status it ends the process with.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

/// Tags an error with its exit status.
trait Status<T> {
    fn status(self, status: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> Status<T> for Result<T, E> {
    fn status(self, status: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure { status, error: e.into() })
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's convention), --help and --version 0.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(status) => ExitCode::from(status),
        Err(Failure { status, error }) => {
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{error:#}");
            } else {
                // Before the log is set up (or when it could not be), stderr is the log.
                eprintln!("netdumpd: {error:#}");
            }
            ExitCode::from(status)
        }
    }
}

fn print(bytes: &[u8]) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).status(exit::FAILURE)?;
    Ok(exit::OK)
}

fn run(cli: &Cli) -> Result<u8, Failure> {
    match &cli.command {
        None | Some(Command::Run) => {}
        Some(Command::List { json, bucket: true }) => {
            let u = netdumpd::admin::bucket_config(&cli.server_config().status(exit::CONFIG)?).status(exit::CONFIG)?;
            return print(netdumpd::admin::list_bucket(&u, *json).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::List { json, bucket: false }) => {
            let dir = cli.server_config().status(exit::CONFIG)?.dump_dir;
            return print(netdumpd::admin::list(&dir, *json).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::Show { dump, lines, json, bucket: true }) => {
            let u = netdumpd::admin::bucket_config(&cli.server_config().status(exit::CONFIG)?).status(exit::CONFIG)?;
            return print(netdumpd::admin::show_bucket(&u, dump, *lines, *json).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::Show { dump, lines, json, bucket: false }) => {
            let dir = cli.server_config().status(exit::CONFIG)?.dump_dir;
            return print(netdumpd::admin::show(&dir, dump, *lines, *json).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::Fetch { dump, to }) => {
            let u = netdumpd::admin::bucket_config(&cli.server_config().status(exit::CONFIG)?).status(exit::CONFIG)?;
            return print(netdumpd::admin::fetch(&u, dump, to.as_deref()).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::Keygen { out }) => {
            return print(netdumpd::keys::keygen(out).status(exit::FAILURE)?.as_bytes());
        }
        Some(Command::CheckConfig { json }) => {
            let config = cli.server_config().status(exit::CONFIG)?;
            let (text, ok) =
                netdumpd::admin::check_config(&config, cli.config.as_deref(), *json).status(exit::FAILURE)?;
            print(text.as_bytes())?;
            return Ok(if ok { exit::OK } else { exit::FAILURE });
        }
        Some(Command::Man) => return print(&netdumpd::cli::man_page().status(exit::FAILURE)?),
        Some(Command::Completions { shell }) => return print(&netdumpd::cli::completions(*shell)),
    }
    let config = cli.server_config().status(exit::CONFIG)?;
    let filter = cli.log_filter().status(exit::CONFIG)?;
    netdumpd::logging::init(&filter, config.log_format, config.limits.log_lines_per_second).status(exit::CONFIG)?;
    // The keys before the socket: a key that does not load is a configuration error.
    let keys = netdumpd::keys::ServerKeys::load(&config.encryption.private_keys).status(exit::CONFIG)?;
    if config.encryption.require_encryption && keys.is_empty() {
        return Err(anyhow::anyhow!(netdumpd::config::REQUIRE_WITHOUT_KEYS)).status(exit::CONFIG);
    }
    netdumpd::signals::install_termination_handler().status(exit::FAILURE)?;
    let source = cli.clone();
    netdumpd::reload::set_source(move || {
        Ok(netdumpd::reload::Settings { config: source.server_config()?, log_filter: source.log_filter()? })
    });
    let server = Server::bind(config).status(exit::FAILURE)?;
    netdumpd::notify::ready(&format!("serving on {}", server.local_addr()));
    server.run().status(exit::FAILURE)?;
    Ok(exit::OK)
}
