package dev.netswitch.android.core

/** Capabilities of a healthy network unless told otherwise (validated, no portal, running). */
fun caps(
    vararg transports: Transport,
    hasInternet: Boolean = true,
    metered: Boolean = false,
    validated: Boolean = true,
    captivePortal: Boolean = false,
    suspended: Boolean = false,
) = NetworkCaps(transports.toSet(), hasInternet, metered, validated, captivePortal, suspended)

/** Describes a network fully (available, capabilities, link), as Android's callbacks do. */
fun NetworkTable.add(key: Long, caps: NetworkCaps, link: LinkInfo) {
    onAvailable(key)
    onCapabilities(key, caps)
    onLinkProperties(key, link)
}
