//! The x86_64 boot runtime shared by netdump's QEMU test kernels and the example kernel.
//!
//! A kernel built on it is a `#![no_std] #![no_main]` binary for the host target, linked
//! with this crate's `link.ld` and booted by QEMU's PVH loader (`-kernel kernel.elf`).
//! The runtime takes the CPU from the 32-bit PVH entry to 64-bit Rust with an identity
//! map of the first 4 GiB, SSE enabled, a guarded stack, a GDT/TSS and an IDT whose
//! exception handlers run on their own stacks, then calls the kernel's entry function
//! (see [`entry!`]) with a [`BootInfo`]. The kernel may then start the other CPUs the
//! ACPI MADT lists and register a returnable NMI handler ([`smp`]).
//!
//! See `README.md` next to this crate for what a kernel's `build.rs` and `main.rs` need.
#![no_std]

mod boot_info;
mod cmdline;
pub mod console;
mod exit;
mod gdt;
mod idt;
mod mem;
mod paging;
mod pvh;
mod serial;
pub mod smp;
mod stacks;

pub use boot_info::{
    BootInfo, DIRECT_MAP_OFFSET, HIGH_MAP_LIMIT, IDENTITY_MAP_END, MappedRam, MemoryKind, MemoryRegion, PhysRange,
};
pub use cmdline::Cmdline;
pub use console::set_console_tee;
pub use exit::{EXIT_FAILURE, EXIT_SUCCESS, halt_forever, qemu_exit, qemu_exit_status};
pub use idt::{ExceptionFrame, deliver_page_faults_on_the_interrupted_stack, set_exception_handler};

/// Reports a panic on the console and exits QEMU with [`EXIT_FAILURE`].
///
/// A kernel without its own crash path calls this from its `#[panic_handler]`.
pub fn default_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::enter_crash_mode();
    println!("\npanic: {info}");
    qemu_exit(EXIT_FAILURE)
}

/// Declares the kernel's entry function: `fn(&'static BootInfo) -> !`.
///
/// ```ignore
/// netdump_qemu_runtime::entry!(kernel_main);
///
/// fn kernel_main(boot: &'static netdump_qemu_runtime::BootInfo) -> ! { … }
/// ```
///
/// The macro exports the function under the symbol the runtime calls once the CPU is in
/// long mode; a kernel that forgets it fails to link with an undefined
/// `__netdump_qemu_runtime_kernel_main`.
#[macro_export]
macro_rules! entry {
    ($path:path) => {
        #[unsafe(export_name = "__netdump_qemu_runtime_kernel_main")]
        fn __netdump_qemu_runtime_kernel_main(boot: &'static $crate::BootInfo) -> ! {
            let kernel_main: fn(&'static $crate::BootInfo) -> ! = $path;
            kernel_main(boot)
        }
    };
}

/// Interior mutability for the runtime's statics (page tables, GDTs, TSSs, stacks, the
/// CPU list, the boot information).
///
/// Each one is written by the boot CPU only, while no other CPU can observe it:
/// - most during boot, before the kernel's entry function runs and so before any AP can
///   be started; afterwards they are read-only or owned by the hardware;
/// - an AP's own GDT and TSS (per-CPU entries of a static array) by the boot CPU in
///   [`smp::start_aps`], while that AP is held in INIT or waiting for its start-up IPI,
///   before the IPI that starts it (a fence before that IPI's MMIO write orders the
///   writes before it, and the AP reads nothing before it starts); afterwards read by
///   that AP alone (and written by its hardware: the TSS busy bit);
/// - one exception: [`deliver_page_faults_on_the_interrupted_stack`] rewrites an IDT
///   entry other CPUs' hardware may be reading (see there why that is harmless).
///
/// The stacks' bytes are only ever touched by the CPU running on them. Every access
/// states its case in a `SAFETY:` comment.
#[repr(transparent)]
pub(crate) struct BootCell<T>(core::cell::UnsafeCell<T>);

// SAFETY: every `BootCell` is written only by the boot CPU while no other CPU can access
// it (during boot, before the kernel and so any AP runs; or, for an AP's own entries,
// before that AP is started), and only read afterwards; see the type's docs.
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        BootCell(core::cell::UnsafeCell::new(value))
    }

    pub(crate) const fn get(&self) -> *mut T {
        self.0.get()
    }
}
