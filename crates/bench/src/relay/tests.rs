use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

// === SizeRewriter ===

/// The stream fed in one piece, then split at every position, then byte by byte: the
/// output and the count must not depend on how the network cut it.
fn rewrite_every_way(delta: i64, input: &[u8]) -> (Vec<u8>, u64) {
    let whole = {
        let mut r = SizeRewriter::new(delta);
        let mut out = Vec::new();
        let n = r.feed(input, &mut out);
        r.finish(&mut out);
        (out, n)
    };
    for cut in 0..=input.len() {
        let mut r = SizeRewriter::new(delta);
        let mut out = Vec::new();
        let n = r.feed(&input[..cut], &mut out) + r.feed(&input[cut..], &mut out);
        r.finish(&mut out);
        assert_eq!((&out, n), (&whole.0, whole.1), "cut at {cut}");
    }
    let mut r = SizeRewriter::new(delta);
    let mut out = Vec::new();
    let n: u64 = input.iter().map(|b| r.feed(&[*b], &mut out)).sum();
    r.finish(&mut out);
    assert_eq!((&out, n), (&whole.0, whole.1), "byte by byte");
    whole
}

#[test]
fn sizes_in_fetch_responses_are_rewritten() {
    let input = b"* 1 FETCH (UID 7 RFC822.SIZE 1234 FLAGS (\\Seen))\r\n\
* 2 FETCH (rfc822.size 10 UID 8)\r\n\
a1 OK Fetch completed.\r\n";
    let (out, n) = rewrite_every_way(100, input);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "* 1 FETCH (UID 7 RFC822.SIZE 1334 FLAGS (\\Seen))\r\n\
* 2 FETCH (rfc822.size 110 UID 8)\r\n\
a1 OK Fetch completed.\r\n"
    );
    assert_eq!(n, 2);
    // Smaller than the truth, and never below zero.
    let (out, n) = rewrite_every_way(
        -20,
        b"* 1 FETCH (RFC822.SIZE 1234)\r\n* 2 FETCH (RFC822.SIZE 5)\r\n",
    );
    assert_eq!(
        out,
        b"* 1 FETCH (RFC822.SIZE 1214)\r\n* 2 FETCH (RFC822.SIZE 0)\r\n"
    );
    assert_eq!(n, 2);
}

#[test]
fn literals_and_quoted_strings_pass_untouched() {
    // The message data says RFC822.SIZE, ends a line with something that looks like a
    // literal, and is followed on the same response by a real RFC822.SIZE.
    let body = b"Subject: RFC822.SIZE 7\r\n\r\nsee {5}\r\n(RFC822.SIZE 9)\r\n";
    let mut input = Vec::new();
    input.extend_from_slice(format!("* 3 FETCH (UID 9 BODY[] {{{}}}\r\n", body.len()).as_bytes());
    input.extend_from_slice(body);
    input.extend_from_slice(b" RFC822.SIZE 50)\r\n");
    // A quoted subject in an ENVELOPE, then a literal8 (BINARY) announced with ~{n}.
    input.extend_from_slice(
        b"* 4 FETCH (ENVELOPE (NIL \"RFC822.SIZE 3 \\\" RFC822.SIZE 4\" NIL) RFC822.SIZE 60 BINARY[] ~{14}\r\n",
    );
    input.extend_from_slice(b"RFC822.SIZE 1)");
    input.extend_from_slice(b")\r\na2 OK done\r\n");
    let (out, n) = rewrite_every_way(1, &input);
    let expected = String::from_utf8(input.clone())
        .unwrap()
        .replace(" RFC822.SIZE 50)", " RFC822.SIZE 51)")
        .replace("NIL) RFC822.SIZE 60 ", "NIL) RFC822.SIZE 61 ");
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(n, 2);
}

#[test]
fn only_whole_attributes_are_rewritten() {
    let input = b"* 1 FETCH (X-RFC822.SIZE 5 RFC822.SIZEX 6 RFC822.SIZE NIL)\r\n";
    let (out, n) = rewrite_every_way(3, input);
    assert_eq!((out.as_slice(), n), (&input[..], 0));
}

// === DelayRelay ===

/// An echo server for one connection at a time, on its own thread.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
            });
        }
    });
    addr
}

fn connect(relay: &DelayRelay) -> TcpStream {
    let c = TcpStream::connect(relay.addr()).unwrap();
    // A guard against a hung test, not a timing assertion.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Sends `len` patterned bytes in uneven writes and reads the echo back at once.
fn echo_through(relay: &DelayRelay, len: usize) {
    let mut c = connect(relay);
    let sent: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let to_send = sent.clone();
    let writer = std::thread::spawn(move || {
        let mut at = 0;
        let mut step = 1;
        while at < to_send.len() {
            let end = (at + step).min(to_send.len());
            w.write_all(&to_send[at..end]).unwrap();
            at = end;
            step = step * 3 % 70_001 + 1;
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the bytes came back changed or out of order");
}

#[test]
fn delay_relay_passes_bytes_intact_and_in_order() {
    let upstream = echo_server();
    for one_way in [Duration::ZERO, Duration::from_millis(5)] {
        let relay = DelayRelay::start(upstream, one_way).unwrap();
        echo_through(&relay, 3 << 20);
        let peak = relay.peak_queued_bytes();
        assert!(peak > 0, "nothing was ever queued");
        // Both directions of the one connection at most.
        assert!(
            peak <= 2 * QUEUE_CAP_BYTES as u64,
            "{peak} bytes queued at once"
        );
        // Several connections at once, each its own stream.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| echo_through(&relay, 200_000));
            }
        });
    }
}

#[test]
fn a_slow_receiver_is_not_buffered_for() {
    // An upstream that reads in small sips with pauses: slower than the client sends.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = l.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut conn, _) = l.accept().unwrap();
        let (mut total, mut buf) = (0usize, vec![0u8; 256 << 10]);
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let relay = DelayRelay::start(upstream, Duration::ZERO).unwrap();
    let mut c = connect(&relay);
    // Far more than the kernel's socket buffers on both sides of the relay hold.
    let len = 32 << 20;
    let block = vec![7u8; 1 << 20];
    for _ in 0..len / block.len() {
        c.write_all(&block).unwrap();
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(sink.join().unwrap(), len);
    let peak = relay.peak_queued_bytes() as usize;
    // At most what is due plus one read, not the whole queue the cap allows.
    assert!(
        peak <= DUE_BYTES + (64 << 10),
        "{peak} bytes held for a slow receiver"
    );
}

#[test]
fn a_round_trip_through_the_relay_takes_at_least_two_delays() {
    let one_way = Duration::from_millis(30);
    let relay = DelayRelay::start(echo_server(), one_way).unwrap();
    assert_eq!(relay.one_way(), one_way);
    let mut c = connect(&relay);
    for _ in 0..3 {
        let t0 = Instant::now();
        c.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        // A lower bound only: the machine may be slower, never faster.
        assert!(t0.elapsed() >= 2 * one_way, "{:?}", t0.elapsed());
    }
}

#[test]
fn dropping_the_relay_closes_its_connections() {
    let relay = DelayRelay::start(echo_server(), Duration::ZERO).unwrap();
    let mut c = connect(&relay);
    c.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    let addr = relay.addr();
    drop(relay);
    let mut rest = Vec::new();
    // EOF or a reset; either way nothing more arrives.
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "still open"),
    }
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn an_unreachable_upstream_closes_the_client() {
    // A port that was free a moment ago: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = DelayRelay::start(dead, Duration::ZERO).unwrap();
    let mut c = connect(&relay);
    let mut buf = Vec::new();
    let r = c.read_to_end(&mut buf);
    assert!(r.is_err() || buf.is_empty(), "{r:?}");
}

// === SizeLiar, against the scratch Dovecot ===

/// A minimal IMAP exchange over the liar's TLS: log in, fetch the sizes and bodies of
/// INBOX, and return everything the server (through the liar) said.
fn fetch_through(liar: &SizeLiar) -> Vec<u8> {
    use mailferry_core::tls::{certs_from_pem, client_config};
    let roots = certs_from_pem(&std::fs::read(liar.ca_pem()).unwrap()).unwrap();
    let mut cfg = (*client_config(&roots).unwrap()).clone();
    cfg.alpn_protocols.clear();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(liar.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let password = crate::dovecot::PASSWORD
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let commands = format!(
        "a1 LOGIN {} \"{password}\"\r\na2 SELECT INBOX\r\n\
         a3 UID FETCH 1:* (RFC822.SIZE BODY.PEEK[])\r\na4 LOGOUT\r\n",
        crate::dovecot::USER
    );
    tls.write_all(commands.as_bytes()).unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            // Dovecot closes after LOGOUT without a close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{e}: so far {}", String::from_utf8_lossy(&said)),
        }
    }
    said
}

#[test]
fn size_liar_rewrites_dovecots_sizes_and_nothing_else() {
    if !crate::dovecot::available() {
        eprintln!("skipped: Dovecot is not installed");
        return;
    }
    let dv = crate::dovecot::Dovecot::start().unwrap();
    // The body itself talks about RFC822.SIZE: it must reach the client unchanged.
    let body = b"From: a@example.com\r\nSubject: RFC822.SIZE 7\r\n\r\nRFC822.SIZE 8 {3}\r\n";
    dv.put("", "1700000000.M1P1.test", "S", body, 1_700_000_000)
        .unwrap();
    let upstream: SocketAddr = ([127, 0, 0, 1], dv.imaps_port).into();
    for delta in [1000, -10] {
        let liar = SizeLiar::start(upstream, &dv.ca_pem, delta).unwrap();
        let said = fetch_through(&liar);
        let text = String::from_utf8_lossy(&said);
        let told = (body.len() as i64 + delta).to_string();
        assert!(
            text.contains(&format!("RFC822.SIZE {told} ")),
            "delta {delta}: {text}"
        );
        assert!(
            said.windows(body.len()).any(|w| w == body),
            "the body changed: {text}"
        );
        assert!(text.contains("a3 OK"), "{text}");
        assert_eq!(liar.rewritten(), 1, "{text}");
    }
}
