//! memwarden-broker.
