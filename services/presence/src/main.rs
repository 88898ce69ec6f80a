//! `chat-presence`: the presence service binary.

use chat_common::cli::{self, Setting};
use clap::Command;
use std::process::ExitCode;

const NAME: &str = "chat-presence";

fn settings() -> Vec<Setting> {
    cli::union(&[chat_presence::SETTINGS, cli::BUS, cli::INTERNAL, cli::VERIFIER, cli::COMMON])
}

#[tokio::main]
async fn main() -> ExitCode {
    chat_common::install_crypto_provider();
    let settings = settings();
    let subcommands = vec![Command::new("openapi").about("Print the OpenAPI document of the public routes")];
    let cmd = cli::command(NAME, "Who is online, shared by every edge", &settings, subcommands);
    let (sub, _) = cli::parse(cmd, &settings);
    match sub.as_str() {
        "config" => {
            print!("{}", cli::render_config(&settings));
            return ExitCode::SUCCESS;
        }
        "openapi" => return cli::print_json(NAME, &chat_presence::openapi()),
        _ => {}
    }
    let cfg = match chat_presence::Config::from_env() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(NAME, e),
    };
    if sub == "health-check" {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing(NAME, chat_telemetry::LogFormat::from_env());
    cli::announce(NAME);
    let served = chat_presence::run(cfg, chat_common::server::shutdown_signal()).await;
    cli::finish(NAME, "serve", served.map(|()| ""))
}
