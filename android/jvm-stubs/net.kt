// Compile-only JVM stand-ins for the few Android SDK members the glue uses (android/netswitch/src/main/kotlin/dev/netswitch/android/*.kt, android/sample/*.kt), so scripts/android-glue-test can check that the glue still compiles against the current generated bindings. Never run; not part of the AAR. Signatures follow the Android SDK as far as the glue needs them.
@file:Suppress("unused", "UNUSED_PARAMETER")
package android.net
import java.io.FileDescriptor
import java.net.InetAddress
open class Network { val networkHandle: Long = 0; fun bindSocket(fd: FileDescriptor) {}; fun getAllByName(host: String): Array<InetAddress> = arrayOf() }
open class NetworkCapabilities {
  fun hasTransport(t: Int): Boolean = false
  fun hasCapability(c: Int): Boolean = false
  companion object {
    const val TRANSPORT_CELLULAR = 0; const val TRANSPORT_WIFI = 1; const val TRANSPORT_BLUETOOTH = 2
    const val TRANSPORT_ETHERNET = 3; const val TRANSPORT_VPN = 4; const val TRANSPORT_WIFI_AWARE = 5
    const val TRANSPORT_LOWPAN = 6; const val TRANSPORT_USB = 8
    const val NET_CAPABILITY_INTERNET = 12; const val NET_CAPABILITY_NOT_METERED = 11
    const val NET_CAPABILITY_VALIDATED = 16; const val NET_CAPABILITY_CAPTIVE_PORTAL = 17
    const val NET_CAPABILITY_NOT_SUSPENDED = 21
  }
}
class LinkAddress { val address: InetAddress = InetAddress.getLoopbackAddress(); val prefixLength: Int = 8 }
class LinkProperties { val interfaceName: String? = null; val linkAddresses: List<LinkAddress> = listOf(); val dnsServers: List<InetAddress> = listOf() }
class NetworkRequest { class Builder { fun addCapability(c: Int): Builder = this; fun addTransportType(t: Int): Builder = this; fun build(): NetworkRequest = NetworkRequest() } }
class ConnectivityManager {
  open class NetworkCallback {
    open fun onAvailable(network: Network) {}
    open fun onLost(network: Network) {}
    open fun onCapabilitiesChanged(network: Network, caps: NetworkCapabilities) {}
    open fun onLinkPropertiesChanged(network: Network, link: LinkProperties) {}
  }
  val restrictBackgroundStatus: Int = 1
  fun registerNetworkCallback(r: NetworkRequest, c: NetworkCallback, h: android.os.Handler) {}
  fun registerBestMatchingNetworkCallback(r: NetworkRequest, c: NetworkCallback, h: android.os.Handler) {}
  fun requestNetwork(r: NetworkRequest, c: NetworkCallback, h: android.os.Handler) {}
  fun unregisterNetworkCallback(c: NetworkCallback) {}
  companion object { const val RESTRICT_BACKGROUND_STATUS_ENABLED = 3 }
}
open class VpnService : android.app.Service() {
  fun protect(fd: Int): Boolean = false
  inner class Builder {
    fun setSession(s: String): Builder = this
    fun addAddress(a: String, p: Int): Builder = this
    fun addRoute(a: String, p: Int): Builder = this
    fun setMtu(mtu: Int): Builder = this
    fun establish(): android.os.ParcelFileDescriptor? = null
  }
  open fun onRevoke() {}
}
