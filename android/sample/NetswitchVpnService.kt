// Reference integration: a VpnService that runs netswitch. Copy it into your app and adapt it.
// Not part of the AAR and not compiled on the project's build machine (no Android SDK there).
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
import dev.netswitch.ClosedConnection
import dev.netswitch.ConnectionManager
import dev.netswitch.EventListener
import dev.netswitch.LogRecord
import dev.netswitch.SocksServer
import dev.netswitch.android.AndroidNetworkMonitor
import dev.netswitch.android.AndroidPlatform
import dev.netswitch.defaultConfig
import kotlinx.coroutines.runBlocking

class NetswitchVpnService : VpnService() {
    private var tun: ParcelFileDescriptor? = null
    private var monitor: AndroidNetworkMonitor? = null
    private var manager: ConnectionManager? = null
    private var socks: SocksServer? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (manager != null) return START_STICKY
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

        // 2. netswitch: the monitor feeds it the networks, the platform keeps its sockets out of the tunnel.
        val monitor = AndroidNetworkMonitor(this)
        val manager = ConnectionManager(defaultConfig(), AndroidPlatform(this, monitor), Listener)
        monitor.start(manager)   // pushes a full snapshot about 1 s after each burst of changes
        this.monitor = monitor
        this.manager = manager

        // 3. An ingress: a local SOCKS5 server your tun2socks engine (or app code) connects to.
        //    Alternatively hand accepted TCP sockets over with manager.relayTcpFd(fd, "host:port", null).
        socks = runBlocking { manager.startSocks("127.0.0.1:0", emptyList()) }
        Log.i(TAG, "netswitch SOCKS5 on ${socks?.localAddress()}; tun fd ${tun?.fd}")
        // Start your packet engine here with tun!!.fd and socks!!.localAddress().
        return START_STICKY
    }

    override fun onRevoke() = onDestroy()

    override fun onDestroy() {
        socks?.stop()
        monitor?.close()          // no more snapshot pushes
        manager?.shutdown()       // closes every connection
        manager?.destroy()
        tun?.close()
        socks = null; monitor = null; manager = null; tun = null
        super.onDestroy()
    }

    private object Listener : EventListener {
        override fun onConnectionClosed(closed: ClosedConnection) {
            Log.d(TAG, "closed: $closed")
        }

        override fun onLog(records: List<LogRecord>, dropped: ULong) {
            for (r in records) Log.i(TAG, "${r.level} ${r.target}: ${r.message}")
            if (dropped > 0uL) Log.w(TAG, "netswitch dropped $dropped log records")
        }
    }

    private companion object {
        const val TAG = "NetswitchVpn"
    }
}
