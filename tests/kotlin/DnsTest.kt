// The host's resolver through the generated bindings: a fake `PlatformInterface.resolve` that
// answers fixed addresses and records the interface netswitch asked it for, used by
// `ConnectionManager.resolve` and by a dial to a domain; NXDOMAIN typed as NameNotFound.

import dev.netswitch.*
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import java.util.Collections
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking

const val NAME = "svc.example.test"

/** Answers NAME with 127.0.0.1 / ::1 (the families asked), NXDOMAIN for anything else, and
 *  records (name, interface, family) of every question. Sockets: bind yourself. */
class FakeHostResolver : PlatformInterface {
    val asked: MutableList<Triple<String, String, String>> = Collections.synchronizedList(mutableListOf())

    override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction) = BindDecision.BIND_YOURSELF

    override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean): HostResolution {
        asked.add(Triple(name, `interface`.name, if (wantIpv4) "A" else "AAAA"))
        delay(5) // a real resolver suspends
        if (name != NAME) throw NetswitchException.NameNotFound(name, "fake resolver: $name does not exist")
        val addresses = listOfNotNull("127.0.0.1".takeIf { wantIpv4 }, "::1".takeIf { wantIpv6 })
        return HostResolution.Addresses(addresses)
    }
}

class DnsTest {
    private val libc = LibC.INSTANCE

    @Test fun theHostResolverAnswersForTheInterfaceOfTheRoute() {
        val host = FakeHostResolver()
        val config = loopbackConfig().copy(dnsResolver = DnsResolver.HOST)
        managerWith(config, host, RecordingListener()).use { m ->
            m.updateInterfaces(loopbackSnapshot())
            val result = runBlocking { m.resolve(NAME, null) }
            // "lo" has only an IPv4 address in the snapshot: only A is asked for.
            assertEquals(listOf("127.0.0.1"), result.addresses)
            assertEquals("lo", result.`interface`)
            assertEquals(listOf(Triple(NAME, "lo", "A")), host.asked.toList())
            assertTrue(result.answeredBy.single().contains("the host's resolver on lo"), "${result.answeredBy}")

            // Cached for the TTL floor: a second lookup does not ask the host again.
            runBlocking { m.resolve(NAME, null) }
            assertEquals(1, host.asked.size)

            // NXDOMAIN from the host: typed, naming who said so.
            val missing = assertFailsWith<NetswitchException.NameNotFound> { runBlocking { m.resolve("nope.example.test", null) } }
            assertEquals("nope.example.test", missing.name)
            assertTrue(missing.reason.contains("the host's resolver on lo"), missing.reason)
        }
    }

    @Test fun aDialToADomainUsesTheHostsAnswer() {
        EchoServer().use { echo ->
            val host = FakeHostResolver()
            val listener = RecordingListener()
            managerWith(loopbackConfig().copy(dnsResolver = DnsResolver.HOST), host, listener).use { m ->
                m.updateInterfaces(loopbackSnapshot())
                val (ours, theirs) = socketPair()
                val id = m.relayTcpFd(theirs, "$NAME:${echo.port}", null)
                assertEquals(5L, libc.write(ours, "hello".toByteArray(), 5))
                assertEquals("hello", String(readFd(ours, 5)))
                assertEquals(listOf(Triple(NAME, "lo", "A")), host.asked.toList())
                assertEquals("lo", m.connections().first { it.id == id }.`interface`)
                libc.close(ours)

                // A name the host says does not exist: the close event says NameNotFound.
                val (ours2, theirs2) = socketPair()
                val failed = m.relayTcpFd(theirs2, "nope.example.test:${echo.port}", null)
                assertTrue(waitFor { listener.closedEvent(failed) != null }, "no close event")
                val error = listener.closedEvent(failed)!!.error
                assertTrue(error is NetswitchException.NameNotFound, "error: $error")
                libc.close(ours2)
            }
        }
    }
}
