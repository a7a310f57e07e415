"""The Kafka runtime: consumer-group tasks with transactional producers and state stores
restored from changelogs (DESIGN §4), on confluent-kafka."""
