//! The CPU's cache sizes, read once at run time, and the block sizes derived from them.
//!
//! Linux describes each cache of CPU 0 in `/sys/devices/system/cpu/cpu0/cache/index*/`
//! (`level`, `type`, `size` such as `512K`, and `shared_cpu_list`). Anything missing or
//! unreadable — another OS, a container hiding sysfs — falls back to [`FALLBACK`], sizes common
//! to recent x86 server cores, so the blocking is always defined.

use std::path::Path;
use std::sync::OnceLock;

/// Data-cache capacities in bytes; `l3` is the share of one core (the cache's size divided by
/// the number of CPUs sharing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

/// Used when the sizes cannot be read: 32 KiB L1d, 512 KiB L2, 2 MiB of L3 per core.
pub(super) const FALLBACK: CacheSizes = CacheSizes {
    l1d: 32 << 10,
    l2: 512 << 10,
    l3: 2 << 20,
};

/// This machine's cache sizes (read on first use, then cached).
pub(super) fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(|| {
        read_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")).unwrap_or(FALLBACK)
    })
}

/// Reads the sizes from a sysfs cache folder; `None` unless L1d, L2 and L3 are all found.
fn read_sysfs(dir: &Path) -> Option<CacheSizes> {
    let (mut l1d, mut l2, mut l3) = (None, None, None);
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(size) = parse_size(&size) else {
            continue;
        };
        let sharing = read("shared_cpu_list").map_or(1, |l| count_cpus(&l));
        match (level.trim(), kind.trim()) {
            ("1", "Data") => l1d = Some(size),
            ("2", "Data" | "Unified") => l2 = Some(size),
            ("3", "Data" | "Unified") => l3 = Some(size / sharing),
            _ => {}
        }
    }
    Some(CacheSizes {
        l1d: l1d?,
        l2: l2?,
        l3: l3?,
    })
}

/// `"32K"`, `"1M"`, `"1048576"` → bytes; `None` for anything else or zero.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1 << shift).filter(|&b| b > 0)
}

/// Number of CPUs in a list such as `0-3,8,10-11`; at least 1.
fn count_cpus(list: &str) -> usize {
    let count: usize = list
        .trim()
        .split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some(b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1),
            None => part.parse::<usize>().ok().map(|_| 1),
        })
        .sum();
    count.max(1)
}

/// Cache-block sizes of one product: A blocks are `mc × kc`, B blocks `kc × nc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

impl Blocking {
    /// Blocks for a kernel with an `mr × nr` tile, depth `kc` and elements of `elem` bytes:
    /// a packed A block takes about a third of L2 (the rest holds the B panel in flight and C
    /// tiles), a packed B block about half of this core's share of L3. `mc` is a multiple of
    /// `mr` in `[mr, 1024]`, `nc` a multiple of `nr` in `[nr, 4096]` (the packing buffers of
    /// every thread grow to hold one block of each).
    pub(super) fn new(sizes: CacheSizes, mr: usize, nr: usize, kc: usize, elem: usize) -> Self {
        let row = kc * elem;
        let mc = (sizes.l2 / 3 / row / mr * mr).clamp(mr, 1024 / mr * mr);
        let nc = (sizes.l3 / 2 / row / nr * nr).clamp(nr, 4096 / nr * nr);
        Blocking { kc, mc, nc }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_bad_input_is_rejected() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "K", "12Q", "0K", "-1K", "99999999999999999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(count_cpus("0-1\n"), 2);
        assert_eq!(count_cpus("0-3,8,10-11"), 7);
        assert_eq!(count_cpus("junk"), 1);
    }

    /// Writes one sysfs-like `index*` folder.
    fn write_index(dir: &Path, i: usize, level: &str, kind: &str, size: &str, shared: &str) {
        let d = dir.join(format!("index{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for (name, value) in [
            ("level", level),
            ("type", kind),
            ("size", size),
            ("shared_cpu_list", shared),
        ] {
            std::fs::write(d.join(name), format!("{value}\n")).unwrap();
        }
    }

    #[test]
    fn sysfs_is_read_and_incomplete_folders_fall_back() {
        let dir = std::env::temp_dir().join(format!("lenet-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_index(&dir, 0, "1", "Data", "48K", "0");
        write_index(&dir, 1, "1", "Instruction", "32K", "0");
        write_index(&dir, 2, "2", "Unified", "2048K", "0");
        // Without L3 the description is incomplete: no guess.
        assert_eq!(read_sysfs(&dir), None);
        write_index(&dir, 3, "3", "Unified", "32M", "0-3");
        let got = read_sysfs(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let want = CacheSizes {
            l1d: 48 << 10,
            l2: 2 << 20,
            l3: 8 << 20,
        };
        assert_eq!(got, Some(want));
        assert_eq!(read_sysfs(&dir), None, "a missing folder");
        let s = cache_sizes();
        assert!(s.l1d >= 1024 && s.l2 > s.l1d && s.l3 > 0, "{s:?}");
    }

    #[test]
    fn blocks_follow_the_caches_within_bounds() {
        // Zen 3-like: 512 KiB L2, 16 MiB of L3 per core; the AVX2 f32 tile (6 × 16, kc 256).
        let zen = CacheSizes {
            l1d: 32 << 10,
            l2: 512 << 10,
            l3: 16 << 20,
        };
        assert_eq!(
            Blocking::new(zen, 6, 16, 256, 4),
            Blocking {
                kc: 256,
                mc: 168,
                nc: 4096,
            }
        );
        assert_eq!(Blocking::new(FALLBACK, 6, 16, 256, 4).nc, 1024);
        // Tiny caches still give at least one tile.
        let tiny = CacheSizes {
            l1d: 1024,
            l2: 1024,
            l3: 1024,
        };
        assert_eq!(
            Blocking::new(tiny, 8, 32, 256, 4),
            Blocking {
                kc: 256,
                mc: 8,
                nc: 32
            }
        );
    }
}
