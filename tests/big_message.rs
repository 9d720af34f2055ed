//! A 100 MB message goes through with bounded memory: it streams from the socket to the spool file.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use support::{dovecot_account, Dovecot};

const SIZE: usize = 100 * 1024 * 1024;
/// Peak resident memory allowed for `outpost fetch` while it moves a 100 MB message.
const MAX_RSS_KB: i64 = 64 * 1024;

/// Writes a 100 MB message of 78-byte lines, every 50th of which starts with a dot.
fn write_big_message(path: &std::path::Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(
        b"From: big@example.net\r\nSubject: big\r\nMessage-ID: <big@example.net>\r\n\r\n",
    )
    .unwrap();
    let mut written = 0;
    let mut n = 0u64;
    while written < SIZE {
        let line = if n % 50 == 0 {
            format!(".{n:076}\r\n")
        } else {
            format!("{n:077}\r\n")
        };
        file.write_all(line.as_bytes()).unwrap();
        written += line.len();
        n += 1;
    }
    file.flush().unwrap();
}

/// Runs a command to its end and returns its exit status and peak RSS in KiB (from wait4).
///
/// Linux counts the spawning process's own peak in the child's (the memory of the vfork'ed copy
/// before exec), so this test process must stay small itself: it never reads the big files whole.
#[allow(clippy::zombie_processes)] // reaped by wait4, which Child does not know about
fn run_measured(command: &mut Command) -> (i32, i64) {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI calls on a zeroed struct and a child we own and have not waited for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Whether two files hold the same bytes, compared in chunks.
fn same_file_content(a: &std::path::Path, b: &std::path::Path, skip_b: u64) -> bool {
    use std::io::{BufReader, Seek, SeekFrom};
    let mut a = BufReader::new(std::fs::File::open(a).unwrap());
    let mut b = std::fs::File::open(b).unwrap();
    b.seek(SeekFrom::Start(skip_b)).unwrap();
    let mut b = BufReader::new(b);
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn a_100_mb_message_is_fetched_with_bounded_memory() {
    let dovecot = Dovecot::start(&[("big", "pw")]);
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("big.eml");
    write_big_message(&original);
    dovecot.deliver_file("big", &original);

    let spool_dir = dir.path().join("spool");
    let config = dir.path().join("outpost.toml");
    let account = dovecot_account(&dovecot, "big", "big", "pw", "max_message_size = \"200MB\"");
    std::fs::write(&config, support::config_text(&spool_dir, &[account])).unwrap();
    let (status, rss_kb) = run_measured(Command::new(env!("CARGO_BIN_EXE_outpost")).args([
        "--config",
        config.to_str().unwrap(),
        "fetch",
    ]));
    assert_eq!(status, 0);
    println!(
        "peak RSS of outpost fetch for a {} MB message: {} MiB",
        SIZE >> 20,
        rss_kb / 1024
    );
    assert!(rss_kb < MAX_RSS_KB, "peak RSS {rss_kb} KiB is not bounded");

    let files: Vec<_> = std::fs::read_dir(spool_dir.join("queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let header_len = {
        let mut head = vec![0u8; 4096];
        std::fs::File::open(&files[0])
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        head.windows(2).position(|w| w == b"\n\n").unwrap() as u64 + 2
    };
    assert!(
        same_file_content(&original, &files[0], header_len),
        "the stored message differs from the original"
    );
    assert_eq!(dovecot.count("big"), 0);
}
