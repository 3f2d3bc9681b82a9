//! The TCP connection manager over real loopback sockets: half-close, bulk integrity, on_close on
//! every path, close/close_all, the half-close timeout and shutdown.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use netswitch::dial::FailureKind;
use netswitch::relay::Side;
use netswitch::tracker::ConnectionState;
use netswitch::{ConnectionError, Destination, Metadata, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_then_server_answers() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut request = Vec::new();
        s.read_to_end(&mut request).await.unwrap(); // returns only after the client's FIN
        assert_eq!(request, b"request: please answer after my EOF");
        send_pattern(&mut s, 7, 3 * 1024 * 1024).await.unwrap();
    });
    let (mut client, _) = h.connect(server_addr).await;
    client.write_all(b"request: please answer after my EOF").await.unwrap();
    client.shutdown().await.unwrap();
    let got = timeout(WAIT, expect_pattern(&mut client, 7)).await.unwrap().unwrap();
    assert_eq!(got, 3 * 1024 * 1024);
    timeout(WAIT, server_task).await.unwrap().unwrap();
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "clean end expected, got {:?}", closed.error);
    assert_eq!(closed.bytes_up, 35);
    assert_eq!(closed.bytes_down, 3 * 1024 * 1024);
    h.assert_no_more_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_then_client_answers() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        s.write_all(b"banner, then my FIN").await.unwrap();
        s.shutdown().await.unwrap();
        expect_pattern(&mut s, 11).await.unwrap()
    });
    let (mut client, _) = h.connect(server_addr).await;
    let mut banner = Vec::new();
    timeout(WAIT, client.read_to_end(&mut banner)).await.unwrap().unwrap();
    assert_eq!(banner, b"banner, then my FIN");
    send_pattern(&mut client, 11, 2 * 1024 * 1024).await.unwrap();
    client.shutdown().await.unwrap();
    let received = timeout(WAIT, server_task).await.unwrap().unwrap();
    assert_eq!(received, 2 * 1024 * 1024);
    let closed = h.next_closed().await;
    assert!(closed.error.is_none(), "clean end expected, got {:?}", closed.error);
    assert_eq!(closed.bytes_down, 19);
    assert_eq!(closed.bytes_up, 2 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_64_mib_each_way_at_once() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let sender = tokio::spawn(async move {
            send_pattern(&mut w, 2, SIZE).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let received = expect_pattern(&mut r, 1).await.unwrap();
        sender.await.unwrap();
        received
    });
    let (client, id) = h.connect(server_addr).await;
    let (mut r, mut w) = client.into_split();
    let sender = tokio::spawn(async move {
        send_pattern(&mut w, 1, SIZE).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let received = timeout(Duration::from_secs(120), expect_pattern(&mut r, 2)).await.unwrap().unwrap();
    assert_eq!(received, SIZE);
    timeout(WAIT, sender).await.unwrap().unwrap();
    assert_eq!(timeout(WAIT, server_task).await.unwrap().unwrap(), SIZE);
    let closed = h.next_closed().await;
    assert_eq!(closed.id, id);
    assert!(closed.error.is_none(), "{:?}", closed.error);
    assert_eq!((closed.bytes_up, closed.bytes_down), (SIZE as u64, SIZE as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_live_and_tracker_shows_connection() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (mut client, id) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    client.write_all(&[1u8; 1000]).await.unwrap();
    let mut buf = [0u8; 1000];
    s.read_exact(&mut buf).await.unwrap();
    s.write_all(&[2u8; 300]).await.unwrap();
    client.read_exact(&mut buf[..300]).await.unwrap();
    // The relay counts bytes once its write returned: the client may have read them just before.
    let counted = || {
        let info = h.manager.get(id).expect("live connection is tracked");
        (info.bytes_up, info.bytes_down)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while counted() != (1000, 300) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(counted(), (1000, 300));
    let info = h.manager.get(id).expect("live connection is tracked");
    assert_eq!(info.metadata.destination, Destination::from(server_addr));
    assert_eq!(h.manager.len(), 1);
    assert_eq!(h.manager.list().len(), 1);
    drop(client);
    drop(s);
    let closed = h.next_closed().await;
    assert_eq!(closed.id, id);
    assert!(h.manager.get(id).is_none(), "entry disappears when the connection ends");
    assert_eq!(h.manager.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_connection_refused() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let (mut client, _) = h.connect(closed_port().await).await;
    let closed = h.next_closed().await;
    match error_of(&closed) {
        ConnectionError::Dial(e) => assert_eq!(e.kind(), FailureKind::Refused, "{e}"),
        other => panic!("expected a dial error, got {other}"),
    }
    // No handshake to report through: the client is reset.
    let mut buf = [0u8; 1];
    let read = timeout(WAIT, client.read(&mut buf)).await.unwrap();
    assert_eq!(read.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
    h.assert_no_more_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs: connects to it never complete.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let full: SocketAddr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(s)) = timeout(Duration::from_millis(300), TcpStream::connect(full)).await {
            fillers.push(s);
        }
    }
    let mut h = Harness::new(RelaySettings::default()).await;
    let mut metadata = Metadata::new(full.into());
    metadata.options.connect_timeout = Some(Duration::from_millis(400));
    let started = Instant::now();
    let (_client, _) = h.connect_with(metadata).await;
    let closed = h.next_closed().await;
    match error_of(&closed) {
        ConnectionError::Dial(e) => assert_eq!(e.kind(), FailureKind::TimedOut, "{e}"),
        other => panic!("expected a dial timeout, got {other}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(400));
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_close_reset_mid_stream_reaches_client_as_reset() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (mut client, _) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    client.write_all(b"some data").await.unwrap();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).await.unwrap();
    s.write_all(b"partial").await.unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s); // RST
    let closed = h.next_closed().await;
    match error_of(&closed) {
        ConnectionError::Io { side, .. } => assert_eq!(*side, Side::Remote),
        other => panic!("expected a remote I/O error, got {other}"),
    }
    // The client must not see a clean end (a truncated download would look complete).
    let mut got = Vec::new();
    let result = timeout(WAIT, client.read_to_end(&mut got)).await.unwrap();
    assert_eq!(result.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_by_id_and_close_all_close_idle_connections() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (client, id) = h.connect(server_addr).await;
        let (s, _) = server.accept().await.unwrap();
        clients.push((client, s));
        ids.push(id);
    }
    timeout(WAIT, async {
        while h.manager.list().iter().any(|c| c.state != ConnectionState::Relaying) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(h.manager.close(ids[0]));
    let closed = h.next_closed().await;
    assert_eq!(closed.id, ids[0]);
    assert!(matches!(error_of(&closed), ConnectionError::Closed));
    assert!(!h.manager.close(ids[0]), "a closed id is gone");
    assert_eq!(h.manager.close_all(), 2);
    let mut rest = [h.next_closed().await, h.next_closed().await];
    rest.sort_by_key(|c| c.id);
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[1..]);
    assert!(rest.iter().all(|c| matches!(c.error, Some(ConnectionError::Closed))));
    assert!(h.manager.is_empty());
    h.assert_no_more_closed().await;
    // Both ends of every closed connection see it.
    for (mut client, mut s) in clients {
        let mut buf = [0u8; 1];
        assert!(matches!(timeout(WAIT, client.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
        assert!(matches!(timeout(WAIT, s.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_closes_silent_remainder() {
    let mut settings = RelaySettings::default();
    settings.half_close_timeout = Some(Duration::from_millis(300));
    let mut h = Harness::new(settings).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (mut client, _) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    client.shutdown().await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0, "server sees the client's FIN");
    // The server keeps talking for a while: activity keeps the half-closed connection open.
    // Six ticks 100 ms apart: 600 ms in all, twice the timeout, yet never 300 ms of silence.
    let mut last_activity = Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"tick").await.unwrap();
        client.read_exact(&mut buf[..4]).await.unwrap();
        last_activity = Instant::now();
    }
    assert_eq!(h.manager.len(), 1, "active half-closed connection stays open");
    let closed = h.next_closed().await;
    assert!(matches!(error_of(&closed), ConnectionError::HalfCloseTimeout(_)));
    let silent = last_activity.elapsed();
    assert!(silent >= Duration::from_millis(250), "closed after only {silent:?} of silence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_none_keeps_connection() {
    let mut settings = RelaySettings::default();
    settings.half_close_timeout = None;
    let mut h = Harness::new(settings).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (mut client, _) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    client.shutdown().await.unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(b"late").await.unwrap();
    timeout(WAIT, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"late");
    assert_eq!(h.manager.len(), 1);
    drop(s);
    assert!(h.next_closed().await.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything_and_refuses_new_connections() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (_client, _) = h.connect(server_addr).await;
    let (_s, _) = server.accept().await.unwrap();
    h.manager.shutdown();
    assert!(matches!(error_of(&h.next_closed().await), ConnectionError::ShutDown));
    let (mut late, _) = h.connect(server_addr).await;
    assert!(matches!(error_of(&h.next_closed().await), ConnectionError::ShutDown));
    let mut buf = [0u8; 1];
    assert!(matches!(timeout(WAIT, late.read(&mut buf)).await.unwrap(), Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_backpressure_bounds_what_the_relay_takes() {
    let mut h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (mut client, _) = h.connect(server_addr).await;
    let (mut s, _) = server.accept().await.unwrap();
    // The client reads nothing. The server writes until its writes stop completing: everything it
    // managed to write sits in kernel socket buffers plus at most one relay buffer.
    let chunk = vec![7u8; 64 * 1024];
    let mut written = 0usize;
    while let Ok(Ok(())) = timeout(Duration::from_millis(500), s.write_all(&chunk)).await {
        written += chunk.len();
        assert!(written < 64 * 1024 * 1024, "the relay kept accepting data nobody reads");
    }
    println!("server could write {} KiB before backpressure stopped it", written / 1024);
    let info = h.manager.list().pop().unwrap();
    assert!(info.bytes_down < written as u64 + 1, "counted bytes are bytes really written");
    // Reading resumes the flow and nothing is lost.
    let mut received = 0usize;
    while received < written {
        let mut buf = vec![0u8; 256 * 1024];
        let n = timeout(WAIT, client.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0 && buf[..n].iter().all(|b| *b == 7));
        received += n;
    }
    drop(s);
    drop(client);
    let closed = h.next_closed().await;
    assert!(closed.bytes_down >= written as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_override_dials_the_override() {
    let h = Harness::new(RelaySettings::default()).await;
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut metadata = Metadata::new(closed_port().await.into());
    metadata.options.override_destination = Some(server.local_addr().unwrap());
    let (mut client, id) = h.connect_with(metadata).await;
    let (mut s, _) = timeout(WAIT, server.accept()).await.unwrap().unwrap();
    client.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).await.unwrap();
    assert_ne!(
        h.manager.get(id).unwrap().metadata.destination,
        Destination::from(server.local_addr().unwrap()),
        "the tracker keeps the destination the client asked for"
    );
}
