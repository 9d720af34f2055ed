//! SMTP to the local server (RFC 5321, with SIZE, 8BITMIME, PIPELINING, STARTTLS, AUTH PLAIN).
//!
//! [`reply`] and [`data`] are sans IO; [`client`] is the driver on [`crate::net`].

pub mod client;
pub mod data;
pub mod reply;

pub use client::{SmtpError, SmtpOptions, SmtpSession, Transaction};
pub use reply::Reply;
