//! The stable-toolchain `main` of every target: run inputs through the target's
//! function without libFuzzer, to reproduce a crash (`cargo run --bin <target> --
//! artifacts/<target>/crash-…`) or to smoke-test the corpus in CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run the files named on the command line (directories are expanded one level),
/// or with no arguments `corpus/<target>/` plus the built-in seeds.
/// `--write-seeds` writes the seeds into `corpus/<target>/` instead.
pub fn main(target: &str, run: fn(&[u8]), seeds: fn() -> Vec<Vec<u8>>) -> ExitCode {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--write-seeds") {
        return write_seeds(&corpus, seeds());
    }
    let roots: Vec<PathBuf> = if args.is_empty() {
        for seed in seeds() {
            run(&seed);
        }
        if corpus.is_dir() {
            vec![corpus]
        } else {
            Vec::new()
        }
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let mut count = 0usize;
    for root in roots {
        let files = match expand(&root) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("{target}: cannot read {}: {e}", root.display());
                return ExitCode::FAILURE;
            }
        };
        for file in files {
            match std::fs::read(&file) {
                Ok(data) => run(&data),
                Err(e) => {
                    eprintln!("{target}: cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            }
            count += 1;
        }
    }
    println!("{target}: {count} inputs ran clean");
    ExitCode::SUCCESS
}

fn expand(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn write_seeds(corpus: &Path, seeds: Vec<Vec<u8>>) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(corpus) {
        eprintln!("cannot create {}: {e}", corpus.display());
        return ExitCode::FAILURE;
    }
    for (i, seed) in seeds.iter().enumerate() {
        let path = corpus.join(format!("seed-{i:02}"));
        if let Err(e) = std::fs::write(&path, seed) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("wrote {} seeds to {}", seeds.len(), corpus.display());
    ExitCode::SUCCESS
}
