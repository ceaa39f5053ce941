//! The page of `lenet serve` in a real browser: Debian's headless Chromium driven through
//! WebDriver (chromedriver). It draws a "1" and a "7" with pointer strokes on the canvas, checks
//! that each is the top prediction, that every feature-map picture and the saliency overlay have
//! been drawn, runs the "Fool it" panel on the "7" and checks its three pictures, and saves
//! screenshots (1280×800 and a 390×844 phone viewport) under target/tmp/browser/.
//!
//! It needs the `chromium` and `chromium-driver` packages (`.ci/run` installs them) and FAILS when
//! they are missing: a browser test that skips silently tests nothing. `LENET_CHROMIUM` and
//! `LENET_CHROMEDRIVER` override the programs' paths.
//!
//! The WebDriver client is the few W3C endpoints the test needs, JSON over ureq.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Server;
use serde_json::{json, Value};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A program from `$var`, else the first of `names` on the PATH; panics (loudly) when absent.
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "browser test: none of {names:?} is installed (nor ${var} set). Install Debian's \
         chromium and chromium-driver packages (`apt-get install chromium chromium-driver`, as \
         .ci/run does); this test fails rather than skip"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver and one browser session, both ended when dropped.
struct Browser {
    driver: Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chromium = program("LENET_CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = program("LENET_CHROMEDRIVER", &["chromedriver"]);
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let host = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{host}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps calling home, which a closed
        // network answers slowly.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            base: host,
            _profile: profile,
        };
        let session = browser.call("POST", "/session", caps);
        let id = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    /// One WebDriver command; its `value`. Panics with the driver's message on an error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = ureq::request(method, &url).timeout(Duration::from_secs(30));
        let result = if method == "GET" || method == "DELETE" {
            request.call()
        } else {
            request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "WebDriver {method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        let mut v: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
        v["value"].take()
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
    }

    fn element(&self, css: &str) -> Value {
        self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        )
    }

    /// Strokes on `#pad`: each a list of points in the pad's CSS pixels relative to its centre,
    /// drawn with a pointer of `kind` (mouse, pen or touch).
    fn draw(&self, kind: &str, strokes: &[&[(i64, i64)]]) {
        let pad = self.element("#pad");
        let mut actions = Vec::new();
        for stroke in strokes {
            let at = |(x, y): (i64, i64), ms: u64| json!({"type": "pointerMove", "duration": ms, "origin": {ELEMENT: pad[ELEMENT]}, "x": x, "y": y});
            actions.push(at(stroke[0], 0));
            actions.push(json!({"type": "pointerDown", "button": 0}));
            for &p in &stroke[1..] {
                actions.push(at(p, 60));
            }
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        let chain = json!({"actions": [{
            "type": "pointer", "id": format!("{kind}-1"),
            "parameters": {"pointerType": kind}, "actions": actions,
        }]});
        self.call("POST", "/actions", chain);
        self.call("DELETE", "/actions", Value::Null);
    }

    /// Waits until the page has received a new answer and no other came for 500 ms; returns
    /// the predicted class shown.
    fn settled_prediction(&self, before: u64) -> String {
        let count = || {
            self.script("return Number(document.body.dataset.predictions || 0)")
                .as_u64()
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = count();
        while last <= before {
            assert!(
                Instant::now() < deadline,
                "no prediction arrived; page error: {}",
                self.error_text()
            );
            std::thread::sleep(Duration::from_millis(50));
            last = count();
        }
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = count();
            if now == last {
                break;
            }
            last = now;
        }
        self.script("return document.getElementById('prediction').textContent")
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until the page has loaded `/api/model` (the layer table is filled in).
    fn wait_for_model(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .script("return document.getElementById('layers').rows.length")
            .as_u64()
            == Some(0)
        {
            assert!(
                Instant::now() < deadline,
                "the model description never loaded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn error_text(&self) -> String {
        self.script("return document.getElementById('error').textContent")
            .to_string()
    }

    fn predictions(&self) -> u64 {
        self.script("return Number(document.body.dataset.predictions || 0)")
            .as_u64()
            .unwrap()
    }

    /// For each picture block (`[data-layer]`) in `#maps` and `#filters`: whether every one of
    /// its canvases is painted (opaque) and some hold more than one colour (drawn, not blank; a
    /// single map may be uniform, e.g. all zero after ReLU).
    fn pictures_drawn(&self) -> Value {
        self.script(
            "const out = {};
             for (const block of document.querySelectorAll('#maps [data-layer], #filters [data-layer]')) {
               const canvases = [...block.querySelectorAll('canvas')];
               const pixels = canvases.map((c) => c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
               const varied = (d) => {
                 for (let i = 4; i < d.length; i += 4)
                   if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
                 return false;
               };
               out[block.dataset.layer] = pixels.length > 0 && pixels.every((d) => d[3] === 255) && pixels.some(varied);
             }
             return out;",
        )
    }

    /// Whether the canvas `#id` holds a picture: some pixel not fully transparent, and more
    /// than one colour among them.
    fn canvas_drawn(&self, id: &str) -> bool {
        let js = format!(
            "const c = document.getElementById('{id}');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let seen = null, varied = false, visible = false;
             for (let i = 0; i < d.length; i += 4) {{
               if (d[i + 3] > 0) visible = true;
               const px = d.slice(i, i + 4).join();
               if (seen === null) seen = px; else if (px !== seen) varied = true;
             }}
             return visible && varied;"
        );
        self.script(&js).as_bool().unwrap()
    }

    /// Clicks "Fool it" and waits for the adversarial answer; the status line shown.
    fn fool(&self) -> String {
        let count = || {
            self.script("return Number(document.body.dataset.adversarial || 0)")
                .as_u64()
                .unwrap()
        };
        let before = count();
        let button = self.element("#fool")[ELEMENT].as_str().unwrap().to_string();
        self.call("POST", &format!("/element/{button}/click"), json!({}));
        let deadline = Instant::now() + Duration::from_secs(15);
        while count() == before {
            let status = self.script("return document.getElementById('fool-status').textContent");
            assert!(
                Instant::now() < deadline,
                "no adversarial answer arrived; status: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.script("return document.getElementById('fool-status').textContent")
            .as_str()
            .unwrap()
            .to_string()
    }

    fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
    }
}

impl Browser {
    /// A screenshot of the whole page at `width` CSS pixels (the viewport made as tall as the
    /// page), for looking at what lies below the fold.
    fn full_page_screenshot(&self, width: u64, mobile: bool, path: &Path) {
        let height = self
            .script("return document.documentElement.scrollHeight")
            .as_u64()
            .unwrap();
        let metrics =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.cdp("Emulation.setDeviceMetricsOverride", metrics);
        self.screenshot(path);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.base.contains("/session/") {
            let _ = ureq::delete(&self.base).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A "1": one vertical stroke.
const ONE: &[&[(i64, i64)]] = &[&[(4, -90), (2, -40), (0, 10), (-2, 60), (-3, 95)]];
/// A "7": a bar across the top, then a diagonal down to the bottom left.
const SEVEN: &[&[(i64, i64)]] = &[
    &[(-70, -85), (-20, -86), (30, -87), (70, -88)],
    &[(70, -88), (45, -40), (20, 10), (0, 55), (-15, 95)],
];

fn check_digit(browser: &Browser, kind: &str, strokes: &[&[(i64, i64)]], digit: &str, shot: &Path) {
    let before = browser.predictions();
    browser.draw(kind, strokes);
    let predicted = browser.settled_prediction(before);
    browser.screenshot(shot);
    assert_eq!(
        predicted,
        digit,
        "drew a {digit} with a {kind}; see {}",
        shot.display()
    );
    let drawn = browser.pictures_drawn();
    for layer in ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "w1", "w2"] {
        assert_eq!(drawn[layer], true, "picture {layer} is blank: {drawn}");
    }
}

#[test]
fn draw_digits_in_headless_chromium() {
    let started = Instant::now();
    let server = Server::start(None); // the built-in model
    let browser = Browser::start();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();

    browser.call("POST", "/url", json!({"url": format!("{}/", server.url)}));
    browser.wait_for_model();

    check_digit(&browser, "mouse", ONE, "1", &dir.join("one-1280x800.png"));
    browser.call(
        "POST",
        &format!(
            "/element/{}/click",
            browser.element("#clear")[ELEMENT].as_str().unwrap()
        ),
        json!({}),
    );
    check_digit(&browser, "pen", SEVEN, "7", &dir.join("seven-1280x800.png"));
    assert!(
        browser.canvas_drawn("saliency28"),
        "the saliency overlay is blank"
    );

    // Fool it: make the "7" read as a 3 (the panel's default target) within ε = 0.2.
    let status = browser.fool();
    println!("fool it: {status}");
    for canvas in ["adv-original", "adv-change", "adv-result"] {
        assert!(browser.canvas_drawn(canvas), "{canvas} is blank ({status})");
    }
    let bars = browser.script("return document.querySelectorAll('#adv-bars .bar').length");
    assert_eq!(bars, 10, "{status}");
    assert!(status.starts_with("Now read as 3"), "{status}");
    browser.full_page_screenshot(1280, false, &dir.join("seven-1280-full.png"));

    // The file picker: a PNG of a "1" sent as it is.
    let upload = dir.join("upload-one.png");
    std::fs::write(&upload, common::png(&common::one(120, 160))).unwrap();
    let before = browser.predictions();
    let input = browser.element("#file")[ELEMENT]
        .as_str()
        .unwrap()
        .to_string();
    let path = upload.display().to_string();
    browser.call(
        "POST",
        &format!("/element/{input}/value"),
        json!({"text": path}),
    );
    assert_eq!(browser.settled_prediction(before), "1", "uploaded a 1");

    // A phone: 390×844 CSS pixels, drawn with a finger.
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    browser.cdp(
        "Emulation.setTouchEmulationEnabled",
        json!({"enabled": true, "maxTouchPoints": 5}),
    );
    browser.call("POST", "/refresh", json!({}));
    browser.wait_for_model();
    let overflow =
        browser.script("return document.documentElement.scrollWidth - window.innerWidth");
    assert_eq!(overflow, 0, "the page is wider than a phone's viewport");
    check_digit(
        &browser,
        "touch",
        SEVEN,
        "7",
        &dir.join("seven-390x844.png"),
    );
    browser.full_page_screenshot(390, true, &dir.join("seven-390-full.png"));
    println!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

impl Browser {
    /// Moves the mouse to the centre of the element `css`.
    fn hover(&self, css: &str) {
        let id = self.element(css)[ELEMENT].as_str().unwrap().to_string();
        let origin = json!({ ELEMENT: id });
        let move_ = json!({"type": "pointerMove", "origin": origin, "x": 0, "y": 0, "duration": 0});
        let actions = json!({"actions": [{"type": "pointer", "id": "hover",
            "parameters": {"pointerType": "mouse"}, "actions": [move_]}]});
        self.call("POST", "/actions", actions);
    }

    fn click(&self, css: &str) {
        let id = self.element(css)[ELEMENT].as_str().unwrap().to_string();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// A screenshot of the element `css` alone.
    fn element_screenshot(&self, css: &str, path: &Path) {
        let id = self.element(css)[ELEMENT].as_str().unwrap().to_string();
        let data = self.call("GET", &format!("/element/{id}/screenshot"), Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    /// The picture on the canvas `css` as a data URL, to tell whether it changed.
    fn picture(&self, css: &str) -> String {
        let js =
            format!("const c = document.querySelector('{css}'); return c ? c.toDataURL() : '';");
        self.script(&js).as_str().unwrap().to_string()
    }
}

/// The data root for the training test: `LENET_DATA_DIR` (the real MNIST) when set, else a
/// synthetic dataset of 2,000 training images in a temporary folder.
fn training_data() -> (std::ffi::OsString, Option<tempfile::TempDir>) {
    if let Some(real) = std::env::var_os("LENET_DATA_DIR").filter(|v| !v.is_empty()) {
        return (real, None);
    }
    println!("LENET_DATA_DIR is not set: training on a synthetic dataset");
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("mnist")).unwrap();
    common::write_synthetic_dataset(&root.path().join("mnist"), 2000, 500);
    (root.path().as_os_str().to_owned(), Some(root))
}

#[test]
fn train_in_the_page_and_hover_receptive_fields_in_headless_chromium() {
    let (root, _keep) = training_data();
    let server = Server::start_with_env(&[("LENET_DATA_DIR", &root)]);
    let browser = Browser::start();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    browser.call("POST", "/url", json!({"url": format!("{}/", server.url)}));
    browser.wait_for_model();
    check_digit(&browser, "pen", SEVEN, "7", &dir.join("train-seven.png"));

    // Receptive field: the page's, for the unit at the centre of a conv2 map (10 × 10), is the
    // one nn computes from the architecture.
    browser.hover("#maps [data-layer=conv2] canvas");
    let field = browser.script("return document.body.dataset.field || ''");
    let field = field.as_str().unwrap();
    let unit = field
        .strip_prefix("conv2 ")
        .and_then(|f| f.split(':').next())
        .unwrap_or_else(|| panic!("no field shown: {field:?}"));
    let (row, col) = unit.split_once(',').unwrap();
    let (row, col): (usize, usize) = (row.parse().unwrap(), col.parse().unwrap());
    assert!((4..=5).contains(&row) && (4..=5).contains(&col), "{field}");
    let [[r0, r1], [c0, c1]] = nn::inspect::receptive_field("conv2", row, col).unwrap();
    assert_eq!(field, format!("conv2 {row},{col}: {r0}-{r1},{c0}-{c1}"));
    assert!(browser.canvas_drawn("rf28"), "no receptive field drawn");
    browser.element_screenshot("#answer-panel", &dir.join("panel-answer-field.png"));
    browser.element_screenshot("#maps-panel", &dir.join("panel-maps.png"));
    browser.hover("#pad");
    assert_eq!(
        browser.script("return document.body.dataset.field || ''"),
        ""
    );

    // Train: one epoch on 2,000 images; the first curve point within 2 s of "Start".
    browser.script(
        "document.getElementById('t-epochs').value = 1;
         document.getElementById('t-batch').value = 16;
         document.getElementById('t-limit').value = 2000;",
    );
    let loss_before = browser.picture("#loss-curve");
    let clicked = Instant::now();
    browser.click("#t-start");
    let points = || browser.script("return Number(document.body.dataset.curvePoints || 0)");
    while points().as_u64() == Some(0) {
        assert!(
            clicked.elapsed() < Duration::from_secs(10),
            "no curve point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_point = clicked.elapsed();
    println!(
        "first curve point {:.0} ms after Start",
        first_point.as_secs_f64() * 1e3
    );
    assert!(first_point < Duration::from_secs(2), "{first_point:?}");
    let first_filters = loop {
        let picture = browser.picture("#train-filters [data-layer=tw1] canvas");
        if !picture.is_empty() {
            break picture;
        }
        assert!(
            clicked.elapsed() < Duration::from_secs(30),
            "no filters drawn"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = || browser.script("return document.getElementById('t-status').textContent");
    while !status().as_str().unwrap().starts_with("Done") {
        assert!(clicked.elapsed() < Duration::from_secs(120), "{}", status());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700)); // the last filters fetch
    println!("training: {}", status());
    assert_ne!(
        browser.picture("#loss-curve"),
        loss_before,
        "the loss curve is blank"
    );
    assert!(browser.canvas_drawn("acc-curve"));
    let cells = browser.script("return document.querySelectorAll('#confusion td').length");
    assert_eq!(cells, 100);
    let final_filters = browser.picture("#train-filters [data-layer=tw1] canvas");
    assert_ne!(
        final_filters, first_filters,
        "the conv1 filters did not change"
    );

    // Draw while it learns: the drawing is read by the weights just trained.
    // The count before the click: the answer may arrive before the next command runs.
    let before = browser.predictions();
    browser.click("#which-training");
    browser.settled_prediction(before);
    // The whole page in the viewport first: an element screenshot shows only what is in view.
    browser.full_page_screenshot(1280, false, &dir.join("train-1280-full.png"));
    for panel in ["input-panel", "train-panel", "fool-panel", "filters-panel"] {
        browser.element_screenshot(&format!("#{panel}"), &dir.join(format!("{panel}.png")));
    }
    browser.full_page_screenshot(390, true, &dir.join("train-390-full.png"));
    let overflow =
        browser.script("return document.documentElement.scrollWidth - window.innerWidth");
    assert_eq!(overflow, 0, "the page is wider than a phone's viewport");
}
