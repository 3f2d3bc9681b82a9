// Apple side of PlatformInterface. Not compiled on the project's build machine (no Swift there).

import Foundation

/// The platform for Apple apps: netswitch binds each socket itself with `IP_BOUND_IF` /
/// `IPV6_BOUND_IF` to the interface index from the snapshot, so every offered socket is answered
/// `.bindYourself`. (Passing `nil` as the platform has the same effect; this type exists so the
/// wiring reads the same on both platforms and as a place to add logging.)
///
/// Packet tunnel: an `NEPacketTunnelProvider` offers `packetFlow`, not a file descriptor:
/// `ConnectionManager.startPacketFlow(options:writer:)` takes its packets in batches (see
/// `NetswitchPacketTunnelProvider`). `startTun(fd:options:)` takes a utun file descriptor instead
/// (framing `.appleUtun`, the default on Apple) and owns it from then on.
public final class ApplePlatform: PlatformInterface {
    public init() {}

    public func bindSocket(fd: Int32, interface: NetworkInterface, action: BindAction) throws -> BindDecision {
        .bindYourself
    }

    /// netswitch resolves with the interface's DNS servers over sockets bound to it (from the
    /// Network Extension, outside the tunnel), else the system resolver.
    public func resolve(name: String, interface: NetworkInterface, wantIpv4: Bool, wantIpv6: Bool) async throws -> HostResolution {
        .resolveYourself
    }
}
