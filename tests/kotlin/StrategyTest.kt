// The strategy as a host drives it: a snapshot with `validated` flags decides which network a
// socket is offered for (the platform "binds" it, so the interfaces need not exist).

import dev.netswitch.*
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertTrue

class StrategyTest {
    private val libc = LibC.INSTANCE

    private fun wifi(validated: Boolean) =
        NetworkInterface(name = "wlan0", index = 900001u, networkType = NetworkType.WIFI, validated = validated)

    private val cellular = NetworkInterface(name = "rmnet0", index = 900002u, networkType = NetworkType.CELLULAR)

    /** Relays one socket to the echo server and returns the offer the platform got for it. */
    private fun dialOnce(m: ConnectionManager, platform: RecordingPlatform, echo: EchoServer): RecordingPlatform.Offer {
        platform.offers.clear()
        val (ours, theirs) = socketPair()
        m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
        assertEquals(2L, libc.write(ours, "ok".toByteArray(), 2))
        assertEquals("ok", String(readFd(ours, 2)), "relayed")
        libc.close(ours)
        return platform.offers.single()
    }

    @Test fun aCaptiveDefaultIsSkippedForAValidatedNetwork() {
        EchoServer().use { echo ->
            val platform = RecordingPlatform { BindDecision.BOUND }
            ConnectionManager(loopbackConfig(), platform).use { m ->
                assertTrue(NetworkInterface("x", 1u, NetworkType.OTHER).validated, "validated defaults to true")
                // Wi-Fi is the default but behind a captive portal; cellular is validated.
                m.updateInterfaces(InterfaceSnapshot(listOf(wifi(validated = false), cellular), 900001u))
                val offer = dialOnce(m, platform, echo)
                assertEquals("rmnet0", offer.iface, "the captive default is not used")
                assertEquals(BindAction.BIND, offer.action, "not the default: bound to its network")

                // The portal was passed: Wi-Fi is validated and, as the default, used again.
                m.updateInterfaces(InterfaceSnapshot(listOf(wifi(validated = true), cellular), 900001u))
                val again = dialOnce(m, platform, echo)
                assertEquals("wlan0", again.iface)
                assertEquals(BindAction.PROTECT, again.action)

                // Captive Wi-Fi alone (cellular gone): nothing validated, so Wi-Fi is still used.
                m.updateInterfaces(InterfaceSnapshot(listOf(wifi(validated = false)), 900001u))
                assertEquals("wlan0", dialOnce(m, platform, echo).iface)
            }
        }
    }
}
