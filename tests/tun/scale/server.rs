//! The scale tests' services in the server namespace (started by `server::serve`), and the
//! checked byte stream both ends of a bulk transfer use.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// TCP: reads a 24-byte header (bytes to send, bytes expected, token, all u64 big-endian), then at
/// once sends that many [`Checked`] bytes and half-closes, and reads and checks the client's bytes
/// until its FIN; records the outcome for [`RESULT`] under the token.
pub const BOTH_WAYS: u16 = 7101;
/// TCP: reads an 8-byte token and answers `<bytes read> <ok|first bad offset>` of that
/// [`BOTH_WAYS`] connection, or `none` while it is not done.
pub const RESULT: u16 = 7102;
/// TCP: sends 1 MiB and reads until it has 1 MiB, then resets the connection (SO_LINGER 0)
/// while the client may still be sending.
pub const RESET_MID: u16 = 7103;
/// TCP: answers with this namespace's /proc/net/snmp (its UDP drop counters) and closes.
pub const SNMP: u16 = 7104;

const BLOCK: usize = 64 * 1024;

/// A long byte stream that is cheap to produce and check and that shows loss, duplication and
/// reordering: 64 KiB blocks of a fixed pattern, each starting with its block number.
pub struct Checked {
    seed: u8,
    base: Vec<u8>,
    block: Vec<u8>,
    index: u64,
    /// Bytes produced or checked so far.
    pub offset: u64,
}

impl Checked {
    /// The stream for `seed` (each direction uses its own).
    pub fn new(seed: u8) -> Checked {
        let base: Vec<u8> = (0..BLOCK).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut checked = Checked { seed, block: base.clone(), base, index: 0, offset: 0 };
        checked.fill(0);
        checked
    }

    fn fill(&mut self, index: u64) {
        self.index = index;
        self.block.copy_from_slice(&self.base);
        self.block[..8].copy_from_slice(&(index ^ u64::from(self.seed)).to_be_bytes());
    }

    /// The next at most `max` bytes of the stream (one block's rest at most).
    pub fn next(&mut self, max: usize) -> &[u8] {
        let index = self.offset / BLOCK as u64;
        if index != self.index {
            self.fill(index);
        }
        let at = (self.offset % BLOCK as u64) as usize;
        let n = max.min(BLOCK - at);
        self.offset += n as u64;
        &self.block[at..at + n]
    }

    /// Checks `data` as the stream's next bytes; false at the first byte that differs (the
    /// offset stays at the start of the chunk that differed).
    pub fn check(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let start = self.offset;
            let expected = self.next(data.len());
            let n = expected.len();
            if expected != &data[..n] {
                self.offset = start;
                return false;
            }
            data = &data[n..];
        }
        true
    }
}

/// Writes `len` bytes of the stream `seed` to `stream`.
pub fn send_checked(stream: &mut TcpStream, len: u64, seed: u8) -> std::io::Result<()> {
    let mut source = Checked::new(seed);
    while source.offset < len {
        let max = (len - source.offset).min(BLOCK as u64) as usize;
        stream.write_all(source.next(max))?;
    }
    Ok(())
}

/// Reads `stream` to its end, checking it as the stream `seed`: `Ok((bytes, true))` when every
/// byte matched (stops reading at the first mismatch: `(offset, false)`).
pub fn read_checked(stream: &mut TcpStream, seed: u8) -> std::io::Result<(u64, bool)> {
    let mut sink = Checked::new(seed);
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok((sink.offset, true));
        }
        if !sink.check(&buf[..n]) {
            return Ok((sink.offset, false));
        }
    }
}

/// Seeds of the two directions of a [`BOTH_WAYS`] connection.
pub const UP_SEED: u8 = 11;
/// See [`UP_SEED`].
pub const DOWN_SEED: u8 = 23;

/// How long a scale service waits for the app's next bytes (or FIN) before it gives up. Long:
/// under the loss tests' 5 % loss, smoltcp's sends to the app recover lost segments with
/// retransmission timeouts of at least 1 s, doubling (RFC 6298's minimum; Linux uses 200 ms),
/// and a 16 MiB download has taken from 10 s to 76 s there (0.4–2.8 s with the kernel's TCP).
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

fn listen(port: u16, handler: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    let address = SocketAddr::from(([0u16; 8], port));
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&address.into()).expect("scale server bind");
    socket.listen(4096).expect("scale server listen");
    let listener: std::net::TcpListener = socket.into();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                handler(stream)
            });
        }
    });
}

fn read_u64(stream: &mut TcpStream) -> Option<u64> {
    let mut word = [0u8; 8];
    stream.read_exact(&mut word).ok()?;
    Some(u64::from_be_bytes(word))
}

/// Starts the scale services (threads; returns at once).
pub fn serve() {
    let results: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let record = results.clone();
    listen(BOTH_WAYS, move |mut stream| {
        let (Some(down), Some(up), Some(token)) =
            (read_u64(&mut stream), read_u64(&mut stream), read_u64(&mut stream))
        else {
            return;
        };
        let Ok(mut writer) = stream.try_clone() else { return };
        let writing = std::thread::spawn(move || {
            send_checked(&mut writer, down, DOWN_SEED)?;
            writer.shutdown(Shutdown::Write)
        });
        let outcome = match read_checked(&mut stream, UP_SEED) {
            Ok((n, true)) if n == up => format!("{n} ok"),
            Ok((n, true)) => format!("{n} short"),
            Ok((n, false)) => format!("{n} bad"),
            Err(error) => format!("error {error}"),
        };
        let written = writing.join().map_or("writer panicked".to_string(), |r| match r {
            Ok(()) => "sent".to_string(),
            Err(error) => format!("send error {error}"),
        });
        record.lock().unwrap().insert(token, format!("{outcome} {written}"));
    });
    listen(RESULT, move |mut stream| {
        let Some(token) = read_u64(&mut stream) else { return };
        let answer = results.lock().unwrap().get(&token).cloned().unwrap_or_else(|| "none".into());
        let _ = stream.write_all(format!("{answer}\n").as_bytes());
    });
    listen(RESET_MID, |mut stream| {
        let Ok(mut writer) = stream.try_clone() else { return };
        let writing = std::thread::spawn(move || send_checked(&mut writer, 1 << 20, DOWN_SEED));
        let mut buf = vec![0u8; BLOCK];
        let mut read = 0;
        while read < 1 << 20 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        let _ = writing.join();
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    });
    listen(SNMP, |mut stream| {
        let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let _ = stream.write_all(snmp.as_bytes());
    });
}
