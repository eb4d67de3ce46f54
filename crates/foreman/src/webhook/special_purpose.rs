//! Which addresses a webhook may reach, from IANA's special-purpose address
//! registries (IPv4 and IPv6) and the IPv6 address space: one table per family, and
//! the verdict [`internal`] draws from them.
//!
//! An address is judged by the most specific block that holds it, so an exception
//! inside a wider block (the globally reachable `2001:20::/28` inside the IETF's
//! `2001::/23`) wins over it. A block the registry marks "not globally reachable" is
//! internal; so are multicast, reserved and deprecated space, and the anycast
//! addresses of shared services (a 6to4 relay, a TURN or PCP server), which the
//! nearest server answers, often one inside the operator's own network.
//!
//! Several IPv6 forms carry an IPv4 address (mapped, translated, compatible, NAT64,
//! 6to4, Teredo). The carried address is judged as IPv4, and the wrapper by its own
//! block: either being internal makes the address internal. An IPv4-mapped address
//! is the IPv4 address itself to a dual-stack socket, so it is judged by that alone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use super::{Cidr, parse_cidr};
use Reach::{Anycast, AsCarried, Global, NotGlobal};

/// Whether a webhook may reach a block, by the registry's "globally reachable"
/// column and foreman's reading of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Globally reachable: allowed.
    Global,
    /// Not globally reachable, or space no public host has (reserved, multicast):
    /// internal.
    NotGlobal,
    /// Globally reachable in the registry, but an anycast address the nearest
    /// server of a service answers, which may be the operator's own: internal.
    Anycast,
    /// The registry gives no answer ("N/A") because the block wraps IPv4: as
    /// reachable as the IPv4 addresses it carries.
    AsCarried,
}

/// Where an IPv6 block carries IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// In the last 32 bits (mapped, translated, compatible, NAT64 with a /96 prefix).
    Last32,
    /// In bits 16 to 47, after `2002` (6to4, RFC 3056).
    SixToFour,
    /// Teredo (RFC 4380): the server in bits 32 to 63, the client's public address
    /// as the bitwise NOT of the last 32 bits.
    Teredo,
}

/// One block of a registry.
#[derive(Debug, PartialEq, Eq)]
pub struct Block {
    pub network: Cidr,
    /// The registry's name for it, with the RFC that assigned it.
    pub name: &'static str,
    pub reach: Reach,
    /// Where an IPv6 block carries IPv4 addresses, if it does.
    pub carries: Option<Carries>,
}

/// Why an address is internal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalAddress {
    /// The block that makes it internal: its own, or that of the IPv4 address it
    /// carries.
    pub block: &'static Block,
    /// When a carried IPv4 address is what is internal: the wrapper and that address.
    pub carried_by: Option<(&'static Block, Ipv4Addr)>,
}

impl fmt::Display for InternalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((wrapper, carried)) = self.carried_by {
            write!(
                f,
                "in {}, {}, carrying {carried} ",
                wrapper.network, wrapper.name
            )?;
        }
        write!(f, "in {}, {}", self.block.network, self.block.name)
    }
}

/// The reason an address must not be reached, or `None` for a public one.
pub fn internal(ip: IpAddr) -> Option<InternalAddress> {
    match ip {
        IpAddr::V4(ip) => internal_v4(ip).map(|block| InternalAddress {
            block,
            carried_by: None,
        }),
        IpAddr::V6(ip) => internal_v6(ip),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static Block> {
    // No row covers the rest of the IPv4 space: it is public.
    most_specific(&IPV4, IpAddr::V4(ip)).filter(|block| block.reach != Reach::Global)
}

fn internal_v6(ip: Ipv6Addr) -> Option<InternalAddress> {
    let block = most_specific(&IPV6, IpAddr::V6(ip))
        .expect("the IPv6 address space rows cover every address");
    let carried = block
        .carries
        .map_or_else(Vec::new, |form| carried(form, ip));
    for address in carried {
        if let Some(inner) = internal_v4(address) {
            return Some(InternalAddress {
                block: inner,
                carried_by: Some((block, address)),
            });
        }
    }
    match block.reach {
        Reach::Global | Reach::AsCarried => None,
        Reach::NotGlobal | Reach::Anycast => Some(InternalAddress {
            block,
            carried_by: None,
        }),
    }
}

/// The IPv4 addresses an IPv6 address of this form carries.
fn carried(form: Carries, ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(ip);
    // Truncating casts pick the 32 bits shifted into the lowest place.
    let at = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    match form {
        Carries::Last32 => vec![at(0)],
        Carries::SixToFour => vec![at(80)],
        Carries::Teredo => vec![at(64), Ipv4Addr::from(!(bits as u32))],
    }
}

fn most_specific(table: &'static [Block], ip: IpAddr) -> Option<&'static Block> {
    table
        .iter()
        .filter(|block| block.network.contains(ip))
        .max_by_key(|block| block.network.prefix)
}

/// A registry row: network, name, reach, where it carries IPv4.
type Row = (&'static str, &'static str, Reach, Option<Carries>);

fn table(rows: &[Row]) -> Vec<Block> {
    rows.iter()
        .map(|&(network, name, reach, carries)| Block {
            network: parse_cidr(network).expect("the registry rows are valid CIDRs"),
            name,
            reach,
            carries,
        })
        .collect()
}

static IPV4: LazyLock<Vec<Block>> = LazyLock::new(|| table(IPV4_ROWS));
static IPV6: LazyLock<Vec<Block>> = LazyLock::new(|| table(IPV6_ROWS));

/// IANA's IPv4 Special-Purpose Address Registry, plus multicast (its own registry:
/// a webhook is a TCP connection, which a group cannot take). Addresses in no row
/// are public.
const IPV4_ROWS: &[Row] = &[
    ("0.0.0.0/8", "\"this network\" (RFC 791)", NotGlobal, None),
    (
        "0.0.0.0/32",
        "\"this host on this network\" (RFC 1122)",
        NotGlobal,
        None,
    ),
    ("10.0.0.0/8", "private-use (RFC 1918)", NotGlobal, None),
    (
        "100.64.0.0/10",
        "shared address space (RFC 6598)",
        NotGlobal,
        None,
    ),
    ("127.0.0.0/8", "loopback (RFC 1122)", NotGlobal, None),
    ("169.254.0.0/16", "link-local (RFC 3927)", NotGlobal, None),
    ("172.16.0.0/12", "private-use (RFC 1918)", NotGlobal, None),
    (
        "192.0.0.0/24",
        "IETF protocol assignments (RFC 6890)",
        NotGlobal,
        None,
    ),
    (
        "192.0.0.0/29",
        "IPv4 service continuity prefix (RFC 7335)",
        NotGlobal,
        None,
    ),
    (
        "192.0.0.8/32",
        "IPv4 dummy address (RFC 7600)",
        NotGlobal,
        None,
    ),
    (
        "192.0.0.9/32",
        "port control protocol anycast (RFC 7723)",
        Anycast,
        None,
    ),
    ("192.0.0.10/32", "TURN anycast (RFC 8155)", Anycast, None),
    (
        "192.0.0.170/32",
        "NAT64/DNS64 discovery (RFC 8880)",
        NotGlobal,
        None,
    ),
    (
        "192.0.0.171/32",
        "NAT64/DNS64 discovery (RFC 8880)",
        NotGlobal,
        None,
    ),
    (
        "192.0.2.0/24",
        "documentation, TEST-NET-1 (RFC 5737)",
        NotGlobal,
        None,
    ),
    (
        "192.31.196.0/24",
        "AS112-v4 anycast (RFC 7535)",
        Anycast,
        None,
    ),
    (
        "192.52.193.0/24",
        "AMT relay anycast (RFC 7450)",
        Anycast,
        None,
    ),
    (
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast (RFC 7526)",
        Anycast,
        None,
    ),
    ("192.168.0.0/16", "private-use (RFC 1918)", NotGlobal, None),
    ("198.18.0.0/15", "benchmarking (RFC 2544)", NotGlobal, None),
    (
        "198.51.100.0/24",
        "documentation, TEST-NET-2 (RFC 5737)",
        NotGlobal,
        None,
    ),
    (
        "203.0.113.0/24",
        "documentation, TEST-NET-3 (RFC 5737)",
        NotGlobal,
        None,
    ),
    ("224.0.0.0/4", "multicast (RFC 5771)", NotGlobal, None),
    ("240.0.0.0/4", "reserved (RFC 1112)", NotGlobal, None),
    (
        "255.255.255.255/32",
        "limited broadcast (RFC 919)",
        NotGlobal,
        None,
    ),
];

/// The IPv6 address space (only `2000::/3` is global unicast; the rest is reserved,
/// unique-local, link-local or multicast), then IANA's IPv6 Special-Purpose Address
/// Registry and the IPv4-carrying forms it leaves out. Every address is in a row.
const IPV6_ROWS: &[Row] = &[
    // The IPv6 address space registry.
    ("::/8", "reserved by the IETF (RFC 4291)", NotGlobal, None),
    (
        "100::/8",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "200::/7",
        "reserved by the IETF (RFC 4048)",
        NotGlobal,
        None,
    ),
    (
        "400::/6",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "800::/5",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "1000::/4",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    ("2000::/3", "global unicast (RFC 4291)", Global, None),
    (
        "4000::/3",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "6000::/3",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "8000::/3",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "a000::/3",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "c000::/3",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "e000::/4",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "f000::/5",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "f800::/6",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    ("fc00::/7", "unique-local (RFC 4193)", NotGlobal, None),
    (
        "fe00::/9",
        "reserved by the IETF (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "fe80::/10",
        "link-local unicast (RFC 4291)",
        NotGlobal,
        None,
    ),
    (
        "fec0::/10",
        "deprecated site-local (RFC 3879)",
        NotGlobal,
        None,
    ),
    ("ff00::/8", "multicast (RFC 4291)", NotGlobal, None),
    // The special-purpose registry, with the IPv4-carrying forms.
    ("::/128", "unspecified address (RFC 4291)", NotGlobal, None),
    ("::1/128", "loopback (RFC 4291)", NotGlobal, None),
    (
        "::/96",
        "deprecated IPv4-compatible (RFC 4291)",
        NotGlobal,
        Some(Carries::Last32),
    ),
    // The registry marks it not globally reachable because it never travels as
    // IPv6: a socket connecting to one connects over IPv4 to the address carried.
    (
        "::ffff:0:0/96",
        "IPv4-mapped (RFC 4291)",
        AsCarried,
        Some(Carries::Last32),
    ),
    (
        "::ffff:0:0:0/96",
        "obsolete IPv4-translated (RFC 2765)",
        NotGlobal,
        Some(Carries::Last32),
    ),
    (
        "64:ff9b::/96",
        "IPv4-IPv6 translation (RFC 6052)",
        Global,
        Some(Carries::Last32),
    ),
    // Operators choose where a local-use prefix carries IPv4 (RFC 6052 allows
    // several prefix lengths), so there is none to read: the block is refused.
    (
        "64:ff9b:1::/48",
        "local-use IPv4-IPv6 translation (RFC 8215)",
        NotGlobal,
        None,
    ),
    ("100::/64", "discard-only (RFC 6666)", NotGlobal, None),
    (
        "2001::/23",
        "IETF protocol assignments (RFC 2928)",
        NotGlobal,
        None,
    ),
    (
        "2001::/32",
        "Teredo (RFC 4380)",
        AsCarried,
        Some(Carries::Teredo),
    ),
    (
        "2001:1::1/128",
        "port control protocol anycast (RFC 7723)",
        Anycast,
        None,
    ),
    ("2001:1::2/128", "TURN anycast (RFC 8155)", Anycast, None),
    (
        "2001:1::3/128",
        "DNS-SD service registration anycast (RFC 9665)",
        Anycast,
        None,
    ),
    ("2001:2::/48", "benchmarking (RFC 5180)", NotGlobal, None),
    ("2001:3::/32", "AMT relay anycast (RFC 7450)", Anycast, None),
    (
        "2001:4:112::/48",
        "AS112-v6 anycast (RFC 7535)",
        Anycast,
        None,
    ),
    (
        "2001:10::/28",
        "deprecated ORCHID (RFC 4843)",
        NotGlobal,
        None,
    ),
    ("2001:20::/28", "ORCHIDv2 (RFC 7343)", Global, None),
    (
        "2001:30::/28",
        "drone remote ID entity tags (RFC 9374)",
        Global,
        None,
    ),
    ("2001:db8::/32", "documentation (RFC 3849)", NotGlobal, None),
    (
        "2002::/16",
        "6to4 (RFC 3056)",
        AsCarried,
        Some(Carries::SixToFour),
    ),
    (
        "2620:4f:8000::/48",
        "AS112 direct delegation anycast (RFC 7534)",
        Anycast,
        None,
    ),
    ("3fff::/20", "documentation (RFC 9637)", NotGlobal, None),
    (
        "5f00::/16",
        "segment routing SIDs (RFC 9602)",
        NotGlobal,
        None,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of the block that refuses `address`, with the carried IPv4 address
    /// if that is what is internal; `None` if it may be reached.
    fn verdict(address: &str) -> Option<String> {
        let ip: IpAddr = address.parse().expect(address);
        internal(ip).map(|why| match why.carried_by {
            Some((_, carried)) => format!("{carried}: {}", why.block.name),
            None => why.block.name.to_string(),
        })
    }

    fn check(cases: &[(&str, Option<&str>)]) {
        let mut wrong = Vec::new();
        for &(address, expected) in cases {
            let got = verdict(address);
            let fits = match (&got, expected) {
                (None, None) => true,
                (Some(got), Some(expected)) => got.contains(expected),
                _ => false,
            };
            if !fits {
                wrong.push(format!("{address}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The addresses issue 13 found accepted without the allow-list.
    #[test]
    fn the_addresses_found_accepted_are_refused() {
        check(&[
            // IPv4-translated ::ffff:0:127.0.0.1.
            ("::ffff:0:7f00:1", Some("127.0.0.1: loopback")),
            ("fec0::1", Some("site-local")),
            // Teredo through a public server (65.54.227.120) to client 127.0.0.1.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Some("127.0.0.1: loopback"),
            ),
            ("192.88.99.1", Some("6to4 relay anycast")),
            ("100::1", Some("discard-only")),
        ]);
    }

    /// A sample of every IPv4 block, its edges, and addresses beside them.
    #[test]
    fn ipv4_blocks_are_judged_by_the_registry() {
        check(&[
            ("0.0.0.0", Some("this host")),
            ("0.255.255.255", Some("this network")),
            ("10.0.0.1", Some("private-use")),
            ("10.255.255.255", Some("private-use")),
            ("100.64.0.1", Some("shared address space")),
            ("100.127.255.255", Some("shared address space")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("172.16.0.1", Some("private-use")),
            ("172.31.255.255", Some("private-use")),
            ("192.0.0.1", Some("service continuity")),
            ("192.0.0.8", Some("dummy")),
            ("192.0.0.9", Some("port control protocol anycast")),
            ("192.0.0.10", Some("TURN anycast")),
            ("192.0.0.11", Some("IETF protocol assignments")),
            ("192.0.0.170", Some("NAT64/DNS64 discovery")),
            ("192.0.0.171", Some("NAT64/DNS64 discovery")),
            ("192.0.2.1", Some("TEST-NET-1")),
            ("192.31.196.1", Some("AS112-v4")),
            ("192.52.193.1", Some("AMT relay")),
            ("192.88.99.2", Some("6to4 relay anycast")),
            ("192.168.1.1", Some("private-use")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.51.100.7", Some("TEST-NET-2")),
            ("203.0.113.9", Some("TEST-NET-3")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.254", Some("reserved")),
            ("255.255.255.255", Some("limited broadcast")),
            // Public, some just beside a block.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.0", None),
            ("192.88.98.255", None),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
        ]);
    }

    /// A sample of every IPv6 block and of every IPv4-carrying form.
    #[test]
    fn ipv6_blocks_are_judged_by_the_registry() {
        check(&[
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::2", Some("0.0.0.2: \"this network")),
            ("::1:0:0", Some("reserved by the IETF")),
            ("100::", Some("discard-only")),
            ("100::ffff:ffff:ffff:ffff", Some("discard-only")),
            ("100:0:0:1::1", Some("reserved by the IETF")),
            ("200::1", Some("reserved")),
            ("400::1", Some("reserved")),
            ("800::1", Some("reserved")),
            ("1000::1", Some("reserved")),
            ("1fff:ffff::1", Some("reserved")),
            ("4000::1", Some("reserved")),
            ("6000::1", Some("reserved")),
            ("8000::1", Some("reserved")),
            ("a000::1", Some("reserved")),
            ("c000::1", Some("reserved")),
            ("e000::1", Some("reserved")),
            ("f000::1", Some("reserved")),
            ("f800::1", Some("reserved")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fe00::1", Some("reserved")),
            ("fe80::1", Some("link-local")),
            ("febf:ffff::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("feff::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("ff0e::1", Some("multicast")),
            ("2001::", Some("0.0.0.0: \"this host")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:1::1", Some("port control protocol anycast")),
            ("2001:1::2", Some("TURN anycast")),
            ("2001:1::3", Some("DNS-SD service registration anycast")),
            ("2001:1::4", Some("IETF protocol assignments")),
            ("2001:3::1", Some("AMT relay anycast")),
            ("2001:4:112::1", Some("AS112-v6")),
            ("2001:5::1", Some("IETF protocol assignments")),
            ("2001:10::1", Some("deprecated ORCHID")),
            ("2001:1ff::1", Some("IETF protocol assignments")),
            ("2001:db8::1", Some("documentation")),
            ("2620:4f:8000::1", Some("AS112 direct delegation")),
            ("3fff::1", Some("documentation")),
            ("3fff:fff::1", Some("documentation")),
            ("5f00::1", Some("segment routing")),
            ("5eff::1", Some("reserved")),
            ("5f01::1", Some("reserved")),
            // Public, some just beside a block.
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2000::1", None),
            ("2001:200::1", None),
            ("2001:20::1", None),
            ("2001:30::1", None),
            ("2001:db7:ffff::1", None),
            ("2001:db9::1", None),
            ("2620:4f:8001::1", None),
            ("3fff:1000::1", None),
            ("3fff:ffff::1", None),
        ]);
    }

    /// IPv6 addresses carrying IPv4: the carried address is judged as IPv4, and the
    /// wrapper by its own block.
    #[test]
    fn carried_ipv4_addresses_are_judged_as_ipv4() {
        check(&[
            // IPv4-mapped: the IPv4 address alone decides.
            ("::ffff:127.0.0.1", Some("127.0.0.1: loopback")),
            ("::ffff:10.0.0.1", Some("10.0.0.1: private-use")),
            ("::ffff:192.88.99.1", Some("192.88.99.1: deprecated 6to4")),
            ("::ffff:8.8.8.8", None),
            ("::ffff:93.184.216.34", None),
            // IPv4-translated and IPv4-compatible: obsolete wrappers, refused whatever
            // they carry.
            ("::ffff:0:10.0.0.1", Some("10.0.0.1: private-use")),
            ("::ffff:0:8.8.8.8", Some("IPv4-translated")),
            ("::127.0.0.1", Some("127.0.0.1: loopback")),
            ("::8.8.8.8", Some("IPv4-compatible")),
            // NAT64's well-known prefix is global; what it carries decides.
            ("64:ff9b::7f00:1", Some("127.0.0.1: loopback")),
            ("64:ff9b::a9fe:a9fe", Some("169.254.169.254: link-local")),
            ("64:ff9b::c0a8:1", Some("192.168.0.1: private-use")),
            ("64:ff9b::808:808", None),
            // Outside the /96, the well-known prefix's /64 is reserved space.
            ("64:ff9b:0:0:1::808:808", Some("reserved by the IETF")),
            // The local-use prefix is refused whatever it carries.
            (
                "64:ff9b:1::808:808",
                Some("local-use IPv4-IPv6 translation"),
            ),
            (
                "64:ff9b:1:ffff::a00:1",
                Some("local-use IPv4-IPv6 translation"),
            ),
            // 6to4 carries IPv4 in bits 16 to 47.
            ("2002:c0a8:101::1", Some("192.168.1.1: private-use")),
            ("2002:7f00:1::", Some("127.0.0.1: loopback")),
            ("2002:a00:1:1::1", Some("10.0.0.1: private-use")),
            ("2002:c058:6301::1", Some("192.88.99.1: deprecated 6to4")),
            ("2002:808:808::1", None),
            // Teredo: server 65.54.227.120, client the NOT of the last 32 bits.
            (
                "2001:0:4136:e378:8000:63bf:f5ff:fffe",
                Some("10.0.0.1: private-use"),
            ),
            (
                "2001:0:4136:e378:8000:63bf:5601:5601",
                Some("169.254.169.254: link-local"),
            ),
            // The example of RFC 4380 has a documentation client, 192.0.2.45.
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some("192.0.2.45: documentation"),
            ),
            // A server in private space.
            (
                "2001:0:a00:1:8000:63bf:f7f7:f7f7",
                Some("10.0.0.1: private-use"),
            ),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
        ]);
    }

    #[test]
    fn the_tables_are_consistent() {
        for block in IPV4.iter() {
            assert!(block.network.network.is_ipv4(), "{block:?}");
            assert_eq!(block.carries, None, "{block:?}");
            assert_ne!(block.reach, AsCarried, "{block:?}");
        }
        for block in IPV6.iter() {
            assert!(block.network.network.is_ipv6(), "{block:?}");
            if block.reach == AsCarried {
                assert!(block.carries.is_some(), "{block:?} carries nothing");
            }
        }
        // Every IPv6 address falls in a row: the address space rows tile it.
        for first in 0..=u16::MAX {
            let ip = Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 1);
            assert!(most_specific(&IPV6, IpAddr::V6(ip)).is_some(), "{ip}");
        }
    }
}
