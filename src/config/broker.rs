//! The MQTT broker address (`mqtt.url`, `--mqtt`) and whether this build can reach it. It lives
//! with the config, which checks it; `mqtt` and the collector use it from here.

use std::fmt;

/// A broker address from `mqtt.url` or `--mqtt`: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a url; the error says what a valid one looks like.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let expected = "expected mqtt://host:port or mqtts://host:port";
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!("{url:?} is not an MQTT url: {expected}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "{url:?}: {expected} (no path, user or query; see mqtt.username)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        // "[v6]:port", "[v6]", "host:port" or "host".
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("{url:?}: {expected}"))?,
                    ),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host: {expected}"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(format!(
                        "{url:?}: the port must be a number from 1 to 65535"
                    ));
                }
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Whether this build can serve `url`: MQTT and TLS are cargo features a router build may leave
/// out.
pub fn check_build(url: &BrokerUrl) -> Result<(), String> {
    if !cfg!(feature = "mqtt") {
        return Err(
            "this edgewatch was built without MQTT support (cargo feature `mqtt`); \
                    leave mqtt.url empty or install a build with MQTT"
                .to_string(),
        );
    }
    if url.tls && !cfg!(feature = "tls") {
        return Err(format!(
            "{url} needs TLS but this edgewatch was built without it (cargo feature `tls`); \
             use an mqtt:// url or a build with TLS"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = BrokerUrl::parse("mqtt://broker.lan:1884").unwrap();
        assert_eq!(
            u,
            BrokerUrl {
                tls: false,
                host: "broker.lan".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtts://10.0.0.1").unwrap().port, 8883);
        assert_eq!(BrokerUrl::parse("mqtt://h/").unwrap().port, 1883);
        let v6 = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
        assert_eq!(v6.to_string(), "mqtt://[::1]:1999");
        for bad in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h:1",
            "mqtt://h:1/topic",
            "h:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
