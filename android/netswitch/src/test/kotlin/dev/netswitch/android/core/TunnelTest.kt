package dev.netswitch.android.core

import dev.netswitch.NetswitchException
import dev.netswitch.TunOptions
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertSame

class TunnelTest {
    @Test
    fun theBuilderAndStartTunGetTheSameAddresses() {
        val plan = TunnelPlan()
        assertEquals(listOf("172.19.0.1" to 30, "fdfe:dcba:9876::1" to 126), plan.addresses())
        assertEquals(listOf("0.0.0.0" to 0, "::" to 0), plan.routePrefixes())
        assertEquals(TunOptions(ipv4 = "172.19.0.1/30", ipv6 = "fdfe:dcba:9876::1/126", mtu = 9000u), plan.options())

        val v4 = TunnelPlan(ipv4 = "10.111.0.1/24", ipv6 = null, mtu = 1500)
        assertEquals(listOf("10.111.0.1" to 24), v4.addresses())
        assertEquals(listOf("0.0.0.0" to 0), v4.routePrefixes(), "no IPv6 route without an IPv6 address")
        assertEquals(TunOptions(ipv4 = "10.111.0.1/24", mtu = 1500u), v4.options())
        assertFailsWith<IllegalArgumentException> { TunnelPlan(ipv4 = "10.111.0.1").addresses() }
    }

    @Test
    fun theFdIsClosedHereOnlyWhenStartTunRefusedTheFdItself() {
        val closed = mutableListOf<Int>()
        val handle = Any()
        assertSame(handle, startTunOwning(7, { closed += it }) { handle })
        assertEquals(listOf(), closed, "a running tunnel owns the fd")

        val refused = NetswitchException.InvalidArgument("fd", "7 is not a TUN device")
        assertSame(refused, assertFailsWith<NetswitchException.InvalidArgument> { startTunOwning(7, { closed += it }) { throw refused } })
        assertEquals(listOf(7), closed, "a refused fd is still ours: closed here")

        closed.clear()
        for (taken in listOf(
            NetswitchException.InvalidArgument("options.ipv4", "no room for the NAT address"),
            NetswitchException.ShutDown(),
            NetswitchException.Io("TUN device fd 7", "EPERM"),
        )) {
            assertSame(taken, assertFailsWith<NetswitchException> { startTunOwning(7, { closed += it }) { throw taken } })
        }
        assertEquals(listOf(), closed, "netswitch closed the fd on its other errors: not closed twice")
    }
}
