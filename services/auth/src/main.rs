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
        chat_auth::operator::rotate_key_command(),
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
    match sub.as_str() {
        "migrate" => cli::finish(NAME, "migrate", chat_auth::migrate(&cfg.database).await.map(|()| "migrated")),
        "rotate-key" => {
            let retire = args.get_flag("retire-previous");
            let rotated = chat_auth::rotate_key(&cfg.database, cfg.limits.key_cipher.as_ref(), retire).await;
            cli::finish(NAME, "rotate-key", rotated.map(|kid| format!("new signing key: {kid}")))
        }
        "admin" | "users" => {
            let bus =
                match chat_bus::Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key).await {
                    Ok(b) => b,
                    Err(e) => return cli::finish::<String, _>(NAME, &sub, Err(e)),
                };
            chat_auth::operator::main(NAME, &cfg.database, &bus, &sub, &args).await
        }
        _ => {
            cli::announce(NAME);
            cli::finish(
                NAME,
                "serve",
                chat_auth::run(cfg, chat_common::server::shutdown_signal()).await.map(|()| String::new()),
            )
        }
    }
}
