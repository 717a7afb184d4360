//! Allow-lists of client addresses: networks in CIDR notation.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use crate::Addr;

/// The networks whose clients may connect, like `127.0.0.0/8` or `::1`.
/// Unix-socket peers are always allowed (file permissions guard those).
///
/// ```
/// use sockloop::{Addr, AllowList};
/// let allow: AllowList = "127.0.0.0/8, ::1".parse()?;
/// assert!(allow.allows(&"127.0.0.1:5000".parse()?));
/// assert!(!allow.allows(&"[::2]:5000".parse()?));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    networks: Vec<(IpAddr, u8)>,
}

impl AllowList {
    /// Adds a network: an address and how many leading bits must match.
    pub fn allow(mut self, network: IpAddr, prefix: u8) -> io::Result<AllowList> {
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("/{prefix} is too long for {network}"),
            ));
        }
        self.networks.push((network, prefix));
        Ok(self)
    }

    /// True when `peer` is in one of the networks (or is a Unix peer).
    pub fn allows(&self, peer: &Addr) -> bool {
        let Some(ip) = peer.as_inet().map(|a| a.ip()) else {
            return true;
        };
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .any(|&(net, prefix)| matches(net, prefix, ip))
    }
}

fn matches(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    let shift = bits - u32::from(prefix);
    shift >= bits || (net >> shift) == (ip >> shift)
}

impl FromStr for AllowList {
    type Err = io::Error;

    /// Comma-separated networks: `10.0.0.0/8, 127.0.0.1, ::1/128`.
    fn from_str(text: &str) -> io::Result<AllowList> {
        let bad = |what: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad network {what:?}"))
        };
        let mut list = AllowList::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (ip, prefix) = match item.split_once('/') {
                Some((ip, prefix)) => (ip, Some(prefix)),
                None => (item, None),
            };
            let ip: IpAddr = ip.parse().map_err(|_| bad(item))?;
            let prefix = match prefix {
                Some(p) => p.parse().map_err(|_| bad(item))?,
                None if ip.is_ipv4() => 32,
                None => 128,
            };
            list = list.allow(ip, prefix)?;
        }
        Ok(list)
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .networks
            .iter()
            .map(|(ip, p)| format!("{ip}/{p}"))
            .collect();
        f.write_str(&items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let allow: AllowList = "10.1.0.0/16, 192.168.1.7, fd00::/8, 0.0.0.0/0"
            .parse()
            .unwrap();
        assert_eq!(
            allow.to_string(),
            "10.1.0.0/16, 192.168.1.7/32, fd00::/8, 0.0.0.0/0"
        );
        let only: AllowList = "10.1.0.0/16".parse().unwrap();
        assert!(only.allows(&"10.1.200.3:1".parse().unwrap()));
        assert!(!only.allows(&"10.2.0.1:1".parse().unwrap()));
        assert!(
            only.allows(&"[::ffff:10.1.0.9]:1".parse().unwrap()),
            "mapped IPv4"
        );
        assert!(only.allows(&Addr::unix("/tmp/x").unwrap()));
        assert!(AllowList::default().allows(&"/tmp/y".parse().unwrap()));
        assert!(!AllowList::default().allows(&"1.2.3.4:5".parse().unwrap()));
        assert!("1.2.3.4/33".parse::<AllowList>().is_err());
        assert!("nonsense".parse::<AllowList>().is_err());
    }
}
