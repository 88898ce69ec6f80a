//! `chat`: the whole system in one process on one port (auth, message-store, presence, ws-edge),
//! composed from the same libraries the service binaries run. Defaults need no servers: SQLite
//! files under `CHAT_DATA_DIR` and the in-process bus.

mod adapters;
mod import;
mod web;

use chat_common::cli::{self, Setting};
use chat_common::config::{ConfigError, env_opt, env_or, env_parse};
use chat_db::DbConfig;
use clap::Command;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

struct Config {
    /// `CHAT_LISTEN`: the public API and WebSocket.
    listen: String,
    /// `CHAT_ADMIN_LISTEN`: /healthz, /readyz, /metrics.
    admin_listen: String,
    /// `CHAT_DATA_DIR`: SQLite files (and with them the signing key).
    data_dir: PathBuf,
    /// `DATABASE_URL`: postgres:// puts both stores in PostgreSQL (schemas chat_auth, chat_messages).
    database_url: Option<String>,
    /// `BUS_URL`: redis:// to use Redis instead of the in-process bus.
    bus_url: Option<String>,
    /// `PRESENCE_STORE_URL`: where presence is shared (default: the bus's broker).
    presence_store: Option<String>,
    /// `PRESENCE_KEY_PREFIX`: presence's Redis key prefix.
    presence_key_prefix: String,
    /// `BUS_TOPIC_PREFIX`: put before every bus topic (deployments sharing a broker).
    bus_topic_prefix: String,
    /// `BUS_SIGNING_KEY` (or `_FILE`): authenticates bus messages (required with Redis or NATS).
    bus_key: Option<chat_bus::BusKey>,
    db_max_connections: u32,
    /// `MESSAGE_STORE_GROUP_COMMIT`: sends per PostgreSQL transaction at most.
    group_commit: usize,
    auth: chat_auth::Limits,
    edge: chat_ws_edge::Limits,
    store: chat_message_store::Limits,
}

impl Config {
    fn from_env() -> Result<Config, ConfigError> {
        Ok(Config {
            listen: env_or("CHAT_LISTEN", "127.0.0.1:8080"),
            admin_listen: env_or("CHAT_ADMIN_LISTEN", "127.0.0.1:9090"),
            data_dir: PathBuf::from(env_or("CHAT_DATA_DIR", "./data")),
            database_url: match env_opt("DATABASE_URL") {
                // The all-in-one keeps its stores in SQLite files unless told PostgreSQL: any other
                // value is a mistake, never a silent fallback to SQLite.
                Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                    return Err(ConfigError {
                        name: "DATABASE_URL",
                        value: chat_common::config::redact_url(&url),
                        reason: "expected postgres://… (unset: SQLite files under CHAT_DATA_DIR)".into(),
                    });
                }
                url => url,
            },
            bus_url: env_opt("BUS_URL"),
            presence_store: chat_presence::store_url_from_env()?,
            presence_key_prefix: env_or("PRESENCE_KEY_PREFIX", "chat:presence"),
            bus_topic_prefix: env_or("BUS_TOPIC_PREFIX", ""),
            bus_key: chat_common::config::bus_key()?,
            db_max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
            group_commit: env_parse("MESSAGE_STORE_GROUP_COMMIT", chat_message_store::config::GROUP_COMMIT)?,
            auth: chat_auth::Limits::from_env()?,
            edge: chat_ws_edge::Limits::from_env()?,
            store: chat_message_store::Limits::from_env()?,
        })
    }

    fn db(&self, name: &str) -> DbConfig {
        match &self.database_url {
            Some(url) => DbConfig {
                url: url.clone(),
                schema: Some(format!("{}chat_{name}", env_or("DATABASE_SCHEMA_PREFIX", ""))),
                max_connections: self.db_max_connections,
            },
            None => DbConfig {
                url: chat_db::sqlite_url_for(&self.data_dir.join(format!("{name}.db"))),
                schema: None,
                max_connections: self.db_max_connections,
            },
        }
    }
}

/// The whole public API in one OpenAPI 3.1 document: what the all-in-one binary and the gateway serve.
fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = chat_auth::openapi();
    doc.merge(chat_message_store::openapi());
    doc.merge(chat_presence::openapi());
    chat_common::openapi::finish(doc, "chat")
}

/// The all-in-one binary's own settings (the services' limits are added to them).
const SETTINGS: &[Setting] = &[
    Setting::new("CHAT_LISTEN", "127.0.0.1:8080", "the public port: the whole API, /v1/ws, /docs and the web client"),
    Setting::new("CHAT_ADMIN_LISTEN", "127.0.0.1:9090", "/healthz, /readyz, /metrics"),
    Setting::new("CHAT_DATA_DIR", "./data", "SQLite files (auth.db, messages.db) when DATABASE_URL is unset"),
    Setting::url("DATABASE_URL", "", "postgres://… to keep both stores in PostgreSQL (sslmode, sslrootcert honoured)"),
    Setting::new("DATABASE_SCHEMA_PREFIX", "", "prefix of the PostgreSQL schema names chat_auth and chat_messages"),
    Setting::new("DATABASE_MAX_CONNECTIONS", "10", "pool size per store"),
    Setting::new("MIGRATE_ON_START", "true", "apply migrations at start (false: only check they were applied)"),
    Setting::new("MESSAGE_STORE_GROUP_COMMIT", "128", "concurrent sends stored in one transaction at most"),
    Setting::url(
        "PRESENCE_STORE_URL",
        "",
        "where presence is shared between instances: redis://…, rediss://…, nats://…, tls://…, memory://; default: BUS_URL",
    ),
    Setting::new("PRESENCE_KEY_PREFIX", "chat:presence", "Redis key prefix"),
    Setting::url("IMPORT_AUTH_DATABASE_URL", "", "import-django: write users here instead of this binary's auth store"),
    Setting::new("IMPORT_AUTH_DATABASE_SCHEMA", "", "import-django: the schema of IMPORT_AUTH_DATABASE_URL"),
    Setting::url("IMPORT_STORE_DATABASE_URL", "", "import-django: write conversations and messages here"),
    Setting::new("IMPORT_STORE_DATABASE_SCHEMA", "", "import-django: the schema of IMPORT_STORE_DATABASE_URL"),
];

fn settings() -> Vec<Setting> {
    cli::union(&[
        SETTINGS,
        chat_auth::config::LIMIT_SETTINGS,
        chat_message_store::config::LIMIT_SETTINGS,
        chat_ws_edge::config::LIMIT_SETTINGS,
        cli::BUS,
        cli::VERIFIER,
        cli::COMMON,
    ])
}

fn command(settings: &[Setting]) -> Command {
    let mut subcommands = vec![
        Command::new("migrate").about("Apply the migrations of both stores and exit"),
        Command::new("openapi").about("Print the OpenAPI document of the whole public API").arg(
            clap::Arg::new("html")
                .long("html")
                .action(clap::ArgAction::SetTrue)
                .help("print the rendered page served at /docs instead of the JSON"),
        ),
        import::command(),
    ];
    subcommands.extend(chat_auth::operator::commands());
    cli::command(
        NAME,
        "The whole chat backend in one process (auth, messages, presence, WebSocket)",
        settings,
        subcommands,
    )
}

const NAME: &str = "chat";

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
        "openapi" if args.get_flag("html") => {
            print!("{}", chat_common::openapi::docs_page(&openapi()));
            return ExitCode::SUCCESS;
        }
        "openapi" => return cli::print_json(NAME, &openapi()),
        _ => {}
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(NAME, e),
    };
    if sub == "health-check" {
        return chat_common::ops::health_check(&cfg.admin_listen);
    }
    let _telemetry = chat_telemetry::init_tracing(NAME, chat_telemetry::LogFormat::from_env());
    let (bus_url, prefix, key) = (cfg.bus_url.as_deref(), cfg.bus_topic_prefix.as_str(), cfg.bus_key.clone());
    let cipher = cfg.auth.key_cipher.as_ref();
    if let Some(code) =
        chat_auth::operator::dispatch(NAME, &sub, &args, &cfg.db("auth"), cipher, bus_url, prefix, key).await
    {
        return code;
    }
    match sub.as_str() {
        "import-django" => import_django(&cfg, &args).await,
        "migrate" => {
            let migrated = async {
                chat_auth::migrate(&cfg.db("auth")).await.map_err(|e| e.to_string())?;
                chat_message_store::migrate(&cfg.db("messages")).await.map_err(|e| e.to_string())
            };
            cli::finish(NAME, "migrate", migrated.await.map(|()| "migrated"))
        }
        _ => {
            cli::announce(NAME);
            cli::finish(NAME, "serve", run(cfg).await.map(|()| ""))
        }
    }
}

/// `chat import-django <database url>`: into the all-in-one databases, or wherever
/// `IMPORT_AUTH_DATABASE_URL`/`_SCHEMA` and `IMPORT_STORE_DATABASE_URL`/`_SCHEMA` point (microservices).
async fn import_django(cfg: &Config, args: &clap::ArgMatches) -> ExitCode {
    let source = args.get_one::<String>("source").cloned().unwrap_or_default();
    let target = |prefix: &str, name: &str| match chat_common::config::env_opt(&format!("{prefix}_DATABASE_URL")) {
        Some(url) => DbConfig {
            url,
            schema: chat_common::config::env_opt(&format!("{prefix}_DATABASE_SCHEMA")),
            max_connections: cfg.db_max_connections,
        },
        None => cfg.db(name),
    };
    let opts = import::Options { dry_run: args.get_flag("dry-run") };
    match import::run(&source, &target("IMPORT_AUTH", "auth"), &target("IMPORT_STORE", "messages"), &opts).await {
        Ok(report) if args.get_flag("json") => cli::print_json(NAME, &report),
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat import-django: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let bus = chat_bus::Bus::connect_signed(cfg.bus_url.as_deref(), &cfg.bus_topic_prefix, cfg.bus_key.clone()).await?;
    let auth = chat_auth::build(cfg.db("auth"), cfg.auth.clone(), bus.clone()).await?;
    chat_auth::spawn_background(&auth);
    // One verifier for the whole process: it reads auth's keys directly and learns revocations
    // the moment auth records them.
    let verifier = auth.verifier.clone();
    let directory = Arc::new(adapters::LocalDirectory(auth.store.clone()));
    let store = chat_message_store::build(
        &cfg.db("messages"),
        cfg.group_commit,
        &cfg.store,
        bus.clone(),
        verifier.clone(),
        directory,
    )
    .await?;
    let presence_store = chat_presence::effective_store_url(cfg.presence_store.as_deref(), cfg.bus_url.as_deref());
    let presence_backend = chat_presence::Backend::connect(presence_store.as_deref(), &cfg.presence_key_prefix).await?;
    let presence = chat_presence::build(presence_backend, bus.clone(), verifier.clone());
    let edge_id = format!("chat-{}", uuid::Uuid::now_v7());
    let edge = chat_ws_edge::build(
        &edge_id,
        cfg.edge.clone(),
        bus.clone(),
        verifier,
        Arc::new(adapters::LocalStore(store.clone())),
        Arc::new(adapters::LocalPresence(presence.clone())),
    )
    .await;

    let app = chat_auth::public_router(&auth)
        .merge(chat_message_store::public_router(&store))
        .merge(chat_presence::public_router(&presence))
        .merge(chat_ws_edge::router(edge.clone()))
        .merge(chat_ws_edge::legacy::router(
            edge.clone(),
            Arc::new(adapters::LocalLegacy {
                auth: auth.store.clone(),
                store: store.clone(),
                presence: presence.clone(),
            }),
        ))
        .merge(chat_common::openapi::serve(&openapi()))
        .merge(web::router());
    let app = chat_common::server::public_layers(app);
    let mut checks = chat_auth::ready_checks(&auth);
    checks.extend(chat_message_store::ready_checks(&store));
    checks.extend(chat_ws_edge::ready_checks(bus, &edge));
    let shutdown = async move {
        chat_common::server::shutdown_signal().await;
        edge.drain().await;
    };
    chat_common::server::serve_service_tuned(
        &cfg.listen,
        "CHAT_LISTEN",
        app,
        None,
        &cfg.admin_listen,
        "CHAT_ADMIN_LISTEN",
        checks,
        Some(cfg.edge.socket_send_buffer).filter(|n| *n > 0),
        shutdown,
    )
    .await?;
    Ok(())
}
