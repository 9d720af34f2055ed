//! The transport under both protocol drivers: a TCP connection that can turn into TLS, with a
//! timeout on every connect, read and write, and one read buffer whose leftovers survive between
//! replies (pipelining depends on that).

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_native_tls::TlsStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bytes read from the socket at most per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Transport failures. Each protocol wraps these in its own error.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    TlsSetup(#[from] crate::tls::TlsSetupError),
    #[error("timed out after {0:?} waiting for the server ({1})")]
    Timeout(Duration, &'static str),
    #[error("the server closed the connection ({0})")]
    Closed(&'static str),
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: reply line longer than {0} bytes")]
    LineTooLong(usize),
}

/// The byte stream: plain TCP before (or without) TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps one for the other.
    Swapping,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Swapping => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Swapping => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Swapping => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Swapping => Poll::Ready(Ok(())),
        }
    }
}

/// Splits the first complete line (ending in LF) off `buf`, sans IO: returns the line without its
/// CRLF or LF and the number of bytes it used, `None` when more input is needed, or an error as soon
/// as the line is known to be longer than `cap` (without waiting for its end).
pub fn take_line(buf: &[u8], cap: usize) -> Result<Option<(&[u8], usize)>, NetError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(pos) if pos > cap => Err(NetError::LineTooLong(cap)),
        Some(pos) => {
            let line = &buf[..pos];
            Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), pos + 1)))
        }
        None if buf.len() > cap => Err(NetError::LineTooLong(cap)),
        None => Ok(None),
    }
}

/// A connection with its read buffer.
pub struct Connection {
    stream: Stream,
    /// Bytes read but not yet used, from `start` on.
    buf: Vec<u8>,
    start: usize,
    timeout: Duration,
    bytes_in: u64,
}

impl Connection {
    /// Connects with `limit` on the connect itself and on every later read and write. Nagle is off:
    /// pipelined bursts are written whole and must not wait for an ACK.
    pub async fn connect(host: &str, port: u16, limit: Duration) -> Result<Connection, NetError> {
        let addr = format!("{host}:{port}");
        let tcp = match timeout(limit, TcpStream::connect(&addr)).await {
            Err(_) => return Err(NetError::Timeout(limit, "connect")),
            Ok(Err(e)) => return Err(NetError::Connect(addr, e)),
            Ok(Ok(tcp)) => tcp,
        };
        tcp.set_nodelay(true)?;
        Ok(Connection {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            timeout: limit,
            bytes_in: 0,
        })
    }

    /// Starts TLS on the connection, verifying the server's certificate for `host`.
    pub async fn start_tls(&mut self, host: &str, ca_file: Option<&Path>) -> Result<(), NetError> {
        let connector = crate::tls::connector(ca_file)?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Swapping) else {
            return Err(NetError::Tls("TLS started twice".into()));
        };
        let tls = match timeout(self.timeout, connector.connect(host, tcp)).await {
            Err(_) => return Err(NetError::Timeout(self.timeout, "TLS handshake")),
            Ok(Err(e)) => return Err(NetError::Tls(e.to_string())),
            Ok(Ok(tls)) => tls,
        };
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Bytes received so far, TLS overhead not counted.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes received and not yet used.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Writes `data` in one write, within the timeout.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), NetError> {
        self.send_within(data, self.timeout).await
    }

    /// Writes `data` within `limit` (a large message's data gets a limit scaled to its size).
    pub async fn send_within(&mut self, data: &[u8], limit: Duration) -> Result<(), NetError> {
        match timeout(limit, self.stream.write_all(data)).await {
            Err(_) => Err(NetError::Timeout(limit, "sending")),
            Ok(r) => Ok(r?),
        }
    }

    /// Reads more bytes into the buffer. EOF is an error: every caller expects more.
    pub async fn fill(&mut self, waiting_for: &'static str) -> Result<(), NetError> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let read = timeout(self.timeout, self.stream.read(&mut self.buf[old..])).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.buf.truncate(old);
                return Err(e.into());
            }
            Err(_) => {
                self.buf.truncate(old);
                return Err(NetError::Timeout(self.timeout, waiting_for));
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(NetError::Closed(waiting_for));
        }
        self.bytes_in += n as u64;
        Ok(())
    }

    /// The next line (without CRLF or LF), at most `cap` bytes long.
    pub async fn read_line(
        &mut self,
        cap: usize,
        waiting_for: &'static str,
    ) -> Result<String, NetError> {
        loop {
            if let Some((line, used)) = take_line(self.buffered(), cap)? {
                let text = String::from_utf8_lossy(line).into_owned();
                self.start += used;
                return Ok(text);
            }
            self.fill(waiting_for).await?;
        }
    }

    /// Closes the write side politely, within the timeout; errors do not matter any more.
    pub async fn shutdown(&mut self) {
        let _ = timeout(self.timeout, self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_framed_at_every_split() {
        let input = b"+OK a\r\n-ERR b\n+OK c\r\n";
        for split in 0..=input.len() {
            let mut buf = input[..split].to_vec();
            let mut lines = Vec::new();
            let mut rest = &input[split..];
            loop {
                while let Some((line, used)) = take_line(&buf, 100).unwrap() {
                    lines.push(String::from_utf8(line.to_vec()).unwrap());
                    buf.drain(..used);
                }
                if rest.is_empty() {
                    break;
                }
                buf.push(rest[0]);
                rest = &rest[1..];
            }
            assert_eq!(lines, ["+OK a", "-ERR b", "+OK c"], "split at {split}");
        }
    }

    #[test]
    fn a_line_over_the_cap_is_an_error_even_before_it_ends() {
        assert!(matches!(
            take_line(&[b'x'; 101], 100),
            Err(NetError::LineTooLong(100))
        ));
        let mut megabyte = vec![b'+'; 1 << 20];
        megabyte.extend_from_slice(b"\r\n");
        assert!(matches!(
            take_line(&megabyte, 8192),
            Err(NetError::LineTooLong(8192))
        ));
        assert!(matches!(take_line(b"ok\r\n", 3), Ok(Some((b"ok", 4)))));
    }
}
