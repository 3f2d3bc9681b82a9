// Plain Kotlin (no Android classes): the usable networks among those Android reported, and the
// netswitch snapshot made of them. Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.InterfaceSnapshot
import dev.netswitch.NetworkInterface
import dev.netswitch.NetworkType

/** Longest interface name netswitch accepts (IFNAMSIZ - 1 bytes). */
const val MAX_INTERFACE_NAME_BYTES = 15

/** One network netswitch may use, with everything the glue knows about it (see [usableSnapshot]). */
data class UsableNetwork(
    /** `Network.getNetworkHandle()`. */
    val key: Long,
    /** Interface name, valid for netswitch ([isValidInterfaceName]). */
    val name: String,
    /** Interface index, > 0. */
    val index: UInt,
    /** The netswitch network type ([networkTypeOf]). */
    val type: NetworkType,
    /** Addresses as `ip/prefix`. */
    val addresses: List<String>,
    /** DNS servers as plain IPs. */
    val dnsServers: List<String>,
    /** Metered. */
    val expensive: Boolean,
    /** Metered while Data Saver restricts this app. */
    val constrained: Boolean,
    /** [NetworkCaps.healthy]: validated, no captive portal, not suspended. */
    val validated: Boolean,
    /** `NET_CAPABILITY_CAPTIVE_PORTAL` (kept apart from [validated] for logs and tests). */
    val captivePortal: Boolean,
    /** Suspended (kept apart from [validated] for logs and tests). */
    val suspended: Boolean,
)

/** The usable networks, the default first, and the default's index (null = unknown or unusable). */
data class UsableSnapshot(val networks: List<UsableNetwork>, val defaultIndex: UInt?)

/**
 * `host/prefix` in the form netswitch parses: the `%zone` suffix Java puts on IPv6 link-local
 * addresses (`fe80::1%wlan0`) is dropped.
 */
fun addressWithPrefix(hostAddress: String, prefixLength: Int): String = "${plainAddress(hostAddress)}/$prefixLength"

/** An IP without the `%zone` suffix Java adds to scoped IPv6 addresses. */
fun plainAddress(hostAddress: String): String = hostAddress.substringBefore('%')

/** 1 to 15 bytes of UTF-8 without NUL: what netswitch accepts as an interface name. */
fun isValidInterfaceName(name: String): Boolean =
    name.isNotEmpty() && '\u0000' !in name && name.toByteArray(Charsets.UTF_8).size <= MAX_INTERFACE_NAME_BYTES

/**
 * The networks netswitch may use, from the networks Android described.
 *
 * A network is left out when netswitch must not or cannot use it: a VPN or no transport
 * ([networkTypeOf] is null), no INTERNET capability, no interface name or a name netswitch rejects
 * (empty, longer than 15 bytes, a NUL), or no interface index (`indexOf` returns null or <= 0).
 * Networks that only half-exist (capabilities or link properties never reported: Android's
 * "phantom" networks) never reach this function, see [NetworkTable.entries].
 *
 * An unhealthy network (not validated yet, behind a captive portal, suspended) stays in, marked
 * `validated = false`: it may be the only network, and netswitch prefers validated ones itself.
 * The default is never moved to another network: it is the network Android routes protected
 * sockets through, whatever its health.
 *
 * Order: the default network first, then the others in `entries` order. An interface name or index
 * seen twice keeps its first (so the default's) entry: netswitch rejects duplicates.
 * `expensive` = metered; `constrained` = metered while Data Saver restricts this app (`dataSaver`).
 */
fun usableSnapshot(
    entries: List<NetworkEntry>,
    defaultKey: Long?,
    dataSaver: Boolean,
    indexOf: (String) -> Int?,
): UsableSnapshot {
    val ordered = entries.filter { it.key == defaultKey } + entries.filter { it.key != defaultKey }
    val networks = ArrayList<UsableNetwork>()
    var defaultIndex: UInt? = null
    for (entry in ordered) {
        val type = networkTypeOf(entry.caps.transports) ?: continue
        if (!entry.caps.hasInternet) continue
        val name = entry.link.interfaceName ?: continue
        if (!isValidInterfaceName(name)) continue
        val index = indexOf(name)?.takeIf { it > 0 }?.toUInt() ?: continue
        if (networks.any { it.name == name || it.index == index }) continue
        networks += UsableNetwork(
            key = entry.key,
            name = name,
            index = index,
            type = type,
            addresses = entry.link.addresses,
            dnsServers = entry.link.dnsServers,
            expensive = entry.caps.metered,
            constrained = entry.caps.metered && dataSaver,
            validated = entry.caps.healthy,
            captivePortal = entry.caps.captivePortal,
            suspended = entry.caps.suspended,
        )
        if (entry.key == defaultKey) defaultIndex = index
    }
    return UsableSnapshot(networks, defaultIndex)
}

/** The FFI record for one usable network: the only place the glue builds a [NetworkInterface]. */
fun toNetworkInterface(network: UsableNetwork): NetworkInterface = NetworkInterface(
    name = network.name,
    index = network.index,
    networkType = network.type,
    addresses = network.addresses,
    dnsServers = network.dnsServers,
    expensive = network.expensive,
    constrained = network.constrained,
    validated = network.validated,
)

/** The FFI snapshot for `updateInterfaces`: [toNetworkInterface] of each network, same order. */
fun toInterfaceSnapshot(usable: UsableSnapshot): InterfaceSnapshot =
    InterfaceSnapshot(interfaces = usable.networks.map(::toNetworkInterface), defaultIndex = usable.defaultIndex)

/** [usableSnapshot] mapped to the FFI snapshot ([toInterfaceSnapshot]). */
fun buildSnapshot(
    entries: List<NetworkEntry>,
    defaultKey: Long?,
    dataSaver: Boolean,
    indexOf: (String) -> Int?,
): InterfaceSnapshot = toInterfaceSnapshot(usableSnapshot(entries, defaultKey, dataSaver, indexOf))
