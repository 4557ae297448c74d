//! Replays every corpus file and every regression of each fuzz target through it, on
//! stable, in the normal test run; and the seeds the corpora grew from.

use std::path::Path;

fn replay(dir: &Path, target: fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        // A panic names the file, for `cargo fuzz run <target> <file>`.
        eprintln!("replaying {}", f.display());
        target(&data);
    }
    files.len()
}

#[test]
fn every_corpus_file_and_regression_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in netdump_fuzz::TARGETS {
        let corpus = replay(&root.join("corpus").join(name), target);
        let regressions = replay(&root.join("regressions").join(name), target);
        assert!(corpus > 0, "the {name} corpus is empty");
        eprintln!("{name}: {corpus} corpus files and {regressions} regressions replayed");
    }
}

#[test]
fn the_seeds_pass() {
    for (name, target) in netdump_fuzz::TARGETS {
        for (seed, data) in netdump_fuzz::seeds(name) {
            eprintln!("{name}: seed {seed}");
            target(&data);
        }
    }
}
