//! memwarden-plan.
