//! Where the data lives and where to fetch it from: the `--data-dir` flag, `LENET_DATA_DIR`
//! and `LENET_MIRRORS`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::dataset::DatasetKind;

/// Environment variable naming a data root that holds `mnist/` and `fashion-mnist/`.
pub const DATA_DIR_ENV: &str = "LENET_DATA_DIR";
/// Environment variable holding comma-separated mirror base URLs that replace the defaults.
pub const MIRRORS_ENV: &str = "LENET_MIRRORS";

/// The folder holding the four files of `kind`:
/// 1. `data_dir_flag` (the CLI's `--data-dir DIR`) names that folder itself;
/// 2. else `$LENET_DATA_DIR/<dataset>` (the variable names a root holding `mnist/` and
///    `fashion-mnist/`, like `shared/data`);
/// 3. else `./data/<dataset>`.
///
/// `<dataset>` is [`DatasetKind::dir_name`]. An empty `LENET_DATA_DIR` counts as unset.
pub fn resolve_data_dir(kind: DatasetKind, data_dir_flag: Option<&Path>) -> PathBuf {
    resolve_data_dir_with(
        kind,
        data_dir_flag,
        std::env::var_os(DATA_DIR_ENV).as_deref(),
    )
}

/// [`resolve_data_dir`] with the value of `LENET_DATA_DIR` passed in (for tests).
pub fn resolve_data_dir_with(
    kind: DatasetKind,
    data_dir_flag: Option<&Path>,
    env_root: Option<&OsStr>,
) -> PathBuf {
    if let Some(dir) = data_dir_flag {
        return dir.to_path_buf();
    }
    match env_root {
        Some(root) if !root.is_empty() => Path::new(root).join(kind.dir_name()),
        _ => Path::new("data").join(kind.dir_name()),
    }
}

/// The mirror base URLs for `kind`: those in `LENET_MIRRORS` (comma-separated) if it is set and
/// not blank, else [`DatasetKind::default_mirrors`]. The same variable serves both datasets: a
/// `{dataset}` in a URL becomes `mnist` or `fashion-mnist`, and a mirror of the wrong dataset
/// fails the checksum and is skipped.
pub fn mirrors_from_env(kind: DatasetKind) -> Vec<String> {
    parse_mirrors(kind, std::env::var(MIRRORS_ENV).ok().as_deref())
}

/// [`mirrors_from_env`] with the value of `LENET_MIRRORS` passed in (for tests).
pub fn parse_mirrors(kind: DatasetKind, env_value: Option<&str>) -> Vec<String> {
    match env_value {
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect(),
        _ => kind
            .default_mirrors()
            .iter()
            .map(|m| m.to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_precedence() {
        let k = DatasetKind::FashionMnist;
        let flag = Path::new("/my/files");
        let root = OsStr::new("/shared/data");
        assert_eq!(resolve_data_dir_with(k, Some(flag), Some(root)), flag);
        assert_eq!(
            resolve_data_dir_with(k, None, Some(root)),
            Path::new("/shared/data/fashion-mnist")
        );
        assert_eq!(
            resolve_data_dir_with(k, None, Some(OsStr::new(""))),
            Path::new("data/fashion-mnist")
        );
        assert_eq!(
            resolve_data_dir_with(DatasetKind::Mnist, None, None),
            Path::new("data/mnist")
        );
    }

    #[test]
    fn mirrors_override() {
        let k = DatasetKind::Mnist;
        assert_eq!(parse_mirrors(k, None), k.default_mirrors());
        assert_eq!(parse_mirrors(k, Some("  ")), k.default_mirrors());
        assert_eq!(
            parse_mirrors(k, Some(" http://a/ ,, http://b/x")),
            ["http://a/", "http://b/x"]
        );
        assert!(parse_mirrors(k, Some(",")).is_empty());
    }
}
