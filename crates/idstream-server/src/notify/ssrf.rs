//! Where deliveries may go. Endpoint URLs are checked when an endpoint is defined, and every
//! connection goes through [`GuardedResolver`]: a name is resolved, its addresses are checked,
//! and only checked addresses are connected to (redirects are never followed). Link-local
//! addresses (169.254.0.0/16, fe80::/10, which hold cloud metadata services) and
//! `fd00:ec2::254` are always refused; loopback, private, shared, unspecified and multicast
//! addresses are refused unless `notifications.allow_private_addresses` is set or the address
//! is in `notifications.allowed_networks`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::config::NotificationsConfig;

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn from_config(n: &NotificationsConfig) -> Result<AddressPolicy, String> {
        let allowed = n
            .allowed_networks
            .iter()
            .map(|s| s.parse::<IpNet>().map_err(|_| format!("`{s}` is not a CIDR (e.g. 10.1.0.0/16)")))
            .collect::<Result<_, _>>()?;
        Ok(AddressPolicy { allow_private: n.allow_private_addresses, allowed })
    }

    /// Why `ip` may not be reached, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => {
                (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            }
        };
        if link_local {
            return Some("a link-local or cloud metadata address (always refused)");
        }
        let private = match ip {
            IpAddr::V4(v4) => {
                v4.is_loopback()
                    || v4.is_private()
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                    || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
                    || v4.octets()[0] == 0
                    || v4.octets()[0] >= 240
            }
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xfe00) == 0xfc00
            }
        };
        if private && !self.allow_private && !self.allowed.iter().any(|n| n.contains(&ip)) {
            return Some("a loopback or private address (set notifications.allow_private_addresses or allowed_networks to allow it)");
        }
        None
    }

    /// Checks a URL's form, and its host when it is an address.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err("must be an http:// or https:// URL".into());
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("must not carry credentials (use `headers`)".into());
        }
        let host = u.host_str().ok_or("must name a host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_ip(ip)?;
        } else if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
            self.check_ip(IpAddr::V6(Ipv6Addr::LOCALHOST))?;
        }
        Ok(u)
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        match self.refusal(ip) {
            Some(why) => Err(format!("is refused: {ip} is {why}")),
            None => Ok(()),
        }
    }
}

/// Resolves a host name to socket addresses (the system resolver, or one a test injects).
pub trait NameResolver: Send + Sync + 'static {
    fn resolve(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system's resolver.
pub struct SystemResolver;

impl NameResolver for SystemResolver {
    fn resolve(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The resolver the delivery client connects through: only addresses the policy allows come
/// out; a name with none is an error, so no connection is attempted.
pub struct GuardedResolver {
    pub inner: Arc<dyn NameResolver>,
    pub policy: AddressPolicy,
}

impl GuardedResolver {
    /// The allowed addresses of `host`.
    pub async fn allowed(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let ips = self.inner.resolve(host.to_owned()).await.map_err(|e| format!("cannot resolve `{host}`: {e}"))?;
        let mut refused = None;
        let ok: Vec<IpAddr> = ips
            .into_iter()
            .filter(|ip| match self.policy.refusal(*ip) {
                Some(why) => {
                    refused = Some(format!("`{host}` resolves to {ip}, {why}"));
                    false
                }
                None => true,
            })
            .collect();
        match (ok.is_empty(), refused) {
            (true, Some(why)) => Err(format!("refused: {why}")),
            (true, None) => Err(format!("`{host}` has no address")),
            (false, _) => Ok(ok),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (inner, policy) = (self.inner.clone(), self.policy.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let g = GuardedResolver { inner, policy };
            let ips = g.allowed(&host).await.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The HTTP client of deliveries: connects only through the guarded resolver, never follows
/// redirects.
pub fn client(resolver: Arc<dyn NameResolver>, policy: AddressPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { inner: resolver, policy }))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("idstream/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .build()
        .expect("the delivery client builds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver that answers from a table and counts its calls.
    struct Table(Vec<(&'static str, IpAddr)>, AtomicUsize);

    impl NameResolver for Table {
        fn resolve(
            &self,
            host: String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let ips: Vec<IpAddr> = self.0.iter().filter(|(h, _)| *h == host).map(|(_, ip)| *ip).collect();
            Box::pin(async move { Ok(ips) })
        }
    }

    #[test]
    fn link_local_and_metadata_are_always_refused() {
        let open = AddressPolicy { allow_private: true, allowed: vec!["169.254.0.0/16".parse().unwrap()] };
        for ip in ["169.254.169.254", "fd00:ec2::254", "fe80::1", "::ffff:169.254.169.254"] {
            assert!(open.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        let strict = AddressPolicy::default();
        for ip in ["127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "::1", "fc00::1", "0.0.0.0", "100.64.0.1"] {
            assert!(strict.refusal(ip.parse().unwrap()).is_some(), "{ip}");
            assert!(open.refusal(ip.parse().unwrap()).is_none(), "{ip}");
        }
        assert!(strict.refusal("93.184.216.34".parse().unwrap()).is_none());
        let some = AddressPolicy { allow_private: false, allowed: vec!["10.1.0.0/16".parse().unwrap()] };
        assert!(some.refusal("10.1.2.3".parse().unwrap()).is_none());
        assert!(some.refusal("10.2.0.1".parse().unwrap()).is_some());
        assert!(strict.check_url("http://169.254.169.254/latest/meta-data").is_err());
        assert!(strict.check_url("http://localhost:8080/").is_err());
        assert!(strict.check_url("ftp://example.com/").is_err());
        assert!(strict.check_url("https://user:pw@example.com/").is_err());
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
    }

    /// A name that resolves to the metadata address is refused by the connecting client itself:
    /// the resolver is asked, the address is dropped, no connection is opened.
    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_never_dialled() {
        let table = Arc::new(Table(
            vec![("metadata.test", "169.254.169.254".parse().unwrap()), ("internal.test", "10.0.0.7".parse().unwrap())],
            AtomicUsize::new(0),
        ));
        let c = client(table.clone(), AddressPolicy::default());
        for host in ["metadata.test", "internal.test"] {
            let e = c.post(format!("http://{host}:9/hook")).body("{}").send().await.unwrap_err();
            let text = format!("{e:?}");
            assert!(text.contains("refused"), "{host}: {text}");
            assert!(e.is_connect() || text.contains("dns"), "{text}");
        }
        assert_eq!(table.1.load(Ordering::SeqCst), 2);
    }

    /// The checked address is the one connected to: a name the table maps to loopback reaches a
    /// real local receiver when loopback is allowed.
    #[tokio::test]
    async fn allowed_names_connect_to_the_checked_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let table = Arc::new(Table(vec![("receiver.test", "127.0.0.1".parse().unwrap())], AtomicUsize::new(0)));
        let c = client(table, AddressPolicy { allow_private: true, allowed: Vec::new() });
        let r = c.post(format!("http://receiver.test:{port}/hook")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
}
