//! Shared by the `lenet serve` tests: start the server on a free loopback port, a model to
//! serve, and images to send.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use image::{GrayImage, Luma};

/// A `lenet serve` process, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
}

impl Server {
    /// Starts `lenet serve --bind 127.0.0.1:0` with `model` (the built-in one when `None`) and
    /// waits for the line that names its address.
    pub fn start(model: Option<&Path>) -> Server {
        Server::spawn(Command::new(env!("CARGO_BIN_EXE_lenet")), model)
    }

    /// As [`Server::start`] with the built-in model, with these environment variables (e.g.
    /// `LENET_DATA_DIR`, `LENET_MIRRORS`).
    pub fn start_with_env(env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
        cmd.envs(env.iter().copied());
        Server::spawn(cmd, None)
    }

    /// As [`Server::start`], with the process's limit on open files lowered to `files`
    /// (`ulimit -n` in a shell that then becomes the server).
    pub fn start_with_file_limit(model: Option<&Path>, files: u32) -> Server {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_lenet"));
        Server::spawn(shell, model)
    }

    fn spawn(mut cmd: Command, model: Option<&Path>) -> Server {
        cmd.args(["serve", "--bind", "127.0.0.1:0"]);
        if let Some(m) = model {
            cmd.arg("--model").arg(m);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start lenet serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("cannot read lenet serve's output");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("lenet serve printed no URL: {line:?}"))
            .trim_end_matches('/')
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server { child, url }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// A field of the server's /proc/PID/status in kB (`VmHWM`: its peak resident memory).
    #[cfg(target_os = "linux")]
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A model file with random weights (for tests that do not care what the model predicts).
pub fn random_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        use rand::SeedableRng;
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-random-model.safetensors");
        let model = nn::LeNet5::new(
            nn::LeNet5Config::default(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
        );
        let bytes = model.weights_bytes(&path, Default::default()).unwrap();
        nn::write_atomic(&path, &bytes).expect("cannot save the random model");
        path
    })
}

/// A white `w`×`h` picture with a thick black vertical stroke in the middle: a "1".
pub fn one(w: u32, h: u32) -> GrayImage {
    let mut img = GrayImage::from_pixel(w, h, Luma([255]));
    for y in h / 6..h - h / 6 {
        for x in w / 2 - w / 16..w / 2 + w / 16 {
            img.put_pixel(x, y, Luma([0]));
        }
    }
    img
}

/// `img` encoded as PNG.
pub fn png(img: &GrayImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    bytes
}

/// `img` encoded as JPEG.
pub fn jpeg(img: &GrayImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes
}

/// `jpeg` with an EXIF segment (APP1) recording `orientation` (1–8) and holding a thumbnail
/// (a whole JPEG, end marker included), as a phone writes a photo: the pixels as the sensor
/// saw them, and how to turn them upright.
pub fn with_orientation(jpeg_data: &[u8], orientation: u16) -> Vec<u8> {
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec(); // TIFF header, 1 entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, no next IFD
    exif.extend_from_slice(&jpeg(&GrayImage::from_pixel(8, 8, Luma([128]))));
    let mut out = jpeg_data[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg_data[2..]);
    out
}

/// POSTs `body` with `content_type`; the status and the JSON answer (4xx/5xx included).
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let result = ureq::post(url)
        .set("Content-Type", content_type)
        .send_bytes(body);
    answer(result)
}

/// The status and JSON body of a ureq result, errors included.
pub fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let kind = response.content_type().to_string();
    let text = response.into_string().expect("a body");
    assert_eq!(kind, "application/json", "status {status}: {text}");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// Four raw (uncompressed) IDX files of a small synthetic dataset: class `c` is a bright
/// square at a position that depends on `c`, so a few batches already learn something.
pub fn write_synthetic_dataset(dir: &Path, train: usize, test: usize) {
    let write = |images: &str, labels: &str, n: usize, offset: usize| {
        let mut img = vec![0, 0, 8, 3];
        img.extend((n as u32).to_be_bytes());
        img.extend(28u32.to_be_bytes());
        img.extend(28u32.to_be_bytes());
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let c = (i + offset) % 10;
            let mut pic = [0u8; 784];
            let (r0, c0) = (4 + (c / 5) * 10, 2 + (c % 5) * 5);
            for r in r0..r0 + 8 {
                for col in c0..c0 + 4 {
                    pic[r * 28 + col] = 200 + ((i * 7) % 55) as u8;
                }
            }
            img.extend_from_slice(&pic);
            lab.push(c as u8);
        }
        std::fs::write(dir.join(images), img).unwrap();
        std::fs::write(dir.join(labels), lab).unwrap();
    };
    write(
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        train,
        0,
    );
    write("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", test, 3);
}
