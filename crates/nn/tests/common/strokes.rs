//! Ten digits drawn from line segments, MNIST-like: white strokes about 3 pixels wide on black,
//! within the middle 20×20 pixels. For tests that show the built-in model a digit without the
//! MNIST files (the unit tests of `explain` include this file too).

use ndarray::Array2;

/// Half the stroke width, in pixels.
const HALF_WIDTH: f32 = 1.3;

/// The digits 0-9, each an image 28×28 with pixels in [0, 1].
pub fn stroke_digits() -> Vec<(usize, Array2<f32>)> {
    let ring = |cx: f32, cy: f32, rx: f32, ry: f32| -> Vec<(f32, f32)> {
        (0..=24)
            .map(|i| {
                let a = i as f32 * std::f32::consts::TAU / 24.0;
                (cx + rx * a.cos(), cy + ry * a.sin())
            })
            .collect()
    };
    let digits: [Vec<Vec<(f32, f32)>>; 10] = [
        vec![ring(14.0, 14.0, 5.5, 8.5)],
        vec![vec![(14.5, 5.0), (13.5, 23.0)]],
        vec![vec![
            (9.0, 9.0),
            (11.0, 6.0),
            (15.0, 5.0),
            (19.0, 7.0),
            (19.0, 11.0),
            (9.0, 22.0),
            (21.0, 22.0),
        ]],
        vec![vec![
            (9.0, 6.0),
            (15.0, 5.0),
            (19.0, 8.0),
            (14.0, 13.0),
            (19.0, 17.0),
            (15.0, 22.0),
            (9.0, 21.0),
        ]],
        vec![
            vec![(17.0, 5.0), (8.0, 17.0), (21.0, 17.0)],
            vec![(17.0, 5.0), (17.0, 23.0)],
        ],
        vec![vec![
            (19.0, 5.0),
            (10.0, 5.0),
            (9.0, 13.0),
            (15.0, 12.0),
            (19.0, 15.0),
            (18.0, 20.0),
            (14.0, 22.0),
            (9.0, 21.0),
        ]],
        vec![
            vec![(17.0, 5.0), (12.0, 9.0), (9.5, 16.0)],
            ring(14.0, 17.5, 4.5, 4.5),
        ],
        vec![vec![(8.0, 6.0), (20.0, 6.0), (12.0, 23.0)]],
        vec![ring(14.0, 9.5, 4.0, 4.0), ring(14.0, 18.5, 4.5, 4.5)],
        vec![ring(14.0, 10.0, 4.5, 4.5), vec![(18.5, 10.0), (17.0, 23.0)]],
    ];
    digits
        .iter()
        .enumerate()
        .map(|(label, lines)| (label, draw(lines)))
        .collect()
}

/// Polylines rasterised with a soft edge: a pixel's value falls from 1 to 0 over the half
/// pixel around [`HALF_WIDTH`] from the nearest line.
fn draw(lines: &[Vec<(f32, f32)>]) -> Array2<f32> {
    Array2::from_shape_fn((28, 28), |(i, j)| {
        let p = (j as f32 + 0.5, i as f32 + 0.5);
        let d = lines
            .iter()
            .flat_map(|line| line.windows(2).map(|w| distance(p, w[0], w[1])))
            .fold(f32::INFINITY, f32::min);
        (HALF_WIDTH + 0.5 - d).clamp(0.0, 1.0)
    })
}

/// Distance from `p` to the segment from `a` to `b`.
fn distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = ((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy).max(1e-6);
    let t = t.clamp(0.0, 1.0);
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}
