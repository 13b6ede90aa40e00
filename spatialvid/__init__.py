"""SpatialVID Stream: grow a SpatialVID-style dataset continuously (Kafka stages, ClickHouse warehouse)."""
__version__ = "0.1.0"
