//! The loopback TCP server every setup ends at, one listener per setup (so no two setups share a
//! 4-tuple space and TIME_WAIT of one does not slow another). The first byte a client sends
//! picks the mode: `U` sink until EOF then answer the byte count (u64, big endian); `D` + u64
//! length: send that many bytes then close; `E` answer `E` at once, then echo until EOF.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read and write size of the server (and of the benchmark's clients).
pub const CHUNK: usize = 64 * 1024;
/// What the server sends and the clients upload.
pub static PATTERN: [u8; CHUNK] = [0x5a; CHUNK];

/// The running server.
pub struct Server {
    /// One listening address per setup, in the order asked for.
    pub addresses: Vec<SocketAddr>,
    live: Arc<AtomicUsize>,
}

/// Decrements the live count when a connection's task ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Binds `listeners` loopback listeners and serves them on the current runtime.
    pub async fn start(listeners: usize) -> Result<Server, String> {
        let live = Arc::new(AtomicUsize::new(0));
        let mut addresses = Vec::new();
        for _ in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("server bind 127.0.0.1:0: {e}"))?;
            addresses.push(listener.local_addr().map_err(|e| format!("server local_addr: {e}"))?);
            let live = live.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            live.fetch_add(1, Ordering::SeqCst);
                            let guard = LiveGuard(live.clone());
                            tokio::spawn(async move {
                                let _guard = guard;
                                if let Err(e) = serve(stream).await {
                                    eprintln!("server connection failed: {e}");
                                }
                            });
                        }
                        Err(e) => {
                            eprintln!("server accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
        Ok(Server { addresses, live })
    }

    /// Server connections open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits (at most 30 s) until no server connection is open, then 50 ms more.
    pub async fn settle(&self) -> Result<(), String> {
        crate::wait_async(Duration::from_secs(30), "every server connection to close", || self.live() == 0)
            .await
            .map_err(|e| format!("{e}: {} still open", self.live()))?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(())
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    match stream.read_u8().await? {
        b'U' => {
            let mut buffer = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                match stream.read(&mut buffer).await? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            stream.write_u64(total).await?;
        }
        b'D' => {
            let mut left = stream.read_u64().await?;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&PATTERN[..n]).await?;
                left -= n as u64;
            }
        }
        b'E' => {
            stream.write_all(b"E").await?;
            let mut buffer = [0u8; 256];
            loop {
                match stream.read(&mut buffer).await? {
                    0 => break,
                    n => stream.write_all(&buffer[..n]).await?,
                }
            }
        }
        other => eprintln!("server: unknown mode byte {other:#x}"),
    }
    stream.shutdown().await
}
