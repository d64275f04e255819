//! HTTP API of the cache.
