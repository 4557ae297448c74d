//! The end-to-end scenarios: a panic dumps bit-exact; the NIC is taken over from live
//! traffic; no server means a bounded install failure; a panic inside the dump ends it;
//! and the NIC conformance kernel.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::conformance;
use crate::netdumpd::free_udp_port;
use crate::qemu::{NicModel, QemuRun};
use crate::suite::{Ctx, Outcome, Scenario};
use anyhow::{Context, Result, ensure};
use std::time::Duration;

const HELLO_ATTEMPTS: u64 = 3;
const HELLO_RETRY_MS: u64 = 300;
/// ARP for the gateway: at most 10 × 200 ms (netdump-core's default).
const ARP_BOUND_MS: u64 = 2000;

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![
        Scenario::new("dump", nic, |c| panic_dump(c, "dump", 0x1111)),
        Scenario::new("takeover", nic, |c| panic_dump(c, "takeover", 0x2222)),
        Scenario::new("deferred", nic, |c| panic_dump(c, "deferred", 0x2323)),
        Scenario::new("no-server", nic, no_server),
        Scenario::new("nested-panic", nic, nested_panic),
        Scenario::new("conformance", nic, conformance),
    ]
}

/// Panic → complete, bit-exact dump. The `dump` scenario also runs the negative control
/// on its vmcore; `takeover` first floods ordinary traffic through the same NIC;
/// `deferred` prepares netdump without touching the NIC, and the kernel's own driver
/// instance floods through it up to the panic.
fn panic_dump(ctx: &Ctx, scenario: &'static str, seed: u64) -> Result<Outcome> {
    let run = KernelRun::new(scenario, common::pattern(seed));
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump should verify")?;
        let message = format!("netdump test panic (seed {seed:#x})");
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &message, "netdump_test_crash_site")?;
        if scenario == "takeover" {
            ensure!(
                q.serial.contains("ordinary traffic: 3000 frames sent"),
                "the kernel did not send its ordinary traffic before the panic"
            );
            outcome.detail += ", NIC taken over mid-traffic";
        } else if scenario == "deferred" {
            deferred_checks(&q.serial)?;
            outcome.detail += ", netdump off the NIC until the panic, then took it over from the kernel's driver";
        } else {
            common::negative_control(&run.pattern, &dump.join("vmcore"), &ctx.dir.join("negative-control.vmcore"))?;
            outcome.detail += ", one flipped byte is caught";
        }
        Ok(outcome)
    })
}

/// No server: install fails with ServerSilent within its configured bound.
fn no_server(ctx: &Ctx) -> Result<Outcome> {
    let mut run = KernelRun::new("no-server", common::pattern(0x3333));
    run.extra = format!("hello_attempts={HELLO_ATTEMPTS} hello_retry_ms={HELLO_RETRY_MS}");
    let q = run.boot(ctx, free_udp_port()?)?;
    expect_exit(&q, exit::INSTALL_FAILED, "install must give up when no server answers")?;
    let line = q
        .serial
        .lines()
        .find(|l| l.contains("install failed after"))
        .context("kernel did not report the install failure")?;
    ensure!(line.contains("ServerSilent"), "unexpected install failure: {line}");
    let ms: u64 = line
        .split("after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .context("no wait time in the report")?;
    let bound = ARP_BOUND_MS + HELLO_ATTEMPTS * HELLO_RETRY_MS;
    ensure!(ms <= bound, "install waited {ms} ms, beyond its configured bound of {bound} ms");
    Ok(Outcome { detail: format!("install gave up after {ms} ms (bound {bound} ms)"), ..Default::default() })
}

/// A panic inside the dump: the kernel stops, the server marks the dump incomplete.
fn nested_panic(ctx: &Ctx) -> Result<Outcome> {
    let run = KernelRun::new("nested-panic", common::pattern(0x4444));
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::NESTED_PANIC, "a panic inside the dump must end it")?;
        common::wait_incomplete(ctx, srv)?;
        Ok(Outcome {
            detail: "dump ended by the nested panic, server marked it incomplete".into(),
            ..Default::default()
        })
    })
}

/// The conformance kernel must pass every check and every counted datagram must arrive.
fn conformance(ctx: &Ctx) -> Result<Outcome> {
    let listener = conformance::Listener::start()?;
    let q = QemuRun {
        kernel: &ctx.artifacts.conformance_kernel,
        memory_mib: 64,
        cpus: 1,
        append: format!("port={} frames=5000", listener.port),
        nic: ctx.nic,
        serial_log: ctx.dir.join("serial.log"),
        timeout: Duration::from_secs(180),
        capture: None,
    }
    .run()?;
    let arrived = listener.finish();
    expect_exit(&q, exit::SUCCESS, "every conformance check must pass")?;
    let checks = q.serial.lines().filter(|l| l.starts_with("CHECK")).count();
    ensure!(checks > 0, "the conformance kernel reported no checks:\n{}", q.serial);
    Ok(Outcome { detail: format!("{checks} checks passed; host received {}", arrived?), ..Default::default() })
}

/// What the `deferred` kernel's console must show: netdump prepared (not installed), the
/// kernel's own driver's traffic, netdump's NIC instance with no device call before the
/// panic (its counter at the prepare, at the last ordinary frame and as the dump starts),
/// and the order prepare → traffic → panic → dump.
fn deferred_checks(serial: &str) -> Result<()> {
    let at = |needle: &str| serial.find(needle).with_context(|| format!("no {needle:?} on the console:\n{serial}"));
    let prepared = at("netdump: prepared, cookie ")?;
    ensure!(!serial.contains("netdump: installed"), "netdump registered at boot");
    let traffic = at("ordinary traffic: 3000 frames sent to port ")?;
    let panic = at("panic: ")?;
    let dumping = at("netdump: dumping; ")?;
    ensure!(prepared < traffic && traffic < panic && panic < dumping, "out of order:\n{serial}");
    for (needle, what) in [
        ("netdump: prepared, cookie ", "at the prepare"),
        ("ordinary traffic: 3000 frames", "during the kernel's own traffic"),
        ("netdump: dumping; ", "before the dump"),
    ] {
        let line = serial[at(needle)?..].lines().next().unwrap_or_default();
        ensure!(
            line.contains(" 0 device calls") || line.contains("made 0 device calls"),
            "netdump touched the NIC {what}: {line}"
        );
    }
    ensure!(serial[traffic..].contains("by the kernel's own driver"), "the traffic did not use the kernel's driver");
    Ok(())
}
