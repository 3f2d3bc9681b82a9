// Reference integration, part 2 of 2: the only file of the sample that calls the netswitch API
// (ConnectionManager, SOCKS server); NetswitchVpnService.kt holds one NetswitchSession per tunnel.
// Copy both into your app and adapt them. Compile-checked by scripts/android-glue-test against the
// current bindings and stand-ins for android.*; not run on the project's build machine.

package com.example.vpn

import android.net.VpnService
import dev.netswitch.ConnectionManager
import dev.netswitch.NetswitchConfig
import dev.netswitch.SocksUser
import dev.netswitch.SocksServer
import dev.netswitch.android.AndroidNetworkMonitor
import dev.netswitch.android.AndroidPlatform
import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.runBlocking

/**
 * netswitch for one VPN session: the network monitor, the manager (with [AndroidPlatform], which
 * keeps every netswitch socket out of the tunnel) and a SOCKS5 server on loopback that requires a
 * username and password, so other apps on the phone cannot use it to bypass the VPN.
 *
 * The session holds the manager and the server for as long as it lives: hold the session for the
 * service's lifetime and [close] it when the service stops or the VPN is revoked.
 *
 * No event listener: netswitch writes its own log records to logcat (tag `netswitch`), so a
 * listener that logged them would print every line twice. Add one only for what your UI shows.
 */
class NetswitchSession private constructor(
    private val monitor: AndroidNetworkMonitor,
    private val manager: ConnectionManager,
    private val socks: SocksServer,
    /** Credentials the SOCKS server requires; hand them to your tun2socks engine, never log the password. */
    val socksCredentials: SocksUser,
) : AutoCloseable {
    private val closed = AtomicBoolean(false)

    /** Where the SOCKS5 server listens, `127.0.0.1:port`. */
    val socksAddress: String = socks.localAddress()

    /** Stops the SOCKS server, the network monitor and every connection, then frees the manager. Idempotent. */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return
        socks.stop()
        monitor.close()           // no more snapshot pushes, cellular request withdrawn
        manager.shutdown()        // closes every connection
        socks.destroy()
        manager.destroy()
    }

    /** Starting a session. */
    companion object {
        /** Starts netswitch for `vpn` with `config`; throws what the netswitch calls throw (nothing is left running). */
        fun start(vpn: VpnService, config: NetswitchConfig): NetswitchSession {
            val monitor = AndroidNetworkMonitor(vpn)
            val manager = try {
                ConnectionManager(config, AndroidPlatform(vpn, monitor))
            } catch (e: Exception) {
                monitor.close()
                throw e
            }
            try {
                // Pushes a full snapshot about 1 s after each burst of network changes, and keeps
                // cellular up when config's strategy may use it besides the default network.
                monitor.start(manager, config)
                // Loopback only (netswitch refuses other addresses unless socksAllowNonLoopback),
                // with a username and password netswitch generates (users = null).
                val socks = runBlocking { manager.startSocks("127.0.0.1:0") }
                val user = checkNotNull(socks.credentials()) { "startSocks returned no credentials" }
                return NetswitchSession(monitor, manager, socks, user)
            } catch (e: Exception) {
                monitor.close()
                manager.shutdown()
                manager.destroy()
                throw e
            }
        }
    }
}
