//! `cargo xtask bench --strategies`: whole epochs of source-only, dann, dan (MK-MMD) and adda on
//! MNIST -> USPS (LeNet, batch 128), dtl's release binary against pytorch-adapt 0.0.83 on PyTorch
//! (`scripts/bench_pytorch_adapt.py`, installed by `scripts/install_bench_peers.sh`), alternated
//! in one run: for each round, each strategy, dtl then the peer, with the same seed and the same
//! number of iterations (dtl's steps per epoch). Each side reports the seconds of its timed
//! epoch's training steps and the target test accuracy after it (last epoch, no selection).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The strategies compared, with the `dtl train` flags that match the peer script's setting and
/// which epoch (0-based) is timed.
const STRATEGIES: [(&str, &[&str], usize); 4] = [
    ("source-only", &["--epochs", "1"], 0),
    ("dann", &["--epochs", "1"], 0),
    ("dan", &["--epochs", "1"], 0),
    // One epoch of source training, then the timed adversarial epoch (as the peer script).
    ("adda", &["--epochs", "2", "--source-epochs", "1"], 1),
];

/// One side's measurement of one strategy in one round.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    accuracy: f64,
}

fn run_dtl(
    dtl: &Path,
    data_dir: &str,
    out: &Path,
    strategy: &str,
    flags: &[&str],
    timed: usize,
) -> Result<(Sample, usize)> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    let status = Command::new(dtl)
        .args([
            "train",
            "--source",
            "mnist",
            "--target",
            "usps",
            "--strategy",
            strategy,
        ])
        .args(["--batch-size", "128", "--seed", "0", "--data-dir", data_dir])
        .args(flags)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("starting {}", dtl.display()))?;
    if !status.success() {
        bail!("dtl train --strategy {strategy} failed ({status}); run it by hand to see why");
    }
    let file = out.join("metrics.json");
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?,
    )
    .with_context(|| format!("parsing {}", file.display()))?;
    let num = |v: &Value, what: &str| {
        v.as_f64()
            .with_context(|| format!("{}: no `{what}`", file.display()))
    };
    let seconds = num(&m["history"][timed]["seconds"], "history[..].seconds")?;
    let accuracy = num(&m["target_test"]["accuracy"], "target_test.accuracy")?;
    let steps = num(&m["steps"], "steps")? as usize;
    let epochs = num(&m["epochs"], "epochs")? as usize;
    Ok((Sample { seconds, accuracy }, steps / epochs.max(1)))
}

fn run_peer(
    python: &str,
    script: &Path,
    data: &Path,
    strategy: &str,
    iters: usize,
    threads: usize,
) -> Result<Sample> {
    let out = Command::new(python)
        .arg(script)
        .args(["--strategy", strategy, "--seed", "0", "--batch", "128"])
        .arg("--data")
        .arg(data)
        .args(["--iters", &iters.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("starting {python}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT "));
    match (out.status.success(), line) {
        (true, Some(line)) => Ok(Sample {
            seconds: crate::result_field(line, "epoch_s").context("no epoch_s in the peer's RESULT line")?,
            accuracy: crate::result_field(line, "acc").context("no acc in the peer's RESULT line")?,
        }),
        _ => bail!(
            "the pytorch-adapt benchmark ({strategy}) failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs the comparison; `host` is the JSON object describing the machine and revision.
pub fn bench_strategies(
    root: &Path,
    python: &str,
    data_dir: &str,
    rounds: usize,
    out: Option<PathBuf>,
    host: Value,
) -> Result<()> {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = root.join("target").join("bench");
    eprintln!(
        "==> building dtl (release) and writing MNIST -> USPS for the peer into {}",
        dir.display()
    );
    let status = Command::new(&cargo_bin)
        .args(["build", "-q", "--release", "-p", "dtl-cli", "--bin", "dtl"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building dtl failed ({status})");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dtl = target_dir.join("release").join("dtl");
    let status = Command::new(&cargo_bin)
        .args([
            "bench",
            "-q",
            "-p",
            "dtl",
            "--bench",
            "workloads",
            "--",
            "prepare-digits",
        ])
        .args(["--data-dir", data_dir, "--dir"])
        .arg(&dir)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("writing the digits for the peer failed ({status})");
    }
    let data = dir.join("digits.safetensors");
    let script = root.join("scripts").join("bench_pytorch_adapt.py");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut dtl_s: Vec<Vec<Sample>> = vec![Vec::new(); STRATEGIES.len()];
    let mut peer_s: Vec<Vec<Sample>> = vec![Vec::new(); STRATEGIES.len()];
    let mut iters = vec![0usize; STRATEGIES.len()];
    for round in 0..rounds {
        for (i, (name, flags, timed)) in STRATEGIES.iter().enumerate() {
            let run_dir = dir.join("strategies").join(name);
            let (d, steps) = run_dtl(&dtl, data_dir, &run_dir, name, flags, *timed)?;
            eprintln!(
                "round {} {name} dtl: {:.1} s/epoch ({steps} steps), target accuracy {:.4}",
                round + 1,
                d.seconds,
                d.accuracy
            );
            let p = run_peer(python, &script, &data, name, steps, threads)?;
            eprintln!(
                "round {} {name} pytorch-adapt: {:.1} s/epoch, target accuracy {:.4}",
                round + 1,
                p.seconds,
                p.accuracy
            );
            dtl_s[i].push(d);
            peer_s[i].push(p);
            iters[i] = steps;
        }
    }
    println!("| strategy | iterations | dtl s/epoch | pytorch-adapt s/epoch | dtl / pytorch-adapt | target accuracy dtl / pytorch-adapt (last epoch, round 1) |");
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (i, (name, _, _)) in STRATEGIES.iter().enumerate() {
        let d =
            crate::median(&mut dtl_s[i].iter().map(|s| s.seconds).collect::<Vec<_>>()).expect("rounds >= 1");
        let p =
            crate::median(&mut peer_s[i].iter().map(|s| s.seconds).collect::<Vec<_>>()).expect("rounds >= 1");
        println!(
            "| {name} | {} | {d:.1} | {p:.1} | {:.2} | {:.4} / {:.4} |",
            iters[i],
            d / p,
            dtl_s[i][0].accuracy,
            peer_s[i][0].accuracy
        );
        rows.push(json!({
            "strategy": name,
            "iterations": iters[i],
            "dtl_seconds": dtl_s[i].iter().map(|s| s.seconds).collect::<Vec<_>>(),
            "peer_seconds": peer_s[i].iter().map(|s| s.seconds).collect::<Vec<_>>(),
            "dtl_accuracy": dtl_s[i].iter().map(|s| s.accuracy).collect::<Vec<_>>(),
            "peer_accuracy": peer_s[i].iter().map(|s| s.accuracy).collect::<Vec<_>>(),
            "dtl_median_seconds": d,
            "peer_median_seconds": p,
        }));
    }
    let report = json!({
        "host": host,
        "peer": "pytorch-adapt 0.0.83 (scripts/bench_pytorch_adapt.py)",
        "task": "MNIST -> USPS, LeNet, batch 128, seed 0; seconds of one epoch's training steps; target test accuracy after it",
        "rounds": rounds,
        "threads": threads,
        "strategies": rows,
    });
    let text = serde_json::to_string_pretty(&report)? + "\n";
    match out {
        Some(p) => {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
