// A careless host through the generated bindings: a bindSocket that waits (runBlocking) for one
// of the manager's suspend functions, and the same socket handed over twice.

import dev.netswitch.*
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking

class HostMistakesTest {
    private val libc = LibC.INSTANCE

    /** Resolves through its own manager, blocking, inside every bindSocket. */
    class WaitingPlatform : PlatformInterface {
        lateinit var manager: ConnectionManager
        @Volatile var resolved: List<String>? = null

        override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision {
            resolved = runBlocking { manager.resolve("127.0.0.1", null) }.addresses
            return BindDecision.BOUND
        }

        override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean): HostResolution =
            HostResolution.ResolveYourself
    }

    @Test fun bindSocketMayWaitForTheManagersSuspendFunctions() {
        EchoServer().use { echo ->
            val platform = WaitingPlatform()
            ConnectionManager(loopbackConfig(), platform).use { m ->
                platform.manager = m
                m.updateInterfaces(loopbackSnapshot())
                val (ours, theirs) = socketPair()
                m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                assertEquals(4L, libc.write(ours, "wait".toByteArray(), 4))
                assertEquals("wait", String(readFd(ours, 4)), "the dial hung in bindSocket")
                assertEquals(listOf("127.0.0.1"), platform.resolved)
                libc.close(ours)
            }
        }
    }

    @Test fun theSameFdHandedOverTwiceIsRefusedAndTheFirstConnectionKeepsIt() {
        EchoServer().use { echo ->
            ConnectionManager(NetswitchConfig(), null).use { m ->
                m.updateInterfaces(loopbackSnapshot())
                val (ours, theirs) = socketPair()
                m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                assertEquals(3L, libc.write(ours, "one".toByteArray(), 3))
                assertEquals("one", String(readFd(ours, 3)))
                val e = assertFailsWith<NetswitchException.InvalidArgument> {
                    m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                }
                assertEquals("fd", e.argument)
                assertTrue(e.reason.contains("already"), e.reason)
                assertEquals(3L, libc.write(ours, "two".toByteArray(), 3))
                assertEquals("two", String(readFd(ours, 3)), "the refused hand-over closed the first connection")
                libc.close(ours)
            }
        }
    }
}
