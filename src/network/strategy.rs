//! Network strategies: which interfaces a connection races first (primary) and which it falls
//! back to: the reference's selection table (sing-box `selectInterfaces`), then the validation
//! rules below.
//!
//! | strategy   | `network_type` empty                              | `network_type` set      | fallback set |
//! |------------|---------------------------------------------------|-------------------------|--------------|
//! | `default`  | the default interface; no default known: all      | interfaces of the types | none |
//! | `hybrid`   | all interfaces                                    | interfaces of the types | none |
//! | `fallback` | the default interface; no default known: all      | interfaces of the types | `fallback_network_type` empty: every interface not in primary; else interfaces of those types (may overlap primary) |
//!
//! `fallback_network_type` is ignored by `default` and `hybrid`. An empty primary with a non-empty
//! fallback is a valid selection: the racer starts the fallbacks at once.
//!
//! # Validated networks first
//!
//! [`NetworkInterface::validated`] is false for a network the system could not confirm reaches
//! the internet (a captive portal, a network still being checked). Call *eligible* the
//! interfaces the table selects (primary or fallback) when it is read with no default known:
//! every interface of the allowed types, where the allowed types are all types when
//! `network_type` is empty (for `fallback`: when either `network_type` or
//! `fallback_network_type` is empty), else `network_type` (for `fallback`: plus
//! `fallback_network_type`).
//!
//! 1. **A captive default is skipped.** When the default interface is not validated and an
//!    eligible interface other than it is validated, the table is read as if no default were
//!    known, and the default is removed from both sets: it is not dialed at all, not even as a
//!    fallback (a portal accepts connections and answers with its login page, so a connect that
//!    "works" is the wrong answer). Sockets on the interfaces chosen instead are bound to them.
//! 2. **Validated interfaces first.** When the primary set holds a validated interface, its
//!    non-validated members move to the fallback set: they join the race only after
//!    `fallback_delay` or once every validated primary failed. In the fallback set validated
//!    interfaces come first (UDP tries interfaces in order). Otherwise the host's order is kept.
//! 3. When no eligible interface is validated, validation changes nothing (the table alone
//!    decides), so a host that reports every network as validated, or a device whose only
//!    networks are unvalidated, dials exactly as before.

use std::fmt;

use super::interface::{InterfaceSnapshot, NetworkInterface};
use super::NetworkType;

/// How a connection chooses among the available networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkStrategy {
    /// The default interface (or the interfaces of `network_type`), all raced together.
    #[default]
    Default,
    /// Every interface (or every one of `network_type`), all raced together.
    Hybrid,
    /// The preferred interfaces first; the fallback ones after `fallback_delay` or as soon as
    /// every preferred one failed.
    Fallback,
}

impl fmt::Display for NetworkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkStrategy::Default => "default",
            NetworkStrategy::Hybrid => "hybrid",
            NetworkStrategy::Fallback => "fallback",
        })
    }
}

/// The interfaces one dial races: `primary` start at once, `fallback` later (see the module doc).
/// Both keep the snapshot's order. Guaranteed not both empty.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Selection {
    /// Interfaces to start immediately.
    pub primary: Vec<NetworkInterface>,
    /// Interfaces to start after the fallback delay (empty for `default` and `hybrid`).
    pub fallback: Vec<NetworkInterface>,
    /// Index of the snapshot's default interface at selection time, if known.
    pub default_index: Option<u32>,
}

impl Selection {
    /// Whether `interface` is the default interface: the binder protects it but does not bind it.
    pub fn is_default(&self, interface: &NetworkInterface) -> bool {
        self.default_index == Some(interface.index)
    }
}

/// Why no interface could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The snapshot has no interfaces at all: dialing is paused until the host reports one.
    #[error("no network: the host reports no usable network interface")]
    NoNetwork,
    /// Interfaces exist but none matches the strategy and types.
    #[error(
        "no available network interface for strategy {strategy}, network_type [{}], \
         fallback_network_type [{}] (considered: {})",
        join(.network_types), join(.fallback_network_types), considered_list(.considered)
    )]
    NoAvailableInterface {
        /// The strategy asked for.
        strategy: NetworkStrategy,
        /// The preferred network types asked for.
        network_types: Vec<NetworkType>,
        /// The fallback network types asked for.
        fallback_network_types: Vec<NetworkType>,
        /// Every interface of the snapshot, as (name, type).
        considered: Vec<(String, NetworkType)>,
    },
}

fn join(types: &[NetworkType]) -> String {
    types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn considered_list(considered: &[(String, NetworkType)]) -> String {
    if considered.is_empty() {
        return "none".to_string();
    }
    considered.iter().map(|(name, kind)| format!("{name} ({kind})")).collect::<Vec<_>>().join(", ")
}

/// Picks the primary and fallback interfaces for one dial, per the table and the validation
/// rules in the module doc.
///
/// Fails with [`SelectError::NoNetwork`] on an empty snapshot, and with
/// [`SelectError::NoAvailableInterface`] (listing every interface considered, with its type)
/// when primary and fallback would both be empty.
pub fn select_interfaces(
    snapshot: &InterfaceSnapshot,
    strategy: NetworkStrategy,
    network_types: &[NetworkType],
    fallback_network_types: &[NetworkType],
) -> Result<Selection, SelectError> {
    if snapshot.is_no_network() {
        return Err(SelectError::NoNetwork);
    }
    let all = snapshot.interfaces();
    let table = |default_index| table(all, default_index, strategy, network_types, fallback_network_types);
    let (mut primary, mut fallback) = table(snapshot.default_index());
    if let Some(captive) = snapshot.default_interface().filter(|d| !d.validated) {
        let (eligible_primary, eligible_fallback) = table(None);
        let validated_elsewhere = eligible_primary
            .iter()
            .chain(&eligible_fallback)
            .any(|i| i.validated && i.index != captive.index);
        if validated_elsewhere {
            primary = eligible_primary;
            fallback = eligible_fallback;
            primary.retain(|i| i.index != captive.index);
            fallback.retain(|i| i.index != captive.index);
        }
    }
    if primary.iter().any(|i| i.validated) {
        let (validated, waiting): (Vec<_>, Vec<_>) = primary.into_iter().partition(|i| i.validated);
        primary = validated;
        fallback.retain(|f| !waiting.iter().any(|w| w.index == f.index));
        fallback.splice(0..0, waiting);
    }
    // Stable: validated first, the host's order otherwise.
    fallback.sort_by_key(|i| !i.validated);
    if primary.is_empty() && fallback.is_empty() {
        return Err(SelectError::NoAvailableInterface {
            strategy,
            network_types: network_types.to_vec(),
            fallback_network_types: fallback_network_types.to_vec(),
            considered: all.iter().map(|i| (i.name.clone(), i.network_type)).collect(),
        });
    }
    Ok(Selection { primary, fallback, default_index: snapshot.default_index() })
}

/// The selection table of the module doc alone (no validation rules), with `default_index` as
/// the default interface.
fn table(
    all: &[NetworkInterface],
    default_index: Option<u32>,
    strategy: NetworkStrategy,
    network_types: &[NetworkType],
    fallback_network_types: &[NetworkType],
) -> (Vec<NetworkInterface>, Vec<NetworkInterface>) {
    let of_types = |types: &[NetworkType]| -> Vec<NetworkInterface> {
        all.iter().filter(|i| types.contains(&i.network_type)).cloned().collect()
    };
    let default_or_all = |first_only: bool| -> Vec<NetworkInterface> {
        match default_index {
            None => all.to_vec(),
            Some(index) => {
                let matching = all.iter().filter(|i| i.index == index).cloned();
                if first_only {
                    matching.take(1).collect()
                } else {
                    matching.collect()
                }
            }
        }
    };
    match strategy {
        NetworkStrategy::Default if network_types.is_empty() => (default_or_all(false), Vec::new()),
        NetworkStrategy::Hybrid if network_types.is_empty() => (all.to_vec(), Vec::new()),
        NetworkStrategy::Default | NetworkStrategy::Hybrid => (of_types(network_types), Vec::new()),
        NetworkStrategy::Fallback => {
            let primary =
                if network_types.is_empty() { default_or_all(true) } else { of_types(network_types) };
            let fallback = if fallback_network_types.is_empty() {
                all.iter().filter(|i| !primary.iter().any(|p| p.index == i.index)).cloned().collect()
            } else {
                of_types(fallback_network_types)
            };
            (primary, fallback)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NetworkStrategy::*;
    use NetworkType::*;

    /// wlan0 (wifi, 1), rmnet0 (cellular, 2), eth0 (ethernet, 3), rmnet1 (cellular, 4).
    fn snapshot(default: Option<u32>) -> InterfaceSnapshot {
        InterfaceSnapshot::new(
            vec![
                NetworkInterface::new("wlan0", 1, Wifi),
                NetworkInterface::new("rmnet0", 2, Cellular),
                NetworkInterface::new("eth0", 3, Ethernet),
                NetworkInterface::new("rmnet1", 4, Cellular),
            ],
            default,
        )
        .unwrap()
    }

    fn names(interfaces: &[NetworkInterface]) -> Vec<&str> {
        interfaces.iter().map(|i| i.name.as_str()).collect()
    }

    fn select(
        default: Option<u32>,
        strategy: NetworkStrategy,
        types: &[NetworkType],
        fallback: &[NetworkType],
    ) -> (Vec<String>, Vec<String>) {
        let s = select_interfaces(&snapshot(default), strategy, types, fallback).unwrap();
        let own = |v: &[NetworkInterface]| names(v).into_iter().map(String::from).collect();
        (own(&s.primary), own(&s.fallback))
    }

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_strategy() {
        assert_eq!(select(Some(2), Default, &[], &[]), (v(&["rmnet0"]), v(&[])));
        assert_eq!(select(None, Default, &[], &[]), (v(&["wlan0", "rmnet0", "eth0", "rmnet1"]), v(&[])));
        assert_eq!(select(Some(1), Default, &[Cellular], &[]), (v(&["rmnet0", "rmnet1"]), v(&[])));
        // fallback_network_type is ignored by `default`.
        assert_eq!(select(Some(1), Default, &[], &[Cellular]), (v(&["wlan0"]), v(&[])));
        assert_eq!(select(Some(1), Default, &[Wifi], &[Cellular]), (v(&["wlan0"]), v(&[])));
    }

    #[test]
    fn hybrid_strategy() {
        assert_eq!(select(Some(1), Hybrid, &[], &[]), (v(&["wlan0", "rmnet0", "eth0", "rmnet1"]), v(&[])));
        assert_eq!(select(None, Hybrid, &[], &[]), (v(&["wlan0", "rmnet0", "eth0", "rmnet1"]), v(&[])));
        assert_eq!(select(Some(1), Hybrid, &[Wifi, Ethernet], &[]), (v(&["wlan0", "eth0"]), v(&[])));
        assert_eq!(select(Some(1), Hybrid, &[Cellular], &[Wifi]), (v(&["rmnet0", "rmnet1"]), v(&[])));
    }

    #[test]
    fn fallback_strategy_without_types() {
        // Primary: the default; fallback: every other interface.
        assert_eq!(select(Some(3), Fallback, &[], &[]), (v(&["eth0"]), v(&["wlan0", "rmnet0", "rmnet1"])));
        // No default known: primary is everything, so nothing is left to fall back to.
        assert_eq!(select(None, Fallback, &[], &[]), (v(&["wlan0", "rmnet0", "eth0", "rmnet1"]), v(&[])));
        // Explicit fallback types with the default as primary.
        assert_eq!(select(Some(1), Fallback, &[], &[Cellular]), (v(&["wlan0"]), v(&["rmnet0", "rmnet1"])));
    }

    #[test]
    fn fallback_strategy_with_types() {
        assert_eq!(
            select(Some(1), Fallback, &[Wifi], &[]),
            (v(&["wlan0"]), v(&["rmnet0", "eth0", "rmnet1"]))
        );
        assert_eq!(
            select(Some(1), Fallback, &[Wifi], &[Cellular]),
            (v(&["wlan0"]), v(&["rmnet0", "rmnet1"]))
        );
        // Fallback types may overlap the primary ones: the same interface is in both sets.
        assert_eq!(
            select(Some(1), Fallback, &[Wifi, Cellular], &[Cellular]),
            (v(&["wlan0", "rmnet0", "rmnet1"]), v(&["rmnet0", "rmnet1"]))
        );
        // No interface of the preferred type: an empty primary with fallbacks is fine.
        let only_cell =
            InterfaceSnapshot::new(vec![NetworkInterface::new("rmnet0", 2, Cellular)], Some(2)).unwrap();
        let s = select_interfaces(&only_cell, Fallback, &[Wifi], &[]).unwrap();
        assert!(s.primary.is_empty());
        assert_eq!(names(&s.fallback), ["rmnet0"]);
        assert!(s.is_default(&s.fallback[0]));
    }

    #[test]
    fn no_available_interface_lists_what_was_considered() {
        let err = select_interfaces(&snapshot(Some(1)), Hybrid, &[Other], &[]).unwrap_err();
        assert!(matches!(err, SelectError::NoAvailableInterface { .. }));
        let text = err.to_string();
        assert!(text.starts_with("no available network interface"), "{text}");
        assert!(
            text.contains("considered: wlan0 (wifi), rmnet0 (cellular), eth0 (ethernet), rmnet1 (cellular)"),
            "{text}"
        );
        assert!(text.contains("network_type [other]"), "{text}");

        let err = select_interfaces(&snapshot(None), Fallback, &[Other], &[Other]).unwrap_err();
        assert!(err.to_string().contains("strategy fallback"), "{err}");
        let err = select_interfaces(&snapshot(None), Default, &[Other], &[]).unwrap_err();
        assert!(matches!(err, SelectError::NoAvailableInterface { .. }), "{err}");
    }

    #[test]
    fn empty_snapshot_is_no_network() {
        let err = select_interfaces(&InterfaceSnapshot::empty(), Default, &[], &[]).unwrap_err();
        assert_eq!(err, SelectError::NoNetwork);
        assert!(err.to_string().starts_with("no network"));
    }

    #[test]
    fn selection_knows_the_default() {
        let s = select_interfaces(&snapshot(Some(2)), Hybrid, &[], &[]).unwrap();
        let defaults: Vec<&str> = s.primary.iter().filter(|i| s.is_default(i)).map(|i| &*i.name).collect();
        assert_eq!(defaults, ["rmnet0"]);
    }

    /// `snapshot(default)` with the named interfaces not validated.
    fn unvalidated(default: Option<u32>, names: &[&str]) -> InterfaceSnapshot {
        let interfaces = snapshot(default)
            .interfaces()
            .iter()
            .cloned()
            .map(|mut i| {
                i.validated = !names.contains(&i.name.as_str());
                i
            })
            .collect();
        InterfaceSnapshot::new(interfaces, default).unwrap()
    }

    fn select_in(
        snapshot: &InterfaceSnapshot,
        strategy: NetworkStrategy,
        types: &[NetworkType],
        fallback: &[NetworkType],
    ) -> (Vec<String>, Vec<String>) {
        let s = select_interfaces(snapshot, strategy, types, fallback).unwrap();
        let own = |v: &[NetworkInterface]| names(v).into_iter().map(String::from).collect();
        (own(&s.primary), own(&s.fallback))
    }

    #[test]
    fn a_captive_default_is_skipped_while_a_validated_network_is_eligible() {
        let captive_wifi = unvalidated(Some(1), &["wlan0"]);
        // `default` reads as "no default known": every other interface, none of them the portal.
        assert_eq!(select_in(&captive_wifi, Default, &[], &[]), (v(&["rmnet0", "eth0", "rmnet1"]), v(&[])));
        assert_eq!(select_in(&captive_wifi, Hybrid, &[], &[]), (v(&["rmnet0", "eth0", "rmnet1"]), v(&[])));
        assert_eq!(select_in(&captive_wifi, Fallback, &[], &[]), (v(&["rmnet0", "eth0", "rmnet1"]), v(&[])));
        // Preferring Wi-Fi with cellular as fallback: no primary, cellular starts at once.
        assert_eq!(
            select_in(&captive_wifi, Fallback, &[Wifi], &[Cellular]),
            (v(&[]), v(&["rmnet0", "rmnet1"]))
        );
        // The chosen interfaces are not the default: they are bound, not only protected.
        let s = select_interfaces(&captive_wifi, Default, &[], &[]).unwrap();
        assert!(s.primary.iter().all(|i| !s.is_default(i)));
        assert_eq!(s.default_index, Some(1));
    }

    #[test]
    fn a_captive_default_stays_when_nothing_eligible_is_validated() {
        // Only Wi-Fi is allowed and the only Wi-Fi is the portal: it is still used.
        let captive_wifi = unvalidated(Some(1), &["wlan0"]);
        assert_eq!(select_in(&captive_wifi, Default, &[Wifi], &[]), (v(&["wlan0"]), v(&[])));
        assert_eq!(select_in(&captive_wifi, Hybrid, &[Wifi], &[]), (v(&["wlan0"]), v(&[])));
        // Nothing validated at all: exactly the table.
        let nothing = unvalidated(Some(1), &["wlan0", "rmnet0", "eth0", "rmnet1"]);
        for strategy in [Default, Hybrid, Fallback] {
            for (types, fallback) in [(&[][..], &[][..]), (&[Wifi][..], &[Cellular][..])] {
                assert_eq!(
                    select_in(&nothing, strategy, types, fallback),
                    select(Some(1), strategy, types, fallback),
                    "{strategy} {types:?} {fallback:?}"
                );
            }
        }
    }

    #[test]
    fn a_validated_default_is_kept_and_others_wait_for_it() {
        let cell_checking = unvalidated(Some(1), &["rmnet0"]);
        assert_eq!(select_in(&cell_checking, Default, &[], &[]), (v(&["wlan0"]), v(&[])));
        // Hybrid: the unvalidated network joins after the fallback delay instead of racing at once.
        assert_eq!(
            select_in(&cell_checking, Hybrid, &[], &[]),
            (v(&["wlan0", "eth0", "rmnet1"]), v(&["rmnet0"]))
        );
        assert_eq!(select_in(&cell_checking, Default, &[Cellular], &[]), (v(&["rmnet1"]), v(&["rmnet0"])));
        // In the fallback set validated interfaces come first.
        assert_eq!(
            select_in(&cell_checking, Fallback, &[], &[]),
            (v(&["wlan0"]), v(&["eth0", "rmnet1", "rmnet0"]))
        );
        // A waiting primary that is also a fallback type appears once there, after the validated
        // ones (the table lets fallback types overlap the primary ones).
        assert_eq!(
            select_in(&cell_checking, Fallback, &[Wifi, Cellular], &[Cellular]),
            (v(&["wlan0", "rmnet1"]), v(&["rmnet1", "rmnet0"]))
        );
        // A primary set with no validated member is left as it is.
        let only_rmnet0 = unvalidated(Some(1), &["rmnet0", "rmnet1"]);
        assert_eq!(
            select_in(&only_rmnet0, Fallback, &[Cellular], &[Wifi]),
            (v(&["rmnet0", "rmnet1"]), v(&["wlan0"]))
        );
    }

    #[test]
    fn strategy_serde_names() {
        for (strategy, name) in [(Default, "\"default\""), (Hybrid, "\"hybrid\""), (Fallback, "\"fallback\"")]
        {
            assert_eq!(serde_json::to_string(&strategy).unwrap(), name);
            assert_eq!(serde_json::from_str::<NetworkStrategy>(name).unwrap(), strategy);
            assert_eq!(format!("\"{strategy}\""), name);
        }
        assert!(serde_json::from_str::<NetworkStrategy>("\"Fallback\"").is_err());
    }
}
