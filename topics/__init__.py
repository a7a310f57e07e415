"""Every topic stepstream uses, declared once, and their provisioning."""

from topics.catalog import DELAY_TIERS, TopicSpec, catalog
from topics.provision import PartitionMismatch, check_topics, ensure_topics

__all__ = ["DELAY_TIERS", "PartitionMismatch", "TopicSpec", "catalog", "check_topics",
           "ensure_topics"]
