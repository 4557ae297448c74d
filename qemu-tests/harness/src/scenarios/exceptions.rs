//! Crash context like a real kernel dump (issue 5): a scenario per fatal CPU exception
//! and for a stack overflow, each checked through gdb (the registers planted before the
//! fault, the faulting function at the top of the backtrace) and against the pattern;
//! the memory map of 128 MiB, 3 GiB (the PCI hole) and 5 GiB (RAM above 4 GiB) guests,
//! checked on both sides of the hole; a higher-half direct map that gdb reads through;
//! and, in every one, the extra state after the image and the reason and signature in
//! `info.json`.
//!
//! These do not depend on the NIC model: `scenarios/mod.rs` runs them on the e1000.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::gdb;
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::{PR_REG_RIP, Vmcore};
use anyhow::{Context, Result, ensure};
use netdump_test_pattern::Pattern;
use std::path::Path;

/// Where the test kernel's page-fault scenario writes: canonical, unmapped.
const FAULT_ADDRESS: u64 = 0x0000_4000_0000_0ff8;
/// The runtime's direct map (`netdump_qemu_runtime::DIRECT_MAP_OFFSET`).
const DIRECT_MAP_OFFSET: u64 = 0xffff_8880_0000_0000;
/// Lines of the test kernel's task list (`extra_state.rs`).
const TASKS: u32 = 300;

/// A fault the test kernel raises and what the dump must say about it.
#[derive(Clone, Copy)]
struct Fault {
    /// `fault=` on the kernel command line.
    name: &'static str,
    vector: u8,
    mnemonic: &'static str,
    error_code: u64,
    /// The function gdb must show in frame #0.
    function: &'static str,
    /// Text the crash message must contain.
    message: &'static str,
    /// The page fault's CR2, when it is known in advance.
    fault_address: Option<u64>,
    /// A stack overflow: the message names the guard page and, for a #PF, CR2 lies in it.
    overflow: bool,
    seed: u64,
}

const FAULTS: [Fault; 6] = [
    Fault {
        name: "divide-error",
        vector: 0,
        mnemonic: "#DE",
        error_code: 0,
        function: "netdump_fault_divide_error",
        message: "#DE divide error at rip",
        fault_address: None,
        overflow: false,
        seed: 0x5de0,
    },
    Fault {
        name: "invalid-opcode",
        vector: 6,
        mnemonic: "#UD",
        error_code: 0,
        function: "netdump_fault_invalid_opcode",
        message: "#UD invalid opcode at rip",
        fault_address: None,
        overflow: false,
        seed: 0x5d06,
    },
    Fault {
        name: "general-protection",
        vector: 13,
        mnemonic: "#GP",
        error_code: 0,
        function: "netdump_fault_general_protection",
        message: "#GP general protection fault, error code 0x0 at rip",
        fault_address: None,
        overflow: false,
        seed: 0x56b13,
    },
    Fault {
        name: "page-fault",
        vector: 14,
        mnemonic: "#PF",
        error_code: 2,
        function: "netdump_fault_page_fault",
        message: "#PF page fault (write, page not present, kernel mode) at rip",
        fault_address: Some(FAULT_ADDRESS),
        overflow: false,
        seed: 0x5bf14,
    },
    Fault {
        name: "stack-overflow",
        vector: 14,
        mnemonic: "#PF",
        error_code: 2,
        function: "netdump_fault_recurse",
        message: "; kernel stack overflow into the guard page at",
        fault_address: None,
        overflow: true,
        seed: 0x5050,
    },
    Fault {
        name: "double-fault",
        vector: 8,
        mnemonic: "#DF",
        error_code: 0,
        function: "netdump_fault_recurse",
        message: "#DF double fault, error code 0x0 at rip",
        fault_address: None,
        overflow: true,
        seed: 0x5df8,
    },
];

/// A guest's memory and where its patterns go.
#[derive(Clone, Copy)]
struct Memory {
    name: &'static str,
    mib: u32,
    /// Pattern regions (base, length) besides the main one at 32 MiB.
    extra: &'static [(u64, u64)],
    /// The PCI hole below 4 GiB, for guests with RAM above it.
    pci_hole: Option<(u64, u64)>,
    direct_map: bool,
    seed: u64,
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// QEMU's q35 keeps RAM below 2 GiB once a guest has 2.75 GiB or more: the PCI hole
/// follows, and the rest of the RAM starts at 4 GiB.
const PCI_HOLE: (u64, u64) = (2 * GIB, 4 * GIB);
/// The legacy hole (VGA, option ROMs, BIOS) every PC has below 1 MiB.
const LEGACY_HOLE: (u64, u64) = (0xa_0000, MIB);

const MEMORIES: [Memory; 4] = [
    Memory {
        name: "memory-128m",
        mib: 128,
        extra: &[(0x1_0000, 0x7_0000), (120 * MIB, 7 * MIB)],
        pci_hole: None,
        direct_map: false,
        seed: 0x128,
    },
    Memory {
        name: "memory-3g",
        mib: 3 * 1024,
        extra: &[(0x1_0000, 0x7_0000), (2 * GIB - 48 * MIB, 16 * MIB), (4 * GIB, 16 * MIB)],
        pci_hole: Some(PCI_HOLE),
        direct_map: false,
        seed: 0x3000,
    },
    Memory {
        name: "memory-5g",
        mib: 5 * 1024,
        extra: &[(2 * GIB - 48 * MIB, 16 * MIB), (4 * GIB, 16 * MIB), (7 * GIB - 16 * MIB, 16 * MIB)],
        pci_hole: Some(PCI_HOLE),
        direct_map: false,
        seed: 0x5000,
    },
    Memory {
        name: "direct-map",
        mib: 128,
        extra: &[(0x1_0000, 0x7_0000), (120 * MIB, 7 * MIB)],
        pci_hole: None,
        direct_map: true,
        seed: 0xd12ec7,
    },
];

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    let mut v: Vec<Scenario> = FAULTS.iter().map(|&f| Scenario::new(f.name, nic, move |c| exception(c, f))).collect();
    v.extend(MEMORIES.iter().map(|&m| Scenario::new(m.name, nic, move |c| memory(c, m))));
    v
}

/// The values the test kernel plants in rbx, r12, r13, r14, r15 (`faults::planted`).
fn planted(seed: u64) -> [(&'static str, u64); 5] {
    let v = |tag: u64| tag << 48 | (seed & 0xffff_ffff_ffff);
    [("rbx", v(0xb0b0)), ("r12", v(0x1212)), ("r13", v(0x1313)), ("r14", v(0x1414)), ("r15", v(0x1515))]
}

fn exception(ctx: &Ctx, f: Fault) -> Result<Outcome> {
    let mut run = KernelRun::new("exception", common::pattern(f.seed));
    run.extra = format!("fault={} fault_address={FAULT_ADDRESS:#x}", f.name);
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the exception's dump should verify")?;
        let (dump, mut outcome) = common::check_complete_dump(ctx, srv, &run.pattern, f.message, f.function)?;
        let vmcore = dump.join("vmcore");
        let info = common::read_info(&dump)?;

        // gdb: the faulting function on top, the planted registers, the faulting rip.
        let out = gdb::batch(&ctx.artifacts.test_kernel, &vmcore, &["bt 3", "info registers"])?;
        let top = out.lines().find(|l| l.starts_with("#0")).context("gdb printed no frame")?;
        ensure!(top.contains(f.function), "frame #0 is not {}:\n{out}", f.function);
        let regs = gdb::registers(&out);
        for (name, want) in planted(f.seed) {
            let got = regs.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            ensure!(got == Some(want), "gdb shows {name} = {got:x?}, the kernel planted {want:#x}:\n{out}");
        }
        let rip = Vmcore::open(&vmcore)?.prstatus_registers()[0][PR_REG_RIP];
        ensure!(
            regs.iter().any(|(n, v)| n == "rip" && *v == rip),
            "gdb's rip differs from NT_PRSTATUS ({rip:#x}):\n{out}"
        );

        // info.json: the reason, the message, the stack and the signature.
        let field = |p: &str| info.pointer(p).and_then(|v| v.as_str()).unwrap_or("").to_string();
        ensure!(field("/reason/kind") == "exception", "reason.kind is {:?}", field("/reason/kind"));
        ensure!(
            info.pointer("/reason/vector").and_then(|v| v.as_u64()) == Some(u64::from(f.vector)),
            "reason.vector is not {}",
            f.vector
        );
        ensure!(field("/reason/vector_name") == f.mnemonic, "reason.vector_name is {:?}", field("/reason/vector_name"));
        ensure!(
            field("/reason/error_code") == format!("{:#x}", f.error_code),
            "reason.error_code is {:?}",
            field("/reason/error_code")
        );
        let message = field("/message");
        ensure!(
            message.starts_with(f.mnemonic) && message.contains(f.message),
            "message {message:?} lacks {:?}",
            f.message
        );
        ensure!(message.contains(&format!("at rip {rip:#x}")), "message {message:?} does not name rip {rip:#x}");
        let cr2 = u64::from_str_radix(field("/reason/fault_address").trim_start_matches("0x"), 16)
            .context("reason.fault_address")?;
        if let Some(want) = f.fault_address {
            ensure!(cr2 == want, "reason.fault_address is {cr2:#x}, the kernel wrote to {want:#x}");
        }
        if f.overflow {
            let guard = message
                .rsplit("guard page at ")
                .next()
                .and_then(|g| u64::from_str_radix(g.trim_start_matches("0x"), 16).ok())
                .context("no guard page in the message")?;
            if f.vector == 14 {
                ensure!(cr2 & !0xfff == guard, "CR2 {cr2:#x} is not in the guard page {guard:#x}");
            }
        } else if f.fault_address.is_none() {
            ensure!(cr2 == 0, "reason.fault_address is {cr2:#x} for a vector without one");
        }
        let frames = info.pointer("/reason/frames").and_then(|v| v.as_array()).context("reason.frames")?;
        ensure!(
            frames.first().and_then(|v| v.as_str()) == Some(format!("{rip:#x}").as_str()),
            "reason.frames does not start at rip {rip:#x}: {frames:?}"
        );
        ensure!(frames.len() >= 2, "no return address in reason.frames: {frames:?}");
        check_signature(&info)?;
        check_extra(&dump, &info, f.seed)?;
        outcome.detail = format!(
            "{} at {rip:#x}: planted registers, frame #0, reason and extra state ok; {}",
            f.mnemonic, outcome.detail
        );
        Ok(outcome)
    })
}

fn memory(ctx: &Ctx, m: Memory) -> Result<Outcome> {
    let mut run = KernelRun::new("dump", common::pattern(m.seed));
    run.memory_mib = m.mib;
    let patterns: Vec<Pattern> = m.extra.iter().map(|&(base, len)| Pattern { base, len, ..run.pattern }).collect();
    run.extra = patterns.iter().map(|p| format!("extra_pattern={:#x}+{:#x} ", p.base, p.len)).collect();
    if m.direct_map {
        run.extra += "direct_map";
    }
    let srv = common::start_server(ctx, &[])?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump should verify")?;
        let message = format!("netdump test panic (seed {:#x})", m.seed);
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &message, "netdump_test_crash_site")?;
        let vmcore = dump.join("vmcore");
        let core = Vmcore::open(&vmcore)?;
        for p in &patterns {
            crate::check::pattern_matches(&core, p).with_context(|| format!("pattern at {:#x}", p.base))?;
        }
        check_ram_ranges(&core, m)?;
        check_virtual_addresses(&core, m)?;
        // gdb reads every pattern where the kernel maps it.
        let all: Vec<Pattern> = std::iter::once(run.pattern).chain(patterns.iter().copied()).collect();
        let offset = if m.direct_map { DIRECT_MAP_OFFSET } else { 0 };
        let commands: Vec<String> = all.iter().map(|p| format!("x/2gx {:#x}", p.base + 8 + offset)).collect();
        let out =
            gdb::batch(&ctx.artifacts.test_kernel, &vmcore, &commands.iter().map(|c| c.as_str()).collect::<Vec<_>>())?;
        for p in &all {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{:#x}:", p.base + 8 + offset)))
                .with_context(|| format!("gdb read nothing at {:#x}:\n{out}", p.base + 8 + offset))?;
            let want = format!("{:#018x}\t{:#018x}", p.word(p.base + 8), p.word(p.base + 16));
            ensure!(line.ends_with(&want), "gdb reads {line:?} at {:#x}, the pattern is {want:?}", p.base + 8 + offset);
        }
        check_signature(&common::read_info(&dump)?)?;
        let holes = if m.pci_hole.is_some() { ", both sides of the PCI hole" } else { "" };
        let mapping = if m.direct_map { ", gdb reads the direct map" } else { "" };
        outcome.detail = format!(
            "{} MiB guest: {} patterns bit-exact{holes}{mapping}, RAM ranges only, gdb bt ok",
            m.mib,
            all.len()
        );
        Ok(outcome)
    })
}

/// The vmcore's PT_LOADs are the guest's RAM and nothing else: none in the legacy hole
/// or the PCI hole, the RAM above 4 GiB all there (from 4 GiB to the guest's size), and
/// together the guest's whole memory but for the firmware's small reserved pieces and the
/// kernel's guard pages (at most 4 MiB).
fn check_ram_ranges(core: &Vmcore, m: Memory) -> Result<()> {
    let loads: Vec<_> = core.loads().collect();
    let size = u64::from(m.mib) * MIB;
    let holes: Vec<(&str, (u64, u64))> =
        std::iter::once(("legacy hole", LEGACY_HOLE)).chain(m.pci_hole.map(|h| ("PCI hole", h))).collect();
    for l in &loads {
        let (start, end) = (l.paddr, l.paddr + l.memsz);
        for &(what, (hs, he)) in &holes {
            ensure!(end <= hs || start >= he, "PT_LOAD {start:#x}..{end:#x} reaches into the {what} {hs:#x}..{he:#x}");
        }
    }
    if let Some((hole_start, hole_end)) = m.pci_hole {
        let high: Vec<_> = loads.iter().filter(|l| l.paddr >= hole_end).collect();
        let high_end = hole_end + (size - hole_start);
        ensure!(
            high.len() == 1 && high[0].paddr == hole_end && high[0].paddr + high[0].memsz == high_end,
            "RAM above 4 GiB should be one PT_LOAD {hole_end:#x}..{high_end:#x}, found {high:x?}"
        );
    }
    let total: u64 = loads.iter().map(|l| l.memsz).sum();
    ensure!(
        total <= size && size - total <= 4 * MIB,
        "the vmcore holds {total:#x} bytes of RAM, the guest has {size:#x}"
    );
    Ok(())
}

/// `p_vaddr` follows the kernel's mapping: identity, or with the direct map the
/// higher-half address for RAM outside the kernel image.
fn check_virtual_addresses(core: &Vmcore, m: Memory) -> Result<()> {
    let mut direct = 0;
    for l in core.loads() {
        let identity = l.vaddr == l.paddr;
        let higher_half = l.vaddr == l.paddr.wrapping_add(DIRECT_MAP_OFFSET);
        ensure!(
            identity || (m.direct_map && higher_half),
            "PT_LOAD at physical {:#x} has p_vaddr {:#x}",
            l.paddr,
            l.vaddr
        );
        direct += u64::from(higher_half);
    }
    if m.direct_map {
        ensure!(direct > 0, "no PT_LOAD at a direct-map address");
    }
    Ok(())
}

/// `dedup.signature` is 16 hex digits.
fn check_signature(info: &serde_json::Value) -> Result<()> {
    let sig = info.pointer("/dedup/signature").and_then(|v| v.as_str()).unwrap_or("");
    ensure!(sig.len() == 16 && sig.chars().all(|c| c.is_ascii_hexdigit()), "info.json has no crash signature: {sig:?}");
    Ok(())
}

/// `extra` holds the kernel's task list whole and in order, and info.json counts it.
fn check_extra(dump: &Path, info: &serde_json::Value, seed: u64) -> Result<()> {
    let text = std::fs::read_to_string(dump.join("extra")).context("read extra")?;
    let mut lines = text.lines();
    let head = format!("netdump test kernel: task list at the crash (seed {seed:#x})");
    ensure!(lines.next() == Some(head.as_str()), "extra does not start with {head:?}");
    for pid in 1..=TASKS {
        let line = lines.next().with_context(|| format!("extra ends before task {pid}"))?;
        ensure!(line.starts_with(&format!("task {pid:4} ")), "extra: expected task {pid}, got {line:?}");
    }
    ensure!(lines.next() == Some(format!("{TASKS} tasks").as_str()), "extra lacks its closing count");
    ensure!(lines.next().is_none(), "extra has more than the task list");
    let bytes = info.pointer("/extra_bytes").and_then(|v| v.as_u64());
    ensure!(bytes == Some(text.len() as u64), "info.json extra_bytes {bytes:?}, file {} bytes", text.len());
    Ok(())
}
