// Plain Kotlin (no Android classes): what Android's network callbacks said about one network, and
// whether that makes it a healthy network. Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

/** First API level with `NET_CAPABILITY_NOT_SUSPENDED` (Android 9, P). */
const val NOT_SUSPENDED_SINCE_API = 28

/** What `NetworkCallback.onCapabilitiesChanged` said about a network. */
data class NetworkCaps(
    /** The network's transports. */
    val transports: Set<Transport>,
    /** `NET_CAPABILITY_INTERNET`. */
    val hasInternet: Boolean,
    /** No `NET_CAPABILITY_NOT_METERED`: the user pays per byte (cellular, a phone hotspot). */
    val metered: Boolean,
    /** `NET_CAPABILITY_VALIDATED`: Android's probe reached the internet through this network. */
    val validated: Boolean,
    /** `NET_CAPABILITY_CAPTIVE_PORTAL`: a sign-in page intercepts traffic on this network. */
    val captivePortal: Boolean,
    /** Suspended (no data flows for now, e.g. cellular during a 2G/3G call), see [suspendedOf]. */
    val suspended: Boolean,
) {
    /**
     * The network can carry traffic right now: validated, not behind a captive portal, not
     * suspended. A captive-portal Wi-Fi is never healthy, even if it also claims `VALIDATED`.
     */
    val healthy: Boolean get() = validated && !captivePortal && !suspended
}

/**
 * Whether a network is suspended, from `sdkInt` (`Build.VERSION.SDK_INT`) and whether it has
 * `NET_CAPABILITY_NOT_SUSPENDED`. That capability exists from API 28; before it nobody has it, so
 * on API 26-27 a network is never taken for suspended (unknown counts as running).
 */
fun suspendedOf(sdkInt: Int, hasNotSuspended: Boolean): Boolean = sdkInt >= NOT_SUSPENDED_SINCE_API && !hasNotSuspended

/** What `NetworkCallback.onLinkPropertiesChanged` said about a network. */
data class LinkInfo(
    /** `LinkProperties.interfaceName` (null while the link has none). */
    val interfaceName: String?,
    /** Addresses as `ip/prefix`, see [addressWithPrefix]. */
    val addresses: List<String> = emptyList(),
    /** DNS servers as plain IPs, see [plainAddress]. */
    val dnsServers: List<String> = emptyList(),
)
