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
import android.os.ParcelFileDescriptor
import android.util.Log
import dev.netswitch.defaultConfig

class NetswitchVpnService : VpnService() {
    private var tun: ParcelFileDescriptor? = null
    private var session: NetswitchSession? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (session != null) return START_STICKY
        // startForeground(...) with your notification goes here (required for a VPN service).

        // 1. The tunnel. Our own sockets do not need addDisallowedApplication: AndroidPlatform
        //    protects or binds every one of them before it connects.
        tun = Builder()
            .setSession("netswitch")
            .addAddress("10.111.0.2", 32)
            .addRoute("0.0.0.0", 0)
            .addAddress("fd00:111::2", 128)
            .addRoute("::", 0)
            .establish() ?: run { stopSelf(); return START_NOT_STICKY }  // not prepared / revoked

        // 2. netswitch. defaultConfig() dials over the default network only; with
        //    networkStrategy = HYBRID or FALLBACK the monitor also keeps cellular up.
        val session = try {
            NetswitchSession.start(this, defaultConfig())
        } catch (e: Exception) {
            Log.e(TAG, "netswitch did not start: $e")
            stopNetswitch()
            stopSelf()
            return START_NOT_STICKY
        }
        this.session = session
        Log.i(TAG, "netswitch SOCKS5 on ${session.socksAddress} (username/password required); tun fd ${tun?.fd}")

        // 3. Start your packet engine (tun2socks) here with tun!!.fd, session.socksAddress and
        //    session.socksCredentials (username/password authentication, RFC 1929).
        //    Alternatively hand accepted TCP sockets to netswitch (ConnectionManager.relayTcpFd).
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

    /** Stops netswitch, then closes the tunnel (stop your packet engine before both). Idempotent. */
    private fun stopNetswitch() {
        session?.close()
        session = null
        tun?.close()
        tun = null
    }

    private companion object {
        const val TAG = "NetswitchVpn"
    }
}
