//! The current interface snapshot and what changed when the host pushed a new one.
//!
//! [`NetworkState::update`] replaces the snapshot and returns a [`SnapshotChange`]; the manager
//! uses [`SnapshotChange::close_reason`] on each tracked connection's [`Egress`] to decide what to
//! close: its interface is gone, its local address is gone (an interface readdressed under the same
//! name and index), or it followed the old default route (not bound to an interface) when the
//! default changed.
//!
//! A "no network" snapshot (no interfaces) pauses: nothing is reported as removed, so nothing is
//! closed. The next usable snapshot is compared with the last *usable* one, so an interface that
//! vanished during the pause is still reported as removed when the network comes back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use super::interface::{InterfaceId, InterfaceSnapshot};
use super::Egress;

/// The default interface before and after an update (`None`: no default known).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DefaultChange {
    /// The default before the update.
    pub old: Option<InterfaceId>,
    /// The default after the update.
    pub new: Option<InterfaceId>,
}

/// Why a network change closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The interface it left through is gone (or came back with a new index).
    InterfaceGone,
    /// The local address its socket uses is on no interface any more, while the interface
    /// stayed (a Wi-Fi that got a new address under the same name and index): the socket is
    /// bound to a dead address.
    LocalAddressGone,
    /// It left through the default interface without being bound to it (protected only, or the
    /// system route) and the default changed.
    DefaultChanged,
}

/// What an update changed, relative to the previous snapshot (or, after a "no network" pause,
/// relative to the last snapshot that had interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotChange {
    /// The new snapshot equals the current one: nothing to do.
    pub identical: bool,
    /// The new snapshot has no interfaces: dials must fail with "no network"; nothing is closed.
    pub no_network: bool,
    /// Interfaces (name + index) that are gone. Empty when `no_network`.
    pub removed: Vec<InterfaceId>,
    /// Interfaces that are new.
    pub added: Vec<InterfaceId>,
    /// Interfaces still present that lost at least one address.
    pub readdressed: Vec<InterfaceId>,
    /// Addresses that no interface has any more (a socket with one of them as its local address
    /// can no longer work).
    pub lost_addresses: Vec<IpAddr>,
    /// Set when the default interface changed (by name or index). `None` when `no_network`.
    pub default_change: Option<DefaultChange>,
}

impl SnapshotChange {
    /// True when nothing is to be closed or re-evaluated.
    pub fn is_noop(&self) -> bool {
        self.identical
            || (self.removed.is_empty() && self.default_change.is_none() && self.lost_addresses.is_empty())
    }

    /// Whether a connection that left through `egress` must be closed after this change:
    /// its interface is gone, its local address is gone, or it went through the old default
    /// (protected, not bound to it: [`Egress::bound`]) while the default changed. A connection with no recorded interface (system route) went through
    /// the old default, so it is closed when a known default changed. Never true for an identical
    /// or "no network" update (a pause closes nothing).
    pub fn closes(&self, egress: &Egress) -> bool {
        self.close_reason(egress).is_some()
    }

    /// Why a connection that left through `egress` must be closed after this change (see
    /// [`SnapshotChange::closes`]); `None` when it stays. The most specific reason wins:
    /// [`CloseReason::InterfaceGone`], then [`CloseReason::LocalAddressGone`] (for system-route
    /// connections too: their source address is as dead), then [`CloseReason::DefaultChanged`].
    pub fn close_reason(&self, egress: &Egress) -> Option<CloseReason> {
        if self.identical || self.no_network {
            return None;
        }
        let named = egress.interface.is_some() || egress.interface_index.is_some();
        if named && self.removed.iter().any(|id| egress_is(egress, id)) {
            return Some(CloseReason::InterfaceGone);
        }
        if egress.local_address.is_some_and(|ip| self.lost_address(ip)) {
            return Some(CloseReason::LocalAddressGone);
        }
        let old_default = self.default_change.as_ref().and_then(|c| c.old.as_ref());
        if !named {
            return old_default.map(|_| CloseReason::DefaultChanged);
        }
        // A socket bound to its interface keeps leaving through it: the default is not its route.
        old_default.filter(|id| !egress.bound && egress_is(egress, id)).map(|_| CloseReason::DefaultChanged)
    }

    /// Whether `ip` (a connection's local address) disappeared from every interface.
    pub fn lost_address(&self, ip: IpAddr) -> bool {
        self.lost_addresses.contains(&ip)
    }
}

/// An egress matches an interface by index when it recorded one, otherwise by name.
fn egress_is(egress: &Egress, id: &InterfaceId) -> bool {
    match (egress.interface_index, &egress.interface) {
        (Some(index), _) => index == id.index,
        (None, Some(name)) => *name == id.name,
        (None, None) => false,
    }
}

#[derive(Debug)]
struct Inner {
    current: Arc<InterfaceSnapshot>,
    /// The last snapshot with at least one interface (the comparison base after a pause).
    last_usable: Arc<InterfaceSnapshot>,
}

/// Holds the current interface snapshot; cheap to read from every dial, updated by the host.
/// Starts as "no network" until the first [`NetworkState::update`].
#[derive(Debug)]
pub struct NetworkState {
    inner: RwLock<Inner>,
}

impl Default for NetworkState {
    fn default() -> Self {
        NetworkState::new(InterfaceSnapshot::empty())
    }
}

impl NetworkState {
    /// A state holding `initial` as its current snapshot.
    pub fn new(initial: InterfaceSnapshot) -> NetworkState {
        let initial = Arc::new(initial);
        NetworkState { inner: RwLock::new(Inner { current: initial.clone(), last_usable: initial }) }
    }

    /// The current snapshot (a cheap `Arc` clone; it never changes under the caller).
    pub fn snapshot(&self) -> Arc<InterfaceSnapshot> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).current.clone()
    }

    /// The snapshot the next update is compared with: the current one, or during a "no
    /// network" pause the last one that had interfaces. A connection records it when it starts,
    /// so that once its egress is known [`NetworkState::close_reason_since`] can tell whether an
    /// update made while it dialed took that egress away.
    pub fn baseline(&self) -> Arc<InterfaceSnapshot> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).last_usable.clone()
    }

    /// Why a connection that left through `egress`, and that started while `since` was the
    /// [`NetworkState::baseline`], must be closed because of the updates made since then (see
    /// [`SnapshotChange::close_reason`]); `None` when no update was made or none affects it. A
    /// "no network" pause counts as no change (the update that ends it compares with the
    /// baseline too).
    pub fn close_reason_since(&self, since: &Arc<InterfaceSnapshot>, egress: &Egress) -> Option<CloseReason> {
        let now = self.baseline();
        if Arc::ptr_eq(since, &now) {
            return None;
        }
        diff(since, &now).close_reason(egress)
    }

    /// Replaces the current snapshot and reports what changed. Updates are serialized; an
    /// identical snapshot changes nothing and reports `identical`.
    pub fn update(&self, snapshot: InterfaceSnapshot) -> SnapshotChange {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if *inner.current == snapshot {
            return SnapshotChange {
                identical: true,
                no_network: snapshot.is_no_network(),
                ..Default::default()
            };
        }
        let snapshot = Arc::new(snapshot);
        inner.current = snapshot.clone();
        if snapshot.is_no_network() {
            return SnapshotChange { no_network: true, ..Default::default() };
        }
        let change = diff(&inner.last_usable, &snapshot);
        inner.last_usable = snapshot;
        change
    }
}

/// Compares two snapshots that both have interfaces (or an initial empty `old`).
fn diff(old: &InterfaceSnapshot, new: &InterfaceSnapshot) -> SnapshotChange {
    let ids = |s: &InterfaceSnapshot| s.interfaces().iter().map(|i| i.id()).collect::<BTreeSet<_>>();
    let (old_ids, new_ids) = (ids(old), ids(new));
    let removed: Vec<InterfaceId> =
        old.interfaces().iter().map(|i| i.id()).filter(|id| !new_ids.contains(id)).collect();
    let added: Vec<InterfaceId> =
        new.interfaces().iter().map(|i| i.id()).filter(|id| !old_ids.contains(id)).collect();
    let mut readdressed = Vec::new();
    for before in old.interfaces() {
        let Some(after) = new.by_index(before.index).filter(|a| a.name == before.name) else { continue };
        if before.addresses.iter().any(|a| !after.addresses.iter().any(|b| b.ip == a.ip)) {
            readdressed.push(before.id());
        }
    }
    let new_ips: BTreeSet<IpAddr> =
        new.interfaces().iter().flat_map(|i| i.addresses.iter().map(|a| a.ip)).collect();
    let mut lost_addresses: Vec<IpAddr> = Vec::new();
    for ip in old.interfaces().iter().flat_map(|i| i.addresses.iter().map(|a| a.ip)) {
        if !new_ips.contains(&ip) && !lost_addresses.contains(&ip) {
            lost_addresses.push(ip);
        }
    }
    let old_default = old.default_interface().map(|i| i.id());
    let new_default = new.default_interface().map(|i| i.id());
    let default_change =
        (old_default != new_default).then_some(DefaultChange { old: old_default, new: new_default });
    SnapshotChange {
        identical: false,
        no_network: false,
        removed,
        added,
        readdressed,
        lost_addresses,
        default_change,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::network::{NetworkInterface, NetworkType};

    fn wifi() -> NetworkInterface {
        NetworkInterface::new("wlan0", 3, NetworkType::Wifi).with_address("192.168.1.20".parse().unwrap(), 24)
    }

    fn cell() -> NetworkInterface {
        NetworkInterface::new("rmnet0", 7, NetworkType::Cellular)
            .with_address("10.64.0.9".parse().unwrap(), 30)
    }

    fn snap(interfaces: Vec<NetworkInterface>, default: Option<u32>) -> InterfaceSnapshot {
        InterfaceSnapshot::new(interfaces, default).unwrap()
    }

    fn id(name: &str, index: u32) -> InterfaceId {
        InterfaceId { name: name.into(), index }
    }

    fn egress(name: &str, index: u32) -> Egress {
        Egress { interface: Some(name.into()), interface_index: Some(index), ..Default::default() }
    }

    fn from_address(egress: Egress, ip: &str) -> Egress {
        Egress { local_address: Some(ip.parse().unwrap()), ..egress }
    }

    #[test]
    fn identical_snapshot_is_a_noop() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let change = state.update(snap(vec![wifi(), cell()], Some(3)));
        assert!(change.identical && change.is_noop());
        assert!(!change.closes(&egress("wlan0", 3)));
        assert!(!change.closes(&Egress::default()));
    }

    #[test]
    fn reports_removed_interface_and_default_change() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let change = state.update(snap(vec![cell()], Some(7)));
        assert!(!change.identical && !change.no_network && !change.is_noop());
        assert_eq!(change.removed, vec![id("wlan0", 3)]);
        assert_eq!(change.lost_addresses, vec!["192.168.1.20".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            change.default_change,
            Some(DefaultChange { old: Some(id("wlan0", 3)), new: Some(id("rmnet0", 7)) })
        );
        assert!(change.closes(&egress("wlan0", 3)));
        assert!(!change.closes(&egress("rmnet0", 7)));
        assert!(change.closes(&Egress::default()), "system-route connections used the old default");
        assert_eq!(state.snapshot().default_index(), Some(7));
        // Wi-Fi was both gone and the old default: the interface going away is the reason.
        assert_eq!(change.close_reason(&egress("wlan0", 3)), Some(CloseReason::InterfaceGone));
        assert_eq!(change.close_reason(&Egress::default()), Some(CloseReason::DefaultChanged));
        assert_eq!(change.close_reason(&egress("rmnet0", 7)), None);
    }

    #[test]
    fn default_change_closes_old_default_only() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let change = state.update(snap(vec![wifi(), cell()], Some(7)));
        assert!(change.removed.is_empty());
        assert!(change.closes(&egress("wlan0", 3)));
        assert_eq!(change.close_reason(&egress("wlan0", 3)), Some(CloseReason::DefaultChanged));
        assert!(!change.closes(&egress("rmnet0", 7)));
        // Matched by name when the egress recorded no index.
        let by_name = Egress { interface: Some("wlan0".into()), ..Default::default() };
        assert!(change.closes(&by_name));
        // A socket bound to Wi-Fi (dialed while another interface was the default) stays.
        assert_eq!(change.close_reason(&egress("wlan0", 3).as_bound()), None);
    }

    #[test]
    fn same_name_new_index_is_a_removal() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let mut recreated = wifi();
        recreated.index = 11;
        let change = state.update(snap(vec![recreated, cell()], Some(11)));
        assert_eq!(change.removed, vec![id("wlan0", 3)]);
        assert_eq!(change.added, vec![id("wlan0", 11)]);
        assert_eq!(
            change.default_change,
            Some(DefaultChange { old: Some(id("wlan0", 3)), new: Some(id("wlan0", 11)) })
        );
        assert!(change.closes(&egress("wlan0", 3)));
        assert!(!change.closes(&egress("wlan0", 11)));
    }

    #[test]
    fn renamed_default_is_a_default_change() {
        let state = NetworkState::new(snap(vec![wifi()], Some(3)));
        let mut renamed = wifi();
        renamed.name = "wlan1".into();
        let change = state.update(snap(vec![renamed], Some(3)));
        assert!(change.default_change.is_some());
        assert_eq!(change.removed, vec![id("wlan0", 3)]);
    }

    #[test]
    fn no_network_pauses_and_resume_compares_with_last_usable() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let change = state.update(InterfaceSnapshot::empty());
        assert!(change.no_network && !change.identical);
        assert!(change.removed.is_empty() && change.default_change.is_none());
        assert!(!change.closes(&egress("wlan0", 3)));
        assert!(!change.closes(&Egress::default()));
        assert!(state.snapshot().is_no_network());

        let again = state.update(InterfaceSnapshot::empty());
        assert!(again.identical && again.no_network);

        // Wi-Fi did not come back: its connections are closed now.
        let resumed = state.update(snap(vec![cell()], Some(7)));
        assert_eq!(resumed.removed, vec![id("wlan0", 3)]);
        assert!(resumed.closes(&egress("wlan0", 3)));
        assert!(!resumed.closes(&egress("rmnet0", 7)));
    }

    #[test]
    fn resume_with_same_interfaces_closes_nothing() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        state.update(InterfaceSnapshot::empty());
        let resumed = state.update(snap(vec![wifi(), cell()], Some(3)));
        assert!(!resumed.identical && resumed.is_noop());
        assert!(!resumed.closes(&egress("wlan0", 3)));
        assert!(!resumed.closes(&Egress::default()));
    }

    #[test]
    fn reports_readdressed_interfaces_without_closing() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let mut moved = wifi();
        moved.addresses[0].ip = "192.168.7.5".parse().unwrap();
        let change = state.update(snap(vec![moved, cell()], Some(3)));
        assert_eq!(change.readdressed, vec![id("wlan0", 3)]);
        assert!(change.lost_address("192.168.1.20".parse().unwrap()));
        assert!(!change.lost_address("10.64.0.9".parse().unwrap()));
        assert!(!change.closes(&egress("wlan0", 3)), "same interface, same default: closing is by address");
        let on_old = from_address(egress("wlan0", 3), "192.168.1.20");
        assert_eq!(change.close_reason(&on_old), Some(CloseReason::LocalAddressGone));
        let on_cell = from_address(egress("rmnet0", 7), "10.64.0.9");
        assert_eq!(change.close_reason(&on_cell), None);
        // A system-route socket with the lost source address is as dead.
        let unbound = from_address(Egress::default(), "192.168.1.20");
        assert_eq!(change.close_reason(&unbound), Some(CloseReason::LocalAddressGone));
        assert_eq!(change.close_reason(&from_address(Egress::default(), "10.64.0.9")), None);
    }

    #[test]
    fn the_most_specific_reason_wins() {
        let state = NetworkState::new(snap(vec![wifi(), cell()], Some(3)));
        let change = state.update(snap(vec![cell()], Some(7)));
        // Wi-Fi is gone, with its address and the default: the interface is the reason.
        let on_wifi = from_address(egress("wlan0", 3), "192.168.1.20");
        assert_eq!(change.close_reason(&on_wifi), Some(CloseReason::InterfaceGone));
        // A system-route socket from Wi-Fi's address: the address, not the default change.
        let unbound = from_address(Egress::default(), "192.168.1.20");
        assert_eq!(change.close_reason(&unbound), Some(CloseReason::LocalAddressGone));
    }

    #[test]
    fn local_addresses_are_recorded_usefully() {
        let v4: SocketAddr = "192.168.1.20:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.168.1.20]:5000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let ip: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(Egress::default().with_local_address(Some(v4)).local_address, Some(ip));
        assert_eq!(Egress::default().with_local_address(Some(mapped)).local_address, Some(ip));
        assert_eq!(Egress::default().with_local_address(Some(any)).local_address, None);
        let known = Egress::default().with_local_address(Some(v4));
        assert_eq!(known.clone().with_local_address(None), known, "unknown keeps what was there");
    }

    #[test]
    fn first_snapshot_from_empty_reports_additions_only() {
        let state = NetworkState::default();
        assert!(state.snapshot().is_no_network());
        let change = state.update(snap(vec![wifi()], None));
        assert_eq!(change.added, vec![id("wlan0", 3)]);
        assert!(change.removed.is_empty() && change.default_change.is_none());
        let change = state.update(snap(vec![wifi()], Some(3)));
        assert_eq!(change.default_change, Some(DefaultChange { old: None, new: Some(id("wlan0", 3)) }));
        assert!(!change.closes(&Egress::default()), "no known old default: nothing to close");
    }
}
