//! Benchmark: delivery rate of 10,000 small messages into Postfix's `smtp-sink`, against Postfix's
//! own `smtp-source` into the same sink as the reference. Run it with `scripts/bench-deliver`.
//!
//! Both use the same number of sessions and messages of the same size; outpost's time includes
//! reading each message from the spool and recording its delivery (unlinking its file).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost::config::Config;

const MESSAGES: usize = 10_000;
const SIZE: usize = 2_000;
const SESSIONS: usize = 2;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `smtp-sink` on `port`, answering 250 to everything (as nobody when we are root, which it
/// requires).
fn sink(port: u16) -> Child {
    let mut command = Command::new("smtp-sink");
    if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        command.args(["-u", "nobody"]);
    }
    let child = command
        .arg(format!("127.0.0.1:{port}"))
        .arg("256")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (apt-get install postfix)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let spool = spool::Spool::open(&spool_dir).unwrap();
        let mut batch = Vec::new();
        for i in 0..MESSAGES {
            let mut text = format!("From: bench@example.net\r\nTo: user@example.org\r\nSubject: bench {i}\r\nMessage-ID: <b{i}@bench>\r\n\r\n");
            while text.len() < SIZE {
                text.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
            }
            let origin = spool::Origin {
                account: "bench".into(),
                uidl: None,
                arrived: spool::now(),
            };
            let mut writer = spool
                .writer(origin, |_| spool::Envelope {
                    sender: "bench@example.net".into(),
                    recipients: vec!["user@example.org".into()],
                })
                .unwrap();
            writer.write(text.as_bytes()).unwrap();
            batch.push(writer.finish().unwrap());
            if batch.len() == 500 {
                spool.commit(&batch).unwrap();
                batch.clear();
            }
        }
        spool.commit(&batch).unwrap();
    }

    let port = free_port();
    let mut ours_sink = sink(port);
    let text = format!(
        "spool_dir = {spool_dir:?}\n[local]\nhost = \"127.0.0.1\"\nport = {port}\nhelo = \"bench.test\"\n[delivery]\nsessions = {SESSIONS}\n\
         [[account]]\nname = \"unused\"\nserver = \"127.0.0.1\"\ntls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\ndeliver_to = \"x@example.org\"\n"
    );
    let config = Config::parse(&text, Path::new("/")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spool = spool::Spool::open(&spool_dir).unwrap();
    let started = Instant::now();
    let report = runtime
        .block_on(outpost::deliver::deliver_due(&config, &spool))
        .unwrap();
    let ours = started.elapsed().as_secs_f64();
    assert_eq!(report.delivered as usize, MESSAGES, "{report:?}");
    let _ = ours_sink.kill();
    let _ = ours_sink.wait();

    let port = free_port();
    let mut reference_sink = sink(port);
    let started = Instant::now();
    let status = Command::new("smtp-source")
        .args([
            "-s",
            &SESSIONS.to_string(),
            "-m",
            &MESSAGES.to_string(),
            "-l",
            &SIZE.to_string(),
            "-f",
            "bench@example.net",
            "-t",
            "user@example.org",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .expect("smtp-source (apt-get install postfix)");
    let reference = started.elapsed().as_secs_f64();
    assert!(status.success());
    let _ = reference_sink.kill();
    let _ = reference_sink.wait();

    let rate = |secs: f64| MESSAGES as f64 / secs;
    println!("{MESSAGES} messages of {SIZE} bytes, {SESSIONS} sessions, into smtp-sink:");
    println!(
        "  outpost deliver: {ours:.2} s, {:.0} messages/s (from the spool, each delivery recorded)",
        rate(ours)
    );
    println!(
        "  smtp-source:     {reference:.2} s, {:.0} messages/s",
        rate(reference)
    );
    let ratio = rate(ours) / rate(reference);
    println!(
        "  ratio: {ratio:.2} (target >= 0.8: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
}
