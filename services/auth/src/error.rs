//! The service's error type: database or internal failures, mapped to problem details by `chat-db`.

pub use chat_db::StoreError as Error;
