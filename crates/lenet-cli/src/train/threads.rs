//! The rayon pool that every training run (`lenet train`, the page's runs) works inside.

use anyhow::{Context, Result};

/// Runs `f` inside a rayon pool of `threads` workers (the kernels parallelise with rayon); without
/// `--threads`, as many workers as rayon's default (`RAYON_NUM_THREADS`, else one per core).
///
/// Training always runs *inside* a pool, never as a caller from outside one: rayon hands jobs
/// from an outside thread over through a queue that allocates, and the training loop promises
/// no allocation per batch.
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let n = threads.unwrap_or_else(rayon::current_num_threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .with_context(|| format!("cannot start {n} worker threads"))?
        .install(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_pool_has_the_asked_size() {
        assert_eq!(
            with_threads(Some(3), || Ok(rayon::current_num_threads())).unwrap(),
            3
        );
    }
}
