//! Kafka client settings shared by every stage, from the `[kafka]` configuration.

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// Header names on dead letters, for replay tools. A dead letter's own key is unique
/// (`<topic>/<partition>/<offset>`, or `<origin>/<uuid>` for a connector's), so erasure
/// can tombstone one letter on the compacted dead-letter topic; the record's own key, if
/// it had one, is kept in `SOURCE_KEY`.
pub mod headers {
    pub const SOURCE_KEY: &str = "hoffrec.source.key";
    pub const SOURCE_TOPIC: &str = "hoffrec.source.topic";
    pub const SOURCE_PARTITION: &str = "hoffrec.source.partition";
    pub const SOURCE_OFFSET: &str = "hoffrec.source.offset";
    pub const ERROR_CLASS: &str = "hoffrec.error.class";
    pub const ERROR_MESSAGE: &str = "hoffrec.error.message";
}

/// A record's headers as text (values decoded lossily), by name; for tools and tests.
pub fn header_texts(m: &impl rdkafka::Message) -> std::collections::BTreeMap<String, String> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A librdkafka client configuration for the configured cluster.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &kafka.client_id)
        .set("security.protocol", &kafka.security_protocol)
        .set("socket.timeout.ms", kafka.request_timeout_ms.to_string());
    if !kafka.sasl_mechanism.is_empty() {
        cfg.set("sasl.mechanism", &kafka.sasl_mechanism);
    }
    if !kafka.sasl_username.is_empty() {
        cfg.set("sasl.username", &kafka.sasl_username);
    }
    if kafka.sasl_password.is_set() {
        cfg.set("sasl.password", kafka.sasl_password.expose());
    }
    for (key, value) in &kafka.properties {
        cfg.set(key, value);
    }
    cfg
}

/// A consumer in `group` that commits nothing by itself: every stage commits offsets
/// only for work it has finished. `reset` is where a new group starts (`earliest` or
/// `latest`).
pub fn consumer_config(kafka: &KafkaConfig, group: &str, reset: &str) -> ClientConfig {
    let mut cfg = client_config(kafka);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", reset);
    cfg
}

/// Produces one record and waits until the broker has it; where it landed (partition,
/// offset), or the delivery error.
pub async fn send_and_wait<K, P>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, P>,
    timeout: impl Into<Timeout>,
) -> Result<(i32, i64), KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    producer
        .send(record, timeout)
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
}

/// Whether a client error means the stage cannot go on (credentials refused, a fatal
/// client state). The rest (brokers down or restarting, a coordinator moving, timeouts)
/// librdkafka recovers from by itself, so the stage waits and reads on.
pub fn error_is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::Authentication
                | C::SaslAuthenticationFailed
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidConfig
                | C::UnsupportedFeature
        )
    )
}

/// Consumer errors during a broker outage, logged now and then: librdkafka queues one per
/// failed connection attempt, hundreds in a minute-long restart.
#[derive(Default)]
pub struct Outage {
    last_logged: Option<std::time::Instant>,
    since: u64,
}

impl Outage {
    pub fn note(&mut self, e: &rdkafka::error::KafkaError, what: &str) {
        self.since += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(10))
        {
            tracing::warn!(error = %e, errors = self.since, "{what}");
            self.last_logged = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use rdkafka::producer::BaseProducer;

    fn scram_ssl() -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "hoffrec".into(),
            sasl_password: Secret::new("s3cret"),
            properties: [("ssl.endpoint.identification.algorithm".to_string(), "https".to_string())].into(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn security_settings_reach_librdkafka() {
        let cfg = client_config(&scram_ssl());
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cfg.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(cfg.get("sasl.username"), Some("hoffrec"));
        assert_eq!(cfg.get("sasl.password"), Some("s3cret"));
        assert_eq!(cfg.get("ssl.endpoint.identification.algorithm"), Some("https"));
    }

    /// librdkafka refuses `ssl`/`sasl_ssl` at client creation when it was built without
    /// OpenSSL ("OpenSSL not available at build time"), and GSSAPI without Cyrus SASL.
    /// Creating a client connects to nothing yet, so this needs no broker.
    #[test]
    fn clients_start_with_tls_scram_and_kerberos() {
        for protocol in ["ssl", "sasl_ssl"] {
            let mut kafka = scram_ssl();
            kafka.security_protocol = protocol.into();
            if protocol == "ssl" {
                kafka.sasl_mechanism.clear();
            }
            let created = client_config(&kafka).create::<BaseProducer>();
            assert!(created.is_ok(), "{protocol}: {:?}", created.err());
        }
        let kerberos = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: "GSSAPI".into(),
            properties: [
                ("sasl.kerberos.service.name", "kafka"),
                ("sasl.kerberos.principal", "hoffrec@EXAMPLE.COM"),
                ("sasl.kerberos.keytab", "/etc/security/keytabs/hoffrec.keytab"),
                // No kinit in a unit test: the ticket would come from a KDC.
                ("sasl.kerberos.min.time.before.relogin", "0"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            ..KafkaConfig::default()
        };
        let created = client_config(&kerberos).create::<BaseProducer>();
        assert!(created.is_ok(), "GSSAPI: {:?}", created.err());
    }
}
