//! A mock bus for testing services.
