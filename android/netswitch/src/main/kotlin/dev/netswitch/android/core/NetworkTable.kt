// Plain Kotlin (no Android classes): the networks Android reported and which one is the default.
// Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.InterfaceSnapshot

/** One network with both halves of its description (see [NetworkTable.entries]). */
data class NetworkEntry(val key: Long, val caps: NetworkCaps, val link: LinkInfo)

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

    /** The usable networks of the current state (see [usableSnapshot]). */
    fun usable(dataSaver: Boolean, indexOf: (String) -> Int?): UsableSnapshot {
        val (entries, default) = synchronized(lock) { entries() to defaultKey }
        return usableSnapshot(entries, default, dataSaver, indexOf)
    }

    /** The FFI snapshot for the current state (see [buildSnapshot]). */
    fun snapshot(dataSaver: Boolean, indexOf: (String) -> Int?): InterfaceSnapshot =
        toInterfaceSnapshot(usable(dataSaver, indexOf))

    /**
     * The key of the network whose interface is `name` (the default one if several claim it),
     * or null: what [AndroidPlatform] binds a socket to for `BindAction.BIND`.
     */
    fun keyForInterface(name: String): Long? = synchronized(lock) {
        val matching = entries().filter { it.link.interfaceName == name && networkTypeOf(it.caps.transports) != null }
        (matching.firstOrNull { it.key == defaultKey } ?: matching.firstOrNull())?.key
    }
}
