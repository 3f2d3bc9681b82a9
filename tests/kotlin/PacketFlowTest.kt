// The packet-flow API from Kotlin: ConnectionManager.startPacketFlow with a PacketWriter written
// in Kotlin, driven by a test host that moves packets between a real TUN device and the API the
// way an iOS NEPacketTunnelProvider moves them between packetFlow and netswitch:
//
//   app sockets -> tunp0 172.19.0.9/30 (route 10.77.3.2/32) -> a reader thread reads tunp0 in
//   batches -> PacketFlowHandle.writePackets -> netswitch (userspace stack) -> sockets bound to
//   vethp0 10.77.3.1/24 -> echo server 10.77.3.2:7007 in a thread's own netns; and back:
//   netswitch -> PacketWriter.writePackets (Kotlin) -> write() into tunp0 -> app sockets.
//
// Root only (TUN device, network namespaces): like TunTest it runs itself again in a JVM inside
// a new network namespace; without root it prints `SKIP: <test>: <reason>`.

import com.sun.jna.Library
import com.sun.jna.Native
import dev.netswitch.*
import java.io.DataInputStream
import java.net.DatagramPacket
import java.net.DatagramSocket
import java.net.InetSocketAddress
import java.net.Socket
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong
import kotlin.concurrent.thread
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import org.junit.Assume

/** The libc calls of the test host's packet mover. */
interface FlowLibC : Library {
    fun read(fd: Int, buf: ByteArray, count: Long): Long
    fun write(fd: Int, buf: ByteArray, count: Long): Long
    fun poll(fds: ByteArray, nfds: Long, timeout: Int): Int
    fun fcntl(fd: Int, cmd: Int, arg: Int): Int

    companion object {
        val INSTANCE: FlowLibC = Native.load("c", FlowLibC::class.java)
        const val F_GETFL = 3
        const val F_SETFL = 4
        const val O_NONBLOCK = 0x800
        const val POLLIN: Short = 1
        const val AF_INET = 2
        const val AF_INET6 = 10
    }
}

/** The host's writer: every packet netswitch hands back is written into the TUN device. */
class TunPacketWriter(private val fd: Int) : PacketWriter {
    val batches = AtomicLong()
    val packets = AtomicLong()
    @Volatile var badFamily: String? = null

    override fun writePackets(packets: List<ByteArray>, families: List<Int>) {
        batches.incrementAndGet()
        this.packets.addAndGet(packets.size.toLong())
        for ((packet, family) in packets.zip(families)) {
            val expected = if ((packet[0].toInt() shr 4) == 6) FlowLibC.AF_INET6 else FlowLibC.AF_INET
            if (family != expected) badFamily = "family $family for an IPv${packet[0].toInt() shr 4} packet"
            FlowLibC.INSTANCE.write(fd, packet, packet.size.toLong())
        }
    }
}

/** The host's read loop: polls the TUN fd, reads up to 64 packets, hands them over in one call. */
fun moveIntoFlow(fd: Int, handle: PacketFlowHandle, stop: AtomicBoolean) {
    val libc = FlowLibC.INSTANCE
    val buf = ByteArray(65536)
    val pollfd = ByteArray(8)
    while (!stop.get()) {
        java.nio.ByteBuffer.wrap(pollfd).order(java.nio.ByteOrder.nativeOrder()).putInt(0, fd).putShort(4, FlowLibC.POLLIN).putShort(6, 0)
        if (libc.poll(pollfd, 1, 100) <= 0) continue
        val batch = ArrayList<ByteArray>()
        while (batch.size < 64) {
            val n = libc.read(fd, buf, buf.size.toLong())
            if (n <= 0) break
            batch.add(buf.copyOf(n.toInt()))
        }
        if (batch.isNotEmpty() && !handle.writePackets(batch)) return // the tunnel stopped
    }
}

class PacketFlowTest {
    @Test fun aKotlinHostCarriesTcpAndUdpThroughThePacketFlow() {
        if (System.getProperty(NETNS_PROPERTY) != "private") {
            cannotRun()?.let { reason ->
                println("SKIP: PacketFlowTest.aKotlinHostCarriesTcpAndUdpThroughThePacketFlow: $reason")
                Assume.assumeTrue(reason, false)
            }
            return runInNamespace("PacketFlowTest", "aKotlinHostCarriesTcpAndUdpThroughThePacketFlow")
        }
        println(RAN_MARKER)
        runCommand("ip", "link", "set", "lo", "up")
        val server = "10.77.3.2"
        EchoNamespace(server).use { echo ->
            val tunFd = createTun("tunp0")
            val libc = FlowLibC.INSTANCE
            assertEquals(0, libc.fcntl(tunFd, FlowLibC.F_SETFL, libc.fcntl(tunFd, FlowLibC.F_GETFL, 0) or FlowLibC.O_NONBLOCK))
            runCommand("ip", "addr", "add", "172.19.0.9/30", "dev", "tunp0")
            runCommand("ip", "link", "set", "tunp0", "up")
            runCommand("ip", "route", "add", "$server/32", "dev", "tunp0")
            runCommand("ip", "link", "add", "vethp0", "type", "veth", "peer", "name", "vethp1", "netns", "${echo.tid}")
            runCommand("ip", "addr", "add", "10.77.3.1/24", "dev", "vethp0")
            runCommand("ip", "link", "set", "vethp0", "up")
            echo.run("ip", "link", "set", "lo", "up")
            echo.run("ip", "addr", "add", "$server/24", "dev", "vethp1")
            echo.run("ip", "link", "set", "vethp1", "up")
            echo.listen()
            ConnectionManager(NetswitchConfig(connectTimeoutMs = 5000uL), VethPlatform("vethp0")).use { m ->
                val index = java.net.NetworkInterface.getByName("vethp0").index.toUInt()
                m.updateInterfaces(InterfaceSnapshot(
                    interfaces = listOf(NetworkInterface(name = "vethp0", index = index, networkType = NetworkType.WIFI, addresses = listOf("10.77.3.1/24"))),
                    defaultIndex = index,
                ))
                val writer = TunPacketWriter(tunFd)
                val flow = m.startPacketFlow(TunOptions(ipv4 = "172.19.0.9/30", mtu = 1500u, stack = TunStack.USERSPACE), writer)
                val stop = AtomicBoolean(false)
                val mover = thread(name = "packet-flow-mover") { moveIntoFlow(tunFd, flow, stop) }
                try {
                    Socket().use { app ->
                        app.soTimeout = 10_000
                        app.connect(InetSocketAddress(server, PORT), 10_000)
                        assertEquals("/172.19.0.9", app.localAddress.toString(), "the app's side is the tunnel")
                        val sent = ByteArray(256 * 1024) { (it * 17 + 3).toByte() }
                        val sender = thread(name = "packet-flow-app-writer") { app.getOutputStream().write(sent); app.shutdownOutput() }
                        val back = ByteArray(sent.size).also { DataInputStream(app.getInputStream()).readFully(it) }
                        sender.join()
                        assertContentEquals(sent, back, "256 KiB echoed through the Kotlin packet mover")
                        assertEquals(-1, app.getInputStream().read(), "the server's FIN reached the app after its own")
                    }
                    assertEquals(listOf("/10.77.3.1"), echo.tcpPeers.map { it.toString() }, "netswitch dialed over vethp0")
                    DatagramSocket().use { udp ->
                        udp.soTimeout = 10_000
                        for (i in 1..20) {
                            val ping = "datagram $i through the packet flow".toByteArray()
                            udp.send(DatagramPacket(ping, ping.size, InetSocketAddress(server, PORT)))
                            val reply = DatagramPacket(ByteArray(2048), 2048)
                            udp.receive(reply)
                            assertEquals("datagram $i through the packet flow", String(reply.data, 0, reply.length))
                            assertEquals(InetSocketAddress(server, PORT), reply.socketAddress)
                        }
                    }
                    val counters = flow.counters()
                    println("packet flow from Kotlin: ${writer.packets.get()} packets in ${writer.batches.get()} writer calls; $counters")
                    assertEquals(null, writer.badFamily)
                    assertEquals(1uL, counters.tcpConnections, "$counters")
                    assertEquals(20uL, counters.udpDatagrams, "$counters")
                    assertTrue(writer.packets.get() > 0 && writer.batches.get() <= writer.packets.get())
                    assertEquals(0uL, counters.droppedMalformed + counters.droppedBadChecksum + counters.droppedWrite, "$counters")
                    flow.stop()
                    assertTrue(waitFor(10_000) { flow.isFinished() }, "the flow still reads after stop()")
                    assertFalse(flow.writePackets(listOf(ByteArray(20))), "a stopped flow takes no more packets")
                } finally {
                    stop.set(true)
                    mover.join(10_000)
                    TunLibC.INSTANCE.close(tunFd)
                }
            }
        }
    }
}
