//! What `contrib/` ships: the systemd unit is sandboxed (`systemd-analyze security`
//! scores it at most 3.0) and creates the dump directory the sample configuration uses;
//! the sample configuration passes `check-config` as shipped; the example hooks work and
//! treat what came from the network as data.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use common::TempDir;

/// The highest `systemd-analyze security` exposure the shipped unit may have.
const MAX_EXPOSURE: f64 = 3.0;

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(name)
}

fn unit_text() -> String {
    std::fs::read_to_string(contrib("netdumpd.service")).unwrap()
}

/// The values of `key=` in the unit, in order.
fn unit_values(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit_text().lines().filter_map(|l| l.trim().strip_prefix(&prefix)).map(str::to_string).collect()
}

/// The number after "Overall exposure level for …:" in `systemd-analyze security`'s
/// report.
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains("Overall exposure level"))?;
    let (_, after) = line.rsplit_once(':')?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn systemd_analyze_security_scores_the_shipped_unit_at_most_3_0() {
    // Offline mode looks at the unit file alone; a copy in a scratch directory keeps any
    // unit of that name installed on this machine out of it.
    let dir = TempDir::new("contrib-unit");
    let unit = dir.path().join("netdumpd.service");
    std::fs::copy(contrib("netdumpd.service"), &unit).unwrap();
    let out =
        match Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&unit).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
                return;
            }
            Err(e) => panic!("cannot run systemd-analyze: {e}"),
        };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success()
        && (stderr.contains("offline") || stderr.contains("unrecognized option") || stderr.contains("Unknown command"))
    {
        eprintln!("skipped: this systemd-analyze has no offline security review (systemd >= 250 has): {stderr}");
        return;
    }
    assert!(out.status.success(), "systemd-analyze failed: {stderr}\n{stdout}");
    // A directive this systemd does not know is ignored, and would not sandbox anything.
    for bad in ["Unknown", "ignoring", "Invalid", "Failed"] {
        assert!(!stderr.contains(bad), "systemd-analyze objects to the unit: {stderr}");
    }
    let exposure = overall_exposure(&stdout).unwrap_or_else(|| panic!("no overall exposure level in: {stdout}"));
    println!("systemd-analyze security: overall exposure {exposure}");
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} > {MAX_EXPOSURE}:\n{stdout}");
}

#[test]
fn the_unit_runs_unprivileged_and_sandboxed() {
    assert_eq!(unit_values("DynamicUser"), ["yes"]);
    assert_eq!(unit_values("User"), Vec::<String>::new(), "a dynamic user, not a named one");
    assert_eq!(unit_values("UMask"), ["0077"]);
    assert_eq!(unit_values("NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values("ProtectSystem"), ["strict"]);
    assert_eq!(unit_values("RestrictAddressFamilies"), ["AF_INET AF_INET6 AF_UNIX"]);
    assert_eq!(unit_values("SystemCallFilter").first().map(String::as_str), Some("@system-service"));
    // The only capability, for netconsole on port 514.
    assert_eq!(unit_values("CapabilityBoundingSet"), ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(unit_values("AmbientCapabilities"), ["CAP_NET_BIND_SERVICE"]);
    // Paths that must exist before the unit starts would stop it; it makes its own.
    assert_eq!(unit_values("ReadWritePaths"), Vec::<String>::new());
}

#[test]
fn the_unit_waits_for_readiness_reloads_by_sighup_and_does_not_restart_a_bad_config() {
    assert_eq!(unit_values("Type"), ["notify"], "netdumpd sends READY=1 when its socket is bound");
    assert_eq!(unit_values("NotifyAccess"), ["main"], "hooks may not speak for the daemon");
    let reload = unit_values("ExecReload");
    assert_eq!(reload.last().map(String::as_str), Some("/bin/kill -HUP $MAINPID"), "{reload:?}");
    assert!(reload[0].ends_with("check-config"), "a refused configuration fails the reload first: {reload:?}");
    assert_eq!(unit_values("RestartPreventExitStatus"), [netdumpd::cli::exit::CONFIG.to_string()]);
}

#[test]
fn the_unit_creates_the_dump_directory_the_sample_config_uses() {
    let config = "/etc/netdumpd/netdumpd.toml";
    for exec in unit_values("ExecStartPre").iter().chain(&unit_values("ExecStart")) {
        assert!(exec.contains(&format!("--config {config}")), "{exec}");
    }
    let state = unit_values("StateDirectory");
    assert_eq!(state.len(), 1, "{state:?}");
    let sample = contrib("netdumpd.toml");
    let cli = netdumpd::cli::Cli::try_parse_from(["netdumpd", "--config", sample.to_str().unwrap()]).unwrap();
    let server = cli.server_config().unwrap();
    assert_eq!(server.dump_dir, Path::new("/var/lib").join(&state[0]), "the config's dir is the unit's StateDirectory");
    assert!(std::fs::read_to_string(&sample).unwrap().contains(config), "the sample names where it is installed");
}

/// `netdumpd --config contrib/netdumpd.toml check-config`, as the unit's ExecStartPre
/// runs it.
fn check_config(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netdumpd")).arg("--config").arg(config).arg("check-config").output().unwrap()
}

#[test]
fn the_sample_config_passes_check_config_as_shipped() {
    let out = check_config(&contrib("netdumpd.toml"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-config failed on the shipped sample:\n{text}");
    assert!(text.contains("configuration OK"), "{text}");
}

#[test]
fn the_sample_config_with_the_shipped_hooks_installed_passes_check_config() {
    // As the comments in the sample say: hooks installed, their lines uncommented.
    let dir = TempDir::new("contrib-hooks");
    let sample = std::fs::read_to_string(contrib("netdumpd.toml")).unwrap();
    let mut config = String::new();
    for line in sample.lines() {
        let line = match line {
            "# [hooks]" => "[hooks]".to_string(),
            l if l.starts_with("# crash = ") || l.starts_with("# finished = ") => {
                let (key, _) = l.trim_start_matches("# ").split_once(" = ").unwrap();
                format!("{key} = {:?}", contrib("hooks").join(key).display().to_string())
            }
            l if l.starts_with("dir = ") => format!("dir = {:?}", dir.path().join("dumps").display().to_string()),
            l => l.to_string(),
        };
        config.push_str(&line);
        config.push('\n');
    }
    assert!(config.contains("[hooks]\n") && config.contains("hooks/crash\"") && config.contains("hooks/finished\""));
    let path = dir.path().join("netdumpd.toml");
    std::fs::write(&path, config).unwrap();
    let out = check_config(&path);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hooks/crash") && text.contains("hooks/finished"), "{text}");
}

#[test]
fn the_shipped_hooks_work_and_treat_network_text_as_data() {
    for hook in ["crash", "finished"] {
        let mode = std::fs::metadata(contrib("hooks").join(hook)).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "contrib/hooks/{hook} is not executable");
    }
    let dir = TempDir::new("contrib-hook-run");
    let marker = dir.path().join("marker");
    // A client name and a panic message as a stranger could choose them.
    let hostile = format!("-n $(touch {0}) `touch {0}`; touch {0}", marker.display());
    let run = |hook: &str, client: &str, args: &[&str]| {
        Command::new(contrib("hooks").join(hook))
            .args(args)
            .env("NETDUMP_CLIENT", client)
            .env("NETDUMP_MESSAGE", &hostile)
            .env_remove("NETDUMP_ANALYSIS")
            .output()
            .unwrap()
    };
    assert_eq!(run("crash", "watchdog-7", &["10.0.0.7", "/d/watchdog-7-x"]).status.code(), Some(1), "skip the image");
    assert_eq!(run("crash", "node-a", &["10.0.0.1", "/d/node-a-x"]).status.code(), Some(0), "take the dump");
    assert_eq!(run("crash", &hostile, &["10.0.0.1", "/d/x"]).status.code(), Some(0));
    let out = run("finished", &hostile, &["complete", "10.0.0.1", "/d/x; touch /nonexistent"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("netdump: {hostile} (10.0.0.1) crashed; dump complete in /d/x; touch /nonexistent\n")
    );
    assert!(!marker.exists(), "a hook ran text from the network");
}
