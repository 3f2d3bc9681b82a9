// Plain Kotlin (no Android classes): which networks the glue must ask Android to keep up, given
// netswitch's network strategy, and the requests that keep them up. Unit-tested on the JVM by
// scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.ConnectionOptions
import dev.netswitch.NetswitchConfig
import dev.netswitch.NetworkStrategy
import dev.netswitch.NetworkType

/** The three settings that decide which networks a connection may use. */
data class NetworkPolicy(
    /** `network_strategy`; null = `DEFAULT`. */
    val strategy: NetworkStrategy?,
    /** `network_type`: preferred types; empty = no preference. */
    val networkTypes: List<NetworkType>,
    /** `fallback_network_type` (only `FALLBACK` reads it); empty = every other network. */
    val fallbackTypes: List<NetworkType>,
) {
    /** Constructors from the FFI records. */
    companion object {
        /** The policy of every connection without its own [ConnectionOptions]. */
        fun of(config: NetswitchConfig) = NetworkPolicy(config.networkStrategy, config.networkType, config.fallbackNetworkType)

        /** The policy of connections started with `options` (each null field = the config's). */
        fun of(options: ConnectionOptions, config: NetswitchConfig) = NetworkPolicy(
            options.networkStrategy ?: config.networkStrategy,
            options.networkType ?: config.networkType,
            options.fallbackNetworkType ?: config.fallbackNetworkType,
        )
    }
}

/**
 * Network types Android must be asked to keep up: only [NetworkType.CELLULAR]. Android keeps the
 * default network, and Wi-Fi and ethernet stay connected while they are in range / plugged in;
 * cellular is the network it tears down once it is not the default and nothing requested it (after
 * its linger time, about 30 s), and the one it brings up on request.
 */
val KEEPABLE_TYPES: Set<NetworkType> = setOf(NetworkType.CELLULAR)

/**
 * The network types a connection under `policy` may use besides the default network, following
 * netswitch's strategy table (src/network/strategy.rs); null means "every type".
 *
 * - `DEFAULT`: the default network only; with `network_type`, those types.
 * - `HYBRID`: every network; with `network_type`, those types.
 * - `FALLBACK`: primary = `network_type` (empty: the default only), fallback =
 *   `fallback_network_type` (empty: every other network); both count.
 */
fun typesUsedBeyondDefault(policy: NetworkPolicy): Set<NetworkType>? {
    val preferred = policy.networkTypes.toSet()
    return when (policy.strategy ?: NetworkStrategy.DEFAULT) {
        NetworkStrategy.DEFAULT -> preferred
        NetworkStrategy.HYBRID -> preferred.ifEmpty { null }
        NetworkStrategy.FALLBACK -> if (policy.fallbackTypes.isEmpty()) null else preferred + policy.fallbackTypes
    }
}

/**
 * The networks to request for these policies (the config's, plus one per distinct
 * [ConnectionOptions] the app uses): the [KEEPABLE_TYPES] any of them may use besides the
 * default. So cellular is requested for `HYBRID` and `FALLBACK` unless their types leave it out,
 * and for `DEFAULT` only when `network_type` names it; nothing for plain `DEFAULT`.
 */
fun networkTypesToKeepUp(policies: Collection<NetworkPolicy>): Set<NetworkType> =
    policies.flatMapTo(HashSet()) { typesUsedBeyondDefault(it) ?: KEEPABLE_TYPES }.intersect(KEEPABLE_TYPES)

/** Asks the platform to keep a network of one type up (Android: `requestNetwork`). */
fun interface NetworkRequester {
    /**
     * Files a request for a network of `type`; closing the result withdraws it (Android:
     * `unregisterNetworkCallback`). Null when the platform refused (the requester logs why).
     */
    fun request(type: NetworkType): AutoCloseable?
}

/**
 * Holds exactly one platform request per network type that must be kept up: [keepUp] files the
 * requests that are missing and withdraws the ones no longer wanted; [close] withdraws them all.
 * A refused request is not held, so the next [keepUp] tries it again. Thread-safe.
 */
class NetworkKeeper(private val requester: NetworkRequester) : AutoCloseable {
    private val lock = Any()
    private val held = LinkedHashMap<NetworkType, AutoCloseable>()
    private var closed = false

    /** Makes the held requests exactly `wanted`: files the missing ones, withdraws the rest. Ignored after [close]. */
    fun keepUp(wanted: Set<NetworkType>) = synchronized(lock) {
        if (closed) return@synchronized
        for (type in held.keys.filter { it !in wanted }) held.remove(type)?.close()
        for (type in wanted) {
            if (type !in held) requester.request(type)?.let { held[type] = it }
        }
    }

    /** The types whose request is currently held. */
    fun held(): Set<NetworkType> = synchronized(lock) { held.keys.toSet() }

    /** Withdraws every request; later [keepUp]s do nothing. Idempotent. */
    override fun close() = synchronized(lock) {
        closed = true
        val all = held.values.toList()
        held.clear()
        all.forEach { it.close() }
    }
}
