//! Turns a photo or drawing of one digit into a 28×28 MNIST-style image, the way MNIST itself was
//! made (LeCun et al.): white ink on black, the digit scaled to fit a 20×20 box keeping its aspect
//! ratio, then placed so that its centre of mass is the centre of the 28×28 field.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};

/// Side of the output image.
pub const SIZE: u32 = 28;
/// Side of the box the digit is scaled into.
const FIT: u32 = 20;
/// After contrast stretching, pixels above this (of 255) count as ink for the bounding box; the
/// margin keeps JPEG noise and paper texture out of the box.
const INK_THRESHOLD: u8 = 40;

/// Reads a PNG or JPEG file and prepares it with [`to_mnist`].
pub fn load_digit(path: &Path) -> Result<GrayImage> {
    let image = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .with_context(|| {
            format!(
                "cannot decode image {} (expected PNG or JPEG)",
                path.display()
            )
        })?;
    to_mnist(&image.to_luma8()).with_context(|| format!("image {}", path.display()))
}

/// Makes a 28×28 MNIST-style image from a grayscale picture of one digit.
///
/// 1. Dark ink on a light background is inverted (the mean of the border pixels decides).
/// 2. Contrast is stretched so that the background is 0 and the darkest ink 255.
/// 3. The image is cropped to the bounding box of the ink.
/// 4. The crop is resized (Lanczos3) so that its longer side is 20 pixels.
/// 5. It is pasted into a black 28×28 field so that its centre of mass, measured with pixel `i`
///    covering `[i, i + 1)`, lies within half a pixel of the field's centre (14, 14).
pub fn to_mnist(gray: &GrayImage) -> Result<GrayImage> {
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        bail!("the image is empty ({w}×{h} pixels)");
    }
    let border = border_mean(gray);
    let mut img = gray.clone();
    if border > 127.0 {
        imageops::invert(&mut img);
    }
    let background = border.min(255.0 - border).round() as u8;
    let peak = img.pixels().map(|p| p[0]).max().unwrap_or(0);
    if peak <= background.saturating_add(INK_THRESHOLD) {
        bail!("no digit found: the image has no ink that stands out from its background");
    }
    let scale = 255.0 / f32::from(peak - background);
    for p in img.pixels_mut() {
        p[0] = (f32::from(p[0].saturating_sub(background)) * scale)
            .round()
            .min(255.0) as u8;
    }

    let (x0, y0, x1, y1) = ink_box(&img).context("no digit found after contrast stretching")?;
    let crop = imageops::crop_imm(&img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (cw, ch) = crop.dimensions();
    let long = cw.max(ch) as f32;
    let nw = ((cw as f32 * FIT as f32 / long).round() as u32).clamp(1, FIT);
    let nh = ((ch as f32 * FIT as f32 / long).round() as u32).clamp(1, FIT);
    let digit = imageops::resize(&crop, nw, nh, FilterType::Lanczos3);

    let (cx, cy) = centre_of_mass(&digit).context("the digit vanished when it was scaled down")?;
    let centre = SIZE as f32 / 2.0;
    let dx = (centre - cx).round() as i64;
    let dy = (centre - cy).round() as i64;
    let mut out = GrayImage::new(SIZE, SIZE);
    // Pixels pushed past the edge by the centring are dropped, as a shift of the field would.
    imageops::overlay(&mut out, &digit, dx, dy);
    Ok(out)
}

/// The 784 pixels scaled to [0, 1], row-major, as the network's input.
pub fn to_input(img: &GrayImage) -> Vec<f32> {
    img.pixels().map(|p| f32::from(p[0]) / 255.0).collect()
}

fn border_mean(img: &GrayImage) -> f32 {
    let (w, h) = img.dimensions();
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            sum += u64::from(p[0]);
            n += 1;
        }
    }
    sum as f32 / n as f32
}

/// Inclusive bounding box `(x0, y0, x1, y1)` of the pixels above the ink threshold.
fn ink_box(img: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    for (x, y, &Luma([v])) in img.enumerate_pixels() {
        if v > INK_THRESHOLD {
            bbox = Some(match bbox {
                None => (x, y, x, y),
                Some((a, b, c, d)) => (a.min(x), b.min(y), c.max(x), d.max(y)),
            });
        }
    }
    bbox
}

/// Intensity-weighted centre `(x, y)`, with pixel `i` centred at `i + 0.5`.
pub fn centre_of_mass(img: &GrayImage) -> Option<(f32, f32)> {
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, &Luma([v])) in img.enumerate_pixels() {
        let v = f64::from(v);
        m += v;
        mx += v * (f64::from(x) + 0.5);
        my += v * (f64::from(y) + 0.5);
    }
    (m > 0.0).then(|| ((mx / m) as f32, (my / m) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A white canvas with a thick dark diagonal stroke and a bar, away from the centre.
    fn drawing(w: u32, h: u32) -> GrayImage {
        let mut img = GrayImage::from_pixel(w, h, Luma([245]));
        for t in 0..60 {
            for d in 0..6 {
                img.put_pixel(20 + t + d, 10 + t, Luma([20]));
            }
        }
        for x in 20..90 {
            for y in 70..76 {
                img.put_pixel(x, y, Luma([30]));
            }
        }
        img
    }

    fn ink_extent(img: &GrayImage) -> (u32, u32) {
        let (x0, y0, x1, y1) = ink_box(img).unwrap();
        (x1 - x0 + 1, y1 - y0 + 1)
    }

    #[test]
    fn dark_on_light_is_inverted_fitted_and_centred() {
        let out = to_mnist(&drawing(120, 100)).unwrap();
        assert_eq!(out.dimensions(), (28, 28));
        // Background black, ink white.
        assert_eq!(out.get_pixel(0, 0)[0], 0);
        assert_eq!(out.get_pixel(27, 27)[0], 0);
        assert!(out.pixels().map(|p| p[0]).max().unwrap() > 200);
        // The longer side of the ink is 20 pixels (give or take the resampling's soft edge).
        let (w, h) = ink_extent(&out);
        assert!((19..=21).contains(&w.max(h)), "ink extent {w}×{h}");
        let (cx, cy) = centre_of_mass(&out).unwrap();
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "centre ({cx}, {cy})"
        );
    }

    #[test]
    fn light_on_dark_is_kept_and_aspect_ratio_preserved() {
        // A tall white bar 10 wide, 40 high, on black: becomes 5×20 after fitting.
        let mut img = GrayImage::new(64, 64);
        for x in 5..15 {
            for y in 3..43 {
                img.put_pixel(x, y, Luma([255]));
            }
        }
        let out = to_mnist(&img).unwrap();
        let (w, h) = ink_extent(&out);
        assert_eq!(h, 20);
        assert!((5..=7).contains(&w), "width {w}");
        let (cx, cy) = centre_of_mass(&out).unwrap();
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "centre ({cx}, {cy})"
        );
    }

    #[test]
    fn an_mnist_like_image_is_nearly_unchanged() {
        // A 20-high centred stroke on 28×28 black: preprocessing should keep it in place.
        let mut img = GrayImage::new(28, 28);
        for y in 4..24 {
            for x in 12..16 {
                img.put_pixel(x, y, Luma([255]));
            }
        }
        let out = to_mnist(&img).unwrap();
        let diff: u32 = out
            .pixels()
            .zip(img.pixels())
            .map(|(a, b)| u32::from(a[0].abs_diff(b[0])))
            .sum();
        assert!(diff < 255 * 8, "changed by {diff}");
    }

    #[test]
    fn blank_images_are_an_error() {
        let err = to_mnist(&GrayImage::from_pixel(30, 30, Luma([255]))).unwrap_err();
        assert!(err.to_string().contains("no digit"), "{err}");
        assert!(to_mnist(&GrayImage::new(30, 30)).is_err());
        assert!(to_mnist(&GrayImage::new(0, 0)).is_err());
    }

    #[test]
    fn files_round_trip_and_unreadable_files_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("digit.png");
        drawing(120, 100).save(&png).unwrap();
        let out = load_digit(&png).unwrap();
        assert_eq!(out, to_mnist(&drawing(120, 100)).unwrap());
        let input = to_input(&out);
        assert_eq!(input.len(), 784);
        assert!(input.iter().all(|v| (0.0..=1.0).contains(v)));

        // JPEG: lossy, so the result is close to, not equal to, the PNG's.
        let jpg = dir.path().join("digit.jpg");
        drawing(120, 100).save(&jpg).unwrap();
        let from_jpeg = load_digit(&jpg).unwrap();
        let (cx, cy) = centre_of_mass(&from_jpeg).unwrap();
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "({cx}, {cy})"
        );
        let diff: u32 = from_jpeg
            .pixels()
            .zip(out.pixels())
            .map(|(a, b)| u32::from(a[0].abs_diff(b[0])))
            .sum();
        assert!(diff < 784 * 12, "JPEG result differs by {diff}");

        let garbage = dir.path().join("garbage.png");
        std::fs::write(&garbage, b"this is not a picture").unwrap();
        let err = format!("{:#}", load_digit(&garbage).unwrap_err());
        assert!(err.contains("garbage.png"), "{err}");
        let err = format!(
            "{:#}",
            load_digit(&dir.path().join("missing.png")).unwrap_err()
        );
        assert!(err.contains("missing.png"), "{err}");
    }
}
