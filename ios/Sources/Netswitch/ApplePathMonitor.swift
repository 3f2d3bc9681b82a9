// Apple side of the network snapshot: NWPathMonitor -> debounced InterfaceSnapshot pushes.
// Not compiled on the project's build machine (no Swift there).

import Darwin
import Foundation
import Network
import os

/// Watches the device's network paths with `NWPathMonitor` and pushes the full interface list to
/// netswitch after every burst of changes.
///
/// - Interfaces: the path's `availableInterfaces` in the system's order, typed wifi / cellular /
///   wiredEthernet / other; loopback and tunnels (`utun*`, `ipsec*`: our own tunnel among them)
///   and Apple peer-to-peer links (`awdl*`, `llw*`) are left out.
/// - Default: the first interface left (the system's preferred one).
/// - `expensive`: cellular, or the default when the path `isExpensive` (e.g. a phone hotspot);
///   `constrained`: the default when the path `isConstrained` (Low Data Mode). The path gives
///   these flags for its preferred interface only.
/// - Index from `if_nametoindex` (netswitch binds with `IP_BOUND_IF` to it); addresses from
///   `getifaddrs`. A path that is not `.satisfied` is the "no network" snapshot.
/// - Updates are debounced (`debounce`, default 1 s of quiet, at most 3x that, then a trailing
///   re-apply; see `PathDebouncer`).
///
/// Everything runs on one private serial queue; `push` is called there.
public final class ApplePathMonitor: @unchecked Sendable {
    private static let log = Logger(subsystem: "dev.netswitch", category: "path-monitor")
    private static let ignoredPrefixes = ["utun", "ipsec", "awdl", "llw", "lo"]

    private let queue = DispatchQueue(label: "dev.netswitch.path-monitor")
    private let monitor = NWPathMonitor()
    private let push: (InterfaceSnapshot) -> Void
    private var debouncer: PathDebouncer?   // confined to `queue`
    private var latest: NWPath?             // confined to `queue`

    /// A monitor that hands every snapshot to `push` (on its own queue).
    public init(debounce: TimeInterval = 1.0, push: @escaping (InterfaceSnapshot) -> Void) {
        self.push = push
        self.debouncer = PathDebouncer(queue: queue, window: debounce, maxWait: 3 * debounce) { [weak self] in
            self?.apply()
        }
    }

    /// A monitor that pushes every snapshot to `manager.updateInterfaces`; a rejected snapshot is
    /// logged and the next change retries.
    public convenience init(manager: ConnectionManager, debounce: TimeInterval = 1.0) {
        self.init(debounce: debounce) { snapshot in
            do {
                _ = try manager.updateInterfaces(snapshot: snapshot)
            } catch {
                ApplePathMonitor.log.error("netswitch: updateInterfaces failed: \(String(describing: error), privacy: .public)")
            }
        }
    }

    /// Starts watching. Call once.
    public func start() {
        monitor.pathUpdateHandler = { [weak self] path in
            self?.latest = path
            self?.debouncer?.update()
        }
        monitor.start(queue: queue)
    }

    /// Stops watching and drops pending pushes.
    public func stop() {
        monitor.cancel()
        queue.async { [weak self] in
            self?.debouncer?.cancel()
            self?.debouncer = nil
        }
    }

    private func apply() {
        guard let path = latest else { return }
        push(Self.snapshot(of: path))
    }

    /// The netswitch snapshot for `path` (see the type's documentation for the rules).
    public static func snapshot(of path: NWPath) -> InterfaceSnapshot {
        guard path.status == .satisfied else {
            return InterfaceSnapshot(interfaces: [], defaultIndex: nil)
        }
        let addresses = interfaceAddresses()
        var interfaces: [NetworkInterface] = []
        for candidate in path.availableInterfaces {
            guard let type = networkType(of: candidate.type),
                  !ignoredPrefixes.contains(where: { candidate.name.hasPrefix($0) }),
                  !candidate.name.isEmpty, candidate.name.utf8.count <= 15
            else { continue }
            var index = if_nametoindex(candidate.name)
            if index == 0 { index = UInt32(exactly: candidate.index) ?? 0 }
            guard index != 0, !interfaces.contains(where: { $0.name == candidate.name || $0.index == index })
            else { continue }
            let isDefault = interfaces.isEmpty
            interfaces.append(NetworkInterface(
                name: candidate.name,
                index: index,
                networkType: type,
                addresses: addresses[candidate.name] ?? [],
                dnsServers: [],
                expensive: type == .cellular || (isDefault && path.isExpensive),
                constrained: isDefault && path.isConstrained
            ))
        }
        return InterfaceSnapshot(interfaces: interfaces, defaultIndex: interfaces.first?.index)
    }

    /// netswitch's type for an interface type; nil for loopback.
    static func networkType(of type: NWInterface.InterfaceType) -> NetworkType? {
        switch type {
        case .wifi: return .wifi
        case .cellular: return .cellular
        case .wiredEthernet: return .ethernet
        case .loopback: return nil
        case .other: return .other
        @unknown default: return .other
        }
    }

    /// Every interface's IPv4/IPv6 addresses as `ip/prefix` (scope suffix dropped), by name.
    static func interfaceAddresses() -> [String: [String]] {
        var result: [String: [String]] = [:]
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return result }
        defer { freeifaddrs(head) }
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            guard let addr = entry.pointee.ifa_addr, let mask = entry.pointee.ifa_netmask else { continue }
            let family = Int32(addr.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6, let ip = numericHost(addr) else { continue }
            let name = String(cString: entry.pointee.ifa_name)
            result[name, default: []].append("\(ip)/\(prefixLength(mask, family: family))")
        }
        return result
    }

    private static func numericHost(_ addr: UnsafeMutablePointer<sockaddr>) -> String? {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(addr, socklen_t(addr.pointee.sa_len), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0
        else { return nil }
        return String(cString: host).split(separator: "%", maxSplits: 1).first.map(String.init)
    }

    /// Bits set in a netmask sockaddr. BSD may shorten a netmask's `sa_len` (trailing zero bytes
    /// omitted), so only the bytes it covers are read.
    private static func prefixLength(_ mask: UnsafeMutablePointer<sockaddr>, family: Int32) -> Int {
        let (offset, size) = family == AF_INET
            ? (MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_addr) ?? 4, 4)
            : (MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_addr) ?? 8, 16)
        let end = min(offset + size, Int(mask.pointee.sa_len))
        guard end > offset else { return 0 }
        let bytes = UnsafeRawPointer(mask)
        return (offset..<end).reduce(0) { $0 + bytes.load(fromByteOffset: $1, as: UInt8.self).nonzeroBitCount }
    }
}
