//! `chat-auth`: the auth service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let cfg = match chat_auth::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat-auth: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().any(|a| a == "--health-check") {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing("chat-auth", chat_telemetry::LogFormat::from_env());
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return match chat_auth::migrate(&cfg.database).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-auth migrate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("rotate-key") {
        let retire = std::env::args().skip(2).any(|a| a == "--retire-previous");
        return match chat_auth::rotate_key(&cfg.database, cfg.limits.key_cipher.as_ref(), retire).await {
            Ok(kid) => {
                println!("new signing key: {kid}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("chat-auth rotate-key: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match chat_auth::run(cfg, chat_common::server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "chat-auth failed");
            eprintln!("chat-auth: {e}");
            ExitCode::FAILURE
        }
    }
}
