//! The userspace stack on a device with offloads (Linux `IFF_VNET_HDR`): the app's kernel hands
//! over 64 KiB TCP super-packets and gets 64 KiB segments back as TSO super-packets
//! (`src/tun/userspace/offload.rs`). Both families, both directions, every byte checked; the
//! 64 MiB both-ways test with offloads is in `scale.rs`.

use netswitch::tun::{Framing, Stack};

use super::{blocking, echo_app_fin_first_to, pattern, role, run_in_namespace, server, server_v6, Device};

/// 8 MiB echoed over IPv4 and over IPv6 through the userspace stack with offloads, the app
/// half-closing first; the device saw super-packets (more bytes than packets × MTU) and
/// nothing was dropped.
#[test]
fn tun_userspace_offload_echoes_both_families() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("userspace_offload::tun_userspace_offload_echoes_both_families");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| {
            (settings.stack, settings.framing) = (Stack::Userspace, Framing::VirtioNet)
        })
        .await;
        for (family, address) in
            [("IPv4", server(super::server::ECHO)), ("IPv6", server_v6(super::server::ECHO))]
        {
            let sent = pattern(8 << 20, 3);
            let expected = sent.clone();
            let echoed = blocking(move || echo_app_fin_first_to(address, &sent)).await.unwrap();
            assert!(echoed == expected, "{family}: {} bytes back of {}", echoed.len(), expected.len());
        }
        device.wait_idle().await;
        let counters = device.tun.counters();
        println!("userspace with offloads: 8 MiB echoed over IPv4 and IPv6; {counters:?}");
        // 32 MiB crossed the device; at MTU 9000 that is over 3,700 packets without offloads.
        assert!(counters.bytes_in > 16 << 20 && counters.bytes_out > 16 << 20, "{counters:?}");
        assert!(counters.bytes_in / counters.packets_in > 9000, "super-packets in: {counters:?}");
        assert!(counters.bytes_out / counters.packets_out > 9000, "super-packets out: {counters:?}");
        assert_eq!(
            counters.dropped_write + counters.dropped_no_flow + counters.dropped_nat_full,
            0,
            "{counters:?}"
        );
    });
}
