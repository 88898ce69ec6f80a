//! `chat-presence`: the presence service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let cfg = match chat_presence::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-presence: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--health-check") {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing("chat-presence", chat_telemetry::LogFormat::from_env());
    match chat_presence::run(cfg, chat_common::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat-presence failed");
            eprintln!("chat-presence: {e}");
            ExitCode::FAILURE
        }
    }
}
