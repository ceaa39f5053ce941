//! Property tests: random and mutated bytes never make the reader panic or allocate much.
//!
//! A counting allocator (per thread, so parallel tests do not mix) records the peak number of
//! live bytes while the reader runs; a header that lies about its size must not move it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{good_images, good_labels, gzip};
use mnist::idx::{parse_images, parse_labels};
use proptest::prelude::*;

struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n)));
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Peak extra bytes allocated on this thread while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(|p| p.get()) - base)
}

/// Decoder state and buffers are well under this; a lying header claiming up to 100M items
/// would need far more.
const ALLOC_BOUND: usize = 1 << 20;

/// Runs both parsers on `bytes` and checks the allocation bound (beyond the input's own size,
/// since a valid file is returned as an array).
fn check(bytes: &[u8]) {
    let (_, peak) = peak_during(|| parse_images("fuzz", bytes));
    assert!(peak <= ALLOC_BOUND + 2 * bytes.len(), "images: peak {peak}");
    let (_, peak) = peak_during(|| parse_labels("fuzz", bytes));
    assert!(peak <= ALLOC_BOUND + 2 * bytes.len(), "labels: peak {peak}");
}

/// A small valid file of either kind, raw or gzip, as the seed of mutations.
fn valid_file() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), any::<bool>(), 0u32..6, 1u32..5, 1u32..5).prop_map(|(images, gz, n, r, c)| {
        let raw = if images {
            good_images(n, r, c)
        } else {
            good_labels(n)
        };
        if gz {
            gzip(&raw)
        } else {
            raw
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    /// Overwrite four bytes with a big-endian u32, e.g. a header size of 2^31.
    SetU32(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
        (
            0usize..16,
            prop_oneof![
                Just(u32::MAX),
                Just(1u32 << 31),
                Just(100_000_001),
                any::<u32>()
            ]
        )
            .prop_map(|(i, v)| Mutation::SetU32(i, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = *b;
            }
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            Mutation::Append(tail) => bytes.extend_from_slice(tail),
            Mutation::SetU32(i, v) if bytes.len() >= i + 4 => {
                bytes[*i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check(&bytes);
    }

    #[test]
    fn random_bytes_behind_a_valid_magic(
        images in any::<bool>(),
        gz in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut bytes = vec![0, 0, 8, if images { 3 } else { 1 }];
        bytes.extend_from_slice(&tail);
        let bytes = if gz { gzip(&bytes) } else { bytes };
        check(&bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(
        file in valid_file(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        check(&apply(file, &mutations));
    }

    #[test]
    fn mutated_content_inside_gzip_never_panics(
        images in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        // Mutate the decompressed content, then compress: exercises the header checks on
        // the gzip path with a valid CRC.
        let raw = if images { good_images(3, 2, 2) } else { good_labels(7) };
        check(&gzip(&apply(raw, &mutations)));
    }
}

#[test]
fn header_claiming_2_pow_31_items_fails_fast() {
    let mut labels = good_labels(3);
    labels[4..8].copy_from_slice(&(1u32 << 31).to_be_bytes());
    let start = std::time::Instant::now();
    let (result, peak) = peak_during(|| parse_labels("claim", &gzip(&labels)[..]));
    assert!(result.is_err());
    assert!(peak <= ALLOC_BOUND, "peak {peak}");
    assert!(start.elapsed().as_millis() < 1000);
}

#[test]
fn the_counting_allocator_counts() {
    // Guard against a vacuous bound: a 4 MiB allocation must show up.
    let (v, peak) = peak_during(|| vec![1u8; 4 << 20]);
    assert!(peak >= 4 << 20, "peak {peak}");
    drop(v);
}
