//! `lenet visualize` (the learned filters and an image's feature maps as PNG grids) and the
//! confusion-matrix picture of `lenet eval --png`.
//!
//! Colours: viridis from 0 to the largest value when nothing is negative (activations after
//! ReLU, pooled maps), else blue–white–red symmetric around 0 (weights). One scale per picture,
//! so the tiles of a grid compare with each other.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use ndarray::{Array4, ArrayView2, ArrayView3, Axis};

use crate::args::VisualizeArgs;
use crate::confusion::{Confusion, CLASSES};
use crate::model_source::LoadedModel;
use crate::preprocess;

/// Pixels between two tiles of a grid.
const GAP: u32 = 2;
/// Each tile is scaled up to about this many pixels a side.
const TILE: u32 = 56;
/// Between the tiles: a mid grey, which neither colour scale uses.
const BACKGROUND: Rgb<u8> = Rgb([170, 170, 170]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// Runs `lenet visualize`.
pub fn run(args: &VisualizeArgs) -> Result<()> {
    let mut loaded = LoadedModel::load(args.model.as_deref())?;
    // The image is read first, so that a bad one fails before anything is written.
    let input = match &args.image {
        Some(path) => Some(preprocess::load_input(path)?),
        None => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the folder {}", args.out.display()))?;
    check_outputs(args)?;
    let mut written = write_filters(&loaded.model, &args.out)?;
    if let Some(input) = input {
        written.extend(write_feature_maps(&mut loaded.model, input, &args.out)?);
    }
    for path in written {
        crate::outln!("wrote {path}")?;
    }
    Ok(())
}

/// The pictures `run` writes into --out must be neither the --model file nor the image.
fn check_outputs(args: &VisualizeArgs) -> Result<()> {
    let mut names = vec!["conv1_filters.png", "conv2_filters.png"];
    if args.image.is_some() {
        names.extend([
            "input.png",
            "conv1.png",
            "pool1.png",
            "conv2.png",
            "pool2.png",
        ]);
    }
    let paths: Vec<_> = names.iter().map(|n| args.out.join(n)).collect();
    let outs: Vec<(&str, &Path)> = paths.iter().map(|p| ("--out", p.as_path())).collect();
    let inputs: Vec<(&str, &Path)> = [("--model", &args.model), ("IMAGE", &args.image)]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect();
    crate::outputs::check_distinct(&outs, &inputs)
}

/// `conv1_filters.png` and `conv2_filters.png`: one column per output channel, one row per
/// input channel.
fn write_filters(model: &nn::LeNet5, dir: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for layer in ["conv1", "conv2"] {
        let p = model
            .param(&format!("{layer}.weight"))
            .expect("LeNet5 has conv weights");
        let (k, c) = (p.shape[0], p.shape[1]);
        let w = ndarray::ArrayView4::from_shape((k, c, 5, 5), p.value).expect("5×5 kernels");
        let tiles: Vec<ArrayView2<'_, f32>> = (0..c)
            .flat_map(|i| (0..k).map(move |o| w.slice_move(ndarray::s![o, i, .., ..])))
            .collect();
        written.push(save(
            dir,
            &format!("{layer}_filters.png"),
            &grid(&tiles, k),
        )?);
    }
    Ok(written)
}

/// `input.png` and one grid per layer (`conv1.png`, `pool1.png`, `conv2.png`, `pool2.png`).
fn write_feature_maps(model: &mut nn::LeNet5, input: Vec<f32>, dir: &Path) -> Result<Vec<String>> {
    let x = Array4::from_shape_vec((1, 1, 28, 28), input).expect("28×28 input");
    let out = nn::inspect::activations(model, x.view());
    let mut written = vec![save(
        dir,
        "input.png",
        &grid(&[x.slice(ndarray::s![0, 0, .., ..])], 1),
    )?];
    for (name, maps) in [
        ("conv1", &out.conv1),
        ("pool1", &out.pool1),
        ("conv2", &out.conv2),
        ("pool2", &out.pool2),
    ] {
        written.push(save(
            dir,
            &format!("{name}.png"),
            &map_grid(maps.index_axis(Axis(0), 0)),
        )?);
    }
    Ok(written)
}

/// Feature maps `[c, h, w]` as a grid of at most 8 columns.
fn map_grid(maps: ArrayView3<'_, f32>) -> RgbImage {
    let tiles: Vec<ArrayView2<'_, f32>> = maps.outer_iter().collect();
    let columns = tiles.len().min(8);
    grid(&tiles, columns)
}

fn save(dir: &Path, name: &str, img: &RgbImage) -> Result<String> {
    let path = dir.join(name);
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("cannot encode a PNG")?;
    nn::write_atomic(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.display().to_string())
}

/// Tiles of equal shape in rows of `columns`, each pixel scaled up to a square block, one
/// colour scale for all.
fn grid(tiles: &[ArrayView2<'_, f32>], columns: usize) -> RgbImage {
    let (h, w) = tiles.first().map_or((1, 1), |t| t.dim());
    let scale = (TILE / h.max(w) as u32).max(1);
    let (tw, th) = (w as u32 * scale, h as u32 * scale);
    let columns = columns.max(1) as u32;
    let rows = (tiles.len() as u32).div_ceil(columns).max(1);
    let mut img = RgbImage::from_pixel(
        columns * (tw + GAP) - GAP,
        rows * (th + GAP) - GAP,
        BACKGROUND,
    );
    let colour = ColourScale::fit(tiles.iter().flat_map(|t| t.iter().copied()));
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = (
            (i as u32 % columns) * (tw + GAP),
            (i as u32 / columns) * (th + GAP),
        );
        for ((y, x), &v) in tile.indexed_iter() {
            let c = colour.of(v);
            for dy in 0..scale {
                for dx in 0..scale {
                    img.put_pixel(x0 + x as u32 * scale + dx, y0 + y as u32 * scale + dy, c);
                }
            }
        }
    }
    img
}

/// Maps values to colours: viridis on `[0, max]`, or blue–white–red on `[-m, m]`.
#[derive(Debug, Clone, Copy)]
struct ColourScale {
    signed: bool,
    top: f32,
}

const VIRIDIS: [[f32; 3]; 5] = [
    [68., 1., 84.],
    [59., 82., 139.],
    [33., 145., 140.],
    [94., 201., 98.],
    [253., 231., 37.],
];
const DIVERGING: [[f32; 3]; 3] = [[33., 102., 172.], [247., 247., 247.], [178., 24., 43.]];

impl ColourScale {
    fn fit(values: impl Iterator<Item = f32>) -> ColourScale {
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((0f32, 0f32), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let signed = lo < 0.0;
        let top = if signed { hi.max(-lo) } else { hi };
        ColourScale {
            signed,
            top: if top > 0.0 { top } else { 1.0 },
        }
    }

    fn position(&self, v: f32) -> f32 {
        if self.signed {
            0.5 + v / (2.0 * self.top)
        } else {
            v / self.top
        }
    }

    fn of(&self, v: f32) -> Rgb<u8> {
        let t = self.position(v);
        if self.signed {
            interpolate(&DIVERGING, t)
        } else {
            interpolate(&VIRIDIS, t)
        }
    }
}

/// The colour at `t` in [0, 1] (clamped; NaN gives the first stop) along evenly spaced stops.
fn interpolate(stops: &[[f32; 3]], t: f32) -> Rgb<u8> {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (stops.len() - 1) as f32;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f32;
    let mix = |k: usize| (stops[i][k] + f * (stops[i + 1][k] - stops[i][k])).round() as u8;
    Rgb([mix(0), mix(1), mix(2)])
}

/// The confusion matrix as a picture: one square per (true row, predicted column), white for
/// none to dark blue for all of the row's images, with the class indices drawn along the top and
/// the left edge.
pub fn confusion_png(confusion: &Confusion, path: &Path) -> Result<()> {
    const CELL: u32 = 36;
    const MARGIN: u32 = 24;
    let side = MARGIN + CELL * CLASSES as u32;
    let mut img = RgbImage::from_pixel(side, side, WHITE);
    for (t, row) in confusion.counts.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            // sqrt stretches the small off-diagonal counts into view.
            let f = if total == 0 {
                0.0
            } else {
                (n as f32 / total as f32).sqrt()
            };
            let c = interpolate(&[[255., 255., 255.], [8., 48., 107.]], f);
            let (x0, y0) = (MARGIN + p as u32 * CELL, MARGIN + t as u32 * CELL);
            for y in y0..y0 + CELL - 1 {
                for x in x0..x0 + CELL - 1 {
                    img.put_pixel(x, y, c);
                }
            }
        }
        let centre = MARGIN + t as u32 * CELL + CELL / 2;
        draw_digit(&mut img, t as u8, centre - 3, MARGIN / 2 - 5);
        draw_digit(&mut img, t as u8, MARGIN / 2 - 3, centre - 5);
    }
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("cannot encode a PNG")?;
    nn::write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A 3×5 bitmap digit, drawn at twice its size with its top-left corner at `(x, y)`.
fn draw_digit(img: &mut RgbImage, d: u8, x: u32, y: u32) {
    // Rows of 3 bits, top to bottom.
    const FONT: [[u8; 5]; 10] = [
        [7, 5, 5, 5, 7],
        [2, 6, 2, 2, 7],
        [7, 1, 7, 4, 7],
        [7, 1, 7, 1, 7],
        [5, 5, 7, 1, 1],
        [7, 4, 7, 1, 7],
        [7, 4, 7, 5, 7],
        [7, 1, 2, 2, 2],
        [7, 5, 7, 5, 7],
        [7, 5, 7, 1, 7],
    ];
    for (r, bits) in FONT[usize::from(d % 10)].iter().enumerate() {
        for c in 0..3u32 {
            if bits & (4 >> c) != 0 {
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    img.put_pixel(x + 2 * c + dx, y + 2 * r as u32 + dy, Rgb([40, 40, 40]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn grid_places_tiles_and_scales_pixels() {
        let a = Array2::from_shape_fn((5, 5), |(y, x)| (y * 5 + x) as f32);
        let b = Array2::<f32>::zeros((5, 5));
        let img = grid(&[a.view(), b.view(), a.view()], 2);
        let tw = 5 * (TILE / 5);
        assert_eq!(img.dimensions(), (2 * tw + GAP, 2 * tw + GAP));
        // Tile 1 (all zeros) is the darkest viridis colour; tile 0's last pixel the brightest.
        assert_eq!(*img.get_pixel(tw + GAP, 0), Rgb([68, 1, 84]));
        assert_eq!(*img.get_pixel(tw - 1, tw - 1), Rgb([253, 231, 37]));
        // The gap and the empty fourth slot stay grey.
        assert_eq!(*img.get_pixel(tw, 0), BACKGROUND);
        assert_eq!(
            *img.get_pixel(2 * tw + GAP - 1, 2 * tw + GAP - 1),
            BACKGROUND
        );
    }

    #[test]
    fn signed_values_use_the_diverging_scale() {
        let s = ColourScale::fit([-2.0, 1.0].into_iter());
        assert_eq!(s.of(0.0), Rgb([247, 247, 247]));
        assert_eq!(s.of(-2.0), Rgb([33, 102, 172]));
        assert_eq!(s.of(2.0), Rgb([178, 24, 43]));
        assert_eq!(s.of(f32::NAN), Rgb([33, 102, 172]));
    }

    #[test]
    fn confusion_picture_is_darkest_on_the_diagonal() {
        let mut c = Confusion::default();
        for i in 0..CLASSES {
            c.counts[i][i] = 90;
            c.counts[i][(i + 1) % CLASSES] = 10;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        confusion_png(&c, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let at = |t: u32, p: u32| *img.get_pixel(24 + p * 36 + 18, 24 + t * 36 + 18);
        let (diag, off, none) = (at(3, 3), at(3, 4), at(3, 7));
        assert!(
            diag[0] < off[0] && off[0] < none[0],
            "{diag:?} {off:?} {none:?}"
        );
        assert_eq!(none, Rgb([255, 255, 255]));
    }
}
