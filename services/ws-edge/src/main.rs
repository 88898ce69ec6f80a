//! `chat-ws-edge`: the WebSocket edge binary.

use std::process::ExitCode;

// Per-request allocations dominate glibc malloc's profile under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let cfg = match chat_ws_edge::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-ws-edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--health-check") {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing("chat-ws-edge", chat_telemetry::LogFormat::from_env());
    match chat_ws_edge::run(cfg, chat_common::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat-ws-edge failed");
            eprintln!("chat-ws-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
