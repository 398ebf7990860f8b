//! One connection attempt to the broker, in MQTT 5 or 3.1.1.
//!
//! rumqttc has a client per protocol version with the same shape but different types. This
//! module starts either one, polls its event loop on a task that is never cancelled mid-poll,
//! and reports what the publisher needs in one vocabulary: [`LinkEvent`] and [`LinkError`].

use std::error::Error;
use std::fmt;

use rumqttc::v5;
use rumqttc::{Outgoing, QoS};
use tokio::sync::mpsc;

use super::connect::Settings;

/// The protocol version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V5 => "MQTT 5",
            Version::V311 => "MQTT 3.1.1",
        })
    }
}

/// What the publisher needs to know of the client's events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection (CONNACK with success).
    Connected,
    /// The oldest queued publish got packet id `pkid` and was written.
    Published(u16),
    /// The oldest queued publish waits because `pkid` is still in flight (acks out of order);
    /// it goes out, with that id, right after the id's PUBACK.
    AwaitAck(u16),
    /// The broker acknowledged `pkid`. MQTT 5 brokers may refuse the message in the PUBACK
    /// (for example a topic the ACL does not allow): then `refused` says why.
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// The client sent DISCONNECT.
    Disconnected,
    Other,
}

/// A failed connection attempt or a lost connection.
#[derive(Debug)]
pub enum LinkError {
    V311(rumqttc::ConnectionError),
    V5(v5::ConnectionError),
}

impl LinkError {
    pub fn as_error(&self) -> &(dyn Error + 'static) {
        match self {
            LinkError::V311(e) => e,
            LinkError::V5(e) => e,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

/// The request side of a connection.
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// Queues a QoS 1 publish; false when the request queue is full or the loop is gone.
    pub fn try_publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .is_ok(),
            Client::V5(c) => c
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .is_ok(),
        }
    }

    pub fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

pub type Events = mpsc::UnboundedReceiver<Result<LinkEvent, LinkError>>;

/// Starts a connection attempt: a client with a request queue of `capacity`, and a task that
/// polls the event loop and forwards its events until the first error.
pub fn start(
    settings: &Settings,
    version: Version,
    capacity: usize,
) -> (Client, Events, tokio::task::JoinHandle<()>) {
    let (tx, events) = mpsc::unbounded_channel();
    match version {
        Version::V311 => {
            let (client, mut eventloop) =
                rumqttc::AsyncClient::new(settings.options.clone(), capacity);
            let mut network = eventloop.network_options();
            network.set_connection_timeout(settings.connect_timeout_s);
            // Each publish is written on its own: without this, Nagle's algorithm holds small
            // packets back until the previous ones are acknowledged.
            network.set_tcp_nodelay(true);
            eventloop.set_network_options(network);
            let poller = tokio::spawn(async move {
                loop {
                    let event = eventloop.poll().await;
                    let failed = event.is_err();
                    if tx
                        .send(event.map(from_v311).map_err(LinkError::V311))
                        .is_err()
                        || failed
                    {
                        break;
                    }
                }
            });
            (Client::V311(client), events, poller)
        }
        Version::V5 => {
            let mut options = settings.options5.clone();
            let mut network = options.network_options();
            network.set_tcp_nodelay(true);
            options
                .set_network_options(network)
                .set_connection_timeout(settings.connect_timeout_s);
            let (client, mut eventloop) = v5::AsyncClient::new(options, capacity);
            let poller = tokio::spawn(async move {
                loop {
                    let event = eventloop.poll().await;
                    let failed = event.is_err();
                    if tx.send(event.map(from_v5).map_err(LinkError::V5)).is_err() || failed {
                        break;
                    }
                }
            });
            (Client::V5(client), events, poller)
        }
    }
}

fn from_outgoing(o: Outgoing) -> LinkEvent {
    match o {
        Outgoing::Publish(pkid) => LinkEvent::Published(pkid),
        Outgoing::AwaitAck(pkid) => LinkEvent::AwaitAck(pkid),
        Outgoing::Disconnect => LinkEvent::Disconnected,
        _ => LinkEvent::Other,
    }
}

fn from_v311(event: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Packet};
    match event {
        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected,
        Event::Incoming(Packet::PubAck(ack)) => LinkEvent::PubAck {
            pkid: ack.pkid,
            refused: None,
        },
        Event::Incoming(_) => LinkEvent::Other,
        Event::Outgoing(o) => from_outgoing(o),
    }
}

fn from_v5(event: v5::Event) -> LinkEvent {
    use v5::Event;
    use v5::mqttbytes::v5::{Packet, PubAckReason};
    match event {
        Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected,
        Event::Incoming(Packet::PubAck(ack)) => {
            let refused = match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                reason => {
                    let why = ack.properties.and_then(|p| p.reason_string);
                    Some(match why {
                        Some(why) => format!("{reason:?} ({why})"),
                        None => format!("{reason:?}"),
                    })
                }
            };
            LinkEvent::PubAck {
                pkid: ack.pkid,
                refused,
            }
        }
        Event::Incoming(_) => LinkEvent::Other,
        Event::Outgoing(o) => from_outgoing(o),
    }
}

/// How an MQTT 5 attempt that never got its CONNACK failed, as evidence that the broker only
/// speaks 3.1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V5Failure {
    /// The broker said so: a CONNACK refusing the protocol version (MQTT 5 reason 0x84), or a
    /// 3.1.1 CONNACK ("unacceptable protocol version"), which does not decode as MQTT 5.
    Refused,
    /// No CONNACK: the connection was closed, or nothing came before the timeout. Some 3.1.1
    /// brokers misread an MQTT 5 CONNECT and wait for bytes that never come; a dead network
    /// looks the same.
    Silent,
    /// Anything else (TCP refused, no route, TLS): it would fail the same way in 3.1.1.
    Other,
}

pub fn v5_failure(e: &LinkError) -> V5Failure {
    use v5::mqttbytes::v5::ConnectReturnCode;
    use v5::{ConnectionError, StateError};
    let LinkError::V5(e) = e else {
        return V5Failure::Other;
    };
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::UnsupportedProtocolVersion)
        | ConnectionError::NotConnAck(_)
        | ConnectionError::MqttState(StateError::Deserialization(_)) => V5Failure::Refused,
        ConnectionError::Timeout(_) | ConnectionError::MqttState(StateError::ConnectionAborted) => {
            V5Failure::Silent
        }
        ConnectionError::MqttState(StateError::Io(io)) | ConnectionError::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            V5Failure::Silent
        }
        _ => V5Failure::Other,
    }
}
