// Android side of PlatformInterface: keeps netswitch's sockets out of the app's own VPN.
// Thin on purpose; scripts/android-glue-test only compile-checks it against stand-ins for android.*
// (android/jvm-stubs): it never runs on the build machine (no Android SDK there).

package dev.netswitch.android

import android.net.VpnService
import android.os.ParcelFileDescriptor
import dev.netswitch.BindAction
import dev.netswitch.BindDecision
import dev.netswitch.HostResolution
import dev.netswitch.NetswitchException
import dev.netswitch.NetworkInterface
import dev.netswitch.PlatformInterface
import dev.netswitch.android.core.plainAddress
import java.io.IOException
import java.net.Inet4Address
import java.net.Inet6Address
import java.net.UnknownHostException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext

/**
 * Answers netswitch's `bindSocket` for every outbound socket, before it connects:
 *
 * - [BindAction.PROTECT] (the socket goes out through the default network):
 *   `VpnService.protect(fd)`. Its result is checked: `false` (VPN not established, service
 *   stopping) throws [NetswitchException.PlatformRefused], which fails this connect attempt with
 *   nothing sent, instead of letting the socket loop back into the tunnel.
 * - [BindAction.BIND] (another network, e.g. cellular while Wi-Fi is the default):
 *   `Network.bindSocket(FileDescriptor)` on the Android `Network` whose interface netswitch chose
 *   (looked up in [monitor]). A socket bound to a non-VPN network does not enter the VPN.
 *
 * `resolve` (used when the config's `dnsResolver` is `HOST`, or `AUTO` for a network without DNS
 * servers): `Network.getAllByName` on that interface's `Network` (it honours Private DNS), on an
 * IO thread; a network the monitor does not know answers `ResolveYourself`. Android reports
 * every failure, NXDOMAIN included, as `UnknownHostException`: it becomes `ResolveFailed` (not
 * cached), never a false `NameNotFound`.
 *
 * The fd is borrowed from netswitch and never closed here. `Network.bindSocket` needs a
 * `java.io.FileDescriptor`; there is no public way to wrap an int without taking ownership, so
 * [ParcelFileDescriptor.fromFd] makes a *dup* of the fd (same socket, so the binding applies to
 * netswitch's socket), the binding is done through the dup, and only the dup is closed.
 */
class AndroidPlatform(
    private val vpn: VpnService,
    private val monitor: AndroidNetworkMonitor,
) : PlatformInterface {

    override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision {
        when (action) {
            BindAction.PROTECT -> protect(fd, `interface`.name)
            BindAction.BIND -> bind(fd, `interface`.name)
        }
        return BindDecision.BOUND
    }

    override suspend fun resolve(
        name: String,
        `interface`: NetworkInterface,
        wantIpv4: Boolean,
        wantIpv6: Boolean,
    ): HostResolution {
        val network = monitor.networkForInterface(`interface`.name) ?: return HostResolution.ResolveYourself
        val found = try {
            withContext(Dispatchers.IO) { network.getAllByName(name) }
        } catch (e: UnknownHostException) {
            throw NetswitchException.ResolveFailed(name, "Network.getAllByName on ${`interface`.name}: $e")
        }
        val wanted = found.filter { (it is Inet4Address && wantIpv4) || (it is Inet6Address && wantIpv6) }
        return HostResolution.Addresses(wanted.mapNotNull { it.hostAddress?.let(::plainAddress) })
    }

    private fun protect(fd: Int, name: String) {
        if (!vpn.protect(fd)) {
            throw NetswitchException.PlatformRefused(
                name,
                "VpnService.protect(fd $fd) returned false: the VPN is not established or the service is stopping",
            )
        }
    }

    private fun bind(fd: Int, name: String) {
        val network = monitor.networkForInterface(name)
            ?: throw NetswitchException.PlatformRefused(name, "no Android network has interface $name (any more)")
        try {
            ParcelFileDescriptor.fromFd(fd).use { dup -> network.bindSocket(dup.fileDescriptor) }
        } catch (e: IOException) {
            // SocketException (network gone, socket already connected) is an IOException.
            throw NetswitchException.PlatformRefused(name, "Network.bindSocket(fd $fd) on network $network failed: $e")
        }
    }
}
