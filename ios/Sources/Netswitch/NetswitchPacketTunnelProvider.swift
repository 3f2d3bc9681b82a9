// A reference packet tunnel on the packet-flow API. Not compiled on the project's build machine
// (no Swift there): kept small so that it is obviously right.

import Foundation
import NetworkExtension
import os

/// A packet tunnel whose whole data plane is netswitch, without a SOCKS hop and without the utun
/// fd: the system's packets go from `packetFlow.readPackets` to
/// `PacketFlowHandle.writePackets`, and netswitch's packets come back through a `PacketWriter`
/// to `packetFlow.writePackets(_:withProtocols:)`. TCP ends in netswitch's userspace stack (a
/// listener on the tunnel address is unreachable with `includeAllNetworks`).
///
/// Use it as the extension's principal class by subclassing it in the extension target
/// (`final class PacketTunnelProvider: NetswitchPacketTunnelProvider {}`); override `config` or
/// `tunnelOptions` to change them.
///
/// The read loop: one `readPackets` at a time; its batch goes to netswitch in one call, which
/// blocks the completion handler's queue only while netswitch's input is full (the
/// backpressure), and only then is the next `readPackets` asked for. `writePackets` returns
/// false once the tunnel stopped, which ends the loop.
open class NetswitchPacketTunnelProvider: NEPacketTunnelProvider {
    private static let log = Logger(subsystem: "dev.netswitch", category: "packet-tunnel")

    private var manager: ConnectionManager?
    private var monitor: ApplePathMonitor?
    private var flow: PacketFlowHandle?

    /// The manager's config: a small runtime (a Network Extension must stay under 50 MiB).
    open var config: NetswitchConfig { NetswitchConfig(lightweightRuntime: true) }

    /// The tunnel: 172.19.0.1/30, apps' DNS answered by netswitch at 172.19.0.2, userspace stack.
    open var tunnelOptions: TunOptions {
        TunOptions(ipv4: "172.19.0.1/30", mtu: 1500, stack: .userspace, dnsHijack: true)
    }

    override open func startTunnel(options: [String: NSObject]?, completionHandler: @escaping (Error?) -> Void) {
        let settings = NEPacketTunnelNetworkSettings(tunnelRemoteAddress: "127.0.0.1")
        let ipv4 = NEIPv4Settings(addresses: ["172.19.0.1"], subnetMasks: ["255.255.255.252"])
        ipv4.includedRoutes = [NEIPv4Route.default()]
        settings.ipv4Settings = ipv4
        settings.dnsSettings = NEDNSSettings(servers: ["172.19.0.2"])
        settings.mtu = 1500
        setTunnelNetworkSettings(settings) { error in
            if let error {
                return completionHandler(error)
            }
            do {
                let manager = try ConnectionManager(config: self.config, platform: ApplePlatform())
                let monitor = ApplePathMonitor(manager: manager)
                monitor.start()
                let flow = try manager.startPacketFlow(
                    options: self.tunnelOptions, writer: TunnelFlowWriter(self.packetFlow))
                (self.manager, self.monitor, self.flow) = (manager, monitor, flow)
                self.readLoop(flow)
                completionHandler(nil)
            } catch {
                Self.log.error("netswitch: \(String(describing: error), privacy: .public)")
                completionHandler(error)
            }
        }
    }

    /// `readPackets` -> `writePackets`, until the tunnel stops.
    private func readLoop(_ flow: PacketFlowHandle) {
        packetFlow.readPackets { [weak self] packets, _ in
            guard flow.writePackets(packets: packets) else { return }
            self?.readLoop(flow)
        }
    }

    override open func stopTunnel(with reason: NEProviderStopReason, completionHandler: @escaping () -> Void) {
        flow?.stop()
        monitor?.stop()
        manager?.shutdown()
        (flow, monitor, manager) = (nil, nil, nil)
        completionHandler()
    }
}

/// netswitch's outgoing packets to the system. netswitch calls it on one of its own threads, one
/// batch at a time; `NEPacketTunnelFlow.writePackets` may be called from any thread.
final class TunnelFlowWriter: PacketWriter, @unchecked Sendable {
    private let flow: NEPacketTunnelFlow

    init(_ flow: NEPacketTunnelFlow) {
        self.flow = flow
    }

    func writePackets(packets: [Data], families: [Int32]) {
        flow.writePackets(packets, withProtocols: families.map { NSNumber(value: $0) })
    }
}
