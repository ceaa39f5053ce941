//! The IDX reader on byte strings built here: one good file of each kind, then every kind of
//! corruption, each of which must give its own error variant and name the file and the field.

mod common;

use common::{good_images, good_labels, gzip, images_idx, labels_idx};
use mnist::idx::{parse_images, parse_labels, read_images, MAX_ITEMS};
use mnist::IdxError;

/// Asserts that the error message names the file and the given field.
fn assert_names(err: &IdxError, file: &str, field: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file), "message does not name the file: {msg}");
    assert!(
        msg.contains(field),
        "message does not name `{field}`: {msg}"
    );
}

#[test]
fn good_images_raw_and_gzip_read_the_same() {
    let raw = good_images(3, 4, 5);
    let a = parse_images("raw.idx", &raw[..]).unwrap();
    let b = parse_images("raw.idx.gz", &gzip(&raw)[..]).unwrap();
    assert_eq!(a.shape(), &[3, 4, 5]);
    assert_eq!(a, b);
    // Pixels come back in file order: image 1, row 2, col 3 is item 1*20 + 2*5 + 3.
    let item = 20 + 2 * 5 + 3;
    assert_eq!(a[[1, 2, 3]], (item * 7 % 256) as u8);
}

#[test]
fn good_labels_raw_and_gzip() {
    let raw = good_labels(25);
    let a = parse_labels("l", &raw[..]).unwrap();
    let b = parse_labels("l.gz", &gzip(&raw)[..]).unwrap();
    assert_eq!(a.len(), 25);
    assert_eq!(a, b);
    assert_eq!(a[13], 3);
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    // A gzip file named like a raw one and a raw file named like a gzip one both read fine.
    let raw = good_labels(4);
    assert!(parse_labels("labels-idx1-ubyte", &gzip(&raw)[..]).is_ok());
    assert!(parse_labels("labels-idx1-ubyte.gz", &raw[..]).is_ok());
}

#[test]
fn read_images_from_a_file_and_missing_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imgs.gz");
    std::fs::write(&path, gzip(&good_images(2, 28, 28))).unwrap();
    assert_eq!(read_images(&path).unwrap().shape(), &[2, 28, 28]);

    let missing = dir.path().join("nope.gz");
    let err = read_images(&missing).unwrap_err();
    assert!(matches!(err, IdxError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.gz"));
}

#[test]
fn empty_file() {
    let err = parse_images("empty.gz", &[][..]).unwrap_err();
    assert!(matches!(err, IdxError::Empty { .. }), "{err:?}");
    assert_names(&err, "empty.gz", "magic number");
}

#[test]
fn bad_magic() {
    let mut bytes = good_images(1, 2, 2);
    bytes[0] = 0x50; // e.g. an HTML page: "PK..", "<htm"...
    for input in [bytes.clone(), gzip(&bytes)] {
        let err = parse_images("bad.gz", &input[..]).unwrap_err();
        assert!(
            matches!(err, IdxError::BadMagic { expected: 0x803, found, .. } if found == 0x5000_0803),
            "{err:?}"
        );
        assert_names(&err, "bad.gz", "magic number");
    }
    // An HTML error page served instead of the file.
    let err = parse_labels("page", &b"<html>403 Forbidden</html>"[..]).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { .. }), "{err:?}");
}

#[test]
fn wrong_data_type() {
    let mut bytes = good_images(1, 2, 2);
    bytes[2] = 0x0D; // float
    let err = parse_images("f.idx", &bytes[..]).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::WrongDataType {
                expected: 0x08,
                found: 0x0D,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "f.idx", "data type");
    assert!(err.to_string().contains("0x0d"), "{err}");
}

#[test]
fn labels_file_given_as_images_is_wrong_dimension_count() {
    let err = parse_images("train-labels", &good_labels(3)[..]).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::WrongDimensionCount {
                expected: 3,
                found: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "train-labels", "number of dimensions");
}

#[test]
fn truncated_header() {
    let bytes = good_images(1, 2, 2);
    // Cut inside the magic number, then inside the dimension sizes.
    let err = parse_images("t", &bytes[..3]).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::TruncatedHeader {
                field: "magic number",
                expected: 16,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "t", "magic number");
    let err = parse_images("t.gz", &gzip(&bytes[..10])[..]).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::TruncatedHeader {
                field: "dimension sizes",
                expected: 16,
                found: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "t.gz", "dimension sizes");
}

#[test]
fn truncated_data() {
    let bytes = good_images(2, 3, 3);
    let cut = &bytes[..bytes.len() - 5];
    for input in [cut.to_vec(), gzip(cut)] {
        let err = parse_images("short", &input[..]).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::TruncatedData {
                    expected: 18,
                    found: 13,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names(&err, "short", "data");
    }
}

#[test]
fn trailing_bytes() {
    let mut bytes = good_labels(5);
    bytes.extend_from_slice(&[1, 2, 3]);
    for input in [bytes.clone(), gzip(&bytes)] {
        let err = parse_labels("long", &input[..]).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::TrailingBytes {
                    expected: 5,
                    extra: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names(&err, "long", "data");
    }
}

#[test]
fn label_of_ten() {
    let bytes = labels_idx(4, &[0, 9, 10, 3]);
    let err = parse_labels("labels", &bytes[..]).unwrap_err();
    assert!(
        matches!(
            err,
            IdxError::LabelOutOfRange {
                index: 2,
                found: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "labels", "label[2]");
}

#[test]
fn dims_whose_product_overflows() {
    let bytes = images_idx(u32::MAX, u32::MAX, u32::MAX, &[]);
    let err = parse_images("huge", &bytes[..]).unwrap_err();
    assert!(matches!(err, IdxError::DimsOverflow { .. }), "{err:?}");
    assert_names(&err, "huge", "dimension sizes");
}

#[test]
fn dims_over_the_cap_fail_before_reading_data() {
    // 2^31 images of 28x28 with no data: must fail on the header, not try to read 1.6 TB.
    let bytes = images_idx(1 << 31, 28, 28, &[1, 2, 3]);
    let err = parse_images("big", &bytes[..]).unwrap_err();
    match &err {
        IdxError::TooLarge { items, cap, .. } => {
            assert_eq!(*items, (1u64 << 31) * 784);
            assert_eq!(*cap, MAX_ITEMS);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_names(&err, "big", "dimension sizes");
    // A label count just over the cap, too.
    let bytes = labels_idx(MAX_ITEMS as u32 + 1, &[]);
    let err = parse_labels("big-labels", &bytes[..]).unwrap_err();
    assert!(matches!(err, IdxError::TooLarge { .. }), "{err:?}");
}

#[test]
fn huge_claim_within_cap_but_short_data_is_truncated() {
    // 99 million pixels promised, 3 present: the buffer grows with the data, not the header.
    let bytes = images_idx(99_000_000 / 784, 28, 28, &[1, 2, 3]);
    let err = parse_images("liar", &bytes[..]).unwrap_err();
    assert!(
        matches!(err, IdxError::TruncatedData { found: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn gzip_with_bad_crc() {
    let mut gz = gzip(&good_images(2, 4, 4));
    // The gzip trailer is CRC-32 (4 bytes) then the length (4 bytes): damage the CRC.
    let crc_at = gz.len() - 8;
    gz[crc_at] ^= 0xFF;
    let err = parse_images("crc.gz", &gz[..]).unwrap_err();
    assert!(matches!(err, IdxError::CorruptGzip { .. }), "{err:?}");
    assert_names(&err, "crc.gz", "gzip stream");
}

#[test]
fn gzip_cut_short_or_garbled() {
    let gz = gzip(&good_images(2, 4, 4));
    let err = parse_images("cut.gz", &gz[..gz.len() / 2]).unwrap_err();
    assert!(matches!(err, IdxError::CorruptGzip { .. }), "{err:?}");
    // Garbage after a complete gzip member is not silently ignored.
    let mut tail = gz.clone();
    tail.extend_from_slice(b"garbage");
    let err = parse_images("tail.gz", &tail[..]).unwrap_err();
    assert!(matches!(err, IdxError::CorruptGzip { .. }), "{err:?}");
}

#[test]
fn zero_count_does_not_excuse_huge_image_sizes() {
    // Found by the proptest: 0 images of 2^32-1 x 2^32-1 pixels has 0 items, but no array can
    // have that shape. It must be an error, not a panic.
    let bytes = images_idx(0, u32::MAX, u32::MAX, &[]);
    let err = parse_images("zero", &bytes[..]).unwrap_err();
    assert!(matches!(err, IdxError::TooLarge { .. }), "{err:?}");
    // Zero images of 28x28 is a valid, empty file.
    let empty = parse_images("zero", &images_idx(0, 28, 28, &[])[..]).unwrap();
    assert_eq!(empty.shape(), &[0, 28, 28]);
}
