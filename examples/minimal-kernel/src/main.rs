//! The smallest kernel on the netdump boot runtime: boots under QEMU (PVH), prints its
//! command line and memory map, and exits QEMU with success.
#![no_std]
#![no_main]

use netdump_qemu_runtime::{BootInfo, EXIT_SUCCESS, println, qemu_exit};

netdump_qemu_runtime::entry!(kernel_main);

fn kernel_main(boot: &'static BootInfo) -> ! {
    println!("netdump example kernel");
    println!("command line: {:?}", boot.cmdline);
    println!("memory map:");
    for region in boot.memory_map {
        println!("  {region}");
    }
    println!("kernel image: {}", boot.kernel_image);
    qemu_exit(EXIT_SUCCESS)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    netdump_qemu_runtime::default_panic(info)
}
