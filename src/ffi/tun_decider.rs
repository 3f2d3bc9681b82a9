//! The tunnel's decision hook over the FFI: the host's `TunFlowDecider` is asked, before each TCP
//! connection and each new UDP source of a tunnel is dialed, what to do with it (block it, pick
//! its networks, TLS fragmentation). On Android the host can find the owning app with
//! `ConnectivityManager.getConnectionOwnerUid(protocol, source, destination)`.
//!
//! The host's method is synchronous and may take a while (a binder call): netswitch calls it on
//! its own blocking threads, at most a few at once, never on the runtime
//! ([`crate::tun::BlockingDecider`]). An answer later than `TunOptions.decision_deadline_ms`, or
//! an exception thrown by the host, gives the flow the fallback (allowed, or blocked with
//! `decision_fail_closed`), counted in `decisions_timed_out` / `decisions_panicked`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::config::{strategy_to_core, NetworkStrategy};
use super::network::NetworkType;
use super::types::TransportProtocol;
use crate::tun::{BlockingDecider, DecisionHook, TunDecision, TunFlow};

/// One flow of the tunnel the host is asked about.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TunFlowInfo {
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// The app's address (as the app's socket has it: the tunnel's address).
    pub source_ip: String,
    /// The app's port.
    pub source_port: u16,
    /// The address the app wants to reach.
    pub destination_ip: String,
    /// The port the app wants to reach.
    pub destination_port: u16,
}

/// What the host decided for a flow. Every `None` keeps the config's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct TunFlowDecision {
    /// Block the flow: a TCP connection is reset, a UDP source's datagrams are dropped (counted)
    /// until it has been quiet for its idle timeout. Default false.
    #[uniffi(default = false)]
    pub block: bool,
    /// Network strategy for this flow.
    #[uniffi(default = None)]
    pub network_strategy: Option<NetworkStrategy>,
    /// Preferred network types for this flow (e.g. `[WIFI]` to keep an app on Wi-Fi).
    #[uniffi(default = None)]
    pub network_type: Option<Vec<NetworkType>>,
    /// Fallback network types for this flow.
    #[uniffi(default = None)]
    pub fallback_network_type: Option<Vec<NetworkType>>,
    /// TLS ClientHello fragmentation on (`true`) or off (`false`) whatever the config says.
    #[uniffi(default = None)]
    pub tls_fragment: Option<bool>,
    /// A short text the tracker shows with the connection (`ConnectionInfo.decision`), e.g. the
    /// app's package name. At most 64 characters are kept.
    #[uniffi(default = None)]
    pub label: Option<String>,
}

/// The host's decision hook (`ConnectionManager.start_tun_with_decider`).
#[uniffi::export(with_foreign)]
pub trait TunFlowDecider: Send + Sync {
    /// Decides what happens to `flow`. Called on a netswitch thread (never the caller's UI
    /// thread); may block for a while, but an answer past the tunnel's deadline is not used.
    fn decide(&self, flow: TunFlowInfo) -> TunFlowDecision;
}

impl From<TunFlow> for TunFlowInfo {
    fn from(flow: TunFlow) -> TunFlowInfo {
        let ip = |a: SocketAddr| a.ip().to_canonical().to_string();
        TunFlowInfo {
            protocol: match flow.protocol {
                crate::TransportProtocol::Tcp => TransportProtocol::Tcp,
                crate::TransportProtocol::Udp => TransportProtocol::Udp,
            },
            source_ip: ip(flow.source),
            source_port: flow.source.port(),
            destination_ip: ip(flow.destination),
            destination_port: flow.destination.port(),
        }
    }
}

impl From<TunFlowDecision> for TunDecision {
    fn from(d: TunFlowDecision) -> TunDecision {
        let types = |v: Vec<NetworkType>| v.into_iter().map(Into::into).collect::<Vec<_>>();
        let mut decision = if d.block { TunDecision::block() } else { TunDecision::allow() };
        if let Some(strategy) = d.network_strategy {
            decision = decision.with_network_strategy(strategy_to_core(strategy));
        }
        if let Some(v) = d.network_type {
            decision = decision.with_network_type(types(v));
        }
        if let Some(v) = d.fallback_network_type {
            decision = decision.with_fallback_network_type(types(v));
        }
        if let Some(on) = d.tls_fragment {
            decision = decision.with_tls_fragment(on);
        }
        if let Some(label) = d.label {
            decision = decision.with_label(label);
        }
        decision
    }
}

/// The core hook over the host's decider, with the tunnel's deadline and fallback.
pub(crate) fn hook(decider: Arc<dyn TunFlowDecider>, deadline: Duration, fail_closed: bool) -> DecisionHook {
    let blocking = BlockingDecider::new(move |flow: TunFlow| decider.decide(flow.into()).into());
    let fallback = if fail_closed { TunDecision::block() } else { TunDecision::allow() };
    DecisionHook::new(Arc::new(blocking)).with_deadline(deadline).with_fallback(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkType as CoreType;

    #[test]
    fn flows_and_decisions_cross_as_plain_data() {
        let flow = TunFlow::new(
            crate::TransportProtocol::Udp,
            "[::ffff:172.19.0.1]:5000".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        );
        let info = TunFlowInfo::from(flow);
        assert_eq!(
            (info.protocol, info.source_ip.as_str(), info.source_port),
            (TransportProtocol::Udp, "172.19.0.1", 5000)
        );
        assert_eq!((info.destination_ip.as_str(), info.destination_port), ("2001:db8::1", 443));

        let decision = TunDecision::from(TunFlowDecision {
            network_type: Some(vec![NetworkType::Cellular]),
            tls_fragment: Some(false),
            label: Some("com.example".into()),
            ..TunFlowDecision::default()
        });
        let expected = TunDecision::allow()
            .with_network_type(vec![CoreType::Cellular])
            .with_tls_fragment(false)
            .with_label("com.example");
        assert_eq!(decision, expected);
        assert!(TunDecision::from(TunFlowDecision { block: true, ..TunFlowDecision::default() }).block);
    }
}
