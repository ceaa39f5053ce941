//! Sanity limits checked before any work starts: the thread count (`--threads` and
//! `RAYON_NUM_THREADS`) against the cores, the batch size against the memory, and
//! `LENET_KERNEL` against the kernel tiers that exist.

use anyhow::{bail, Result};
use tensor::Tier;

/// Most worker threads per core: more only adds scheduling overhead.
pub const THREADS_PER_CORE: usize = 8;

/// Memory one training image of a batch needs, in bytes: the default model's peak resident
/// memory grows by about 93 KB per image of batch (`/usr/bin/time -f %M lenet train --epochs
/// 1 --limit 4096 --threads 1 --batch-size B` for B = 256 and 2048), rounded up to 256 KB for
/// wider models and allocator slack.
pub const BYTES_PER_IMAGE: u64 = 256 * 1024;

/// The largest `--threads` value: [`THREADS_PER_CORE`] per core of this machine.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    THREADS_PER_CORE * cores
}

/// Refuses a `RAYON_NUM_THREADS` above [`max_threads`], the cap `--threads` has: every
/// command's worker pool defaults to that many threads. Values rayon ignores (0, not a number)
/// are left to it.
pub fn check_rayon_threads() -> Result<()> {
    let Ok(value) = std::env::var("RAYON_NUM_THREADS") else {
        return Ok(());
    };
    let max = max_threads();
    match value.trim().parse::<usize>() {
        Ok(n) if n > max => bail!(
            "RAYON_NUM_THREADS={n} is more than {THREADS_PER_CORE} threads per core of this \
             machine: use at most {max} (or unset it for one thread per core)"
        ),
        _ => Ok(()),
    }
}

/// Refuses a `LENET_KERNEL` (or `LENET_GEMM_KERNEL`) that names no tier (the kernels ignore
/// unknown names and would silently run the best tier).
pub fn check_kernel_tier() -> Result<()> {
    Tier::from_env().map(|_| ()).map_err(anyhow::Error::msg)
}

/// Refuses a batch whose training buffers (activations, gradients, im2col) would not fit in
/// the available memory (`MemAvailable` of /proc/meminfo; no check where it is unknown).
pub fn check_batch_memory(batch_size: usize) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let needed = batch_size as u64 * BYTES_PER_IMAGE;
    if needed > available {
        bail!(
            "--batch-size {batch_size} needs about {} MB for its training buffers, more than \
             the {} MB of memory available: use at most --batch-size {}",
            needed >> 20,
            available >> 20,
            (available / BYTES_PER_IMAGE).max(1)
        );
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_scale_with_the_cores() {
        assert!(max_threads() >= THREADS_PER_CORE);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_batch_larger_than_memory_is_refused() {
        let err = check_batch_memory(usize::MAX / (1 << 20)).unwrap_err();
        assert!(err.to_string().contains("--batch-size"), "{err}");
        assert!(check_batch_memory(64).is_ok());
    }
}
