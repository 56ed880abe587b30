//! The crawler's HTTP client, safe against server-side request forgery: only http and
//! https, every address a name resolves to must be public (checked by the resolver
//! reqwest connects with, so the checked address is the one used), IP literals in any
//! spelling are checked too, redirects are followed by hand and re-checked at every
//! hop, and bodies are capped. The operator may allow private targets (intranets,
//! tests).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve};
use reqwest::Url;

/// Most redirects followed for one fetch.
const MAX_REDIRECTS: usize = 3;
const USER_AGENT: &str = "omnigate-crawler/0.1";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("too many redirects")]
    Redirects,
    #[error("could not fetch: {0}")]
    Transport(String),
}

/// Whether `ip` is an address the crawler must not reach unless allowed: loopback,
/// private, link-local, unspecified, shared (CGNAT), multicast, reserved, and IPv6
/// forms that carry such an IPv4 address (mapped, compatible, NAT64).
pub fn blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    // NAT64 (64:ff9b::/96) reaches whatever IPv4 address it embeds.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = s;
        return blocked_v4(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated) ::a.b.c.d
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

/// Checks a URL before it is fetched: scheme, and the host when it is an address.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused("only http and https URLs".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Refused("URLs with credentials".into()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| FetchError::Refused("URL without a host".into()))?;
    // The URL parser already turned decimal, octal and hex IPv4 spellings into dotted
    // form; IPv6 comes in brackets.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if !allow_private && blocked(ip) {
            return Err(FetchError::Refused(
                "private, loopback or link-local address".into(),
            ));
        }
    }
    if !allow_private && !matches!(url.port_or_known_default(), Some(80 | 443)) {
        return Err(FetchError::Refused("only ports 80 and 443".into()));
    }
    Ok(())
}

/// Checks `url` and, for a host name, every address it resolves to now: a clear
/// refusal before any request (the resolver below checks again at connect time).
pub async fn check_resolved(url: &Url, allow_private: bool) -> Result<(), FetchError> {
    check_url(url, allow_private)?;
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    if allow_private || host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| FetchError::Transport(format!("cannot resolve the host: {e}")))?;
    if addrs.into_iter().any(|a| blocked(a.ip())) {
        return Err(FetchError::Refused(
            "the host resolves to a private, loopback or link-local address".into(),
        ));
    }
    Ok(())
}

/// Resolves names and refuses any that has a blocked address among its answers.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| blocked(a.ip())) {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "name resolves to a private, loopback or link-local address",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        }) as Pin<Box<dyn Future<Output = _> + Send>>
    }
}

/// A fetched page.
pub struct Page {
    /// Where it was found after redirects.
    pub url: Url,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct Fetcher {
    http: reqwest::Client,
    allow_private: bool,
    max_bytes: usize,
}

impl Fetcher {
    pub fn new(allow_private: bool, timeout: Duration, max_bytes: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            http,
            allow_private,
            max_bytes,
        })
    }

    /// GETs `url`, following up to three redirects, each checked like the first.
    pub async fn get(&self, url: &Url) -> Result<Page, FetchError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            check_url(&url, self.allow_private)?;
            let mut response = self
                .http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Transport(describe(&e)))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(FetchError::Status(status.as_u16()))?;
                url = url
                    .join(location)
                    .map_err(|_| FetchError::Refused("bad redirect location".into()))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > self.max_bytes as u64)
            {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| FetchError::Transport(describe(&e)))?
            {
                if body.len() + chunk.len() > self.max_bytes {
                    return Err(FetchError::TooLarge(self.max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Page {
                url,
                content_type,
                body,
            });
        }
        Err(FetchError::Redirects)
    }
}

/// The innermost cause of a transport error (it names a refused address plainly).
fn describe(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        source.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn classifier_blocks_every_private_spelling() {
        let blocked_hosts = [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0/",
            "http://0.0.0.0/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:10.1.2.3]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
        ];
        for h in blocked_hosts {
            assert!(
                matches!(check_url(&url(h), false), Err(FetchError::Refused(_))),
                "{h} must be refused"
            );
            assert!(
                check_url(&url(h), true).is_ok(),
                "{h} allowed when the operator says so"
            );
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_literal_check() {
        for h in [
            "http://93.184.215.14/",
            "https://[2606:4700::1111]/",
            "https://example.com/page",
            "http://100.128.0.1/",
            "http://172.32.0.1/",
            "http://[64:ff9b::5db8:d70e]/",
        ] {
            assert!(check_url(&url(h), false).is_ok(), "{h}");
        }
    }

    #[test]
    fn other_schemes_ports_and_credentials_are_refused() {
        for h in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "gopher://example.com/",
            "http://example.com:8080/",
            "http://user:pw@example.com/",
        ] {
            assert!(check_url(&url(h), false).is_err(), "{h}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(resolver.resolve(name).await.is_err());
        let start = Url::parse("http://localhost/").expect("url");
        assert!(matches!(
            check_resolved(&start, false).await,
            Err(FetchError::Refused(_))
        ));
        let allowing = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(allowing.resolve(name).await.is_ok());
    }
}
