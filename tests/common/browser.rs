//! A real browser for the console tests: Debian's chromium, headless, driven over WebDriver
//! by chromedriver spawned on a free port with its own temporary profile. Without chromium the
//! tests say `SKIPPED: chromium is not installed` and pass, unless KBGATE_REQUIRE_BROWSER=1.
#![allow(dead_code)]

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a step waits for, on a loaded shared machine.
const PATIENCE: Duration = Duration::from_secs(90);

/// One browser at a time in a test binary: the machine's two cores are shared.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// A headless chromium, or None (and the skip said) where it is not installed.
    pub async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            if std::env::var("KBGATE_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("chromium is not installed and KBGATE_REQUIRE_BROWSER=1");
            }
            println!("SKIPPED: chromium is not installed");
            return None;
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let port = super::free_port();
        // Its own process group, so that the browsers it starts end with it (see Drop).
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut attempts = 0;
        // chromedriver takes a moment to listen: retry until it answers.
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if attempts < 300 => {
                    attempts += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("chromedriver session: {error}"),
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element `css` names, once the page shows it.
    pub async fn wait(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
    }

    /// Waits until the page's `h1` reads `title`.
    pub async fn wait_title(&self, title: &str) {
        self.wait_text("h1", title).await;
    }

    /// Waits until the element `css` names reads `text` (e.g. after a form post that comes
    /// back to the same page).
    pub async fn wait_text(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.text().await.is_ok_and(|t| t == text)
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.client.current_url().await.unwrap();
                let body = self.body_text().await;
                panic!("no {css} reading {text:?}: at {url}:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap();
    }

    pub async fn body_text(&self) -> String {
        self.wait("body").await.text().await.unwrap()
    }

    /// Writes a screenshot to target/console-screenshots/`name`.png; returns its bytes.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        png
    }

    /// Ends the WebDriver session (chromium quits); Drop ends chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Also after a failed step: chromedriver and the browsers it started (its process group).
impl Drop for Browser {
    fn drop(&mut self) {
        let group = self.driver.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this test spawned; no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}
