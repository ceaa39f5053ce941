//! `lenet bench`: how fast each kernel tier runs on this CPU, and whether the one the binary
//! picks is the fastest — what to run before reporting "slow on my machine".
//!
//! The tier is fixed per process (`tensor::Tier::active`), so each measurement runs in a child
//! process of this same binary with `LENET_KERNEL` set to one tier (`lenet bench --measure`).
//! The tiers take turns inside every round, the first one rotating from round to round, so a
//! burst of load from other processes hits all of them alike; the table gives the medians.
//! Each child times, on the built-in model and a fixed synthetic batch (no data set needed):
//! a training step (forward, loss, backward, SGD update) at batch 32 and at batch 256, and
//! inference over 2,000 images in blocks of 1,000 (as `lenet eval`).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use nn::data_parallel::DataParallel;
use nn::{BatchSource, Evaluator, InMemorySource, LeNet5, Sgd, SgdConfig};
use tensor::Tier;

use crate::args::BenchArgs;
use crate::model_source::LoadedModel;
use crate::outln;

/// A row of the table: its name, its unit, and whether more is better.
const ROWS: [(&str, &str, bool); 3] = [
    ("train step, batch 32", "ms", false),
    ("train step, batch 256", "ms", false),
    ("inference", "images/s", true),
];

/// Warn when the tier the binary picks is below this share of the fastest tier's speed.
const WARN_BELOW: f64 = 0.95;

/// Runs `lenet bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.measure {
        let [b32, b256, infer] = measure()?;
        outln!("{} {b32:.4} {b256:.4} {infer:.1}", Tier::active().name())?;
        return Ok(());
    }
    let tiers = Tier::available();
    let picked = Tier::active();
    outln!(
        "CPU: {}; tiers it has: {}; this binary runs {} ({} threads, {} rounds)",
        cpu_name(),
        names(&tiers),
        picked.name(),
        rayon::current_num_threads(),
        args.rounds
    )?;
    let mut samples = vec![Vec::new(); tiers.len()];
    for round in 0..args.rounds as usize {
        for i in (0..tiers.len()).map(|i| (i + round) % tiers.len()) {
            samples[i].push(measure_in_child(tiers[i])?);
        }
    }
    let medians: Vec<[f64; 3]> = samples.iter().map(|s| medians(s)).collect();
    print_table(&tiers, picked, &medians)
}

/// `name1, name2, ...`.
fn names(tiers: &[Tier]) -> String {
    tiers
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table, then a warning for each row where the picked tier is not within
/// [`WARN_BELOW`] of the fastest.
fn print_table(tiers: &[Tier], picked: Tier, medians: &[[f64; 3]]) -> Result<()> {
    let head: String = tiers
        .iter()
        .map(|&t| {
            let mark = if t == picked { "*" } else { "" };
            format!("{:>12}", format!("{}{mark}", t.name()))
        })
        .collect();
    outln!("{:<24}{:<10}{head}", "", "")?;
    let mut warnings = Vec::new();
    for (r, (name, unit, more_is_better)) in ROWS.into_iter().enumerate() {
        let cells: String = medians.iter().map(|m| format!("{:>12.2}", m[r])).collect();
        outln!("{name:<24}{unit:<10}{cells}")?;
        let speed = |m: &[f64; 3]| if more_is_better { m[r] } else { 1.0 / m[r] };
        let (best, best_speed) = tiers
            .iter()
            .zip(medians)
            .map(|(t, m)| (*t, speed(m)))
            .fold((picked, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        let i = tiers
            .iter()
            .position(|&t| t == picked)
            .expect("picked is available");
        let share = speed(&medians[i]) / best_speed;
        if share < WARN_BELOW {
            warnings.push(format!(
                "warning: {name}: {} runs at {:.0}% of {}'s speed",
                picked.name(),
                100.0 * share,
                best.name()
            ));
        }
    }
    outln!(
        "* the tier this binary picks (set {} to lower it)",
        Tier::ENV
    )?;
    for w in &warnings {
        outln!("{w}")?;
    }
    if warnings.is_empty() {
        outln!("the picked tier is within 5% of the fastest on every row")?;
    }
    Ok(())
}

/// The three figures of one tier, measured by a child process of this binary.
fn measure_in_child(tier: Tier) -> Result<[f64; 3]> {
    let exe = std::env::current_exe().context("finding this program to run the tiers")?;
    let out = Command::new(exe)
        .args(["bench", "--measure"])
        .env(Tier::ENV, tier.name())
        .output()
        .context("starting a measurement")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "the {} measurement failed: {}",
        tier.name(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields[..] {
        [name, a, b, c] if name == tier.name() => Ok([a.parse()?, b.parse()?, c.parse()?]),
        _ => bail!("the {} measurement printed {text:?}", tier.name()),
    }
}

/// Per row, the median of the samples.
fn medians(samples: &[[f64; 3]]) -> [f64; 3] {
    std::array::from_fn(|r| {
        let mut v: Vec<f64> = samples.iter().map(|s| s[r]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

/// Milliseconds per training step at batch 32 and 256, and inference images per second, on
/// this process's tier.
fn measure() -> Result<[f64; 3]> {
    let loaded = LoadedModel::load(None)?;
    let mut model = loaded.model;
    let b32 = 1e3 * seconds_per_call(&mut train_step(&mut model, 32)?);
    let b256 = 1e3 * seconds_per_call(&mut train_step(&mut model, 256)?);
    let source = synthetic(2000);
    let mut evaluator = Evaluator::new(1000);
    let infer = seconds_per_call(&mut || {
        evaluator.evaluate(&model, &source);
    });
    Ok([b32, b256, source.len() as f64 / infer])
}

/// One training step as `lenet train` runs it (the data-parallel gradient, then SGD with
/// lr 0.01 and no momentum: the weights barely move) on a fixed batch.
fn train_step(model: &mut LeNet5, batch: usize) -> Result<impl FnMut() + '_> {
    let data = synthetic(batch);
    let (mut images, mut labels) = (data.images().to_vec(), data.labels().to_vec());
    let config = SgdConfig {
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut sgd = Sgd::new(config, model.params().iter().map(|p| p.value.len()));
    let mut step = DataParallel::new();
    Ok(move || {
        step.batch_gradients(model, &mut images, &mut labels);
        sgd.step(&mut model.params_mut());
    })
}

/// `n` fixed pseudo-random images (a linear congruential sequence) with labels 0..9 in turn.
fn synthetic(n: usize) -> InMemorySource {
    let mut state = 12345u32;
    let images = (0..n * 28 * 28)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as f32 / 255.0
        })
        .collect();
    InMemorySource::new(images, (0..n).map(|i| i % 10).collect())
}

/// Median seconds per call of `f` over 5 samples of at least 0.1 s each, after one call.
fn seconds_per_call(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let calls = (0.1 / once).ceil() as usize;
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            (0..calls).for_each(|_| f());
            t.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// The CPU's model name from /proc/cpuinfo, else the architecture.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
