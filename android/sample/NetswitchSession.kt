// Reference integration, part 2 of 2: the only file of the sample that calls the netswitch API
// (ConnectionManager, the packet tunnel); NetswitchVpnService.kt holds one NetswitchSession per
// tunnel. Copy both into your app and adapt them. Compile-checked by scripts/android-glue-test
// against the current bindings and stand-ins for android.*; not run on the project's build machine.

package com.example.vpn

import android.net.VpnService
import android.os.ParcelFileDescriptor
import dev.netswitch.ConnectionManager
import dev.netswitch.NetswitchConfig
import dev.netswitch.TunCounters
import dev.netswitch.TunHandle
import dev.netswitch.TunOptions
import dev.netswitch.android.AndroidNetworkMonitor
import dev.netswitch.android.AndroidPlatform
import dev.netswitch.android.core.startTunOwning
import java.util.concurrent.atomic.AtomicBoolean

/**
 * netswitch for one VPN session: the network monitor, the manager (with [AndroidPlatform], which
 * protects every netswitch socket so it never loops back into the tunnel) and the packet tunnel:
 * netswitch reads the VPN's TUN fd itself and carries every TCP connection and UDP flow of the
 * apps — no tun2socks, no loopback SOCKS port that other apps could reach.
 *
 * The session holds the manager and the tunnel for as long as it lives: hold it for the
 * service's lifetime and [close] it when the service stops or the VPN is revoked.
 *
 * No event listener: netswitch writes its own log records to logcat (tag `netswitch`), so a
 * listener that logged them would print every line twice. Add one only for what your UI shows.
 */
class NetswitchSession private constructor(
    private val monitor: AndroidNetworkMonitor,
    private val manager: ConnectionManager,
    private val tun: TunHandle,
) : AutoCloseable {
    private val closed = AtomicBoolean(false)

    /** Packets, bytes and drops of the tunnel so far (for a status screen). */
    fun counters(): TunCounters = tun.counters()

    /**
     * Stops the tunnel (its connections end, netswitch closes the TUN fd), the network monitor and
     * every other connection, then frees the manager. Idempotent.
     */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        tun.stop()
        monitor.close()           // no more snapshot pushes, cellular request withdrawn
        manager.shutdown()        // closes every connection
        tun.destroy()
        manager.destroy()
    }

    /** Starting a session. */
    companion object {
        /**
         * Starts netswitch for `vpn` with `config` on the TUN descriptor `tunFd`, which the session
         * owns from this call on (pass `ParcelFileDescriptor.detachFd()`; never touch it again):
         * netswitch closes it when the tunnel stops, and it is closed if the start fails. `options`
         * must carry the addresses given to `VpnService.Builder` (see `TunnelPlan`). Throws what the
         * netswitch calls throw (nothing is left running).
         */
        fun start(vpn: VpnService, config: NetswitchConfig, tunFd: Int, options: TunOptions): NetswitchSession {
            val closeFd = { fd: Int -> ParcelFileDescriptor.adoptFd(fd).close() }
            val monitor = AndroidNetworkMonitor(vpn)
            val manager = try {
                ConnectionManager(config, AndroidPlatform(vpn, monitor))
            } catch (e: Exception) {
                monitor.close()
                closeFd(tunFd)
                throw e
            }
            var handedOver = false
            try {
                // Pushes a full snapshot about 1 s after each burst of network changes, and keeps
                // cellular up when config's strategy may use it besides the default network.
                monitor.start(manager, config)
                handedOver = true
                val tun = startTunOwning(tunFd, closeFd) { manager.startTun(it, options) }
                return NetswitchSession(monitor, manager, tun)
            } catch (e: Exception) {
                if (!handedOver) closeFd(tunFd)
                monitor.close()
                manager.shutdown()
                manager.destroy()
                throw e
            }
        }
    }
}
