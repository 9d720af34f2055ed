//! outpost: brings mail from external POP3 mailboxes into a site's own mail server over a slow,
//! metered or intermittent link.
//!
//! # Map
//! - [`config`]: the TOML configuration, validated whole, every error with its key and line.
//! - [`pop3`]: the POP3 client. [`pop3::reply`], [`pop3::body`] and [`pop3::auth`] parse and
//!   compute without touching a socket; [`pop3::client`] is the driver (socket, TLS, timeouts).
//! - [`fetch`]: a window: every account's session, messages streamed into the spool, `DELE` only
//!   after the spool commit.
//! - [`envelope`]: the SMTP envelope derived from a message's headers.
//! - [`pickup`]: `.eml` files dropped into `pickup/` enter the spool through the same door.
//! - [`smtp`]: the SMTP client (sans-IO replies and DATA encoder, one driver).
//! - [`deliver`]: drains the spool into the local server: per-recipient outcomes, retries with
//!   backoff, badmail, poison isolation.
//! - the `spool` crate: durable storage (message files plus a sled index) and its invariants.
//! - [`progress`]: the terminal display and summary of a window.
//! - [`net`]: the transport under the protocol drivers: TCP, TLS, timeouts, the read buffer.
//! - [`schedule`] and [`window`]: when connect windows happen, and one window: link up, fetch
//!   within caps, link down, recorded.
//! - [`daemon`]: `outpost run`, the deliverer, pickup watcher and scheduler loops together.
//! - [`admin`]: what `spoolctl` shows and does to the queue; [`control`] renders it, the same
//!   whether `spoolctl` opened the spool or asked the daemon over its socket.
//! - [`routing`]: catch-all mailboxes: which local recipients a message is for.
//! - [`alerts`]: notices to the postmaster, through the spool like any mail.
//! - [`linksim`]: a user-space slow-link simulator for benchmarks and demos.
//! - [`demo`]: `outpost demo`, with small built-in POP3 and SMTP servers (not the production path).
//!
//! Data flows: POP3 server → [`pop3::client::Session`] → [`fetch`] → `spool::MessageWriter` →
//! `spool::Spool::commit` → `DELE`; and `pickup/` → [`pickup`] → the same writer and commit.
//! Out: `spool::Spool::due` → [`deliver`] → [`smtp::SmtpSession`] → local server → 250 →
//! `spool::Spool::remove_delivered`, or `spool::Spool::to_badmail`.

pub mod admin;
pub mod alerts;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deliver;
pub mod demo;
pub mod envelope;
pub mod fetch;
pub mod linksim;
pub mod net;
pub mod pickup;
pub mod pop3;
pub mod progress;
pub mod routing;
pub mod schedule;
pub mod secret;
pub mod smtp;
pub mod tls;
pub mod window;
