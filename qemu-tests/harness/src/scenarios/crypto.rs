//! Encrypted dumps (issue 14): the test kernel pins the public key of the scenario's
//! netdumpd (`netdumpd keygen`), registers through a Noise NK handshake and seals every
//! packet after it.
//!
//! - `encrypted-dump` (every NIC): bit-exact, gdb `bt`, `info.json` says encrypted, and a
//!   capture of the wire holds none of a sample of 1000 of the pattern's words;
//! - `wire-plaintext-control` (e1000): the same search over a plaintext dump's capture
//!   finds them, so the search can see memory (NIC-independent: it tests the search);
//! - `encrypted-attack` (e1000, like the hostile scenarios: the protocol, not a driver, is
//!   under attack): an on-path attacker who sees every packet, cookie included, replays
//!   packets of this dump and of an earlier boot of the same client, forges unsealed
//!   packets both ways with the right cookie and CRC, and flips bits and reorders in
//!   flight; the dump is still bit-exact and netdumpd counts each rejection by reason;
//! - `encrypted-wrong-key` (e1000): a kernel pinning another key fails install cleanly;
//! - `require-encryption` (e1000): netdumpd refuses a plaintext kernel, and says why.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::capture;
use crate::proxy::{Direction, Fate, FaultProxy, Faults, Forger, ProxyConfig};
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use anyhow::{Context, Result, ensure};
use netdump_core::proto::{Header, MessageType, VERSION_2};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CRASH_SITE: &str = "netdump_test_crash_site";
/// Pattern words the wire search looks for.
const SAMPLE: usize = 1000;
const PATIENCE: Duration = Duration::from_secs(60);

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("encrypted-dump", nic, encrypted_dump)]
}

/// The scenarios that do not depend on the NIC (run on the e1000).
pub fn single(nic: NicModel) -> Vec<Scenario> {
    vec![
        Scenario::new("wire-plaintext-control", nic, plaintext_control),
        Scenario::new("encrypted-attack", nic, attack),
        Scenario::new("encrypted-wrong-key", nic, wrong_key),
        Scenario::new("require-encryption", nic, require_encryption),
    ]
}

fn panic_message(seed: u64) -> String {
    format!("netdump test panic (seed {seed:#x})")
}

/// `netdumpd keygen` into the scenario's directory: the private key file and the public
/// key's hex, as the kernel's `server_key=` takes it.
pub(super) fn keygen(ctx: &Ctx, name: &str) -> Result<(PathBuf, String)> {
    let path = ctx.dir.join(name);
    let out = Command::new(&ctx.artifacts.netdumpd).arg("keygen").arg("--out").arg(&path).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "netdumpd keygen failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let public = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("public key:"))
        .map(|k| k.trim().to_string())
        .with_context(|| format!("no public key in keygen's output:\n{text}"))?;
    ensure!(public.len() == 64 && public.chars().all(|c| c.is_ascii_hexdigit()), "public key {public:?}");
    Ok((path, public))
}

pub(super) fn server_args(key: &Path) -> Vec<String> {
    vec!["--private-key".into(), key.display().to_string()]
}

fn start(ctx: &Ctx, args: &[String]) -> Result<crate::netdumpd::Netdumpd> {
    common::start_server(ctx, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The dump is encrypted by its own account (`info.json`) and the capture shows frames
/// carrying about the dump's size, none of them holding a sampled pattern word.
fn wire_holds_no_memory(pcap: &Path, pattern: &netdump_test_pattern::Pattern) -> Result<(usize, u64)> {
    let frames = capture::frames(pcap)?;
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    let sent = capture::pages_sent(pattern) * 4096;
    ensure!(bytes >= sent, "the capture holds {bytes} bytes, less than the {sent} bytes of pattern sent");
    let found = capture::words_found(&frames, &capture::sample_words(pattern, SAMPLE));
    ensure!(found == 0, "{found} of {SAMPLE} pattern words are readable on the wire of an encrypted dump");
    Ok((frames.len(), bytes))
}

fn info_says_encrypted(info: &serde_json::Value) -> Result<()> {
    ensure!(info["encrypted"] == true, "info.json: encrypted is {}", info["encrypted"]);
    ensure!(info["protocol_version"] == 2, "info.json: protocol_version is {}", info["protocol_version"]);
    Ok(())
}

fn encrypted_dump(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0xc0de_0001;
    let (key, public) = keygen(ctx, "server.key")?;
    let mut run = KernelRun::new("dump", common::pattern(seed));
    run.extra = format!("server_key={public}");
    run.capture = Some(ctx.dir.join("wire.pcap"));
    let srv = start(ctx, &[server_args(&key), vec!["--require-encryption".into()]].concat())?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the encrypted dump should verify")?;
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &panic_message(seed), CRASH_SITE)?;
        info_says_encrypted(&common::read_info(&dump)?)?;
        let (frames, bytes) = wire_holds_no_memory(run.capture.as_deref().expect("captured"), &run.pattern)?;
        outcome.detail = format!(
            "{}; encrypted; 0 of {SAMPLE} pattern words in {frames} captured frames ({bytes} bytes)",
            outcome.detail
        );
        Ok(outcome)
    })
}

fn plaintext_control(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0xc0de_0002;
    let mut run = KernelRun::new("dump", common::pattern(seed));
    run.capture = Some(ctx.dir.join("wire.pcap"));
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the plaintext dump should verify")?;
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &panic_message(seed), CRASH_SITE)?;
        let info = common::read_info(&dump)?;
        ensure!(info["encrypted"] == false, "info.json: a plaintext dump says encrypted {}", info["encrypted"]);
        let frames = capture::frames(run.capture.as_deref().expect("captured"))?;
        let found = capture::words_found(&frames, &capture::sample_words(&run.pattern, SAMPLE));
        // A word may straddle two packets; nearly all lie whole in one.
        ensure!(found >= SAMPLE * 95 / 100, "only {found} of {SAMPLE} pattern words found in a plaintext capture");
        outcome.detail = format!("{}; {found} of {SAMPLE} pattern words found on the wire in clear", outcome.detail);
        Ok(outcome)
    })
}

fn wrong_key(ctx: &Ctx) -> Result<Outcome> {
    let (key, _) = keygen(ctx, "server.key")?;
    let (_, other) = keygen(ctx, "other.key")?;
    let mut run = KernelRun::new("dump", common::pattern(0xc0de_0003));
    run.extra = format!("server_key={other} hello_attempts=3 hello_retry_ms=300");
    let srv = start(ctx, &server_args(&key))?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::INSTALL_FAILED, "a kernel pinning another key must not install")?;
        let line = q.serial.lines().find(|l| l.contains("install failed")).context("no install failure line")?;
        ensure!(line.contains("ServerKeyMismatch"), "install failed, but not for the key: {line}");
        ensure!(srv.dumps_of(&ctx.id).is_empty(), "a dump exists for a kernel that could not install");
        Ok(Outcome { detail: line.trim().to_string(), ..Default::default() })
    })
}

fn require_encryption(ctx: &Ctx) -> Result<Outcome> {
    let (key, _) = keygen(ctx, "server.key")?;
    let mut run = KernelRun::new("dump", common::pattern(0xc0de_0004));
    run.extra = "hello_attempts=3 hello_retry_ms=300".into();
    let srv = start(ctx, &[server_args(&key), vec!["--require-encryption".into()]].concat())?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::INSTALL_FAILED, "a plaintext kernel must be refused")?;
        let line = q.serial.lines().find(|l| l.contains("install failed")).context("no install failure line")?;
        common::wait_for_log(srv, &["encryption"]).context("netdumpd did not say why it refused")?;
        ensure!(srv.dumps_of(&ctx.id).is_empty(), "a dump exists for a refused kernel");
        Ok(Outcome { detail: format!("kernel: {}", line.trim()), ..Default::default() })
    })
}

fn attack(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0xc0de_0005;
    let (key, public) = keygen(ctx, "server.key")?;
    let srv = start(ctx, &server_args(&key))?;
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig::default())?;
    proxy.record();

    // An earlier boot of the same client dumps through the same path: its packets are
    // what the attacker replays into the next one.
    let mut earlier = KernelRun::new("dump", common::pattern(seed));
    earlier.extra = format!("server_key={public}");
    earlier.pattern.len = 2 << 20;
    let q = earlier.boot(ctx, proxy.port)?;
    expect_exit(&q, exit::SUCCESS, "the earlier encrypted dump should verify")?;
    let old: Vec<Vec<u8>> = proxy
        .recorded()
        .into_iter()
        .filter(|(seen, _)| seen.dir == Direction::ToServer && seen.is(MessageType::Data))
        .map(|(_, bytes)| bytes)
        .take(200)
        .collect();
    ensure!(!old.is_empty(), "the earlier dump's DATA was not recorded");

    // This boot: bits flipped and packets reordered in flight, both ways.
    let faults = Faults { corrupt: 0.01, reorder: 0.02, reorder_depth: 4, ..Faults::default() };
    proxy.set_faults(Direction::ToServer, faults);
    proxy.set_faults(Direction::ToClient, faults);
    let mut run = KernelRun::new("dump", common::pattern(seed ^ 1));
    run.extra = format!("server_key={public}");
    let before = srv.stats().unwrap_or_default();
    let before = |r| common::drops(&before, r);
    let (unsealed0, replayed0, tag0) = (before("unsealed"), before("replayed_nonce"), before("bad_tag"));
    // The FINISH waits until the attack is over, so that it happens during the data phase.
    let attacking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let holding = attacking.clone();
    proxy.set_rule(move |seen| {
        if seen.is(MessageType::Finish) && holding.load(std::sync::atomic::Ordering::Acquire) {
            crate::proxy::Action::Hold
        } else {
            crate::proxy::Action::Pass
        }
    });
    let (trace_base, tape_base) = (proxy.event_count(), proxy.recorded_len());
    let (q, attack) = std::thread::scope(|s| {
        let kernel = s.spawn(|| run.boot(ctx, proxy.port));
        let attack = || -> Result<(usize, usize, usize)> {
            proxy
                .wait_until(PATIENCE, |events| {
                    let this_boot = &events[trace_base.min(events.len())..];
                    let data = |e: &&crate::proxy::Event| {
                        e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data) && e.relayed()
                    };
                    this_boot.iter().filter(data).count() >= 500
                })
                .with_context(|| format!("waiting for this boot's DATA: {}", proxy.summary()))?;
            let tape = proxy.recorded_since(tape_base);
            let client = *proxy.clients().last().context("no client behind the proxy")?;
            // Replays of this dump's own DATA: every nonce already seen.
            let mine: Vec<&Vec<u8>> = tape
                .iter()
                .filter(|(seen, _)| {
                    seen.client == client && seen.dir == Direction::ToServer && seen.is(MessageType::Data)
                })
                .map(|(_, b)| b)
                .take(100)
                .collect();
            for b in &mine {
                proxy.inject_to_server(client, b)?;
            }
            // Replays of the earlier boot's DATA, from this client's address.
            for b in &old {
                proxy.inject_to_server(client, b)?;
            }
            // Unsealed forgeries with the live cookie and a valid CRC: DATA to the
            // server, an ACK that says STOP to the client.
            let cookie =
                mine.first().and_then(|b| Header::parse(b).ok()).map(|(h, _)| h.cookie).context("no cookie")?;
            let forged = 50;
            for i in 0..forged {
                let h = Header { version: VERSION_2, msg_type: MessageType::Data, flags: 0, cookie, seq: i };
                proxy.inject_to_server(client, &crate::proxy::forge(h, 64, |p| p.fill(0xa5)))?;
                let h = Header { version: VERSION_2, msg_type: MessageType::Ack, flags: 0, cookie, seq: 0 };
                proxy.inject_to_client(client, &crate::proxy::forge(h, 1, |p| p[0] = 1), Forger::ServerPort)?;
            }
            Ok((mine.len(), old.len(), forged as usize))
        };
        let attack = attack();
        attacking.store(false, std::sync::atomic::Ordering::Release);
        proxy.release_held();
        (kernel.join().expect("the QEMU thread panicked"), attack)
    });
    with_server_log(srv, |srv| {
        let q = q?;
        let (mine, old, forged) =
            attack.with_context(|| format!("the attack; serial:\n{}", common::tail(&q.serial, 8)))?;
        expect_exit(&q, exit::SUCCESS, "nothing the attacker sent may change or stop the encrypted dump")?;
        let dumps = srv.dumps_of(&ctx.id);
        let dump = dumps.last().context("no dump of this boot")?.clone();
        let (_, mut outcome) =
            common::check_complete_dump_in(ctx, dump.clone(), &run.pattern, &panic_message(seed ^ 1), CRASH_SITE)?;
        info_says_encrypted(&common::read_info(&dump)?)?;
        let flipped = proxy.count(Direction::ToServer, Fate::Corrupted);
        let counted = |s: &serde_json::Value| {
            let after = |r| common::drops(s, r);
            (after("unsealed") - unsealed0, after("replayed_nonce") - replayed0, after("bad_tag") - tag0)
        };
        // stats.json lags the log by up to 2 s: wait for the write that has the attack.
        let after = srv
            .stats_when(|s| {
                let (u, r, t) = counted(s);
                u >= forged as u64 && r >= mine as u64 && (flipped == 0 || t > 0)
            })
            .unwrap_or_default();
        let (unsealed, replayed, tag) = counted(&after);
        ensure!(unsealed >= forged as u64, "netdumpd counted {unsealed} unsealed packets; {forged} were forged");
        ensure!(replayed >= mine as u64, "netdumpd counted {replayed} replayed nonces; {mine} were replayed");
        ensure!(flipped == 0 || tag > 0, "{flipped} packets had bits flipped, netdumpd counted no bad tag");
        outcome.detail = format!(
            "{}; replayed {mine} of this dump's and {old} of an earlier boot's packets, forged {forged} unsealed each way, {flipped} flipped in flight: netdumpd dropped {unsealed} unsealed, {replayed} replayed nonces, {tag} bad tags; {}",
            outcome.detail,
            proxy.summary()
        );
        Ok(outcome)
    })
}
