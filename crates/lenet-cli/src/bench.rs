//! `lenet bench`: how fast each kernel tier runs on this CPU, and whether the one the binary
//! picks is the fastest — what to run before reporting "slow on my machine".
//!
//! The tier is fixed per process (`tensor::Tier::active`), so each measurement runs in a child
//! process of this same binary with `LENET_KERNEL` set to one tier (`lenet bench --measure`).
//! The tiers take turns inside every round, the first one rotating from round to round, so a
//! burst of load from other processes hits all of them alike; the table gives the medians.
//! The warning compares tiers round by round (two tiers that ran in the same round saw the
//! same host), and prints each round's share so that noise shows as a spread around 100%.
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
use crate::summary::thousands;

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
    print_table(&tiers, picked, &samples)
}

/// `name1, name2, ...`.
fn names(tiers: &[Tier]) -> String {
    tiers
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table of medians, then a warning for each row where the picked tier is not within
/// [`WARN_BELOW`] of another tier ([`trails`]).
fn print_table(tiers: &[Tier], picked: Tier, samples: &[Vec<[f64; 3]>]) -> Result<()> {
    let head: String = tiers
        .iter()
        .map(|&t| {
            let mark = if t == picked { "*" } else { "" };
            format!("{:>12}", format!("{}{mark}", t.name()))
        })
        .collect();
    outln!("{:<24}{:<10}{head}", "", "")?;
    let medians: Vec<[f64; 3]> = samples.iter().map(|s| medians(s)).collect();
    let p = tiers
        .iter()
        .position(|&t| t == picked)
        .expect("picked is available");
    let mut warnings = Vec::new();
    for (r, (name, unit, more_is_better)) in ROWS.into_iter().enumerate() {
        let cells: String = medians.iter().map(|m| format!("{:>12.2}", m[r])).collect();
        outln!("{name:<24}{unit:<10}{cells}")?;
        let speeds: Vec<Vec<f64>> = samples
            .iter()
            .map(|s| s.iter().map(|m| speed(m[r], more_is_better)).collect())
            .collect();
        if let Some((t, share, rounds)) = trails(&speeds, p) {
            let rounds: Vec<String> = rounds
                .iter()
                .map(|s| format!("{:.0}%", 100.0 * s))
                .collect();
            warnings.push(format!(
                "warning: {name}: {} runs at {:.0}% of {}'s speed (rounds: {})",
                picked.name(),
                100.0 * share,
                tiers[t].name(),
                rounds.join(", ")
            ));
        }
    }
    outln!(
        "* the tier this binary picks (set {} to lower it)",
        Tier::ENV
    )?;
    outln!("{}", arithmetic_rate(picked, &medians[p])?)?;
    for w in &warnings {
        outln!("{w}")?;
    }
    if warnings.is_empty() {
        outln!("the picked tier is within 5% of the fastest on every row")?;
    } else {
        outln!("(shares that swing around 100% from round to round are noise: rerun with more --rounds)")?;
    }
    Ok(())
}

/// The picked tier's rate of useful arithmetic on each row, from the built-in model's FLOPs
/// per image as `lenet summary` counts them ([`nn::inspect::training_flops`] for a step): the
/// direct sums' count, also for a kernel that needs fewer operations (Winograd's).
fn arithmetic_rate(picked: Tier, m: &[f64; 3]) -> Result<String> {
    let config = LoadedModel::load(None)?.model.config();
    let train = nn::inspect::training_flops(&config) as f64;
    let infer: u64 = nn::inspect::layer_table(&config)
        .iter()
        .map(|r| r.flops)
        .sum();
    let gflops = |flops: f64, images: f64, ms: f64| flops * images / (ms * 1e6);
    Ok(format!(
        "{}'s arithmetic: {:.0} GFLOP/s in a batch-32 step, {:.0} at batch 256, {:.0} in \
         inference\n({} FLOPs a training image, {} an inference, as `lenet summary` counts the \
         direct sums, whatever a kernel saves)",
        picked.name(),
        gflops(train, 32.0, m[0]),
        gflops(train, 256.0, m[1]),
        infer as f64 * m[2] / 1e9,
        thousands(train as u64),
        thousands(infer),
    ))
}

/// A figure as a speed: itself when more is better, else its inverse.
fn speed(figure: f64, more_is_better: bool) -> f64 {
    if more_is_better {
        figure
    } else {
        1.0 / figure
    }
}

/// Whether tier `p` trails another: `speeds[tier][round]`, each round's tiers measured side by
/// side. Against each other tier, the share `p`'s speed / its speed in every round and their
/// median; the tier with the lowest median share, if below [`WARN_BELOW`]: (that tier, the
/// median share, the shares round by round).
fn trails(speeds: &[Vec<f64>], p: usize) -> Option<(usize, f64, Vec<f64>)> {
    let shares = |t: usize| -> Vec<f64> {
        speeds[p]
            .iter()
            .zip(&speeds[t])
            .map(|(a, b)| a / b)
            .collect()
    };
    (0..speeds.len())
        .filter(|&t| t != p)
        .map(|t| {
            let rounds = shares(t);
            (t, median(rounds.clone()), rounds)
        })
        .filter(|(_, share, _)| *share < WARN_BELOW)
        .min_by(|a, b| a.1.total_cmp(&b.1))
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
        "the {} measurement failed ({}): {}",
        tier.name(),
        out.status,
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
    std::array::from_fn(|r| median(samples.iter().map(|s| s[r]).collect()))
}

/// The middle value (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The warning compares tiers within each round: a slow round hits both, so it does not
    /// count against the picked tier, while a tier that is slower in most rounds is named,
    /// with the median of its per-round shares and the shares themselves.
    #[test]
    fn the_picked_tier_trails_only_when_slower_round_by_round() {
        // speeds[tier][round]; tier 1 is picked.
        let noise = [vec![10.0, 5.0, 10.0], vec![9.8, 5.1, 9.9]];
        assert_eq!(trails(&noise, 1), None, "within 5% in every round");
        let slower = [
            vec![10.0, 10.0, 10.0],
            vec![9.0, 8.0, 10.2],
            vec![9.9, 9.0, 9.0],
        ];
        let (t, share, rounds) = trails(&slower, 1).expect("tier 1 trails tier 0");
        assert_eq!(t, 0);
        assert_eq!(rounds, vec![0.9, 0.8, 1.02]);
        assert_eq!(share, 0.9);
        // Load that hit the picked tier in round 1 and both tiers in round 2: the medians
        // over all rounds (6 against 10) would warn, round by round it is one bad round.
        let bursts = [vec![10.2, 10.0, 6.1], vec![10.0, 6.0, 6.0]];
        assert!(trails(&bursts, 1).is_none());
        assert_eq!(trails(&[vec![3.0]], 0), None, "one tier trails none");
    }
}
