//! dtl's task runner: `cargo xtask <task>`. It orchestrates cargo and links none of dtl's
//! machine-learning crates.
//!
//! Tasks:
//! - `ci`: format check, clippy with `-D warnings` on every target, documentation with warnings
//!   denied (broken intra-doc links included), and the whole test suite.
//! - `bench [--torch PYTHON] [--out FILE] [--rounds R] [--steps N]`: the training-step workloads
//!   W1-W4 with dtl's kernels, candle's native ops and (given a Python with PyTorch) PyTorch, each in
//!   its own process, alternating A B C A B C; prints a table and writes JSON. Never fails on speed.
//! - `bench --strategies --peer PYTHON --data-dir DATA [--rounds R] [--out FILE]`: whole epochs of
//!   source-only, dann, dan and adda on MNIST -> USPS, dtl against pytorch-adapt 0.0.83
//!   (`scripts/bench_pytorch_adapt.py`; `scripts/install_bench_peers.sh` makes the environment),
//!   alternated; prints a table and writes JSON with the host and revision.
//! - `fuzz [--cases N] [--readers A,B] [--seed S]`: the structure-aware fuzzing of every reader
//!   (`tests/tests/fuzz.rs`) with N cases per reader in a release build; prints each reader's
//!   counts, its worst allocation against its bound, and its time.
//! - `reproduce-yosinski [--full] [dtl yosinski flags]`: Yosinski et al. 2014's layer-transfer
//!   sweep through `dtl yosinski` in a release build, into `results/yosinski/<preset>-<time>/`
//!   unless `--out` is given. The quick preset (bundled data) is the default.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod strategies;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci     cargo fmt --check, clippy -D warnings (all targets), cargo doc -D warnings, cargo test --workspace
  bench  [--torch PYTHON] [--out FILE] [--rounds R] [--steps N]
         W1-W4 step times and peak RSS: dtl kernels, candle native ops, PyTorch (with --torch)
  bench  --strategies --peer PYTHON --data-dir DATA [--rounds R] [--out FILE]
         epochs of source-only, dann, dan, adda on MNIST -> USPS: dtl against pytorch-adapt 0.0.83
         (PYTHON from scripts/install_bench_peers.sh)
  fuzz   [--cases N] [--readers A,B] [--seed S]
         structure-aware fuzzing of every reader (IDX, gzip/bzip2, LIBSVM, CSV, image files and
         folders, checkpoints, train states, TOML configs, runs.csv, hub cache), N cases each
  reproduce-yosinski [--full] [--out DIR] [dtl yosinski flags]
         the layer-transfer sweep of Yosinski et al. 2014 (quick preset on bundled data by default),
         written to results/yosinski/<preset>-<unix time>/";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") if args.len() == 1 => ci(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("reproduce-yosinski") => reproduce_yosinski(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(_) => bail!("unknown task or arguments `{}`\n\n{USAGE}", args.join(" ")),
        None => bail!("no task given\n\n{USAGE}"),
    }
}

/// The workspace the task runs in: the one `cargo xtask` was called in (`cargo run` sets
/// `CARGO_MANIFEST_DIR` for the process), not the one this binary was compiled from, which
/// differs when a target directory is shared between checkouts and cargo reuses the binary.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
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

/// `cargo xtask fuzz`: the fuzz test in a release build with the campaign's settings.
fn fuzz(args: &[String]) -> Result<()> {
    let mut env: Vec<(&str, String)> = vec![("DTL_FUZZ_CASES", "1000000".into())];
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let key = match flag.as_str() {
            "--cases" => "DTL_FUZZ_CASES",
            "--readers" => "DTL_FUZZ_READERS",
            "--seed" => "DTL_FUZZ_SEED",
            other => bail!("unknown fuzz flag `{other}`\n\n{USAGE}"),
        };
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        env.retain(|(k, _)| *k != key);
        env.push((key, value.clone()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cargo(
        &[
            "test",
            "--release",
            "-p",
            "dtl-e2e",
            "--test",
            "fuzz",
            "--",
            "--nocapture",
        ],
        &env,
    )
}

/// One measurement: median step time (ms) and peak RSS (MB) of one process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ms: f64,
    rss: f64,
}

/// The number `k=..` of a benchmark's `RESULT k=v ..` line.
fn result_field(line: &str, k: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
}

fn parse_result(stdout: &str) -> Option<Sample> {
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT "))?;
    let field = |k: &str| result_field(line, k);
    Some(Sample {
        ms: field("median_ms")?,
        rss: field("rss_mb").unwrap_or(f64::NAN),
    })
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    }
}

fn capture(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The CPU's model name and the checkout's git revision.
fn host_facts(root: &std::path::Path) -> (String, String) {
    let git_rev = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    (cpu, git_rev)
}

fn bench(args: &[String]) -> Result<()> {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    const VALUED: [&str; 6] = ["--torch", "--out", "--rounds", "--steps", "--peer", "--data-dir"];
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && VALUED.contains(&args[i - 1].as_str());
        if !is_value && !VALUED.contains(&a.as_str()) && a != "--strategies" {
            bail!("bench: unknown argument `{a}`\n\n{USAGE}");
        }
    }
    let torch = flag("--torch");
    let out = flag("--out").map(PathBuf::from);
    let rounds: usize = flag("--rounds").map(|r| r.parse()).transpose()?.unwrap_or(2);
    let steps: usize = flag("--steps").map(|r| r.parse()).transpose()?.unwrap_or(10);
    let root = root();
    if args.iter().any(|a| a == "--strategies") {
        let peer = flag("--peer").context(
            "--strategies needs --peer PYTHON (a Python with pytorch-adapt: scripts/install_bench_peers.sh)",
        )?;
        let data_dir = flag("--data-dir").context("--strategies needs --data-dir DATA (MNIST and USPS)")?;
        let (cpu, git_rev) = host_facts(&root);
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let host = serde_json::json!({
            "os": std::env::consts::OS, "arch": std::env::consts::ARCH, "cpu": cpu, "cpus": threads,
            "git_rev": git_rev,
        });
        return strategies::bench_strategies(&root, &peer, &data_dir, rounds.max(1), out, host);
    }
    let dir = root.join("target").join("bench");
    let dir_s = dir.display().to_string();
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let bench_cmd = |extra: &[&str]| {
        let mut c = Command::new(&cargo_bin);
        c.args(["bench", "-q", "-p", "dtl", "--bench", "workloads", "--"])
            .args(extra)
            .current_dir(&root);
        c
    };
    eprintln!("==> building and preparing inputs in {dir_s}");
    capture(&mut bench_cmd(&["prepare", "--dir", &dir_s]), "bench prepare")?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workloads = ["W1", "W2", "W3", "W4"];
    let impls: Vec<&str> = if torch.is_some() {
        vec!["dtl", "candle", "torch"]
    } else {
        vec!["dtl", "candle"]
    };
    let mut samples: std::collections::BTreeMap<(&str, &str), Vec<Sample>> = Default::default();
    let steps_s = steps.to_string();
    for round in 0..rounds {
        for w in workloads {
            for imp in &impls {
                let stdout = if *imp == "torch" {
                    let py = torch.as_deref().expect("torch given");
                    let script = root.join("scripts").join("bench_torch.py");
                    capture(
                        Command::new(py).arg(script).args([
                            "--workload",
                            w,
                            "--dir",
                            &dir_s,
                            "--steps",
                            &steps_s,
                            "--threads",
                            &threads.to_string(),
                        ]),
                        "the PyTorch benchmark",
                    )?
                } else {
                    capture(
                        &mut bench_cmd(&[
                            "run",
                            "--workload",
                            w,
                            "--impl",
                            imp,
                            "--dir",
                            &dir_s,
                            "--steps",
                            &steps_s,
                        ]),
                        "the dtl benchmark",
                    )?
                };
                let s = parse_result(&stdout)
                    .with_context(|| format!("no RESULT line from {imp} {w}:\n{stdout}"))?;
                eprintln!(
                    "round {} {w} {imp}: {:.1} ms, peak RSS {:.0} MB",
                    round + 1,
                    s.ms,
                    s.rss
                );
                samples.entry((w, imp)).or_default().push(s);
            }
        }
    }
    let stat = |w: &str, imp: &str, f: fn(&Sample) -> f64| -> Option<f64> {
        let mut v: Vec<f64> = samples.get(&(w, imp))?.iter().map(f).collect();
        median(&mut v)
    };
    println!(
        "| workload | dtl | candle | torch | dtl / torch | candle / dtl | RSS MB dtl / candle / torch |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for w in workloads {
        let (d, c, t) = (
            stat(w, "dtl", |s| s.ms),
            stat(w, "candle", |s| s.ms),
            stat(w, "torch", |s| s.ms),
        );
        let (dr, cr, tr) = (
            stat(w, "dtl", |s| s.rss),
            stat(w, "candle", |s| s.rss),
            stat(w, "torch", |s| s.rss),
        );
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let unit = if w == "W4" { "ms/batch of 256" } else { "ms/step" };
        println!(
            "| {w} ({unit}) | {} | {} | {} | {} | {} | {} / {} / {} |",
            fmt(d),
            fmt(c),
            fmt(t),
            ratio(d, t),
            ratio(c, d),
            fmt(dr),
            fmt(cr),
            fmt(tr)
        );
        // Every round's time too: on a noisy machine the spread says as much as the median.
        let rounds_ms = |imp: &str| {
            let v: Vec<String> = samples
                .get(&(w, imp))
                .map(|v| v.iter().map(|s| json_num(Some(s.ms))).collect())
                .unwrap_or_default();
            format!("[{}]", v.join(", "))
        };
        let rss = format!(
            "\"dtl_rss_mb\": {}, \"candle_rss_mb\": {}, \"torch_rss_mb\": {}, \"dtl_rounds_ms\": {}, \"candle_rounds_ms\": {}, \"torch_rounds_ms\": {}",
            json_num(dr),
            json_num(cr),
            json_num(tr),
            rounds_ms("dtl"),
            rounds_ms("candle"),
            rounds_ms("torch")
        );
        rows.push(if w == "W4" {
            let ips = |v: Option<f64>| v.map(|ms| 256.0 / (ms / 1e3));
            format!(
                "{{\"name\": \"{w}\", \"dtl_img_s\": {}, \"candle_img_s\": {}, \"torch_img_s\": {}, {rss}}}",
                json_num(ips(d)),
                json_num(ips(c)),
                json_num(ips(t))
            )
        } else {
            format!(
                "{{\"name\": \"{w}\", \"dtl_ms\": {}, \"candle_ms\": {}, \"torch_ms\": {}, {rss}}}",
                json_num(d),
                json_num(c),
                json_num(t)
            )
        });
    }
    let (cpu, git_rev) = host_facts(&root);
    let json = format!(
        "{{\n  \"host\": {{\"os\": \"{}\", \"arch\": \"{}\", \"cpu\": \"{}\", \"cpus\": {threads}}},\n  \"git_rev\": \"{git_rev}\",\n  \"threads\": {threads},\n  \"rounds\": {rounds},\n  \"steps\": {steps},\n  \"workloads\": [\n    {}\n  ]\n}}\n",
        std::env::consts::OS,
        std::env::consts::ARCH,
        cpu.replace('"', "'"),
        rows.join(",\n    ")
    );
    match out {
        Some(p) => {
            std::fs::write(&p, &json).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{json}"),
    }
    Ok(())
}

/// `cargo xtask reproduce-yosinski`: `dtl yosinski` in a release build, with a default output
/// directory under `results/yosinski/`.
fn reproduce_yosinski(args: &[String]) -> Result<()> {
    let mut args: Vec<String> = args.to_vec();
    if !args.iter().any(|a| a == "--out") {
        let preset = if args.iter().any(|a| a == "--full") {
            "full"
        } else {
            "quick"
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let out = root()
            .join("results")
            .join("yosinski")
            .join(format!("{preset}-{stamp}"));
        args.push("--out".into());
        args.push(out.display().to_string());
    }
    let mut cmd: Vec<&str> = vec![
        "run",
        "--release",
        "-q",
        "-p",
        "dtl-cli",
        "--bin",
        "dtl",
        "--",
        "yosinski",
    ];
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd, &[])
}
