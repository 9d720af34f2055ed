//! A slow link in user space: a TCP relay that delays and rate-limits each direction, for the
//! benchmarks and the demo (this machine's kernel has no netem).
//!
//! Model: each direction is one shared bottleneck (all connections together share the rate, as on
//! one satellite modem). A chunk that arrives at time `t` is sent once the link is free, takes
//! `bytes × 8 / rate` to serialise, and arrives half a round trip later. A new connection's first
//! data is held back one and a half round trips, the time a TCP handshake takes before a
//! server-speaks-first protocol's greeting can arrive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The link's shape.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    /// Bits per second from the server to the client.
    pub down_bps: u64,
    /// Bits per second from the client to the server.
    pub up_bps: u64,
    pub rtt: Duration,
}

/// What crossed the link.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub bytes_down: AtomicU64,
    pub bytes_up: AtomicU64,
    pub connections: AtomicU64,
    open: AtomicUsize,
    /// When the first connection opened and the last one closed: the time the link was in use.
    busy: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl LinkStats {
    /// Waits (at most `limit`) until every connection through the link has closed.
    pub async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Seconds from the first connection's open to the last one's close.
    pub fn busy_seconds(&self) -> f64 {
        match *self.busy.lock().unwrap_or_else(|p| p.into_inner()) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// One direction's bottleneck: when it is next free.
struct Bottleneck {
    bps: u64,
    free_at: Mutex<Instant>,
}

impl Bottleneck {
    /// Books `len` bytes on the link and returns when their last bit has left.
    fn book(&self, len: usize) -> Instant {
        let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free_at).max(Instant::now());
        let done = start + Duration::from_secs_f64(len as f64 * 8.0 / self.bps as f64);
        *free_at = done;
        done
    }
}

/// A running relay.
pub struct LinkSim {
    pub addr: SocketAddr,
    pub stats: Arc<LinkStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bytes read per chunk: about one TCP segment, so that timing is as fine as a real link's.
const SEGMENT: usize = 1460;
/// Chunks queued per direction of a connection before the relay stops reading, which pushes back
/// on the sender as a full bottleneck buffer would: 48 segments, about the bandwidth-delay
/// product of a 1 Mbit/s, 600 ms link. (TCP slow start is not modelled; the limit ignores it too.)
const QUEUE: usize = 48;

impl LinkSim {
    /// Listens on `listen` (use port 0) and relays every connection to `target` through the link.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        spec: LinkSpec,
    ) -> std::io::Result<LinkSim> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(LinkStats::default());
        let down = Arc::new(Bottleneck {
            bps: spec.down_bps,
            free_at: Mutex::new(Instant::now()),
        });
        let up = Arc::new(Bottleneck {
            bps: spec.up_bps,
            free_at: Mutex::new(Instant::now()),
        });
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (stats, down, up) = (shared.clone(), down.clone(), up.clone());
                tokio::spawn(async move {
                    let _ = relay(client, target, spec, stats, down, up).await;
                });
            }
        });
        Ok(LinkSim { addr, stats, task })
    }
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    spec: LinkSpec,
    stats: Arc<LinkStats>,
    down: Arc<Bottleneck>,
    up: Arc<Bottleneck>,
) -> std::io::Result<()> {
    let opened = Instant::now();
    {
        let mut busy = stats.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.0.get_or_insert(opened);
        stats.open.fetch_add(1, Ordering::SeqCst);
        stats.connections.fetch_add(1, Ordering::Relaxed);
    }
    let server = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let handshake = opened + spec.rtt.mul_f64(1.5);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let half = spec.rtt / 2;
    let downstream = pump(
        server_read,
        client_write,
        down,
        half,
        handshake,
        &stats.bytes_down,
    );
    let upstream = pump(
        client_read,
        server_write,
        up,
        half,
        handshake,
        &stats.bytes_up,
    );
    let _ = tokio::join!(downstream, upstream);
    let closed = Instant::now();
    let mut busy = stats.busy.lock().unwrap_or_else(|p| p.into_inner());
    if stats.open.fetch_sub(1, Ordering::SeqCst) == 1 {
        busy.1 = Some(closed);
    }
    Ok(())
}

/// Moves one direction's bytes: read, book the bottleneck, deliver after the one-way delay.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Bottleneck>,
    delay: Duration,
    not_before: Instant,
    counter: &AtomicU64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; SEGMENT];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let arrive = (link.book(n) + delay).max(not_before);
            if tx.send((arrive, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delay_and_rate_shape_the_traffic() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            s.write_all(&vec![b'x'; 10_000]).await.unwrap();
        });
        let spec = LinkSpec {
            down_bps: 80_000,
            up_bps: 80_000,
            rtt: Duration::from_millis(600),
        };
        let link = LinkSim::start("127.0.0.1:0".parse().unwrap(), target, spec)
            .await
            .unwrap();
        let started = Instant::now();
        let mut client = TcpStream::connect(link.addr).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let took = started.elapsed().as_secs_f64();
        assert_eq!(got.len(), 10_000);
        // 10,000 bytes at 80 kbit/s = 1 s, after the handshake's 0.9 s hold (the serialisation
        // overlaps the hold) plus the last segment's travel: between 1.2 and 1.5 s.
        assert!((1.2..1.5).contains(&took), "took {took}s");
        assert_eq!(link.stats.bytes_down.load(Ordering::Relaxed), 10_000);
    }
}
