//! The training loop on small synthetic data: it learns, a resumed run equals an uninterrupted
//! one bit for bit, the same seed gives the same metrics and weights on any number of threads,
//! and bad settings or a diverging loss stop training with a clear error.

mod common;

use common::synthetic;
use nn::{
    AugmentConfig, BatchSource, EpochMetrics, InMemorySource, LrSchedule, TrainConfig, TrainError,
    Trainer, IMAGE_LEN,
};

fn small_config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 32,
        eval_batch_size: 100,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn assert_same_metrics(a: &[EpochMetrics], b: &[EpochMetrics]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(x.same_results(y), "metrics differ:\n{x:?}\n{y:?}");
    }
}

fn assert_same_weights(a: &Trainer, b: &Trainer) {
    for (p, q) in a.model().params().iter().zip(b.model().params()) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(p.value), bits(q.value), "{} differs", p.name);
    }
}

#[test]
fn learns_the_synthetic_classes() {
    let train = synthetic(1000, 1);
    let test = synthetic(200, 2);
    let mut t = Trainer::new(TrainConfig {
        batch_size: 16,
        lr: 0.1,
        ..small_config()
    })
    .unwrap();
    let outcome = t.fit(&train, &test, None, &mut ()).unwrap();
    assert_eq!(outcome.epochs_done, 3);
    let h = t.history().to_vec();
    for m in &h {
        println!("{}", serde_json::to_string(m).unwrap());
    }
    assert!(
        h[2].test_accuracy > 0.9,
        "test accuracy {}",
        h[2].test_accuracy
    );
    assert!(h[2].train_loss < h[0].train_loss);
    // Evaluating the final model again gives the reported test metrics.
    let e = t.evaluate(&test);
    assert_eq!(e.accuracy, h[2].test_accuracy);
    assert_eq!(e.total, 200);
    let confusion_total: u64 = e.confusion.iter().flatten().sum();
    assert_eq!(confusion_total, 200);
    let diagonal: u64 = (0..10).map(|k| e.confusion[k][k]).sum();
    assert_eq!(diagonal as usize, e.correct);
}

/// 2 epochs in one go vs 1 epoch, save, load into a fresh trainer, 1 more epoch.
fn resume_matches(config: TrainConfig, with_val: bool) {
    let train = synthetic(300, 3);
    let test = synthetic(100, 4);
    let val_data = synthetic(100, 5);
    let val: Option<&dyn BatchSource> = if with_val { Some(&val_data) } else { None };

    let mut straight = Trainer::new(config.clone()).unwrap();
    straight.train_epoch(&train, &test, val, &mut ()).unwrap();
    straight.train_epoch(&train, &test, val, &mut ()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut first = Trainer::new(config).unwrap();
    first.train_epoch(&train, &test, val, &mut ()).unwrap();
    let bytes = first
        .training_state_bytes(&path, Default::default())
        .unwrap();
    nn::write_atomic(&path, &bytes).unwrap();
    drop(first);
    let mut resumed = Trainer::load_training_state(&path).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    resumed.train_epoch(&train, &test, val, &mut ()).unwrap();

    assert_same_metrics(straight.history(), resumed.history());
    assert_same_weights(&straight, &resumed);
    match (straight.best(), resumed.best()) {
        (None, None) => assert!(!with_val),
        (Some(a), Some(b)) => {
            assert_eq!(a.epoch, b.epoch);
            assert_eq!(a.val_loss.to_bits(), b.val_loss.to_bits());
        }
        _ => panic!("best model kept in one run only"),
    }
    // The resume file also loads as plain PyTorch-named weights.
    nn::LeNet5::from_weights_file(&path).unwrap();
}

#[test]
fn resume_gives_the_same_metrics_as_an_uninterrupted_run() {
    let config = TrainConfig {
        epochs: 2,
        ..small_config()
    };
    resume_matches(config, false);
}

#[test]
fn resume_with_augmentation_validation_and_step_schedule() {
    let config = TrainConfig {
        epochs: 2,
        augment: Some(AugmentConfig::default()),
        schedule: LrSchedule::Step {
            every_epochs: 1,
            gamma: 0.5,
        },
        early_stopping: Some(3),
        ..small_config()
    };
    resume_matches(config, true);
}

/// A run with `config` on a rayon pool of `threads` threads.
fn run_on(
    threads: usize,
    config: &TrainConfig,
    train: &InMemorySource,
    test: &InMemorySource,
) -> Trainer {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut t = Trainer::new(config.clone()).unwrap();
        t.fit(train, test, None, &mut ()).unwrap();
        t
    })
}

/// The same seed gives the same bits on 1, 2 and 3 threads, twice on 2: the data-parallel
/// step's shards depend on the batch size alone (batch 32: two shards of 16; batch 64: four;
/// the epochs' last batches, 12 and 44 images, one shard and two).
#[test]
fn same_seed_gives_identical_runs_on_any_thread_count() {
    let train = synthetic(300, 6);
    let test = synthetic(100, 7);
    for batch_size in [32, 64] {
        let config = TrainConfig {
            epochs: 2,
            batch_size,
            augment: Some(AugmentConfig::default()),
            ..small_config()
        };
        let a = run_on(2, &config, &train, &test);
        for threads in [1, 2, 3] {
            let b = run_on(threads, &config, &train, &test);
            assert_same_metrics(a.history(), b.history());
            assert_same_weights(&a, &b);
        }

        // A different seed gives a different run (the comparison above can fail).
        let other_seed = TrainConfig {
            seed: 12,
            ..config.clone()
        };
        let c = run_on(2, &other_seed, &train, &test);
        assert!(!a.history()[0].same_results(&c.history()[0]));
    }
}

#[test]
fn non_finite_loss_stops_with_a_clear_error() {
    let n = 64;
    let train = InMemorySource::new(vec![f32::NAN; n * IMAGE_LEN], vec![0; n]);
    let test = synthetic(50, 8);
    let mut t = Trainer::new(small_config()).unwrap();
    let err = t.train_epoch(&train, &test, None, &mut ()).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFiniteLoss {
                epoch: 1,
                batch: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("diverged"), "{err}");
}

#[test]
fn observer_sees_every_batch_and_epoch() {
    #[derive(Default)]
    struct Log {
        started: Vec<(usize, usize)>,
        batches: usize,
        evals: usize,
        finished: Vec<usize>,
    }
    impl nn::TrainObserver for Log {
        fn epoch_started(&mut self, epoch: usize, batches: usize) {
            self.started.push((epoch, batches));
        }
        fn batch_finished(&mut self, _: usize, _: usize, loss: f32) {
            assert!(loss.is_finite());
            self.batches += 1;
        }
        fn evaluation_started(&mut self, _: usize) {
            self.evals += 1;
        }
        fn epoch_finished(&mut self, m: &EpochMetrics) {
            self.finished.push(m.epoch);
        }
    }
    let train = synthetic(100, 9);
    let test = synthetic(30, 10);
    let mut log = Log::default();
    let mut t = Trainer::new(TrainConfig {
        epochs: 2,
        ..small_config()
    })
    .unwrap();
    t.fit(&train, &test, None, &mut log).unwrap();
    // 100 examples in batches of 32: 4 batches, the last one of 4 examples.
    assert_eq!(log.started, vec![(1, 4), (2, 4)]);
    assert_eq!(log.batches, 8);
    assert_eq!(log.evals, 2);
    assert_eq!(log.finished, vec![1, 2]);
}

#[test]
fn bad_settings_are_rejected() {
    let bad = [
        TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        },
        TrainConfig {
            lr: -1.0,
            ..TrainConfig::default()
        },
        TrainConfig {
            momentum: 1.5,
            ..TrainConfig::default()
        },
        TrainConfig {
            early_stopping: Some(0),
            ..TrainConfig::default()
        },
    ];
    for c in bad {
        assert!(
            matches!(
                Trainer::new(c.clone()),
                Err(TrainError::InvalidConfig { .. })
            ),
            "{c:?} accepted"
        );
    }
    let train = synthetic(40, 1);
    let mut t = Trainer::new(TrainConfig {
        early_stopping: Some(2),
        ..small_config()
    })
    .unwrap();
    let err = t.train_epoch(&train, &train, None, &mut ()).unwrap_err();
    assert!(matches!(err, TrainError::EarlyStoppingWithoutValidation));
    let empty = InMemorySource::default();
    let err = t.train_epoch(&empty, &train, None, &mut ()).unwrap_err();
    assert!(matches!(err, TrainError::EmptySource { which: "training" }));
}

#[test]
fn default_config_round_trips_through_json() {
    let c = TrainConfig::default();
    let s = serde_json::to_string(&c).unwrap();
    let back: TrainConfig = serde_json::from_str(&s).unwrap();
    assert_eq!(c, back);
    println!("{s}");
}

/// `epoch_ended` sees the trainer after each epoch, and `Break` ends `fit` cleanly.
#[test]
fn observer_can_stop_fit_after_an_epoch() {
    struct StopAfter(usize, Vec<usize>);
    impl nn::TrainObserver for StopAfter {
        fn epoch_ended(&mut self, t: &Trainer) -> std::ops::ControlFlow<()> {
            self.1.push(t.history().len());
            if t.epochs_done() >= self.0 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        }
    }
    let train = synthetic(64, 9);
    let test = synthetic(30, 10);
    let mut t = Trainer::new(small_config()).unwrap();
    let mut stop = StopAfter(2, Vec::new());
    let outcome = t.fit(&train, &test, None, &mut stop).unwrap();
    assert_eq!(outcome.epochs_done, 2);
    assert_eq!(stop.1, vec![1, 2]);
    assert!(
        !t.is_finished(),
        "stopped before the 3 epochs of the config"
    );
}

/// Weights and state saved as a pair both record the epoch (the weights under
/// [`nn::EPOCHS_DONE_KEY`], the state as the length of its history, which it does not store
/// twice), and the pair loads back.
#[test]
fn weights_and_state_saved_as_a_pair_record_the_epoch() {
    let train = synthetic(64, 9);
    let test = synthetic(30, 10);
    let mut t = Trainer::new(small_config()).unwrap();
    t.train_epoch(&train, &test, None, &mut ()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (w, s) = (dir.path().join("w.st"), dir.path().join("w.state.st"));
    let extra = [("dataset".to_string(), "mnist".to_string())].into();
    let (wb, sb) = t.pair_bytes(&w, &s, extra).unwrap();
    nn::write_atomic_all(&[(&s, &sb), (&w, &wb)]).unwrap();
    for path in [&w, &s] {
        let bytes = std::fs::read(path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        let epochs = meta.get(nn::EPOCHS_DONE_KEY).map(String::as_str);
        let expected = if path == &w { Some("1") } else { None };
        assert_eq!(epochs, expected, "{}", path.display());
        assert_eq!(meta["dataset"], "mnist");
    }
    let back = Trainer::load_training_state(&s).unwrap();
    assert_eq!(back.epochs_done(), 1);
    assert_same_weights(&t, &back);
    nn::LeNet5::from_weights_file(&w).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}
