//! `lenet serve` over real HTTP on loopback: the page, the API's answers, its errors, a load
//! test (1,000 predictions from 32 concurrent clients), the server's limits (uploads judged by
//! their headers, the Host check, the memory of concurrent large decodes, and idle or slow
//! connections under a lowered limit on open files), and the teaching API: the JSON model input,
//! the saliency map of `?explain=true`, `/api/fool` and the checks on every JSON field.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{answer, jpeg, one, png, post, random_model, Server};
use rand::SeedableRng;
use serde_json::Value;

fn shape(v: &Value) -> Vec<usize> {
    let mut dims = Vec::new();
    let mut cur = v;
    while let Some(a) = cur.as_array() {
        dims.push(a.len());
        match a.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    dims
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        other => vec![other.as_f64().expect("a number")],
    }
}

#[test]
fn page_and_model_description() {
    let server = Server::start(Some(random_model()));
    let page = ureq::get(&format!("{}/", server.url)).call().unwrap();
    assert!(page.content_type().starts_with("text/html"));
    let html = page.into_string().unwrap();
    assert!(html.contains("<canvas id=\"pad\"") && html.contains("touch-action: none"));

    let (status, model) = answer(ureq::get(&format!("{}/api/model", server.url)).call());
    assert_eq!(status, 200);
    let layers = model["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "conv1");
    assert_eq!(*names.last().unwrap(), "fc3");
    assert_eq!(model["total_params"], 61_706);
    assert_eq!(model["total_flops"], 833_040);
    assert_eq!(layers[0]["output_shape"], serde_json::json!([6, 28, 28]));
    assert_eq!(shape(&model["filters"]["conv1"]), vec![6, 1, 5, 5]);
    assert_eq!(shape(&model["filters"]["conv2"]), vec![16, 6, 5, 5]);
    assert_eq!(model["classes"].as_array().unwrap().len(), 10);
    assert!(model.get("accuracy").is_some() && model.get("dataset").is_some());
}

#[test]
fn predict_returns_the_input_probabilities_and_every_layer() {
    let server = Server::start(Some(random_model()));
    let url = format!("{}/api/predict", server.url);
    for (kind, body) in [
        ("image/png", png(&one(120, 100))),
        ("image/jpeg", jpeg(&one(64, 64))),
    ] {
        let (status, r) = post(&url, kind, &body);
        assert_eq!(status, 200, "{kind}: {r}");
        let p = numbers(&r["probabilities"]);
        assert_eq!(p.len(), 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
        let best = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(r["prediction"], best);
        assert_eq!(shape(&r["input"]), vec![28, 28]);
        let input = numbers(&r["input"]);
        assert!(input.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(input.iter().any(|&v| v > 0.5), "the stroke is in the input");
        let l = &r["layers"];
        assert_eq!(shape(&l["conv1"]), vec![6, 28, 28]);
        assert_eq!(shape(&l["pool1"]), vec![6, 14, 14]);
        assert_eq!(shape(&l["conv2"]), vec![16, 10, 10]);
        assert_eq!(shape(&l["pool2"]), vec![16, 5, 5]);
        assert_eq!(shape(&l["fc1"]), vec![120]);
        assert_eq!(shape(&l["fc2"]), vec![84]);
    }
}

/// A PNG whose IHDR claims `w`×`h` pixels (with a valid CRC) but holds an 8×8 image.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = png(&one(8, 8));
    // Signature (8), chunk length (4), "IHDR" (4), then width and height.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends a raw request and returns the status line's code and the body.
fn raw(url: &str, request: &str, body: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    // The server may answer and close before reading all of a refused body.
    let _ = s.write_all(body);
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[test]
fn bad_requests_get_a_json_error_and_a_4xx() {
    let server = Server::start(Some(random_model()));
    let url = format!("{}/api/predict", server.url);
    let error = |status: u16, r: &Value, what: &str| {
        assert!(
            r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {}",
            r.to_string().chars().take(300).collect::<String>()
        );
        status
    };
    let photo = jpeg(&one(64, 64));
    let cases: Vec<(&str, &str, Vec<u8>, &[u16])> = vec![
        (
            "not an image",
            "image/png",
            b"hello, world".to_vec(),
            &[400, 415],
        ),
        ("text content type", "text/plain", png(&one(40, 40)), &[415]),
        (
            "truncated PNG",
            "image/png",
            png(&one(40, 40))[..60].to_vec(),
            &[400],
        ),
        (
            "truncated JPEG",
            "image/jpeg",
            photo[..photo.len() * 2 / 3].to_vec(),
            &[400],
        ),
        ("empty body", "image/png", Vec::new(), &[400, 415]),
        (
            "blank image",
            "image/png",
            png(&image::GrayImage::from_pixel(30, 30, image::Luma([255]))),
            &[422],
        ),
        ("4097 pixels wide", "image/png", png(&one(4097, 16)), &[413]),
        (
            "header claims 60000×60000",
            "image/png",
            png_claiming(60_000, 60_000),
            &[413],
        ),
    ];
    for (what, kind, body, expected) in cases {
        let (status, r) = post(&url, kind, &body);
        let status = error(status, &r, what);
        assert!(
            expected.contains(&status),
            "{what}: got {status}, expected {expected:?}: {r}"
        );
        if status == 413 && what.contains("pixels") {
            assert!(r["error"].as_str().unwrap().contains("4096"), "{what}: {r}");
        }
    }

    // A body over 2 MB: refused from its Content-Length, and while reading a chunked one.
    let big = vec![0u8; 2 * 1024 * 1024 + 1];
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    );
    let (status, body) = raw(&server.url, &head, &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let chunked = "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut chunks = Vec::new();
    for _ in 0..3 {
        chunks.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunks.extend(std::iter::repeat_n(0u8, 1024 * 1024));
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw(&server.url, chunked, &chunks);
    assert_eq!(status, 413, "{body}");

    // Wrong methods and unknown paths.
    let (status, r) = answer(ureq::get(&url).call());
    assert_eq!(error(status, &r, "GET /api/predict"), 405);
    let (status, r) = answer(ureq::request("PUT", &format!("{}/", server.url)).call());
    assert_eq!(error(status, &r, "PUT /"), 405);
    let (status, r) = answer(ureq::post(&format!("{}/api/model", server.url)).call());
    assert_eq!(error(status, &r, "POST /api/model"), 405);
    let (status, r) = answer(ureq::get(&format!("{}/nope", server.url)).call());
    assert_eq!(error(status, &r, "GET /nope"), 404);
    // Still serving after all that.
    let (status, _) = post(&url, "image/png", &png(&one(50, 50)));
    assert_eq!(status, 200);
}

#[test]
fn load_1000_predictions_from_32_clients() {
    const REQUESTS: usize = 1000;
    const CLIENTS: usize = 32;
    let server = Server::start(Some(random_model()));
    let url = format!("{}/api/predict", server.url);
    let body = png(&one(200, 200));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new().build();
                    let mine = (c..REQUESTS).step_by(CLIENTS).count();
                    (0..mine)
                        .map(|_| {
                            let t = Instant::now();
                            let r = agent
                                .post(url)
                                .set("Content-Type", "image/png")
                                .send_bytes(body)
                                .expect("a prediction failed under load");
                            assert_eq!(r.status(), 200);
                            let text = r.into_string().unwrap();
                            assert!(text.contains("\"probabilities\""));
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let wall = started.elapsed();
    assert_eq!(latencies.len(), REQUESTS);
    latencies.sort();
    let pct = |q: f64| latencies[((q * REQUESTS as f64).ceil() as usize).min(REQUESTS) - 1];
    println!(
        "load test: {REQUESTS} predictions from {CLIENTS} clients in {:.2} s: {:.0} requests/s, \
         latency p50 {:.1} ms, p99 {:.1} ms",
        wall.as_secs_f64(),
        REQUESTS as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

// ---- the server's limits ----

/// The status code of an HTTP answer's first line.
fn status_code(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Sends `head` (request line and headers, no body) on `stream` and returns the first answer's
/// status code, which must come within `wait`.
fn first_status(stream: &mut TcpStream, head: &str, wait: Duration) -> u16 {
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = stream
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("no answer within {wait:?} to {head:?}: {e}"));
    status_code(&buf[..n])
}

/// Request headers of an upload of `length` bytes of `kind`, plus `extra` header lines.
fn upload_head(kind: &str, length: usize, extra: &str) -> String {
    format!(
        "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n\
         Content-Length: {length}\r\n{extra}\r\n"
    )
}

/// An upload is judged by its headers before its body is read: a Content-Length over the
/// limit is a 413 (no `100 Continue` first), a wrong Content-Type a 415; neither waits for the
/// body, which is never sent here.
#[test]
fn uploads_are_judged_by_their_headers_before_the_body() {
    let server = Server::start(Some(random_model()));
    let connect = || TcpStream::connect(server.addr()).unwrap();
    let wait = Duration::from_secs(5);
    let expect = "Expect: 100-continue\r\n";
    let big = upload_head("image/png", 3_000_000, expect);
    assert_eq!(first_status(&mut connect(), &big, wait), 413);
    let text = upload_head("text/plain", 1000, "");
    assert_eq!(first_status(&mut connect(), &text, wait), 415);
    let text = upload_head("text/plain", 1000, expect);
    assert_eq!(first_status(&mut connect(), &text, wait), 415);
    // An upload that passes gets its `100 Continue`, then its answer once the body has come.
    let mut stream = connect();
    let body = png(&one(40, 40));
    let head = upload_head("image/png", body.len(), expect);
    assert_eq!(first_status(&mut stream, &head, wait), 100);
    stream.write_all(&body).unwrap();
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).unwrap();
    assert_eq!(status_code(&answer[..n]), 200);
}

/// DNS rebinding: a page on another origin reaching 127.0.0.1 still sends its own name as Host,
/// and a server on loopback answers only its loopback names.
#[test]
fn only_loopback_host_names_are_served() {
    let server = Server::start(Some(random_model()));
    let port = server.addr().rsplit(':').next().unwrap();
    let get = |host: &str| {
        let head = format!("GET /api/model HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw(&server.url, &head, b"")
    };
    for host in [
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = get(&host);
        assert_eq!(status, 200, "{host}: {body}");
    }
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "127.0.0.1.evil.example".to_string(),
    ] {
        let (status, body) = get(&host);
        assert_eq!(status, 421, "{host}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains(&host) && message.contains("localhost"),
            "{message}"
        );
    }
    // A POST from such a page is refused before its body is read.
    let (status, _) = raw(
        &server.url,
        "POST /api/predict HTTP/1.1\r\nHost: evil.example\r\nContent-Type: image/png\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        b"hello",
    );
    assert_eq!(status, 421);
}

/// `img` as an 8-bit RGBA PNG.
fn rgba_png(img: &image::GrayImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::DynamicImage::ImageLuma8(img.clone())
        .to_rgba8()
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// 32 clients upload the largest image accepted (4096×4096 8-bit RGBA, 64 MiB of pixels) at
/// once: each is decoded or answered 503 with `Retry-After` within seconds, and the server's
/// peak resident memory stays within what its few decode slots need (unbounded, 32 decodes at
/// once took 3.4 GB). A 16-bit RGB image of that size (96 MiB) is refused before decoding.
#[cfg(target_os = "linux")]
#[test]
fn concurrent_large_decodes_stay_within_bounded_memory() {
    const CLIENTS: usize = 32;
    /// Resident memory of a decode at its peak: the 64 MiB of pixels and their grayscale copies
    /// (about 120 MB measured), with margin.
    const MB_PER_DECODE: u64 = 160;
    /// The server's own memory (model, runtime, small buffers), with margin.
    const MB_BASE: u64 = 100;
    // The server decodes one image per core, at most 4.
    let slots = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4) as u64;
    let server = Server::start(Some(random_model()));
    let url = format!("{}/api/predict", server.url);
    let body = rgba_png(&one(4096, 4096));
    let answers: Vec<(u16, Option<String>, Value, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let started = Instant::now();
                    let response = match ureq::post(url)
                        .set("Content-Type", "image/png")
                        .send_bytes(body)
                    {
                        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                        Err(e) => panic!("request failed: {e}"),
                    };
                    let status = response.status();
                    let retry = response.header("Retry-After").map(str::to_string);
                    let json: Value =
                        serde_json::from_str(&response.into_string().unwrap()).unwrap();
                    (status, retry, json, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let peak_mb = server.status_kb("VmHWM") / 1024;
    let done = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let slowest = answers.iter().map(|a| a.3).max().unwrap();
    println!(
        "{CLIENTS} concurrent 4096×4096 RGBA uploads: {done} decoded, {} answered 503, slowest \
         answer {:.1} s, server peak resident memory {peak_mb} MB",
        busy.len(),
        slowest.as_secs_f64()
    );
    assert_eq!(done + busy.len(), CLIENTS, "other answers: {answers:?}");
    assert!(done >= 1, "nothing was decoded");
    for (_, retry, json, _) in &busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(json["error"].as_str().unwrap().contains("busy"), "{json}");
    }
    assert!(slowest < Duration::from_secs(15), "{slowest:?}");
    let bound = MB_BASE + slots * MB_PER_DECODE;
    assert!(
        peak_mb < bound,
        "peak {peak_mb} MB, expected under {bound} MB"
    );

    let rgb16 = image::DynamicImage::ImageRgb16(image::ImageBuffer::new(4096, 4096));
    let mut bytes = Vec::new();
    rgb16
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    let (status, r) = post(&url, "image/png", &bytes);
    assert_eq!(status, 413, "{r}");
    assert!(r["error"].as_str().unwrap().contains("96 MiB"), "{r}");
}

/// With its limit on open files lowered to 128, the server is flooded with connections that
/// send nothing, one that stops in its headers and one that stops in its body. New clients are
/// still answered at once (503 while the cap is reached), the idle and slow connections are
/// closed by the header timeout (10 s) and the body timeout (20 s), and then new clients are
/// served again. Without the cap and timeouts the flood held every file for good.
#[cfg(target_os = "linux")]
#[test]
fn idle_and_slow_connections_cannot_lock_out_new_clients() {
    const FILES: u32 = 128;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    let server = Server::start_with_file_limit(Some(random_model()), FILES);
    let url = format!("{}/api/predict", server.url);
    let connect = || TcpStream::connect(server.addr()).unwrap();
    let opened = Instant::now();
    let mut slow_header = connect();
    slow_header
        .write_all(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut slow_body = connect();
    slow_body
        .write_all(upload_head("image/png", 1000, "").as_bytes())
        .unwrap();
    slow_body.write_all(&[0u8; 10]).unwrap();
    let mut idle: Vec<TcpStream> = (0..FILES + 50).map(|_| connect()).collect();

    // Answered at once, not left hanging: 503 over the cap (or 200 if a place is free).
    let head = "GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let status = first_status(&mut connect(), head, Duration::from_secs(3));
    assert!([503, 200].contains(&status), "{status}");

    // The header timeout closes the idle connections and the one stuck in its headers.
    std::thread::sleep((HEADER_TIMEOUT + Duration::from_secs(2)).saturating_sub(opened.elapsed()));
    for (what, stream) in [("idle", &mut idle[0]), ("slow header", &mut slow_header)] {
        assert!(
            closed_within(stream, Duration::from_secs(3)),
            "the {what} connection is still open"
        );
    }
    let (status, r) = post(&url, "image/png", &png(&one(50, 50)));
    assert_eq!(status, 200, "{r}");

    // The body timeout answers the upload stuck in its body.
    let status = first_status(&mut slow_body, "", Duration::from_secs(15));
    assert_eq!(status, 408);
    drop(idle);
}

/// True if the server closes `stream` within `wait` (after any answer it sends first).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                use std::io::ErrorKind::{TimedOut, WouldBlock};
                return !matches!(e.kind(), WouldBlock | TimedOut);
            }
        }
    }
}

// ---- teaching: the saliency map and adversarial examples ----

/// POSTs `body` as JSON; the status and the JSON answer.
fn post_json(url: &str, body: &Value) -> (u16, Value) {
    post(url, "application/json", body.to_string().as_bytes())
}

/// The model inputs the built-in model receives for the handwriting set's "neat" digits 0-9
/// (the server's own preprocessing of the PNGs), with their labels.
fn handwriting_inputs(server: &Server) -> Vec<(usize, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/handwriting");
    let url = format!("{}/api/predict", server.url);
    (0..10)
        .map(|d| {
            let png = std::fs::read(dir.join(format!("neat_{d}_0.png"))).unwrap();
            let (status, r) = post(&url, "image/png", &png);
            assert_eq!(status, 200, "{r}");
            (d, r["input"].clone())
        })
        .collect()
}

fn blank_input() -> Value {
    serde_json::json!(vec![vec![0.0; 28]; 28])
}

#[test]
fn predict_takes_the_model_input_as_json_and_explains_on_request() {
    let server = Server::start(None);
    let url = format!("{}/api/predict", server.url);
    let image = png(&one(120, 100));
    let (_, from_png) = post(&url, "image/png", &image);
    assert!(
        from_png.get("saliency").is_none(),
        "saliency only on request"
    );

    // The input the PNG became, sent back as JSON, is used as it is: same input, same answer.
    let body = serde_json::json!({ "input": from_png["input"] });
    let (status, from_json) = post_json(&url, &body);
    assert_eq!(status, 200, "{from_json}");
    assert_eq!(from_json["input"], from_png["input"]);
    assert_eq!(from_json["prediction"], from_png["prediction"]);
    assert_eq!(from_json["probabilities"], from_png["probabilities"]);
    assert_eq!(shape(&from_json["layers"]["conv1"]), vec![6, 28, 28]);

    for (kind, body) in [
        ("application/json", body.to_string().into_bytes()),
        ("image/png", image),
    ] {
        let (status, r) = post(&format!("{url}?explain=true"), kind, &body);
        assert_eq!(status, 200, "{kind}: {r}");
        assert_eq!(shape(&r["saliency"]), vec![28, 28], "{kind}");
        let s = numbers(&r["saliency"]);
        assert!(s.iter().all(|&v| v >= 0.0 && v.is_finite()), "{kind}");
        assert!(
            s.iter().any(|&v| v > 0.0),
            "{kind}: an all-zero saliency map"
        );
    }
    let (status, r) = post(
        &format!("{url}?explain=false"),
        "image/png",
        &png(&one(50, 50)),
    );
    assert_eq!(status, 200);
    assert!(r.get("saliency").is_none());
}

/// The most salient pixels of a digit matter more to its logit than random ones: set to 0
/// through the JSON input, the 20 most salient change the predicted class's logit more than 20
/// random pixels do, on average over the handwriting set's "neat" digits.
#[test]
fn masking_the_most_salient_pixels_moves_the_logit_more_than_random_ones() {
    const MASKED: usize = 20;
    const DRAWS: usize = 10;
    let server = Server::start(None);
    let url = format!("{}/api/predict", server.url);
    let logit = |input: &[f64], class: usize| {
        let rows: Vec<&[f64]> = input.chunks(28).collect();
        let (status, r) = post_json(&url, &serde_json::json!({ "input": rows }));
        assert_eq!(status, 200, "{r}");
        numbers(&r["layers"]["logits"])[class]
    };
    let masked = |input: &[f64], which: &[usize]| {
        let mut x = input.to_vec();
        which.iter().for_each(|&p| x[p] = 0.0);
        x
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (mut salient, mut random) = (0.0, 0.0);
    let inputs = handwriting_inputs(&server);
    for (_, input) in &inputs {
        let (_, r) = post_json(
            &format!("{url}?explain=true"),
            &serde_json::json!({ "input": input }),
        );
        let (x, s) = (numbers(input), numbers(&r["saliency"]));
        let class = r["prediction"].as_u64().unwrap() as usize;
        let before = logit(&x, class);
        let mut order: Vec<usize> = (0..784).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        salient += (logit(&masked(&x, &order[..MASKED]), class) - before).abs();
        for _ in 0..DRAWS {
            let which = rand::seq::index::sample(&mut rng, 784, MASKED).into_vec();
            random += (logit(&masked(&x, &which), class) - before).abs() / DRAWS as f64;
        }
    }
    let n = inputs.len() as f64;
    println!(
        "handwriting digits: masking the {MASKED} most salient pixels changes the logit by {:.3} \
         on average, {MASKED} random pixels by {:.3}",
        salient / n,
        random / n
    );
    assert!(salient > 2.0 * random, "{salient} vs {random}");
}

#[test]
fn adversarial_examples_stay_within_epsilon_and_fool_the_built_in_model() {
    let server = Server::start(None);
    let url = format!("{}/api/fool", server.url);
    let epsilon = 0.25;
    let (mut searches, mut reached, mut steps) = (0, 0, 0);
    let inputs = handwriting_inputs(&server);
    let searches_of = inputs
        .iter()
        .flat_map(|(d, input)| [3, 5, 7].map(|k| ((d + k) % 10, input)));
    for (target, input) in searches_of {
        let body =
            serde_json::json!({"input": input, "target": target, "epsilon": epsilon, "steps": 100});
        let (status, a) = post_json(&url, &body);
        assert_eq!(status, 200, "{a}");
        for field in ["input", "perturbation"] {
            assert_eq!(shape(&a[field]), vec![28, 28], "{field}");
        }
        let (x, adv, delta) = (
            numbers(input),
            numbers(&a["input"]),
            numbers(&a["perturbation"]),
        );
        assert!(adv.iter().all(|v| (0.0..=1.0).contains(v)));
        for i in 0..784 {
            assert!((adv[i] - x[i] - delta[i]).abs() < 1e-6);
            assert!(
                delta[i].abs() <= epsilon + 1e-6,
                "pixel {i} moved by {}",
                delta[i]
            );
        }
        let p = numbers(&a["probabilities"]);
        assert_eq!(p.len(), 10);
        let prediction = a["prediction"].as_u64().unwrap() as usize;
        assert_eq!(a["fooled"], prediction == target);
        // The adversarial image, sent to /api/predict, reads as the search says.
        let (_, check) = post_json(
            &format!("{}/api/predict", server.url),
            &serde_json::json!({ "input": a["input"] }),
        );
        assert_eq!(check["prediction"], prediction);
        searches += 1;
        if a["fooled"] == true {
            reached += 1;
            steps += a["steps"].as_u64().unwrap();
        }
    }
    println!(
        "adversarial search, ε = {epsilon}: reached {reached}/{searches}, {:.1} steps on average",
        steps as f64 / reached.max(1) as f64
    );
    assert!(
        reached * 5 >= searches * 4,
        "reached only {reached}/{searches}"
    );
}

/// Every field of a JSON body is checked: a clear JSON error, naming the field and the value
/// expected, with a 400 for a body that is not JSON and a 422 for a wrong field.
#[test]
fn json_bodies_are_checked_field_by_field() {
    let server = Server::start(Some(random_model()));
    let predict = format!("{}/api/predict", server.url);
    let fool = format!("{}/api/fool", server.url);
    let ok =
        || serde_json::json!({"input": blank_input(), "target": 3, "epsilon": 0.1, "steps": 10});
    let with = |field: &str, v: Value| {
        let mut b = ok();
        b[field] = v;
        b.to_string()
    };
    let without = |field: &str| {
        let mut b = ok();
        b.as_object_mut().unwrap().remove(field);
        b.to_string()
    };
    let mut short_row = vec![vec![0.0; 28]; 28];
    short_row[5].push(0.0);
    let mut out_of_range = vec![vec![0.0; 28]; 28];
    out_of_range[2][7] = 1.01;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "not JSON",
            "{\"input\": [".to_string(),
            400,
            "not valid JSON",
        ),
        ("NaN", "{\"input\": NaN}".to_string(), 400, "finite"),
        ("1e999", "{\"input\": [[1e999]]}".to_string(), 400, "finite"),
        ("not an object", "[]".to_string(), 422, "JSON object"),
        (
            "unknown field",
            with("epsilonn", serde_json::json!(0.1)),
            422,
            "\"epsilonn\"",
        ),
        ("no input", without("input"), 422, "missing field \"input\""),
        (
            "27 rows",
            with("input", serde_json::json!(vec![vec![0.0; 28]; 27])),
            422,
            "27 rows",
        ),
        (
            "29 in a row",
            with("input", serde_json::json!(short_row)),
            422,
            "29 numbers in row 5",
        ),
        (
            "1.01",
            with("input", serde_json::json!(out_of_range)),
            422,
            "\"input\"[2][7] must be a number in [0, 1], found 1.01",
        ),
        (
            "string pixel",
            with("input", serde_json::json!([["a"]])),
            422,
            "\"input\"",
        ),
        (
            "no target",
            without("target"),
            422,
            "missing field \"target\"",
        ),
        (
            "target 10",
            with("target", serde_json::json!(10)),
            422,
            "\"target\" must be an integer from 0 to 9, found 10",
        ),
        (
            "target -1",
            with("target", serde_json::json!(-1)),
            422,
            "\"target\"",
        ),
        (
            "no epsilon",
            without("epsilon"),
            422,
            "missing field \"epsilon\"",
        ),
        (
            "epsilon 0",
            with("epsilon", serde_json::json!(0)),
            422,
            "\"epsilon\" must be a number in (0, 1], found 0",
        ),
        (
            "epsilon 2",
            with("epsilon", serde_json::json!(2)),
            422,
            "\"epsilon\"",
        ),
        ("no steps", without("steps"), 422, "missing field \"steps\""),
        (
            "steps 0",
            with("steps", serde_json::json!(0)),
            422,
            "\"steps\" must be an integer from 1 to 200, found 0",
        ),
        (
            "steps 201",
            with("steps", serde_json::json!(201)),
            422,
            "\"steps\"",
        ),
        (
            "steps 1.5",
            with("steps", serde_json::json!(1.5)),
            422,
            "\"steps\"",
        ),
        (
            "step_size 0",
            with("step_size", serde_json::json!(0)),
            422,
            "\"step_size\"",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, r) = post(&fool, "application/json", body.as_bytes());
        let error = r["error"].as_str().unwrap_or_else(|| panic!("{what}: {r}"));
        assert_eq!(got, status, "{what}: {error}");
        assert!(error.contains(message), "{what}: {error}");
    }
    // /api/predict takes only "input" in JSON, and its query only explain=true|false.
    let (status, r) = post_json(&predict, &ok());
    assert_eq!(status, 422, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("unknown field"),
        "{r}"
    );
    for query in ["explain=yes", "explain", "verbose=true"] {
        let body = serde_json::json!({ "input": blank_input() });
        let (status, r) = post_json(&format!("{predict}?{query}"), &body);
        assert_eq!(status, 400, "{query}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("explain"),
            "{query}: {r}"
        );
    }
    // /api/fool takes JSON only, and only by POST.
    let (status, r) = post(&fool, "image/png", &png(&one(40, 40)));
    assert_eq!(status, 415, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("application/json"),
        "{r}"
    );
    let (status, _) = answer(ureq::get(&fool).call());
    assert_eq!(status, 405);
    // And a valid search is answered.
    let (status, r) = post(&fool, "application/json", ok().to_string().as_bytes());
    assert_eq!(status, 200, "{r}");
    assert!(r["steps"].as_u64().unwrap() <= 10);
}

/// `lenet predict --json`'s probabilities of `image`.
fn predict_cli(image: &std::path::Path) -> Vec<f64> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lenet"))
        .arg("predict")
        .arg("--json")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    numbers(&line["probabilities"])
}

#[test]
fn predict_the_page_and_eval_give_the_same_bits() {
    // One forward pass: the built-in model gives an image the same logits and probabilities, to
    // the bit, in `lenet predict`, `/api/predict` (image or JSON input) and `lenet eval`.
    let server = Server::start(None);
    let url = format!("{}/api/predict", server.url);
    let dir = tempfile::tempdir().unwrap();
    // An uploaded image: predict and the page prepare it the same way.
    for (i, img) in [one(120, 100), one(40, 90)].iter().enumerate() {
        let path = dir.path().join(format!("{i}.png"));
        std::fs::write(&path, png(img)).unwrap();
        let (status, page) = post(&url, "image/png", &png(img));
        assert_eq!(status, 200, "{page}");
        let p = numbers(&page["probabilities"]);
        assert_eq!(predict_cli(&path), p, "image {i}: predict vs the page");
        let body = serde_json::json!({ "input": page["input"] }).to_string();
        let (status, again) = post(&url, "application/json", body.as_bytes());
        assert_eq!(status, 200, "{again}");
        assert_eq!(numbers(&again["probabilities"]), p, "image {i}: JSON input");
    }
    // A test set's images, as the page's JSON input: their logits give eval's loss exactly
    // (12 images: one shard of the evaluator, whose loss is then the batch's mean).
    common::write_synthetic_dataset(dir.path(), 10, 12);
    let idx = std::fs::read(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
    let (mut logits, mut labels, mut confusion) = (Vec::new(), Vec::new(), [[0u64; 10]; 10]);
    for (i, pixels) in idx[16..].chunks(784).enumerate() {
        let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0_f32).collect();
        let rows: Vec<&[f32]> = x.chunks(28).collect();
        let body = serde_json::json!({ "input": rows }).to_string();
        let (status, page) = post(&url, "application/json", body.as_bytes());
        assert_eq!(status, 200, "{page}");
        let echoed: Vec<f32> = numbers(&page["input"]).iter().map(|&v| v as f32).collect();
        assert_eq!(echoed, x, "image {i}: the input the page ran");
        logits.extend(numbers(&page["layers"]["logits"]).iter().map(|&v| v as f32));
        let label = (i + 3) % 10;
        labels.push(label);
        confusion[label][page["prediction"].as_u64().unwrap() as usize] += 1;
    }
    let logits = ndarray::Array2::from_shape_vec((12, 10), logits).unwrap();
    let loss = nn::cross_entropy_loss(logits.view(), &labels) as f64;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["eval", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let eval: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        eval["loss"].as_f64().unwrap().to_bits(),
        loss.to_bits(),
        "{eval}"
    );
    assert_eq!(eval["confusion"], serde_json::json!(confusion));
}
