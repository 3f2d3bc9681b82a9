// Plain Kotlin (no Android classes): the tunnel's addresses and routes, given to both
// VpnService.Builder and ConnectionManager.startTun from one place, and the TUN fd's ownership
// rule of startTun. Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.NetswitchException
import dev.netswitch.TunOptions

/**
 * The tunnel as both sides must see it: `VpnService.Builder` gets [addresses], [routes] and [mtu],
 * `ConnectionManager.startTun` gets [options] with the same addresses. netswitch listens on each
 * address and uses the next one of its prefix as its NAT address, so the prefixes are /30 and
 * /126 (not the /32 of a tun2socks setup). [ipv6] null: an IPv4-only tunnel.
 */
data class TunnelPlan(
    /** The tunnel's IPv4 address/prefix. */
    val ipv4: String = "172.19.0.1/30",
    /** The tunnel's IPv6 address/prefix, or null. */
    val ipv6: String? = "fdfe:dcba:9876::1/126",
    /** The device's MTU, also the largest packet netswitch reads. */
    val mtu: Int = 9000,
    /** Routed into the tunnel; default: everything of each family the tunnel has. */
    val routes: List<String> = listOfNotNull("0.0.0.0/0", ipv6?.let { "::/0" }),
) {
    /** `(address, prefix length)` pairs for `VpnService.Builder.addAddress`. */
    fun addresses(): List<Pair<String, Int>> = listOfNotNull(ipv4, ipv6).map(::split)

    /** `(address, prefix length)` pairs for `VpnService.Builder.addRoute`. */
    fun routePrefixes(): List<Pair<String, Int>> = routes.map(::split)

    /** What `ConnectionManager.startTun` gets: the same addresses and MTU (raw IP framing: Android's default). */
    fun options(): TunOptions = TunOptions(ipv4 = ipv4, ipv6 = ipv6, mtu = mtu.toUInt())

    private fun split(cidr: String): Pair<String, Int> {
        val slash = cidr.lastIndexOf('/')
        require(slash > 0) { "$cidr is not address/prefix" }
        val prefix = cidr.substring(slash + 1).toIntOrNull()
        require(prefix != null && prefix >= 0) { "$cidr is not address/prefix" }
        return cidr.substring(0, slash) to prefix
    }
}

/**
 * Hands the TUN descriptor [fd] — owned by the caller, e.g. from `ParcelFileDescriptor.detachFd()`
 * — to [start] (`{ manager.startTun(it, options) }`) so that it is closed exactly once whatever
 * happens: on success netswitch closes it when the tunnel stops; when startTun throws it has
 * closed it already, except for `InvalidArgument` naming `fd` (it refused the descriptor without
 * taking it): then [close] closes it here before the exception goes on.
 */
fun <T> startTunOwning(fd: Int, close: (Int) -> Unit, start: (Int) -> T): T =
    try {
        start(fd)
    } catch (e: NetswitchException.InvalidArgument) {
        if (e.argument == "fd") close(fd)
        throw e
    }
