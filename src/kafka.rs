//! Kafka client settings shared by every stage, from the `[kafka]` configuration.

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

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
