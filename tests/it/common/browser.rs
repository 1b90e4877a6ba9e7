//! A real headless Chromium, driven through ChromeDriver's W3C WebDriver HTTP API (a few
//! JSON calls; Debian's `chromium` and `chromium-driver`, installed by tests/setup.sh).

use serde_json::{Value as Json, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: tests/setup.sh installs chromium and chromium-driver"
            );
        }
        let addr = super::free_addr();
        let port = addr.rsplit(':').next().unwrap_or_default().to_string();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        super::poll_until("chromedriver", Duration::from_secs(20), || {
            let (http, url) = (http.clone(), format!("{base}/status"));
            async move { http.get(url).send().await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        // Without the background-networking flags Chromium keeps dialling Google's hosts,
        // which a closed CI network refuses.
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
            "--window-size=1280,1600",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let mut b = Self {
            driver,
            http,
            session: base,
            _profile: profile,
        };
        let created = b.call("POST", "/session", Some(caps)).await;
        let id = created["sessionId"].as_str().expect("a session id").to_string();
        b.session = format!("{}/session/{id}", b.session);
        b
    }

    /// One WebDriver command under the session; returns its `value`.
    async fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}{path}", self.session);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url),
        };
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(b.to_string()),
            None => req,
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn elements(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// The visible text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.elements(css).await {
            let t = self.call("GET", &format!("/element/{id}/text"), None).await;
            out.push(t.as_str().unwrap_or_default().to_string());
        }
        out
    }

    /// Waits until `css` matches elements whose joined text satisfies `ok`; returns it.
    pub async fn wait_text(&self, what: &str, css: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        super::poll_until(what, timeout, || async {
            let text = self.texts(css).await.join("\n");
            ok(&text).then_some(text)
        })
        .await
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.elements(css).await.into_iter().next().expect(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.elements(css).await.into_iter().next().expect(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Saves a PNG of the page (kept with the test's output for people to look at).
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let b64 = self.call("GET", "/screenshot", None).await;
        if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()) {
            let _ = std::fs::write(path, png);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium goes with its driver; a leftover session only costs memory until then.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
