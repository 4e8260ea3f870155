//! The one policy for every request twinlink sends on its own (notifications, @context fetches,
//! requests to context sources, the JWKS), so that a URL given by a client cannot make the broker
//! reach what only the broker can reach: link-local addresses and cloud metadata services are
//! always refused; loopback and private addresses are refused under `--outbound private=deny`
//! (the production default of the container image and chart) and allowed under the zero-setup
//! local default; `--outbound-allow` opens exceptions for the latter.
//!
//! Addresses are checked after DNS resolution (a resolver of the HTTP clients drops refused
//! addresses, so a name that resolves to one, or a redirect to one, fails too), and URLs with a
//! literal address before sending ([`Client::request`]); creation of a subscription or a
//! registration checks its endpoint at once ([`Policy::admit`]).

use crate::error::{NgsiError, NgsiResult};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Cloud metadata services outside the link-local range (which is refused as a whole): Alibaba
/// Cloud's and Oracle Cloud's legacy one.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
/// AWS's metadata service over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// How long the check of a new endpoint waits for DNS before letting it pass (its deliveries are
/// checked again).
const ADMIT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// Most redirects a client that follows them follows.
const MAX_REDIRECTS: usize = 10;

/// A redirect the policy refused to follow: its own error type, so that the caller can tell it
/// (a client's URL leading to a refused address, 400) from a server that failed (504).
#[derive(Debug)]
pub struct RedirectRefused(pub String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

impl RedirectRefused {
    /// The refusal behind a failed request, if a refused redirect made it fail.
    pub fn of(error: &reqwest::Error) -> Option<&RedirectRefused> {
        std::error::Error::source(error)?.downcast_ref()
    }
}

/// The outbound policy.
#[derive(Debug, Clone)]
pub struct Policy {
    deny_private: bool,
    allow: Vec<(IpAddr, u8)>,
}

impl Default for Policy {
    /// The zero-setup local default: private and loopback addresses allowed.
    fn default() -> Self {
        Policy {
            deny_private: false,
            allow: Vec::new(),
        }
    }
}

/// What an address is, for the policy.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Public,
    /// Loopback, private (RFC 1918, unique local), shared (100.64/10) or unspecified.
    Private,
    /// Link-local or a cloud metadata service.
    Forbidden,
}

impl Policy {
    /// The policy of `--outbound` (`private=deny` or `private=allow`; None: allow) and
    /// `--outbound-allow` (addresses and CIDR blocks).
    pub fn new(mode: Option<&str>, allow: &[String]) -> Result<Policy, String> {
        let deny_private = match mode.map(str::trim) {
            None | Some("private=allow") => false,
            Some("private=deny") => true,
            Some(other) => {
                return Err(format!(
                    "--outbound {other}: expected private=deny or private=allow"
                ))
            }
        };
        let allow = allow
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(parse_block)
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            deny_private,
            allow,
        })
    }

    /// Why this address may not be reached, if it may not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        match kind(ip) {
            Kind::Public => Ok(()),
            Kind::Forbidden => Err(format!(
                "{ip} is a link-local or cloud metadata address, which twinlink never sends to"
            )),
            Kind::Private if !self.deny_private || self.allowed(ip) => Ok(()),
            Kind::Private => Err(format!(
                "{ip} is a loopback or private address, which twinlink does not send to under \
                 --outbound private=deny (--outbound-allow opens exceptions)"
            )),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow
            .iter()
            .any(|&(block, prefix)| in_block(ip, block, prefix))
    }

    /// Why the URL may not be reached without resolving it: its host is a refused literal
    /// address.
    pub fn check_literal(&self, url: &url::Url) -> Result<(), String> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// The check of a new endpoint (of a subscription, a registration) or a context URL: its
    /// literal address, or every address its name resolves to now, may be reached. A name that
    /// does not resolve (yet) passes: what it resolves to is checked at each request. 400
    /// BadRequestData otherwise, saying why.
    pub async fn admit(&self, url: &str) -> NgsiResult<()> {
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(());
        };
        let refused = |why: String| {
            NgsiError::bad_data(format!(
                "the URL {url} is refused by the outbound policy: {why}"
            ))
        };
        self.check_literal(&parsed).map_err(refused)?;
        let Some(url::Host::Domain(name)) = parsed.host() else {
            return Ok(());
        };
        let port = parsed.port_or_known_default().unwrap_or(0);
        let lookup = tokio::net::lookup_host((name, port));
        if let Ok(Ok(addrs)) = tokio::time::timeout(ADMIT_DNS_TIMEOUT, lookup).await {
            for addr in addrs {
                self.check_ip(addr.ip())
                    .map_err(|why| refused(format!("{name} resolves to {why}")))?;
            }
        }
        Ok(())
    }
}

/// An HTTP client whose every connection obeys the policy.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl Client {
    /// A client built from `builder` (timeouts, headers) with the policy's resolver; redirects
    /// are followed (each target checked) only when `follow_redirects`.
    pub fn new(
        policy: &Policy,
        builder: reqwest::ClientBuilder,
        follow_redirects: bool,
    ) -> Result<Client, String> {
        let policy = Arc::new(policy.clone());
        let redirects = if follow_redirects {
            let checker = policy.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if let Err(why) = checker.check_literal(attempt.url()) {
                    let refused = format!(
                        "the redirect to {} is refused by the outbound policy: {why}",
                        attempt.url()
                    );
                    attempt.error(RedirectRefused(refused))
                } else {
                    attempt.follow()
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        let http = builder
            .dns_resolver(Arc::new(Resolver(policy.clone())))
            .redirect(redirects)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client { http, policy })
    }

    /// A request to `url`, unless its host is a refused literal address (names are checked
    /// when they are resolved).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::RequestBuilder, String> {
        self.check_literal(&url)?;
        Ok(self.http.request(method, url))
    }

    /// Why this client will not reach `url`, judged without resolving it (its host is a refused
    /// literal address): for configured URLs, refused at start-up rather than at first use.
    pub fn check_literal(&self, url: &url::Url) -> Result<(), String> {
        self.policy
            .check_literal(url)
            .map_err(|why| format!("refused by the outbound policy: {why}"))
    }
}

/// The DNS resolver of the guarded clients: the system's, without the refused addresses.
struct Resolver(Arc<Policy>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                if let Some(why) = refusal {
                    let message =
                        format!("refused by the outbound policy: {host} resolves to {why}");
                    return Err(message.into());
                }
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// An IPv4 address written as IPv6 (mapped, or NAT64's well-known prefix) as the IPv4 address
/// it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

fn kind(ip: IpAddr) -> Kind {
    match ip {
        IpAddr::V4(a) => {
            if a.is_link_local() || METADATA_V4.contains(&a) {
                Kind::Forbidden
            } else if a.is_loopback()
                || a.is_private()
                || a.is_unspecified()
                || in_block(ip, IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10)
            {
                Kind::Private
            } else {
                Kind::Public
            }
        }
        IpAddr::V6(a) => {
            if a.is_unicast_link_local() || METADATA_V6.contains(&a) {
                Kind::Forbidden
            } else if a.is_loopback() || a.is_unspecified() || a.is_unique_local() {
                Kind::Private
            } else {
                Kind::Public
            }
        }
    }
}

/// An address or a CIDR block of `--outbound-allow`.
fn parse_block(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("--outbound-allow {text}: expected an IP address or a CIDR block");
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (
            ip.parse::<IpAddr>().map_err(|_| bad())?,
            Some(prefix.parse::<u8>().map_err(|_| bad())?),
        ),
        None => (text.parse::<IpAddr>().map_err(|_| bad())?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        Some(p) if p > max => Err(bad()),
        p => Ok((canonical(ip), p.unwrap_or(max))),
    }
}

fn in_block(ip: IpAddr, block: IpAddr, prefix: u8) -> bool {
    match (ip, block) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_and_metadata_are_always_refused() {
        let open = Policy::new(Some("private=allow"), &["169.254.0.0/16".into()]).unwrap();
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(open.check_ip(ip(refused)).is_err(), "{refused}");
        }
        assert!(open.check_ip(ip("127.0.0.1")).is_ok());
        assert!(open.check_ip(ip("10.1.2.3")).is_ok());
    }

    #[test]
    fn private_addresses_are_refused_in_production_but_for_the_allow_list() {
        let production =
            Policy::new(Some("private=deny"), &["10.20.0.0/16".into(), "::1".into()]).unwrap();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "fc00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(production.check_ip(ip(refused)).is_err(), "{refused}");
        }
        for allowed in ["10.20.3.4", "::1", "93.184.216.34", "2001:db8::1"] {
            assert!(production.check_ip(ip(allowed)).is_ok(), "{allowed}");
        }
        assert!(Policy::new(Some("private=maybe"), &[]).is_err());
        assert!(Policy::new(None, &["10.0.0.0/33".into()]).is_err());
    }
}
