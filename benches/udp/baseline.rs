//! The baseline UDP relay, run as a child process (`udp --child udp-baseline ECHO`): a tokio
//! multi-thread runtime (one worker per core, as `netswitch socks` has) and a plain relay loop
//! per direction, one `recv` and one `send` per datagram, no framing. Client side: a socket
//! bound on loopback; server side: a socket connected to ECHO. Replies go to the last client
//! address seen. It prints `LISTEN udp ADDR`, `READY`, and runs until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// Runs the relay; `args` is `[ECHO]`. Returns only on a startup error.
pub fn run(args: &[String]) -> Result<(), String> {
    let echo: SocketAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("udp-baseline needs the echo address as its argument")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let front = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
        let back = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?;
        back.connect(echo).await.map_err(|e| format!("connect {echo}: {e}"))?;
        let address = front.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        println!("LISTEN udp {address}\nREADY");
        std::io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;
        let (front, back) = (Arc::new(front), Arc::new(back));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let (front_in, back_out, client_in) = (front.clone(), back.clone(), client.clone());
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            loop {
                match front_in.recv_from(&mut buffer).await {
                    Ok((n, from)) => {
                        if let Ok(mut client) = client_in.lock() {
                            *client = Some(from);
                        }
                        let _ = back_out.send(&buffer[..n]).await;
                    }
                    Err(e) => eprintln!("udp baseline: recv from clients: {e}"),
                }
            }
        });
        let mut buffer = vec![0u8; 65_536];
        loop {
            match back.recv(&mut buffer).await {
                Ok(n) => {
                    let to = client.lock().ok().and_then(|c| *c);
                    if let Some(to) = to {
                        let _ = front.send_to(&buffer[..n], to).await;
                    }
                }
                Err(e) => eprintln!("udp baseline: recv from {echo}: {e}"),
            }
        }
    })
}
