//! `chat-ws-edge`: the WebSocket edge binary.

use chat_common::cli::{self, Setting};
use std::process::ExitCode;

// Per-request allocations dominate glibc malloc's profile under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "chat-ws-edge";

fn settings() -> Vec<Setting> {
    cli::union(&[
        chat_ws_edge::config::SETTINGS,
        chat_ws_edge::config::LIMIT_SETTINGS,
        cli::BUS,
        cli::INTERNAL,
        cli::VERIFIER,
        cli::COMMON,
    ])
}

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let settings = settings();
    let cmd = cli::command(NAME, "The WebSocket edge: live delivery, typing, presence reports", &settings, vec![]);
    let (sub, _) = cli::parse(cmd, &settings);
    if sub == "config" {
        print!("{}", cli::render_config(&settings));
        return ExitCode::SUCCESS;
    }
    let cfg = match chat_ws_edge::Config::from_env() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(NAME, e),
    };
    if sub == "health-check" {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing(NAME, chat_telemetry::LogFormat::from_env());
    cli::announce(NAME);
    let served = chat_ws_edge::run(cfg, chat_common::server::shutdown_signal()).await;
    cli::finish(NAME, "serve", served.map(|()| ""))
}
