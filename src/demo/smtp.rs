//! A small SMTP server for the demo (and tests): accepts mail for any recipient and files each
//! copy as `FOLDER/RECIPIENT/N.eml`, with `Return-Path` and `Delivered-To` on top as a delivery
//! agent adds them. EHLO offers PIPELINING, SIZE and 8BITMIME. Plain TCP only; not for production.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Largest message accepted, announced in EHLO.
pub const SIZE_LIMIT: u64 = 50_000_000;
/// Longest line read, command or data (RFC 5321 allows 1000; mail in the wild is longer).
const MAX_LINE: u64 = 64 * 1024;

/// Serves on 127.0.0.1 (a free port), filing mail under `folder`. Returns the address.
pub async fn serve(folder: PathBuf) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (folder, counter) = (folder.clone(), counter.clone());
            tokio::spawn(async move {
                if let Err(e) = session(socket, folder, counter).await {
                    tracing::debug!(error = %e, "demo SMTP session ended");
                }
            });
        }
    });
    Ok(addr)
}

fn path_of(arg: &str) -> Option<String> {
    let inner = arg
        .split_whitespace()
        .next()?
        .strip_prefix('<')?
        .strip_suffix('>')?;
    inner
        .chars()
        .all(|c| c.is_ascii_graphic())
        .then(|| inner.to_string())
}

async fn session(
    socket: TcpStream,
    folder: PathBuf,
    counter: Arc<AtomicU64>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 outpost demo SMTP server ready\r\n")
        .await?;
    let (mut sender, mut recipients): (Option<String>, Vec<String>) = (None, Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            format!(
                "250-outpost demo\r\n250-PIPELINING\r\n250-SIZE {SIZE_LIMIT}\r\n250 8BITMIME\r\n"
            )
        } else if upper.starts_with("HELO") || upper == "NOOP" {
            "250 OK\r\n".into()
        } else if upper == "RSET" {
            (sender, recipients) = (None, Vec::new());
            "250 OK\r\n".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper.starts_with("MAIL FROM:") {
            match path_of(&text[10..]) {
                Some(path) => {
                    sender = Some(path);
                    "250 OK\r\n".into()
                }
                None => "501 bad address\r\n".into(),
            }
        } else if upper.starts_with("RCPT TO:") {
            match (
                path_of(&text[8..]).filter(|p| p.contains('@') && !p.contains('/')),
                &sender,
            ) {
                (_, None) => "503 MAIL first\r\n".into(),
                (Some(path), Some(_)) => {
                    recipients.push(path.to_ascii_lowercase());
                    "250 OK\r\n".into()
                }
                (None, Some(_)) => "501 bad address\r\n".into(),
            }
        } else if upper == "DATA" {
            if recipients.is_empty() {
                "503 no valid recipients\r\n".into()
            } else {
                write.write_all(b"354 end with .\r\n").await?;
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                let from = sender.take().unwrap_or_default();
                let to = std::mem::take(&mut recipients);
                file_message(&mut reader, &folder, n, &from, &to).await?;
                "250 OK filed\r\n".into()
            }
        } else {
            "500 unknown command\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Streams the data into the first recipient's file, then copies it for the others.
async fn file_message(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    folder: &std::path::Path,
    n: u64,
    from: &str,
    to: &[String],
) -> std::io::Result<()> {
    let files: Vec<PathBuf> = to
        .iter()
        .map(|r| folder.join(r).join(format!("{n}.eml")))
        .collect();
    for f in &files {
        if let Some(dir) = f.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
    }
    let prefix = |rcpt: &str| format!("Return-Path: <{from}>\r\nDelivered-To: {rcpt}\r\n");
    let first_prefix = prefix(&to[0]);
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(&files[0]).await?);
    out.write_all(first_prefix.as_bytes()).await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut *reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        let start = usize::from(line.first() == Some(&b'.'));
        out.write_all(&line[start..]).await?;
    }
    out.flush().await?;
    for (rcpt, file) in to.iter().zip(&files).skip(1) {
        use tokio::io::AsyncSeekExt;
        let mut source = tokio::fs::File::open(&files[0]).await?;
        source
            .seek(std::io::SeekFrom::Start(first_prefix.len() as u64))
            .await?;
        let mut copy = tokio::fs::File::create(file).await?;
        copy.write_all(prefix(rcpt).as_bytes()).await?;
        tokio::io::copy(&mut source, &mut copy).await?;
    }
    Ok(())
}
