//! Builders for small synthetic IDX files, shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// A raw IDX images file: header for `[count, rows, cols]`, then `pixels`.
pub fn images_idx(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, 3];
    for d in [count, rows, cols] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// A raw IDX labels file: header for `[count]`, then `labels`.
pub fn labels_idx(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, 1];
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// `n` images of `rows x cols` whose pixels are a simple function of their position.
pub fn good_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect();
    images_idx(n, rows, cols, &pixels)
}

/// `n` labels cycling through 0-9.
pub fn good_labels(n: u32) -> Vec<u8> {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    labels_idx(n, &labels)
}

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
