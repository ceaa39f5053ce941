//! PyTorch's default initialisation for Conv2d and Linear.
//!
//! `reset_parameters` uses kaiming_uniform(a = √5) for the weight, which works out to
//! U(−1/√fan_in, 1/√fan_in), and the same bound for the bias. fan_in is in_channels·kh·kw for a
//! convolution and in_features for a linear layer.

use rand::Rng;

/// Fills `values` with independent draws from U(−1/√fan_in, 1/√fan_in).
pub fn uniform_fan_in<R: Rng + ?Sized>(values: &mut [f32], fan_in: usize, rng: &mut R) {
    let bound = 1.0 / (fan_in as f64).sqrt();
    for v in values.iter_mut() {
        // Drawn in f64 and rounded, so the bound itself is exact to f32 precision.
        *v = rng.gen_range(-bound..bound) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn draws_stay_inside_the_bound_and_fill_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = vec![0.0f32; 10_000];
        uniform_fan_in(&mut v, 25, &mut rng);
        let bound = 0.2f32;
        assert!(v.iter().all(|x| x.abs() <= bound));
        let max = v.iter().cloned().fold(f32::MIN, f32::max);
        let min = v.iter().cloned().fold(f32::MAX, f32::min);
        assert!(max > 0.19 && min < -0.19, "min {min} max {max}");
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.01, "mean {mean}");
    }
}
