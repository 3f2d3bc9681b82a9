// Plain Kotlin (no Android classes): the networks Android reported, and the netswitch snapshot
// built from them. Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.InterfaceSnapshot
import dev.netswitch.NetworkInterface

/** What `NetworkCallback.onCapabilitiesChanged` said about a network. */
data class NetworkCaps(
    /** The network's transports. */
    val transports: Set<Transport>,
    /** `NET_CAPABILITY_INTERNET`. */
    val hasInternet: Boolean,
    /** No `NET_CAPABILITY_NOT_METERED`: the user pays per byte (cellular, a phone hotspot). */
    val metered: Boolean,
)

/** What `NetworkCallback.onLinkPropertiesChanged` said about a network. */
data class LinkInfo(
    /** `LinkProperties.interfaceName` (null while the link has none). */
    val interfaceName: String?,
    /** Addresses as `ip/prefix`, see [addressWithPrefix]. */
    val addresses: List<String> = emptyList(),
    /** DNS servers as plain IPs, see [plainAddress]. */
    val dnsServers: List<String> = emptyList(),
)

/** One network with both halves of its description (see [NetworkTable.entries]). */
data class NetworkEntry(val key: Long, val caps: NetworkCaps, val link: LinkInfo)

/** Longest interface name netswitch accepts (IFNAMSIZ - 1 bytes). */
const val MAX_INTERFACE_NAME_BYTES = 15

/**
 * `host/prefix` in the form netswitch parses: the `%zone` suffix Java puts on IPv6 link-local
 * addresses (`fe80::1%wlan0`) is dropped.
 */
fun addressWithPrefix(hostAddress: String, prefixLength: Int): String = "${plainAddress(hostAddress)}/$prefixLength"

/** An IP without the `%zone` suffix Java adds to scoped IPv6 addresses. */
fun plainAddress(hostAddress: String): String = hostAddress.substringBefore('%')

/**
 * Builds the full snapshot netswitch wants from the networks Android described.
 *
 * A network is left out when netswitch must not or cannot use it: a VPN or no transport
 * ([networkTypeOf] is null), no INTERNET capability, no interface name or a name netswitch rejects
 * (empty, longer than 15 bytes, a NUL), or no interface index (`indexOf` returns null or <= 0).
 * Networks that only half-exist (capabilities or link properties never reported: Android's
 * "phantom" networks) never reach this function, see [NetworkTable.entries].
 *
 * Order: the default network first, then the others in `entries` order. An interface name or index
 * seen twice keeps its first (so the default's) entry: netswitch rejects duplicates.
 * `defaultIndex` is the default network's index when it is usable, else null ("unknown").
 * `expensive` = metered; `constrained` = metered while Data Saver restricts this app (`dataSaver`).
 */
fun buildSnapshot(
    entries: List<NetworkEntry>,
    defaultKey: Long?,
    dataSaver: Boolean,
    indexOf: (String) -> Int?,
): InterfaceSnapshot {
    val ordered = entries.filter { it.key == defaultKey } + entries.filter { it.key != defaultKey }
    val interfaces = ArrayList<NetworkInterface>()
    var defaultIndex: UInt? = null
    for (entry in ordered) {
        val type = networkTypeOf(entry.caps.transports) ?: continue
        if (!entry.caps.hasInternet) continue
        val name = entry.link.interfaceName ?: continue
        if (!isValidInterfaceName(name)) continue
        val index = indexOf(name)?.takeIf { it > 0 }?.toUInt() ?: continue
        if (interfaces.any { it.name == name || it.index == index }) continue
        interfaces += NetworkInterface(
            name = name,
            index = index,
            networkType = type,
            addresses = entry.link.addresses,
            dnsServers = entry.link.dnsServers,
            expensive = entry.caps.metered,
            constrained = entry.caps.metered && dataSaver,
        )
        if (entry.key == defaultKey) defaultIndex = index
    }
    return InterfaceSnapshot(interfaces = interfaces, defaultIndex = defaultIndex)
}

/** 1 to 15 bytes of UTF-8 without NUL: what netswitch accepts as an interface name. */
fun isValidInterfaceName(name: String): Boolean =
    name.isNotEmpty() && '\u0000' !in name && name.toByteArray(Charsets.UTF_8).size <= MAX_INTERFACE_NAME_BYTES

/**
 * The networks Android reported through `NetworkCallback`s, keyed by `Network.getNetworkHandle()`,
 * and which one is the default. Thread-safe: callbacks write on one thread while netswitch reads
 * [keyForInterface] on its workers.
 */
class NetworkTable {
    private val lock = Any()
    private val order = LinkedHashSet<Long>()
    private val caps = HashMap<Long, NetworkCaps>()
    private val links = HashMap<Long, LinkInfo>()
    private var defaultKey: Long? = null

    /** `onAvailable`: the network exists (it is used once its capabilities and link are known). */
    fun onAvailable(key: Long) = synchronized(lock) { order.add(key); Unit }

    /** `onCapabilitiesChanged`. */
    fun onCapabilities(key: Long, value: NetworkCaps) = synchronized(lock) {
        order.add(key)
        caps[key] = value
    }

    /** `onLinkPropertiesChanged`. */
    fun onLinkProperties(key: Long, value: LinkInfo) = synchronized(lock) {
        order.add(key)
        links[key] = value
    }

    /** `onLost`: forgets the network; if it was the default, the default becomes unknown. */
    fun onLost(key: Long) = synchronized(lock) {
        order.remove(key)
        caps.remove(key)
        links.remove(key)
        if (defaultKey == key) defaultKey = null
    }

    /** The default-network callback's `onAvailable` (a network) or `onLost` of the current default (null). */
    fun setDefault(key: Long?) = synchronized(lock) { defaultKey = key }

    /** The default-network callback's `onLost(key)`: clears the default only if it still is `key`. */
    fun defaultLost(key: Long) = synchronized(lock) { if (defaultKey == key) defaultKey = null }

    /** The current default network's key, null when unknown. */
    fun defaultKey(): Long? = synchronized(lock) { defaultKey }

    /** Networks whose capabilities and link properties were both reported, in the order first seen. */
    fun entries(): List<NetworkEntry> = synchronized(lock) {
        order.mapNotNull { key ->
            val c = caps[key] ?: return@mapNotNull null
            val l = links[key] ?: return@mapNotNull null
            NetworkEntry(key, c, l)
        }
    }

    /** The snapshot for the current state (see [buildSnapshot]). */
    fun snapshot(dataSaver: Boolean, indexOf: (String) -> Int?): InterfaceSnapshot {
        val (entries, default) = synchronized(lock) { entries() to defaultKey }
        return buildSnapshot(entries, default, dataSaver, indexOf)
    }

    /**
     * The key of the network whose interface is `name` (the default one if several claim it),
     * or null: what [AndroidPlatform] binds a socket to for `BindAction.BIND`.
     */
    fun keyForInterface(name: String): Long? = synchronized(lock) {
        val matching = entries().filter { it.link.interfaceName == name && networkTypeOf(it.caps.transports) != null }
        (matching.firstOrNull { it.key == defaultKey } ?: matching.firstOrNull())?.key
    }
}
