//! `lenet serve` over real HTTP on loopback: the page, the API's answers, its errors, and a load
//! test (1,000 predictions from 32 concurrent clients).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{answer, jpeg, one, png, post, random_model, Server};
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
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    );
    let (status, body) = raw(&server.url, &head, &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let chunked = "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
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
