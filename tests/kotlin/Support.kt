// Helpers of the Kotlin tests: libc through JNA, a loopback echo server, a SOCKS5 client on a
// plain java.net.Socket, a recording listener, and a bounded wait.

import com.sun.jna.Library
import com.sun.jna.Native
import dev.netswitch.*
import java.io.DataInputStream
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.util.Collections
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread

/** The few libc calls the tests need (Linux x86_64/aarch64 constants below). */
interface LibC : Library {
    fun socketpair(domain: Int, type: Int, protocol: Int, sv: IntArray): Int
    fun write(fd: Int, buf: ByteArray, count: Long): Long
    fun read(fd: Int, buf: ByteArray, count: Long): Long
    fun close(fd: Int): Int
    fun shutdown(fd: Int, how: Int): Int
    fun pipe(fds: IntArray): Int
    fun setsockopt(fd: Int, level: Int, name: Int, value: LongArray, len: Int): Int
    fun getpeername(fd: Int, addr: ByteArray, len: IntArray): Int

    companion object {
        val INSTANCE: LibC = Native.load("c", LibC::class.java)
        const val AF_UNIX = 1
        const val SOCK_STREAM = 1
        const val SOL_SOCKET = 1
        const val SO_RCVTIMEO = 20
        const val SHUT_WR = 1
    }
}

/** A connected AF_UNIX stream socketpair; reads on `ours` time out after 5 s. */
fun socketPair(): Pair<Int, Int> {
    val fds = IntArray(2)
    check(LibC.INSTANCE.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM, 0, fds) == 0) { "socketpair failed" }
    LibC.INSTANCE.setsockopt(fds[0], LibC.SOL_SOCKET, LibC.SO_RCVTIMEO, longArrayOf(5, 0), 16)
    return fds[0] to fds[1]
}

/** Reads exactly `n` bytes from `fd` (each read bounded by SO_RCVTIMEO); fewer on EOF/timeout. */
fun readFd(fd: Int, n: Int): ByteArray {
    val out = java.io.ByteArrayOutputStream()
    val buf = ByteArray(n)
    while (out.size() < n) {
        val got = LibC.INSTANCE.read(fd, buf, (n - out.size()).toLong())
        if (got <= 0) break
        out.write(buf, 0, got.toInt())
    }
    return out.toByteArray()
}

/** True when `fd` is a connected socket. */
fun isConnected(fd: Int): Boolean = LibC.INSTANCE.getpeername(fd, ByteArray(128), intArrayOf(128)) == 0

/** A loopback TCP server that echoes every byte and counts the clients it accepted. */
class EchoServer : AutoCloseable {
    val socket = ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"))
    val port: Int get() = socket.localPort
    val accepted = AtomicInteger(0)
    val received = AtomicInteger(0)

    init {
        thread(isDaemon = true, name = "echo-accept") {
            while (!socket.isClosed) {
                val client = try { socket.accept() } catch (e: Exception) { break }
                accepted.incrementAndGet()
                thread(isDaemon = true, name = "echo-client") {
                    client.use { c ->
                        val buf = ByteArray(4096)
                        try {
                            while (true) {
                                val n = c.getInputStream().read(buf)
                                if (n < 0) break
                                received.addAndGet(n)
                                c.getOutputStream().write(buf, 0, n)
                            }
                        } catch (e: Exception) { }
                    }
                }
            }
        }
    }

    override fun close() = socket.close()
}

/** Opens a SOCKS5 CONNECT to 127.0.0.1:`port` through the proxy; returns the socket and reply code. */
fun socksConnect(proxyPort: Int, port: Int): Pair<Socket, Int> {
    val s = Socket("127.0.0.1", proxyPort)
    s.soTimeout = 5000
    val out = s.getOutputStream()
    val input = DataInputStream(s.getInputStream())
    out.write(byteArrayOf(5, 1, 0))
    val method = ByteArray(2).also { input.readFully(it) }
    check(method[0] == 5.toByte() && method[1] == 0.toByte()) { "method reply ${method.toList()}" }
    out.write(byteArrayOf(5, 1, 0, 1, 127, 0, 0, 1, (port shr 8).toByte(), port.toByte()))
    val reply = ByteArray(10).also { input.readFully(it) }
    return s to reply[1].toInt()
}

/** Records close events and log records. */
class RecordingListener : EventListener {
    val closed: MutableList<ClosedConnection> = Collections.synchronizedList(mutableListOf())
    val logs: MutableList<LogRecord> = Collections.synchronizedList(mutableListOf())

    override fun onConnectionClosed(closed: ClosedConnection) { this.closed.add(closed) }
    override fun onLog(records: List<LogRecord>, dropped: ULong) { logs.addAll(records) }

    fun closedEvent(id: ULong): ClosedConnection? = synchronized(closed) { closed.firstOrNull { it.id == id } }
}

/** Records every socket it is offered (fd, interface, action, connected yet?) and answers `answer`. */
class RecordingPlatform(private val answer: () -> BindDecision) : PlatformInterface {
    data class Offer(val fd: Int, val iface: String, val type: NetworkType, val action: BindAction, val connected: Boolean)
    val offers: MutableList<Offer> = Collections.synchronizedList(mutableListOf())

    override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision {
        offers.add(Offer(fd, `interface`.name, `interface`.networkType, action, isConnected(fd)))
        return answer()
    }
}

/** Waits up to `ms` for `condition`; returns whether it held. */
fun waitFor(ms: Long = 5000, condition: () -> Boolean): Boolean {
    val deadline = System.currentTimeMillis() + ms
    while (System.currentTimeMillis() < deadline) {
        if (condition()) return true
        Thread.sleep(10)
    }
    return condition()
}

/** A snapshot with only the loopback interface "lo" (its real index), typed ethernet, as default. */
fun loopbackSnapshot(): InterfaceSnapshot {
    val index = java.net.NetworkInterface.getByName("lo").index.toUInt()
    return InterfaceSnapshot(
        interfaces = listOf(NetworkInterface(name = "lo", index = index, networkType = NetworkType.ETHERNET, addresses = listOf("127.0.0.1/8"))),
        defaultIndex = index,
    )
}

/** A config whose sockets to loopback are offered to the platform (the tests' "network"). */
fun loopbackConfig() = NetswitchConfig(offerLoopbackSockets = true, connectTimeoutMs = 2000uL)
