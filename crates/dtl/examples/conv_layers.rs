//! Per-layer timings of the `W4` benchmark's convolutions (ResNet-18 at widths 16-128 on 3x32x32,
//! evaluation, batch 256) and of its stem pooling, on random data: each convolution with its
//! bias and ReLU (the evaluation path after batch norm is folded), median of `REPS` calls.
//!
//! ```text
//! cargo run --release -p dtl --example conv_layers [REPS]      # LAYERS=stem,s1 for a subset
//! python scripts/conv_layers_torch.py [REPS]                   # the same shapes in PyTorch
//! ```
//!
//! Where `cargo xtask bench` says how fast a whole step is, this says which layer shape a kernel
//! change moved (docs/performance.md).

use std::time::Instant;

use candle_core::{Device, Tensor};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One convolution shape of the network and how often it occurs.
struct Layer {
    name: &'static str,
    channels: usize,
    side: usize,
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    count: usize,
}

/// `name`, `(C, side, O, k)`, `(stride, padding, count)`.
const fn layer(
    name: &'static str,
    (channels, side, filters, kernel): (usize, usize, usize, usize),
    (stride, padding, count): (usize, usize, usize),
) -> Layer {
    Layer {
        name,
        channels,
        side,
        filters,
        kernel,
        stride,
        padding,
        count,
    }
}

/// The 3x3 and 7x7 convolutions of ResNet-18 at widths 16/32/64/128 on 32x32 inputs.
const LAYERS: [Layer; 8] = [
    layer("stem", (3, 32, 16, 7), (2, 3, 1)),
    layer("s1", (16, 8, 16, 3), (1, 1, 4)),
    layer("s2a", (16, 8, 32, 3), (2, 1, 1)),
    layer("s2", (32, 4, 32, 3), (1, 1, 3)),
    layer("s3a", (32, 4, 64, 3), (2, 1, 1)),
    layer("s3", (64, 2, 64, 3), (1, 1, 3)),
    layer("s4a", (64, 2, 128, 3), (2, 1, 1)),
    layer("s4", (128, 1, 128, 3), (1, 1, 3)),
];

const BATCH: usize = 256;

fn median_ms(reps: usize, mut f: impl FnMut() -> candle_core::Result<()>) -> candle_core::Result<f64> {
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[reps / 2])
}

fn main() -> anyhow::Result<()> {
    dtl::ops::keep_candle_elementwise_on_caller();
    dtl::allocator::keep_freed_memory();
    let reps: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| anyhow::anyhow!("REPS `{s}`: {e}"))?,
        None => 30,
    };
    anyhow::ensure!(reps > 0, "REPS must be at least 1");
    let only = std::env::var("LAYERS").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|l| l.split(',').any(|x| x == name));
    dtl::ops::in_worker_pool(|| -> anyhow::Result<()> {
        let d = Device::Cpu;
        let mut total = 0.0;
        for l in LAYERS.iter().filter(|l| wanted(l.name)) {
            let x = Tensor::rand(0f32, 1., (BATCH, l.channels, l.side, l.side), &d)?;
            let w = Tensor::rand(-0.1f32, 0.1, (l.filters, l.channels, l.kernel, l.kernel), &d)?;
            let b = Tensor::rand(-0.1f32, 0.1, l.filters, &d)?;
            let m = median_ms(reps, || {
                dtl::ops::conv2d_bias_relu(&x, &w, Some(&b), l.stride, l.padding).map(drop)
            })?;
            total += m * l.count as f64;
            println!("{:5} {m:7.3} ms x{}", l.name, l.count);
        }
        if wanted("pool") {
            let x = Tensor::rand(0f32, 1., (BATCH, 16, 16, 16), &d)?;
            let m = median_ms(reps, || dtl::ops::max_pool2d(&x, 3, 2, 1).map(drop))?;
            println!("pool  {m:7.3} ms");
        }
        println!("convolutions {total:.2} ms");
        Ok(())
    })
}
