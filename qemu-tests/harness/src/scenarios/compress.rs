//! Compressed dumps (issue 15, feature `COMPRESSED`): the realistic image dumped with
//! LZ4 blocks arrives bit-exact, and its vmcore's PT_LOAD contents are those of an
//! uncompressed dump of the same image; blocks corrupted on the way, or that decode to
//! the wrong length, are rejected and the dump is still exact; compression and
//! encryption together.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use super::crypto;
use crate::netdumpd::Netdumpd;
use crate::proxy::{Action, Direction, Fate, FaultProxy, Faults, ProxyConfig, Seen, forge};
use crate::qemu::{NicModel, QemuOutcome};
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::Vmcore;
use anyhow::{Context, Result, bail, ensure};
use netdump_core::proto::{Data, Encoding, Header, MessageType, Section, field};
use netdump_test_pattern::{PAGE, Pattern, Realistic};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the scenario waits for the kernel's DATA to reach the held point.
const PATIENCE: Duration = Duration::from_secs(180);
/// The realistic image's size in these scenarios: small, as QEMU under TCG is slow.
const IMAGE_LEN: u64 = 8 << 20;

/// Every NIC: compressed against uncompressed.
pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("compressed-image", nic, compressed_image)]
}

/// The NIC-independent ones (on the e1000).
pub fn single(nic: NicModel) -> Vec<Scenario> {
    vec![
        Scenario::new("compressed-bad-blocks", nic, bad_blocks),
        Scenario::new("compressed-encrypted", nic, compressed_encrypted),
    ]
}

fn panic_message(seed: u64) -> String {
    format!("netdump test panic (seed {seed:#x})")
}

/// A boot of the realistic image (in the pattern's place), compression on or off.
fn image_run(seed: u64, compress: bool, client: Option<String>) -> (KernelRun, Realistic) {
    let pattern = Pattern { len: IMAGE_LEN, ..common::pattern(seed) };
    let mut run = KernelRun::new("dump", pattern);
    run.extra = format!("image=realistic compress={}", if compress { "on" } else { "off" });
    run.client = client;
    (run, Realistic { base: pattern.base, len: pattern.len, seed })
}

/// The image's every page, bit for bit, in the vmcore (zero pages read as holes).
fn image_matches(core: &Vmcore, image: &Realistic) -> Result<u64> {
    let mut want = [0u8; PAGE as usize];
    let mut got = [0u8; PAGE as usize];
    let mut nonzero = 0;
    let mut addr = image.base;
    while addr < image.base + image.len {
        image.fill_page(addr, &mut want);
        core.read_phys(addr, &mut got)?;
        if let Some(i) = (0..want.len()).find(|&i| want[i] != got[i]) {
            bail!("the image differs at {:#x}: {:#04x}, want {:#04x}", addr + i as u64, got[i], want[i]);
        }
        nonzero += u64::from(want.iter().any(|&b| b != 0));
        addr += PAGE;
    }
    Ok(nonzero)
}

/// The dump of `name`: complete, its info.json saying `compressed`, the image and the
/// panic message whole. Returns its directory and info.
fn check_image_dump(
    srv: &Netdumpd,
    name: &str,
    image: &Realistic,
    seed: u64,
    compressed: bool,
) -> Result<(PathBuf, serde_json::Value)> {
    let dump = common::only_dump_of(srv, name)?;
    let info = common::read_info(&dump)?;
    crate::check::info_says_complete(&info)?;
    ensure!(info["compressed"] == compressed, "{name}: info.json compressed is {}", info["compressed"]);
    let core = Vmcore::open(&dump.join("vmcore"))?;
    image_matches(&core, image).with_context(|| format!("{name}: image check"))?;
    let log = std::fs::read_to_string(dump.join("log")).context("read log")?;
    crate::check::log_has(&log, &[&panic_message(seed), "console line before the crash: 1"])?;
    Ok((dump, info))
}

/// Two vmcores of two boots of the same image: the same PT_LOADs (addresses and sizes),
/// and the same contents wherever they hold the image. (Outside it, two boots' RAM
/// differs anyway: their command lines, stacks and console logs.)
fn same_loads(a: &Path, b: &Path, image: &Realistic) -> Result<u64> {
    let (ca, cb) = (Vmcore::open(a)?, Vmcore::open(b)?);
    let (fa, fb) = (std::fs::read(a)?, std::fs::read(b)?);
    let (la, lb): (Vec<_>, Vec<_>) = (ca.loads().collect(), cb.loads().collect());
    ensure!(la.len() == lb.len(), "{} PT_LOADs against {}", la.len(), lb.len());
    let mut bytes = 0;
    for (x, y) in la.iter().zip(&lb) {
        ensure!((x.paddr, x.vaddr, x.filesz) == (y.paddr, y.vaddr, y.filesz), "PT_LOADs differ: {x:?} / {y:?}");
        let from = x.paddr.max(image.base);
        let to = (x.paddr + x.filesz).min(image.base + image.len);
        if from >= to {
            continue;
        }
        let at = |seg: &crate::vmcore::Segment| (seg.offset + (from - seg.paddr)) as usize;
        let (sa, sb) = (&fa[at(x)..at(x) + (to - from) as usize], &fb[at(y)..at(y) + (to - from) as usize]);
        if let Some(i) = (0..sa.len()).find(|&i| sa[i] != sb[i]) {
            bail!("PT_LOAD contents differ at physical {:#x}", from + i as u64);
        }
        bytes += to - from;
    }
    ensure!(bytes == image.len, "the PT_LOADs hold {bytes} bytes of the {}-byte image", image.len);
    Ok(bytes)
}

fn exit_ok(q: &QemuOutcome, compress: bool) -> Result<()> {
    expect_exit(q, exit::SUCCESS, "the dump should verify")?;
    let want = if compress { "netdump: compression on" } else { "netdump: compression off" };
    ensure!(q.serial.contains(want), "the kernel did not say {want:?}");
    Ok(())
}

/// The same realistic image dumped twice into one netdumpd, without and with
/// compression: both bit-exact, their PT_LOADs identical, the compressed one in fewer
/// bytes.
fn compressed_image(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0x1a4_0001;
    let srv = common::start_server(ctx, &[])?;
    let (raw_name, lz4_name) = (format!("{}-raw", ctx.id), format!("{}-lz4", ctx.id));
    let (raw_run, image) = image_run(seed, false, Some(raw_name.clone()));
    let (lz4_run, _) = image_run(seed, true, Some(lz4_name.clone()));
    let q_raw = raw_run.boot(ctx, srv.port)?;
    let q_lz4 = lz4_run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        exit_ok(&q_raw, false)?;
        exit_ok(&q_lz4, true)?;
        let (raw, raw_info) = check_image_dump(srv, &raw_name, &image, seed, false)?;
        let (lz4, lz4_info) = check_image_dump(srv, &lz4_name, &image, seed, true)?;
        let loads = same_loads(&raw.join("vmcore"), &lz4.join("vmcore"), &image)?;
        let bytes = |i: &serde_json::Value| i["bytes_received"].as_u64().unwrap_or(0);
        let (raw_bytes, lz4_bytes) = (bytes(&raw_info), bytes(&lz4_info));
        ensure!(lz4_bytes < raw_bytes, "compressed {lz4_bytes} bytes, uncompressed {raw_bytes}");
        let blocks = lz4_info["compression"]["blocks"].as_u64().unwrap_or(0);
        ensure!(blocks > 0, "no LZ4 block arrived: {}", lz4_info["compression"]);
        let detail = format!(
            "{} MiB realistic image bit-exact both ways, the same PT_LOADs, {} MiB of image in them identical; {lz4_bytes} bytes compressed ({blocks} blocks) against {raw_bytes}",
            IMAGE_LEN >> 20,
            loads >> 20
        );
        let seconds = lz4_info["duration_seconds"].as_f64().unwrap_or(0.0);
        Ok(Outcome { detail, bytes: lz4_bytes, seconds })
    })
}

/// A DATA datagram's LZ4 block, if it carries one: (header, offset, raw length, block).
fn lz4_block(datagram: &[u8]) -> Option<(Header, u64, u32, Vec<u8>)> {
    let (header, payload) = Header::parse(datagram).ok()?;
    let Encoding::Lz4 { raw_len } = Encoding::parse(payload).ok()? else { return None };
    let data = Data::parse(payload).ok()?;
    Some((header, data.offset, raw_len, data.data.to_vec()))
}

/// A forged DATA (valid CRC) at `seq` whose block is `block`, announced as `raw_len`.
fn forged(header: Header, seq: u32, offset: u64, raw_len: u32, block: &[u8]) -> Vec<u8> {
    let h = Header { seq, ..header };
    forge(h, field::data::DATA + block.len(), |p| {
        Data::emit_subheader(Section::Memory, offset, p);
        Encoding::Lz4 { raw_len }.emit(p);
        p[field::data::DATA..].copy_from_slice(block);
    })
}

/// Through the proxy's bit flips (which the CRC catches: the client resends), and with
/// two forged blocks with valid CRCs slipped in at `seq`s not yet arrived — one that
/// decodes to one byte more than it says, one cut short — which netdumpd must reject
/// (`bad_block`) and not acknowledge, so that the client's own packets at those `seq`s
/// are taken: the dump is exact.
fn bad_blocks(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0x1a4_0002;
    let srv = common::start_server(ctx, &[])?;
    let faults = Faults { corrupt: 0.02, ..Faults::default() };
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig { seed, to_server: faults, ..Default::default() })?;
    proxy.record();
    // From the 400th DATA on the kernel's DATA waits in the proxy until the forgeries are in.
    let holding = Arc::new(AtomicBool::new(true));
    let (h, mut data) = (holding.clone(), 0u32);
    proxy.set_rule(move |s: &Seen| {
        let to_server = s.dir == Direction::ToServer;
        data += u32::from(to_server && s.is(MessageType::Data));
        if to_server && s.is(MessageType::Data) && data > 400 && h.load(Ordering::SeqCst) {
            Action::Hold
        } else {
            Action::Pass
        }
    });
    let (run, image) = image_run(seed, true, None);
    let (q, forged_seqs) = std::thread::scope(|s| {
        let kernel = s.spawn(|| run.boot(ctx, proxy.port));
        let forged = proxy
            .wait_until(PATIENCE, |events| events.iter().filter(|e| e.fate == Fate::Held).count() >= 2)
            .context("the kernel's DATA did not reach the held point")
            .and_then(|()| inject_bad_blocks(&proxy));
        holding.store(false, Ordering::SeqCst);
        proxy.release_held();
        (kernel.join().expect("the QEMU thread panicked"), forged)
    });
    let (q, forged_seqs) = (q?, forged_seqs?);
    with_server_log(srv, |srv| {
        exit_ok(&q, true)?;
        let (_, info) = check_image_dump(srv, &ctx.id, &image, seed, true)?;
        let drops = |r: &str| common::drops(&info, r);
        ensure!(drops("bad_block") == 2, "bad_block drops: {} (want the 2 forged blocks)", drops("bad_block"));
        let flipped = proxy.count(Direction::ToServer, Fate::Corrupted);
        let retransmitted = info["retransmissions"].as_u64().unwrap_or(0);
        // A flipped packet fails its header checks before it reaches a session: the
        // server's counters (stats.json), not the session's, have it.
        let caught_in = |s: &serde_json::Value| -> u64 {
            ["bad_crc", "bad_magic", "truncated", "length_mismatch", "unsupported_version", "unknown_type"]
                .iter()
                .map(|r| common::drops(s, r))
                .sum()
        };
        // stats.json lags the log by up to 2 s: wait for the write that follows the dump.
        let caught = srv.stats_when(|s| flipped == 0 || caught_in(s) > 0).map_or(0, |s| caught_in(&s));
        if flipped > 0 {
            ensure!(caught > 0, "{flipped} flipped packets, none dropped");
            ensure!(retransmitted > 0, "{flipped} packets flipped on the way, none resent");
        }
        let detail = format!(
            "{} MiB realistic image bit-exact; forged blocks at seq {forged_seqs:?} (wrong length, cut short) dropped as bad_block; {flipped} packets flipped on the way, {caught} dropped by the header checks, {retransmitted} retransmissions",
            IMAGE_LEN >> 20
        );
        Ok(Outcome { detail, bytes: info["bytes_received"].as_u64().unwrap_or(0), seconds: 0.0 })
    })
}

/// Sends netdumpd two forged blocks at the two `seq`s after the highest the kernel has
/// sent (so new to the server, and within its window: the kernel's DATA is held): a
/// recorded block of the kernel's announced one byte longer, and the same block cut
/// short. Returns the two `seq`s.
fn inject_bad_blocks(proxy: &FaultProxy) -> Result<[u32; 2]> {
    let top = proxy
        .events()
        .iter()
        .filter(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data))
        .filter_map(|e| e.seen.header.map(|h| h.seq))
        .max()
        .context("no DATA seen")?;
    let (header, offset, raw_len, block) = proxy
        .recorded()
        .iter()
        .filter(|(seen, _)| seen.dir == Direction::ToServer && seen.is(MessageType::Data))
        .find_map(|(_, bytes)| lz4_block(bytes))
        .context("no LZ4 block among the kernel's DATA")?;
    ensure!(block.len() > 8, "a block of {} bytes", block.len());
    let client = *proxy.clients().first().context("no client")?;
    let seqs = [top + 1, top + 2];
    proxy.inject_to_server(client, &forged(header, seqs[0], offset, raw_len + 1, &block))?;
    proxy.inject_to_server(client, &forged(header, seqs[1], offset, raw_len, &block[..block.len() - 8]))?;
    Ok(seqs)
}

/// Compression and encryption at once: compressed, then sealed; netdumpd opens, then
/// decodes. The image arrives bit-exact and info.json says both.
fn compressed_encrypted(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0x1a4_0003;
    let (key, public) = crypto::keygen(ctx, "server.key")?;
    let args = crypto::server_args(&key);
    let srv = common::start_server(ctx, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (mut run, image) = image_run(seed, true, None);
    run.extra += &format!(" server_key={public}");
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        exit_ok(&q, true)?;
        let (_, info) = check_image_dump(srv, &ctx.id, &image, seed, true)?;
        ensure!(info["encrypted"] == true, "info.json: encrypted is {}", info["encrypted"]);
        let c = &info["compression"];
        let detail = format!(
            "{} MiB realistic image bit-exact; encrypted and compressed: {} blocks, {} bytes decoded from {}",
            IMAGE_LEN >> 20,
            c["blocks"],
            c["decoded_bytes"],
            c["block_bytes"]
        );
        Ok(Outcome { detail, bytes: info["bytes_received"].as_u64().unwrap_or(0), seconds: 0.0 })
    })
}
