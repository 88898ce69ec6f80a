//! `chat-auth`: the auth service binary.

use chat_common::cli::{self, Setting};
use clap::Command;
use std::process::ExitCode;

const NAME: &str = "chat-auth";

fn settings() -> Vec<Setting> {
    cli::union(&[
        chat_auth::config::SETTINGS,
        chat_auth::config::LIMIT_SETTINGS,
        cli::BUS,
        cli::INTERNAL,
        cli::VERIFIER,
        cli::COMMON,
    ])
}

fn command(settings: &[Setting]) -> Command {
    let mut subcommands = vec![
        Command::new("migrate").about("Apply the database migrations and exit"),
        Command::new("openapi").about("Print the OpenAPI document of the public routes"),
    ];
    subcommands.extend(chat_auth::operator::commands());
    cli::command(NAME, "Accounts, sessions and signing keys of the chat backend", settings, subcommands)
}

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let settings = settings();
    let (sub, args) = cli::parse(command(&settings), &settings);
    match sub.as_str() {
        "config" => {
            print!("{}", cli::render_config(&settings));
            return ExitCode::SUCCESS;
        }
        "openapi" => return cli::print_json(NAME, &chat_auth::openapi()),
        _ => {}
    }
    let cfg = match chat_auth::Config::from_env() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(NAME, e),
    };
    if sub == "health-check" {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing(NAME, chat_telemetry::LogFormat::from_env());
    let limits = &cfg.limits;
    let (bus_url, prefix) = (cfg.bus_url.as_deref(), cfg.bus_topic_prefix.as_str());
    let (db, cipher, key) = (&cfg.database, limits.key_cipher.as_ref(), cfg.bus_key.clone());
    if let Some(code) = chat_auth::operator::dispatch(NAME, &sub, &args, db, cipher, bus_url, prefix, key).await {
        return code;
    }
    if sub == "migrate" {
        return cli::finish(NAME, "migrate", chat_auth::migrate(&cfg.database).await.map(|()| "migrated"));
    }
    cli::announce(NAME);
    let served = chat_auth::run(cfg, chat_common::server::shutdown_signal()).await;
    cli::finish(NAME, "serve", served.map(|()| ""))
}
