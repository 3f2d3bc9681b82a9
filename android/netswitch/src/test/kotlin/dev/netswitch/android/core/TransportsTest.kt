package dev.netswitch.android.core

import dev.netswitch.NetworkType
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertNull

class TransportsTest {
    @Test
    fun singleTransportsMapToTheirType() {
        val expected = mapOf(
            Transport.CELLULAR to NetworkType.CELLULAR,
            Transport.WIFI to NetworkType.WIFI,
            Transport.ETHERNET to NetworkType.ETHERNET,
            Transport.BLUETOOTH to NetworkType.OTHER,
            Transport.WIFI_AWARE to NetworkType.OTHER,
            Transport.LOWPAN to NetworkType.OTHER,
            Transport.USB to NetworkType.OTHER,
            Transport.THREAD to NetworkType.OTHER,
            Transport.SATELLITE to NetworkType.OTHER,
        )
        for (t in Transport.values().filter { it != Transport.VPN }) {
            assertEquals(expected.getValue(t), networkTypeOf(setOf(t)), "transport $t")
        }
    }

    @Test
    fun vpnIsNeverUsableWhateverElseItCarries() {
        assertNull(networkTypeOf(setOf(Transport.VPN)))
        for (t in Transport.values()) {
            assertNull(networkTypeOf(setOf(Transport.VPN, t)), "VPN + $t")
        }
    }

    @Test
    fun noTransportIsNotUsable() {
        assertNull(networkTypeOf(emptySet()))
    }

    @Test
    fun severalTransportsPreferEthernetThenWifiThenCellular() {
        assertEquals(NetworkType.ETHERNET, networkTypeOf(setOf(Transport.WIFI, Transport.ETHERNET)))
        assertEquals(NetworkType.WIFI, networkTypeOf(setOf(Transport.CELLULAR, Transport.WIFI)))
        assertEquals(NetworkType.CELLULAR, networkTypeOf(setOf(Transport.CELLULAR, Transport.BLUETOOTH)))
    }
}
