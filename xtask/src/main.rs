//! dtl's task runner: `cargo xtask <task>`. It orchestrates cargo and links none of dtl's
//! machine-learning crates.
//!
//! Tasks:
//! - `ci`: format check, clippy with `-D warnings` on every target, documentation with warnings
//!   denied (broken intra-doc links included), and the whole test suite.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci    cargo fmt --check, clippy -D warnings (all targets), cargo doc -D warnings, cargo test --workspace";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") if args.len() == 1 => ci(),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(_) => bail!("unknown task or arguments `{}`\n\n{USAGE}", args.join(" ")),
        None => bail!("no task given\n\n{USAGE}"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Runs `cargo args...` in the workspace root, failing with the command line when it fails.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let line = format!("cargo {}", args.join(" "));
    eprintln!("==> {line}");
    let started = Instant::now();
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("starting `{line}`"))?;
    eprintln!(
        "<== {line}: {} in {:.0} s",
        status,
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    eprintln!("ci: all checks passed");
    Ok(())
}
