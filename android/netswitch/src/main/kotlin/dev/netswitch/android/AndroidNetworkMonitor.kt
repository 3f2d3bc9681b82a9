// Android side of the network snapshot: ConnectivityManager callbacks -> NetworkTable ->
// debounced InterfaceSnapshot pushes, plus the cellular request. Thin on purpose: the logic lives
// in ./core (JVM-tested); scripts/android-glue-test only compile-checks this file against stand-ins
// for android.* (android/jvm-stubs): it never runs on the build machine (no Android SDK there).

package dev.netswitch.android

import android.content.Context
import android.net.ConnectivityManager
import android.net.LinkProperties
import android.net.Network
import android.net.NetworkCapabilities
import android.net.NetworkRequest
import android.os.Build
import android.os.Handler
import android.os.HandlerThread
import android.os.SystemClock
import android.system.Os
import android.util.Log
import dev.netswitch.ConnectionManager
import dev.netswitch.InterfaceSnapshot
import dev.netswitch.NetswitchConfig
import dev.netswitch.NetworkType
import dev.netswitch.android.core.Cancellable
import dev.netswitch.android.core.Debouncer
import dev.netswitch.android.core.LinkInfo
import dev.netswitch.android.core.NetworkCaps
import dev.netswitch.android.core.NetworkKeeper
import dev.netswitch.android.core.NetworkPolicy
import dev.netswitch.android.core.NetworkRequester
import dev.netswitch.android.core.NetworkTable
import dev.netswitch.android.core.Scheduler
import dev.netswitch.android.core.Transport
import dev.netswitch.android.core.addressWithPrefix
import dev.netswitch.android.core.networkTypesToKeepUp
import dev.netswitch.android.core.plainAddress
import dev.netswitch.android.core.suspendedOf
import java.util.concurrent.ConcurrentHashMap

/** Logcat tag of the glue (netswitch's own logs use it too). */
private const val TAG = "netswitch"

/**
 * Watches Android's networks and pushes the full list to netswitch on every change.
 *
 * - Every network with `NET_CAPABILITY_INTERNET` (the request excludes VPNs, and [dev.netswitch.android.core.networkTypeOf]
 *   drops any VPN transport again) is tracked by `Network.getNetworkHandle()`; a network counts
 *   only once both its capabilities and link properties arrived (no phantom networks).
 * - The default is the best non-VPN INTERNET network: `registerBestMatchingNetworkCallback`
 *   (API 31+) or `requestNetwork` (API 26-30), so our own tunnel is never "the default".
 * - Transports map to network types, metered to `expensive`, Data Saver on a metered network to
 *   `constrained`; interface names come from `LinkProperties`, indexes from `if_nametoindex`.
 * - Health: a network is `validated` only with `NET_CAPABILITY_VALIDATED`, without
 *   `NET_CAPABILITY_CAPTIVE_PORTAL` and not suspended (`NET_CAPABILITY_NOT_SUSPENDED` absent, API
 *   28+); unhealthy networks stay in the snapshot, marked, see [dev.netswitch.android.core.usableSnapshot].
 * - Cellular is kept up while the strategy may use it besides the default
 *   ([dev.netswitch.android.core.networkTypesToKeepUp]: `HYBRID` and `FALLBACK` unless their
 *   types leave cellular out, `DEFAULT` only when `network_type` names it): a
 *   `requestNetwork` for `TRANSPORT_CELLULAR` + `NET_CAPABILITY_INTERNET`, withdrawn when the
 *   policies no longer need it ([keepNetworksUpFor]) and on [close]. Without it Android tears the
 *   cellular network down about 30 s after Wi-Fi became the default, and a fallback finds nothing.
 * - Callbacks are debounced ([Debouncer]: about 1 s of quiet, at most 3 s, then a trailing
 *   re-apply) and each apply pushes the whole snapshot ([ConnectionManager.updateInterfaces]).
 *
 * Permissions (both normal, granted at install, declared in this library's manifest):
 * `ACCESS_NETWORK_STATE` for every callback; `CHANGE_NETWORK_STATE` for `requestNetwork`, which
 * the monitor uses on API 26-30 to follow the default network (API 31+ uses
 * `registerBestMatchingNetworkCallback`, which does not need it) and on every API level to keep
 * cellular up.
 *
 * Everything runs on one private handler thread. Call [start] once, [close] when the service stops.
 */
class AndroidNetworkMonitor(
    context: Context,
    debounceMillis: Long = 1_000,
) : AutoCloseable {
    private val connectivity: ConnectivityManager =
        checkNotNull(context.getSystemService(ConnectivityManager::class.java)) { "no ConnectivityManager service" }
    private val thread = HandlerThread("netswitch-network-monitor").apply { start() }
    private val handler = Handler(thread.looper)
    private val table = NetworkTable()
    private val networks = ConcurrentHashMap<Long, Network>()
    @Volatile private var push: ((InterfaceSnapshot) -> Unit)? = null
    private val debouncer = Debouncer(HandlerScheduler(handler), debounceMillis) { pushSnapshot() }
    private val keeper = NetworkKeeper(CellularRequester(connectivity, handler))

    private val allNetworks = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) {
            networks[network.networkHandle] = network
            table.onAvailable(network.networkHandle)
            debouncer.update()
        }

        override fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {
            table.onCapabilities(network.networkHandle, capsOf(caps))
            debouncer.update()
        }

        override fun onLinkPropertiesChanged(network: Network, link: LinkProperties) {
            table.onLinkProperties(network.networkHandle, linkOf(link))
            debouncer.update()
        }

        override fun onLost(network: Network) {
            networks.remove(network.networkHandle)
            table.onLost(network.networkHandle)
            debouncer.update()
        }
    }

    private val defaultNetwork = object : ConnectivityManager.NetworkCallback() {
        override fun onAvailable(network: Network) {
            table.setDefault(network.networkHandle)
            debouncer.update()
        }

        override fun onLost(network: Network) {
            table.defaultLost(network.networkHandle)
            debouncer.update()
        }
    }

    /**
     * Starts watching, keeps up the networks `config`'s strategy may use ([keepNetworksUpFor]) and
     * pushes every (debounced) snapshot to `manager.updateInterfaces`.
     */
    fun start(manager: ConnectionManager, config: NetswitchConfig) =
        start(listOf(NetworkPolicy.of(config))) { manager.updateInterfaces(it) }

    /**
     * Starts watching and keeps up the networks `policies` may use; `push` receives every
     * (debounced) full snapshot on the monitor's thread.
     */
    fun start(policies: List<NetworkPolicy>, push: (InterfaceSnapshot) -> Unit) {
        this.push = push
        keepNetworksUpFor(policies)
        // The builder's defaults already require NOT_VPN, NOT_RESTRICTED and TRUSTED.
        val request = NetworkRequest.Builder().addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET).build()
        connectivity.registerNetworkCallback(request, allNetworks, handler)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            connectivity.registerBestMatchingNetworkCallback(request, defaultNetwork, handler)
        } else {
            // API 26-30 has no registerBestMatchingNetworkCallback: filing the request is the way
            // to follow the best non-VPN network (needs CHANGE_NETWORK_STATE).
            // registerDefaultNetworkCallback would follow this app's own default network, which is
            // our VPN once it is up.
            connectivity.requestNetwork(request, defaultNetwork, handler)
        }
    }

    /**
     * Requests the networks connections under `policies` may use besides the default (the
     * config's policy, plus `NetworkPolicy.of(options, config)` for every distinct
     * `ConnectionOptions` the app dials with) and withdraws the requests they no longer need.
     * [start] calls it; call it again when the policies change. Any thread.
     */
    fun keepNetworksUpFor(policies: List<NetworkPolicy>) = keeper.keepUp(networkTypesToKeepUp(policies))

    /**
     * The Android network whose interface is `name` (the default one if several), or null:
     * what [AndroidPlatform] binds sockets to. Safe from any thread.
     */
    fun networkForInterface(name: String): Network? = table.keyForInterface(name)?.let { networks[it] }

    /** Withdraws the network requests, stops the callbacks and pending pushes, and ends the monitor's thread. Idempotent. */
    override fun close() {
        keeper.close()
        debouncer.close()
        for (callback in listOf(allNetworks, defaultNetwork)) {
            try {
                connectivity.unregisterNetworkCallback(callback)
            } catch (e: IllegalArgumentException) {
                // Not registered (start() never ran, or close() ran twice).
            }
        }
        thread.quitSafely()
    }

    private fun pushSnapshot() {
        val dataSaver = connectivity.restrictBackgroundStatus == ConnectivityManager.RESTRICT_BACKGROUND_STATUS_ENABLED
        val snapshot = table.snapshot(dataSaver) { name -> Os.if_nametoindex(name) }
        try {
            push?.invoke(snapshot)
        } catch (e: Exception) {
            // A rejected snapshot must not kill the monitor thread; the next change retries.
            Log.w(TAG, "netswitch: updateInterfaces failed for $snapshot: $e")
        }
    }

    private companion object {
        /** Android transport constants -> [Transport]; THREAD (9) and SATELLITE (10) are API 35. */
        val TRANSPORTS = listOf(
            NetworkCapabilities.TRANSPORT_CELLULAR to Transport.CELLULAR,
            NetworkCapabilities.TRANSPORT_WIFI to Transport.WIFI,
            NetworkCapabilities.TRANSPORT_BLUETOOTH to Transport.BLUETOOTH,
            NetworkCapabilities.TRANSPORT_ETHERNET to Transport.ETHERNET,
            NetworkCapabilities.TRANSPORT_VPN to Transport.VPN,
            NetworkCapabilities.TRANSPORT_WIFI_AWARE to Transport.WIFI_AWARE,
            NetworkCapabilities.TRANSPORT_LOWPAN to Transport.LOWPAN,
            NetworkCapabilities.TRANSPORT_USB to Transport.USB,
            9 to Transport.THREAD,
            10 to Transport.SATELLITE,
        )

        fun capsOf(caps: NetworkCapabilities) = NetworkCaps(
            transports = TRANSPORTS.filter { (constant, _) -> caps.hasTransport(constant) }.map { it.second }.toSet(),
            hasInternet = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET),
            metered = !caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
            validated = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED),
            captivePortal = caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_CAPTIVE_PORTAL),
            suspended = suspendedOf(
                Build.VERSION.SDK_INT,
                // The constant is API 28; suspendedOf ignores the answer below that.
                caps.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_SUSPENDED),
            ),
        )

        fun linkOf(link: LinkProperties) = LinkInfo(
            interfaceName = link.interfaceName,
            addresses = link.linkAddresses.mapNotNull { a ->
                a.address.hostAddress?.let { addressWithPrefix(it, a.prefixLength) }
            },
            dnsServers = link.dnsServers.mapNotNull { it.hostAddress?.let(::plainAddress) },
        )
    }
}

/** [Scheduler] on an Android [Handler]: uptime clock, `postDelayed`, `removeCallbacks`. */
private class HandlerScheduler(private val handler: Handler) : Scheduler {
    override fun now(): Long = SystemClock.uptimeMillis()

    override fun schedule(delayMillis: Long, task: () -> Unit): Cancellable {
        val runnable = Runnable { task() }
        handler.postDelayed(runnable, delayMillis)
        return Cancellable { handler.removeCallbacks(runnable) }
    }
}

/**
 * [NetworkRequester] on `ConnectivityManager.requestNetwork`: cellular only (the one network type
 * Android tears down when nobody asked for it; see [dev.netswitch.android.core.KEEPABLE_TYPES]).
 * Each request has its own callback (a callback may be registered once), withdrawn with
 * `unregisterNetworkCallback`. The callback does nothing: the monitor's INTERNET callback already
 * reports the network once it is up.
 */
private class CellularRequester(
    private val connectivity: ConnectivityManager,
    private val handler: Handler,
) : NetworkRequester {
    override fun request(type: NetworkType): AutoCloseable? {
        if (type != NetworkType.CELLULAR) {
            Log.w(TAG, "netswitch: cannot keep a $type network up, only cellular")
            return null
        }
        val request = NetworkRequest.Builder()
            .addTransportType(NetworkCapabilities.TRANSPORT_CELLULAR)
            .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
            .build()
        val callback = object : ConnectivityManager.NetworkCallback() {}
        try {
            connectivity.requestNetwork(request, callback, handler)
        } catch (e: SecurityException) {
            // CHANGE_NETWORK_STATE removed from the app's merged manifest: fallbacks to cellular
            // work only while Android keeps cellular up by itself.
            Log.w(TAG, "netswitch: requestNetwork(cellular) refused, cellular may be torn down while Wi-Fi is the default: $e")
            return null
        }
        return AutoCloseable {
            try {
                connectivity.unregisterNetworkCallback(callback)
            } catch (e: IllegalArgumentException) {
                // Already unregistered.
            }
        }
    }

}
