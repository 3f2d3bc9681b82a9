//! The link between one connection's smoltcp interface and the tunnel: at most one packet in
//! (the app's segment being processed), every packet out written straight to the tunnel through
//! a [`PacketSink`]. No queue: a packet the sink refuses is lost like on a full device queue, and
//! TCP retransmits it. On an offloading device the link has the app's MSS ([`Link::segment`]):
//! smoltcp's MTU is then 64 KiB, it neither sums nor verifies TCP checksums, and every packet
//! goes out with a virtio-net header (see `offload.rs`).

use std::cell::RefCell;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::offload;
use super::reorder::Reordering;
use crate::tun::device::Offload;

/// Where the stack's outgoing IP packets go: the tunnel device, or a test's client.
pub(crate) trait PacketSink: Send + Sync {
    /// Sends one IP packet with its offload state ([`Offload::NONE`] unless the device
    /// offloads); false when it was dropped (counted by the sink).
    fn send(&self, packet: &[u8], offload: &Offload) -> bool;
}

impl PacketSink for super::super::Io {
    fn send(&self, packet: &[u8], offload: &Offload) -> bool {
        super::super::Io::send_with(self, packet, offload)
    }
}

thread_local! {
    /// The buffer outgoing packets are built in before the sink copies them out: one per thread,
    /// grown to the largest packet seen (the MTU), so that sending allocates nothing.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A smoltcp device over one incoming packet and a sink (see the module docs).
pub(crate) struct Link<'a> {
    /// The packet to hand to the interface; taken by the first `receive`.
    pub incoming: Option<&'a [u8]>,
    /// Where outgoing packets go.
    pub sink: &'a dyn PacketSink,
    /// The tunnel's MTU.
    pub mtu: usize,
    /// On an offloading device: the app's MSS, the size of the segments a super-packet is cut into.
    pub segment: Option<u16>,
    /// Notes the acknowledgement number of every packet sent.
    pub reordering: &'a mut Reordering,
}

impl phy::Device for Link<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = self.incoming.take()?;
        Some((Rx(packet), Tx(self.sink, self.segment, self.reordering)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.sink, self.segment, self.reordering))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        // The tunnel's parser already dropped IPv4 packets with a bad header checksum; TCP
        // checksums are verified and computed by smoltcp, except on an offloading device.
        capabilities.checksum = ChecksumCapabilities::default();
        capabilities.max_transmission_unit = self.mtu;
        if self.segment.is_some() {
            capabilities.max_transmission_unit = offload::MTU;
            capabilities.checksum.tcp = Checksum::None;
        }
        capabilities
    }
}

/// The incoming packet.
pub(crate) struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// One outgoing packet, built in the thread's scratch buffer and handed to the sink (prepared
/// for the device's offloads when there is an MSS), its acknowledgement number noted.
pub(crate) struct Tx<'a>(&'a dyn PacketSink, Option<u16>, &'a mut Reordering);

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            let packet = &mut scratch[..len];
            let result = f(packet);
            self.2.sent(packet);
            let offload = match self.1 {
                Some(mss) => offload::prepare(packet, mss),
                None => Offload::NONE,
            };
            self.0.send(packet, &offload);
            result
        })
    }
}
