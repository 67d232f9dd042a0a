//! Hands out loopback addresses for simulated nodes without collisions.
//!
//! Every node listens on the real ipamd port, 61678, so nodes differ by address, not by
//! port. Linux routes the whole 127.0.0.0/8 to loopback, which gives room for millions of
//! nodes. Tests run in several processes at once, so each process starts at an offset derived
//! from its PID, walks forward with a process-wide cursor (fleets of one process never
//! overlap), and steps over any address another process already holds.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpSocket};

use super::FleetError;
use super::simulation::splitmix64;

/// Usable values of each of the three free octets: 1..=254 (0 and 255 look like network and
/// broadcast addresses and confuse humans reading logs, so they are skipped).
const OCTET_VALUES: u64 = 254;

/// The number of addresses in 127.1.1.1–127.254.254.254 with no 0 or 255 octet.
const ADDRESS_SLOTS: u64 = OCTET_VALUES * OCTET_VALUES * OCTET_VALUES;

/// How many taken addresses one node may step over before the fleet gives up.
const MAX_ATTEMPTS_PER_NODE: u32 = 512;

/// After this many taken addresses in a row, the cursor jumps ahead by [`LARGE_JUMP`]: a
/// long run of taken addresses means another process's fleet lives there.
const SHORT_STEPS_BEFORE_JUMP: u32 = 8;
const LARGE_JUMP: u64 = 10_007;

/// Listen backlog per node. Benchmarks open one connection per node per round; a larger
/// backlog only matters when one node is hammered, which no test does.
const LISTEN_BACKLOG: u32 = 1_024;

/// The process-wide count of address slots already handed out or skipped.
static CURSOR: AtomicU64 = AtomicU64::new(0);

/// This process's starting slot, spread over the space by hashing the PID.
fn process_offset() -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| splitmix64(u64::from(std::process::id())) % ADDRESS_SLOTS)
}

/// The address of a slot: 127.x.y.z with x, y, z in 1..=254.
fn slot_address(slot: u64) -> Ipv4Addr {
    let slot = slot % ADDRESS_SLOTS;
    let octet = |value: u64| (value % OCTET_VALUES + 1) as u8;
    Ipv4Addr::new(
        127,
        octet(slot / (OCTET_VALUES * OCTET_VALUES)),
        octet(slot / OCTET_VALUES),
        octet(slot),
    )
}

fn next_slot(step: u64) -> u64 {
    process_offset().wrapping_add(CURSOR.fetch_add(step, Ordering::Relaxed))
}

/// Binds one listener on a fresh loopback address at `port`, stepping over addresses that
/// are already in use. Must run inside a Tokio runtime.
pub(crate) fn bind_next(port: u16) -> Result<(TcpListener, SocketAddr), FleetError> {
    let mut slot = next_slot(1);
    let mut last_error = None;
    for attempt in 0..MAX_ATTEMPTS_PER_NODE {
        let address = SocketAddr::V4(SocketAddrV4::new(slot_address(slot), port));
        match bind(address) {
            Ok(listener) => {
                // With port 0 the kernel picked the port; report the real one.
                let bound = listener.local_addr().unwrap_or(address);
                return Ok((listener, bound));
            }
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(error);
                let step = if attempt + 1 < SHORT_STEPS_BEFORE_JUMP {
                    1
                } else {
                    LARGE_JUMP
                };
                slot = next_slot(step);
            }
            Err(error) if error.kind() == io::ErrorKind::AddrNotAvailable => {
                return Err(FleetError::LoopbackUnavailable {
                    address,
                    source: error,
                });
            }
            Err(source) => return Err(FleetError::Bind { address, source }),
        }
    }
    Err(FleetError::NoFreeAddress {
        port,
        attempts: MAX_ATTEMPTS_PER_NODE,
        last_error: last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    })
}

/// A fresh loopback address at `port` that nothing will listen on: for a fleet whose nodes
/// share one listener, where an address is only a name the pods proxy asks for. The cursor
/// keeps it distinct from every other address this process hands out.
pub(crate) fn reserve_unbound(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(slot_address(next_slot(1)), port))
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // SO_REUSEADDR lets a fleet take an address whose previous owner left connections in
    // TIME_WAIT; it never lets two listeners share an address and port on Linux.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_never_produce_zero_or_broadcast_octets() {
        for slot in [
            0,
            1,
            253,
            254,
            255,
            ADDRESS_SLOTS - 1,
            ADDRESS_SLOTS,
            12_345_678,
        ] {
            let octets = slot_address(slot).octets();
            assert_eq!(octets[0], 127);
            assert!(
                octets[1..].iter().all(|octet| (1..=254).contains(octet)),
                "{octets:?}"
            );
        }
    }

    #[test]
    fn consecutive_slots_are_distinct_addresses() {
        let addresses: std::collections::HashSet<Ipv4Addr> =
            (0..70_000).map(slot_address).collect();
        assert_eq!(addresses.len(), 70_000);
    }
}
