// SOCKS servers started over the FFI: random credentials by default (read back by the host),
// explicit users or none, and ownership by the manager (a collected handle stops nothing).

import dev.netswitch.*
import kotlin.test.AfterTest
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotEquals
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking

class SocksServerTest {
    @AfterTest fun restoreLogLevel() = setLogLevel(LogLevel.INFO)

    @Test fun withoutUsersAServerGetsRandomCredentialsThatClientsMustSend() {
        EchoServer().use { echo ->
            ConnectionManager(NetswitchConfig(), null).use { m ->
                val socks = runBlocking { m.startSocks("127.0.0.1:0") }
                val user = assertNotNull(socks.credentials(), "a generated user")
                assertTrue(user.username.startsWith("netswitch-"), user.username)
                assertEquals(32, user.password.length, "128-bit password in hex")

                val (anonymous, refused) = socksConnect(socks.port().toInt(), echo.port)
                assertEquals(-1, refused, "a client without credentials is refused")
                anonymous.close()
                val (guessing, wrong) = socksConnect(socks.port().toInt(), echo.port, SocksUser(user.username, "x".repeat(32)))
                assertEquals(-1, wrong, "a wrong password is refused")
                guessing.close()

                val (client, code) = socksConnect(socks.port().toInt(), echo.port, user)
                assertEquals(0, code)
                assertEquals("with credentials", echoThrough(client, "with credentials"))
                client.close()

                val other = runBlocking { m.startSocks("127.0.0.1:0") }
                assertNotEquals(user, other.credentials(), "every server gets its own user")
                assertEquals(1, echo.accepted.get(), "only the authenticated client reached the destination")
            }
        }
    }

    @Test fun anEmptyListMeansNoAuthenticationAndExplicitUsersAreReadBack() {
        EchoServer().use { echo ->
            ConnectionManager(NetswitchConfig(), null).use { m ->
                val open = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                assertNull(open.credentials())
                val (client, code) = socksConnect(open.port().toInt(), echo.port)
                assertEquals(0, code)
                assertEquals("no auth", echoThrough(client, "no auth"))
                client.close()

                val users = listOf(SocksUser("alice", "first-secret"), SocksUser("bob", "second-secret"))
                val closed = runBlocking { m.startSocks("127.0.0.1:0", users) }
                assertEquals(users[0], closed.credentials())
                val (bob, bobCode) = socksConnect(closed.port().toInt(), echo.port, users[1])
                assertEquals(0, bobCode, "any listed user is accepted")
                bob.close()
            }
        }
    }

    @Test fun theManagerOwnsAServerWhoseHandleWasCollected() {
        EchoServer().use { echo ->
            val listener = RecordingListener()
            managerWith(NetswitchConfig(), null, listener).use { m ->
                setLogLevel(LogLevel.DEBUG)
                val (address, user) = startAndForget(m)
                val released = collectGarbageUntil {
                    listener.hasLog { it.message.contains("SOCKS server handle released") && it.message.contains(address) }
                }
                assertTrue(released, "the handle was never collected and released")

                val port = address.substringAfterLast(':').toInt()
                val (client, code) = socksConnect(port, echo.port, user)
                assertEquals(0, code, "the proxy still accepts after its handle was collected")
                assertEquals("still relaying", echoThrough(client, "still relaying"))
                client.close()

                m.shutdown()
                assertTrue(waitFor { runCatching { java.net.Socket("127.0.0.1", port).close() }.isFailure },
                    "shutdown stops the server")
            }
        }
    }

    @Test fun stopStopsAcceptingAndIsIdempotent() {
        ConnectionManager(NetswitchConfig(), null).use { m ->
            val socks = runBlocking { m.startSocks("127.0.0.1:0") }
            assertTrue(socks.isRunning())
            socks.stop()
            socks.stop()
            assertFalse(socks.isRunning())
            assertTrue(waitFor { runCatching { java.net.Socket("127.0.0.1", socks.port().toInt()).close() }.isFailure })
            socks.close()
        }
    }

    /** Starts a server and keeps nothing of its handle but the address and the credentials. */
    private fun startAndForget(m: ConnectionManager): Pair<String, SocksUser> {
        val socks = runBlocking { m.startSocks("127.0.0.1:0") }
        return socks.localAddress() to socks.credentials()!!
    }
}
