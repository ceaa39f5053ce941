//! The saliency map and the adversarial search (`nn::explain`) on the built-in model, which was
//! trained on MNIST: on ten digits drawn from strokes always, and on the first MNIST test images
//! when LENET_DATA_DIR is set. Masking the most salient pixels moves the predicted class's
//! logit more than masking as many random pixels, and the search stays within ε of the image
//! and inside [0, 1] and reaches its target on most images. The agreement of the saliency with
//! finite differences is tested next to the code (`src/explain/tests.rs`).

mod common;

use std::path::Path;

use common::strokes::stroke_digits;
use ndarray::{Array2, Array4, ArrayView2};
use nn::explain::{saliency, targeted_attack, AttackConfig};
use nn::LeNet5;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Pixels masked, out of 784.
const MASKED: usize = 20;
/// Random sets of [`MASKED`] pixels per image, averaged.
const RANDOM_DRAWS: usize = 20;
/// MNIST test images used when LENET_DATA_DIR is set.
const MNIST_IMAGES: usize = 20;

fn built_in() -> LeNet5 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lenet-cli/assets/lenet5-mnist.safetensors"
    );
    LeNet5::from_weights_file(path).expect("the built-in model loads")
}

/// The first `n` MNIST test images with their labels, or `None` (and a message) without
/// LENET_DATA_DIR.
fn mnist_test_images(n: usize) -> Option<Vec<(usize, Array2<f32>)>> {
    let Some(root) = std::env::var_os("LENET_DATA_DIR").filter(|v| !v.is_empty()) else {
        println!("skipped: LENET_DATA_DIR is not set");
        return None;
    };
    let dir = Path::new(&root).join("mnist");
    let split = mnist::Split::read(
        &mnist::locate_file(&dir, mnist::TEST_IMAGES),
        &mnist::locate_file(&dir, mnist::TEST_LABELS),
    )
    .expect("the MNIST test files under LENET_DATA_DIR");
    let mut pixels = vec![0.0f32; n * 784];
    let mut labels = vec![0usize; n];
    split.write_batch(&(0..n).collect::<Vec<_>>(), &mut pixels, &mut labels);
    let images = pixels
        .chunks_exact(784)
        .map(|p| Array2::from_shape_vec((28, 28), p.to_vec()).unwrap());
    Some(labels.into_iter().zip(images).collect())
}

/// The logits of one image.
fn logits(model: &mut LeNet5, image: ArrayView2<'_, f32>) -> Vec<f32> {
    let x: Array4<f32> = image
        .to_owned()
        .into_shape_with_order((1, 1, 28, 28))
        .unwrap();
    model.forward_inference(x.view()).row(0).to_vec()
}

/// |change of logit `class`| when the pixels `which` (row-major indices) are set to 0.
fn masked_change(model: &mut LeNet5, image: &Array2<f32>, class: usize, which: &[usize]) -> f64 {
    let before = logits(model, image.view())[class];
    let mut masked = image.clone();
    for &p in which {
        masked[[p / 28, p % 28]] = 0.0;
    }
    (logits(model, masked.view())[class] - before).abs() as f64
}

/// Mean |change of the predicted class's logit| over `images` when pixels are set to 0: their
/// [`MASKED`] most salient pixels, [`MASKED`] random ones, and [`MASKED`] random ones among
/// those with ink (a stricter baseline: setting a blank pixel to 0 changes nothing).
struct Masking {
    salient: f64,
    random: f64,
    random_ink: f64,
}

fn masking(model: &mut LeNet5, images: &[(usize, Array2<f32>)]) -> Masking {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut m = Masking {
        salient: 0.0,
        random: 0.0,
        random_ink: 0.0,
    };
    let n = images.len() as f64;
    for (_, image) in images {
        let class = nn::argmax(logits(model, image.view()));
        let map = saliency(model, image.view(), class);
        let map = map.as_slice().unwrap();
        let mut order: Vec<usize> = (0..784).collect();
        order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
        m.salient += masked_change(model, image, class, &order[..MASKED]) / n;
        let ink: Vec<usize> = (0..784)
            .filter(|&p| image.as_slice().unwrap()[p] > 0.0)
            .collect();
        for _ in 0..RANDOM_DRAWS {
            let which = sample(&mut rng, 784, MASKED).into_vec();
            m.random += masked_change(model, image, class, &which) / (RANDOM_DRAWS as f64 * n);
            let which: Vec<usize> = sample(&mut rng, ink.len(), MASKED)
                .iter()
                .map(|i| ink[i])
                .collect();
            m.random_ink += masked_change(model, image, class, &which) / (RANDOM_DRAWS as f64 * n);
        }
    }
    m
}

fn check_masking(images: &[(usize, Array2<f32>)], what: &str) {
    let m = masking(&mut built_in(), images);
    println!(
        "{what}: masking the {MASKED} most salient pixels changes the logit by {:.3} on average, \
         {MASKED} random pixels by {:.3}, {MASKED} random pixels with ink by {:.3}",
        m.salient, m.random, m.random_ink
    );
    assert!(m.salient > 2.0 * m.random, "{what}: salient vs random");
    assert!(m.salient > m.random_ink, "{what}: salient vs random ink");
}

#[test]
fn masking_salient_pixels_moves_the_logit_more_than_random_ones_on_stroke_digits() {
    check_masking(&stroke_digits(), "10 stroke digits");
}

#[test]
fn masking_salient_pixels_moves_the_logit_more_than_random_ones_on_mnist() {
    let Some(images) = mnist_test_images(MNIST_IMAGES) else {
        return;
    };
    check_masking(&images, &format!("{MNIST_IMAGES} MNIST test images"));
}

/// Runs the search for every target but the predicted class on every image, checks the bounds
/// of every answer, and returns (searches, reached, steps taken by those that reached).
fn attack_all(
    images: &[(usize, Array2<f32>)],
    epsilon: f32,
    steps: usize,
) -> (usize, usize, usize) {
    let mut model = built_in();
    let (mut searches, mut reached, mut steps_to_reach) = (0, 0, 0);
    for (_, image) in images {
        let original = nn::argmax(logits(&mut model, image.view()));
        for target in (0..10).filter(|&t| t != original) {
            let config = AttackConfig::new(target, epsilon, steps);
            let a = targeted_attack(&mut model, image.view(), &config);
            assert!(a.adversarial.iter().all(|v| (0.0..=1.0).contains(v)));
            let farthest = (&a.adversarial - image)
                .iter()
                .fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(
                farthest <= epsilon + 1e-6,
                "moved a pixel by {farthest} > ε = {epsilon}"
            );
            assert_eq!(a.perturbation, &a.adversarial - image);
            assert_eq!(
                a.prediction,
                nn::argmax(logits(&mut model, a.adversarial.view()))
            );
            assert_eq!(a.reached, a.prediction == target);
            assert!(a.steps_taken <= steps);
            searches += 1;
            if a.reached {
                reached += 1;
                steps_to_reach += a.steps_taken;
            }
        }
    }
    (searches, reached, steps_to_reach)
}

fn check_attack(images: &[(usize, Array2<f32>)], what: &str) {
    const STEPS: usize = 100;
    for epsilon in [0.1, 0.2, 0.3] {
        let (searches, reached, steps) = attack_all(images, epsilon, STEPS);
        println!(
            "{what}, ε = {epsilon}, at most {STEPS} steps: target reached in {reached}/{searches} \
             searches, after {:.1} steps on average",
            steps as f64 / reached.max(1) as f64
        );
        if epsilon == 0.3 {
            assert!(
                reached * 10 >= searches * 8,
                "{what}: only {reached}/{searches}"
            );
        }
    }
}

#[test]
fn the_adversarial_search_stays_in_bounds_and_reaches_most_targets_on_stroke_digits() {
    check_attack(&stroke_digits()[..5], "5 stroke digits");
}

#[test]
fn the_adversarial_search_stays_in_bounds_and_reaches_most_targets_on_mnist() {
    let Some(images) = mnist_test_images(10) else {
        return;
    };
    check_attack(&images, "10 MNIST test images");
}

/// The target: on 100 MNIST test digits, one target each (spread over the other nine
/// classes), the search with ε = 0.3 reaches its target at least 90 times.
#[test]
fn the_adversarial_search_fools_at_least_90_of_100_mnist_digits_at_epsilon_0_3() {
    let Some(images) = mnist_test_images(100) else {
        return;
    };
    let mut model = built_in();
    let mut reached = 0;
    for (i, (_, image)) in images.iter().enumerate() {
        let original = nn::argmax(logits(&mut model, image.view()));
        let target = (original + 1 + i % 9) % 10;
        let a = targeted_attack(
            &mut model,
            image.view(),
            &AttackConfig::new(target, 0.3, 100),
        );
        assert_eq!(a.reached, a.prediction == target);
        reached += usize::from(a.reached);
    }
    println!("100 MNIST test digits, one target each, ε = 0.3: target reached {reached}/100");
    assert!(
        reached >= 90,
        "target reached on only {reached} of 100 digits"
    );
}

#[test]
fn the_built_in_model_reads_most_stroke_digits() {
    let mut model = built_in();
    let read: Vec<usize> = stroke_digits()
        .iter()
        .map(|(_, image)| nn::argmax(logits(&mut model, image.view())))
        .collect();
    println!("stroke digits 0-9 read as {read:?}");
    let right = read.iter().enumerate().filter(|(d, r)| d == *r).count();
    assert!(
        right >= 8,
        "only {right} of 10 stroke digits read right: {read:?}"
    );
}
