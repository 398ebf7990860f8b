//! Turning the `[mqtt]` settings into rumqttc options (credentials, TLS, last will), and
//! connection errors into one sentence a router admin can act on.
//!
//! Files named in the config are read once here, at start-up, so a missing or unreadable file is
//! a start-up error and not a retry loop.

use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, LastWill, MqttOptions, QoS, StateError};

use super::status::{Identity, Topics, status_payload};
use super::{BrokerUrl, MqttError};
use crate::config::MqttConfig;

/// Largest packet sent or accepted; an alert is well under 2 KiB.
const MAX_PACKET: usize = 256 * 1024;
/// Time allowed for TCP connect, TLS handshake and CONNACK together.
const CONNECT_TIMEOUT_S: u64 = 10;
/// Publishes (QoS 1) the client keeps unacknowledged at most; the publisher stays below it.
pub const CLIENT_INFLIGHT: u16 = 100;

/// Everything needed to connect, built once.
#[derive(Clone)]
pub struct Settings {
    pub url: BrokerUrl,
    pub options: MqttOptions,
    pub connect_timeout_s: u64,
    pub topics: Topics,
    pub client_id: String,
    pub username: String,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub ca_file: String,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl Settings {
    pub fn new(
        cfg: &MqttConfig,
        url: &str,
        sensor_id: &str,
        identity: &Identity,
    ) -> Result<Settings, MqttError> {
        let url = BrokerUrl::parse(url).map_err(MqttError::Url)?;
        super::check_build(&url, cfg).map_err(MqttError::Url)?;
        if sensor_id.is_empty() || sensor_id.contains(['/', '+', '#', '\0']) {
            return Err(MqttError::SensorId(sensor_id.to_string()));
        }
        let topics = Topics::new(&cfg.topic_prefix, sensor_id);
        let mut options = MqttOptions::new(sensor_id, url.host.clone(), url.port);
        options
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(cfg.keepalive_s.round().max(1.0) as u64))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(CLIENT_INFLIGHT)
            .set_last_will(LastWill::new(
                &topics.status,
                status_payload(identity, false),
                QoS::AtLeastOnce,
                true,
            ));
        if !cfg.username.is_empty() || !cfg.password_file.is_empty() {
            let password = if cfg.password_file.is_empty() {
                String::new()
            } else {
                let text = read("mqtt.password_file", &cfg.password_file)?;
                let text = String::from_utf8(text).map_err(|_| MqttError::BadFile {
                    key: "mqtt.password_file",
                    path: cfg.password_file.clone(),
                    problem: "is not UTF-8 text".to_string(),
                })?;
                text.lines().next().unwrap_or("").to_string()
            };
            options.set_credentials(cfg.username.clone(), password);
        }
        if url.tls {
            #[cfg(feature = "tls")]
            options.set_transport(rumqttc::Transport::tls_with_config(tls::client_config(
                cfg,
            )?));
        }
        Ok(Settings {
            url,
            options,
            connect_timeout_s: CONNECT_TIMEOUT_S,
            topics,
            client_id: sensor_id.to_string(),
            username: cfg.username.clone(),
            ca_file: cfg.ca_file.clone(),
            reconnect_min: Duration::from_secs_f64(cfg.reconnect_min_s),
            reconnect_max: Duration::from_secs_f64(cfg.reconnect_max_s),
        })
    }

    /// One sentence for a failed or lost connection. Equal sentences are logged once in a row.
    pub fn describe(&self, e: &ConnectionError, was_connected: bool) -> Problem {
        let url = &self.url;
        if let ConnectionError::ConnectionRefused(code) = e {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => format!(
                    "bad user name or password for user {:?}: check mqtt.username and mqtt.password_file",
                    self.username
                ),
                ConnectReturnCode::NotAuthorized => {
                    "not authorized: check mqtt.username, mqtt.password_file, the client certificate and the broker's ACL"
                        .to_string()
                }
                ConnectReturnCode::BadClientId => {
                    format!("client id {:?} rejected: set sensor_id to a name the broker accepts", self.client_id)
                }
                ConnectReturnCode::RefusedProtocolVersion => "it does not speak MQTT 3.1.1".to_string(),
                ConnectReturnCode::ServiceUnavailable => "service unavailable".to_string(),
                ConnectReturnCode::Success => "no reason given".to_string(),
            };
            return Problem {
                kind: ProblemKind::Refused,
                text: format!("MQTT broker {url} refused the connection: {why}"),
            };
        }
        #[cfg(feature = "tls")]
        if let Some(text) = tls::describe(e, url, &self.ca_file) {
            return Problem {
                kind: ProblemKind::Tls,
                text,
            };
        }
        let detail = match e {
            ConnectionError::NetworkTimeout => {
                format!("no answer within {} s", self.connect_timeout_s)
            }
            ConnectionError::MqttState(StateError::ConnectionAborted) => {
                "the broker closed the connection".to_string()
            }
            ConnectionError::MqttState(StateError::AwaitPingResp) => {
                "no answer to a keep-alive ping".to_string()
            }
            other => {
                innermost_io_error(other).map_or_else(|| other.to_string(), ToString::to_string)
            }
        };
        if was_connected {
            Problem {
                kind: ProblemKind::Lost,
                text: format!("Lost the connection to MQTT broker {url}: {detail}"),
            }
        } else {
            Problem {
                kind: ProblemKind::Unreachable,
                text: format!("MQTT broker {url} is unreachable: {detail}"),
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    Unreachable,
    Lost,
    Refused,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls,
}

/// A connection problem, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub text: String,
}

/// The I/O error at the bottom of rumqttc's nested errors ("Connection refused (os error 111)"
/// rather than "Mqtt state: ... IO: Connection refused ...").
fn innermost_io_error(e: &ConnectionError) -> Option<&std::io::Error> {
    let mut found = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        current = err.source();
    }
    found
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::ReadFile {
        key,
        path: path.to_string(),
        source,
    })
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use rumqttc::{ConnectionError, TlsConfiguration};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use super::{BrokerUrl, MqttError, read};
    use crate::config::MqttConfig;

    /// A rustls client config: ring as the crypto provider, the CA file (or the system's CAs)
    /// as roots, and the client certificate when one is configured.
    pub fn client_config(cfg: &MqttConfig) -> Result<TlsConfiguration, MqttError> {
        let mut roots = RootCertStore::empty();
        if cfg.ca_file.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(MqttError::Tls(
                    "no trusted CA certificates found on this system: set mqtt.ca_file".to_string(),
                ));
            }
        } else {
            let certs = pem_certs("mqtt.ca_file", &cfg.ca_file)?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(
                    "mqtt.ca_file",
                    &cfg.ca_file,
                    "holds no usable CA certificate",
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = if cfg.client_cert_file.is_empty() {
            builder.with_no_client_auth()
        } else {
            let chain = pem_certs("mqtt.client_cert_file", &cfg.client_cert_file)?;
            if chain.is_empty() {
                return Err(bad(
                    "mqtt.client_cert_file",
                    &cfg.client_cert_file,
                    "holds no PEM certificate",
                ));
            }
            let pem = read("mqtt.client_key_file", &cfg.client_key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                bad(
                    "mqtt.client_key_file",
                    &cfg.client_key_file,
                    &format!("holds no usable PEM private key ({e})"),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                bad(
                    "mqtt.client_key_file",
                    &cfg.client_key_file,
                    &format!("does not go with mqtt.client_cert_file: {e}"),
                )
            })?
        };
        Ok(TlsConfiguration::Rustls(Arc::new(config)))
    }

    fn pem_certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, MqttError> {
        let pem = read(key, path)?;
        CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(key, path, &format!("is not a PEM certificate file ({e})")))
    }

    fn bad(key: &'static str, path: &str, problem: &str) -> MqttError {
        MqttError::BadFile {
            key,
            path: path.to_string(),
            problem: problem.to_string(),
        }
    }

    /// The TLS failure inside a connection error, said plainly, if there is one.
    pub fn describe(e: &ConnectionError, url: &BrokerUrl, ca_file: &str) -> Option<String> {
        let tls = find_rustls_error(e)?;
        let trust = if ca_file.is_empty() {
            "the system's CAs".to_string()
        } else {
            format!("mqtt.ca_file {ca_file}")
        };
        Some(match tls {
            rustls::Error::InvalidCertificate(why) => format!(
                "TLS with MQTT broker {url} failed: its certificate is not accepted ({why:?}); check that {trust} holds the CA that signed it and that the certificate names {}",
                url.host
            ),
            rustls::Error::AlertReceived(alert) => format!(
                "TLS with MQTT broker {url} failed: the broker rejected this sensor ({alert:?}); check mqtt.client_cert_file and mqtt.client_key_file against the broker's CA"
            ),
            other => format!("TLS with MQTT broker {url} failed: {other}"),
        })
    }

    fn find_rustls_error(e: &ConnectionError) -> Option<&rustls::Error> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = current {
            if let Some(r) = err.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(r) = inner.downcast_ref::<rustls::Error>()
            {
                return Some(r);
            }
            current = err.source();
        }
        None
    }
}
