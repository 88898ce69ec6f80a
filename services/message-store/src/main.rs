//! `chat-message-store`: the message-store service binary.

use std::process::ExitCode;

// Per-request allocations dominate glibc malloc's profile under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let cfg = match chat_message_store::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-message-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--health-check") {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing("chat-message-store", chat_telemetry::LogFormat::from_env());
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return match chat_message_store::migrate(&cfg.database).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-message-store migrate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match chat_message_store::run(cfg, chat_common::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat-message-store failed");
            eprintln!("chat-message-store: {e}");
            ExitCode::FAILURE
        }
    }
}
