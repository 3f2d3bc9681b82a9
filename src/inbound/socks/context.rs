//! What every SOCKS client task needs: the server's settings, the manager and the outbound.

use std::sync::Arc;
use std::time::Duration;

use super::auth::UserTable;
use crate::dial::Outbound;
use crate::manager::ConnectionManager;

/// What every client task needs.
pub(super) struct Context {
    pub(super) users: UserTable,
    pub(super) handshake_timeout: Duration,
    pub(super) udp: crate::inbound::udp_sessions::UdpSettings,
    pub(super) udp_limits: Arc<crate::inbound::udp_sessions::UdpLimits>,
    pub(super) max_pending_handshakes: usize,
    pub(super) manager: Arc<ConnectionManager>,
    pub(super) outbound: Arc<dyn Outbound>,
}
