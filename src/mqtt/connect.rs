//! Turning the `[mqtt]` settings into rumqttc options (credentials, TLS, last will), and
//! connection errors into one sentence a router admin can act on.
//!
//! Files named in the config are read once here, at start-up, so a missing or unreadable file is
//! a start-up error and not a retry loop.

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, v5};

use super::MqttError;
use super::link::{LinkError, Version};
use super::status::{Identity, Topics, status_payload};
use crate::config::{BrokerUrl, MqttConfig, MqttProtocol, check_build};

/// Largest packet sent or accepted; an alert is well under 2 KiB.
const MAX_PACKET: usize = 256 * 1024;
/// Time allowed for TCP connect, TLS handshake and CONNACK together.
const CONNECT_TIMEOUT_S: u64 = 10;
/// Publishes (QoS 1) the client keeps unacknowledged at most; the publisher stays below it.
pub const CLIENT_INFLIGHT: u16 = 100;
/// MQTT 5 session expiry: never, like a 3.1.1 session without clean-session.
const SESSION_EXPIRY_S: u32 = u32::MAX;

/// Everything needed to connect, built once.
#[derive(Clone)]
pub struct Settings {
    pub url: BrokerUrl,
    pub protocol: MqttProtocol,
    /// Options for MQTT 3.1.1 and for MQTT 5: the same settings in each client's types.
    pub options: MqttOptions,
    pub options5: v5::MqttOptions,
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
        check_build(&url).map_err(MqttError::Url)?;
        if sensor_id.is_empty() || sensor_id.contains(['/', '+', '#', '\0']) {
            return Err(MqttError::SensorId(sensor_id.to_string()));
        }
        let topics = Topics::new(&cfg.topic_prefix, sensor_id);
        let keep_alive = Duration::from_secs(cfg.keepalive_s.round().max(1.0) as u64);
        let will = status_payload(identity, false);
        let mut options = MqttOptions::new(sensor_id, url.host.clone(), url.port);
        options
            .set_clean_session(false)
            .set_keep_alive(keep_alive)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(CLIENT_INFLIGHT)
            .set_last_will(LastWill::new(
                &topics.status,
                will.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        let mut options5 = v5::MqttOptions::new(sensor_id, url.host.clone(), url.port);
        options5
            .set_clean_start(false)
            .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
            .set_keep_alive(keep_alive)
            .set_max_packet_size(Some(MAX_PACKET as u32))
            .set_outgoing_inflight_upper_limit(CLIENT_INFLIGHT)
            .set_last_will(v5::mqttbytes::v5::LastWill::new(
                &topics.status,
                will,
                v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
        let access = Access::new(cfg, &url)?;
        if let Some((user, password)) = &access.credentials {
            options.set_credentials(user.clone(), password.clone());
            options5.set_credentials(user.clone(), password.clone());
        }
        if let Some(transport) = access.transport {
            options.set_transport(transport.clone());
            options5.set_transport(transport);
        }
        Ok(Settings {
            url,
            protocol: cfg.protocol,
            options,
            options5,
            connect_timeout_s: CONNECT_TIMEOUT_S,
            topics,
            client_id: sensor_id.to_string(),
            username: cfg.username.clone(),
            ca_file: cfg.ca_file.clone(),
            reconnect_min: Duration::from_secs_f64(cfg.reconnect_min_s),
            reconnect_max: Duration::from_secs_f64(cfg.reconnect_max_s),
        })
    }

    /// The version to try first.
    pub fn first_version(&self) -> Version {
        match self.protocol {
            MqttProtocol::Auto | MqttProtocol::V5 => Version::V5,
            MqttProtocol::V311 => Version::V311,
        }
    }

    /// One sentence for a failed or lost connection. Equal sentences are logged once in a row.
    pub fn describe(&self, e: &LinkError, was_connected: bool) -> Problem {
        let url = &self.url;
        if let Some(refusal) = Refusal::of(e) {
            let why = match refusal {
                Refusal::Credentials => format!(
                    "bad user name or password for user {:?}: check mqtt.username and mqtt.password_file",
                    self.username
                ),
                Refusal::NotAuthorized => {
                    "not authorized: check mqtt.username, mqtt.password_file, the client certificate and the broker's ACL"
                        .to_string()
                }
                Refusal::ClientId => {
                    format!("client id {:?} rejected: set sensor_id to a name the broker accepts", self.client_id)
                }
                Refusal::Protocol(version) => match self.protocol {
                    MqttProtocol::Auto => format!("it speaks neither MQTT 5 nor 3.1.1 (tried {version} last)"),
                    _ => format!("it does not speak {version}: set mqtt.protocol = \"auto\""),
                },
                Refusal::Other(code) => code,
            };
            return Problem {
                kind: ProblemKind::Refused,
                text: format!("MQTT broker {url} refused the connection: {why}"),
            };
        }
        #[cfg(feature = "tls")]
        if let Some(text) = tls::describe(e.as_error(), url, &self.ca_file) {
            return Problem {
                kind: ProblemKind::Tls,
                text,
            };
        }
        let detail = match e {
            LinkError::V311(rumqttc::ConnectionError::NetworkTimeout)
            | LinkError::V5(v5::ConnectionError::Timeout(_)) => {
                format!("no answer within {} s", self.connect_timeout_s)
            }
            LinkError::V311(rumqttc::ConnectionError::MqttState(
                rumqttc::StateError::ConnectionAborted,
            ))
            | LinkError::V5(v5::ConnectionError::MqttState(v5::StateError::ConnectionAborted)) => {
                "the broker closed the connection".to_string()
            }
            LinkError::V311(rumqttc::ConnectionError::MqttState(
                rumqttc::StateError::AwaitPingResp,
            ))
            | LinkError::V5(v5::ConnectionError::MqttState(v5::StateError::AwaitPingResp)) => {
                "no answer to a keep-alive ping".to_string()
            }
            LinkError::V5(v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect {
                reason_code,
                reason_string,
            })) => match reason_string {
                Some(why) => format!("the broker disconnected it ({reason_code:?}: {why})"),
                None => format!("the broker disconnected it ({reason_code:?})"),
            },
            other => innermost_io_error(other.as_error())
                .map_or_else(|| other.to_string(), ToString::to_string),
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

/// How to log in to the broker of `mqtt.url`: user and password, and the TLS transport for an
/// mqtts:// url. Shared by the sensor's publisher and the collector (src/collector), so both read
/// the same `[mqtt]` keys the same way.
pub struct Access {
    pub credentials: Option<(String, String)>,
    pub transport: Option<rumqttc::Transport>,
}

impl Access {
    pub fn new(cfg: &MqttConfig, url: &BrokerUrl) -> Result<Access, MqttError> {
        let mut access = Access {
            credentials: None,
            transport: None,
        };
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
            access.credentials = Some((cfg.username.clone(), password));
        }
        if url.tls {
            #[cfg(feature = "tls")]
            {
                let config = tls::client_config(cfg)?;
                access.transport = Some(rumqttc::Transport::tls_with_config(config));
            }
        }
        Ok(access)
    }
}

/// Why a broker refused a connection, whichever protocol version said it.
enum Refusal {
    Credentials,
    NotAuthorized,
    ClientId,
    Protocol(Version),
    Other(String),
}

impl Refusal {
    fn of(e: &LinkError) -> Option<Refusal> {
        use rumqttc::ConnectReturnCode as C4;
        use v5::mqttbytes::v5::ConnectReturnCode as C5;
        Some(match e {
            LinkError::V311(rumqttc::ConnectionError::ConnectionRefused(code)) => match code {
                C4::BadUserNamePassword => Refusal::Credentials,
                C4::NotAuthorized => Refusal::NotAuthorized,
                C4::BadClientId => Refusal::ClientId,
                C4::RefusedProtocolVersion => Refusal::Protocol(Version::V311),
                C4::ServiceUnavailable => Refusal::Other("service unavailable".to_string()),
                C4::Success => Refusal::Other("no reason given".to_string()),
            },
            LinkError::V5(v5::ConnectionError::ConnectionRefused(code)) => match code {
                C5::BadUserNamePassword | C5::BadAuthenticationMethod => Refusal::Credentials,
                C5::NotAuthorized | C5::Banned => Refusal::NotAuthorized,
                C5::ClientIdentifierNotValid => Refusal::ClientId,
                C5::UnsupportedProtocolVersion => Refusal::Protocol(Version::V5),
                other => Refusal::Other(format!("reason {other:?}")),
            },
            _ => return None,
        })
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
fn innermost_io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut found = None;
    let mut current = Some(e);
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

    use std::error::Error;

    use rumqttc::TlsConfiguration;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use super::{MqttError, read};
    use crate::config::{BrokerUrl, MqttConfig};

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
    pub fn describe(e: &(dyn Error + 'static), url: &BrokerUrl, ca_file: &str) -> Option<String> {
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

    fn find_rustls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
        let mut current = Some(e);
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
