//! POP3 (RFC 1939) with CAPA and PIPELINING (RFC 2449), STLS (RFC 2595) and SASL (RFC 5034).
//!
//! [`reply`], [`body`] and [`auth`] are sans IO: bytes in, values out, tested without sockets.
//! [`client`] is the driver that owns the socket.

pub mod auth;
pub mod body;
pub mod client;
pub mod reply;

pub use auth::Mechanism;
pub use client::{AuthChoice, ConnectOptions, Listed, Pop3Error, Session, TlsMode};
