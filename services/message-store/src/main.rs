//! `chat-message-store`: the message-store service binary.

use chat_common::cli::{self, Setting};
use clap::Command;
use std::process::ExitCode;

// Per-request allocations dominate glibc malloc's profile under load (see BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "chat-message-store";

fn settings() -> Vec<Setting> {
    cli::union(&[
        chat_message_store::config::SETTINGS,
        chat_message_store::config::LIMIT_SETTINGS,
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
    let subcommands = vec![
        Command::new("migrate").about("Apply the database migrations and exit"),
        Command::new("openapi").about("Print the OpenAPI document of the public routes"),
    ];
    let cmd = cli::command(NAME, "Conversations, messages and their history", &settings, subcommands);
    let (sub, _) = cli::parse(cmd, &settings);
    match sub.as_str() {
        "config" => {
            print!("{}", cli::render_config(&settings));
            return ExitCode::SUCCESS;
        }
        "openapi" => return cli::print_json(NAME, &chat_message_store::openapi()),
        _ => {}
    }
    let cfg = match chat_message_store::Config::from_env() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(NAME, e),
    };
    if sub == "health-check" {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing(NAME, chat_telemetry::LogFormat::from_env());
    if sub == "migrate" {
        return cli::finish(NAME, "migrate", chat_message_store::migrate(&cfg.database).await.map(|()| "migrated"));
    }
    cli::announce(NAME);
    let served = chat_message_store::run(cfg, chat_common::server::shutdown_signal()).await;
    cli::finish(NAME, "serve", served.map(|()| ""))
}
