//! Publishes the linker script's path to the kernels that depend on this crate.
//!
//! Cargo passes `cargo::metadata=link_script=…` to the build script of every direct
//! dependent as the environment variable `DEP_NETDUMP_QEMU_RUNTIME_LINK_SCRIPT`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = dir.join("link.ld");
    println!("cargo::metadata=link_script={}", script.display());
    println!("cargo::rerun-if-changed=link.ld");
    println!("cargo::rerun-if-changed=build.rs");
}
