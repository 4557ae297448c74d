//! Links the conformance kernel as a freestanding ELF with the boot runtime's linker script.

fn main() {
    let script = std::env::var("DEP_NETDUMP_QEMU_RUNTIME_LINK_SCRIPT")
        .expect("netdump-qemu-runtime must be a direct dependency");
    println!("cargo::rerun-if-changed={script}");
    println!("cargo::rustc-link-arg-bins=-T{script}");
    println!("cargo::rustc-link-arg-bins=-nostdlib");
    println!("cargo::rustc-link-arg-bins=-static");
}
