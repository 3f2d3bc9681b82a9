//! Embedding netswitch in a Rust program: `cargo run --example embed`.
//!
//! 1. Hand the manager a client socket yourself (what a VPN app does with a connection taken from
//!    its TUN stack): here a local "app" connection to a local echo server.
//! 2. Or run the SOCKS5 ingress and let it feed the manager.
//!
//! Everything used here is re-exported at the crate root. This example dials over the system
//! route; to choose networks by strategy, build the manager and its outbound together with
//! `Netswitch::builder(config)` and push interface snapshots to `manager().update_interfaces`.

use std::error::Error;
use std::sync::Arc;

use netswitch::{
    ConnectionManager, Destination, DirectOutbound, Inbound, Metadata, Outbound, RelaySettings, SocksServer,
    SocksSettings,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let outbound: Arc<dyn Outbound> = Arc::new(DirectOutbound::default());

    // A destination that echoes what it receives.
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let destination = Destination::from(echo.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });

    // 1. The app's side of a connection, and the socket netswitch gets for it.
    let apps = TcpListener::bind("127.0.0.1:0").await?;
    let mut app = TcpStream::connect(apps.local_addr()?).await?;
    let (client, _) = apps.accept().await?;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let id = manager.new_connection(
        Inbound::plain(client),
        Metadata::new(destination),
        outbound.clone(),
        move |closed| {
            let _ = closed_tx.send(closed);
        },
    );
    app.write_all(b"hello through netswitch").await?;
    app.shutdown().await?; // half-close: the echo server still answers
    let mut answer = String::new();
    app.read_to_string(&mut answer).await?;
    println!("connection {id} echoed {answer:?}");
    let closed = closed_rx.await?;
    println!("closed: up {} B, down {} B, error {:?}", closed.bytes_up, closed.bytes_down, closed.error);

    // 2. A SOCKS5 server on a free loopback port, relaying through the same manager.
    let mut settings = SocksSettings::default();
    settings.listen = "127.0.0.1:0".parse()?;
    let server = SocksServer::start(settings, manager.clone(), outbound).await?;
    println!("SOCKS5 on {} ({} live connections)", server.local_addr(), manager.len());

    server.stop();
    manager.shutdown(); // closes every connection still open
    Ok(())
}
