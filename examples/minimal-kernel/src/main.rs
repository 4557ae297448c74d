//! The smallest kernel that uses netdump: what a porter copies.
//!
//! At boot: bring up the NIC from static DMA memory, prepare netdump (nothing on the wire:
//! the kernel's own driver may own the NIC until the crash), keep it in a `CrashCell`. In
//! the panic handler: capture registers, seize the cell and dump — the dump takes the NIC
//! over, resolves the server's MAC, registers (HELLO) and announces the crash. A kernel
//! that wants to know at boot that the server is there calls `Netdump::install` instead
//! (ARP + HELLO at boot; on failure it gets the NIC and buffers back to retry).
//! `cargo xtask demo` boots it in QEMU with `-append server_port=N`.
#![no_std]
#![no_main]

use core::fmt::Write;
use netdump_core::arch::x86_64::{CookieRng, DirectMapMemory, TscClock, capture_registers, read_control_registers};
use netdump_core::client::{ClientName, Config};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::MemoryMap;
use netdump_core::net::{Ipv4Address, NetConfig};
use netdump_core::proto::CLIENT_PORT;
use netdump_core::text::TextBuf;
use netdump_core::{CrashBuffers, CrashCell, CrashInfo, Netdump};
use netdump_e1000::{E1000, MmioRegisters};
use netdump_pci::{DmaRegion, PciDevice, PortConfigSpace};
use netdump_qemu_runtime::{BootInfo, EXIT_FAILURE, EXIT_SUCCESS, println, qemu_exit};
use static_cell::ConstStaticCell;

type Nic = E1000<MmioRegisters, PortConfigSpace>;

// Everything the crash path needs is allocated before any crash, as statics. The crash
// buffers and the NIC's DMA memory are each handed out once, at boot, as `&'static mut`:
// a `ConstStaticCell` is initialised at compile time (in .bss, no copy on the stack) and
// its `take` panics on a second call, so no `static mut` and no unsafe borrow is needed.
static LOG: ConsoleLog<65536> = ConsoleLog::new();
static NETDUMP: CrashCell<Netdump<Nic, TscClock>> = CrashCell::new();
static BUFFERS: ConstStaticCell<CrashBuffers<64>> = ConstStaticCell::new(CrashBuffers::new());
// The e1000's rings and buffers need `netdump_e1000::DMA_ALIGN` (128 bytes), not a page:
// a page-aligned cell would pad its one-byte "taken" flag out to a whole page.
#[repr(C, align(128))]
struct Dma([u8; Nic::DMA_SIZE]);
const _: () = assert!(core::mem::align_of::<Dma>() >= netdump_e1000::DMA_ALIGN);
static DMA: ConstStaticCell<Dma> = ConstStaticCell::new(Dma([0; Nic::DMA_SIZE]));

netdump_qemu_runtime::entry!(kernel_main);

fn kernel_main(boot: &'static BootInfo) -> ! {
    netdump_qemu_runtime::set_console_tee(|bytes| LOG.write(bytes));
    println!("example kernel: preparing netdump");
    match install(boot) {
        Ok(()) => println!("netdump prepared (nothing sent yet); now crashing on purpose"),
        Err(e) => {
            println!("netdump prepare failed: {e}");
            qemu_exit(EXIT_FAILURE)
        }
    }
    do_something_wrong();
}

fn install(boot: &'static BootInfo) -> Result<(), &'static str> {
    // 1. The NIC: find it on PCI, map BAR0 (identity-mapped here), hand it DMA memory.
    // SAFETY: single CPU at boot; nothing else uses the PCI configuration ports.
    let mut config = unsafe { PortConfigSpace::new() };
    let function = netdump_e1000::find(&mut config).ok_or("no e1000")?;
    let mut pci = PciDevice::new(config, function.address);
    let bar0 = pci.bar(0).ok().flatten().and_then(|b| b.memory_address()).ok_or("no BAR0")?;
    // SAFETY: BAR0 is identity-mapped by the runtime and used by this driver only.
    let regs = unsafe { MmioRegisters::new(core::ptr::NonNull::new(bar0 as *mut u8).ok_or("BAR0 is 0")?) };
    let dma = core::ptr::NonNull::from(&mut DMA.take().0).cast::<u8>();
    // SAFETY: `take` hands the memory out once, so this driver is its only user from now
    // on (the `'static` borrow is never used again); physical == virtual in this kernel.
    let dma = unsafe { DmaRegion::new(dma, dma.as_ptr() as u64, Nic::DMA_SIZE) };
    let nic = Nic::new(regs, pci, dma).map_err(|_| "e1000 init failed")?;

    // 2. What to dump: the RAM the kernel can read, identity-mapped (virt == phys).
    let map =
        MemoryMap::from_ram_regions(boot.mapped_ram().map(|r| (r.start, r.len())), |p| p).map_err(|_| "memory map")?;

    // 3. Where to dump: QEMU's user network puts the host at 10.0.2.2.
    let port = boot.args().get_u64("server_port").unwrap_or(6666) as u16;
    let net = NetConfig {
        ip: Ipv4Address::new(10, 0, 2, 15),
        prefix_len: 24,
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        server_ip: Ipv4Address::new(10, 0, 2, 2),
        server_port: port,
        client_port: CLIENT_PORT,
    };
    // The default window and timeouts; plaintext (with netdump-core's `encryption`
    // feature, `server_key: Some(key)` encrypts every packet).
    let config = Config::new(net, ClientName::new("example").ok_or("name")?);
    let mut rng = CookieRng::new(0);
    // `prepare` sends nothing: the server is contacted at the crash, within the ARP and
    // HELLO bounds of `config.timeouts`. It fails only without entropy for the cookie.
    let netdump = Netdump::prepare(nic, TscClock::calibrate(), &mut rng, config, BUFFERS.take(), map)
        .map_err(|_| "no entropy for the cookie")?;
    NETDUMP.install(netdump).map_err(|_| "installed twice")
}

#[inline(never)]
fn do_something_wrong() -> ! {
    let answer: Option<u32> = None;
    panic!("the example kernel expected an answer, got {answer:?}");
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Registers first, before anything else changes them.
    let mut regs = capture_registers(0);
    // SAFETY: ring 0.
    unsafe { read_control_registers(&mut regs) };
    netdump_qemu_runtime::console::enter_crash_mode();
    println!("panic: {info}");
    // Seize never waits; a second panic (inside the dump) gets an error and stops here.
    let Ok(netdump) = NETDUMP.seize() else { qemu_exit(EXIT_FAILURE) };
    let mut message = TextBuf::<256>::new();
    let _ = write!(message, "{}", info.message());
    let crash = CrashInfo::panic(0, message.as_bytes(), &[]);
    // SAFETY: all RAM in the memory map is identity-mapped.
    let memory = unsafe { DirectMapMemory::new(0) };
    match netdump.dump(&crash, &[regs], &memory, Some(&LOG)) {
        Ok(r) => {
            println!("netdump: dump verified ({} bytes in {} ms)", r.bytes, r.elapsed_us / 1000);
            qemu_exit(EXIT_SUCCESS)
        }
        Err(e) => {
            println!("netdump: dump failed: {e}");
            qemu_exit(EXIT_FAILURE)
        }
    }
}
