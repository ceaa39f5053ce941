//! Turns a photo or drawing of one digit into a 28×28 MNIST-style image, the way MNIST itself was
//! made (LeCun et al.): white ink on black, the digit scaled to fit a 20×20 box keeping its aspect
//! ratio, then placed so that its centre of mass is the centre of the 28×28 field.
//!
//! The entry points take the encoded file as bytes, so that `lenet predict` (files) and
//! `lenet serve` (uploads) share them: [`decode_image`] checks and decodes a PNG or JPEG,
//! [`prepare_digit`] also makes the 28×28 image, and [`digit_input`] gives the network's 784
//! inputs. Their [`ImageError`] tells the kinds of bad input apart (unknown format, too large,
//! corrupt, no digit), so that a server can map each to an HTTP status.

use std::fmt;
use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Limits, Luma};

/// Side of the output image.
pub const SIZE: u32 = 28;
/// Side of the box the digit is scaled into.
const FIT: u32 = 20;
/// After contrast stretching, pixels above this (of 255) count as ink for the bounding box; the
/// margin keeps JPEG noise and paper texture out of the box.
const INK_THRESHOLD: u8 = 40;
/// Largest accepted width and height, in pixels, read from the header before any pixel is decoded.
pub const MAX_SIDE: u32 = 4096;
/// Most bytes the decoded pixels may take: a `MAX_SIDE`² image of 8-bit RGBA (or 16-bit gray
/// and alpha). A decode holds about twice this at its peak (the pixels and their grayscale).
pub const MAX_ALLOC: u64 = MAX_SIDE as u64 * MAX_SIDE as u64 * 4;
/// Largest image file `load_digit` reads.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why bytes could not be turned into a digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Neither PNG nor JPEG.
    UnknownFormat,
    /// The header claims more than [`MAX_SIDE`] pixels along a side; nothing was decoded.
    TooLarge {
        /// Width in the header.
        width: u32,
        /// Height in the header.
        height: u32,
    },
    /// The decoded pixels would take more than [`MAX_ALLOC`] bytes; nothing was decoded.
    TooMuchMemory {
        /// Bytes the decoded pixels need.
        needed: u64,
    },
    /// A PNG or JPEG whose data cannot be decoded (truncated, bad checksum, ...).
    Corrupt(String),
    /// The image has no pixels.
    Empty,
    /// The image has no ink that stands out from its background.
    NoDigit,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::UnknownFormat => write!(f, "not a PNG or JPEG image"),
            ImageError::TooLarge { width, height } => write!(
                f,
                "the image is {width}×{height} pixels; at most {MAX_SIDE}×{MAX_SIDE} are accepted"
            ),
            ImageError::TooMuchMemory { needed } => write!(
                f,
                "the decoded image would take {} MiB; at most {} MiB are accepted (a \
                 {MAX_SIDE}×{MAX_SIDE} image of 8-bit RGBA)",
                needed.div_ceil(1 << 20),
                MAX_ALLOC >> 20
            ),
            ImageError::Corrupt(why) => write!(f, "corrupt image data: {why}"),
            ImageError::Empty => write!(f, "the image is empty (0 pixels)"),
            ImageError::NoDigit => write!(
                f,
                "no digit found: the image has no ink that stands out from its background"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// Decodes a PNG or JPEG to grayscale, turned upright as its EXIF orientation says (phones
/// store a photo as the sensor saw it and record the turn), with any transparency composited
/// onto white paper.
///
/// Nothing is decoded before these checks: the dimensions from the header (at most
/// [`MAX_SIDE`] a side), the memory the decoded pixels need (at most [`MAX_ALLOC`] bytes), and
/// for a JPEG that its data reaches the end-of-image marker (the decoder would fill a missing
/// end with gray).
pub fn decode_image(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png) => {}
        Some(ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        _ => return Err(ImageError::UnknownFormat),
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    if decoder.total_bytes() > MAX_ALLOC {
        return Err(ImageError::TooMuchMemory {
            needed: decoder.total_bytes(),
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(on_white(&image))
}

/// Refuses a JPEG whose data stops before its end-of-image marker. Walks the markers from the
/// start: segments are skipped by their length (so an EXIF thumbnail's own end marker does
/// not count), the entropy-coded data after a start-of-scan up to the next marker.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), ImageError> {
    let truncated = || {
        ImageError::Corrupt("the JPEG data ends before its end-of-image marker (truncated)".into())
    };
    let mut pos = 2; // after the start-of-image marker
    loop {
        // A marker is 0xFF (possibly repeated as fill) and a code; stray bytes are skipped, as
        // decoders do.
        pos += bytes
            .get(pos..)
            .unwrap_or(&[])
            .iter()
            .position(|&b| b == 0xFF)
            .ok_or_else(truncated)?;
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *bytes.get(pos).ok_or_else(truncated)?;
        pos += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => continue, // no length follows
            _ => {}
        }
        let length = bytes.get(pos..pos + 2).ok_or_else(truncated)?;
        pos += usize::from(u16::from_be_bytes([length[0], length[1]]));
        if pos > bytes.len() {
            return Err(truncated());
        }
        if marker == 0xDA {
            pos = scan_end(bytes, pos).ok_or_else(truncated)?;
        }
    }
}

/// Where the entropy-coded data from `pos` ends: at the next marker other than a stuffed zero
/// (FF 00) or a restart (FF D0–D7); `None` if the data runs out first.
fn scan_end(bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let at = pos + bytes.get(pos..)?.iter().position(|&b| b == 0xFF)?;
        match *bytes.get(at + 1)? {
            0x00 | 0xD0..=0xD7 => pos = at + 2,
            _ => return Some(at),
        }
    }
}

fn corrupt(e: image::ImageError) -> ImageError {
    ImageError::Corrupt(e.to_string())
}

/// Grayscale, with transparent pixels shown over white: `v·a + 255·(1 − a)`.
fn on_white(image: &DynamicImage) -> GrayImage {
    if !image.color().has_alpha() {
        return image.to_luma8();
    }
    let la = image.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [v, a] = la.get_pixel(x, y).0;
        let (v, a) = (u32::from(v), u32::from(a));
        Luma([((v * a + 255 * (255 - a) + 127) / 255) as u8])
    })
}

/// [`decode_image`] then [`to_mnist`]: the 28×28 MNIST-style image of an encoded file.
pub fn prepare_digit(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    to_mnist(&decode_image(bytes)?)
}

/// The network's input for an encoded file: 784 values in [0, 1], row-major ([`prepare_digit`]
/// then [`to_input`]).
pub fn digit_input(bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
    Ok(to_input(&prepare_digit(bytes)?))
}

/// Reads a PNG or JPEG file and prepares it with [`prepare_digit`]. Only regular files of at most
/// [`MAX_FILE_BYTES`] are read (a FIFO or a device is refused before it is opened for reading).
#[cfg(test)]
pub fn load_digit(path: &Path) -> Result<GrayImage> {
    let bytes = read_image_file(path)?;
    prepare_digit(&bytes).with_context(|| format!("image {}", path.display()))
}

/// The network's input for a PNG or JPEG file: [`digit_input`] of its bytes, read as
/// [`load_digit`] reads them.
pub fn load_input(path: &Path) -> Result<Vec<f32>> {
    let bytes = read_image_file(path)?;
    digit_input(&bytes).with_context(|| format!("image {}", path.display()))
}

fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open image {}", path.display()))?;
    if !meta.is_file() {
        bail!("image {}: not a regular file", path.display());
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!(
            "image {}: larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES >> 20
        );
    }
    Ok(bytes)
}

/// Makes a 28×28 MNIST-style image from a grayscale picture of one digit.
///
/// 1. Dark ink on a light background is inverted (the mean of the border pixels decides).
/// 2. Contrast is stretched so that the background is 0 and the darkest ink 255.
/// 3. The image is cropped to the bounding box of the ink.
/// 4. The crop is resized (Lanczos3) so that its longer side is 20 pixels.
/// 5. It is pasted into a black 28×28 field so that its centre of mass, measured with pixel `i`
///    covering `[i, i + 1)`, lies within half a pixel of the field's centre (14, 14).
pub fn to_mnist(gray: &GrayImage) -> Result<GrayImage, ImageError> {
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::Empty);
    }
    let border = border_mean(gray);
    let mut img = gray.clone();
    if border > 127.0 {
        imageops::invert(&mut img);
    }
    let background = border.min(255.0 - border).round() as u8;
    let peak = img.pixels().map(|p| p[0]).max().unwrap_or(0);
    if peak <= background.saturating_add(INK_THRESHOLD) {
        return Err(ImageError::NoDigit);
    }
    let scale = 255.0 / f32::from(peak - background);
    for p in img.pixels_mut() {
        p[0] = (f32::from(p[0].saturating_sub(background)) * scale)
            .round()
            .min(255.0) as u8;
    }

    let (x0, y0, x1, y1) = ink_box(&img).ok_or(ImageError::NoDigit)?;
    let crop = imageops::crop_imm(&img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (cw, ch) = crop.dimensions();
    let long = cw.max(ch) as f32;
    let nw = ((cw as f32 * FIT as f32 / long).round() as u32).clamp(1, FIT);
    let nh = ((ch as f32 * FIT as f32 / long).round() as u32).clamp(1, FIT);
    let digit = imageops::resize(&crop, nw, nh, FilterType::Lanczos3);

    let (cx, cy) = centre_of_mass(&digit).ok_or(ImageError::NoDigit)?;
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

    /// PNG bytes of `img`, encoded in memory.
    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// CRC-32 (IEEE, as PNG chunks use), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG whose header claims `width`×`height` 8-bit gray pixels, followed by a few bytes of
    /// image data and the end chunk: decoding it in full would need width·height bytes.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        };
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no interlace
        chunk(b"IHDR", &ihdr);
        chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
        );
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        let start = std::time::Instant::now();
        let err = decode_image(&png_claiming(20_000, 20_000)).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooLarge {
                width: 20_000,
                height: 20_000
            }
        );
        assert!(err.to_string().contains("20000×20000"), "{err}");
        // Allocating and zeroing 400 MB alone would take far longer than this.
        assert!(start.elapsed().as_millis() < 200, "{:?}", start.elapsed());
        // At the limit the header is accepted (and this tiny data then fails as corrupt).
        let err = decode_image(&png_claiming(MAX_SIDE, 1)).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt(_)), "{err:?}");
        let err = decode_image(&png_claiming(1, MAX_SIDE + 1)).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn bad_bytes_are_told_apart() {
        assert_eq!(
            decode_image(b"this is not a picture"),
            Err(ImageError::UnknownFormat)
        );
        // A GIF is a known format, but not one we accept.
        assert_eq!(
            decode_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
            Err(ImageError::UnknownFormat)
        );
        let png = png_bytes(&DynamicImage::ImageLuma8(drawing(120, 100)));
        let err = decode_image(&png[..png.len() / 2]).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt(_)), "{err:?}");
        let blank = png_bytes(&DynamicImage::ImageLuma8(GrayImage::from_pixel(
            40,
            40,
            Luma([250]),
        )));
        assert_eq!(digit_input(&blank), Err(ImageError::NoDigit));
        let input = digit_input(&png).unwrap();
        assert_eq!(input.len(), 784);
        assert_eq!(input, to_input(&to_mnist(&drawing(120, 100)).unwrap()));
    }

    /// `img` as a JPEG of quality 95.
    fn jpeg_bytes(img: &GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(img)
            .unwrap();
        out
    }

    /// `jpeg` with an EXIF segment (APP1) that records `orientation` (1–8) and holds a
    /// thumbnail (a whole JPEG, end marker included), as a phone writes it.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec(); // TIFF header, 1 entry
        exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, no next IFD
        exif.extend_from_slice(&jpeg_bytes(&GrayImage::from_pixel(8, 8, Luma([128]))));
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
        out.extend_from_slice(&exif);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// Mean absolute difference of two images of the same size.
    fn mean_diff(a: &GrayImage, b: &GrayImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let sum: u64 = a
            .pixels()
            .zip(b.pixels())
            .map(|(p, q)| u64::from(p[0].abs_diff(q[0])))
            .sum();
        sum as f64 / f64::from(a.width() * a.height())
    }

    #[test]
    fn a_truncated_jpeg_is_refused_wherever_it_is_cut() {
        let jpeg = jpeg_bytes(&drawing(120, 100));
        assert!(decode_image(&jpeg).is_ok());
        // Data after the end marker (as some cameras append) is not a truncation.
        assert!(decode_image(&[jpeg.as_slice(), b"trailer"].concat()).is_ok());
        // A phone photo: its EXIF segment ends with a thumbnail's own end marker.
        let photo = with_orientation(&jpeg, 1);
        for cut in (3..photo.len()).step_by(7).chain([photo.len() - 1]) {
            let err = decode_image(&photo[..cut]).unwrap_err();
            assert!(
                matches!(err, ImageError::Corrupt(_)),
                "cut at {cut}: {err:?}"
            );
        }
        let err = decode_image(&photo[..photo.len() * 2 / 3]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn the_exif_orientation_turns_the_photo_upright() {
        let upright = drawing(120, 100);
        // What the sensor stored, for each orientation the EXIF data may record.
        let stored = [
            (1, upright.clone()),
            (3, imageops::rotate180(&upright)),
            (6, imageops::rotate270(&upright)),
            (8, imageops::rotate90(&upright)),
            (2, imageops::flip_horizontal(&upright)),
        ];
        for (orientation, pixels) in stored {
            let jpeg = with_orientation(&jpeg_bytes(&pixels), orientation);
            let decoded = decode_image(&jpeg).unwrap();
            assert_eq!(
                decoded.dimensions(),
                (120, 100),
                "orientation {orientation}"
            );
            let diff = mean_diff(&decoded, &upright);
            assert!(diff < 4.0, "orientation {orientation}: differs by {diff}");
        }
    }

    #[test]
    fn an_image_too_large_for_memory_is_refused_before_decoding() {
        // 4096×4096 16-bit RGB: within the side limit, but 96 MiB of pixels.
        let img = image::ImageBuffer::<image::Rgb<u16>, _>::new(MAX_SIDE, MAX_SIDE);
        let png = png_bytes(&DynamicImage::ImageRgb16(img));
        let err = decode_image(&png).unwrap_err();
        assert_eq!(err, ImageError::TooMuchMemory { needed: 96 << 20 });
        assert!(
            err.to_string().contains("96 MiB") && err.to_string().contains("64 MiB"),
            "{err}"
        );
    }

    #[test]
    fn transparency_is_composited_onto_white() {
        // Black ink, opaque, on a transparent background whose hidden colour is also black.
        let ink = drawing(120, 100);
        let rgba = image::RgbaImage::from_fn(120, 100, |x, y| {
            let opaque = ink.get_pixel(x, y)[0] < 128;
            image::Rgba([0, 0, 0, if opaque { 255 } else { 0 }])
        });
        let png = png_bytes(&DynamicImage::ImageRgba8(rgba));
        let gray = decode_image(&png).unwrap();
        assert_eq!(gray.get_pixel(0, 0)[0], 255);
        assert_eq!(gray.get_pixel(25, 10)[0], 0);
        let out = prepare_digit(&png).unwrap();
        let (cx, cy) = centre_of_mass(&out).unwrap();
        assert!((cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("digit.png");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening a FIFO with no writer would block forever: the check must come first.
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = format!("{:#}", load_digit(path).unwrap_err());
            assert!(err.contains("not a regular file"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
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
