//! A strict reader for IDX files of unsigned bytes, gzip-compressed or raw.
//!
//! The format (big-endian): a magic number `0x00 0x00 TYPE NDIMS`, then `NDIMS` u32 sizes, then
//! the product of the sizes in bytes. Images are `0x00000803` (count, rows, cols) and labels
//! `0x00000801` (count). The reader checks every field before trusting it: the header is read
//! into fixed-size arrays, the item count is checked against [`MAX_ITEMS`] before anything is
//! allocated, the data buffer only grows as bytes really arrive (`take` + `read_to_end`), and the
//! stream must end exactly where the header says (which also makes flate2 verify the gzip CRC).
//! `read_images` and `read_labels` open regular files only: a named pipe or a device (which
//! could block or never end) is refused as "not a regular file" before a byte is read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ndarray::{Array1, Array3};

use crate::error::IdxError;
use crate::open::open_regular;

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
    let (name, file) = open(path)?;
    parse_images(&name, file)
}

/// Reads an IDX labels file (gzip or raw) into a `[count]` array of classes 0-9.
pub fn read_labels(path: &Path) -> Result<Array1<u8>, IdxError> {
    let (name, file) = open(path)?;
    parse_labels(&name, file)
}

/// Opens a data file (a regular file only: see [`open_regular`]); returns its name for messages.
fn open(path: &Path) -> Result<(String, File), IdxError> {
    let name = path.display().to_string();
    match open_regular(path) {
        Ok(file) => Ok((name, file)),
        Err(source) => Err(IdxError::Io { file: name, source }),
    }
}

/// Parses an IDX images stream (gzip or raw); `file` is the name used in error messages.
pub fn parse_images<R: Read>(file: &str, reader: R) -> Result<Array3<u8>, IdxError> {
    let (dims, data) = Source { file }.parse(reader, Kind::Images)?;
    let shape = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    // The length was checked against the header, so the shape always matches.
    Ok(Array3::from_shape_vec(shape, data).expect("data length equals the product of the dims"))
}

/// Parses an IDX labels stream (gzip or raw); `file` is the name used in error messages.
/// Every label must be a class in 0-9.
pub fn parse_labels<R: Read>(file: &str, reader: R) -> Result<Array1<u8>, IdxError> {
    let source = Source { file };
    let (_, data) = source.parse(reader, Kind::Labels)?;
    if let Some(index) = data.iter().position(|&label| label > 9) {
        return source.fail(|file| IdxError::LabelOutOfRange {
            file,
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

/// The stream being parsed, known by its file name: every error it reports names that file.
struct Source<'a> {
    file: &'a str,
}

impl Source<'_> {
    /// `Err(build(file name))`.
    fn fail<T>(&self, build: impl FnOnce(String) -> IdxError) -> Result<T, IdxError> {
        Err(build(self.file.to_string()))
    }

    /// A read failure: a damaged gzip stream (flate2 reports bad CRC or length, bad deflate data
    /// or a stream cut short as InvalidInput / InvalidData / UnexpectedEof), else an I/O error.
    fn read_error(&self, source: io::Error, gzip: bool) -> IdxError {
        let file = self.file.to_string();
        let damaged = matches!(
            source.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
        );
        if gzip && damaged {
            let reason = source.to_string();
            IdxError::CorruptGzip { file, reason }
        } else {
            IdxError::Io { file, source }
        }
    }

    /// Parses header and data; returns the dimension sizes and the bytes.
    fn parse<R: Read>(&self, reader: R, kind: Kind) -> Result<(Vec<u32>, Vec<u8>), IdxError> {
        match sniff_gzip(reader).map_err(|e| self.read_error(e, false))? {
            None => self.fail(|file| IdxError::Empty {
                file,
                expected: kind.name(),
            }),
            Some((true, stream)) => self.parse_stream(MultiGzDecoder::new(stream), kind, true),
            Some((false, stream)) => self.parse_stream(stream, kind, false),
        }
    }

    fn parse_stream<R: Read>(
        &self,
        mut reader: R,
        kind: Kind,
        gzip: bool,
    ) -> Result<(Vec<u32>, Vec<u8>), IdxError> {
        let dims = self.read_header(&mut reader, kind, gzip)?;
        let items = self.checked_items(&dims)?;

        // The buffer grows only as bytes arrive, so a lying header cannot make us allocate much.
        let mut data = Vec::with_capacity(items.min(1 << 16) as usize);
        (&mut reader)
            .take(items)
            .read_to_end(&mut data)
            .map_err(|e| self.read_error(e, gzip))?;
        if (data.len() as u64) < items {
            return self.fail(|file| IdxError::TruncatedData {
                file,
                dims,
                expected: items,
                found: data.len() as u64,
            });
        }

        // The stream must end here. Reading to the end also makes flate2 check the gzip CRC.
        let extra = io::copy(&mut (&mut reader).take(MAX_ITEMS), &mut io::sink())
            .map_err(|e| self.read_error(e, gzip))?;
        if extra > 0 {
            return self.fail(|file| IdxError::TrailingBytes {
                file,
                dims,
                expected: items,
                extra,
            });
        }
        Ok((dims, data))
    }

    /// Reads and checks the magic number (`0x00 0x00 TYPE NDIMS`), then the dimension sizes.
    fn read_header<R: Read>(
        &self,
        reader: &mut R,
        kind: Kind,
        gzip: bool,
    ) -> Result<Vec<u32>, IdxError> {
        let ndims = kind.ndims();
        let header_len = 4 + 4 * ndims as usize;
        let mut magic = [0u8; 4];
        let got = read_full(reader, &mut magic).map_err(|e| self.read_error(e, gzip))?;
        if got < 4 {
            return self.fail(|file| IdxError::TruncatedHeader {
                file,
                field: "magic number",
                expected: header_len,
                found: got,
            });
        }
        if magic[0] != 0 || magic[1] != 0 {
            return self.fail(|file| IdxError::BadMagic {
                file,
                expected: kind.magic(),
                found: u32::from_be_bytes(magic),
            });
        }
        if magic[2] != UNSIGNED_BYTE {
            return self.fail(|file| IdxError::WrongDataType {
                file,
                expected: UNSIGNED_BYTE,
                found: magic[2],
            });
        }
        if magic[3] != ndims {
            return self.fail(|file| IdxError::WrongDimensionCount {
                file,
                kind: kind.name(),
                expected: ndims,
                found: magic[3],
            });
        }

        // Dimension sizes: at most 3 u32, read into a fixed array.
        let mut raw_dims = [0u8; 12];
        let raw_dims = &mut raw_dims[..4 * ndims as usize];
        let got = read_full(reader, raw_dims).map_err(|e| self.read_error(e, gzip))?;
        if got < raw_dims.len() {
            return self.fail(|file| IdxError::TruncatedHeader {
                file,
                field: "dimension sizes",
                expected: header_len,
                found: 4 + got,
            });
        }
        Ok(raw_dims
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The number of items the header promises, checked against [`MAX_ITEMS`] before anything is
    /// allocated for them. Zero sizes count as one here, so that "0 images of 2^32 x 2^32
    /// pixels" is rejected too (ndarray could not even describe it).
    fn checked_items(&self, dims: &[u32]) -> Result<u64, IdxError> {
        let Some(bound) = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1) as u64))
        else {
            return self.fail(|file| IdxError::DimsOverflow {
                file,
                dims: dims.to_vec(),
                cap: MAX_ITEMS,
            });
        };
        if bound > MAX_ITEMS {
            return self.fail(|file| IdxError::TooLarge {
                file,
                dims: dims.to_vec(),
                items: bound,
                cap: MAX_ITEMS,
            });
        }
        Ok(dims.iter().map(|&d| d as u64).product())
    }
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
