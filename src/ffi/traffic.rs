//! Cumulative bytes per network type: closed connections' final counters plus the live ones.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::network::NetworkType;
use super::types::NetworkTraffic;

/// Totals of connections that already closed, per network type (`None` = system route).
#[derive(Debug, Default)]
pub(crate) struct TrafficTotals {
    closed: Mutex<BTreeMap<Option<NetworkType>, (u64, u64)>>,
}

impl TrafficTotals {
    /// Adds a closed connection's final counters.
    pub fn add_closed(&self, network: Option<NetworkType>, up: u64, down: u64) {
        let mut closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = closed.entry(network).or_default();
        entry.0 = entry.0.saturating_add(up);
        entry.1 = entry.1.saturating_add(down);
    }

    /// Closed totals plus `live` (each live connection's network and counters), one entry per
    /// network type that carried any connection, in a stable order (system route first).
    pub fn snapshot(
        &self,
        live: impl IntoIterator<Item = (Option<NetworkType>, u64, u64)>,
    ) -> Vec<NetworkTraffic> {
        let mut totals = self.closed.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (network, up, down) in live {
            let entry = totals.entry(network).or_default();
            entry.0 = entry.0.saturating_add(up);
            entry.1 = entry.1.saturating_add(down);
        }
        totals
            .into_iter()
            .map(|(network_type, (bytes_up, bytes_down))| NetworkTraffic {
                network_type,
                bytes_up,
                bytes_down,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_and_live_counters_add_up_per_network_type() {
        let totals = TrafficTotals::default();
        totals.add_closed(Some(NetworkType::Wifi), 10, 20);
        totals.add_closed(Some(NetworkType::Wifi), 1, 2);
        totals.add_closed(None, 5, 5);
        let snapshot =
            totals.snapshot([(Some(NetworkType::Cellular), 7, 8), (Some(NetworkType::Wifi), 100, 0)]);
        assert_eq!(
            snapshot,
            vec![
                NetworkTraffic { network_type: None, bytes_up: 5, bytes_down: 5 },
                NetworkTraffic { network_type: Some(NetworkType::Wifi), bytes_up: 111, bytes_down: 22 },
                NetworkTraffic { network_type: Some(NetworkType::Cellular), bytes_up: 7, bytes_down: 8 },
            ]
        );
    }
}
