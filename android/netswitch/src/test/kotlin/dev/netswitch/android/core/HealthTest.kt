package dev.netswitch.android.core

import dev.netswitch.NetworkInterface
import dev.netswitch.NetworkType
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue

class HealthTest {
    private val indexes = mapOf("wlan0" to 30, "rmnet_data0" to 12)
    private val indexOf: (String) -> Int? = { indexes[it] }
    private val wifiLink = LinkInfo("wlan0", listOf("192.168.1.20/24"), listOf("192.168.1.1"))
    private val cellLink = LinkInfo("rmnet_data0", listOf("10.64.3.2/30"), listOf("10.0.0.53"))

    private fun table(wifi: NetworkCaps, cell: NetworkCaps, defaultKey: Long?) = NetworkTable().apply {
        add(100, wifi, wifiLink)
        add(101, cell, cellLink)
        setDefault(defaultKey)
    }

    @Test
    fun healthyNeedsValidatedAndNoPortalAndNotSuspended() {
        assertTrue(caps(Transport.WIFI).healthy)
        assertFalse(caps(Transport.WIFI, validated = false).healthy, "not validated (yet)")
        assertFalse(caps(Transport.WIFI, validated = false, captivePortal = true).healthy, "captive portal")
        assertFalse(caps(Transport.WIFI, validated = true, captivePortal = true).healthy, "a portal wins over VALIDATED")
        assertFalse(caps(Transport.CELLULAR, suspended = true).healthy, "suspended")
    }

    @Test
    fun suspendedOnlyWhereNotSuspendedExists() {
        assertTrue(suspendedOf(28, hasNotSuspended = false))
        assertTrue(suspendedOf(35, hasNotSuspended = false))
        assertFalse(suspendedOf(28, hasNotSuspended = true))
        assertFalse(suspendedOf(26, hasNotSuspended = false), "API 26-27 has no NOT_SUSPENDED: never suspended")
        assertFalse(suspendedOf(27, hasNotSuspended = false))
    }

    @Test
    fun captivePortalWifiIsNotOfferedAsHealthyEvenAsTheDefault() {
        val portal = caps(Transport.WIFI, validated = false, captivePortal = true)
        val u = table(portal, caps(Transport.CELLULAR, metered = true), defaultKey = 100).usable(false, indexOf)
        // Still listed (it may be the only network), still Android's default (protected sockets go
        // through it whatever we say), but marked unhealthy; the healthy one is cellular.
        assertEquals(listOf("wlan0", "rmnet_data0"), u.networks.map { it.name })
        assertEquals(30u, u.defaultIndex)
        assertEquals(mapOf("wlan0" to false, "rmnet_data0" to true), u.networks.associate { it.name to it.validated })
        assertEquals(listOf("rmnet_data0"), u.networks.filter { it.validated }.map { it.name })
        assertTrue(u.networks[0].captivePortal)
        assertFalse(u.networks[1].captivePortal)
    }

    @Test
    fun suspendedCellularIsNotHealthy() {
        val u = table(caps(Transport.WIFI), caps(Transport.CELLULAR, metered = true, suspended = true), defaultKey = 100)
            .usable(false, indexOf)
        assertEquals(mapOf("wlan0" to true, "rmnet_data0" to false), u.networks.associate { it.name to it.validated })
        assertEquals(mapOf("wlan0" to false, "rmnet_data0" to true), u.networks.associate { it.name to it.suspended })
    }

    @Test
    fun validationFollowsCapabilityUpdates() {
        val t = table(caps(Transport.WIFI, validated = false), caps(Transport.CELLULAR, metered = true), defaultKey = 101)
        assertEquals(false, t.usable(false, indexOf).networks.single { it.name == "wlan0" }.validated)
        t.onCapabilities(100, caps(Transport.WIFI))                  // Android's probe succeeded
        assertEquals(true, t.usable(false, indexOf).networks.single { it.name == "wlan0" }.validated)
        t.onCapabilities(100, caps(Transport.WIFI, validated = false, captivePortal = true))
        assertEquals(false, t.usable(false, indexOf).networks.single { it.name == "wlan0" }.validated)
    }

    @Test
    fun theFfiSnapshotCarriesEveryFieldOfTheUsableOne() {
        val portal = caps(Transport.WIFI, validated = false, captivePortal = true)
        val t = table(portal, caps(Transport.CELLULAR, metered = true), defaultKey = 101)
        val usable = t.usable(dataSaver = true, indexOf = indexOf)
        val ffi = toInterfaceSnapshot(usable)
        assertEquals(usable.defaultIndex, ffi.defaultIndex)
        assertEquals(usable.networks.size, ffi.interfaces.size)
        for ((u, i) in usable.networks.zip(ffi.interfaces)) {
            assertEquals(listOf(u.name, u.index, u.type, u.addresses, u.dnsServers, u.expensive, u.constrained),
                listOf(i.name, i.index, i.networkType, i.addresses, i.dnsServers, i.expensive, i.constrained))
        }
        assertEquals(NetworkType.CELLULAR, ffi.interfaces[0].networkType)

        // NetworkInterface.validated arrives with the FFI branch; until the bindings have it, the
        // mapping cannot carry it (see toNetworkInterface). Once they do, this part must pass.
        val getter = NetworkInterface::class.java.methods.firstOrNull { it.name == "getValidated" }
        if (getter == null) {
            println("SKIP: HealthTest.theFfiSnapshotCarriesEveryFieldOfTheUsableOne: the bindings' NetworkInterface has no `validated` field yet, so `validated` is not checked (the other fields were)")
            return
        }
        assertEquals(usable.networks.map { it.validated }, ffi.interfaces.map { getter.invoke(it) }, "validated in the FFI record")
    }
}
