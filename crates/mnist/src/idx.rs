//! A strict reader for IDX files of unsigned bytes, gzip-compressed or raw.
//!
//! The format (big-endian): a magic number `0x00 0x00 TYPE NDIMS`, then `NDIMS` u32 sizes, then
//! the product of the sizes in bytes. Images are `0x00000803` (count, rows, cols) and labels
//! `0x00000801` (count). The reader checks every field before trusting it: the header is read
//! into fixed-size arrays, the item count is checked against [`MAX_ITEMS`] before anything is
//! allocated, the data buffer only grows as bytes really arrive (`take` + `read_to_end`), and the
//! stream must end exactly where the header says (which also makes flate2 verify the gzip CRC).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ndarray::{Array1, Array3};

use crate::error::IdxError;

/// The largest number of items (pixels or labels) the reader accepts in one file: 100 million,
/// about twice the 47 million pixels of the largest MNIST file. A header claiming more is
/// rejected before any allocation.
pub const MAX_ITEMS: u64 = 100_000_000;

/// Magic number of an IDX file of unsigned-byte images (3 dimensions: count, rows, cols).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension: count).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The IDX data-type code for unsigned bytes.
const UNSIGNED_BYTE: u8 = 0x08;
/// The two magic bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads an IDX images file (gzip or raw) into a `[count, rows, cols]` array.
pub fn read_images(path: &Path) -> Result<Array3<u8>, IdxError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| IdxError::Io {
        file: name.clone(),
        source,
    })?;
    parse_images(&name, file)
}

/// Reads an IDX labels file (gzip or raw) into a `[count]` array of classes 0-9.
pub fn read_labels(path: &Path) -> Result<Array1<u8>, IdxError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| IdxError::Io {
        file: name.clone(),
        source,
    })?;
    parse_labels(&name, file)
}

/// Parses an IDX images stream (gzip or raw); `file` is the name used in error messages.
pub fn parse_images<R: Read>(file: &str, reader: R) -> Result<Array3<u8>, IdxError> {
    let (dims, data) = parse(file, reader, Kind::Images)?;
    let shape = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    // The length was checked against the header, so the shape always matches.
    Ok(Array3::from_shape_vec(shape, data).expect("data length equals the product of the dims"))
}

/// Parses an IDX labels stream (gzip or raw); `file` is the name used in error messages.
/// Every label must be a class in 0-9.
pub fn parse_labels<R: Read>(file: &str, reader: R) -> Result<Array1<u8>, IdxError> {
    let (_, data) = parse(file, reader, Kind::Labels)?;
    if let Some(index) = data.iter().position(|&label| label > 9) {
        return Err(IdxError::LabelOutOfRange {
            file: file.to_string(),
            index,
            found: data[index],
        });
    }
    Ok(Array1::from_vec(data))
}

/// Which of the two IDX layouts a file must have.
#[derive(Clone, Copy)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn ndims(self) -> u8 {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IMAGES_MAGIC,
            Kind::Labels => LABELS_MAGIC,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        }
    }
}

/// A stream whose first (up to two) bytes were read to sniff the format, put back in front.
pub(crate) type Sniffed<R> = io::Chain<io::Take<io::Cursor<[u8; 2]>>, R>;

/// Looks at the first two bytes to tell gzip from raw, then hands back a reader that still
/// yields every byte (the sniffed ones first). Returns `None` for an empty stream.
pub(crate) fn sniff_gzip<R: Read>(mut reader: R) -> io::Result<Option<(bool, Sniffed<R>)>> {
    let mut prefix = [0u8; 2];
    let n = read_full(&mut reader, &mut prefix)?;
    if n == 0 {
        return Ok(None);
    }
    let is_gzip = n == 2 && prefix == GZIP_MAGIC;
    Ok(Some((
        is_gzip,
        io::Cursor::new(prefix).take(n as u64).chain(reader),
    )))
}

/// Parses header and data; returns the dimension sizes and the bytes.
fn parse<R: Read>(file: &str, reader: R, kind: Kind) -> Result<(Vec<u32>, Vec<u8>), IdxError> {
    let io_err = |source| IdxError::Io {
        file: file.to_string(),
        source,
    };
    match sniff_gzip(reader).map_err(io_err)? {
        None => Err(IdxError::Empty {
            file: file.to_string(),
            expected: kind.name(),
        }),
        Some((true, stream)) => parse_stream(file, MultiGzDecoder::new(stream), kind, true),
        Some((false, stream)) => parse_stream(file, stream, kind, false),
    }
}

fn parse_stream<R: Read>(
    file: &str,
    mut reader: R,
    kind: Kind,
    gzip: bool,
) -> Result<(Vec<u32>, Vec<u8>), IdxError> {
    // flate2 reports a damaged stream (bad CRC or length, bad deflate data, cut short) as
    // InvalidInput / InvalidData / UnexpectedEof; anything else is a real I/O failure.
    let map_err = |source: io::Error| {
        let damaged = matches!(
            source.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        );
        if gzip && damaged {
            IdxError::CorruptGzip {
                file: file.to_string(),
                reason: source.to_string(),
            }
        } else {
            IdxError::Io {
                file: file.to_string(),
                source,
            }
        }
    };

    // Magic number: 0x00 0x00 TYPE NDIMS.
    let ndims = kind.ndims();
    let header_len = 4 + 4 * ndims as usize;
    let mut magic = [0u8; 4];
    let got = read_full(&mut reader, &mut magic).map_err(map_err)?;
    if got < 4 {
        return Err(IdxError::TruncatedHeader {
            file: file.to_string(),
            field: "magic number",
            expected: header_len,
            found: got,
        });
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(IdxError::BadMagic {
            file: file.to_string(),
            expected: kind.magic(),
            found: u32::from_be_bytes(magic),
        });
    }
    if magic[2] != UNSIGNED_BYTE {
        return Err(IdxError::WrongDataType {
            file: file.to_string(),
            expected: UNSIGNED_BYTE,
            found: magic[2],
        });
    }
    if magic[3] != ndims {
        return Err(IdxError::WrongDimensionCount {
            file: file.to_string(),
            kind: kind.name(),
            expected: ndims,
            found: magic[3],
        });
    }

    // Dimension sizes: at most 3 u32, read into a fixed array.
    let mut raw_dims = [0u8; 12];
    let raw_dims = &mut raw_dims[..4 * ndims as usize];
    let got = read_full(&mut reader, raw_dims).map_err(map_err)?;
    if got < raw_dims.len() {
        return Err(IdxError::TruncatedHeader {
            file: file.to_string(),
            field: "dimension sizes",
            expected: header_len,
            found: 4 + got,
        });
    }
    let dims: Vec<u32> = raw_dims
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    // Check the item count before allocating anything for it. Zero sizes count as one here, so
    // that "0 images of 2^32 x 2^32 pixels" is rejected too (ndarray could not even describe it).
    let bound = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1) as u64))
        .ok_or_else(|| IdxError::DimsOverflow {
            file: file.to_string(),
            dims: dims.clone(),
            cap: MAX_ITEMS,
        })?;
    if bound > MAX_ITEMS {
        return Err(IdxError::TooLarge {
            file: file.to_string(),
            dims,
            items: bound,
            cap: MAX_ITEMS,
        });
    }
    let items: u64 = dims.iter().map(|&d| d as u64).product();

    // The buffer grows only as bytes arrive, so a lying header cannot make us allocate much.
    let mut data = Vec::with_capacity(items.min(1 << 16) as usize);
    (&mut reader)
        .take(items)
        .read_to_end(&mut data)
        .map_err(map_err)?;
    if (data.len() as u64) < items {
        return Err(IdxError::TruncatedData {
            file: file.to_string(),
            dims,
            expected: items,
            found: data.len() as u64,
        });
    }

    // The stream must end here. Reading to the end also makes flate2 check the gzip CRC.
    let extra = io::copy(&mut (&mut reader).take(MAX_ITEMS), &mut io::sink()).map_err(map_err)?;
    if extra > 0 {
        return Err(IdxError::TrailingBytes {
            file: file.to_string(),
            dims,
            expected: items,
            extra,
        });
    }
    Ok((dims, data))
}

/// Reads until `buf` is full or the stream ends; returns the number of bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
