// Reference integration, part 1 of 2: a VpnService that runs netswitch (NetswitchSession.kt holds
// everything that calls the netswitch API). Copy both into your app and adapt them. Not part of
// the AAR; compile-checked by scripts/android-glue-test against stand-ins for android.*, not run on
// the project's build machine (no Android SDK there).
//
// AndroidManifest.xml of the app:
//   <service android:name=".NetswitchVpnService"
//            android:permission="android.permission.BIND_VPN_SERVICE"
//            android:foregroundServiceType="specialUse" android:exported="false">
//       <intent-filter><action android:name="android.net.VpnService" /></intent-filter>
//   </service>
// Start it after VpnService.prepare(context) returned null (or its consent Activity returned OK).

package com.example.vpn

import android.content.Intent
import android.net.VpnService
import android.util.Log
import dev.netswitch.android.core.TunnelPlan
import dev.netswitch.defaultConfig

class NetswitchVpnService : VpnService() {
    private var session: NetswitchSession? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (session != null) return START_STICKY
        // startForeground(...) with your notification goes here (required for a VPN service).

        // 1. The tunnel. Our own sockets do not need addDisallowedApplication: AndroidPlatform
        //    protects or binds every one of them before it connects. The plan gives the builder
        //    and netswitch the same addresses (/30 and /126: netswitch needs the next address of
        //    each prefix for its NAT).
        val plan = TunnelPlan()
        val builder = Builder().setSession("netswitch").setMtu(plan.mtu)
        plan.addresses().forEach { (address, prefix) -> builder.addAddress(address, prefix) }
        plan.routePrefixes().forEach { (address, prefix) -> builder.addRoute(address, prefix) }
        val tun = builder.establish() ?: run { stopSelf(); return START_NOT_STICKY }  // not prepared / revoked

        // 2. netswitch reads the tunnel itself. detachFd(): the ParcelFileDescriptor lets go of
        //    the descriptor and netswitch owns it (closes it when the tunnel stops). Never hand
        //    over tun.fd while keeping `tun`: closing `tun` would close a descriptor netswitch
        //    still reads. defaultConfig() dials over the default network only; with
        //    networkStrategy = HYBRID or FALLBACK the monitor also keeps cellular up.
        session = try {
            NetswitchSession.start(this, defaultConfig(), tun.detachFd(), plan.options())
        } catch (e: Exception) {
            Log.e(TAG, "netswitch did not start: $e")   // the session closed the TUN fd
            stopSelf()
            return START_NOT_STICKY
        }
        Log.i(TAG, "netswitch reads the tunnel (${plan.ipv4}, ${plan.ipv6})")
        return START_STICKY
    }

    /**
     * The user revoked the VPN, or another VPN app took over: the tunnel is gone. Shut netswitch
     * down, then stop the service (VpnService's own onRevoke() would only have called stopSelf()).
     */
    override fun onRevoke() {
        stopNetswitch()
        stopSelf()
    }

    override fun onDestroy() {
        stopNetswitch()
        super.onDestroy()
    }

    /** Stops the tunnel and netswitch; netswitch closes the TUN fd. Idempotent. */
    private fun stopNetswitch() {
        session?.close()
        session = null
    }

    private companion object {
        const val TAG = "NetswitchVpn"
    }
}
