//! How Kafka failures map onto the outbox's error kinds.
//!
//! Every error this crate returns is made here. An rdkafka error carries a code,
//! either the broker's answer or one of librdkafka's own; the code decides whether
//! the relay pauses (the cluster cannot be reached), retries the event, sends it to
//! the dead letters, or whether the settings themselves are wrong.

use std::time::Duration;

use outbox_core::{Error, ErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

/// The kind of a failure reported with `code`.
///
/// - `Unavailable`: the cluster cannot be reached or did not answer in time, or
///   the client is full or shutting down. Nothing about this message is wrong.
/// - `Transient`: the cluster answered that it cannot take the message now (no
///   leader, too few in-sync replicas, unknown topic or partition, throttled).
/// - `Permanent`: the message can never be stored as it is (too large, invalid
///   topic name, a record the broker refuses).
/// - `Config`: the credentials, permissions or settings are wrong, which no
///   retry of this message can fix.
///
/// Codes not named here count as `Transient`.
pub(crate) fn code_kind(code: Code) -> ErrorKind {
    match code {
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::Resolve
        | Code::MessageTimedOut
        | Code::OperationTimedOut
        | Code::RequestTimedOut
        | Code::TimedOutQueue
        | Code::NetworkException
        | Code::BrokerNotAvailable
        | Code::QueueFull
        | Code::WaitingForCoordinator
        | Code::CoordinatorNotAvailable
        | Code::BrokerDestroy
        | Code::DestroyBroker
        | Code::Fatal => ErrorKind::Unavailable,

        Code::MessageSizeTooLarge
        | Code::InvalidMessageSize
        | Code::MessageBatchTooLarge
        | Code::InvalidTopic
        | Code::InvalidRecord
        | Code::InvalidTimestamp
        | Code::BadMessage
        | Code::PolicyViolation => ErrorKind::Permanent,

        Code::TopicAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed
        | Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState
        | Code::SSL
        | Code::SecurityDisabled
        | Code::InvalidRequiredAcks
        | Code::InvalidConfig
        | Code::InvalidArgument
        | Code::InvalidGroupId
        | Code::InvalidSessionTimeout
        | Code::UnsupportedVersion
        | Code::UnsupportedFeature
        | Code::UnsupportedForMessageFormat
        | Code::UnsupportedCompressionType
        | Code::NotConfigured => ErrorKind::Config,

        _ => ErrorKind::Transient,
    }
}

/// The kind of any rdkafka error: by its code where it has one.
pub(crate) fn kind(err: &KafkaError) -> ErrorKind {
    match err {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorKind::Config,
        KafkaError::Subscription(_) => ErrorKind::Config,
        KafkaError::Canceled => ErrorKind::Unavailable,
        KafkaError::MessageConsumptionFatal(_) => ErrorKind::Unavailable,
        KafkaError::AdminOp(code) => code_kind(*code),
        other => other
            .rdkafka_error_code()
            .map_or(ErrorKind::Transient, code_kind),
    }
}

/// The outbox error for a message the producer could not deliver.
pub(crate) fn publish_failure(err: KafkaError, topic: &str) -> Error {
    let kind = kind(&err);
    let message = match err.rdkafka_error_code() {
        Some(Code::MessageTimedOut) => {
            format!("no delivery report for topic {topic:?} within the message timeout")
        }
        Some(Code::QueueFull) => "the producer queue stayed full".to_owned(),
        Some(Code::MessageSizeTooLarge | Code::MessageBatchTooLarge) => {
            format!("message exceeds the size limit of topic {topic:?}")
        }
        Some(Code::InvalidTopic) => format!("kafka refused topic {topic:?} as invalid"),
        Some(Code::UnknownTopic | Code::UnknownTopicOrPartition) => {
            format!("kafka has no topic {topic:?}")
        }
        Some(Code::Fatal) => "the kafka producer stopped on a fatal error".to_owned(),
        _ => match kind {
            ErrorKind::Unavailable => "kafka is unreachable".to_owned(),
            ErrorKind::Permanent => format!("kafka refused the message for topic {topic:?}"),
            ErrorKind::Config => {
                format!("kafka refused the producer's settings or rights on {topic:?}")
            }
            _ => format!("kafka could not store the message for topic {topic:?} now"),
        },
    };
    Error::new(kind, message).with_source(err)
}

/// The outbox error for a client that could not be made from its settings.
pub(crate) fn client_failure(err: KafkaError, role: &str) -> Error {
    Error::new(ErrorKind::Config, format!("invalid kafka {role} settings")).with_source(err)
}

/// The outbox error for a first look at the cluster that failed.
pub(crate) fn connect_failure(err: KafkaError, brokers: &str) -> Error {
    let kind = match kind(&err) {
        ErrorKind::Config => ErrorKind::Config,
        _ => ErrorKind::Unavailable,
    };
    let message = match kind {
        ErrorKind::Config => format!("kafka at {brokers} refused the client's settings"),
        _ => format!("kafka at {brokers} is unreachable"),
    };
    Error::new(kind, message).with_source(err)
}

/// The cluster did not answer a metadata request within `after`.
pub(crate) fn connect_timeout(brokers: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "kafka at {brokers} did not answer within {} ms",
            after.as_millis()
        ),
    )
}

/// The outbox error for a failed read from the consumer.
pub(crate) fn consume_failure(err: KafkaError) -> Error {
    let kind = kind(&err);
    let message = match kind {
        ErrorKind::Unavailable => "kafka consumer lost the cluster",
        ErrorKind::Config => "kafka refused the consumer's settings or rights",
        _ => "kafka consumer failed to fetch",
    };
    Error::new(kind, message).with_source(err)
}

/// The outbox error for an offset that could not be stored or committed.
pub(crate) fn offset_failure(err: KafkaError, what: &'static str) -> Error {
    Error::new(kind(&err), what).with_source(err)
}

/// The consumer a delivery came from is gone, so its offset cannot be stored.
pub(crate) fn consumer_closed() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "kafka consumer closed before the delivery was settled",
    )
}

/// The outbox error for a failed admin request about `topic`.
pub(crate) fn admin_failure(err: KafkaError, topic: &str) -> Error {
    let kind = match kind(&err) {
        ErrorKind::Unavailable => ErrorKind::Unavailable,
        _ => ErrorKind::Config,
    };
    Error::new(kind, format!("cannot create kafka topic {topic:?}")).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produced(code: Code) -> Error {
        publish_failure(KafkaError::MessageProduction(code), "orders")
    }

    #[test]
    fn an_unreachable_or_slow_cluster_is_unavailable() {
        for code in [
            Code::BrokerTransportFailure,
            Code::AllBrokersDown,
            Code::Resolve,
            Code::MessageTimedOut,
            Code::RequestTimedOut,
            Code::NetworkException,
            Code::QueueFull,
            Code::Fatal,
        ] {
            assert_eq!(produced(code).kind(), ErrorKind::Unavailable, "{code:?}");
        }
        assert_eq!(
            produced(Code::MessageTimedOut).message(),
            "no delivery report for topic \"orders\" within the message timeout"
        );
        let canceled = publish_failure(KafkaError::Canceled, "orders");
        assert_eq!(canceled.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn answers_that_a_retry_may_fix_are_transient() {
        for code in [
            Code::NotLeaderForPartition,
            Code::LeaderNotAvailable,
            Code::NotEnoughReplicas,
            Code::NotEnoughReplicasAfterAppend,
            Code::UnknownTopicOrPartition,
            Code::UnknownTopic,
            Code::UnknownPartition,
            Code::OutOfOrderSequenceNumber,
            Code::ThrottlingQuotaExceeded,
            Code::KafkaStorageError,
            Code::Unknown,
        ] {
            assert_eq!(produced(code).kind(), ErrorKind::Transient, "{code:?}");
        }
        assert_eq!(
            produced(Code::UnknownTopicOrPartition).message(),
            "kafka has no topic \"orders\""
        );
    }

    #[test]
    fn messages_kafka_can_never_store_are_permanent() {
        for code in [
            Code::MessageSizeTooLarge,
            Code::MessageBatchTooLarge,
            Code::InvalidMessageSize,
            Code::InvalidTopic,
            Code::InvalidRecord,
            Code::PolicyViolation,
        ] {
            assert_eq!(produced(code).kind(), ErrorKind::Permanent, "{code:?}");
        }
        let err = produced(Code::MessageSizeTooLarge);
        assert!(err.message().contains("size limit"), "{err}");
        assert!(
            err.chain().contains("Message size too large"),
            "{}",
            err.chain()
        );
    }

    #[test]
    fn refused_credentials_and_settings_are_configuration_errors() {
        for code in [
            Code::TopicAuthorizationFailed,
            Code::ClusterAuthorizationFailed,
            Code::SaslAuthenticationFailed,
            Code::Authentication,
            Code::SSL,
            Code::UnsupportedVersion,
            Code::InvalidRequiredAcks,
        ] {
            assert_eq!(produced(code).kind(), ErrorKind::Config, "{code:?}");
        }
        let bad = KafkaError::ClientCreation("bad".into());
        assert_eq!(client_failure(bad, "producer").kind(), ErrorKind::Config);
    }

    #[test]
    fn a_failed_first_look_is_unavailable_unless_the_settings_are_wrong() {
        let down = KafkaError::MetadataFetch(Code::OperationTimedOut);
        assert_eq!(connect_failure(down, "h:1").kind(), ErrorKind::Unavailable);
        let down = KafkaError::MetadataFetch(Code::UnknownTopicOrPartition);
        assert_eq!(connect_failure(down, "h:1").kind(), ErrorKind::Unavailable);
        let refused = KafkaError::MetadataFetch(Code::SaslAuthenticationFailed);
        assert_eq!(connect_failure(refused, "h:1").kind(), ErrorKind::Config);
        assert_eq!(
            connect_timeout("h:1", Duration::from_secs(1)).kind(),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn consumer_and_admin_failures_keep_their_kind() {
        let lost = KafkaError::MessageConsumption(Code::AllBrokersDown);
        assert_eq!(consume_failure(lost).kind(), ErrorKind::Unavailable);
        let fatal = KafkaError::MessageConsumptionFatal(Code::Fatal);
        assert_eq!(consume_failure(fatal).kind(), ErrorKind::Unavailable);
        let denied = KafkaError::MessageConsumption(Code::GroupAuthorizationFailed);
        assert_eq!(consume_failure(denied).kind(), ErrorKind::Config);
        let stale = KafkaError::StoreOffset(Code::State);
        assert_eq!(
            offset_failure(stale, "cannot store").kind(),
            ErrorKind::Transient
        );
        assert_eq!(consumer_closed().kind(), ErrorKind::Unavailable);

        let invalid = KafkaError::AdminOp(Code::InvalidPartitions);
        assert_eq!(admin_failure(invalid, "t").kind(), ErrorKind::Config);
        let down = KafkaError::AdminOp(Code::OperationTimedOut);
        assert_eq!(admin_failure(down, "t").kind(), ErrorKind::Unavailable);
    }
}
