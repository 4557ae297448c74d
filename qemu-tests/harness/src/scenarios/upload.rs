//! Dumps shipped to S3-compatible object storage: a QEMU kernel's dump uploaded by
//! netdumpd to a real S3 server (s3s-fs, [`crate::s3`]), fetched back with `netdumpd
//! fetch`, and the fetched vmcore checked as the local one is: bit-exact against the
//! pattern, sparse, equal to the local file byte for byte, and opened by gdb (`bt`).

use super::common::{self, KernelRun, exit, expect_exit, wait_until, with_server_log};
use crate::qemu::NicModel;
use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::Vmcore;
use crate::{check, gdb};
use anyhow::{Context, Result, ensure};
use std::process::Command;
use std::time::Duration;

const BUCKET: &str = "suite-dumps";
const SERVER_NAME: &str = "qemu-suite";

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("upload", nic, upload_and_fetch)]
}

fn upload_and_fetch(ctx: &Ctx) -> Result<Outcome> {
    let s3 = S3Server::start(&ctx.dir.join("s3"), BUCKET)?;
    let creds = ctx.dir.join("s3-credentials");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&creds)?;
        writeln!(f, "access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"")?;
    }
    let config = ctx.dir.join("netdumpd.toml");
    std::fs::write(
        &config,
        format!(
            "[upload]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nserver_name = \"{SERVER_NAME}\"\n\
             credentials_file = \"{}\"\nallow_http = true\npart_size_mib = 5\nmax_backoff_seconds = 2\n",
            s3.endpoint(),
            creds.display()
        ),
    )?;
    let config_arg = config.display().to_string();
    let seed = 0x5353;
    let run = KernelRun::new("dump", common::pattern(seed));
    let srv = common::start_server(ctx, &["--config", &config_arg])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump should verify")?;
        let message = format!("netdump test panic (seed {seed:#x})");
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &message, "netdump_test_crash_site")?;
        let marker = dump.join("upload.json");
        wait_until(Duration::from_secs(120), "the upload to be verified", || {
            let text = std::fs::read_to_string(&marker).unwrap_or_default();
            Ok(text.contains("\"status\": \"done\"").then_some(()))
        })?;
        let netdumpd = |args: &[&str]| -> Result<String> {
            let out = Command::new(&ctx.artifacts.netdumpd).arg("--config").arg(&config).args(args).output()?;
            ensure!(out.status.success(), "netdumpd {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let name = dump.file_name().context("dump name")?.to_string_lossy().into_owned();
        let id = format!("{name}@{SERVER_NAME}");
        let list = netdumpd(&["list", "--bucket"])?;
        ensure!(list.contains(&id) && list.contains("complete"), "the bucket's listing lacks {id}:\n{list}");
        let fetched = ctx.dir.join("fetched");
        netdumpd(&["fetch", &id, "--to", &fetched.display().to_string()])?;
        let (local, back) = (dump.join("vmcore"), fetched.join("vmcore"));
        ensure!(
            std::fs::read(&local)? == std::fs::read(&back)?,
            "the fetched vmcore differs from the one netdumpd received"
        );
        let core = Vmcore::open(&back)?;
        check::pattern_matches(&core, &run.pattern).context("pattern check of the fetched vmcore")?;
        check::is_sparse(&back, &run.pattern).context("the fetched vmcore")?;
        let bt = gdb::backtrace(&ctx.artifacts.test_kernel, &back)?;
        ensure!(bt.contains("netdump_test_crash_site"), "gdb backtrace of the fetched vmcore:\n{bt}");
        ensure!(!bt.contains("warning:"), "gdb complains about the fetched vmcore:\n{bt}");
        for f in ["log", "info.json", "registers"] {
            ensure!(std::fs::read(dump.join(f))? == std::fs::read(fetched.join(f))?, "fetched {f} differs");
        }
        let stored: u64 = walk_sizes(&s3.root.join(BUCKET));
        outcome.detail += &format!(
            ", uploaded ({} KiB in the bucket for a {} KiB vmcore), fetched back bit-exact, gdb bt ok",
            stored >> 10,
            std::fs::metadata(&local)?.len() >> 10
        );
        Ok(outcome)
    })
}

/// Bytes of every file under `dir`.
fn walk_sizes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_sizes(&p) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}
