//! The operator's account commands (`admin grant|revoke`, `users disable|enable|revoke-sessions|
//! reset-password`): run from the command line against the auth database, never over the API.

use crate::store::Store;
use chat_bus::Bus;
use chat_protocol::Timestamp;
use clap::{ArgMatches, Command};
use std::process::ExitCode;
use uuid::Uuid;

/// The subcommands `dispatch` runs: `rotate-key`, `admin …`, `users …` (the auth binary and the
/// all-in-one both offer them).
pub fn commands() -> Vec<Command> {
    let user = chat_common::cli::username_arg;
    vec![
        Command::new("rotate-key").about("Make a new signing key the active one").arg(
            clap::Arg::new("retire-previous")
                .long("retire-previous")
                .action(clap::ArgAction::SetTrue)
                .help("withdraw the previous keys at once (a leaked key): their tokens stop verifying"),
        ),
        Command::new("admin")
            .about("Grant or withdraw operator rights")
            .subcommand_required(true)
            .subcommand(Command::new("grant").about("Make a user an operator admin").arg(user()))
            .subcommand(Command::new("revoke").about("Withdraw a user's operator rights").arg(user())),
        Command::new("users")
            .about("Account controls")
            .subcommand_required(true)
            .subcommand(Command::new("disable").about("Switch an account off and end its sessions").arg(user()))
            .subcommand(Command::new("enable").about("Switch an account on again").arg(user()))
            .subcommand(Command::new("revoke-sessions").about("End every session of an account").arg(user()))
            .subcommand(
                Command::new("reset-password")
                    .about("Set a new password, read from the first line of standard input; ends every session")
                    .arg(user()),
            ),
    ]
}

/// What a command did, printed on success.
#[derive(Debug)]
pub struct Outcome(pub String);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The operator's mistake (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        CommandError::Failed(format!("database: {e}"))
    }
}

/// Runs `admin …` or `users …` (`group` is which) against `store`; revocations are announced on
/// `bus` (running services also pick them up from the database within `AUTH_KEY_RELOAD_SECS`).
pub async fn run(store: &Store, bus: &Bus, group: &str, m: &ArgMatches) -> Result<Outcome, CommandError> {
    let Some((action, args)) = m.subcommand() else {
        return Err(CommandError::Usage(format!("{group}: a subcommand is required")));
    };
    let username = args.get_one::<String>("username").map(|u| u.to_ascii_lowercase()).unwrap_or_default();
    let id = store
        .user_id_by_name(&username)
        .await?
        .ok_or_else(|| CommandError::Usage(format!("no user named {username:?}")))?;
    let now = Timestamp::now().0;
    let done = match (group, action) {
        ("admin", "grant") => {
            store.set_admin(id, Some(now)).await?;
            format!("{username} is an operator admin")
        }
        ("admin", "revoke") => {
            store.set_admin(id, None).await?;
            format!("{username} is no longer an operator admin")
        }
        ("users", "disable") => {
            store.set_disabled(id, Some(now)).await?;
            let n = end_sessions(store, bus, id).await?;
            format!("{username} disabled; {n} sessions revoked")
        }
        ("users", "enable") => {
            store.set_disabled(id, None).await?;
            format!("{username} enabled")
        }
        ("users", "revoke-sessions") => {
            let n = end_sessions(store, bus, id).await?;
            format!("{n} sessions of {username} revoked")
        }
        ("users", "reset-password") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CommandError::Failed(format!("reading the new password from standard input: {e}")))?;
            let password = line.trim_end_matches(['\r', '\n']).to_string();
            crate::accounts::check_registration(&username, &password, None)
                .map_err(|e| CommandError::Usage(format!("new password refused: {}", e.detail)))?;
            let hasher = crate::password::Hasher::new(1, 1);
            let hash = hasher.hash(password).await.map_err(|e| CommandError::Failed(e.detail.to_string()))?;
            store.set_password_hash(id, &hash).await?;
            let n = end_sessions(store, bus, id).await?;
            format!("password of {username} reset; {n} sessions revoked")
        }
        (g, a) => return Err(CommandError::Usage(format!("unknown command {g} {a}"))),
    };
    Ok(Outcome(done))
}

/// Revokes every session of `id` and announces each on the bus (edges close its sockets with 4001).
async fn end_sessions(store: &Store, bus: &Bus, id: Uuid) -> Result<usize, CommandError> {
    let sessions = store.revoke_user_sessions(id).await?;
    for (sid, until) in &sessions {
        crate::accounts::announce_revocation(bus, *sid, *until).await;
    }
    Ok(sessions.len())
}

/// The auth subcommands a binary offers (`rotate-key`, `admin …`, `users …`), run as the binary
/// does: prints the outcome, or the reason with exit code 2 (the operator's mistake) or 1. `None`
/// when `sub` is none of them.
pub async fn dispatch(
    binary: &str,
    sub: &str,
    args: &ArgMatches,
    db: &chat_db::DbConfig,
    cipher: Option<&crate::key_cipher::KeyCipher>,
    bus_url: Option<&str>,
    bus_topic_prefix: &str,
    bus_key: Option<chat_bus::BusKey>,
) -> Option<ExitCode> {
    use chat_common::cli::finish;
    let code = match sub {
        "rotate-key" => {
            let rotated = crate::rotate_key(db, cipher, args.get_flag("retire-previous")).await;
            finish(binary, sub, rotated.map(|kid| format!("new signing key: {kid}")))
        }
        "admin" | "users" => {
            let opened = async {
                let bus = Bus::connect_signed(bus_url, bus_topic_prefix, bus_key).await.map_err(|e| e.to_string())?;
                let store = crate::open_store(db).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((bus, store))
            };
            match opened.await {
                Err(e) => finish::<String, _>(binary, sub, Err(e)),
                Ok((bus, store)) => match run(&store, &bus, sub, args).await {
                    Ok(Outcome(text)) => finish::<_, String>(binary, sub, Ok(text)),
                    Err(CommandError::Usage(reason)) => {
                        chat_common::cli::usage_error(&format!("{binary} {sub}"), reason)
                    }
                    Err(CommandError::Failed(reason)) => finish::<String, _>(binary, sub, Err(reason)),
                },
            }
        }
        _ => return None,
    };
    Some(code)
}
