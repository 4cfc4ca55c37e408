//! `server.max_connections_per_ip`: open connections per client address on
//! one listener, so that one client cannot take every slot under
//! `server.max_connections` and leave the others waiting in the backlog.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
};

/// The open connections of each client address on one listener.
pub(super) struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// `None` when the limit is off (`0`): no map, no lock per connection.
    pub(super) fn new(limit: usize) -> Option<Arc<Self>> {
        (limit > 0).then(|| {
            Arc::new(Self {
                limit,
                open: Mutex::default(),
            })
        })
    }

    /// A slot for one more connection from `peer`, or `None` when that
    /// client already holds `limit`.
    pub(super) fn take(self: &Arc<Self>, peer: IpAddr) -> Option<IpSlot> {
        let client = client(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            client,
        })
    }
}

/// One connection counted against its client until dropped (with the
/// connection, on whichever worker served it).
pub(super) struct IpSlot {
    per_ip: Arc<PerIp>,
    client: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Removed at zero, so the map holds only clients with connections.
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The address a limit counts against: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64, the smallest prefix a site is usually given, so
/// that one host cannot dodge the limit by cycling through its addresses.
fn client(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_at_most_limit_slots_and_gets_them_back() {
        let per_ip = PerIp::new(2).unwrap();
        let a = per_ip.take(ip("10.0.0.1")).unwrap();
        let _b = per_ip.take(ip("10.0.0.1")).unwrap();
        assert!(per_ip.take(ip("10.0.0.1")).is_none());
        assert!(
            per_ip.take(ip("10.0.0.2")).is_some(),
            "other clients unaffected"
        );
        drop(a);
        assert!(
            per_ip.take(ip("10.0.0.1")).is_some(),
            "a freed slot is reused"
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        let per_ip = PerIp::new(1).unwrap();
        let _a = per_ip.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(per_ip.take(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(per_ip.take(ip("2001:db8:1:3::1")).is_some());
        let _v4 = per_ip.take(ip("192.0.2.1")).unwrap();
        assert!(
            per_ip.take(ip("::ffff:192.0.2.1")).is_none(),
            "an IPv4-mapped address counts as its IPv4 address"
        );
    }

    #[test]
    fn the_map_forgets_clients_without_connections() {
        let per_ip = PerIp::new(3).unwrap();
        drop(per_ip.take(ip("10.0.0.1")));
        assert!(per_ip.open.lock().unwrap().is_empty());
        assert!(PerIp::new(0).is_none(), "0 turns the limit off");
    }
}
