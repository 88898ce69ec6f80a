//! The web client in a real browser: tests/web/chat.test.mjs (Playwright driving Debian's chromium)
//! against the all-in-one binary, and against the microservices behind the nginx gateway.

use chat_e2e::*;
use std::time::Duration;

async fn browser_tests(base: &str, screenshot: Option<String>, token_ttl: Option<u64>) {
    let dir = repo_path("tests/web");
    assert!(
        std::path::Path::new(&format!("{dir}/node_modules/playwright-core")).exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/web` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "chromium not found at {chromium}: apt-get install chromium (scripts/test.sh does)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .args(["--test", "--test-concurrency=1", "chat.test.mjs"])
        .env("CHAT_WEB_BASE", base)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true);
    if let Some(path) = screenshot {
        cmd.env("CHAT_WEB_SCREENSHOT", path);
    }
    if let Some(ttl) = token_ttl {
        cmd.env("CHAT_WEB_TOKEN_TTL", ttl.to_string());
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("browser tests finish within 5 minutes")
        .expect("node is installed (apt-get install nodejs)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "browser tests failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_on_the_all_in_one_binary() {
    let aio = AllInOne::start(&[]).await;
    // The README's screenshot comes from this run.
    browser_tests(&format!("http://{}", aio.addr), Some(repo_path("docs/screenshot.png")), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_on_the_microservices_behind_the_gateway() {
    // Short-lived access tokens: the client must refresh them (REST and the socket's `auth` frame)
    // many times during the run.
    const TTL_SECS: u64 = 6;
    let c = Cluster::start(&require_redis().await, 2, &[("CHAT_ACCESS_TOKEN_TTL", TTL_SECS.to_string())]).await;
    let gw = start_nginx(&c).await;
    browser_tests(&format!("http://{}", gw.addr), None, Some(TTL_SECS)).await;
}
