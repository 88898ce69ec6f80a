//! Wire types of the public contract (OpenAPI, docs/websocket.md): what clients see over REST and WebSocket, and what services put on the bus.

pub mod bus;
pub mod frames;
pub mod internal;
pub mod time;
pub mod types;

pub use time::Timestamp;
pub use types::*;
