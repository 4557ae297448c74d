//! Writes each fuzz target's seeds into `corpus/<target>/seed-<name>` (run once, then let
//! the fuzzer grow the corpora): `cargo run -p netdump-fuzz --bin write-seed-corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in netdump_fuzz::TARGETS {
        let dir = root.join("corpus").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut written = 0;
        for (seed, data) in netdump_fuzz::seeds(name) {
            std::fs::write(dir.join(format!("seed-{seed}")), data)?;
            written += 1;
        }
        println!("{name}: {written} seeds in {}", dir.display());
    }
    Ok(())
}
