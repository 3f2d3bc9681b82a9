// Plain Kotlin (no Android classes): which netswitch NetworkType an Android network is.
// Unit-tested on the JVM by scripts/android-glue-test.

package dev.netswitch.android.core

import dev.netswitch.NetworkType

/**
 * An Android network transport (`NetworkCapabilities.TRANSPORT_*`), as a plain enum so the mapping
 * can be tested without Android. [AndroidNetworkMonitor] converts the platform constants.
 */
enum class Transport {
    /** `TRANSPORT_CELLULAR` */
    CELLULAR,
    /** `TRANSPORT_WIFI` */
    WIFI,
    /** `TRANSPORT_BLUETOOTH` (tethering over Bluetooth) */
    BLUETOOTH,
    /** `TRANSPORT_ETHERNET` */
    ETHERNET,
    /** `TRANSPORT_VPN`: another VPN, or our own tunnel */
    VPN,
    /** `TRANSPORT_WIFI_AWARE` (peer to peer, no internet) */
    WIFI_AWARE,
    /** `TRANSPORT_LOWPAN` */
    LOWPAN,
    /** `TRANSPORT_USB` (USB tethering) */
    USB,
    /** `TRANSPORT_THREAD` */
    THREAD,
    /** `TRANSPORT_SATELLITE` */
    SATELLITE,
}

/**
 * The netswitch network type of a network with these transports, or null when netswitch must not
 * use it: a VPN (our own tunnel or another one; dialing through it would loop) or no transport.
 * A network with several transports is typed by the first of ethernet, Wi-Fi, cellular; anything
 * else (Bluetooth or USB tethering, LoWPAN, Thread, satellite) is [NetworkType.OTHER].
 */
fun networkTypeOf(transports: Set<Transport>): NetworkType? =
    when {
        transports.isEmpty() || Transport.VPN in transports -> null
        Transport.ETHERNET in transports -> NetworkType.ETHERNET
        Transport.WIFI in transports -> NetworkType.WIFI
        Transport.CELLULAR in transports -> NetworkType.CELLULAR
        else -> NetworkType.OTHER
    }
