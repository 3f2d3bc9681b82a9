package dev.netswitch.android.core

import dev.netswitch.InterfaceSnapshot
import dev.netswitch.NetworkInterface
import dev.netswitch.NetworkType
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertNull

class NetworkTableTest {
    private val indexes = mapOf("wlan0" to 30, "rmnet_data0" to 12, "eth0" to 2, "tun0" to 40, "rndis0" to 7)
    private val indexOf: (String) -> Int? = { indexes[it] }

    private val wifiCaps = caps(Transport.WIFI)
    private val cellCaps = caps(Transport.CELLULAR, metered = true)
    private val wifiLink = LinkInfo("wlan0", listOf("192.168.1.20/24", "fe80::1/64"), listOf("192.168.1.1"))
    private val cellLink = LinkInfo("rmnet_data0", listOf("10.64.3.2/30"), listOf("10.0.0.53"))

    private fun wifiAndCell(defaultKey: Long?): NetworkTable = NetworkTable().apply {
        add(100, wifiCaps, wifiLink)
        add(101, cellCaps, cellLink)
        setDefault(defaultKey)
    }

    @Test
    fun fullSnapshotPutsTheDefaultFirstAndNamesItsIndex() {
        val s = wifiAndCell(defaultKey = 101).snapshot(dataSaver = false, indexOf = indexOf)
        val cell = NetworkInterface("rmnet_data0", 12u, NetworkType.CELLULAR, listOf("10.64.3.2/30"), listOf("10.0.0.53"), expensive = true, constrained = false)
        val wifi = NetworkInterface("wlan0", 30u, NetworkType.WIFI, listOf("192.168.1.20/24", "fe80::1/64"), listOf("192.168.1.1"), expensive = false, constrained = false)
        assertEquals(InterfaceSnapshot(listOf(cell, wifi), 12u), s)

        val w = wifiAndCell(defaultKey = 100).snapshot(dataSaver = false, indexOf = indexOf)
        assertEquals(listOf("wlan0", "rmnet_data0"), w.interfaces.map { it.name })
        assertEquals(30u, w.defaultIndex)
    }

    @Test
    fun dataSaverConstrainsOnlyMeteredNetworks() {
        val s = wifiAndCell(defaultKey = 100).snapshot(dataSaver = true, indexOf = indexOf)
        assertEquals(mapOf("wlan0" to false, "rmnet_data0" to true), s.interfaces.associate { it.name to it.constrained })
        assertEquals(mapOf("wlan0" to false, "rmnet_data0" to true), s.interfaces.associate { it.name to it.expensive })
    }

    @Test
    fun vpnNetworksAreFilteredOutEvenWhenDefault() {
        val t = wifiAndCell(defaultKey = null)
        t.add(102, caps(Transport.VPN, Transport.WIFI), LinkInfo("tun0"))
        t.setDefault(102)
        val s = t.snapshot(dataSaver = false, indexOf = indexOf)
        assertEquals(listOf("wlan0", "rmnet_data0"), s.interfaces.map { it.name })
        assertNull(s.defaultIndex, "a VPN default is not a usable default")
        assertNull(t.keyForInterface("tun0"))
    }

    @Test
    fun networksWithoutInternetOrIndexOrValidNameAreLeftOut() {
        val t = NetworkTable()
        t.add(1, caps(Transport.WIFI, hasInternet = false), wifiLink)
        t.add(2, cellCaps, LinkInfo("unknown0"))                     // no index
        t.add(3, cellCaps, LinkInfo(null))                           // no interface name yet
        t.add(4, cellCaps, LinkInfo("a_name_of_16_chr"))             // longer than 15 bytes
        t.add(5, cellCaps, LinkInfo(""))
        t.add(6, caps(), LinkInfo("eth0"))
        t.add(7, caps(Transport.USB, metered = true), LinkInfo("rndis0"))
        val s = t.snapshot(dataSaver = false) { if (it == "a_name_of_16_chr" || it == "") 9 else indexOf(it) }
        assertEquals(listOf(NetworkInterface("rndis0", 7u, NetworkType.OTHER, expensive = true)), s.interfaces)
        assertEquals(false, isValidInterfaceName("a_name_of_16_chr"))
        assertEquals(true, isValidInterfaceName("a_name_of_15_ch"))
        assertEquals(false, isValidInterfaceName("wl\u0000an"))
    }

    @Test
    fun indexZeroOrNegativeIsLeftOut() {
        val s = wifiAndCell(defaultKey = 100).snapshot(dataSaver = false) { if (it == "wlan0") 0 else -1 }
        assertEquals(InterfaceSnapshot(emptyList(), null), s)
    }

    @Test
    fun halfReportedPhantomNetworksAreIgnored() {
        val t = NetworkTable()
        t.onAvailable(1)                                   // available, never described
        t.onCapabilities(2, wifiCaps)                      // capabilities only
        t.onLinkProperties(3, cellLink)                    // link only
        t.setDefault(1)
        assertEquals(emptyList(), t.entries())
        assertEquals(InterfaceSnapshot(emptyList(), null), t.snapshot(false, indexOf))
        t.onLinkProperties(2, wifiLink)                    // now complete
        assertEquals(listOf(2L), t.entries().map { it.key })
    }

    @Test
    fun duplicateInterfaceKeepsTheDefaultsEntry() {
        val t = NetworkTable()
        t.add(1, cellCaps, LinkInfo("wlan0"))              // an older network on the same interface
        t.add(2, wifiCaps, wifiLink)
        t.setDefault(2)
        val s = t.snapshot(false, indexOf)
        assertEquals(1, s.interfaces.size)
        assertEquals(NetworkType.WIFI, s.interfaces[0].networkType)
        assertEquals(30u, s.defaultIndex)
        assertEquals(2L, t.keyForInterface("wlan0"))
        t.setDefault(null)
        assertEquals(1L, t.keyForInterface("wlan0"), "without a default the first seen wins")
    }

    @Test
    fun losingTheDefaultRemovesItAndClearsTheDefault() {
        val t = wifiAndCell(defaultKey = 100)
        t.onLost(100)
        val s = t.snapshot(false, indexOf)
        assertEquals(listOf("rmnet_data0"), s.interfaces.map { it.name })
        assertNull(s.defaultIndex)
        assertNull(t.keyForInterface("wlan0"))
        assertEquals(101L, t.keyForInterface("rmnet_data0"))
    }

    @Test
    fun defaultLostOnlyClearsTheCurrentDefault() {
        val t = wifiAndCell(defaultKey = 101)
        t.defaultLost(100)
        assertEquals(101L, t.defaultKey())
        t.defaultLost(101)
        assertNull(t.defaultKey())
    }

    @Test
    fun nothingReportedIsTheNoNetworkSnapshot() {
        assertEquals(InterfaceSnapshot(emptyList(), null), NetworkTable().snapshot(false, indexOf))
    }

    @Test
    fun scopedAddressesLoseTheirZone() {
        assertEquals("fe80::1/64", addressWithPrefix("fe80::1%wlan0", 64))
        assertEquals("192.168.1.20/24", addressWithPrefix("192.168.1.20", 24))
        assertEquals("fe80::53", plainAddress("fe80::53%12"))
    }
}
