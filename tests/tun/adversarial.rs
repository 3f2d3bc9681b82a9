//! The system stack against apps that behave badly or just slowly (root; skipped with a printed
//! reason otherwise). Each test names the defect it once showed.

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use crate::{blocking, connect, role, run_in_namespace, server, Device};

/// An app that half-closes first and reads the server's answer only a few seconds after the
/// server closed (busy, backgrounded, reading from a slow consumer): the relay ended the
/// connection as soon as the answer was in the kernel's buffers, but the kernel still holds part
/// of it for the app. The app must get all of it and the end: once the NAT entry had left
/// ([`netswitch::tun::nat::LINGER`] after the connection ended), the rest was stuck in the
/// kernel and the app hung.
#[test]
fn tun_a_late_reader_gets_the_whole_answer_after_the_connection_ended() {
    if role().as_deref() != Some("device") {
        return run_in_namespace(
            "adversarial::tun_a_late_reader_gets_the_whole_answer_after_the_connection_ended",
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        let (received, error) = blocking(|| {
            let mut stream = connect(server::SERVER_FIRST).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(netswitch::tun::nat::LINGER + Duration::from_secs(1));
            let mut received = Vec::new();
            let error = stream.read_to_end(&mut received).err();
            (received.len(), error)
        })
        .await;
        println!("counters: {:?}", device.tun.counters());
        assert_eq!(
            (received, error.map(|e| e.kind())),
            (200_000, None),
            "the app got only part of the answer"
        );
        device.wait_idle().await;
    });
}
