//! Training-step benchmarks W1-W4 (run by `cargo xtask bench`, which alternates implementations in
//! separate processes and compares with PyTorch through `scripts/bench_torch.py`).
//!
//! ```text
//! cargo bench -p dtl --bench workloads -- prepare --dir DIR [--workloads W1,W2,W3,W4|R18T,R18E]
//! cargo bench -p dtl --bench workloads -- run --workload W1 --impl dtl|candle --dir DIR [--steps N] [--warmup N] [--device cpu|cuda[:N]]
//! cargo bench -p dtl --bench workloads -- prepare-digits --data-dir DATA --dir DIR
//! ```
//!
//! - W1: LeNet-style (conv 32 5x5, pool, conv 64 5x5, pool, fc 500, fc 10) on 1x28x28, batch 128,
//!   one SGD-with-momentum training step.
//! - W2: W1 plus a 5-bandwidth Gaussian MMD^2 between the 500-d features of a source and a target
//!   batch (two forward passes); dtl's implementation computes it with `dtl_losses::mmd2`, candle's
//!   native one with the tensor ops of [`mmd2`] here.
//! - W3: ResNet-18 topology at widths 16/32/64/128 on 3x32x32, batch 64, batch norm in training mode.
//! - W4: W3 in evaluation mode, batch 256 (throughput).
//! - R18T / R18E: torchvision's ResNet-18 (widths 64-512) on 3x224x224, batch 32, one training
//!   step / evaluation-mode forward pass (ImageNet-scale throughput; not part of `cargo xtask bench`'s
//!   default set, run them by name).
//!
//! `prepare-digits` writes `DIR/digits.safetensors`: MNIST's training split (`source.x`, `source.y`),
//! USPS's training images (`target.x`) and test split (`test.x`, `test.y`) exactly as `dtl train
//! --source mnist --target usps` loads them (28x28, USPS filling the canvas), for the peer library's
//! side of `cargo xtask bench --strategies` (`scripts/bench_pytorch_adapt.py`).
//!
//! `prepare` writes one safetensors file per workload with the initial weights and the batches, so
//! that every implementation starts from the same numbers. `run` prints one line
//! `RESULT workload=W1 impl=dtl median_ms=.. rss_mb=.. loss0=.. loss_last=..`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use dtl::backbones::init::{uniform_param, Param};
use dtl::backbones::{Kernels, LeNet, LeNetConfig, ResNet, ResNetConfig};
use dtl::core::{params, Backbone};
use dtl::strategies::{Optimizer, OptimizerKind, ParamGroup};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The same allocator as the `dtl` binary (see `src/main.rs`), with the same settings (`main`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Model {
    backbone: Box<dyn Backbone>,
    head: Param,
    vm: VarMap,
}

fn build(workload: &str, kernels: Kernels, dev: &Device) -> Result<Model> {
    let vm = VarMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let dev = dev.clone();
    let backbone: Box<dyn Backbone> = match workload {
        "W1" | "W2" => Box::new(LeNet::new(
            LeNetConfig {
                conv1: 32,
                conv2: 64,
                fc: 500,
                dropout: 0.0,
                kernels,
                ..Default::default()
            },
            &vm,
            &mut rng,
            0,
            &dev,
        )?),
        "W3" | "W4" => {
            let mut cfg = ResNetConfig::resnet18([16, 32, 64, 128], 3, 32);
            cfg.kernels = kernels;
            Box::new(ResNet::new(cfg, &vm, &mut rng, &dev)?)
        }
        "R18T" | "R18E" => {
            let mut cfg = ResNetConfig::torchvision(18, 3, 224)?;
            cfg.kernels = kernels;
            Box::new(ResNet::new(cfg, &vm, &mut rng, &dev)?)
        }
        other => bail!("unknown workload `{other}` (W1, W2, W3, W4, R18T, R18E)"),
    };
    let head = uniform_param(&vm, "head", &[10, backbone.feature_dim()], &mut rng, &dev)?;
    Ok(Model { backbone, head, vm })
}

fn batch(workload: &str) -> (usize, (usize, usize, usize)) {
    match workload {
        "W1" | "W2" => (128, (1, 28, 28)),
        "W3" => (64, (3, 32, 32)),
        "R18T" | "R18E" => (32, (3, 224, 224)),
        _ => (256, (3, 32, 32)),
    }
}

fn prepare(dir: &Path, workloads: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &w in workloads {
        let model = build(w, Kernels::Dtl, &Device::Cpu)?;
        let mut tensors: HashMap<String, Tensor> = params::snapshot(&model.vm)?.into_iter().collect();
        let (b, (c, h, wd)) = batch(w);
        let mut images = |n: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..n * c * h * wd).map(|_| rng.random::<f32>()).collect();
            Ok(Tensor::from_vec(v, (n, c, h, wd), &Device::Cpu)?)
        };
        tensors.insert("input.x".into(), images(b)?);
        if w == "W2" {
            tensors.insert("input.xt".into(), (images(b)? * 0.5)?);
        }
        let y: Vec<i64> = (0..b).map(|_| rng.random_range(0..10)).collect();
        tensors.insert("input.y".into(), Tensor::from_vec(y, b, &Device::Cpu)?);
        candle_core::safetensors::save(&tensors, dir.join(format!("{w}.safetensors")))?;
    }
    println!("prepared {}", dir.display());
    Ok(())
}

/// Biased MMD^2 with a sum of Gaussian kernels at 5 bandwidths around the mean pairwise squared
/// distance (multipliers 1/4 .. 4, the bandwidth itself detached), as DAN (Long et al. 2015) uses.
fn mmd2(xs: &Tensor, xt: &Tensor) -> candle_core::Result<Tensor> {
    let n = xs.dim(0)?;
    let z = Tensor::cat(&[xs, xt], 0)?;
    let sq = z.sqr()?.sum_keepdim(1)?;
    let d2 = (sq.broadcast_add(&sq.t()?)? - (z.matmul(&z.t()?)? * 2.0)?)?.relu()?;
    let m = 2 * n;
    let base = (d2.detach().sum_all()? / ((m * m - m) as f64))?;
    let mut k: Option<Tensor> = None;
    for mult in [0.25, 0.5, 1.0, 2.0, 4.0] {
        let bw = (&base * (2.0 * mult))?;
        let e = d2.broadcast_div(&bw)?.neg()?.exp()?;
        k = Some(match k {
            None => e,
            Some(acc) => (acc + e)?,
        });
    }
    let k = k.expect("five bandwidths");
    let kss = k.narrow(0, 0, n)?.narrow(1, 0, n)?.mean_all()?;
    let ktt = k.narrow(0, n, n)?.narrow(1, n, n)?.mean_all()?;
    let kst = k.narrow(0, 0, n)?.narrow(1, n, n)?.mean_all()?;
    (kss + ktt)? - (kst * 2.0)?
}

/// MNIST -> USPS as `dtl train` loads it by default, into `dir/digits.safetensors`.
fn prepare_digits(data_dir: &Path, dir: &Path) -> Result<()> {
    use dtl::data::{catalog::DomainId, DataDir, Domain, LoadOptions};
    let data = DataDir::resolve(Some(data_dir))?;
    let opts = LoadOptions::default();
    let mnist = Domain::load(DomainId::Mnist, Some(&data), &opts)?;
    let usps = Domain::load(DomainId::Usps, Some(&data), &opts)?;
    let images = |d: &dtl::data::Dataset| -> Result<Tensor> {
        let (c, h, w) = d.image_shape();
        Ok(Tensor::from_slice(d.pixels(), (d.len(), c, h, w), &Device::Cpu)?)
    };
    let labels = |d: &dtl::data::Dataset| -> Result<Tensor> {
        let y: Vec<i64> = d.labels().iter().map(|&l| l as i64).collect();
        Ok(Tensor::from_vec(y, d.len(), &Device::Cpu)?)
    };
    let tensors: HashMap<String, Tensor> = [
        ("source.x", images(&mnist.train)?),
        ("source.y", labels(&mnist.train)?),
        ("target.x", images(&usps.train)?),
        ("test.x", images(&usps.test)?),
        ("test.y", labels(&usps.test)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    std::fs::create_dir_all(dir)?;
    let file = dir.join("digits.safetensors");
    candle_core::safetensors::save(&tensors, &file)?;
    println!("prepared {}", file.display());
    Ok(())
}

/// [`mmd2`]'s kernel as `dtl_losses` spells it: weight 1 at each of the 5 multipliers of the
/// mean pairwise squared distance.
fn dan_kernel() -> dtl::losses::MmdKernel {
    let mults = vec![0.25, 0.5, 1.0, 2.0, 4.0];
    dtl::losses::MmdKernel::Gaussian {
        weights: Some(vec![1.0; mults.len()]),
        bandwidths: dtl::losses::Bandwidths::Mean(mults),
    }
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run(
    workload: &str,
    kernels: Kernels,
    dir: &Path,
    steps: usize,
    warmup: usize,
    dev: &Device,
) -> Result<()> {
    let file = dir.join(format!("{workload}.safetensors"));
    let mut tensors = candle_core::safetensors::load(&file, dev)
        .with_context(|| format!("{} (run `prepare` first)", file.display()))?;
    let x = tensors.remove("input.x").context("input.x")?;
    let y = tensors
        .remove("input.y")
        .context("input.y")?
        .to_dtype(DType::U32)?;
    let xt = tensors.remove("input.xt");
    let model = build(workload, kernels, dev)?;
    for (name, var) in params::all(&model.vm) {
        let t = tensors
            .get(&name)
            .with_context(|| format!("{}: no tensor `{name}`", file.display()))?;
        var.set(t)?;
    }
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let eval = workload == "W4" || workload == "R18E";
    if eval {
        for i in 0..warmup + steps {
            let t0 = Instant::now();
            let logits = model.head.linear(&model.backbone.features(&x, false)?)?.detach();
            let _ = logits.sum_all()?.to_scalar::<f32>()?;
            dev.synchronize()?;
            if i >= warmup {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    } else {
        let group = ParamGroup::new(params::trainable(&model.vm));
        let mut opt = Optimizer::new(
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.01,
            0.0,
            vec![group],
        )?;
        for i in 0..warmup + steps {
            let t0 = Instant::now();
            let fs = model.backbone.features(&x, true)?;
            let logits = model.head.linear(&fs)?;
            let mut loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            if let Some(xt) = &xt {
                let ft = model.backbone.features(xt, true)?;
                let mmd = match kernels {
                    // dtl's own estimate (`dtl_losses::mmd2`, the same definition).
                    Kernels::Dtl => {
                        dtl::losses::mmd2(&fs, &ft, &dan_kernel(), dtl::losses::Estimator::Biased)?
                    }
                    Kernels::Candle => mmd2(&fs, &ft)?,
                };
                loss = (loss + mmd)?;
            }
            losses.push(loss.to_scalar::<f32>()?);
            opt.backward_step(&loss)?;
            dev.synchronize()?;
            if i >= warmup {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("finite times"));
    let median = sorted[sorted.len() / 2];
    let imp = match kernels {
        Kernels::Dtl => "dtl",
        Kernels::Candle => "candle",
    };
    println!(
        "RESULT workload={workload} impl={imp} median_ms={median:.2} img_s={:.1} rss_mb={:.1} loss0={} loss_last={}",
        x.dim(0)? as f64 / (median / 1e3),
        peak_rss_mb().unwrap_or(f64::NAN),
        losses.first().map_or(f32::NAN, |v| *v),
        losses.last().map_or(f32::NAN, |v| *v),
    );
    Ok(())
}

fn main() -> Result<()> {
    // The allocator's settings as the `dtl` binary has them, for every implementation.
    dtl::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // `cargo bench` runs this in the package's folder: the default is the workspace's target/bench.
    let dir = flag("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"));
    match args.first().map(String::as_str) {
        Some("prepare") => {
            // `--workloads R18T,R18E` prepares those; default W1-W4.
            let list = flag("--workloads").unwrap_or_else(|| "W1,W2,W3,W4".into());
            prepare(&dir, &list.split(',').collect::<Vec<_>>())
        }
        Some("prepare-digits") => {
            let data = flag("--data-dir").context("--data-dir DATA (MNIST and USPS)")?;
            prepare_digits(Path::new(&data), &dir)
        }
        Some("run") => {
            let workload = flag("--workload").context("--workload W1|W2|W3|W4|R18T|R18E")?;
            let kernels = match flag("--impl").as_deref() {
                Some("dtl") => {
                    // dtl's configuration, as the `dtl` binary runs; candle-native keeps candle's.
                    dtl::ops::keep_candle_elementwise_on_caller();
                    Kernels::Dtl
                }
                Some("candle") => Kernels::Candle,
                other => bail!("--impl dtl|candle, got {other:?}"),
            };
            let steps = flag("--steps").map(|s| s.parse()).transpose()?.unwrap_or(10);
            let warmup = flag("--warmup").map(|s| s.parse()).transpose()?.unwrap_or(2);
            // `--device cuda[:N]` runs the workload on a GPU (dtl's kernels defer to candle's there).
            let dev = dtl::experiment::parse_device(flag("--device").as_deref().unwrap_or("cpu"))?;
            match kernels {
                // dtl's kernels from a worker thread, as the `dtl` binary runs them.
                Kernels::Dtl => {
                    dtl::ops::in_worker_pool(|| run(&workload, kernels, &dir, steps, warmup, &dev))
                }
                Kernels::Candle => run(&workload, kernels, &dir, steps, warmup, &dev),
            }
        }
        // `cargo bench` without arguments: a quick run of every workload with dtl's kernels.
        None => {
            prepare(&dir, &["W1", "W2", "W3", "W4"])?;
            for w in ["W1", "W2", "W3", "W4"] {
                run(w, Kernels::Dtl, &dir, 5, 1, &Device::Cpu)?;
            }
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`: prepare | prepare-digits | run"),
    }
}
