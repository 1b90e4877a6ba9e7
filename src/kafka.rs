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
