//! Fetching and decoding images from outsiders, defensively.
//!
//! URLs: http(s) only; loopback, private, link-local, multicast and other non-public
//! addresses are refused (unless `fetch.allow_private`, or the URL's host is listed in
//! `fetch.allow_private_hosts`), checked on the resolved addresses (so DNS cannot point us
//! inward) and again on every redirect hop, each hop on its own host (an allowed first host
//! does not make its redirect targets allowed). No proxy is used: a proxy would resolve names
//! itself, out of our resolver's sight. Bodies are capped in bytes and time. Decoding trusts
//! magic bytes, not names or headers, and refuses images whose declared size exceeds the pixel
//! limits before allocating (decompression bombs).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::FetchConfig;
use crate::{FetchError as Error, FetchResult as Result};

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // 6to4 embeds an IPv4 address that relays may route to.
            if s[0] == 0x2002 {
                let v4 =
                    Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || s[..6].iter().all(|&x| x == 0) // IPv4-compatible (deprecated)
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // discard-only
                || (s[0] == 0x2001 && s[1] == 0) // Teredo (embeds a hidden IPv4 peer)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 (may map to private v4)
        }
    }
}

/// Which hosts may be non-public: all of them (`allow_private`) or those listed. A listed
/// name is matched as written in the URL, not by what it resolves to.
#[derive(Debug, Clone, Default)]
struct Trust {
    all: bool,
    hosts: Arc<Vec<String>>,
}

/// A host as compared against `allow_private_hosts`: lowercase, no brackets or trailing dot,
/// IP addresses in canonical form.
fn normal_host(raw: &str) -> String {
    let h = raw
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match h.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h,
    }
}

impl Trust {
    fn new(cfg: &FetchConfig) -> Self {
        Self {
            all: cfg.allow_private,
            hosts: Arc::new(
                cfg.allow_private_hosts
                    .iter()
                    .map(|h| normal_host(h))
                    .filter(|h| !h.is_empty())
                    .collect(),
            ),
        }
    }

    fn allows(&self, host: &str) -> bool {
        self.all || (!self.hosts.is_empty() && self.hosts.contains(&normal_host(host)))
    }
}

/// A DNS resolver that drops non-public addresses (unless the name is trusted), so the
/// connection can only go to what was checked.
struct SafeResolver {
    trust: Trust,
}

impl Resolve for SafeResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.trust.allows(name.as_str());
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found,
                // EAI_NONAME / EAI_NODATA: the name does not exist, which retrying won't change
                // (a "temporary failure" stays an ordinary, retried error).
                Err(e) if is_no_such_host(&e.to_string()) => {
                    return Err(format!("no such host: {host}").into())
                }
                Err(e) => return Err(e.into()),
            };
            let addrs: Vec<SocketAddr> = found.filter(|a| allow || is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(format!("refused: {host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether a resolver error says the name does not exist (glibc's EAI_NONAME and EAI_NODATA).
fn is_no_such_host(message: &str) -> bool {
    [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Checks what can be checked before connecting: the scheme and literal addresses (names are
/// checked by [`SafeResolver`] once resolved).
fn check_url(url: &url::Url, trust: &Trust) -> std::result::Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "refused: scheme {} (only http and https)",
            url.scheme()
        ));
    }
    let ip = match url.host() {
        None => return Err("refused: URL without host".into()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if is_public(ip) || trust.allows(&ip.to_string()) {
        Ok(())
    } else {
        Err(format!("refused: non-public address {ip}"))
    }
}

/// An HTTP client configured with the fetch limits. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cfg: Arc<FetchConfig>,
    trust: Trust,
}

impl Fetcher {
    pub fn new(cfg: &FetchConfig) -> Result<Self> {
        let trust = Trust::new(cfg);
        let policy_trust = trust.clone();
        let max_redirects = cfg.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            // `previous` holds the URLs already requested, the first one included.
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("refused: more than {max_redirects} redirects"));
            }
            match check_url(attempt.url(), &policy_trust) {
                Ok(()) => attempt.follow(),
                Err(e) => {
                    let e = format!("redirect to {} {e}", attempt.url());
                    attempt.error(e)
                }
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(SafeResolver {
                trust: trust.clone(),
            }))
            .no_proxy()
            .redirect(policy)
            // A backstop only: `fetch_image` enforces the total deadline itself.
            .timeout(Duration::from_millis(cfg.timeout_ms.saturating_add(1_000)))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(5_000)))
            .user_agent(concat!("hashtale/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(Self {
            client,
            cfg: Arc::new(cfg.clone()),
            trust,
        })
    }

    /// The underlying client (feeds and webhooks reuse the same safety rules).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Checks a URL before any request (scheme, literal addresses).
    pub fn check(&self, raw: &str) -> Result<url::Url> {
        // The URL parser forgives an empty authority (`http:///img.jpg` becomes host `img.jpg`);
        // a URL must name its host itself.
        let authority = raw
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if authority.is_some_and(|a| a.rsplit('@').next().unwrap_or("").is_empty()) {
            return Err(Error::BadInput("refused: URL without host".into()));
        }
        let url = url::Url::parse(raw).map_err(|e| Error::BadInput(format!("bad URL: {e}")))?;
        check_url(&url, &self.trust).map_err(Error::BadInput)?;
        Ok(url)
    }

    /// Downloads an image body: capped size, image (or unspecified) content type, and one
    /// total deadline (`timeout_ms`) for everything: resolving, connecting, every redirect
    /// hop and the body (a server dripping a byte a second is cut off at the deadline).
    pub async fn fetch_image(&self, raw: &str) -> Result<Vec<u8>> {
        let url = self.check(raw)?;
        let deadline = Duration::from_millis(self.cfg.timeout_ms);
        match tokio::time::timeout(deadline, self.fetch_checked(url)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Transient(format!(
                "fetch failed: no complete answer within the {} ms deadline",
                self.cfg.timeout_ms
            ))),
        }
    }

    async fn fetch_checked(&self, url: url::Url) -> Result<Vec<u8>> {
        let mut resp = self.client.get(url).send().await.map_err(classify)?;
        let status = resp.status();
        if !status.is_success() {
            let msg = format!("HTTP {status} for image");
            return Err(
                if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                    Error::Transient(msg)
                } else {
                    Error::BadInput(msg)
                },
            );
        }
        if let Some(ct) = resp.headers().get(reqwest::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !(ct.starts_with("image/")
                || ct.starts_with("application/octet-stream")
                || ct.is_empty())
            {
                return Err(Error::BadInput(format!("not an image: content type {ct}")));
            }
        }
        self.read_capped(&mut resp).await
    }

    async fn read_capped(&self, resp: &mut reqwest::Response) -> Result<Vec<u8>> {
        read_body_capped(resp, self.cfg.max_bytes, "image").await
    }
}

/// Reads a response body chunk by chunk and stops as soon as it passes `max` bytes, whether or
/// not the server sent a Content-Length (a chunked body is never read whole first).
pub async fn read_body_capped(
    resp: &mut reqwest::Response,
    max: u64,
    what: &str,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(Error::BadInput(format!("{what} larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(Error::BadInput(format!("{what} larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn classify(e: reqwest::Error) -> Error {
    // Refusals by our resolver or redirect policy are final, and so is a host that does not
    // exist; network trouble is retried.
    // Without the URL: it can carry credentials, and the caller knows which URL it was.
    let e = e.without_url();
    let text = format!("{e}: {}", source_chain(&e));
    if text.contains("refused:")
        || text.contains("no such host:")
        || e.is_redirect()
        || e.is_builder()
    {
        Error::BadInput(format!("fetch failed: {text}"))
    } else {
        Error::Transient(format!("fetch failed: {text}"))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{bind, serve, Reply};
    use image::ImageFormat;
    use std::io::Cursor;

    #[test]
    fn public_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "fec0::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2002:808:808::1"] {
            assert!(is_public(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn refuses_literal_private_urls_and_other_schemes() {
        let f = Fetcher::new(&FetchConfig::default()).unwrap();
        assert!(f.check("http://127.0.0.1/x.png").is_err());
        assert!(f.check("http://[::1]/x.png").is_err());
        assert!(f.check("http://169.254.169.254/latest").is_err());
        assert!(f.check("file:///etc/passwd").is_err());
        assert!(f.check("https://example.com/x.png").is_ok());
        // An empty authority is not read as a host named by the path.
        for raw in [
            "http:///img.jpg",
            "https:///example.com/x.png",
            "http://user@/x.png",
        ] {
            let err = f.check(raw).unwrap_err().to_string();
            assert!(err.contains("without host"), "{raw}: {err}");
        }
    }

    /// A name that does not exist is a final error, not one to retry.
    #[tokio::test]
    async fn no_such_host_is_not_transient() {
        let f = Fetcher::new(&FetchConfig::default()).unwrap();
        let err = f
            .fetch_image("http://no-such-host.invalid/x.png")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadInput(_)), "{err:?}");
        assert!(err.to_string().contains("no such host"), "{err}");
        assert!(is_no_such_host(
            "failed to lookup address information: Name or service not known"
        ));
        assert!(!is_no_such_host(
            "failed to lookup address information: Temporary failure in name resolution"
        ));
    }

    fn fetcher(allow_private_hosts: &[&str]) -> Fetcher {
        Fetcher::new(&FetchConfig {
            allow_private_hosts: allow_private_hosts.iter().map(|s| s.to_string()).collect(),
            timeout_ms: 5_000,
            ..FetchConfig::default()
        })
        .unwrap()
    }

    fn assert_refused(r: Result<Vec<u8>>, needle: &str) {
        let err = r.expect_err("the fetch must be refused");
        assert!(matches!(err, Error::BadInput(_)), "not final: {err:?}");
        let text = err.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains(needle), "{needle} not in {text}");
    }

    #[tokio::test]
    async fn redirects_to_non_public_addresses_are_refused() {
        let img = png(4, 4);
        // A second server on another loopback address (all of 127/8 is loopback on Linux): a
        // redirect there would succeed if the hop were not checked.
        let (second, second_addr) = bind("127.0.0.2").await;
        serve(second, vec![("/img.png", Reply::Ok(img.clone()))]);
        let (first, addr) = bind("127.0.0.1").await;
        let port = addr.port();
        serve(
            first,
            vec![
                ("/img.png", Reply::Ok(img.clone())),
                ("/to-self", Reply::Redirect("/img.png".into())),
                (
                    "/to-other-loopback",
                    Reply::Redirect(format!("http://{second_addr}/img.png")),
                ),
                (
                    "/to-localhost",
                    Reply::Redirect(format!("http://localhost:{port}/img.png")),
                ),
                (
                    "/to-ipv6-loopback",
                    Reply::Redirect(format!("http://[::1]:{port}/img.png")),
                ),
                (
                    "/to-metadata",
                    Reply::Redirect("http://169.254.169.254/latest/meta-data/".into()),
                ),
                (
                    "/to-private",
                    Reply::Redirect("http://10.0.0.1/x.png".into()),
                ),
                ("/to-file", Reply::Redirect("file:///etc/passwd".into())),
            ],
        );
        let base = format!("http://127.0.0.1:{port}");
        // Only the first host is allowed to be private.
        let f = fetcher(&["127.0.0.1"]);
        assert_eq!(
            f.fetch_image(&format!("{base}/img.png")).await.unwrap(),
            img
        );
        assert_eq!(
            f.fetch_image(&format!("{base}/to-self")).await.unwrap(),
            img
        );
        for (path, needle) in [
            ("/to-other-loopback", "non-public address 127.0.0.2"),
            ("/to-localhost", "localhost has no public address"),
            ("/to-ipv6-loopback", "non-public address ::1"),
            ("/to-metadata", "non-public address 169.254.169.254"),
            ("/to-private", "non-public address 10.0.0.1"),
        ] {
            assert_refused(f.fetch_image(&format!("{base}{path}")).await, needle);
        }
        // A `file:` location is not even resolved as a redirect: the 302 itself is the answer.
        let err = f.fetch_image(&format!("{base}/to-file")).await.unwrap_err();
        assert!(matches!(err, Error::BadInput(_)), "{err:?}");
        assert!(err.to_string().contains("302"), "{err}");
        // The allowed host's redirect targets are not allowed as first hops either.
        assert_refused(
            f.fetch_image(&format!("http://{second_addr}/img.png"))
                .await,
            "non-public address 127.0.0.2",
        );
        // The refusals above come from the checks: with every address allowed, the same
        // loopback redirects succeed.
        let open = Fetcher::new(&FetchConfig {
            allow_private: true,
            ..FetchConfig::default()
        })
        .unwrap();
        for path in ["/to-other-loopback", "/to-localhost"] {
            assert_eq!(
                open.fetch_image(&format!("{base}{path}")).await.unwrap(),
                img
            );
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_after_dns() {
        let img = png(2, 2);
        let (l, addr) = bind("127.0.0.1").await;
        serve(l, vec![("/img.png", Reply::Ok(img.clone()))]);
        let url = format!("http://localhost:{}/img.png", addr.port());
        // The URL names no address, so only the resolved addresses can refuse it.
        assert!(fetcher(&[]).check(&url).is_ok());
        assert_refused(
            fetcher(&[]).fetch_image(&url).await,
            "localhost has no public address",
        );
        // Allowing its address does not allow a name that resolves to it…
        assert_refused(
            fetcher(&["127.0.0.1"]).fetch_image(&url).await,
            "localhost has no public address",
        );
        // …allowing the name does (so the server was reachable all along).
        assert_eq!(
            fetcher(&["LOCALHOST."]).fetch_image(&url).await.unwrap(),
            img
        );
    }

    #[tokio::test]
    async fn caps_redirects_size_and_time() {
        let img = png(8, 8);
        let (l, addr) = bind("127.0.0.1").await;
        serve(
            l,
            vec![
                ("/img.png", Reply::Ok(img.clone())),
                ("/hop1", Reply::Redirect("/hop2".into())),
                ("/hop2", Reply::Redirect("/img.png".into())),
                ("/big", Reply::Ok(vec![0u8; 4096])),
                ("/big-unsized", Reply::Unsized(vec![0u8; 4096])),
                ("/slow", Reply::Hang),
            ],
        );
        let base = format!("http://{addr}");
        let cfg = |f: &dyn Fn(&mut FetchConfig)| {
            let mut c = FetchConfig {
                allow_private_hosts: vec!["127.0.0.1".into()],
                ..FetchConfig::default()
            };
            f(&mut c);
            Fetcher::new(&c).unwrap()
        };
        let two = cfg(&|c| c.max_redirects = 2);
        assert_eq!(two.fetch_image(&format!("{base}/hop1")).await.unwrap(), img);
        let one = cfg(&|c| c.max_redirects = 1);
        assert_refused(
            one.fetch_image(&format!("{base}/hop1")).await,
            "more than 1 redirects",
        );
        let small = cfg(&|c| c.max_bytes = 1000);
        for path in ["/big", "/big-unsized"] {
            let err = small
                .fetch_image(&format!("{base}{path}"))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("larger than 1000"),
                "{path}: {err}"
            );
        }
        let hasty = cfg(&|c| c.timeout_ms = 300);
        let t = std::time::Instant::now();
        let err = hasty
            .fetch_image(&format!("{base}/slow"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "a timeout is transient: {err:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }
}
