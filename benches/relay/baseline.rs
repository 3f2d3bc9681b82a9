//! The baseline TCP relay, run as a child process (`relay --child tcp-baseline SERVER`): a tokio
//! multi-thread runtime (one worker per core, as `netswitch socks` has) with two listeners.
//! - `forward`: every accepted connection is dialed on to SERVER, then
//!   `tokio::io::copy_bidirectional` (two 8 KiB buffers) until both sides end. No handshake.
//! - `socks`: a minimal hand-written SOCKS5: greeting (answers "no authentication"), CONNECT to
//!   an IPv4 address only, dial, reply success with 0.0.0.0:0 as the bound address, then the
//!   same copy_bidirectional.
//!
//! Both set TCP_NODELAY on both sockets, as netswitch does. It prints `LISTEN forward ADDR`,
//! `LISTEN socks ADDR`, `READY`, and runs until killed.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runs the baseline relay; `args` is `[SERVER]`. Returns only on a startup error.
pub fn run(args: &[String]) -> Result<(), String> {
    let server: SocketAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("tcp-baseline needs the server address as its argument")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}")) };
        let (forward, socks) = (bind().await?, bind().await?);
        let address = |l: &TcpListener| l.local_addr().map_err(|e| format!("local_addr: {e}"));
        println!("LISTEN forward {}\nLISTEN socks {}\nREADY", address(&forward)?, address(&socks)?);
        std::io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;
        tokio::spawn(accept(forward, move |client| relay(client, server)));
        accept(socks, socks_relay).await;
        Ok(())
    })
}

async fn accept<F, R>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> R,
    R: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let work = handle(client);
                tokio::spawn(async move {
                    if let Err(e) = work.await {
                        eprintln!("baseline relay: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("baseline relay: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn dial(target: SocketAddr) -> Result<TcpStream, String> {
    let remote = TcpStream::connect(target).await.map_err(|e| format!("dial {target}: {e}"))?;
    remote.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    Ok(remote)
}

async fn relay(mut client: TcpStream, target: SocketAddr) -> Result<(), String> {
    client.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let mut remote = dial(target).await?;
    copy(&mut client, &mut remote).await
}

async fn copy(client: &mut TcpStream, remote: &mut TcpStream) -> Result<(), String> {
    match tokio::io::copy_bidirectional(client, remote).await {
        Ok(_) => Ok(()),
        // A peer that resets after its last byte is not the relay's failure.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(format!("copy_bidirectional: {e}")),
    }
}

async fn socks_relay(mut client: TcpStream) -> Result<(), String> {
    client.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let io = |e: std::io::Error| format!("SOCKS5 handshake: {e}");
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await.map_err(io)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await.map_err(io)?;
    if head[0] != 5 || !methods.contains(&0) {
        return Err(format!("SOCKS5 greeting {head:?} {methods:?} not supported"));
    }
    client.write_all(&[5, 0]).await.map_err(io)?;
    let mut request = [0u8; 10];
    client.read_exact(&mut request).await.map_err(io)?;
    if request[..4] != [5, 1, 0, 1] {
        client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await.map_err(io)?;
        return Err(format!("SOCKS5 request {:?}: only CONNECT to IPv4", &request[..4]));
    }
    let ip = Ipv4Addr::new(request[4], request[5], request[6], request[7]);
    let target = SocketAddrV4::new(ip, u16::from_be_bytes([request[8], request[9]]));
    let mut remote = match dial(target.into()).await {
        Ok(remote) => remote,
        Err(e) => {
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.map_err(io)?;
            return Err(e);
        }
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.map_err(io)?;
    copy(&mut client, &mut remote).await
}
