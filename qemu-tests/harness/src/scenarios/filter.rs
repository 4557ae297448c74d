//! Page filtering (issue 15): the test kernel fills its pattern region with the
//! realistic image (`image=realistic`) and dumps with makedumpfile's `-d 31`
//! (`filter=31`). Every kept page must arrive bit for bit, every excluded page must be a
//! hole, and the vmcore's exclusion note and `info.json`'s counts must list exactly the
//! pages the generator classified into an excluded class. `filtered-encrypted-dump`
//! asks for both features at once (the Noise prologue covers the features word).

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::check;
use crate::gdb;
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::{PR_REG_RIP, Vmcore};
use anyhow::{Context, Result, bail, ensure};
use netdump_test_pattern::{Class, Content, PAGE, Realistic};
use std::collections::BTreeMap;

/// makedumpfile's `-d 31`: page cache (both kinds), user and free pages left out.
const DUMP_LEVEL: u32 = 31;
/// Owner and type of netdumpd's exclusion note (netdumpd's README, "Page filtering").
const NOTE_NAME: &str = "NETDUMP";
const NT_NETDUMP_EXCLUDED: u32 = 0x4e44_0003;

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("filtered-dump", nic, |c| filtered_dump(c, 0x5151, false))]
}

/// Filtering with encryption: the features and the handshake are the protocol's, not a
/// NIC's (one NIC).
pub fn single(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("filtered-encrypted-dump", nic, |c| filtered_dump(c, 0x5152, true))]
}

/// The realistic image of the default pattern region.
pub fn image(seed: u64) -> Realistic {
    let p = common::pattern(seed);
    Realistic { base: p.base, len: p.len, seed }
}

/// What the generator says a filtered dump must hold: the excluded pages (pfn → class
/// code) and per class name the page count.
struct Expected {
    excluded: BTreeMap<u64, u32>,
    by_class: BTreeMap<&'static str, u64>,
    kept: u64,
}

fn class_name(class: Class) -> &'static str {
    match class {
        Class::PageCache => "page_cache",
        Class::PageCachePrivate => "page_cache_private",
        Class::User => "user",
        Class::Free => "free",
        Class::KernelCode => "kernel_code",
        Class::KernelData => "kernel_data",
    }
}

fn expected(img: &Realistic, level: u32) -> Expected {
    let mut e = Expected { excluded: BTreeMap::new(), by_class: BTreeMap::new(), kept: 0 };
    for class in [Class::PageCache, Class::PageCachePrivate, Class::User, Class::Free] {
        e.by_class.insert(class_name(class), 0);
    }
    for addr in (img.base..img.base + img.len).step_by(PAGE as usize) {
        let class = img.class(addr);
        if class.excluded_at(level) {
            e.excluded.insert(addr / PAGE, class.dump_level_bit());
            *e.by_class.entry(class_name(class)).or_default() += 1;
        } else if img.content(addr) != Content::Zero {
            e.kept += 1;
        }
    }
    e
}

/// Every page of the image: a kept page holds what the generator writes, an excluded one
/// reads as zero (nothing of its marked contents arrived).
pub fn image_matches(core: &Vmcore, img: &Realistic, level: u32) -> Result<()> {
    let mut got = vec![0u8; PAGE as usize];
    let mut want = [0u8; PAGE as usize];
    for addr in (img.base..img.base + img.len).step_by(PAGE as usize) {
        core.read_phys(addr, &mut got)?;
        let content = img.content(addr);
        if img.class(addr).excluded_at(level) {
            if let Some(i) = got.iter().position(|b| *b != 0) {
                bail!("excluded page {addr:#x} ({content:?}) is not a hole: byte {i} is {:#04x}", got[i]);
            }
            continue;
        }
        img.fill_page(addr, &mut want);
        if let Some(i) = got.iter().zip(want.iter()).position(|(g, w)| g != w) {
            bail!(
                "kept page {addr:#x} ({content:?}) differs at byte {i}: got {:#04x}, expected {:#04x}",
                got[i],
                want[i]
            );
        }
    }
    Ok(())
}

/// The runs of the vmcore's exclusion note, expanded: pfn → class code.
fn note_runs(core: &Vmcore) -> Result<BTreeMap<u64, u32>> {
    let notes: Vec<_> = core.notes.iter().filter(|n| n.name == NOTE_NAME && n.kind == NT_NETDUMP_EXCLUDED).collect();
    ensure!(notes.len() == 1, "expected one exclusion note, found {}", notes.len());
    let d = &notes[0].desc;
    let u32_at = |at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    ensure!(d.len() >= 16, "exclusion note of {} bytes", d.len());
    ensure!(u32_at(0) == 1 && u32_at(4) == PAGE as u32, "exclusion note version/page size {}/{}", u32_at(0), u32_at(4));
    let runs = u64_at(8) as usize;
    ensure!(d.len() == 16 + 24 * runs, "exclusion note of {} bytes for {runs} runs", d.len());
    let mut pages = BTreeMap::new();
    for i in 0..runs {
        let at = 16 + 24 * i;
        let (start, n, class) = (u64_at(at), u64_at(at + 8), u32_at(at + 16));
        for pfn in start..start + n {
            ensure!(pages.insert(pfn, class).is_none(), "pfn {pfn:#x} is in two runs of the note");
        }
    }
    Ok(pages)
}

fn filtered_dump(ctx: &Ctx, seed: u64, encrypted: bool) -> Result<Outcome> {
    let img = image(seed);
    let mut run = KernelRun::new("dump", common::pattern(seed));
    run.extra = format!("image=realistic filter={DUMP_LEVEL}");
    let mut server_args = vec![];
    if encrypted {
        let (key, public) = super::crypto::keygen(ctx, "server.key")?;
        run.extra += &format!(" server_key={public}");
        server_args = super::crypto::server_args(&key);
        server_args.push("--require-encryption".into());
    }
    let srv = common::start_server(ctx, &server_args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the filtered dump should verify")?;
        ensure!(q.serial.contains("netdump: filter -d 31 granted"), "the server did not grant filtering");
        let want = expected(&img, DUMP_LEVEL);
        let excluded_total = want.excluded.len() as u64;
        let line = format!("{excluded_total} pages excluded");
        ensure!(q.serial.contains(&line), "the kernel did not report {line:?}:\n{}", common::tail(&q.serial, 5));

        let dump = common::only_dump(ctx, srv)?;
        let vmcore = dump.join("vmcore");
        ensure!(vmcore.exists(), "no vmcore in {}", dump.display());
        let info = common::read_info(&dump)?;
        check::info_says_complete(&info)?;
        ensure!(info["encrypted"] == encrypted, "info.json says encrypted: {}", info["encrypted"]);
        let core = Vmcore::open(&vmcore)?;
        image_matches(&core, &img, DUMP_LEVEL).context("realistic image check")?;

        let noted = note_runs(&core)?;
        if noted != want.excluded {
            let missing = want.excluded.iter().find(|(p, c)| noted.get(p) != Some(c));
            let extra = noted.iter().find(|(p, c)| want.excluded.get(p) != Some(c));
            bail!("the exclusion note differs from the generator: first missing {missing:?}, first extra {extra:?}");
        }
        let filter = info.pointer("/filter").context("info.json has no filter")?;
        ensure!(filter["excluded_pages"] == excluded_total, "info.json filter.excluded_pages: {filter}");
        for (name, pages) in &want.by_class {
            ensure!(
                filter["pages_by_class"][name] == *pages,
                "info.json filter.pages_by_class.{name} is not {pages}: {filter}"
            );
        }
        let sent = info.pointer("/pages").and_then(|v| v.as_u64()).unwrap_or(0);
        ensure!(sent >= want.kept, "{sent} pages received, fewer than the {} kept pages of the image", want.kept);

        // The excluded pages are holes in the file, as zero pages are.
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&vmcore)?;
            let holes = excluded_total * PAGE;
            ensure!(
                meta.blocks() * 512 + holes <= meta.size(),
                "vmcore allocates {} of {} bytes: the {holes} excluded bytes are not holes",
                meta.blocks() * 512,
                meta.size()
            );
        }
        let regs = core.prstatus_registers();
        ensure!(regs.first().is_some_and(|r| r[PR_REG_RIP] != 0), "no NT_PRSTATUS with a rip");
        let log = std::fs::read_to_string(dump.join("log")).context("read log")?;
        check::log_has(&log, &[&format!("netdump test panic (seed {seed:#x})"), "image: realistic"])?;
        let bt = gdb::backtrace(&ctx.artifacts.test_kernel, &vmcore)?;
        ensure!(bt.contains("netdump_test_crash_site"), "gdb backtrace lacks netdump_test_crash_site:\n{bt}");
        ensure!(!bt.contains("warning:"), "gdb complains about the vmcore:\n{bt}");

        let bytes = info.pointer("/bytes_received").and_then(|v| v.as_u64()).unwrap_or(0);
        let seconds = info.pointer("/duration_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let pages = img.len / PAGE;
        let detail = format!(
            "{}-d {DUMP_LEVEL}: {excluded_total} of {pages} pages excluded ({}), kept pages bit-exact, note and info.json agree, gdb bt ok",
            if encrypted { "encrypted, " } else { "" },
            want.by_class.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        );
        Ok(Outcome { detail, bytes, seconds })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_31_excludes_about_half_of_the_image_and_keeps_the_kernel_pages() {
        let img = image(0x5151);
        let e = expected(&img, 31);
        let pages = img.len / PAGE;
        let excluded = e.excluded.len() as u64;
        assert!(excluded > pages / 3 && excluded < pages * 3 / 4, "{excluded} of {pages}");
        assert!(e.by_class.values().all(|n| *n > 0), "{:?}", e.by_class);
        assert!(e.kept > pages / 3);
        // Level 8 excludes user pages only.
        let user = expected(&img, 8);
        assert_eq!(user.excluded.len() as u64, e.by_class["user"]);
    }
}
