//! Train a source-only LeNet on one digit domain and measure the drop on another, through the
//! library API: the same run as
//! `dtl train --source mnist-small --target optdigits --epochs 10 --out runs/example`.
//!
//! ```text
//! cargo run --release -p dtl --example source_only -- [SOURCE] [TARGET] [OUT]
//! ```

use std::path::PathBuf;

use candle_core::Device;
use dtl::prelude::*;

fn main() -> anyhow::Result<()> {
    // What the `dtl` binary does before any work, for the CPU kernels' speed
    // (docs/performance.md): candle's elementwise ops on the calling thread, and the work on a
    // rayon worker thread.
    dtl::ops::keep_candle_elementwise_on_caller();
    dtl::ops::in_worker_pool(example)
}

fn example() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let source: DomainId = args.next().as_deref().unwrap_or("mnist-small").parse()?;
    let target: DomainId = args.next().as_deref().unwrap_or("optdigits").parse()?;
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/example".into()));

    // The short way: one call does what `dtl train` does and writes config, model and metrics.
    let mut cfg = RunConfig::default();
    cfg.data.source = source.to_string();
    cfg.data.target = target.to_string();
    cfg.train.epochs = 10;
    let m = run(
        &cfg,
        &out,
        RunOptions {
            overwrite: true,
            progress: false,
        },
    )?;
    println!(
        "run():   {source} test {:.4} -> {target} test {:.4} (drop {:.4})",
        m.source_test.accuracy, m.target_test.accuracy, m.drop
    );

    // The long way, piece by piece: domains, model, strategy, loop, evaluation.
    let dev = Device::Cpu;
    let data_dir = DataDir::resolve(None)?;
    let opts = LoadOptions::default();
    let src = Domain::load(source, Some(&data_dir), &opts)?;
    let tgt = Domain::load(target, Some(&data_dir), &opts)?;
    let model = Classifier::new(ModelSpec::lenet_digits(28), cfg.train.seed, &dev)?;
    let mut strategy = dtl::strategies::build(
        &StrategyConfig::SourceOnly(Default::default()),
        model,
        &OptimSettings::default(),
        0,
    )?;
    let loop_cfg = LoopConfig {
        epochs: 10,
        batch_size: 128,
        seed: cfg.train.seed,
        progress: false,
        augment: None,
    };
    train(strategy.as_mut(), &src.train, Some(&tgt.train), &loop_cfg, &dev)?;
    let s = evaluate(|xs| strategy.predict(xs), &src.test, 500, &dev)?;
    let t = evaluate(|xs| strategy.predict(xs), &tgt.test, 500, &dev)?;
    println!(
        "pieces:  {source} test {:.4} -> {target} test {:.4} (drop {:.4})",
        s.accuracy,
        t.accuracy,
        s.accuracy - t.accuracy
    );
    Ok(())
}
