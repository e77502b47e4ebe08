//! `pvusb generate`: man pages and shell completions from the clap
//! definitions, written at package build time (`packaging/build-deb.sh`) so
//! that they always match the binary they ship with. Hidden from `--help`.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueEnum};
use pvusb_support::Chain;

/// What to write.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum What {
    /// `pvusb.8` and one `pvusb-<subcommand>.8` per subcommand.
    Man,
    /// bash, zsh and fish completions (`pvusb.bash`, `_pvusb`, `pvusb.fish`).
    Completions,
}

/// Arguments of `pvusb generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to write.
    what: What,
    /// Directory to write into (created if missing).
    out: PathBuf,
}

/// Writes the requested files; prints each path.
pub fn run(args: Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display(), e = Chain(&e)))?;
    let cmd = crate::Cli::command();
    match args.what {
        What::Man => man_pages(cmd, &args.out),
        What::Completions => completions(cmd, &args.out),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display(), e = Chain(&e)))?;
    println!("{}", path.display());
    Ok(())
}

fn man_pages(cmd: clap::Command, out: &Path) -> Result<(), String> {
    let render = |c: clap::Command, name: &str| -> Result<(), String> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .section("8")
            .render(&mut buf)
            .map_err(|e| format!("cannot render the {name} man page: {e}", e = Chain(&e)))?;
        write(&out.join(format!("{name}.8")), &buf)
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The page of `pvusb ctrl-attach` is pvusb-ctrl-attach(8), its
        // usage line names the full command.
        let name = format!("pvusb-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("pvusb {}", sub.get_name()));
        render(page, &name)?;
    }
    render(cmd, "pvusb")
}

fn completions(mut cmd: clap::Command, out: &Path) -> Result<(), String> {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "pvusb.bash"),
        (Shell::Zsh, "_pvusb"),
        (Shell::Fish, "pvusb.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "pvusb", &mut buf);
        write(&out.join(file), &buf)?;
    }
    Ok(())
}
