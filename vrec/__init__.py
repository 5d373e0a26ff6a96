"""vrec: streaming video recommendations.

Events flow from a Kafka topic into a durable store, an ALS model is kept
current from the store, and per-user top-K lists are published to Redis.
"""

__version__ = "0.1.0"
